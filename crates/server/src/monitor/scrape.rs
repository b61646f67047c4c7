//! Scraping: every deployed instance whose environment names a `metrics:` path, and every
//! `scrape:` target of the monitors file, every scrape interval. Samples are labelled with
//! `job`, `instance`, and for instances `service`, `environment`, `version` and `release`, so
//! every series splits by release. Each target also gets `up`, `scrape_duration_seconds` and
//! `scrape_samples_scraped`, as Prometheus records them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::Labels;
use metrics::labels::NAME;

use crate::App;

/// The most series one target may expose; more fails the scrape (and says so) instead of
/// flooding the store.
pub const MAX_SERIES_PER_TARGET: usize = 10_000;

const TIMEOUT: Duration = Duration::from_secs(10);

/// One target to scrape: its URL and the labels its samples get.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub url: String,
    pub labels: Labels,
}

/// Every target now: instances of deployed environments with a `metrics:` path, and the
/// monitors file's `scrape:` entries.
pub async fn targets(app: &Arc<App>) -> Vec<Target> {
    let mut out = Vec::new();
    let instances = app.deployer.instances().await;
    if !instances.is_empty()
        && let Ok(environments) = app.store.environments().await
    {
        for env in environments {
            let Some(stable) = env.stable else { continue };
            let Ok(deployment) = app.store.deployment(stable).await else { continue };
            let Ok(spec) = crate::deploy::environment_spec(&deployment) else { continue };
            let Some(path) = spec.metrics_path else { continue };
            let running = app
                .store
                .deployments(store::DeploymentFilter {
                    service: Some(env.service.clone()),
                    environment: Some(env.environment.clone()),
                    active_only: true,
                    limit: 10,
                })
                .await
                .unwrap_or_default();
            for (service, environment, version, addr) in &instances {
                if *service != env.service || *environment != env.environment {
                    continue;
                }
                let release = match *version {
                    "stable" => deployment.release.clone(),
                    _ => running.last().map(|d| d.release.clone()).unwrap_or_default(),
                };
                let labels = Labels::new(vec![
                    ("job".into(), service.clone()),
                    ("instance".into(), addr.to_string()),
                    ("service".into(), service.clone()),
                    ("environment".into(), environment.clone()),
                    ("version".into(), version.to_string()),
                    ("release".into(), release),
                ]);
                out.push(Target { url: format!("http://{addr}{path}"), labels });
            }
        }
    }
    if let Some(path) = &app.config.monitors
        && let Ok(text) = std::fs::read_to_string(path)
        && !super::is_openslo(&text)
        && let (Some(monitors), _) = spec::monitors::parse(&text)
    {
        for scrape in monitors.scrapes {
            let instance = scrape.url.trim_start_matches("http://").split('/').next().unwrap_or_default().to_string();
            let mut labels =
                Labels::new(vec![("job".to_string(), scrape.name.clone()), ("instance".to_string(), instance)]);
            // The file's labels win, `job` and `instance` included.
            for (name, value) in &scrape.labels {
                labels = labels.with(name, value);
            }
            out.push(Target { url: scrape.url, labels });
        }
    }
    out
}

/// Scrapes every target at once (each within its timeout) and stores what each gave, stamped
/// `now` (the scheduled scrape time, ms) unless the exposition gives its own timestamps.
pub async fn scrape_all(app: &Arc<App>, now: i64) {
    let targets = targets(app).await;
    let client = reqwest::Client::new();
    // Parsing and storing is CPU work: more at once than there are cores gains nothing, and each
    // extra thread that allocates gets an allocator arena of its own that keeps what it freed
    // (with 200 targets, about 10 MiB).
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let storing_slots = Arc::new(tokio::sync::Semaphore::new(cores));
    let scrapes = targets.into_iter().map(|target| {
        let client = client.clone();
        let app = app.clone();
        let storing_slots = storing_slots.clone();
        async move {
            let started = Instant::now();
            let body = fetch(&client, &target).await;
            let seconds = started.elapsed().as_secs_f64();
            let storing = app.clone();
            let url = target.url.clone();
            let Ok(_slot) = storing_slots.acquire().await else { return };
            match tokio::task::spawn_blocking(move || ingest(&storing, &target, body, now, seconds)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!("samples of {url} not stored: {error}"),
                Err(error) => tracing::error!("storing the samples of {url} failed: {error}"),
            }
        }
    });
    futures_util::future::join_all(scrapes).await;
}

/// What a target's last scrapes taught: the series it writes, by their text, and their ids.
pub type Cache = HashMap<Box<str>, u32>;

