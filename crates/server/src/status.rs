//! Commit statuses posted back to the forge a repository lives on: GitHub, Gitea/Forgejo or
//! GitLab, each in its own dialect. Every attempt is recorded in the event log.

use std::time::Duration;

use store::{Repo, Run, RunStatus};

use crate::App;

/// The forge's name for a run's state.
fn state(forge: &str, status: RunStatus) -> &'static str {
    match (forge, status) {
        ("gitlab", RunStatus::Queued) => "pending",
        ("gitlab", RunStatus::Running) => "running",
        ("gitlab", RunStatus::Success) => "success",
        ("gitlab", RunStatus::Failure) => "failed",
        ("gitlab", RunStatus::Cancelled) => "canceled",
        (_, RunStatus::Queued | RunStatus::Running) => "pending",
        (_, RunStatus::Success) => "success",
        (_, RunStatus::Failure) => "failure",
        (_, RunStatus::Cancelled) => "error",
    }
}

/// `tandem/<workflow file stem>`: one status context per workflow, as CI systems do.
pub fn context(run: &Run) -> String {
    let file = run.workflow.rsplit('/').next().unwrap_or(&run.workflow);
    format!("tandem/{}", file.trim_end_matches(".yml").trim_end_matches(".yaml"))
}

/// Posts the run's current status, if the repository has a forge configured. Never fails the run:
/// problems are logged and recorded as `status.failed` events.
pub async fn post(app: &App, repo: &Repo, run: &Run, status: RunStatus) {
    let (Some(forge), Some(api_url), Some(token)) = (&repo.forge, &repo.api_url, &repo.status_token) else { return };
    let token = match crate::credentials::read(app, repo, "status_token", token).await {
        Ok(token) => token,
        Err(error) => {
            tracing::error!("cannot post the status of run {}: {error}", run.id);
            return;
        }
    };
    let token = &token;
    let api = api_url.trim_end_matches('/');
    let state = state(forge, status);
    let context = context(run);
    let description = match status {
        RunStatus::Queued => "queued".to_string(),
        RunStatus::Running => "running".to_string(),
        other => format!("run {} {}", run.number, other.as_str()),
    };
    let target_url = format!("http://{}/api/v1/runs/{}", app.config.listen, run.id);
    let client = reqwest::Client::new();
    let request = match forge.as_str() {
        "gitlab" => {
            let project: String = repo.name.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect();
            let git_ref = run.git_ref.strip_prefix("refs/heads/").unwrap_or(&run.git_ref).to_string();
            client
                .post(format!("{api}/projects/{project}/statuses/{}", run.sha))
                .header("PRIVATE-TOKEN", token)
                .json(&serde_json::json!({"state": state, "name": context, "description": description, "target_url": target_url, "ref": git_ref}))
        }
        "gitea" | "forgejo" => client
            .post(format!("{api}/repos/{}/statuses/{}", repo.name, run.sha))
            .header("Authorization", format!("token {token}"))
            .json(&serde_json::json!({"state": state, "context": context, "description": description, "target_url": target_url})),
        _ => client
            .post(format!("{api}/repos/{}/statuses/{}", repo.name, run.sha))
            .header("Authorization", format!("Bearer {token}"))
            .header("Accept", "application/vnd.github+json")
            .header("User-Agent", "tandem")
            .json(&serde_json::json!({"state": state, "context": context, "description": description, "target_url": target_url})),
    };
    let result = request.timeout(Duration::from_secs(10)).send().await;
    let (kind, detail) = match result {
        Ok(response) if response.status().is_success() => {
            ("status.posted", format!("HTTP {}", response.status().as_u16()))
        }
        Ok(response) => (
            "status.failed",
            format!(
                "HTTP {}: {}",
                response.status().as_u16(),
                response.text().await.unwrap_or_default().chars().take(200).collect::<String>()
            ),
        ),
        Err(error) => ("status.failed", error.to_string()),
    };
    if kind == "status.failed" {
        tracing::warn!("run {}: commit status to {forge} failed: {detail}", run.id);
    }
    let payload =
        serde_json::json!({"forge": forge, "sha": run.sha, "state": state, "context": context, "result": detail});
    if let Err(error) = app.store.record_event(kind, &format!("run/{}", run.id), "tandem", payload).await {
        tracing::error!("run {}: cannot record the commit status sent to {forge}: {error}", run.id);
    }
}
