//! One environment's proxy and what flows through it: routing, per-version figures, the traffic window the error-budget gate reads.

#[allow(unused_imports)]
use super::*;

/// One environment: its proxy, its stable instances, and its recent traffic.
pub(super) struct Env {
    pub(super) proxy: Arc<Proxy>,
    pub(super) listen: SocketAddr,
    /// Where proxied outcomes go besides the window: the analysis of the step in progress.
    pub(super) tap: Mutex<Option<mpsc::UnboundedSender<Outcome>>>,
    /// Requests and errors per second, for the error-budget gate.
    pub(super) window: Mutex<std::collections::VecDeque<(u64, u64, u64)>>,
    /// Per version: answers by status class and latency histogram, for `/metrics`.
    pub(super) stats: Mutex<Stats>,
    pub(super) state: tokio::sync::Mutex<Serving>,
}

/// Upper bounds (seconds) of the proxy latency histogram's buckets.
pub(super) const LATENCY_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
pub(super) const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// One environment's proxied requests, per version (0 stable, 1 canary).
#[derive(Default)]
pub(super) struct Stats {
    pub(super) classes: [[u64; 6]; 2],
    pub(super) buckets: [[u64; 10]; 2],
    pub(super) count: [u64; 2],
    pub(super) sum_seconds: [f64; 2],
}

#[derive(Default)]
pub(super) struct Serving {
    pub(super) stable: Vec<Instance>,
    pub(super) stable_deployment: Option<i64>,
    /// Blue-green: the previous release (its deployment) kept warm after a switch.
    pub(super) warm: Option<(i64, Vec<Instance>)>,
}

impl Env {
    pub(super) fn routing(&self, stable: &[Instance], canary: &[Instance], weight: f64) {
        let current = self.proxy.routing();
        self.proxy.set_routing(Routing {
            stable: stable.iter().map(|i| i.addr).collect(),
            canary: canary.iter().map(|i| i.addr).collect(),
            canary_weight: weight,
            ..current
        });
    }

    pub(super) fn record(&self, outcome: &Outcome) {
        if let Ok(mut stats) = self.stats.lock() {
            let arm = usize::from(outcome.arm == rollout::analysis::Arm::Canary);
            let class = usize::from(outcome.status / 100).min(5);
            stats.classes[arm][class] += 1;
            let seconds = outcome.latency_ms / 1000.0;
            for (bucket, bound) in LATENCY_BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    stats.buckets[arm][bucket] += 1;
                }
            }
            stats.count[arm] += 1;
            stats.sum_seconds[arm] += seconds;
        }
        let second = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if let Ok(mut window) = self.window.lock() {
            match window.back_mut() {
                Some((s, n, e)) if *s == second => {
                    *n += 1;
                    *e += u64::from(outcome.error);
                }
                _ => window.push_back((second, 1, u64::from(outcome.error))),
            }
            while window.front().is_some_and(|(s, ..)| *s + BUDGET_WINDOW.as_secs() < second) {
                window.pop_front();
            }
        }
    }

    /// Requests and errors over the budget window.
    pub(super) fn traffic(&self) -> (u64, u64) {
        self.window.lock().map(|w| w.iter().fold((0, 0), |(n, e), (_, dn, de)| (n + dn, e + de))).unwrap_or((0, 0))
    }

    pub(super) fn listen_to_step(&self) -> mpsc::UnboundedReceiver<Outcome> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut tap) = self.tap.lock() {
            *tap = Some(tx);
        }
        rx
    }

    pub(super) fn stop_listening(&self) {
        if let Ok(mut tap) = self.tap.lock() {
            *tap = None;
        }
    }
}
