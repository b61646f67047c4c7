//! The REST API under `/api/v1`, webhooks, health and metrics. Errors are JSON with stable codes;
//! every call but health, metrics, the OpenAPI document and webhooks needs a token.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use git::webhook::{self, Forge, Parsed};
use serde::Deserialize;
use store::{Delivery, DeploymentFilter, NewRun, Repo, RunFilter, RunStatus, Store, StoreError};

use crate::{App, Metrics, deploy, repos, token_hash};

/// Largest webhook body accepted.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// Every endpoint: method, path, whether it needs a token, summary. The OpenAPI document is
/// built from this list, and a test checks that the router serves each entry.
pub const ROUTES: &[(&str, &str, bool, &str)] = &[
    ("get", "/healthz", false, "Liveness: 200 when the server answers"),
    ("get", "/metrics", false, "Prometheus text format: queue depth, run durations, step outcomes"),
    ("get", "/api/v1/openapi.json", false, "This document"),
    (
        "post",
        "/api/v1/webhooks/{forge}",
        false,
        "Webhook from GitHub (X-Hub-Signature-256), Gitea/Forgejo (X-Gitea-Signature) or GitLab (X-Gitlab-Token)",
    ),
    ("get", "/api/v1/repos", true, "List repositories"),
    ("post", "/api/v1/repos", true, "Add a repository (local path or git URL); returns its webhook secret once"),
    ("post", "/api/v1/repos/{name}/runs", true, "Queue the runs a push of a ref would start"),
    ("get", "/api/v1/runs", true, "List runs, newest first (filters: repo, ref, status, limit)"),
    ("get", "/api/v1/runs/{id}", true, "One run with its report"),
    ("get", "/api/v1/runs/{id}/logs", true, "A run's log; with follow=true a live Server-Sent Events stream"),
    ("post", "/api/v1/runs/{id}/cancel", true, "Cancel a queued or running run"),
    ("post", "/api/v1/runs/{id}/rerun", true, "Queue the run again, all jobs or only the failed ones"),
    ("get", "/api/v1/events", true, "The event log (audit trail), after a sequence number"),
    ("post", "/api/v1/deployments", true, "Deploy a repository's commit to an environment of its service file"),
    ("get", "/api/v1/deployments", true, "List deployments, newest first (filters: service, environment, limit)"),
    ("get", "/api/v1/deployments/{id}", true, "One deployment with its events: gates, steps, verdicts, the end"),
    ("post", "/api/v1/deployments/{id}/approve", true, "Approve a deployment held for approval"),
    (
        "post",
        "/api/v1/deployments/{id}/promote",
        true,
        "Promote a running deployment now: its remaining steps are skipped",
    ),
    ("get", "/api/v1/environments", true, "Environments: their stable release, the previous one and the proxy address"),
    (
        "post",
        "/api/v1/environments/{service}/{environment}/rollback",
        true,
        "Roll back the rollout in progress, else go back to the previous release (emergency=true skips gates and analysis)",
    ),
];

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(|| async { Json(openapi()) }))
        .route("/api/v1/webhooks/{forge}", post(webhook))
        .route("/api/v1/repos", get(list_repos).post(add_repo))
        .route("/api/v1/repos/{name}/runs", post(trigger))
        .route("/api/v1/runs", get(list_runs))
        .route("/api/v1/runs/{id}", get(show_run))
        .route("/api/v1/runs/{id}/logs", get(logs))
        .route("/api/v1/runs/{id}/cancel", post(cancel))
        .route("/api/v1/runs/{id}/rerun", post(rerun))
        .route("/api/v1/events", get(events))
        .route("/api/v1/deployments", get(list_deployments).post(request_deployment))
        .route("/api/v1/deployments/{id}", get(show_deployment))
        .route("/api/v1/deployments/{id}/approve", post(approve))
        .route("/api/v1/deployments/{id}/promote", post(promote))
        .route("/api/v1/environments", get(list_environments))
        .route("/api/v1/environments/{service}/{environment}/rollback", post(rollback))
        .fallback(|| async {
            AppError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint; see /api/v1/openapi.json")
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

/// The OpenAPI 3.1 description of [`ROUTES`].
pub fn openapi() -> serde_json::Value {
    let mut paths = serde_json::Map::new();
    for (method, path, auth, summary) in ROUTES {
        let mut operation = serde_json::json!({
            "summary": summary,
            "responses": {"200": {"description": "success"}, "4XX": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
        });
        if *auth {
            operation["security"] = serde_json::json!([{"token": []}]);
        }
        let parameters: Vec<serde_json::Value> = path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| serde_json::json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !parameters.is_empty() {
            operation["parameters"] = serde_json::Value::Array(parameters);
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| serde_json::json!({}));
        entry[*method] = operation;
    }
    serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "Tandem", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}},
        },
    })
}

