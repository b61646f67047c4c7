//! Remote write: every sample Tandem stores is also sent to each `--remote-write` URL
//! (Prometheus's remote-write protocol 1.0), for teams whose metrics outgrow one machine.
//!
//! Samples queue in a bounded channel (a full queue drops the newest batch and counts it: the
//! local store is never held up by a slow receiver); a sender batches up to 5,000 samples or one
//! second, and retries a failed send with exponential backoff (0.5 s to 30 s, ten attempts) unless
//! the receiver refused it outright (4xx other than 429), as Prometheus does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::Labels;
use tokio::sync::mpsc;

const QUEUE_BATCHES: usize = 1024;
const MAX_SAMPLES_PER_SEND: usize = 5_000;
const MAX_ATTEMPTS: u32 = 10;

type Batch = Vec<(Labels, i64, f64)>;

/// Figures of the remote writers, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

#[derive(Debug)]
pub struct RemoteWrite {
    queues: Vec<mpsc::Sender<Batch>>,
    pub counters: Arc<Counters>,
}

impl RemoteWrite {
    /// Starts one sender per URL (none: a writer that sends nothing).
    pub fn start(urls: &[String]) -> RemoteWrite {
        let counters = Arc::new(Counters::default());
        let queues = urls
            .iter()
            .map(|url| {
                let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
                tokio::spawn(send_forever(url.clone(), rx, counters.clone()));
                tx
            })
            .collect();
        RemoteWrite { queues, counters }
    }

    /// Queues a stored batch for every receiver; never waits.
    /// Whether samples are sent anywhere (`--remote-write` given).
    pub fn is_enabled(&self) -> bool {
        !self.queues.is_empty()
    }

    pub fn offer(&self, batch: &[(Labels, i64, f64)]) {
        for queue in &self.queues {
            if queue.try_send(batch.to_vec()).is_err() {
                self.counters.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
        }
    }
}

async fn send_forever(url: String, mut rx: mpsc::Receiver<Batch>, counters: Arc<Counters>) {
    let client = reqwest::Client::new();
    while let Some(first) = rx.recv().await {
        let mut pending = first;
        // Whatever else is queued now joins this send, up to its size.
        while pending.len() < MAX_SAMPLES_PER_SEND {
            match rx.try_recv() {
                Ok(more) => pending.extend(more),
                Err(_) => break,
            }
        }
        let mut series: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
        for (labels, t, v) in &pending {
            series.entry(labels.clone()).or_default().push((*t, *v));
        }
        let body = metrics::remote::write_request(&series.into_iter().collect::<Vec<_>>());
        let n = pending.len() as u64;
        let mut delay = Duration::from_millis(500);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = client
                .post(&url)
                .header("content-encoding", "snappy")
                .header("content-type", "application/x-protobuf")
                .header("x-prometheus-remote-write-version", "0.1.0")
                .timeout(Duration::from_secs(30))
                .body(body.clone())
                .send()
                .await;
            let retry = match result {
                Ok(response) if response.status().is_success() => {
                    counters.sent.fetch_add(n, Ordering::Relaxed);
                    break;
                }
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    tracing::warn!("remote write to {url}: {status}: {}", text.trim());
                    status.is_server_error() || status.as_u16() == 429
                }
                Err(error) => {
                    tracing::warn!("remote write to {url}: {error}");
                    true
                }
            };
            if !retry || attempt >= MAX_ATTEMPTS {
                counters.failed.fetch_add(n, Ordering::Relaxed);
                break;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
}
