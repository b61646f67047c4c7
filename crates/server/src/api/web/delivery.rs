//! Deployment pages: environments (stable and previous release, proxy, roll back with a
//! confirmation) and every deployment; one deployment with its traffic over time, each move with
//! the analysis evidence behind it, and the actions it allows now.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use store::{DeploymentFilter, DeploymentStatus};

use super::pages::{DeploymentRow, EnvironmentRow, Flash, deployment_rows, environment_rows, missing};
use super::render::{self, time};
use super::session::Viewer;
use super::{Chrome, page};
use crate::App;

#[derive(askama::Template)]
#[template(path = "deployments.html")]
struct DeploymentsPage {
    chrome: Chrome,
    environments: Vec<EnvironmentRow>,
    /// Each environment's deployments of the last 14 days on one time axis (SVG).
    timeline: String,
    deployments: Vec<DeploymentRow>,
}

/// One lane per service and environment: each deployment at the time it ended (or started), its
/// colour its outcome, from the oldest of the last 14 days' deployments to now.
fn timeline(list: &[store::Deployment]) -> String {
    let end = jiff::Timestamp::now().as_second() as f64;
    let start = end - 14.0 * 86400.0;
    let mut lanes: Vec<render::Lane> = Vec::new();
    for d in list.iter().rev() {
        let at = d.finished.as_deref().or(d.started.as_deref()).unwrap_or(&d.created);
        let Ok(at) = at.parse::<jiff::Timestamp>() else { continue };
        let at = at.as_second() as f64;
        if at < start {
            continue;
        }
        let class = match d.status {
            DeploymentStatus::Promoted => "ok",
            DeploymentStatus::RolledBack | DeploymentStatus::Failed => "bad",
            _ => "wait",
        };
        let label = format!("{}/{}", d.service, d.environment);
        let title = format!(
            "deployment {} of {} ({}, {}) at {}",
            d.id,
            d.release,
            d.kind.as_str(),
            d.status.as_str(),
            time(&d.created)
        );
        match lanes.iter_mut().find(|l| l.0 == label) {
            Some(lane) => lane.1.push((at, class, title)),
            None => lanes.push((label, vec![(at, class, title)])),
        }
    }
    let oldest = lanes.iter().flat_map(|l| &l.1).map(|p| p.0).fold(end, f64::min);
    // A margin on the left so that the oldest is not on the edge; at least ten minutes shown.
    let start = (oldest - (end - oldest).max(600.0) * 0.1).max(start);
    if lanes.is_empty() { String::new() } else { render::deploy_lanes(&lanes, start, end) }
}

pub(super) async fn deployments(State(app): State<Arc<App>>, viewer: Viewer, Query(flash): Query<Flash>) -> Response {
    let list = app.store.deployments(DeploymentFilter { limit: 200, ..Default::default() }).await.unwrap_or_default();
    let mut chrome = Chrome::new(&viewer, "Deployments", "deployments", flash.flash);
    chrome.live = list.iter().any(|d| !d.status.is_finished());
    page(DeploymentsPage {
        chrome,
        environments: environment_rows(&app).await,
        timeline: timeline(&list),
        deployments: deployment_rows(&list),
    })
}

pub(super) struct EventRow {
    time: String,
    kind: String,
    actor: String,
    weight: String,
    detail: String,
}

#[derive(askama::Template)]
#[template(path = "deployment.html")]
struct DeploymentPage {
    chrome: Chrome,
    d: DeploymentRow,
    approved_by: String,
    awaiting_approval: bool,
    running: bool,
    chart: String,
    /// Per version (stable, canary): error ratio and p99 latency over the rollout, from the store.
    errors: String,
    latency: String,
    events: Vec<EventRow>,
}

/// A per-version query over `[start, end]` (Unix ms), as (version, points in seconds since start).
fn per_version(app: &App, query: &str, start: i64, end: i64) -> Vec<(String, Vec<(f64, f64)>)> {
    let step = ((end - start) / 60).max(app.config.scrape_interval.as_millis() as i64);
    match metrics::promql::Engine::range(&app.tsdb, query, start, end, step) {
        Ok(series) => series
            .into_iter()
            .map(|s| {
                let points = s.points.iter().map(|(t, v)| ((t - start) as f64 / 1000.0, *v)).collect();
                (s.labels.get("version").to_string(), points)
            })
            .collect(),
        Err(error) => {
            tracing::debug!("per-version query failed: {error}");
            Vec::new()
        }
    }
}