/// Stores what one scrape gave (or `up` 0 and why not), with the target's own figures.
fn ingest(app: &App, target: &Target, body: Result<String, String>, now: i64, seconds: f64) -> Result<(), String> {
    // The cache is the target's while it is scraped; the target's labels are part of its name,
    // as a change of the monitors file changes what its series are.
    let key = format!("{}\u{0}{}", target.url, target.labels);
    let mut cache = app.monitor.scrape_cache.lock().ok().and_then(|mut all| all.remove(&key)).unwrap_or_default();
    let scraped = body.and_then(|text| read(app, target, &text, &mut cache, now));
    if let Ok(mut all) = app.monitor.scrape_cache.lock() {
        all.insert(key, cache);
    }
    let (up, n, not_stored) = match scraped {
        Ok((n, not_stored)) => (1.0, n, not_stored),
        Err(error) => {
            tracing::warn!("scrape of {} failed: {error}", target.url);
            (0.0, 0, None)
        }
    };
    let own: Vec<(Labels, i64, f64)> =
        [("up", up), ("scrape_duration_seconds", seconds), ("scrape_samples_scraped", n as f64)]
            .into_iter()
            .map(|(name, value)| (target.labels.with(NAME, name), now, value))
            .collect();
    let stored = super::store(app, &own).map(|_| ()).map_err(|e| e.to_string());
    match not_stored {
        Some(error) => Err(error),
        None => stored,
    }
}

/// Reads one exposition and stores its samples: how many it held, and why some were not stored.
/// Series seen in earlier scrapes are stored by id, without building their labels.
fn read(
    app: &App,
    target: &Target,
    text: &str,
    cache: &mut Cache,
    now: i64,
) -> Result<(usize, Option<String>), String> {
    let malformed = |e: metrics::exposition::ParseError| format!("malformed exposition at {e}");
    let too_many = |n: usize| {
        format!("{n} series, over the {MAX_SERIES_PER_TARGET} allowed per target; nothing of this scrape was stored")
    };
    // `remote_write` needs every sample's labels: the plain way.
    if app.remote.is_enabled() {
        let samples = metrics::exposition::parse(text).map_err(malformed)?;
        if samples.len() > MAX_SERIES_PER_TARGET {
            return Err(too_many(samples.len()));
        }
        // The target's labels win, as Prometheus's `honor_labels: false` does.
        let batch: Vec<_> =
            samples.into_iter().map(|s| (s.labels.merged(&target.labels), s.t.unwrap_or(now), s.value)).collect();
        let not_stored = super::store(app, &batch).err().map(|e| e.to_string());
        return Ok((batch.len(), not_stored));
    }
    let scanned = metrics::exposition::parse_cached(text, |series| cache.get(series).copied()).map_err(malformed)?;
    if scanned.len() > MAX_SERIES_PER_TARGET {
        return Err(too_many(scanned.len()));
    }
    let n = scanned.len();
    let (mut known, mut new, mut keys) = (Vec::with_capacity(n), Vec::new(), Vec::new());
    for sample in scanned {
        match sample {
            metrics::exposition::Scanned::Known { series, value, t } => known.push((series, t.unwrap_or(now), value)),
            metrics::exposition::Scanned::New { key, sample } => {
                let labels = sample.labels.merged(&target.labels);
                keys.push((key, labels.clone()));
                new.push((labels, sample.t.unwrap_or(now), sample.value));
            }
        }
    }
    let mut not_stored = None;
    if !new.is_empty()
        && let Err(error) = super::store(app, &new)
    {
        not_stored = Some(error.to_string());
    }
    remember(app, cache, keys);
    if !known.is_empty()
        && let Err(error) = app.tsdb.append_ids(&known)
    {
        not_stored.get_or_insert(error.to_string());
    }
    Ok((n, not_stored))
}

/// Notes the ids the store gave to the series first seen in this scrape.
fn remember(app: &App, cache: &mut Cache, keys: Vec<(&str, Labels)>) {
    for (key, labels) in keys {
        if let Some(id) = app.tsdb.id(&labels) {
            cache.insert(key.into(), id);
        }
    }
}

async fn fetch(client: &reqwest::Client, target: &Target) -> Result<String, String> {
    let response =
        tokio::time::timeout(TIMEOUT, client.get(&target.url).header("accept", "text/plain;version=0.0.4").send())
            .await
            .map_err(|_| format!("no answer within {} s", TIMEOUT.as_secs()))?
            .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    tokio::time::timeout(TIMEOUT, response.text())
        .await
        .map_err(|_| "the body did not arrive in time".to_string())?
        .map_err(|e| e.to_string())
}
