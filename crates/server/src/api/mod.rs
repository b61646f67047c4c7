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
use store::{Delivery, DeploymentFilter, NewRun, Repo, RunFilter, RunStatus, StoreError};

use crate::{App, Metrics, deploy, repos, token_hash};

mod deployments;
mod repositories;
mod runs;
mod webhooks;
#[allow(unused_imports)]
use deployments::*;
#[allow(unused_imports)]
use repositories::*;
#[allow(unused_imports)]
use runs::*;
#[allow(unused_imports)]
use webhooks::*;

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
