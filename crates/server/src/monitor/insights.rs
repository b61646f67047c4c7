//! Insights: predictions that become warnings with their evidence, never pages.
//!
//! - Forecasts of the monitors file (`forecasts:`): a least-squares line through the query's
//!   last `window`; a warning while it reaches its limit within `within` ("full in 3 h").
//! - Seasonal anomalies of every environment's traffic through its proxy — request rate, error
//!   ratio and p99 latency — scored against the same moment of up to seven earlier days
//!   (`metrics::predict::seasonal_score`); nothing is said before three days of history exist.
//!
//! Each insight that starts or ends is an event (`insight.started`, `insight.ended`).

use std::sync::Arc;

use metrics::predict::{forecast, seasonal_score};
use metrics::promql::{Engine, Value};

use super::Scope;
use crate::App;

const DAY_MS: i64 = 86_400_000;
const STEP_MS: i64 = 300_000;

/// One prediction that holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct Insight {
    /// `forecast` or `anomaly`.
    pub kind: &'static str,
    pub scope: Scope,
    pub name: String,
    pub summary: String,
    /// The model and the figures behind it.
    pub evidence: serde_json::Value,
    /// Unix ms since it holds.
    pub since: i64,
}

impl Insight {
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.kind, self.scope.key(), self.name)
    }
}

fn value(db: &metrics::Db, query: &str, t: i64) -> Option<f64> {
    match Engine::instant(db, query, t).ok()? {
        Value::Vector(v) if v.len() == 1 => Some(v[0].v),
        Value::Scalar(v) => Some(v),
        _ => None,
    }
}

fn series(db: &metrics::Db, query: &str, start: i64, end: i64, step: i64) -> Vec<(i64, f64)> {
    match Engine::range(db, query, start, end, step) {
        Ok(series) if series.len() == 1 => series.into_iter().next().map(|s| s.points).unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn human_seconds(seconds: f64) -> String {
    if seconds < 3600.0 {
        format!("{:.0} min", seconds / 60.0)
    } else if seconds < 2.0 * 86_400.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else {
        format!("{:.1} days", seconds / 86_400.0)
    }
}

/// Every insight that holds at `now`.
pub fn evaluate(
    db: &metrics::Db,
    forecasts: &[(Scope, spec::monitors::ForecastSpec)],
    environments: &[Scope],
    now: i64,
) -> Vec<Insight> {
    let mut out = Vec::new();
    for (scope, spec) in forecasts {
        let points = series(db, &spec.query, now - spec.window_ms as i64, now, 60_000);
        let Some(fit) = forecast(&points, spec.limit) else { continue };
        let Some(seconds) = fit.seconds_to_limit.filter(|s| *s <= spec.within_ms as f64 / 1000.0) else { continue };
        out.push(Insight {
            kind: "forecast",
            scope: scope.clone(),
            name: spec.name.clone(),
            summary: format!("{} reaches {} in {} at the current trend", spec.name, spec.limit, human_seconds(seconds)),
            evidence: serde_json::json!({
                "model": format!("least-squares line over the last {}", super::slos::human(spec.window_ms)),
                "query": spec.query, "now": fit.now, "slope_per_second": fit.slope,
                "limit": spec.limit, "seconds_to_limit": seconds, "points": points.len(),
            }),
            since: now,
        });
    }
    for scope in environments {
        let selector = format!(
            "service={:?},environment={:?}",
            scope.service.clone().unwrap_or_default(),
            scope.environment.clone().unwrap_or_default()
        );
        let signals = [
            ("request rate", format!("sum(rate(tandem_proxy_requests_total{{{selector}}}[5m]))")),
            (
                "error ratio",
                format!(
                    "sum(rate(tandem_proxy_requests_total{{{selector},class=~\"5xx|none\"}}[5m])) / sum(rate(tandem_proxy_requests_total{{{selector}}}[5m]))"
                ),
            ),
            (
                "p99 latency",
                format!(
                    "histogram_quantile(0.99, sum by (le) (rate(tandem_proxy_request_duration_seconds_bucket{{{selector}}}[5m])))"
                ),
            ),
        ];
        for (name, query) in signals {
            let Some(current) = value(db, &query, now).filter(|v| v.is_finite()) else { continue };
            let mut history = Vec::new();
            for k in (1..=7).rev() {
                let centre = now - k * DAY_MS;
                history.extend(series(db, &query, centre - 2 * STEP_MS, centre + 2 * STEP_MS, STEP_MS));
            }
            let Some(score) = seasonal_score(&history, now, current, DAY_MS, 7, 2 * STEP_MS) else { continue };
            if !score.is_anomaly() {
                continue;
            }
            let direction = if score.score > 0.0 { "above" } else { "below" };
            out.push(Insight {
                kind: "anomaly",
                scope: scope.clone(),
                name: name.to_string(),
                summary: format!(
                    "{} of {}: {current:.4} is {direction} the usual {:.4} for this time of day (score {:.1})",
                    name,
                    scope.key(),
                    score.expected,
                    score.score
                ),
                evidence: serde_json::json!({
                    "model": "robust z-score against the same time of up to 7 earlier days (median, MAD); anomaly beyond ±3.5",
                    "query": query, "value": current, "expected": score.expected, "score": score.score, "seasons": score.seasons,
                }),
                since: now,
            });
        }
    }
    out
}

/// Evaluates insights, keeps those that still hold (with their start), records starts and ends.
pub async fn refresh(app: &Arc<App>, forecasts: Vec<(Scope, spec::monitors::ForecastSpec)>) {
    let environments: Vec<Scope> = match app.store.environments().await {
        Ok(envs) => envs
            .into_iter()
            .filter(|e| e.stable.is_some())
            .map(|e| Scope { service: Some(e.service), environment: Some(e.environment) })
            .collect(),
        Err(_) => Vec::new(),
    };
    let now = jiff::Timestamp::now().as_millisecond();
    let tsdb = app.tsdb.clone();
    let Ok(found) = tokio::task::spawn_blocking(move || evaluate(&tsdb, &forecasts, &environments, now)).await else {
        return;
    };
    let (started, ended) = {
        let mut current = app.monitor.insights.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = Vec::new();
        let mut started = Vec::new();
        for mut insight in found {
            match current.iter().find(|c| c.key() == insight.key()) {
                Some(previous) => insight.since = previous.since,
                None => started.push(insight.clone()),
            }
            next.push(insight);
        }
        let ended: Vec<Insight> =
            current.iter().filter(|c| !next.iter().any(|n| n.key() == c.key())).cloned().collect();
        *current = next;
        (started, ended)
    };
    for (kind, insight) in
        started.iter().map(|i| ("insight.started", i)).chain(ended.iter().map(|i| ("insight.ended", i)))
    {
        let payload = serde_json::json!({"kind": insight.kind, "name": insight.name, "service": insight.scope.service,
            "environment": insight.scope.environment, "summary": insight.summary, "evidence": insight.evidence});
        if let Err(error) = app.store.record_event(kind, &format!("insight/{}", insight.key()), "tandem", payload).await
        {
            tracing::error!("cannot record {kind}: {error}");
        }
    }
}
