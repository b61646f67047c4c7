//! One commit of a repository, as the API, the CLI and the commit's page show it: what it says,
//! the runs on it, what their scans found (secrets, vulnerable dependencies) and where it went.

#[allow(unused_imports)]
use super::*;

#[utoipa::path(get, path = "/api/v1/repos/{name}/commits/{rev}", tag = "repositories",
    summary = "A commit: its runs, the security findings of their scans, and its deployments",
    params(("name" = String, Path, description = "The repository's name"),
        ("rev" = String, Path, description = "A commit (full or short), branch or tag")),
    security(("token" = [])),
    responses((status = 200, body = api::CommitDetail), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn show(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path((name, rev)): Path<(String, String)>,
) -> ApiResult<Json<api::CommitDetail>> {
    let repo = app.store.repo(&name).await?;
    Ok(Json(detail(&app, &repo, &rev).await?))
}

/// Everything known about commit `rev` of `repo`.
pub(crate) async fn detail(app: &App, repo: &Repo, rev: &str) -> ApiResult<api::CommitDetail> {
    let unknown =
        || AppError::new(StatusCode::NOT_FOUND, "unknown_commit", format!("`{rev}` is not a commit of {}", repo.name));
    if rev.is_empty() || rev.starts_with('-') || rev.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(unknown());
    }
    let full_sha = rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit());
    let mirror = repos::sync(app, repo, full_sha.then_some(rev))
        .await
        .map_err(|e| AppError::new(StatusCode::BAD_GATEWAY, "repository_unavailable", e))?;
    let format = "--format=%H%x00%an <%ae>%x00%aI%x00%B";
    let shown = repos::git(&mirror, &["log", "-1", format, "--end-of-options", &format!("{rev}^{{commit}}")])
        .await
        .map_err(|_| unknown())?;
    let mut parts = shown.splitn(4, '\0');
    let mut next = || parts.next().unwrap_or_default().trim().to_string();
    let (sha, author, date, message) = (next(), next(), next(), next());

    let runs: Vec<store::Run> = app
        .store
        .runs(RunFilter { repo_id: Some(repo.id), limit: 1000, ..Default::default() })
        .await?
        .into_iter()
        .filter(|r| r.sha == sha)
        .collect();
    let mut findings = Vec::new();
    for run in &runs {
        for event in app.store.events_about(&format!("run/{}", run.id)).await? {
            findings.extend(findings_of(run.id, &event));
        }
    }
    let deployments = app
        .store
        .deployments(DeploymentFilter { limit: 1000, ..Default::default() })
        .await?
        .into_iter()
        .filter(|d| d.repo_id == repo.id && d.sha == sha)
        .map(api::Deployment::from)
        .collect();
    Ok(api::CommitDetail {
        repo: repo.name.clone(),
        sha,
        author,
        date,
        message,
        runs: runs.iter().map(api::RunSummary::from).collect(),
        findings,
        deployments,
    })
}

/// The findings a scan event of run `run` recorded.
fn findings_of(run: i64, event: &store::Event) -> Vec<api::CommitFinding> {
    let items = event.payload["findings"].as_array().cloned().unwrap_or_default();
    let text =
        |v: &serde_json::Value, key: &str| v[key].as_str().map(str::to_string).unwrap_or_else(|| v[key].to_string());
    match event.kind.as_str() {
        "scan.secrets_found" => items
            .into_iter()
            .map(|f| api::CommitFinding {
                kind: "secret".into(),
                run,
                summary: format!("{} in {}:{}", text(&f, "rule"), text(&f, "file"), text(&f, "line")),
                severity: "critical".into(),
                detail: f,
            })
            .collect(),
        "scan.vulnerabilities_found" => items
            .into_iter()
            .map(|f| api::CommitFinding {
                kind: "vulnerability".into(),
                run,
                summary: format!(
                    "{} {} ({}): {}",
                    text(&f, "package"),
                    text(&f, "version"),
                    text(&f, "ecosystem"),
                    text(&f, "advisory")
                ),
                severity: text(&f, "severity"),
                detail: f,
            })
            .collect(),
        _ => Vec::new(),
    }
}
