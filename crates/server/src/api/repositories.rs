//! Repositories: list, add (the webhook secret shown once), archive, scan their history for
//! secrets, and queue what a push of a ref would run.

#[allow(unused_imports)]
use super::*;

#[utoipa::path(get, path = "/api/v1/repos", tag = "repositories", summary = "List repositories",
    security(("token" = [])),
    responses((status = 200, body = api::RepositoryList), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn list_repos(State(app): State<Arc<App>>, _caller: Caller) -> ApiResult<Json<api::RepositoryList>> {
    let repos = app.store.repos().await?.into_iter().map(api::Repository::from).collect();
    Ok(Json(api::RepositoryList { repos }))
}

#[utoipa::path(post, path = "/api/v1/repos", tag = "repositories",
    summary = "Add a repository (local path or git URL); returns its webhook secret once",
    request_body = api::AddRepository, security(("token" = [])),
    responses((status = 201, body = api::AddedRepository), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn add_repo(
    State(app): State<Arc<App>>,
    caller: Caller,
    request: Result<Json<api::AddRepository>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let added = add_repository(&app, body(request)?, &caller.0).await?;
    Ok((StatusCode::CREATED, Json(added)).into_response())
}

/// Adds a repository (checks its source and forge settings, fetches it once); its webhook
/// secret is in the answer, and nowhere else ever again.
pub(super) async fn add_repository(
    app: &Arc<App>,
    body: api::AddRepository,
    actor: &str,
) -> ApiResult<api::AddedRepository> {
    let source = body.source.trim().to_string();
    // Given to git as an argument: nothing that git could read as an option.
    if source.starts_with('-') || source.chars().any(char::is_control) {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "bad_source",
            format!("`{source}` is not a repository source"),
        ));
    }
    if let Err(error) = crate::credentials::split_url(&source) {
        return Err(AppError::new(StatusCode::BAD_REQUEST, "bad_source", error));
    }
    let is_url = source.contains("://") || source.contains('@');
    let source = if is_url {
        source
    } else {
        let path = std::path::Path::new(&source);
        if !path.is_absolute() || !path.exists() {
            return Err(AppError::new(
                StatusCode::BAD_REQUEST,
                "bad_source",
                format!("`{source}` is neither a git URL nor an existing absolute path"),
            ));
        }
        source
    };
    let name = body.name.clone().unwrap_or_else(|| {
        source.trim_end_matches('/').trim_end_matches(".git").rsplit(['/', ':']).next().unwrap_or("repo").to_string()
    });
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "bad_name",
            format!("`{name}` is not a usable repository name"),
        ));
    }
    let forge = match (&body.forge, &body.api_url, &body.status_token) {
        (None, None, None) => None,
        (Some(forge), Some(api_url), Some(token))
            if matches!(forge.as_str(), "github" | "gitea" | "forgejo" | "gitlab") =>
        {
            Some((forge.clone(), api_url.clone(), token.clone()))
        }
        (Some(forge), Some(_), Some(_)) => {
            return Err(AppError::new(
                StatusCode::BAD_REQUEST,
                "bad_forge",
                format!("unknown forge `{forge}`; use github, gitea, forgejo or gitlab"),
            ));
        }
        _ => {
            return Err(AppError::new(
                StatusCode::BAD_REQUEST,
                "bad_forge",
                "commit statuses need all of `forge`, `api_url` and `status_token`",
            ));
        }
    };
    let secret = crate::random_secret()
        .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    // The credentials go to the vault first; the row only says where they are.
    let vault_error = |e: String| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "vault", e);
    if app.store.repos().await?.iter().any(|r| r.name == name) {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("a repository named `{name}` exists already"),
        ));
    }
    crate::credentials::keep(app, &name, "webhook_secret", &secret, actor).await.map_err(vault_error)?;
    let source = crate::credentials::keep_url(app, &name, &source, actor).await.map_err(vault_error)?;
    let mut repo = app.store.add_repo(&name, &source, crate::credentials::IN_VAULT, body.poll_seconds, actor).await?;
    if let Some((forge, api_url, token)) = forge {
        crate::credentials::keep(app, &name, "status_token", &token, actor).await.map_err(vault_error)?;
        repo = app.store.set_forge(repo.id, &forge, &api_url, crate::credentials::IN_VAULT, actor).await?;
    }
    // Fetch now, so that a bad source is reported at once.
    let warning = repos::sync(app, &repo, None).await.err();
    if warning.is_none() {
        // Its history is scanned for secrets once, in the background, when it has rules.
        let (app, repo, actor) = (app.clone(), repo.clone(), actor.to_string());
        tokio::spawn(async move {
            match history_scan(&app, &repo, &actor).await {
                Ok(scan) if !scan.findings.is_empty() => {
                    tracing::warn!("{} secret(s) in the history of {}", scan.findings.len(), repo.name)
                }
                Ok(_) => {}
                Err(error) if error.code == "no_rules" => {}
                Err(error) => tracing::warn!("the history of {} was not scanned: {}", repo.name, error.message),
            }
        });
    }
    Ok(api::AddedRepository { repo: repo.into(), webhook_secret: secret, warning })
}

