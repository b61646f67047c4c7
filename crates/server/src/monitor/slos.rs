//! SLOs evaluated over the time-series store every scrape interval: the SLI over its window, the
//! error budget left, burn rates over the standard windows, the time until the budget is gone
//! at the last hour's burn, and multi-window multi-burn-rate alerts (the SRE Workbook's defaults,
//! scaled to the SLO's window) with a minimum-events guard and an alert when the SLI has no data.
//!
//! Burn rate = error ratio ÷ (1 − objective): 1 spends exactly the budget over the window.
//!
//! An SLO on the proxy's requests also has a live page (`SLOFastBurn`): every second, the
//! sequential test of [`metrics::burn`] takes the seconds of traffic the proxy has counted since,
//! so a service that starts failing pages within seconds instead of after a scrape, an evaluation
//! and a window's worth of samples.

use std::collections::VecDeque;
use std::sync::Arc;

use metrics::promql::{Engine, Value};
use spec::monitors::{Sli, SloSpec};

use super::Scope;
use crate::App;

const THIRTY_DAYS_MS: f64 = 30.0 * 86_400_000.0;

/// (severity, long window, short window, burn factor) for a 30-day SLO; scaled to other windows.
pub const BURN_ALERTS: [(&str, u64, u64, f64); 3] = [
    ("page", 3_600_000, 300_000, 14.4),
    ("page", 6 * 3_600_000, 1_800_000, 6.0),
    ("ticket", 3 * 86_400_000, 6 * 3_600_000, 1.0),
];

/// Windows whose burn rate is shown.
pub const BURN_WINDOWS: [u64; 5] = [300_000, 1_800_000, 3_600_000, 6 * 3_600_000, 3 * 86_400_000];

/// How long an SLI must have been watched, and silent, before its absence alerts.
const ABSENT_AFTER_MS: i64 = 10 * 60_000;

/// The live page's name; its state moves with the proxy's traffic, not with the evaluations.
pub const LIVE_ALERT: &str = "SLOFastBurn";

/// The page burn rate the live test looks for (the fastest windowed page's).
const LIVE_FACTOR: f64 = 14.4;

/// Seconds of traffic an alert's summary gives as evidence.
const EVIDENCE_SECONDS: u64 = 10;

/// The live page of an SLO on the proxy's requests.
#[derive(Debug, Clone)]
pub struct Live {
    pub test: metrics::burn::BurnTest,
    /// The last second (Unix) given to the test.
    pub last_second: u64,
    /// The last [`EVIDENCE_SECONDS`] given: (second, requests, errors).
    pub recent: VecDeque<(u64, u64, u64)>,
}

