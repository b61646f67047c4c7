//! Canary analysis that decides as soon as the evidence suffices.
//!
//! Under "the canary fails no more often than stable", an error lands on the canary with the
//! probability of the canary's share of traffic. Each error event is a trial; the likelihood
//! ratio against "the canary's error odds are r times stable's", mixed over several r, is a
//! non-negative martingale under the null, so by Ville's inequality the chance that it *ever*
//! reaches 1/α is at most α — however often it is looked at. The same test runs on "slow" events
//! (requests slower than stable's running p99). α is split between the two tests.

use serde::Serialize;

/// Settings of an analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Bound on the probability of rolling back a canary that is no worse than stable.
    pub alpha: f64,
    /// Error-odds ratios of the alternative, mixed with equal weights.
    pub ratios: Vec<f64>,
    /// Requests the canary must have served before a healthy verdict (promotion) is possible.
    pub min_canary_requests: u64,
    /// Seconds of analysis before a healthy verdict is possible.
    pub min_seconds: f64,
    /// The canary's first requests: if all of these fail while stable is mostly fine, roll back
    /// at once without statistics.
    pub hard_failure_requests: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            alpha: 0.01,
            ratios: vec![1.5, 2.0, 3.0, 5.0, 10.0, 20.0],
            min_canary_requests: 200,
            min_seconds: 30.0,
            hard_failure_requests: 5,
        }
    }
}

/// Which version served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arm {
    Stable,
    Canary,
}

/// A mixture sequential probability ratio test on events split between two arms.
#[derive(Debug, Clone, PartialEq)]
pub struct EventTest {
    ratios: Vec<f64>,
    /// log L_n(r) for each ratio.
    log_likelihoods: Vec<f64>,
    pub n_canary: u64,
    pub n_stable: u64,
}

impl EventTest {
    pub fn new(ratios: &[f64]) -> EventTest {
        EventTest { ratios: ratios.to_vec(), log_likelihoods: vec![0.0; ratios.len()], n_canary: 0, n_stable: 0 }
    }

    /// Records one event (an error, or a slow request) on `arm`, when the canary's share of
    /// traffic is `share` (0 < share < 1).
    pub fn observe(&mut self, arm: Arm, share: f64) {
        let share = share.clamp(1e-6, 1.0 - 1e-6);
        for (log_l, &r) in self.log_likelihoods.iter_mut().zip(&self.ratios) {
            let q = share * r / (share * r + 1.0 - share);
            *log_l += match arm {
                Arm::Canary => (q / share).ln(),
                Arm::Stable => ((1.0 - q) / (1.0 - share)).ln(),
            };
        }
        match arm {
            Arm::Canary => self.n_canary += 1,
            Arm::Stable => self.n_stable += 1,
        }
    }

    /// The mixture likelihood ratio M_n: the evidence that the canary is worse.
    pub fn evidence(&self) -> f64 {
        if self.log_likelihoods.is_empty() {
            return 1.0;
        }
        let max = self.log_likelihoods.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = self.log_likelihoods.iter().map(|l| (l - max).exp()).sum();
        (max + (sum / self.log_likelihoods.len() as f64).ln()).exp()
    }
}

/// A streaming p99 of stable's latencies over a log-scaled histogram (1 ms … ~100 s).
#[derive(Debug, Clone, PartialEq)]
struct LatencyQuantile {
    buckets: Vec<u64>,
    n: u64,
}

impl LatencyQuantile {
    const N_BUCKETS: usize = 200;

    fn new() -> LatencyQuantile {
        LatencyQuantile { buckets: vec![0; Self::N_BUCKETS], n: 0 }
    }

    fn bucket(ms: f64) -> usize {
        // 20 buckets per decade from 1 ms.
        ((ms.max(1.0).log10() * 20.0) as usize).min(Self::N_BUCKETS - 1)
    }

    fn record(&mut self, ms: f64) {
        self.buckets[Self::bucket(ms)] += 1;
        self.n += 1;
    }

    /// The upper edge of the bucket holding the quantile.
    fn quantile(&self, q: f64) -> Option<f64> {
        if self.n < 100 {
            return None;
        }
        let target = (self.n as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= target {
                return Some(10f64.powf((i + 1) as f64 / 20.0));
            }
        }
        None
    }
}

/// What the analysis concludes now, with what it is based on.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    /// Not enough traffic or time yet to call the canary healthy; no sign it is worse.
    Wait { reason: String },
    /// The canary is worse: roll back.
    Rollback(Evidence),
    /// Enough traffic and time without evidence against the canary.
    Healthy { canary_requests: u64, seconds: f64 },
}

/// Why a rollback was decided: the metric, the observed rates, the evidence and the threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    pub metric: &'static str,
    pub canary_rate: f64,
    pub stable_rate: f64,
    pub canary_requests: u64,
    pub stable_requests: u64,
    pub evidence: f64,
    pub threshold: f64,
    pub seconds: f64,
}

/// The running judgement of one canary against stable.
#[derive(Debug, Clone)]
pub struct Analysis {
    config: Config,
    started_at: f64,
    errors: EventTest,
    slow: EventTest,
    stable_latency: LatencyQuantile,
    requests: [u64; 2],
    error_counts: [u64; 2],
    slow_counts: [u64; 2],
    decided: Option<Evidence>,
}