/// An API error: a status and a stable code, with a message for people. Internals stay in the
/// server's log.
#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl AppError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> AppError {
        AppError { status, code, message: message.into() }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({"error": {"code": self.code, "message": self.message}}))).into_response()
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> AppError {
        match error {
            StoreError::NotFound(what) => {
                AppError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} does not exist"))
            }
            StoreError::Conflict(message) => AppError::new(StatusCode::CONFLICT, "conflict", message),
            other => {
                tracing::error!("store error: {other}");
                AppError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the server could not complete the request; see its log",
                )
            }
        }
    }
}

type ApiResult<T> = Result<T, AppError>;

/// The caller, authenticated by `Authorization: Bearer <token>`.
pub struct Caller(pub String);

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Caller, AppError> {
        let header = parts.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        let Some(token) = header.strip_prefix("Bearer ").map(str::trim).filter(|t| !t.is_empty()) else {
            return Err(AppError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this call needs `Authorization: Bearer <token>` (TANDEM_TOKEN for the CLI)",
            ));
        };
        match app.store.token_name(&token_hash(token)).await? {
            Some(name) => Ok(Caller(name)),
            None => Err(AppError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the token is not valid")),
        }
    }
}

fn parse_id(text: &str) -> ApiResult<i64> {
    text.parse().map_err(|_| AppError::new(StatusCode::BAD_REQUEST, "bad_request", format!("`{text}` is not an id")))
}

async fn metrics(State(app): State<Arc<App>>) -> ApiResult<Response> {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let m = &app.metrics;
    let depth = app.store.queue_depth().await?;
    let running = app.running.lock().map(|r| r.len()).unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP tandem_queue_depth Runs waiting to start.\n# TYPE tandem_queue_depth gauge\ntandem_queue_depth {depth}"
    );
    let _ = writeln!(
        out,
        "# HELP tandem_runs_running Runs executing now.\n# TYPE tandem_runs_running gauge\ntandem_runs_running {running}"
    );
    let _ = writeln!(
        out,
        "# HELP tandem_runs_finished_total Runs finished, by result.\n# TYPE tandem_runs_finished_total counter"
    );
    for (status, counter) in
        [("success", &m.runs_success), ("failure", &m.runs_failure), ("cancelled", &m.runs_cancelled)]
    {
        let _ = writeln!(out, "tandem_runs_finished_total{{status=\"{status}\"}} {}", counter.load(Relaxed));
    }
    let n_runs = m.runs_success.load(Relaxed) + m.runs_failure.load(Relaxed) + m.runs_cancelled.load(Relaxed);
    let _ = writeln!(
        out,
        "# HELP tandem_run_duration_seconds Wall time of finished runs.\n# TYPE tandem_run_duration_seconds summary"
    );
    let _ = writeln!(
        out,
        "tandem_run_duration_seconds_sum {}\ntandem_run_duration_seconds_count {n_runs}",
        m.run_seconds_milli.load(Relaxed) as f64 / 1000.0
    );
    let _ =
        writeln!(out, "# HELP tandem_steps_total Steps finished, by conclusion.\n# TYPE tandem_steps_total counter");
    for (status, counter) in [
        ("success", &m.steps_success),
        ("failure", &m.steps_failure),
        ("skipped", &m.steps_skipped),
        ("cancelled", &m.steps_cancelled),
    ] {
        let _ = writeln!(out, "tandem_steps_total{{status=\"{status}\"}} {}", counter.load(Relaxed));
    }
    let _ = writeln!(
        out,
        "# HELP tandem_webhooks_total Webhook deliveries, by outcome.\n# TYPE tandem_webhooks_total counter"
    );
    let _ = writeln!(
        out,
        "tandem_webhooks_total{{outcome=\"accepted\"}} {}\ntandem_webhooks_total{{outcome=\"rejected\"}} {}",
        m.webhooks_accepted.load(Relaxed),
        m.webhooks_rejected.load(Relaxed)
    );
    out.push_str(&app.deployer.metrics().await);
    let counts = app.store.deployment_counts().await?;
    let _ = writeln!(
        out,
        "# HELP tandem_deployments_total Deployments that ended, by result.\n# TYPE tandem_deployments_total counter"
    );
    for status in [
        store::DeploymentStatus::Promoted,
        store::DeploymentStatus::RolledBack,
        store::DeploymentStatus::Failed,
        store::DeploymentStatus::Skipped,
    ] {
        let n = counts.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "tandem_deployments_total{{result=\"{}\"}} {n}", status.as_str());
    }
    Ok(([("content-type", "text/plain; version=0.0.4")], out).into_response())
}

