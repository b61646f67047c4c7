//! The monitor: Tandem's own figures recorded every scrape interval (`job="tandem"`), the probes
//! and SLOs of every deployed environment and of the monitors file, burn-rate alerts, and a
//! snapshot of the time-series store every ten minutes.
//!
//! What to watch is read again every scrape interval: the stable release's service file of each
//! environment (`probes:`, `slos:`) and `--monitors FILE`. A probe keeps its state while its
//! definition stays the same.

pub mod insights;
pub mod probes;
pub mod remote_write;
pub mod rules;
pub mod scrape;
pub mod slos;
pub mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spec::monitors::{ProbeSpec, SloSpec};

use crate::App;

/// How often Tandem scrapes, records its own figures and evaluates SLOs, unless configured
/// (Prometheus's common setting).
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(15);

const CHECKPOINT_EVERY: u32 = 40;

/// Insights (forecasts, anomalies) are evaluated every this many scrape intervals (a minute).
const INSIGHTS_EVERY: u32 = 4;

/// The forecasts of the monitors file.
fn forecasts(app: &App) -> Vec<(Scope, spec::monitors::ForecastSpec)> {
    let Some(path) = &app.config.monitors else { return Vec::new() };
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    if is_openslo(&text) {
        return Vec::new();
    }
    match spec::monitors::parse(&text) {
        (Some(monitors), _) => monitors.forecasts.into_iter().map(|f| (Scope::default(), f)).collect(),
        _ => Vec::new(),
    }
}

/// Stores samples, and queues them for the remote-write receivers.
pub fn store(app: &App, batch: &[(metrics::Labels, i64, f64)]) -> Result<usize, metrics::DbError> {
    let stored = app.tsdb.append(batch)?;
    app.remote.offer(batch);
    Ok(stored)
}

/// Whose a probe or SLO is: an environment of a service, or the monitors file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Scope {
    pub service: Option<String>,
    pub environment: Option<String>,
}

impl Scope {
    /// `service/environment`, or `monitors` for the monitors file.
    pub fn key(&self) -> String {
        match (&self.service, &self.environment) {
            (Some(s), Some(e)) => format!("{s}/{e}"),
            _ => "monitors".to_string(),
        }
    }

    pub fn labels(&self, extra: &[(&str, &str)]) -> metrics::Labels {
        let mut pairs: Vec<(String, String)> = extra.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        if let Some(service) = &self.service {
            pairs.push(("service".into(), service.clone()));
        }
        if let Some(environment) = &self.environment {
            pairs.push(("environment".into(), environment.clone()));
        }
        metrics::Labels::new(pairs)
    }
}

/// What the monitor knows now.
#[derive(Debug, Default)]
pub struct Monitor {
    /// By `scope/name`.
    pub probes: Mutex<HashMap<String, probes::ProbeState>>,
    pub slos: Mutex<Vec<slos::SloState>>,
    /// Rule groups of `--rules`, with their alerts.
    pub rules: Mutex<Vec<rules::GroupState>>,
    /// Forecasts and anomalies that hold now.
    pub insights: Mutex<Vec<insights::Insight>>,
    /// Since when (Unix ms) the time-series store cannot write (a full disk): a paging alert.
    pub store_failing: Mutex<Option<i64>>,
    /// Each target's series as it writes them (`name{labels}`) → the store's series id.
    pub scrape_cache: Mutex<HashMap<String, scrape::Cache>>,
}

pub async fn run_forever(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seconds = 0u64;
    let mut scrapes = 0u32;
    let started = jiff::Timestamp::now().as_millisecond();
    let mut failed_appends = app.tsdb.failed_appends();
    loop {
        tick.tick().await;
        failed_appends = watch_store(&app, failed_appends).await;
        if seconds.is_multiple_of(app.config.scrape_interval.as_secs().max(1)) {
            // Samples carry the scheduled time, not the moment the scrape happened to run: exact
            // intervals make every timestamp after a chunk's second cost one bit (as Prometheus's
            // timestamp tolerance does).
            let scheduled = started + seconds as i64 * 1000;
            refresh(&app).await;
            if let Err(error) = scrape_self(&app, scheduled).await {
                tracing::warn!("cannot record Tandem's own figures: {error}");
            }
            // Targets are scraped beside the loop, so a slow one never delays probes or rules.
            tokio::spawn({
                let app = app.clone();
                async move { scrape::scrape_all(&app, scheduled).await }
            });
            let evaluating = app.clone();
            if let Err(error) = tokio::task::spawn_blocking(move || slos::evaluate(&evaluating)).await {
                tracing::error!("the SLO evaluation failed: {error}");
            }
            slos::record_transitions(&app).await;
            scrapes += 1;
            if scrapes % INSIGHTS_EVERY == 1 {
                let forecasts = forecasts(&app);
                tokio::spawn({
                    let app = app.clone();
                    async move { insights::refresh(&app, forecasts).await }
                });
            }
            if scrapes.is_multiple_of(CHECKPOINT_EVERY) {
                let tsdb = app.tsdb.clone();
                match tokio::task::spawn_blocking(move || tsdb.checkpoint()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::warn!("cannot write the time-series snapshot: {error}"),
                    Err(error) => tracing::error!("the time-series snapshot task failed: {error}"),
                }
            }
        }
        slos::observe_live(&app).await;
        probes::start_due(&app);
        evaluate_rules(&app).await;
        seconds += 1;
    }
}

