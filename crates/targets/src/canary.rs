//! The canary controller: steps the canary's weight up, judges every request through the
//! analysis, rolls back the moment the verdict says so, and promotes after the last step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rollout::analysis::{Analysis, Config, Evidence, Verdict};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::proxy::{Outcome, Proxy};

/// A canary plan: traffic weights in order; each step holds until the analysis calls the canary
/// healthy at that weight.
#[derive(Debug, Clone)]
pub struct Plan {
    pub steps: Vec<f64>,
    pub analysis: Config,
    /// What a step that waits too long for enough traffic does; `None` waits as long as it takes.
    pub deadline: Option<Deadline>,
}

/// How long a step may wait for enough traffic to decide, and what it does then.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deadline {
    pub after: Duration,
    /// Go on as healthy (true) or roll back (false).
    pub promote: bool,
}

/// What happened, step by step, for the deployment's record.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Record {
    StepReached { weight: f64, seconds: f64 },
    Promoted { seconds: f64 },
    RolledBack { weight: f64, seconds: f64, evidence: Option<Evidence>, reason: String },
}

/// How one step of a rollout ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StepEnd {
    /// The analysis calls the new version healthy at this weight.
    Healthy,
    RolledBack {
        evidence: Option<Evidence>,
        reason: String,
    },
}

/// Judges the traffic of one step: a fresh analysis (the share changes, and each weight must
/// prove itself) fed by `outcomes` until it decides, the deadline (if any) passes before it could,
/// or `stop` ends it from outside: a rollback (a failed liveness check, a manual rollback) or a
/// manual promotion (`Healthy`). Without a deadline, no traffic means waiting, never failing.
pub async fn judge_step(
    outcomes: &mut mpsc::UnboundedReceiver<Outcome>,
    config: &Config,
    deadline: Option<Deadline>,
    mut stop: impl FnMut() -> Option<StepEnd>,
) -> StepEnd {
    let started = Instant::now();
    let seconds = || started.elapsed().as_secs_f64();
    let mut analysis = Analysis::new(config.clone(), 0.0);
    // Outcomes are drained on each tick rather than awaited one by one (see `Proxy`).
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        loop {
            match outcomes.try_recv() {
                Ok(o) => analysis.observe(seconds(), o.arm, o.error, o.latency_ms),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    return StepEnd::RolledBack { evidence: None, reason: "the proxy stopped".into() };
                }
            }
        }
        if let Some(end) = stop() {
            return end;
        }
        match analysis.verdict(seconds()) {
            Verdict::Rollback(evidence) => {
                let reason = format!(
                    "{} worse on the canary: {:.2}% vs {:.2}% (evidence {:.0} ≥ {:.0})",
                    evidence.metric,
                    evidence.canary_rate * 100.0,
                    evidence.stable_rate * 100.0,
                    evidence.evidence,
                    evidence.threshold
                );
                return StepEnd::RolledBack { evidence: Some(evidence), reason };
            }
            Verdict::Healthy { .. } => return StepEnd::Healthy,
            Verdict::Wait { .. } if deadline.is_some_and(|d| started.elapsed() > d.after) => {
                let Some(deadline) = deadline else { continue };
                if deadline.promote {
                    return StepEnd::Healthy;
                }
                let reason = format!(
                    "not enough traffic to judge the canary within its deadline of {:?} (analysis.on-deadline: rollback)",
                    deadline.after
                );
                return StepEnd::RolledBack { evidence: None, reason };
            }
            Verdict::Wait { .. } => {}
        }
    }
}

/// Runs the plan against the proxy's traffic; returns the record (the last entry is the end).
pub async fn run(proxy: Arc<Proxy>, mut outcomes: mpsc::UnboundedReceiver<Outcome>, plan: Plan) -> Vec<Record> {
    let started = Instant::now();
    let seconds = || started.elapsed().as_secs_f64();
    let mut record = Vec::new();
    for &weight in &plan.steps {
        proxy.set_canary_weight(weight);
        record.push(Record::StepReached { weight, seconds: seconds() });
        match judge_step(&mut outcomes, &plan.analysis, plan.deadline, || None).await {
            StepEnd::Healthy => {}
            StepEnd::RolledBack { evidence, reason } => {
                proxy.set_canary_weight(0.0);
                record.push(Record::RolledBack { weight, seconds: seconds(), evidence, reason });
                return record;
            }
        }
    }
    // Promotion: the canary becomes stable and takes all the traffic.
    let mut routing = proxy.routing();
    routing.stable = std::mem::take(&mut routing.canary);
    routing.canary_weight = 0.0;
    proxy.set_routing(routing);
    record.push(Record::Promoted { seconds: seconds() });
    record
}