/// Which repository a payload is about, read before the signature can be checked (the secret
/// belongs to the repository).
fn payload_repository(forge: Forge, body: &serde_json::Value) -> (Option<String>, Vec<String>) {
    let pick = |paths: &[&str]| {
        paths.iter().filter_map(|p| body.pointer(p).and_then(|v| v.as_str()).map(str::to_string)).collect::<Vec<_>>()
    };
    match forge {
        Forge::GitLab => (
            pick(&["/project/path_with_namespace"]).pop(),
            pick(&["/project/git_http_url", "/project/git_ssh_url", "/project/http_url"]),
        ),
        _ => (
            pick(&["/repository/full_name"]).pop(),
            pick(&["/repository/clone_url", "/repository/ssh_url", "/repository/html_url"]),
        ),
    }
}

fn find_repo<'r>(repos: &'r [Repo], name: Option<&str>, urls: &[String]) -> Option<&'r Repo> {
    repos.iter().find(|r| Some(r.name.as_str()) == name).or_else(|| {
        repos.iter().find(|r| urls.iter().any(|u| u.trim_end_matches(".git") == r.source.trim_end_matches(".git")))
    })
}

async fn webhook(
    State(app): State<Arc<App>>,
    Path(forge_name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let reject = |error: AppError| {
        Metrics::add(&app.metrics.webhooks_rejected, 1);
        if error.status == StatusCode::UNAUTHORIZED {
            tracing::warn!("webhook rejected: {}", error.message);
        }
        Err(error)
    };
    let Some(forge) = Forge::from_name(&forge_name) else {
        return reject(AppError::new(
            StatusCode::NOT_FOUND,
            "unknown_forge",
            format!("unknown forge `{forge_name}`; use github, gitea, forgejo or gitlab"),
        ));
    };
    let body: Bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return reject(AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("webhook bodies are limited to {MAX_BODY_BYTES} bytes"),
            ));
        }
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let Some(event) = forge.event_header().iter().find_map(|h| header(h)) else {
        return reject(AppError::new(
            StatusCode::BAD_REQUEST,
            "missing_header",
            format!("the {} header is missing", forge.event_header()[0]),
        ));
    };
    let delivery =
        forge.delivery_header().iter().find_map(|h| header(h)).unwrap_or_else(|| webhook::sign("delivery", &body));
    let json: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(json) => json,
        Err(e) => {
            return reject(AppError::new(
                StatusCode::BAD_REQUEST,
                "malformed_payload",
                format!("the body is not valid JSON: {e}"),
            ));
        }
    };
    let (name, urls) = payload_repository(forge, &json);
    let repos = app.store.repos().await?;
    let Some(repo) = find_repo(&repos, name.as_deref(), &urls) else {
        return reject(AppError::new(
            StatusCode::NOT_FOUND,
            "unknown_repository",
            format!("no repository here matches `{}`; add it with `tandem repo add`", name.unwrap_or_default()),
        ));
    };
    if let Err(error) = webhook::verify(forge, &repo.webhook_secret, &header, &body) {
        return reject(AppError::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            format!("{error}; nothing was stored"),
        ));
    }
    let parsed = match webhook::parse(forge, &event, &body) {
        Ok(parsed) => parsed,
        Err(error) => return reject(AppError::new(StatusCode::BAD_REQUEST, "malformed_payload", error.to_string())),
    };
    let (runs, outcome) = match &parsed {
        Parsed::Change(change) => {
            let runs = repos::plan_runs(&app, repo, change, &json).await.map_err(|e| {
                tracing::warn!("planning runs for {}: {e}", repo.name);
                AppError::new(
                    StatusCode::BAD_GATEWAY,
                    "repository_unavailable",
                    format!("cannot read {}: {e}", repo.source),
                )
            })?;
            (runs, "queued")
        }
        Parsed::Ignored { .. } => (Vec::new(), "ignored"),
    };
    let stored = app.store.record_delivery(forge.name(), &delivery, repo.id, &event, runs, forge.name()).await?;
    Metrics::add(&app.metrics.webhooks_accepted, 1);
    let body = match stored {
        Delivery::Stored(ids) => {
            app.wake.notify_one();
            let reason = match &parsed {
                Parsed::Ignored { reason, .. } => Some(reason.clone()),
                Parsed::Change(_) => None,
            };
            serde_json::json!({"status": outcome, "delivery": delivery, "runs": ids, "reason": reason})
        }
        Delivery::Duplicate => serde_json::json!({"status": "duplicate", "delivery": delivery, "runs": []}),
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn list_repos(State(app): State<Arc<App>>, _caller: Caller) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(serde_json::json!({"repos": app.store.repos().await?})))
}

