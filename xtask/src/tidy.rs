//! The house rules that the compiler does not check: every source file opens with a `//!` line,
//! no todo, dbg or ignore markers (the macros and the test attribute), and no source file (tests aside) over 800 lines.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Source files longer than this are split by responsibility.
const MAX_LINES: usize = 800;

/// Every problem in the Rust files under `crates/`, `xtask/` and `fuzz/`, as `path: what`.
pub fn check(root: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for path in rust_files(root)? {
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let shown = path.strip_prefix(root).unwrap_or(&path).display().to_string();
        problems.extend(problems_in(&shown, &text));
    }
    Ok(problems)
}

/// How many tests read the shared corpus (they skip its cases when it is absent).
pub fn corpus_tests(root: &Path) -> Result<usize> {
    let mut n = 0;
    for path in rust_files(root)? {
        if path.components().any(|c| c.as_os_str() == "tests") {
            let text = std::fs::read_to_string(&path)?;
            n += text.matches("corpus_dir(").count() + text.matches("corpus()").count();
        }
    }
    Ok(n.saturating_sub(2))
}

fn problems_in(path: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if !text.trim_start().starts_with("//!") {
        problems.push(format!("{path}: does not open with a `//!` line saying what the file is for"));
    }
    let is_test = path.contains("/tests/") || path.starts_with("tests/");
    let n_lines = text.lines().count();
    if !is_test && n_lines > MAX_LINES {
        problems.push(format!("{path}: {n_lines} lines; split it by responsibility (at most {MAX_LINES})"));
    }
    // The patterns are assembled so that this file does not find itself.
    let banned = [concat!("todo", "!("), concat!("dbg", "!("), concat!("#[", "ignore"), concat!("unimplemented", "!(")];
    for (number, line) in text.lines().enumerate() {
        for pattern in banned {
            if line.contains(pattern) && !line.trim_start().starts_with("//") {
                problems.push(format!("{path}:{}: `{pattern}` is not allowed in committed code", number + 1));
            }
        }
    }
    problems
}

fn rust_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = ["crates", "xtask", "fuzz"].iter().map(|d| root.join(d)).collect();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_kind_of_problem() {
        let long = format!("//! Long.\n{}", "fn f() {}\n".repeat(MAX_LINES));
        assert_eq!(problems_in("crates/a/src/long.rs", &long).len(), 1);
        assert!(problems_in("crates/a/tests/it/long.rs", &long).is_empty(), "tests may be long");
        let bad = format!("fn f() {{ {}; }}\n", concat!("dbg", "!(1)"));
        let found = problems_in("crates/a/src/bad.rs", &bad);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("//!") && found[1].contains("bad.rs:1"), "{found:?}");
    }

    #[test]
    fn the_tree_keeps_the_rules() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let problems = check(&root).unwrap();
        assert!(problems.is_empty(), "tidy:\n{}", problems.join("\n"));
    }
}
