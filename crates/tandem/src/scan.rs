//! `tandem scan secrets`: the repository's tracked files checked against gitleaks-format rules,
//! with `.gitleaksignore` honoured; secrets shown redacted.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::Format;

#[derive(clap::Args)]
pub struct ScanArgs {
    /// The rules: a gitleaks configuration file (default: `.gitleaks.toml` of the repository).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Show secrets whole instead of their first four characters.
    #[arg(long)]
    no_redact: bool,
    /// Scan what every commit of the history added (each finding names its commit), not only the
    /// files as they are now.
    #[arg(long)]
    history: bool,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// Exit code 1 when something is found.
pub fn secrets(root: &Path, args: ScanArgs) -> Result<i32> {
    let config_path = args.config.clone().unwrap_or_else(|| root.join(".gitleaks.toml"));
    let text = std::fs::read_to_string(&config_path).with_context(|| {
        format!("cannot read the rules {}\n  hint: give a gitleaks configuration with --config FILE, or add .gitleaks.toml to the repository", config_path.display())
    })?;
    let config = spec::gitleaks::parse_config(&text).map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?;
    let ignored =
        spec::gitleaks::parse_ignore(&std::fs::read_to_string(root.join(".gitleaksignore")).unwrap_or_default());
    let listed = std::process::Command::new("git").arg("-C").arg(root).args(["ls-files", "-z"]).output()?;
    if !listed.status.success() {
        bail!("cannot list the files of {}: {}", root.display(), String::from_utf8_lossy(&listed.stderr).trim());
    }
    let mut findings = Vec::new();
    let (mut n_files, mut n_bytes) = (0usize, 0u64);
    if args.history {
        let (found, n_commits, bytes) = history(root, &config, &ignored)?;
        findings = found;
        n_files = n_commits;
        n_bytes = bytes;
    }
    for name in listed.stdout.split(|b| *b == 0).filter(|n| !n.is_empty() && !args.history) {
        let name = String::from_utf8_lossy(name).into_owned();
        let path = root.join(&name);
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if !meta.is_file() || meta.len() > 10 << 20 {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else { continue };
        n_files += 1;
        n_bytes += bytes.len() as u64;
        findings.extend(config.scan(&name, &String::from_utf8_lossy(&bytes), &ignored));
    }
    let shown = |secret: &str| {
        if args.no_redact { secret.to_string() } else { format!("{}***", secret.chars().take(4).collect::<String>()) }
    };
    if args.format == Format::Json {
        let rows: Vec<serde_json::Value> = findings
            .iter()
            .map(|f| serde_json::json!({"rule": f.rule, "file": f.file, "line": f.line, "column": f.column, "secret": shown(&f.secret), "entropy": f.entropy, "fingerprint": f.fingerprint}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"findings": rows, "files": n_files, "bytes": n_bytes}))?
        );
    } else {
        for f in &findings {
            println!(
                "{}:{}:{}  {}  {}  (fingerprint {})",
                f.file,
                f.line,
                f.column,
                f.rule,
                shown(&f.secret),
                f.fingerprint
            );
        }
        println!(
            "\n{} finding(s) in {n_files} {}, {} rule(s){}",
            findings.len(),
            if args.history { "commit(s)" } else { "file(s)" },
            config.rules.len(),
            if findings.is_empty() {
                String::new()
            } else {
                "; add a fingerprint to .gitleaksignore to accept one".into()
            }
        );
    }
    Ok(if findings.is_empty() { 0 } else { 1 })
}

fn git_output(root: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let output = std::process::Command::new("git").arg("-C").arg(root).args(args).output()?;
    if !output.status.success() {
        bail!("git {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(output.stdout)
}

/// What every commit reachable from any ref added: each commit's changed files are scanned as
/// the commit has them, and a finding counts where its line is one the commit added. Returns the
/// findings, the number of commits and the bytes scanned.
fn history(
    root: &Path,
    config: &spec::gitleaks::Config,
    ignored: &[String],
) -> Result<(Vec<spec::gitleaks::Finding>, usize, u64)> {
    let listed = String::from_utf8_lossy(&git_output(root, &["rev-list", "--all"])?).into_owned();
    let commits: Vec<&str> = listed.lines().collect();
    let (mut findings, mut bytes) = (Vec::new(), 0u64);
    for commit in &commits {
        let diff = git_output(
            root,
            &[
                "diff-tree",
                "-r",
                "--root",
                "--no-commit-id",
                "-U0",
                "--no-color",
                "--no-renames",
                "--no-ext-diff",
                "--end-of-options",
                commit,
            ],
        )?;
        // The lines each file gained in this commit.
        let mut added: Vec<(String, Vec<(usize, usize)>)> = Vec::new();
        for line in String::from_utf8_lossy(&diff).lines() {
            if let Some(path) = line.strip_prefix("+++ b/") {
                added.push((path.to_string(), Vec::new()));
            } else if let Some(hunk) = line.strip_prefix("@@ ")
                && let Some(new) = hunk.split_whitespace().find(|w| w.starts_with('+'))
                && let Some((_, ranges)) = added.last_mut()
            {
                let mut parts = new.trim_start_matches('+').split(',');
                let start: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                let count: usize = parts.next().map_or(1, |n| n.parse().unwrap_or(0));
                if count > 0 {
                    ranges.push((start, start + count - 1));
                }
            }
        }
        for (path, ranges) in added.into_iter().filter(|(_, r)| !r.is_empty()) {
            let Ok(content) = git_output(root, &["show", &format!("{commit}:{path}")]) else { continue };
            if content.len() > 10 << 20 || content.contains(&0) {
                continue;
            }
            bytes += content.len() as u64;
            let text = String::from_utf8_lossy(&content);
            findings.extend(
                config
                    .scan_commit(commit, &path, &text, ignored)
                    .into_iter()
                    .filter(|f| ranges.iter().any(|(first, last)| (*first..=*last).contains(&f.line)))
                    // As gitleaks names a finding of the history: `commit:file:rule:line`.
                    .map(|f| spec::gitleaks::Finding { fingerprint: format!("{commit}:{}", f.fingerprint), ..f }),
            );
        }
    }
    Ok((findings, commits.len(), bytes))
}