#[derive(Debug, Deserialize)]
struct AddRepo {
    source: String,
    name: Option<String>,
    poll_seconds: Option<i64>,
    /// Where to post commit statuses: `github`, `gitea`/`forgejo` or `gitlab`, with `api_url` and `status_token`.
    forge: Option<String>,
    api_url: Option<String>,
    status_token: Option<String>,
}

async fn add_repo(
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Result<Json<AddRepo>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let Json(body) = body.map_err(|e| AppError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let source = body.source.trim().to_string();
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
    let mut repo = app.store.add_repo(&name, &source, &secret, body.poll_seconds, &caller.0).await?;
    if let Some((forge, api_url, token)) = forge {
        repo = app.store.set_forge(repo.id, &forge, &api_url, &token, &caller.0).await?;
    }
    // Fetch now, so that a bad source is reported at once.
    if let Err(error) = repos::sync(&app, &repo, None).await {
        return Ok((
            StatusCode::CREATED,
            Json(serde_json::json!({"repo": repo, "webhook_secret": secret, "warning": error})),
        )
            .into_response());
    }
    Ok((StatusCode::CREATED, Json(serde_json::json!({"repo": repo, "webhook_secret": secret}))).into_response())
}

#[derive(Debug, Deserialize)]
struct Trigger {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
}

async fn trigger(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Option<Json<Trigger>>,
) -> ApiResult<Response> {
    let repo = app.store.repo(&name).await?;
    let mirror = repos::sync(&app, &repo, None)
        .await
        .map_err(|e| AppError::new(StatusCode::BAD_GATEWAY, "repository_unavailable", e))?;
    let wanted = body.and_then(|b| b.0.git_ref).unwrap_or_else(|| "HEAD".to_string());
    let resolved = repos::git(&mirror, &["rev-parse", "--symbolic-full-name", &wanted]).await.unwrap_or_default();
    let git_ref = if resolved.trim().is_empty() { wanted.clone() } else { resolved.trim().to_string() };
    let sha = repos::git(&mirror, &["rev-parse", &format!("{wanted}^{{commit}}")]).await.map_err(|_| {
        AppError::new(StatusCode::NOT_FOUND, "unknown_ref", format!("`{wanted}` is not a ref of {name}"))
    })?;
    let sha = sha.trim().to_string();
    let before = "0".repeat(40);
    let change = git::webhook::Change {
        repository: repo.name.clone(),
        clone_urls: vec![repo.source.clone()],
        event: "push",
        git_ref: git_ref.clone(),
        sha: sha.clone(),
        before: before.clone(),
        change_request: None,
        changed_paths: Vec::new(),
    };
    let payload = repos::push_payload(&repo, &git_ref, &before, &sha);
    let runs = repos::plan_runs(&app, &repo, &change, &payload)
        .await
        .map_err(|e| AppError::new(StatusCode::BAD_GATEWAY, "repository_unavailable", e))?;
    let mut ids = Vec::new();
    for run in runs {
        ids.push(app.store.enqueue(run, &caller.0).await?.id);
    }
    app.wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({"runs": ids, "ref": git_ref, "sha": sha}))).into_response())
}