fn index(arm: Arm) -> usize {
    match arm {
        Arm::Stable => 0,
        Arm::Canary => 1,
    }
}

impl Analysis {
    /// Starts judging at time `now` (seconds, any origin).
    pub fn new(config: Config, now: f64) -> Analysis {
        let errors = EventTest::new(&config.ratios);
        let slow = EventTest::new(&config.ratios);
        Analysis {
            config,
            started_at: now,
            errors,
            slow,
            stable_latency: LatencyQuantile::new(),
            requests: [0; 2],
            error_counts: [0; 2],
            slow_counts: [0; 2],
            decided: None,
        }
    }

    /// The canary's share of routed requests so far (the notes' "running fraction").
    fn share(&self) -> f64 {
        let total = self.requests[0] + self.requests[1];
        if total == 0 { 0.5 } else { self.requests[1] as f64 / total as f64 }
    }

    /// Records one request's outcome at time `now`.
    pub fn observe(&mut self, now: f64, arm: Arm, error: bool, latency_ms: f64) {
        self.requests[index(arm)] += 1;
        let share = self.share();
        if arm == Arm::Stable && !error {
            self.stable_latency.record(latency_ms);
        }
        if error {
            self.error_counts[index(arm)] += 1;
            self.errors.observe(arm, share);
        } else if let Some(p99) = self.stable_latency.quantile(0.99)
            && latency_ms > p99
        {
            self.slow_counts[index(arm)] += 1;
            self.slow.observe(arm, share);
        }
        if self.decided.is_none() {
            self.decided = self.check(now);
        }
    }

    fn rate(&self, counts: &[u64; 2], arm: Arm) -> f64 {
        let n = self.requests[index(arm)];
        if n == 0 { 0.0 } else { counts[index(arm)] as f64 / n as f64 }
    }

    fn evidence(&self, metric: &'static str, counts: &[u64; 2], evidence: f64, threshold: f64, now: f64) -> Evidence {
        Evidence {
            metric,
            canary_rate: self.rate(counts, Arm::Canary),
            stable_rate: self.rate(counts, Arm::Stable),
            canary_requests: self.requests[1],
            stable_requests: self.requests[0],
            evidence,
            threshold,
            seconds: now - self.started_at,
        }
    }

    fn check(&self, now: f64) -> Option<Evidence> {
        let threshold = 2.0 / self.config.alpha;
        // Hard failure: the canary's first requests all failed while stable mostly succeeds.
        let k = self.config.hard_failure_requests;
        if k > 0
            && self.requests[1] == k
            && self.error_counts[1] == k
            && self.rate(&self.error_counts, Arm::Stable) < 0.5
        {
            return Some(self.evidence("hard-failure", &self.error_counts, f64::INFINITY, threshold, now));
        }
        let errors = self.errors.evidence();
        if errors >= threshold {
            return Some(self.evidence("error-rate", &self.error_counts, errors, threshold, now));
        }
        let slow = self.slow.evidence();
        if slow >= threshold {
            return Some(self.evidence("latency-p99", &self.slow_counts, slow, threshold, now));
        }
        None
    }

    /// The verdict at time `now`. A rollback, once decided, stays decided.
    pub fn verdict(&self, now: f64) -> Verdict {
        if let Some(evidence) = &self.decided {
            return Verdict::Rollback(evidence.clone());
        }
        let seconds = now - self.started_at;
        if self.requests[1] == 0 {
            return Verdict::Wait { reason: "the canary has had no traffic yet".to_string() };
        }
        if self.requests[1] < self.config.min_canary_requests || seconds < self.config.min_seconds {
            return Verdict::Wait {
                reason: format!(
                    "{} of {} canary requests, {seconds:.0} of {:.0} s; no evidence against the canary (errors {:.2}, latency {:.2} of {:.0})",
                    self.requests[1],
                    self.config.min_canary_requests,
                    self.config.min_seconds,
                    self.errors.evidence(),
                    self.slow.evidence(),
                    2.0 / self.config.alpha
                ),
            };
        }
        Verdict::Healthy { canary_requests: self.requests[1], seconds }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_traffic_waits_and_never_fails() {
        let analysis = Analysis::new(Config::default(), 0.0);
        assert!(matches!(analysis.verdict(3600.0), Verdict::Wait { .. }));
    }

    #[test]
    fn canary_errors_raise_evidence_and_stable_errors_lower_it() {
        let mut test = EventTest::new(&[2.0, 10.0]);
        test.observe(Arm::Canary, 0.1);
        let after_canary = test.evidence();
        assert!(after_canary > 1.0);
        test.observe(Arm::Stable, 0.1);
        assert!(test.evidence() < after_canary);
    }

    #[test]
    fn a_dead_canary_is_rolled_back_at_once() {
        // An even split: five failures are too few for the statistic, not for the rule.
        let mut analysis = Analysis::new(Config::default(), 0.0);
        for i in 0..5 {
            analysis.observe(i as f64, Arm::Stable, false, 10.0);
            assert!(!matches!(analysis.verdict(i as f64), Verdict::Rollback(_)));
            analysis.observe(i as f64 + 0.5, Arm::Canary, true, 10.0);
        }
        let Verdict::Rollback(evidence) = analysis.verdict(5.0) else { panic!("expected a rollback") };
        assert_eq!(evidence.metric, "hard-failure");
        assert_eq!(evidence.canary_rate, 1.0);
    }
}
