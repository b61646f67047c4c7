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
    /// Longest time a step may wait for enough traffic before the rollout gives up (rolls back).
    pub step_timeout: Duration,
}

/// What happened, step by step, for the deployment's record.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Record {
    StepReached { weight: f64, seconds: f64 },
    Promoted { seconds: f64 },
    RolledBack { weight: f64, seconds: f64, evidence: Option<Evidence>, reason: String },
}

/// Runs the plan against the proxy's traffic; returns the record (the last entry is the end).
pub async fn run(proxy: Arc<Proxy>, mut outcomes: mpsc::UnboundedReceiver<Outcome>, plan: Plan) -> Vec<Record> {
    let started = Instant::now();
    let seconds = || started.elapsed().as_secs_f64();
    let mut record = Vec::new();
    for &weight in &plan.steps {
        proxy.set_canary_weight(weight);
        record.push(Record::StepReached { weight, seconds: seconds() });
        // A fresh analysis per step: the share changes, and each weight must prove itself.
        let mut analysis = Analysis::new(plan.analysis.clone(), seconds());
        let step_started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                outcome = outcomes.recv() => match outcome {
                    Some(o) => analysis.observe(seconds(), o.arm, o.error, o.latency_ms),
                    None => break,
                },
                _ = tick.tick() => {}
            }
            match analysis.verdict(seconds()) {
                Verdict::Rollback(evidence) => {
                    proxy.set_canary_weight(0.0);
                    let reason = format!(
                        "{} worse on the canary: {:.2}% vs {:.2}% (evidence {:.0} ≥ {:.0})",
                        evidence.metric,
                        evidence.canary_rate * 100.0,
                        evidence.stable_rate * 100.0,
                        evidence.evidence,
                        evidence.threshold
                    );
                    record.push(Record::RolledBack { weight, seconds: seconds(), evidence: Some(evidence), reason });
                    return record;
                }
                Verdict::Healthy { .. } => break,
                Verdict::Wait { .. } if step_started.elapsed() > plan.step_timeout => {
                    proxy.set_canary_weight(0.0);
                    record.push(Record::RolledBack {
                        weight,
                        seconds: seconds(),
                        evidence: None,
                        reason: format!("not enough traffic to judge the canary within {:?}", plan.step_timeout),
                    });
                    return record;
                }
                Verdict::Wait { .. } => {}
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
