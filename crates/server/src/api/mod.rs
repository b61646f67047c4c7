//! The REST API under `/api/v1`, webhooks, health and metrics. Errors are JSON with stable codes;
//! every call but health, metrics, the OpenAPI document and webhooks needs a token.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, Query, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use git::webhook::{self, Forge, Parsed};
use store::{Delivery, DeploymentFilter, NewRun, Repo, RunFilter, StoreError};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{App, Metrics, deploy, repos, token_hash};

pub(crate) mod changes;
pub(crate) mod commits;
mod deployments;
mod guard;
pub(crate) use deployments::attest;
mod incidents;
mod monitoring;
mod prometheus;
mod repositories;
mod runs;
pub(crate) mod secrets;
pub(crate) mod web;
mod webhooks;

/// Largest webhook body accepted.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// The document's frame: title, the token scheme, the error body. Paths and the other schemas
/// come from the handlers' `#[utoipa::path]` annotations as they are routed.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Tandem", description = "Tandem's HTTP API. Every call but health, metrics, this document and webhooks needs `Authorization: Bearer <token>`."),
    modifiers(&TokenScheme),
    components(schemas(api::ErrorBody))
)]
struct Frame;

struct TokenScheme;

impl utoipa::Modify for TokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every endpoint, each with its OpenAPI description: what is routed is what is documented.
fn routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::with_openapi(<Frame as utoipa::OpenApi>::openapi())
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_document))
        .routes(routes!(webhooks::webhook))
        .routes(routes!(repositories::list_repos, repositories::add_repo))
        .routes(routes!(repositories::trigger))
        .routes(routes!(runs::list_runs))
        .routes(routes!(runs::show_run))
        .routes(routes!(runs::logs))
        .routes(routes!(runs::cancel))
        .routes(routes!(runs::approve_job))
        .routes(routes!(commits::show))
        .routes(routes!(repositories::archive))
        .routes(routes!(repositories::unarchive))
        .routes(routes!(repositories::scan_history))
        .routes(routes!(runs::rerun))
        .routes(routes!(runs::events))
        .routes(routes!(deployments::list_deployments, deployments::request_deployment))
        .routes(routes!(deployments::show_deployment))
        .routes(routes!(deployments::approve))
        .routes(routes!(deployments::sbom))
        .routes(routes!(deployments::provenance))
        .routes(routes!(deployments::promote))
        .routes(routes!(deployments::list_environments))
        .routes(routes!(deployments::rollback))
        .routes(routes!(prometheus::query))
        .routes(routes!(prometheus::query_range))
        .routes(routes!(prometheus::series))
        .routes(routes!(prometheus::labels))
        .routes(routes!(prometheus::label_values))
        .routes(routes!(monitoring::probes))
        .routes(routes!(monitoring::slos))
        .routes(routes!(monitoring::alerts))
        .routes(routes!(monitoring::rules))
        .routes(routes!(monitoring::insights))
        .routes(routes!(monitoring::service_overview))
        .routes(routes!(monitoring::heartbeat))
        .routes(routes!(monitoring::receive_alerts, monitoring::held_alerts))
        .routes(routes!(monitoring::notifications))
        .routes(routes!(monitoring::add_silence, monitoring::list_silences))
        .routes(routes!(monitoring::expire_silence))
        .routes(routes!(incidents::list_incidents, incidents::open_incident))
        .routes(routes!(incidents::show_incident))
        .routes(routes!(incidents::incident_command))
        .routes(routes!(incidents::postmortem))
        .routes(routes!(incidents::add_action_item))
        .routes(routes!(incidents::finish_action_item))
        .routes(routes!(incidents::dora))
        .routes(routes!(incidents::oncall))
        .routes(routes!(incidents::add_override))
        .routes(routes!(incidents::ack_page, incidents::ack_link))
        .routes(routes!(runs::checkpoint))
        .routes(routes!(secrets::list_secrets))
        .routes(routes!(secrets::set_secret, secrets::delete_secret))
        .routes(routes!(secrets::rotate_key))
        .routes(routes!(secrets::list_variables))
        .routes(routes!(secrets::set_variable, secrets::delete_variable))
        .routes(routes!(secrets::access_report))
        .routes(routes!(changes::create_hosted))
        .routes(routes!(changes::list_changes))
        .routes(routes!(changes::show_change))
        .routes(routes!(changes::diff_change))
        .routes(routes!(changes::comment_change))
        .routes(routes!(changes::resolve_comment))
        .routes(routes!(changes::approve_change))
        .routes(routes!(changes::merge_change, changes::dequeue_change))
        .routes(routes!(changes::show_queue))
}