/// Raises (and clears) the store's own alert: appends that failed since the last look mean the
/// log cannot be written — ingestion has stopped, nothing is corrupted, someone must act.
async fn watch_store(app: &Arc<App>, seen: u64) -> u64 {
    let now_failed = app.tsdb.failed_appends();
    let failing = now_failed > seen;
    let transition = {
        let mut state = app.monitor.store_failing.lock().unwrap_or_else(|e| e.into_inner());
        match (failing, *state) {
            (true, None) => {
                *state = Some(jiff::Timestamp::now().as_millisecond());
                Some("alert.firing")
            }
            (false, Some(_)) => {
                *state = None;
                Some("alert.resolved")
            }
            _ => None,
        }
    };
    if let Some(kind) = transition {
        let summary = if kind == "alert.firing" {
            "the time-series store cannot write its log (is the disk full?); new samples are refused until it can"
        } else {
            "the time-series store writes again"
        };
        tracing::error!("{kind}: {summary}");
        let payload =
            serde_json::json!({"labels": {"alertname": "StoreWriteFailing", "severity": "page"}, "summary": summary});
        crate::alerting::from_event(app, kind, &payload);
        if let Err(error) = app.store.record_event(kind, "alert/tandem/StoreWriteFailing", "tandem", payload).await {
            tracing::error!("cannot record {kind}: {error}");
        }
    }
    now_failed
}

/// Evaluates the rule groups that are due; records what recording rules produce and the alerts' moves.
async fn evaluate_rules(app: &Arc<App>) {
    let now = jiff::Timestamp::now().as_millisecond();
    let due = {
        let groups = app.monitor.rules.lock().unwrap_or_else(|e| e.into_inner());
        groups.iter().any(|g| g.next_due <= now)
    };
    if !due {
        return;
    }
    let evaluating = app.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut groups = evaluating.monitor.rules.lock().unwrap_or_else(|e| e.into_inner());
        let mut samples = Vec::new();
        let mut events = Vec::new();
        for group in groups.iter_mut().filter(|g| g.next_due <= now) {
            let (s, e) = group.evaluate(&evaluating.tsdb, now);
            samples.extend(s);
            events.extend(e.into_iter().map(|(kind, payload)| (group.group.name.clone(), kind, payload)));
        }
        drop(groups);
        if !samples.is_empty()
            && let Err(error) = store(&evaluating, &samples)
        {
            tracing::warn!("cannot record the recording rules' results: {error}");
        }
        events
    })
    .await;
    let events = match outcome {
        Ok(events) => events,
        Err(error) => {
            tracing::error!("the rule evaluation failed: {error}");
            return;
        }
    };
    for (group, kind, payload) in events {
        let alertname = payload["labels"]["alertname"].as_str().unwrap_or("alert").to_string();
        if kind == "alert.firing" {
            tracing::warn!("{kind}: {alertname} ({group})");
        }
        crate::alerting::from_event(app, kind, &payload);
        if let Err(error) = app.store.record_event(kind, &format!("alert/{group}/{alertname}"), "tandem", payload).await
        {
            tracing::error!("cannot record {kind} of {alertname}: {error}");
        }
    }
}

