//! Secret scanning of every push a run starts from: when the repository has a `.gitleaks.toml`
//! at the commit, the files the commit changed (all of them for a new branch) are scanned with
//! it, `.gitleaksignore` honoured; findings go into the run's log (redacted) and the event log
//! (`scan.secrets_found`, with fingerprints, never the secret). With an OSV export configured
//! (`tandem server --osv DIR`), the lock files of the commit are checked against it too
//! (`scan.vulnerabilities_found`). And the whole history of a repository, on demand
//! (`tandem repo scan`, and `tandem scan secrets --history` on a clone).

use std::path::Path;

use store::{LogLine, Run};

use crate::App;
use crate::repos::git;

/// Files larger than this are not scanned (binaries, archives).
const MAX_FILE: usize = 10 << 20;

/// Scans the run's commit; the log lines to add (none when the repository has no rules).
pub async fn scan_push(app: &App, mirror: &Path, run: &Run) -> Vec<LogLine> {
    let Ok(rules) = git(mirror, &["show", &format!("{}:.gitleaks.toml", run.sha)]).await else { return Vec::new() };
    let say = |text: String| LogLine { job: "secret scan".into(), step: None, text };
    let config = match spec::gitleaks::parse_config(&rules) {
        Ok(config) => config,
        Err(error) => return vec![say(format!("warning: .gitleaks.toml: {error}; the commit was not scanned"))],
    };
    let ignore = git(mirror, &["show", &format!("{}:.gitleaksignore", run.sha)]).await.unwrap_or_default();
    let ignored = spec::gitleaks::parse_ignore(&ignore);
    let new_branch = run.before_sha.is_empty() || run.before_sha.chars().all(|c| c == '0');
    let listed = if new_branch {
        git(mirror, &["ls-tree", "-r", "--name-only", "--end-of-options", &run.sha]).await
    } else {
        git(mirror, &["diff", "--name-only", "--diff-filter=AM", "--end-of-options", &run.before_sha, &run.sha]).await
    };
    let files: Vec<String> = listed.unwrap_or_default().lines().map(String::from).collect();
    let mut findings = Vec::new();
    for file in &files {
        let Ok(text) = git(mirror, &["show", &format!("{}:{file}", run.sha)]).await else { continue };
        if text.len() > MAX_FILE {
            continue;
        }
        findings.extend(config.scan_commit(&run.sha, file, &text, &ignored));
    }
    let mut lines = vec![say(format!("{} file(s) scanned with {} rule(s)", files.len(), config.rules.len()))];
    if findings.is_empty() {
        return lines;
    }
    let redacted = |secret: &str| format!("{}***", secret.chars().take(4).collect::<String>());
    for f in &findings {
        lines.push(say(format!(
            "error: {}:{}:{} {} ({}) — fingerprint {}",
            f.file,
            f.line,
            f.column,
            f.rule,
            redacted(&f.secret),
            f.fingerprint
        )));
    }
    lines.push(say(
        "hint: revoke the secret where it was issued; add its fingerprint to .gitleaksignore if it is no secret".into(),
    ));
    let payload = serde_json::json!({
        "sha": run.sha,
        "findings": findings.iter().map(|f| serde_json::json!({"rule": f.rule, "file": f.file, "line": f.line, "fingerprint": f.fingerprint})).collect::<Vec<_>>(),
    });
    if let Err(error) =
        app.store.record_event("scan.secrets_found", &format!("run/{}", run.id), "tandem", payload).await
    {
        tracing::warn!("cannot record the secret scan of run {}: {error}", run.id);
    }
    let repository = app.store.repo_by_id(run.repo_id).await.map(|r| r.name).unwrap_or_default();
    let summary = format!(
        "{} secret(s) pushed to {repository} at {} (run {})",
        findings.len(),
        &run.sha[..run.sha.len().min(12)],
        run.id
    );
    let labels = [("repository", repository), ("run", run.id.to_string())];
    crate::alerting::security(app, "SecretCommitted", "critical", &labels, summary).await;
    lines
}