/// The evidence of a verdict, in a sentence: the metric, both versions and the threshold.
fn evidence(p: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    if let Some(reason) = p["reason"].as_str() {
        parts.push(reason.to_string());
    }
    let e = &p["evidence"];
    if e.is_object() {
        let figure = |k: &str| e[k].as_f64().map(|v| format!("{k} {v:.4}"));
        let fields: Vec<String> =
            ["canary", "baseline", "evidence", "threshold"].iter().filter_map(|k| figure(k)).collect();
        if let Some(metric) = e["metric"].as_str() {
            parts.push(format!("{metric}: {}", fields.join(", ")));
        } else if !fields.is_empty() {
            parts.push(fields.join(", "));
        }
    }
    parts.join(" — ")
}

pub(super) async fn deployment(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    Path(id): Path<i64>,
    Query(flash): Query<Flash>,
) -> Response {
    let Ok(d) = app.store.deployment(id).await else {
        return missing(&viewer, format!("There is no deployment {id}."));
    };
    let events = app.store.events_about(&format!("deployment/{id}")).await.unwrap_or_default();
    let start = events.first().and_then(|e| e.time.parse::<jiff::Timestamp>().ok()).map(|t| t.as_millisecond());
    let points: Vec<(f64, f64)> = events
        .iter()
        .filter_map(|e| {
            let at = e.time.parse::<jiff::Timestamp>().ok()?.as_millisecond();
            Some(((at - start?) as f64 / 1000.0, e.payload["weight"].as_f64()?))
        })
        .collect();
    let rows = events
        .iter()
        .map(|e| EventRow {
            time: time(&e.time),
            kind: e.kind.trim_start_matches("deployment.").replace('_', " "),
            actor: e.actor.clone(),
            weight: e.payload["weight"].as_f64().map(|w| format!("{:.0}%", w * 100.0)).unwrap_or_default(),
            detail: evidence(&e.payload),
        })
        .collect();
    // What users saw of each version while it rolled out (a minute either side).
    let ms = |t: &str| t.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond());
    let begin = ms(&d.created).unwrap_or(0) - 60_000;
    let finish = d.finished.as_deref().and_then(ms).unwrap_or_else(|| jiff::Timestamp::now().as_millisecond()) + 60_000;
    let finish = finish.min(jiff::Timestamp::now().as_millisecond());
    let selector = format!("service={:?},environment={:?}", d.service, d.environment);
    let errors = per_version(
        &app,
        &format!(
            "sum by (version) (rate(tandem_proxy_requests_total{{{selector},class=~\"5xx|none\"}}[1m])) / sum by (version) (rate(tandem_proxy_requests_total{{{selector}}}[1m]))"
        ),
        begin,
        finish,
    );
    let latency = per_version(
        &app,
        &format!(
            "histogram_quantile(0.99, sum by (version, le) (rate(tandem_proxy_request_duration_seconds_bucket{{{selector}}}[1m])))"
        ),
        begin,
        finish,
    );
    let errors = if errors.is_empty() {
        String::new()
    } else {
        render::lines("Error ratio per version during the rollout", &errors, |v| format!("{:.1}%", v * 100.0))
    };
    let latency = if latency.is_empty() {
        String::new()
    } else {
        render::lines("p99 latency per version during the rollout", &latency, |v| format!("{:.0} ms", v * 1000.0))
    };
    let mut chrome = Chrome::new(&viewer, format!("Deployment {id}"), "deployments", flash.flash);
    chrome.live = !d.status.is_finished();
    page(DeploymentPage {
        chrome,
        approved_by: d.approved_by.clone().unwrap_or_else(|| "—".into()),
        awaiting_approval: d.status == DeploymentStatus::AwaitingApproval,
        running: d.status == DeploymentStatus::Running,
        chart: render::weight_steps(&points, d.status == DeploymentStatus::RolledBack),
        errors,
        latency,
        events: rows,
        d: deployment_rows(std::slice::from_ref(&d)).remove(0),
    })
}