#[derive(Debug, Deserialize)]
struct RunsQuery {
    repo: Option<String>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    branch: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
}

async fn list_runs(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Query(query): Query<RunsQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let repo_id = match &query.repo {
        Some(name) => Some(app.store.repo(name).await?.id),
        None => None,
    };
    let status = match &query.status {
        Some(text) => Some(RunStatus::parse(text).ok_or_else(|| {
            AppError::new(StatusCode::BAD_REQUEST, "bad_request", format!("unknown status `{text}`"))
        })?),
        None => None,
    };
    let git_ref = query.git_ref.clone().or(query.branch.as_ref().map(|b| format!("refs/heads/{b}")));
    let runs = app.store.runs(RunFilter { repo_id, git_ref, status, limit: query.limit.unwrap_or(50) }).await?;
    let runs: Vec<serde_json::Value> = runs.into_iter().map(|r| serde_json::json!({"id": r.id, "repo_id": r.repo_id, "number": r.number, "workflow": r.workflow, "event": r.event, "ref": r.git_ref, "sha": r.sha, "status": r.status, "reason": r.reason, "attempt": r.attempt, "created": r.created, "started": r.started, "finished": r.finished})).collect();
    Ok(Json(serde_json::json!({"runs": runs})))
}

async fn show_run(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let run = app.store.run(parse_id(&id)?).await?;
    Ok(Json(serde_json::to_value(run).unwrap_or_default()))
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    after: Option<i64>,
    follow: Option<bool>,
}