#[utoipa::path(post, path = "/api/v1/repos/{name}/archive", tag = "repositories",
    summary = "Archive a repository: read-only (pushes refused), no new runs, no polling; its history stays",
    params(("name" = String, Path, description = "The repository's name")), security(("token" = [])),
    responses((status = 200, body = api::Repository), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn archive(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<api::Repository>> {
    set_archived(&app, &name, true, &caller.0).await
}

#[utoipa::path(post, path = "/api/v1/repos/{name}/unarchive", tag = "repositories",
    summary = "Make an archived repository active again",
    params(("name" = String, Path, description = "The repository's name")), security(("token" = [])),
    responses((status = 200, body = api::Repository), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn unarchive(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<api::Repository>> {
    set_archived(&app, &name, false, &caller.0).await
}

async fn set_archived(app: &App, name: &str, archived: bool, actor: &str) -> ApiResult<Json<api::Repository>> {
    let repo = app.store.repo(name).await?;
    if repo.archived.is_some() == archived {
        let state = if archived { "archived already" } else { "not archived" };
        return Err(AppError::new(StatusCode::CONFLICT, "conflict", format!("{name} is {state}")));
    }
    Ok(Json(app.store.set_archived(repo.id, archived, actor).await?.into()))
}

#[utoipa::path(post, path = "/api/v1/repos/{name}/scan", tag = "repositories",
    summary = "Scan the whole history for secrets with the rules of .gitleaks.toml at its head (.gitleaksignore honoured)",
    params(("name" = String, Path, description = "The repository's name")), security(("token" = [])),
    responses((status = 200, body = api::HistoryScan), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn scan_history(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<api::HistoryScan>> {
    let repo = app.store.repo(&name).await?;
    Ok(Json(history_scan(&app, &repo, &caller.0).await?))
}

/// Scans the whole history of `repo` with the rules at its head; records it (`scan.history`) and
/// raises `SecretCommitted` when something is found.
async fn history_scan(app: &App, repo: &Repo, actor: &str) -> ApiResult<api::HistoryScan> {
    let name = repo.name.clone();
    let dir = crate::code::git_dir(app, repo);
    if !crate::code::hosting::path(app, &name).is_dir() {
        repos::sync(app, repo, None)
            .await
            .map_err(|e| AppError::new(StatusCode::BAD_GATEWAY, "repository_unavailable", e))?;
    }
    let rules = repos::git(&dir, &["show", "HEAD:.gitleaks.toml"]).await.map_err(|_| {
        AppError::new(
            StatusCode::CONFLICT,
            "no_rules",
            format!("{name} has no .gitleaks.toml at its head; add gitleaks-format rules there (gitleaks' default configuration works unchanged)"),
        )
    })?;
    let config = spec::gitleaks::parse_config(&rules)
        .map_err(|e| AppError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_rules", format!(".gitleaks.toml: {e}")))?;
    let ignored =
        spec::gitleaks::parse_ignore(&repos::git(&dir, &["show", "HEAD:.gitleaksignore"]).await.unwrap_or_default());
    let (found, commits, bytes) = crate::scanning::history(&dir, &config, &ignored)
        .await
        .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "git", e))?;
    let findings: Vec<api::SecretFinding> = found
        .iter()
        .map(|f| api::SecretFinding {
            rule: f.rule.clone(),
            file: f.file.clone(),
            line: f.line,
            commit: f.fingerprint.split(':').next().unwrap_or_default().to_string(),
            fingerprint: f.fingerprint.clone(),
            secret: format!("{}***", f.secret.chars().take(4).collect::<String>()),
        })
        .collect();
    let recorded: Vec<serde_json::Value> = findings
        .iter()
        .map(|f| serde_json::json!({"rule": f.rule, "file": f.file, "line": f.line, "fingerprint": f.fingerprint}))
        .collect();
    let payload = serde_json::json!({"commits": commits, "findings": recorded});
    app.store.record_event("scan.history", &format!("repo/{}", repo.id), actor, payload).await?;
    if !findings.is_empty() {
        let summary = format!("{} secret(s) in the history of {name}", findings.len());
        crate::alerting::security(app, "SecretCommitted", "critical", &[("repository", name.clone())], summary).await;
    }
    Ok(api::HistoryScan { repo: name, commits, bytes, rules: config.rules.len(), findings })
}

#[utoipa::path(post, path = "/api/v1/repos/{name}/runs", tag = "repositories",
    summary = "Queue the runs a push of a ref would start",
    params(("name" = String, Path, description = "The repository's name")),
    request_body(content = Option<api::TriggerRequest>), security(("token" = [])),
    responses((status = 202, body = api::Triggered), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn trigger(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Option<Json<api::TriggerRequest>>,
) -> ApiResult<Response> {
    let repo = app.store.repo(&name).await?;
    if repo.archived.is_some() {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "archived",
            format!("{name} is archived: it starts no runs (`tandem repo unarchive {name}` makes it active again)"),
        ));
    }
    let mirror = repos::sync(&app, &repo, None)
        .await
        .map_err(|e| AppError::new(StatusCode::BAD_GATEWAY, "repository_unavailable", e))?;
    let wanted = body.and_then(|b| b.0.git_ref).unwrap_or_else(|| "HEAD".to_string());
    let resolved =
        repos::git(&mirror, &["rev-parse", "--symbolic-full-name", "--verify", "--quiet", "--end-of-options", &wanted])
            .await
            .unwrap_or_default();
    let git_ref = if resolved.trim().is_empty() { wanted.clone() } else { resolved.trim().to_string() };
    let sha = repos::git(&mirror, &["rev-parse", "--verify", "--end-of-options", &format!("{wanted}^{{commit}}")])
        .await
        .map_err(|_| {
            AppError::new(StatusCode::NOT_FOUND, "unknown_ref", format!("`{wanted}` is not a ref of {name}"))
        })?;
    let sha = sha.trim().to_string();
    let (change, payload) = repos::push_change(&repo, &git_ref, &"0".repeat(40), &sha);
    let ids = match repos::queue_change(&app, &repo, Some(&change), &payload, repos::Origin::Direct, &caller.0).await {
        Ok(store::Delivery::Stored(ids)) => ids,
        Ok(store::Delivery::Duplicate) => Vec::new(),
        Err(repos::QueueError::Store(error)) => return Err(error.into()),
        Err(error) => return Err(AppError::new(StatusCode::BAD_GATEWAY, "repository_unavailable", error.to_string())),
    };
    Ok((StatusCode::ACCEPTED, Json(api::Triggered { runs: ids, git_ref, sha })).into_response())
}
