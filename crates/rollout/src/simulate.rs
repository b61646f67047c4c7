//! Deterministic simulations of canaries under traffic, for tests and benchmarks.

use crate::analysis::{Analysis, Arm, Config, Verdict};

/// A small, fast, seeded generator (xorshift64*), so simulations repeat exactly.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponentially distributed with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.uniform()).ln()
    }
}

/// Traffic and the two versions' behaviour.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub requests_per_second: f64,
    /// The canary's traffic weight, 0..1.
    pub canary_weight: f64,
    pub stable_error_rate: f64,
    pub canary_error_rate: f64,
    /// Mean latencies in milliseconds.
    pub stable_latency_ms: f64,
    pub canary_latency_ms: f64,
    /// How long to watch before giving up (seconds).
    pub duration: f64,
}

/// How one simulated canary ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Seconds and requests until rollback, if it was rolled back.
    pub rolled_back_after: Option<(f64, u64)>,
    pub metric: Option<&'static str>,
}

/// Runs one canary under `scenario` with `config`, stopping at the first rollback.
pub fn run(scenario: &Scenario, config: &Config, seed: u64) -> Outcome {
    let mut rng = Rng::new(seed);
    let mut analysis = Analysis::new(config.clone(), 0.0);
    let mut now = 0.0;
    let mut n = 0u64;
    while now < scenario.duration {
        now += rng.exponential(1.0 / scenario.requests_per_second);
        n += 1;
        let arm = if rng.uniform() < scenario.canary_weight { Arm::Canary } else { Arm::Stable };
        let (error_rate, latency) = match arm {
            Arm::Canary => (scenario.canary_error_rate, scenario.canary_latency_ms),
            Arm::Stable => (scenario.stable_error_rate, scenario.stable_latency_ms),
        };
        let error = rng.uniform() < error_rate;
        analysis.observe(now, arm, error, rng.exponential(latency));
        if let Verdict::Rollback(evidence) = analysis.verdict(now) {
            return Outcome { rolled_back_after: Some((now, n)), metric: Some(evidence.metric) };
        }
    }
    Outcome { rolled_back_after: None, metric: None }
}

/// How a whole stepped rollout ended in simulation.
#[derive(Debug, Clone, PartialEq)]
pub enum RolloutEnd {
    /// Promoted after this many seconds.
    Promoted(f64),
    /// Rolled back after this many seconds.
    RolledBack(f64),
    /// Still waiting when the scenario's duration ran out.
    Undecided,
}

/// Runs a canary through `steps` (weights 0..1; the last one below 1), each step judged by a
/// fresh analysis as the rollout controller does; `scenario.canary_weight` is ignored.
pub fn rollout(scenario: &Scenario, steps: &[f64], config: &Config, seed: u64) -> RolloutEnd {
    let mut rng = Rng::new(seed);
    let mut now = 0.0;
    for &weight in steps {
        let mut analysis = Analysis::new(config.clone(), now);
        loop {
            if now > scenario.duration {
                return RolloutEnd::Undecided;
            }
            now += rng.exponential(1.0 / scenario.requests_per_second);
            let arm = if rng.uniform() < weight { Arm::Canary } else { Arm::Stable };
            let (error_rate, latency) = match arm {
                Arm::Canary => (scenario.canary_error_rate, scenario.canary_latency_ms),
                Arm::Stable => (scenario.stable_error_rate, scenario.stable_latency_ms),
            };
            let error = rng.uniform() < error_rate;
            analysis.observe(now, arm, error, rng.exponential(latency));
            match analysis.verdict(now) {
                Verdict::Rollback(_) => return RolloutEnd::RolledBack(now),
                Verdict::Healthy { .. } => break,
                Verdict::Wait { .. } => {}
            }
        }
    }
    RolloutEnd::Promoted(now)
}
