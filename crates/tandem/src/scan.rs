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
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (found, n_commits, bytes) =
            runtime.block_on(server::scanning::history(root, &config, &ignored)).map_err(anyhow::Error::msg)?;
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
