//! The monitor: records Tandem's own figures (runs, steps, webhooks, deployments, the proxies'
//! per-version requests and errors) in the time-series store every scrape interval, labelled
//! `job="tandem"`, and writes a snapshot of the store every ten minutes.

use std::sync::Arc;
use std::time::Duration;

use crate::App;

/// How often Tandem records its own figures (Prometheus's common setting).
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(15);

const CHECKPOINT_EVERY: u32 = 40;

pub async fn run_forever(app: Arc<App>) {
    let mut tick = tokio::time::interval(SCRAPE_INTERVAL);
    let mut n = 0u32;
    loop {
        tick.tick().await;
        if let Err(error) = scrape_self(&app).await {
            tracing::warn!("cannot record Tandem's own figures: {error}");
        }
        n += 1;
        if n.is_multiple_of(CHECKPOINT_EVERY) {
            let tsdb = app.tsdb.clone();
            match tokio::task::spawn_blocking(move || tsdb.checkpoint()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!("cannot write the time-series snapshot: {error}"),
                Err(error) => tracing::error!("the time-series snapshot task failed: {error}"),
            }
        }
    }
}

/// Reads `/metrics` as a scrape would and appends it, stamped now.
pub async fn scrape_self(app: &Arc<App>) -> Result<usize, String> {
    let text = crate::api::exposition(app).await.map_err(|e| e.to_string())?;
    let samples = metrics::exposition::parse(&text).map_err(|e| format!("Tandem's own /metrics: {e}"))?;
    let now = jiff::Timestamp::now().as_millisecond();
    let instance = app.config.listen.to_string();
    let batch: Vec<_> = samples
        .into_iter()
        .map(|s| (s.labels.with("job", "tandem").with("instance", &instance), s.t.unwrap_or(now), s.value))
        .collect();
    let tsdb = app.tsdb.clone();
    tokio::task::spawn_blocking(move || tsdb.append(&batch))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}
