//! Deterministic simulations of canaries under traffic, for tests and benchmarks.

use crate::analysis::{Analysis, Arm, Config, Verdict};
use crate::reconcile::{Action, Judgement, Observed, Plan, decide};

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

/// Runs a whole rollout under `scenario` with the same reconciler the server drives
/// ([`crate::reconcile::decide`]): each step it routes is judged by a fresh analysis with the
/// step's share of α (`config` gives the other settings); `scenario.canary_weight` is ignored.
pub fn rollout(scenario: &Scenario, plan: &Plan, config: &Config, seed: u64) -> RolloutEnd {
    let mut rng = Rng::new(seed);
    let mut now = 0.0;
    let mut weight = 0.0;
    let mut observed = Observed { started: true, has_stable: true, n_stable: plan.instances, ..Observed::default() };
    loop {
        match decide(plan, &observed) {
            Action::StartNew { total } => observed.n_new = total,
            Action::Step { index, weight: w, .. } => {
                weight = w;
                observed.at = Some(index);
                observed.judged = None;
            }
            Action::Judge { alpha, .. } => {
                let mut analysis = Analysis::new(Config { alpha, ..config.clone() }, now);
                let judgement = loop {
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
                        Verdict::Rollback(evidence) => break Judgement::Failed { reason: evidence.metric.to_string() },
                        Verdict::Healthy { .. } => break Judgement::Healthy,
                        Verdict::Wait { .. } => {}
                    }
                };
                observed.judged = Some(judgement);
            }
            Action::Promote { .. } => return RolloutEnd::Promoted(now),
            Action::RollBack { .. } => return RolloutEnd::RolledBack(now),
            // Gates, previews, switches and retirements take no traffic to simulate.
            _ => return RolloutEnd::Undecided,
        }
    }
}