/// Every environment's and the monitors file's probes and SLOs.
pub async fn definitions(app: &App) -> Vec<(Scope, Option<String>, Vec<ProbeSpec>, Vec<SloSpec>)> {
    let mut out = Vec::new();
    match app.store.environments().await {
        Ok(environments) => {
            for env in environments {
                let Some(stable) = env.stable else { continue };
                let Ok(deployment) = app.store.deployment(stable).await else { continue };
                let Ok(spec) = crate::deploy::environment_spec(&deployment) else { continue };
                if spec.probes.is_empty() && spec.slos.is_empty() {
                    continue;
                }
                let scope = Scope { service: Some(env.service.clone()), environment: Some(env.environment.clone()) };
                out.push((scope, env.listen.clone(), spec.probes, spec.slos));
            }
        }
        Err(error) => tracing::warn!("cannot read the environments to monitor: {error}"),
    }
    if let Some(path) = &app.config.monitors {
        match std::fs::read_to_string(path) {
            Ok(text) if is_openslo(&text) => {
                for found in spec::openslo::parse(&text).0 {
                    if let Some(slo) = found.slo {
                        let scope = Scope { service: found.service, environment: None };
                        out.push((scope, None, Vec::new(), vec![slo]));
                    }
                }
            }
            Ok(text) => match spec::monitors::parse(&text) {
                (Some(monitors), _) => out.push((Scope::default(), None, monitors.probes, monitors.slos)),
                (None, diagnostics) => {
                    let first = diagnostics.first().map(|d| format!("{}:{}: {}", d.span.line, d.span.col, d.message));
                    tracing::warn!("{} is not valid: {}", path.display(), first.unwrap_or_default());
                }
            },
            Err(error) => tracing::warn!("cannot read {}: {error}", path.display()),
        }
    }
    out
}

/// An OpenSLO file rather than Tandem's monitors file.
pub fn is_openslo(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start_matches(['-', ' ']);
        l.starts_with("apiVersion:") && l.contains("openslo")
    })
}

async fn refresh(app: &Arc<App>) {
    if !app.config.rules.is_empty() {
        let paths = app.config.rules.clone();
        let loaded = tokio::task::spawn_blocking(move || rules::load(&paths)).await.unwrap_or_default();
        let now = jiff::Timestamp::now().as_millisecond();
        let mut groups = app.monitor.rules.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = Vec::new();
        for (file, group) in loaded {
            // A group whose file and definition are unchanged keeps its alerts and schedule.
            match groups.iter().position(|g| g.file == file && g.group == group) {
                Some(i) => next.push(groups.swap_remove(i)),
                None => next.push(rules::GroupState::new(file, group, now)),
            }
        }
        *groups = next;
    }
    let definitions = definitions(app).await;
    {
        let mut probes = app.monitor.probes.lock().unwrap_or_else(|e| e.into_inner());
        let mut wanted = std::collections::HashSet::new();
        for (scope, base, specs, _) in &definitions {
            for spec in specs {
                let key = format!("{}/{}", scope.key(), spec.name);
                wanted.insert(key.clone());
                let same = probes.get(&key).is_some_and(|p| p.spec == *spec && p.base == *base);
                if !same {
                    probes.insert(key, probes::ProbeState::new(scope.clone(), spec.clone(), base.clone()));
                }
            }
        }
        probes.retain(|key, _| wanted.contains(key));
    }
    let mut slos = app.monitor.slos.lock().unwrap_or_else(|e| e.into_inner());
    let mut next = Vec::new();
    for (scope, _, _, specs) in definitions {
        for spec in specs {
            // Keep the evaluated state (and alert states) of an SLO whose definition is unchanged.
            match slos.iter().position(|s| s.scope == scope && s.spec == spec) {
                Some(i) => next.push(slos.swap_remove(i)),
                None => next.push(slos::SloState::new(scope.clone(), spec)),
            }
        }
    }
    *slos = next;
}

/// Reads `/metrics` as a scrape would and appends it, stamped `now` (ms).
pub async fn scrape_self(app: &Arc<App>, now: i64) -> Result<usize, String> {
    let text = crate::api::exposition(app).await.map_err(|e| e.to_string())?;
    let samples = metrics::exposition::parse(&text).map_err(|e| format!("Tandem's own /metrics: {e}"))?;
    let own =
        metrics::Labels::new(vec![("job".into(), "tandem".into()), ("instance".into(), app.config.listen.to_string())]);
    let batch: Vec<_> = samples.into_iter().map(|s| (s.labels.merged(&own), s.t.unwrap_or(now), s.value)).collect();
    let app = app.clone();
    tokio::task::spawn_blocking(move || store(&app, &batch))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}