#[derive(Debug, Clone)]
pub struct SloState {
    pub scope: Scope,
    pub spec: SloSpec,
    pub watched_since: i64,
    pub status: Option<SloStatus>,
    pub alerts: Vec<AlertState>,
    /// For an SLI on the proxy's requests of an environment: the live page's test.
    pub live: Option<Live>,
    /// Alert transitions not yet written to the event log: (kind, payload).
    pending: Vec<(&'static str, serde_json::Value)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SloStatus {
    /// Unix ms of the evaluation.
    pub at: i64,
    /// Good events ÷ all events over the SLO's window; `None` without data.
    pub sli: Option<f64>,
    pub events: f64,
    /// 1 − error ratio ÷ (1 − objective); negative once overspent.
    pub budget_remaining: Option<f64>,
    /// (window ms, burn rate) for [`BURN_WINDOWS`].
    pub burn: Vec<(u64, Option<f64>)>,
    /// Seconds until the budget is gone at the last hour's burn; `None` when it is not burning.
    pub exhaustion_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertState {
    pub name: String,
    pub severity: &'static str,
    pub long_ms: u64,
    pub short_ms: u64,
    pub factor: f64,
    pub firing_since: Option<i64>,
    /// The long window's burn rate (or 0 for absent data) when last evaluated.
    pub value: f64,
    pub summary: String,
}

impl SloState {
    pub fn new(scope: Scope, spec: SloSpec) -> SloState {
        let scale = spec.window_ms as f64 / THIRTY_DAYS_MS;
        let mut alerts: Vec<AlertState> = BURN_ALERTS
            .iter()
            .map(|(severity, long, short, factor)| {
                let long_ms = ((*long as f64 * scale) as u64).max(60_000);
                let short_ms = ((*short as f64 * scale) as u64).max(60_000);
                AlertState {
                    name: "SLOBurnRate".into(),
                    severity,
                    long_ms,
                    short_ms,
                    factor: *factor,
                    firing_since: None,
                    value: 0.0,
                    summary: String::new(),
                }
            })
            .collect();
        alerts.push(AlertState {
            name: "SLODataAbsent".into(),
            severity: "ticket",
            long_ms: 3_600_000,
            short_ms: 3_600_000,
            factor: 0.0,
            firing_since: None,
            value: 0.0,
            summary: String::new(),
        });
        let now = jiff::Timestamp::now();
        let live = (spec.sli == Sli::Requests && scope.service.is_some() && scope.environment.is_some())
            .then(|| metrics::burn::BurnTest::new(spec.objective, LIVE_FACTOR, metrics::burn::DEFAULT_FALSE_ALARM))
            .flatten()
            .map(|test| Live { test, last_second: now.as_second().max(0) as u64, recent: VecDeque::new() });
        if live.is_some() {
            alerts.push(AlertState {
                name: LIVE_ALERT.into(),
                severity: "page",
                long_ms: 0,
                short_ms: 0,
                factor: LIVE_FACTOR,
                firing_since: None,
                value: 0.0,
                summary: String::new(),
            });
        }
        SloState { scope, spec, watched_since: now.as_millisecond(), status: None, alerts, live, pending: Vec::new() }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.scope.key(), self.spec.name)
    }

    /// Gives the live test seconds of the proxy's traffic, (Unix second, requests, errors) in
    /// order, and queues the live page's transitions.
    pub fn feed(&mut self, seconds: &[(u64, u64, u64)], now: i64) {
        let key = self.key();
        let Some(live) = self.live.as_mut() else { return };
        let mut moves = Vec::new();
        for &(second, requests, errors) in seconds {
            if second <= live.last_second {
                continue;
            }
            live.last_second = second;
            live.recent.push_back((second, requests, errors));
            while live.recent.front().is_some_and(|(s, ..)| s + EVIDENCE_SECONDS <= second) {
                live.recent.pop_front();
            }
            if let Some(transition) = live.test.observe(requests, errors) {
                let (n, e) = live.recent.iter().fold((0, 0), |(n, e), (_, dn, de)| (n + dn, e + de));
                let span = live.recent.front().map_or(1, |(first, ..)| second - first + 1);
                moves.push((transition, n, e, span));
            }
        }
        let page_ratio = live.test.page_ratio();
        let Some(index) = self.alerts.iter().position(|a| a.name == LIVE_ALERT) else { return };
        for (transition, requests, errors, span) in moves {
            let ratio = errors as f64 / requests.max(1) as f64;
            let state = &mut self.alerts[index];
            let firing = transition == metrics::burn::Transition::Fired;
            state.firing_since = firing.then_some(now);
            state.value = ratio / (1.0 - self.spec.objective);
            state.summary = if firing {
                format!(
                    "SLO {key}: {errors} of {requests} requests through the proxy failed in the last {span} s ({:.1}%; it pages above {:.2}%, {LIVE_FACTOR}× the error budget's rate)",
                    ratio * 100.0,
                    page_ratio * 100.0
                )
            } else {
                format!(
                    "SLO {key}: the proxy's traffic is back under the page rate ({errors} of {requests} requests failed in the last {span} s)"
                )
            };
            let payload = serde_json::json!({
                "alertname": LIVE_ALERT,
                "slo": self.spec.name,
                "service": self.scope.service,
                "environment": self.scope.environment,
                "severity": state.severity,
                "long_window": "live",
                "factor": LIVE_FACTOR,
                "value": state.value,
                "requests": requests,
                "errors": errors,
                "summary": state.summary,
            });
            self.pending.push((if firing { "alert.firing" } else { "alert.resolved" }, payload));
        }
    }
}

/// Gives every live page the seconds of traffic its environment's proxy counted since its last
/// look, and records what fires or resolves.
pub async fn observe_live(app: &Arc<App>) {
    let watching: Vec<(String, String, String, u64)> = {
        let slos = app.monitor.slos.lock().unwrap_or_else(|e| e.into_inner());
        slos.iter()
            .filter_map(|s| {
                let live = s.live.as_ref()?;
                Some((s.key(), s.scope.service.clone()?, s.scope.environment.clone()?, live.last_second))
            })
            .collect()
    };
    let mut fed = Vec::new();
    for (key, service, environment, after) in watching {
        let seconds = app.deployer.seconds_after(&service, &environment, after).await;
        if !seconds.is_empty() {
            fed.push((key, seconds));
        }
    }
    if fed.is_empty() {
        return;
    }
    let now = jiff::Timestamp::now().as_millisecond();
    {
        let mut slos = app.monitor.slos.lock().unwrap_or_else(|e| e.into_inner());
        for (key, seconds) in fed {
            if let Some(slo) = slos.iter_mut().find(|s| s.key() == key) {
                slo.feed(&seconds, now);
            }
        }
    }
    record_transitions(app).await;
}

fn selector(scope: &Scope, extra: &str) -> String {
    let mut matchers = Vec::new();
    if let Some(service) = &scope.service {
        matchers.push(format!("service={service:?}"));
    }
    if let Some(environment) = &scope.environment {
        matchers.push(format!("environment={environment:?}"));
    }
    if !extra.is_empty() {
        matchers.push(extra.to_string());
    }
    matchers.join(",")
}

/// (bad events, all events) over `window_ms` ending at `t`; `None` when the SLI has no data.
pub fn counts(db: &metrics::Db, scope: &Scope, sli: &Sli, window_ms: u64, t: i64) -> Option<(f64, f64)> {
    let w = format!("{}s", window_ms / 1000);
    let (bad, total) = match sli {
        Sli::Requests => {
            let all = selector(scope, "");
            let errors = selector(scope, r#"class=~"5xx|none""#);
            (
                format!("sum(increase(tandem_proxy_requests_total{{{errors}}}[{w}]))"),
                format!("sum(increase(tandem_proxy_requests_total{{{all}}}[{w}]))"),
            )
        }
        Sli::Probe(name) => {
            let probe = selector(scope, &format!("probe={name:?}"));
            (
                format!(
                    "sum(count_over_time(probe_success{{{probe}}}[{w}])) - sum(sum_over_time(probe_success{{{probe}}}[{w}]))"
                ),
                format!("sum(count_over_time(probe_success{{{probe}}}[{w}]))"),
            )
        }
        Sli::Ratio { good, total } => {
            let good = good.replace("$window", &w);
            let total = total.replace("$window", &w);
            (format!("({total}) - ({good})"), total)
        }
    };
    let value = |query: &str| match Engine::instant(db, query, t) {
        Ok(Value::Vector(v)) => v.first().map(|s| s.v),
        Ok(Value::Scalar(v)) => Some(v),
        Ok(_) => None,
        Err(error) => {
            tracing::debug!("SLI query `{query}` failed: {error}");
            None
        }
    };
    let total = value(&total)?;
    let bad = value(&bad).unwrap_or(0.0).max(0.0);
    Some((bad, total))
}

/// Evaluates every SLO now and queues its alerts' transitions.
pub fn evaluate(app: &Arc<App>) {
    let now = jiff::Timestamp::now().as_millisecond();
    let mut slos = app.monitor.slos.lock().unwrap_or_else(|e| e.into_inner());
    for slo in slos.iter_mut() {
        evaluate_one(&app.tsdb, slo, now);
    }
}

pub fn evaluate_one(db: &metrics::Db, slo: &mut SloState, now: i64) {
    let allowed = 1.0 - slo.spec.objective;
    let ratio = |window: u64| {
        counts(db, &slo.scope, &slo.spec.sli, window, now)
            .filter(|(_, total)| *total > 0.0)
            .map(|(bad, total)| (bad / total, total))
    };
    let whole = ratio(slo.spec.window_ms);
    let burn: Vec<(u64, Option<f64>)> =
        BURN_WINDOWS.iter().map(|w| (*w, ratio(*w).map(|(r, _)| r / allowed))).collect();
    let budget_remaining = whole.map(|(r, _)| 1.0 - r / allowed);
    let hour_burn = burn.iter().find(|(w, _)| *w == 3_600_000).and_then(|(_, b)| *b);
    let exhaustion_seconds = match (budget_remaining, hour_burn) {
        (Some(left), _) if left <= 0.0 => Some(0.0),
        (Some(left), Some(b)) if b > 0.0 => Some(left * slo.spec.window_ms as f64 / 1000.0 / b),
        _ => None,
    };
    slo.status = Some(SloStatus {
        at: now,
        sli: whole.map(|(r, _)| 1.0 - r),
        events: whole.map_or(0.0, |(_, n)| n),
        budget_remaining,
        burn,
        exhaustion_seconds,
    });
    let key = slo.key();
    let watched_long_enough = now - slo.watched_since >= ABSENT_AFTER_MS;
    for index in 0..slo.alerts.len() {
        let alert = slo.alerts[index].clone();
        if alert.name == LIVE_ALERT {
            continue;
        }
        let (firing, value, summary) = if alert.name == "SLODataAbsent" {
            let absent = ratio(alert.long_ms).is_none() && watched_long_enough;
            (absent, 0.0, format!("SLO {key} has had no data for an hour"))
        } else {
            let long = ratio(alert.long_ms);
            let short = ratio(alert.short_ms);
            let burn_long = long.map_or(0.0, |(r, _)| r / allowed);
            let burn_short = short.map_or(0.0, |(r, _)| r / allowed);
            let enough = long.is_some_and(|(_, n)| n >= slo.spec.min_events);
            let firing = enough && burn_long >= alert.factor && burn_short >= alert.factor;
            let summary = format!(
                "SLO {key} burns its error budget {burn_long:.1}× over {} and {burn_short:.1}× over {} (threshold {}×)",
                human(alert.long_ms),
                human(alert.short_ms),
                alert.factor
            );
            (firing, burn_long, summary)
        };
        let state = &mut slo.alerts[index];
        state.value = value;
        state.summary = summary.clone();
        let payload = |state: &AlertState| {
            serde_json::json!({
                "alertname": state.name,
                "slo": slo.spec.name,
                "service": slo.scope.service,
                "environment": slo.scope.environment,
                "severity": state.severity,
                "long_window": human(state.long_ms),
                "short_window": human(state.short_ms),
                "factor": state.factor,
                "value": value,
                "summary": summary,
            })
        };
        match (firing, state.firing_since) {
            (true, None) => {
                state.firing_since = Some(now);
                let p = payload(state);
                slo.pending.push(("alert.firing", p));
            }
            (false, Some(_)) => {
                state.firing_since = None;
                let p = payload(state);
                slo.pending.push(("alert.resolved", p));
            }
            _ => {}
        }
    }
}

/// Writes queued alert transitions to the event log.
pub async fn record_transitions(app: &Arc<App>) {
    let pending: Vec<(String, &'static str, serde_json::Value)> = {
        let mut slos = app.monitor.slos.lock().unwrap_or_else(|e| e.into_inner());
        slos.iter_mut()
            .flat_map(|s| {
                let key = s.key();
                std::mem::take(&mut s.pending).into_iter().map(move |(kind, p)| (key.clone(), kind, p))
            })
            .collect()
    };
    for (key, kind, payload) in pending {
        tracing::warn!("{kind}: {}", payload["summary"].as_str().unwrap_or(&key));
        crate::alerting::from_event(app, kind, &payload);
        if let Err(error) = app.store.record_event(kind, &format!("slo/{key}"), "tandem", payload).await {
            tracing::error!("cannot record {kind} of SLO {key}: {error}");
        }
    }
}

/// `5m`, `1h`, `3d`: a window as people write it.
pub fn human(ms: u64) -> String {
    let s = ms / 1000;
    if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}