pub fn router(app: Arc<App>) -> Router {
    let (router, _) = routes().split_for_parts();
    router
        .merge(web::routes())
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), guard::enforce))
        .fallback(|| async {
            AppError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint; see /api/v1/openapi.json")
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

/// Every route of the web pages and their forms, (method, route): what is not in the OpenAPI
/// document.
pub fn page_routes() -> Vec<(&'static str, &'static str)> {
    web::table()
}

/// The OpenAPI 3.1 document of every route, with the request and response schemas of `api`.
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut document = routes().split_for_parts().1;
        document.info.version = env!("CARGO_PKG_VERSION").to_string();
        document
    })
}

#[utoipa::path(get, path = "/healthz", tag = "server", summary = "Liveness: 200 when the server answers",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "server", summary = "This document",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json")))]
async fn openapi_document() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(openapi())
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
        let body = api::ErrorBody { error: api::ErrorDetail { code: self.code.to_string(), message: self.message } };
        (self.status, Json(body)).into_response()
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
        // The access layer has identified the caller and checked the route's policy.
        let principal = match parts.extensions.get::<crate::access::Principal>() {
            Some(principal) => Some(principal.clone()),
            None => guard::principal(parts, app).await?,
        };
        match principal {
            // The pages' own reads (a live log) go with the session cookie; anything that changes
            // state needs a token, or a page's form with its CSRF token.
            Some(principal)
                if principal.via == crate::access::Via::Session && parts.method != axum::http::Method::GET =>
            {
                Err(AppError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "this call needs `Authorization: Bearer <token>` (TANDEM_TOKEN for the CLI)",
                ))
            }
            Some(principal) => Ok(Caller(principal.actor)),
            None => Err(AppError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this call needs `Authorization: Bearer <token>` (TANDEM_TOKEN for the CLI)",
            )),
        }
    }
}

fn parse_id(text: &str) -> ApiResult<i64> {
    text.parse().map_err(|_| AppError::new(StatusCode::BAD_REQUEST, "bad_request", format!("`{text}` is not an id")))
}

#[utoipa::path(get, path = "/metrics", tag = "server",
    summary = "Prometheus text format: queue depth, runs, steps, webhooks, deployments and the proxies' figures",
    responses((status = 200, description = "Prometheus exposition format 0.0.4", content_type = "text/plain", body = String)))]
async fn metrics(State(app): State<Arc<App>>) -> ApiResult<Response> {
    let out = exposition(&app).await?;
    Ok(([("content-type", "text/plain; version=0.0.4")], out).into_response())
}

/// Tandem's own figures in the Prometheus text format: what `/metrics` serves and what the
/// monitor records in the time-series store.
pub(crate) async fn exposition(app: &App) -> Result<String, StoreError> {
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
    let stats = app.tsdb.stats();
    let _ = writeln!(
        out,
        "# HELP tandem_tsdb_series Series in the time-series store.\n# TYPE tandem_tsdb_series gauge\ntandem_tsdb_series {}",
        stats.series
    );
    let _ = writeln!(
        out,
        "# HELP tandem_tsdb_samples Samples in the time-series store.\n# TYPE tandem_tsdb_samples gauge\ntandem_tsdb_samples {}",
        stats.samples
    );
    let remote = &app.remote.counters;
    let _ = writeln!(
        out,
        "# HELP tandem_remote_write_samples_total Samples for the remote-write receivers, by outcome.\n# TYPE tandem_remote_write_samples_total counter\ntandem_remote_write_samples_total{{outcome=\"sent\"}} {}\ntandem_remote_write_samples_total{{outcome=\"failed\"}} {}\ntandem_remote_write_samples_total{{outcome=\"dropped\"}} {}",
        remote.sent.load(Relaxed),
        remote.failed.load(Relaxed),
        remote.dropped.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP tandem_tsdb_append_failures_total Appends refused because the store's log could not be written.\n# TYPE tandem_tsdb_append_failures_total counter\ntandem_tsdb_append_failures_total {}",
        app.tsdb.failed_appends()
    );
    let _ = writeln!(
        out,
        "# HELP tandem_tsdb_read_failures_total Reads of sealed chunks on disk that failed or found them damaged; their samples were left out of a query.\n# TYPE tandem_tsdb_read_failures_total counter\ntandem_tsdb_read_failures_total {}",
        app.tsdb.failed_reads()
    );
    let _ = writeln!(
        out,
        "# HELP tandem_tsdb_chunk_bytes Bytes of compressed samples in the time-series store.\n# TYPE tandem_tsdb_chunk_bytes gauge\ntandem_tsdb_chunk_bytes {}",
        stats.chunk_bytes
    );
    Ok(out)
}

/// Query parameters whose rejection is an API error (JSON with a code), not axum's plain text.
pub(super) struct Params<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Params<T>, AppError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Params(value)),
            Err(rejection) => Err(AppError::new(StatusCode::BAD_REQUEST, "bad_request", rejection.body_text())),
        }
    }
}

/// A JSON body whose rejection is an API error.
pub(super) fn body<T>(body: Result<Json<T>, axum::extract::rejection::JsonRejection>) -> ApiResult<T> {
    body.map(|Json(value)| value).map_err(|e| AppError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))
}
