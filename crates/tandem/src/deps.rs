//! `tandem scan deps`: the packages the repository's lock files name, matched against an offline
//! OSV export; the data's date is shown, with a warning when it is older than `--max-age`.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::Format;

#[derive(clap::Args)]
pub struct DepsArgs {
    /// The OSV export: a directory of OSV records (`<ID>.json`), e.g. osv.dev's per-ecosystem archives unpacked.
    #[arg(long, env = "TANDEM_OSV", value_name = "DIR")]
    osv: PathBuf,
    /// Warn when the export's newest record is older than this many days.
    #[arg(long, default_value_t = 7.0, value_name = "DAYS")]
    max_age: f64,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// Exit code 1 when a vulnerable package is found.
pub fn scan(root: &Path, args: DepsArgs) -> Result<i32> {
    let (advisories, date, unreadable) = spec::deps::load_export(&args.osv).map_err(anyhow::Error::msg)?;
    for problem in &unreadable {
        eprintln!("warning: skipped {problem}");
    }
    let age = spec::deps::age_days(&date, jiff::Timestamp::now().as_second());
    let stale = age.is_some_and(|a| a > args.max_age);
    let listed = std::process::Command::new("git").arg("-C").arg(root).args(["ls-files", "-z"]).output()?;
    if !listed.status.success() {
        bail!("cannot list the files of {}: {}", root.display(), String::from_utf8_lossy(&listed.stderr).trim());
    }
    let mut packages = Vec::new();
    let mut locks = Vec::new();
    for name in listed.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if !spec::deps::LOCK_FILES.iter().any(|l| name == *l || name.ends_with(&format!("/{l}"))) {
            continue;
        }
        let text = std::fs::read_to_string(root.join(&name))?;
        match spec::deps::packages(&name, &text) {
            Ok(found) => packages.extend(found),
            Err(error) => eprintln!("warning: {error}"),
        }
        locks.push(name);
    }
    let findings = spec::deps::scan(&packages, &advisories);
    if args.format == Format::Json {
        let rows: Vec<serde_json::Value> = findings
            .iter()
            .map(|f| serde_json::json!({"ecosystem": f.package.ecosystem, "package": f.package.name, "version": f.package.version, "lock_file": f.package.source, "advisory": f.advisory, "aliases": f.aliases, "severity": f.severity, "summary": f.summary}))
            .collect();
        let report = serde_json::json!({"findings": rows, "packages": packages.len(), "lock_files": locks, "advisories": advisories.len(), "data_date": date, "stale": stale});
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        eprintln!(
            "{} package(s) in {} lock file(s) against {} advisories (data of {})",
            packages.len(),
            locks.len(),
            advisories.len(),
            if date.is_empty() { "unknown date".to_string() } else { date.chars().take(10).collect() }
        );
        if stale {
            eprintln!(
                "warning: the OSV export is {:.0} days old (over {:.0}); fetch a newer one — advisories published since are not checked",
                age.unwrap_or_default(),
                args.max_age
            );
        }
        let rows: Vec<Vec<String>> = findings
            .iter()
            .map(|f| {
                vec![
                    f.severity.clone(),
                    format!("{} {}", f.package.name, f.package.version),
                    f.advisory.clone(),
                    f.package.source.clone(),
                    f.summary.clone(),
                ]
            })
            .collect();
        if rows.is_empty() {
            println!("no known vulnerability");
        } else {
            crate::client::table(&["SEVERITY", "PACKAGE", "ADVISORY", "LOCK FILE", "SUMMARY"], &rows);
        }
    }
    Ok(if findings.is_empty() { 0 } else { 1 })
}
