//! Scraping: every deployed instance whose environment names a `metrics:` path, and every
//! `scrape:` target of the monitors file, every scrape interval. Samples are labelled with
//! `job`, `instance`, and for instances `service`, `environment`, `version` and `release`, so
//! every series splits by release. Each target also gets `up`, `scrape_duration_seconds` and
//! `scrape_samples_scraped`, as Prometheus records them.

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
    let scrapes = targets.into_iter().map(|target| {
        let client = client.clone();
        let app = app.clone();
        async move {
            let started = Instant::now();
            let result = scrape(&client, &target).await;
            let seconds = started.elapsed().as_secs_f64();
            let mut batch = Vec::new();
            let (up, n) = match result {
                Ok(samples) => {
                    let n = samples.len();
                    batch.extend(samples.into_iter().map(|(labels, t, v)| (labels, t.unwrap_or(now), v)));
                    (1.0, n)
                }
                Err(error) => {
                    tracing::warn!("scrape of {} failed: {error}", target.url);
                    (0.0, 0)
                }
            };
            for (name, value) in
                [("up", up), ("scrape_duration_seconds", seconds), ("scrape_samples_scraped", n as f64)]
            {
                batch.push((target.labels.with(NAME, name), now, value));
            }
            let storing = app.clone();
            match tokio::task::spawn_blocking(move || super::store(&storing, &batch)).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!("samples of {} not stored: {error}", target.url),
                Err(error) => tracing::error!("storing the samples of {} failed: {error}", target.url),
            }
        }
    });
    futures_util::future::join_all(scrapes).await;
}

type Scraped = Vec<(Labels, Option<i64>, f64)>;

async fn scrape(client: &reqwest::Client, target: &Target) -> Result<Scraped, String> {
    let response =
        tokio::time::timeout(TIMEOUT, client.get(&target.url).header("accept", "text/plain;version=0.0.4").send())
            .await
            .map_err(|_| format!("no answer within {} s", TIMEOUT.as_secs()))?
            .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    let text = tokio::time::timeout(TIMEOUT, response.text())
        .await
        .map_err(|_| "the body did not arrive in time".to_string())?
        .map_err(|e| e.to_string())?;
    let samples = metrics::exposition::parse(&text).map_err(|e| format!("malformed exposition at {e}"))?;
    if samples.len() > MAX_SERIES_PER_TARGET {
        return Err(format!(
            "{} series, over the {MAX_SERIES_PER_TARGET} allowed per target; nothing of this scrape was stored",
            samples.len()
        ));
    }
    Ok(samples
        .into_iter()
        // The target's labels win, as Prometheus's `honor_labels: false` does.
        .map(|s| (s.labels.merged(&target.labels), s.t, s.value))
        .collect())
}