/// Checks the lock files of the run's commit against the server's OSV export, when it has one;
/// the log lines to add.
pub async fn scan_dependencies(app: &App, mirror: &Path, run: &Run) -> Vec<LogLine> {
    let Some(dir) = app.config.osv.clone() else { return Vec::new() };
    let say = |text: String| LogLine { job: "dependency scan".into(), step: None, text };
    let loaded = tokio::task::spawn_blocking(move || spec::deps::load_export(&dir)).await;
    let (advisories, date, _) = match loaded {
        Ok(Ok(loaded)) => loaded,
        Ok(Err(error)) => return vec![say(format!("warning: {error}; the dependencies were not checked"))],
        Err(error) => return vec![say(format!("warning: {error}"))],
    };
    let listed = git(mirror, &["ls-tree", "-r", "--name-only", "--end-of-options", &run.sha]).await.unwrap_or_default();
    let mut packages = Vec::new();
    let mut lines = Vec::new();
    for file in
        listed.lines().filter(|f| spec::deps::LOCK_FILES.iter().any(|l| f == l || f.ends_with(&format!("/{l}"))))
    {
        let Ok(text) = git(mirror, &["show", &format!("{}:{file}", run.sha)]).await else { continue };
        match spec::deps::packages(file, &text) {
            Ok(found) => packages.extend(found),
            Err(error) => lines.push(say(format!("warning: {error}"))),
        }
    }
    let findings = spec::deps::scan(&packages, &advisories);
    lines.insert(
        0,
        say(format!(
            "{} package(s) checked against {} advisories (data of {})",
            packages.len(),
            advisories.len(),
            date.get(..10).unwrap_or("unknown date")
        )),
    );
    if spec::deps::age_days(&date, jiff::Timestamp::now().as_second()).is_some_and(|d| d > 7.0) {
        lines.push(say(format!(
            "warning: the OSV export is from {date}, over a week old; newer advisories are not checked"
        )));
    }
    if findings.is_empty() {
        return lines;
    }
    for f in &findings {
        lines.push(say(format!(
            "error: {} {} {} ({}) — {} [{}]",
            f.package.source, f.package.name, f.package.version, f.severity, f.advisory, f.summary
        )));
    }
    let payload = serde_json::json!({
        "sha": run.sha,
        "data_date": date,
        "findings": findings.iter().map(|f| serde_json::json!({"package": f.package.name, "version": f.package.version, "ecosystem": f.package.ecosystem, "advisory": f.advisory, "severity": f.severity})).collect::<Vec<_>>(),
    });
    if let Err(error) =
        app.store.record_event("scan.vulnerabilities_found", &format!("run/{}", run.id), "tandem", payload).await
    {
        tracing::warn!("cannot record the dependency scan of run {}: {error}", run.id);
    }
    let serious: Vec<&spec::deps::Finding> =
        findings.iter().filter(|f| matches!(f.severity.as_str(), "critical" | "high")).collect();
    if !serious.is_empty() {
        let repository = app.store.repo_by_id(run.repo_id).await.map(|r| r.name).unwrap_or_default();
        let severity = if serious.iter().any(|f| f.severity == "critical") { "critical" } else { "warning" };
        let names: Vec<String> =
            serious.iter().map(|f| format!("{} {} ({})", f.package.name, f.package.version, f.advisory)).collect();
        let summary = format!(
            "{repository} at {} locks vulnerable packages: {}",
            &run.sha[..run.sha.len().min(12)],
            names.join(", ")
        );
        let labels = [("repository", repository), ("run", run.id.to_string())];
        crate::alerting::security(app, "VulnerableDependency", severity, &labels, summary).await;
    }
    lines
}

/// What every commit reachable from any ref of the repository at `root` added: each commit's
/// changed files are scanned as the commit has them, and a finding counts where its line is one
/// the commit added; each is named `commit:file:rule:line`, as gitleaks names a finding of the
/// history. Returns the findings, the number of commits and the bytes scanned.
pub async fn history(
    root: &Path,
    config: &spec::gitleaks::Config,
    ignored: &[String],
) -> Result<(Vec<spec::gitleaks::Finding>, usize, u64), String> {
    let listed = git(root, &["rev-list", "--all"]).await?;
    let commits: Vec<&str> = listed.lines().collect();
    let (mut findings, mut bytes) = (Vec::new(), 0u64);
    for commit in &commits {
        let args =
            ["diff-tree", "-r", "--root", "--no-commit-id", "-U0", "--no-color", "--no-renames", "--no-ext-diff"];
        let diff = git(root, &[&args[..], &["--end-of-options", commit]].concat()).await?;
        // The lines each file gained in this commit.
        let mut added: Vec<(String, Vec<(usize, usize)>)> = Vec::new();
        for line in diff.lines() {
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
            let Ok(text) = git(root, &["show", &format!("{commit}:{path}")]).await else { continue };
            if text.len() > MAX_FILE || text.contains('\0') {
                continue;
            }
            bytes += text.len() as u64;
            findings.extend(
                config
                    .scan_commit(commit, &path, &text, ignored)
                    .into_iter()
                    .filter(|f| ranges.iter().any(|(first, last)| (*first..=*last).contains(&f.line)))
                    .map(|f| spec::gitleaks::Finding { fingerprint: format!("{commit}:{}", f.fingerprint), ..f }),
            );
        }
    }
    Ok((findings, commits.len(), bytes))
}