async fn logs(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<LogQuery>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let run = app.store.run(id).await?;
    let after = query.after.unwrap_or(0);
    if !query.follow.unwrap_or(false) {
        let chunks = app.store.log(id, after).await?;
        let next = chunks.last().map_or(after, |(seq, _)| *seq);
        let lines: Vec<_> = chunks.into_iter().flat_map(|(_, lines)| lines).collect();
        return Ok(
            Json(serde_json::json!({"run": id, "status": run.status, "lines": lines, "next": next})).into_response()
        );
    }
    // Live: poll the store (the durable source of truth) and stream new chunks as events.
    let stream = futures_util::stream::unfold((app, after, false), move |(app, mut after, done)| async move {
        if done {
            return None;
        }
        loop {
            let finished = app.store.run(id).await.map(|r| r.status.is_finished()).unwrap_or(true);
            let chunks = app.store.log(id, after).await.unwrap_or_default();
            if let Some((seq, _)) = chunks.last() {
                after = *seq;
                let lines: Vec<_> = chunks.into_iter().flat_map(|(_, lines)| lines).collect();
                let event =
                    SseEvent::default().event("lines").id(after.to_string()).json_data(&lines).unwrap_or_default();
                return Some((Ok::<_, Infallible>(event), (app, after, false)));
            }
            if finished {
                let status = app.store.run(id).await.map(|r| r.status.as_str()).unwrap_or("unknown");
                let event = SseEvent::default().event("end").data(status);
                return Some((Ok(event), (app, after, true)));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

async fn cancel(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_id(&id)?;
    let run = app.store.request_cancel(id, &caller.0).await?;
    if let Some(source) = app.running.lock().ok().and_then(|r| r.get(&id).cloned()) {
        source.cancel();
    }
    Ok(Json(serde_json::json!({"id": id, "status": run.status, "cancel_requested": true})))
}

#[derive(Debug, Deserialize, Default)]
struct Rerun {
    #[serde(default)]
    failed: bool,
}

async fn rerun(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Option<Json<Rerun>>,
) -> ApiResult<Response> {
    let run = app.store.run(parse_id(&id)?).await?;
    if !run.status.is_finished() {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("run {} is still {}", run.id, run.status.as_str()),
        ));
    }
    let failed_only = body.map(|b| b.0.failed).unwrap_or(false);
    let jobs = if failed_only {
        let failed: Vec<String> = run
            .report
            .as_ref()
            .and_then(|r| r.get("jobs"))
            .and_then(|j| j.as_array())
            .into_iter()
            .flatten()
            .filter(|j| matches!(j.get("status").and_then(|s| s.as_str()), Some("failure" | "cancelled")))
            .filter_map(|j| j.get("id").and_then(|i| i.as_str()).map(str::to_string))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if failed.is_empty() {
            return Err(AppError::new(
                StatusCode::CONFLICT,
                "nothing_failed",
                format!("run {} has no failed jobs to re-run", run.id),
            ));
        }
        Some(failed)
    } else {
        run.jobs.clone()
    };
    let new = NewRun {
        repo_id: run.repo_id,
        workflow: run.workflow,
        event: run.event,
        git_ref: run.git_ref,
        sha: run.sha,
        before_sha: run.before_sha,
        change_request: run.change_request,
        jobs,
        payload: run.payload,
    };
    let queued = app.store.enqueue(new, &caller.0).await?;
    app.wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({"id": queued.id, "number": queued.number, "jobs": queued.jobs})))
        .into_response())
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    after: Option<i64>,
    limit: Option<i64>,
}

async fn events(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Query(query): Query<EventsQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let events = app.store.events(query.after.unwrap_or(0), query.limit.unwrap_or(100)).await?;
    Ok(Json(serde_json::json!({"events": events})))
}

#[derive(Debug, Deserialize)]
struct DeployRequest {
    repo: String,
    environment: String,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
}

