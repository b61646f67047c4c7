//! Every real-world workflow in the shared corpus parses; the only diagnostics are ones that name
//! a feature Tandem does not support. The full result is snapshotted.

use std::fmt::Write;

use spec::workflow::{self, UNSUPPORTED_CODES};

#[test]
fn real_world_workflows_parse_with_only_unsupported_feature_diagnostics() {
    let Some(dir) = crate::corpus_dir("workflows") else { return };
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 20, "expected the corpus to hold at least 20 workflows, found {}", files.len());
    let mut snapshot = String::new();
    let mut unexpected = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let source = std::fs::read_to_string(path).unwrap();
        let (parsed, diagnostics) = workflow::parse(&source);
        let parsed = parsed.unwrap_or_else(|| panic!("{name} did not parse: {diagnostics:?}"));
        let n_steps: usize = parsed.jobs.iter().map(|j| j.steps.len()).sum();
        let events: Vec<&str> = parsed.triggers.iter().map(|t| t.event.as_str()).collect();
        writeln!(snapshot, "{name}: {} jobs, {n_steps} steps, on [{}]", parsed.jobs.len(), events.join(", ")).unwrap();
        for d in &diagnostics {
            writeln!(snapshot, "  {}:{} {} {}", d.span.line, d.span.col, d.code, d.message).unwrap();
            if !UNSUPPORTED_CODES.contains(&d.code) {
                unexpected.push(format!("{name}:{}:{}: {} {}", d.span.line, d.span.col, d.code, d.message));
            }
            // Every diagnostic points at a real place in the file.
            let line = source
                .lines()
                .nth(d.span.line as usize - 1)
                .unwrap_or_else(|| panic!("{name}: line {} out of range", d.span.line));
            assert!(
                (d.span.col as usize) <= line.chars().count() + 1,
                "{name}: column {} beyond line {}",
                d.span.col,
                d.span.line
            );
        }
        let whole = ci::check::validate(&source).1;
        assert_eq!(whole.len(), diagnostics.len(), "{name}: graph or matrix checks found problems: {whole:?}");
    }
    assert!(unexpected.is_empty(), "diagnostics that are not about unsupported features:\n{}", unexpected.join("\n"));
    insta::assert_snapshot!("corpus_workflows", snapshot);
}