async fn request_deployment(
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Result<Json<DeployRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let Json(body) = body.map_err(|e| AppError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let repo = app.store.repo(&body.repo).await?;
    let git_ref = body.git_ref.unwrap_or_else(|| "HEAD".into());
    let new = deploy::plan(&app, &repo, &git_ref, &body.environment, "deploy", None)
        .await
        .map_err(|e| AppError::new(StatusCode::UNPROCESSABLE_ENTITY, "cannot_deploy", e))?;
    let deployment = app.store.request_deployment(new, &caller.0).await?;
    app.deployer.wake.notify_waiters();
    Ok((StatusCode::CREATED, Json(deployment)).into_response())
}

#[derive(Debug, Deserialize)]
struct DeploymentQuery {
    service: Option<String>,
    environment: Option<String>,
    limit: Option<i64>,
}

async fn list_deployments(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Query(query): Query<DeploymentQuery>,
) -> ApiResult<Json<Vec<store::Deployment>>> {
    let filter = DeploymentFilter {
        service: query.service,
        environment: query.environment,
        active_only: false,
        limit: query.limit.unwrap_or(50).clamp(1, 1000),
    };
    Ok(Json(app.store.deployments(filter).await?))
}

async fn show_deployment(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_id(&id)?;
    let deployment = app.store.deployment(id).await?;
    let events = app.store.events_about(&format!("deployment/{id}")).await?;
    let events: Vec<serde_json::Value> = events
        .into_iter()
        .map(|e| serde_json::json!({"seq": e.seq, "time": e.time, "kind": e.kind, "actor": e.actor, "payload": e.payload}))
        .collect();
    let mut value = serde_json::to_value(deployment).unwrap_or_default();
    value["events"] = serde_json::Value::Array(events);
    Ok(Json(value))
}

async fn approve(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<store::Deployment>> {
    let deployment = app.store.approve_deployment(parse_id(&id)?, &caller.0).await?;
    app.deployer.wake.notify_waiters();
    Ok(Json(deployment))
}

async fn list_environments(State(app): State<Arc<App>>, _caller: Caller) -> ApiResult<Json<Vec<serde_json::Value>>> {
    let mut list = Vec::new();
    for env in app.store.environments().await? {
        let release = |id: Option<i64>| {
            let app = app.clone();
            async move {
                match id {
                    Some(id) => app
                        .store
                        .deployment(id)
                        .await
                        .ok()
                        .map(|d| serde_json::json!({"deployment": d.id, "release": d.release, "sha": d.sha})),
                    None => None,
                }
            }
        };
        list.push(serde_json::json!({
            "service": env.service,
            "environment": env.environment,
            "listen": env.listen,
            "stable": release(env.stable).await,
            "previous": release(env.previous).await,
        }));
    }
    Ok(Json(list))
}

#[derive(Debug, Deserialize, Default)]
struct RollbackRequest {
    #[serde(default)]
    emergency: bool,
}

async fn rollback(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((service, environment)): Path<(String, String)>,
    body: Option<Json<RollbackRequest>>,
) -> ApiResult<Response> {
    let emergency = body.is_some_and(|b| b.0.emergency);
    let active = app
        .store
        .deployments(DeploymentFilter {
            service: Some(service.clone()),
            environment: Some(environment.clone()),
            active_only: true,
            limit: 1000,
        })
        .await?;
    // A rollout in progress (the oldest unfinished one is the one being carried out) stops now.
    if let Some(current) = active.last() {
        let deployment = app.store.abort_deployment(current.id, &caller.0).await?;
        app.deployer.abort(current.id);
        return Ok((StatusCode::ACCEPTED, Json(deployment)).into_response());
    }
    let Some(state) = app.store.environment(&service, &environment).await? else {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{service}/{environment} has never been deployed"),
        ));
    };
    let Some(previous) = state.previous else {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("{service}/{environment} has no previous release to go back to"),
        ));
    };
    let previous = app.store.deployment(previous).await?;
    let new = store::NewDeployment {
        repo_id: previous.repo_id,
        service: previous.service,
        environment: previous.environment,
        sha: previous.sha,
        release: previous.release,
        run_id: None,
        kind: if emergency { "emergency".into() } else { "rollback".into() },
        spec: previous.spec,
    };
    let deployment = app.store.request_deployment(new, &caller.0).await?;
    app.deployer.wake.notify_waiters();
    Ok((StatusCode::CREATED, Json(deployment)).into_response())
}

async fn promote(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<store::Deployment>> {
    let id = parse_id(&id)?;
    let deployment = app.store.deployment(id).await?;
    if deployment.status != store::DeploymentStatus::Running {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("deployment {id} is {}: only a running deployment can be promoted", deployment.status.as_str()),
        ));
    }
    let payload = serde_json::json!({"service": deployment.service, "environment": deployment.environment, "sha": deployment.sha, "release": deployment.release});
    app.store.record_event("deployment.promote_requested", &format!("deployment/{id}"), &caller.0, payload).await?;
    app.deployer.promote(id);
    Ok(Json(deployment))
}
