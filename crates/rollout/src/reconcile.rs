//! The rollout reconciler: from a deployment's plan and what its driver observes now, the one
//! next action. Pure — no IO, no clock, no locks: the driver observes (the store, the instances,
//! the proxy's judgement), calls [`decide`], carries the action out, records it, and asks again.
//! Because every input that matters after a crash is in the store (`started`, `step`), a new
//! driver resumes a deployment where it stood, from the store alone.
//!
//! The rules, in the order `decide` applies them:
//! 1. Before it starts, a deployment (not a rollback) is skipped when a newer one of its
//!    environment replaces it, rolled back when asked, and held while a gate holds it; then it
//!    starts. Rollbacks and emergencies pass the gates.
//! 2. A rollback to the release a blue-green environment keeps warm is a switch, nothing else.
//! 3. A rollback request, or a new instance that failed its readiness or liveness check, rolls
//!    the deployment back, whatever step it is at.
//! 4. Canary and blue-green start all new instances first; the first release of an environment
//!    and an emergency are promoted as soon as they are ready (nothing to compare them with).
//! 5. Canary: each step below 100% routes its weight, is recorded, then judged; a failed
//!    judgement rolls back, a healthy one moves on; a manual promotion skips the rest.
//!    Blue-green: a preview (header only) for its duration, then the switch.
//!    Rolling: batches of `max-surge` (or `max-unavailable`) new instances replace old ones; with
//!    no surge the old ones leave first; each batch but the last is judged; a failure brings the
//!    old release back to its full count.
//! 6. α bounds the whole rollout: it is shared between the steps that are judged.

/// How traffic moves to the new release.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Traffic weights in order, 0..=1; a weight of 1 ends the judged steps.
    Canary {
        weights: Vec<f64>,
    },
    BlueGreen {
        preview_ms: u64,
        keep_old_ms: u64,
    },
    Rolling {
        max_surge: usize,
        max_unavailable: usize,
    },
}

/// Why the deployment exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A new release, through the gates and the strategy.
    Deploy,
    /// Back to an earlier release: no gates; judged like a release.
    Rollback,
    /// Back to an earlier release at once: no gates, no analysis.
    Emergency,
}

/// What a deployment is to do, from its service file.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub kind: Kind,
    pub strategy: Strategy,
    pub instances: usize,
    /// The whole rollout's bound on rolling back a release that is no worse than stable.
    pub alpha: f64,
}

impl Plan {
    /// How many batches a rolling update has.
    fn batches(&self, max_surge: usize, max_unavailable: usize) -> (usize, usize) {
        let size = if max_surge > 0 { max_surge } else { max_unavailable }.max(1);
        (size, self.instances.max(1).div_ceil(size))
    }

    /// The steps that are judged: α is shared between them.
    pub fn judged_steps(&self) -> usize {
        match &self.strategy {
            Strategy::Canary { weights } => weights.iter().filter(|w| **w < 1.0).count(),
            Strategy::BlueGreen { .. } => 0,
            Strategy::Rolling { max_surge, max_unavailable } => {
                self.batches(*max_surge, *max_unavailable).1.saturating_sub(1)
            }
        }
    }

    /// α of one judged step.
    pub fn step_alpha(&self) -> f64 {
        self.alpha / self.judged_steps().max(1) as f64
    }
}

/// A gate that holds a deployment before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Freeze,
    ErrorBudget,
    Approval,
}

/// How the judgement of a step ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    Healthy,
    Failed { reason: String },
}

/// What the driver sees now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    /// The store says the deployment has started.
    pub started: bool,
    /// The step (or batch) the store says it reached: where a resumed deployment goes on.
    pub step: usize,
    /// The first gate that holds it now (evaluated only before it starts).
    pub held_by: Option<Gate>,
    /// The gate whose hold is already recorded: one event per gate, not one per look.
    pub recorded_gate: Option<Gate>,
    /// A newer deployment of the environment that replaces this one.
    pub superseded_by: Option<i64>,
    pub rollback_requested: bool,
    pub promote_requested: bool,
    /// The environment had a stable release serving when this driver began.
    pub has_stable: bool,
    /// Stable instances serving now.
    pub n_stable: usize,
    /// The release this deployment goes to is the one a blue-green environment keeps warm.
    pub warm_is_target: bool,
    /// New instances started and ready (in this process).
    pub n_new: usize,
    /// Why a new instance failed its readiness or liveness check, if one did.
    pub new_failure: Option<String>,
    /// The step this driver has routed and recorded, if any.
    pub at: Option<usize>,
    /// The judgement of step `at`, once it is in.
    pub judged: Option<Judgement>,
    /// Milliseconds since the blue-green preview began.
    pub preview_ms: u64,
}

/// The next thing to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// End as skipped: a newer deployment replaces it.
    Skip { newer: i64 },
    /// Wait for the gate; record the hold when `record` (the first look at this gate).
    Hold { gate: Gate, record: bool },
    /// Record the start.
    Start,
    /// Route all traffic to the warm release and record the promotion.
    SwitchToWarm,
    /// Start new instances until `total` are ready.
    StartNew { total: usize },
    /// Take stable instances out of traffic (and stop them after the drain) down to `keep`.
    RetireStable { keep: usize },
    /// Route `weight` of the traffic to the new release (for rolling, after keeping `keep_stable`
    /// stable instances), and record the step.
    Step { index: usize, weight: f64, keep_stable: Option<usize> },
    /// Route requests with the preview header to the new release; record the preview.
    Preview,
    /// Judge step `index` with `alpha` until the analysis decides (or it is stopped).
    Judge { index: usize, alpha: f64 },
    /// Nothing to do for this long, unless something changes.
    WaitPreview { remaining_ms: u64 },
    /// All traffic to the new release, which becomes stable; the old one stops, or stays warm.
    Promote { reason: Option<&'static str>, keep_old_ms: Option<u64> },
    /// All traffic back to stable (first bringing it back to `restore_stable` instances), the new
    /// instances stop, and the rollback is recorded at `step` with `weight`.
    RollBack { reason: String, step: usize, weight: f64, restore_stable: Option<usize> },
}

impl Action {
    /// The deployment is over after this action.
    pub fn ends(&self) -> bool {
        matches!(self, Action::Skip { .. } | Action::SwitchToWarm | Action::Promote { .. } | Action::RollBack { .. })
    }
}

/// The next action for `plan` given `observed`.
pub fn decide(plan: &Plan, observed: &Observed) -> Action {
    let o = observed;
    if !o.started {
        if plan.kind == Kind::Deploy {
            if let Some(newer) = o.superseded_by {
                return Action::Skip { newer };
            }
            if o.rollback_requested {
                let reason = "rolled back before it started".to_string();
                return Action::RollBack { reason, step: 0, weight: 0.0, restore_stable: None };
            }
            if let Some(gate) = o.held_by {
                return Action::Hold { gate, record: o.recorded_gate != Some(gate) };
            }
        }
        return Action::Start;
    }
    if plan.kind != Kind::Deploy && o.warm_is_target {
        return Action::SwitchToWarm;
    }
    let rolling = match plan.strategy {
        Strategy::Rolling { max_surge, max_unavailable } if o.has_stable && plan.kind != Kind::Emergency => {
            Some((max_surge, max_unavailable))
        }
        _ => None,
    };
    let weight_at = |index: usize| match &plan.strategy {
        Strategy::Canary { weights } => weights.get(index).copied().unwrap_or(0.0),
        _ => 0.0,
    };
    let here = o.at.unwrap_or(o.step);
    // The new release's share of traffic now: none until this driver routed a step.
    let weight_now = if o.at.is_some() { weight_at(here) } else { 0.0 };
    if o.rollback_requested {
        let reason = "rollback requested".to_string();
        let restore_stable = rolling.map(|_| plan.instances);
        return Action::RollBack { reason, step: here, weight: weight_now, restore_stable };
    }
    if let Some(failure) = &o.new_failure {
        let reason = format!("failed health check: {failure}");
        let restore_stable = rolling.map(|_| plan.instances);
        return Action::RollBack { reason, step: here, weight: weight_now, restore_stable };
    }
    if let Some((max_surge, max_unavailable)) = rolling {
        return rolling_step(plan, o, max_surge, max_unavailable);
    }
    if o.n_new < plan.instances {
        return Action::StartNew { total: plan.instances };
    }
    if !o.has_stable {
        return Action::Promote {
            reason: Some("first release of the environment: nothing to compare it with"),
            keep_old_ms: None,
        };
    }
    if plan.kind == Kind::Emergency {
        return Action::Promote { reason: Some("emergency: switched at once, without analysis"), keep_old_ms: None };
    }
    match &plan.strategy {
        Strategy::Canary { weights } => {
            let next = match (o.at, &o.judged) {
                (None, _) => o.step.min(weights.len().saturating_sub(1)),
                (Some(index), None) if !o.promote_requested => {
                    return Action::Judge { index, alpha: plan.step_alpha() };
                }
                (Some(index), Some(Judgement::Failed { reason })) => {
                    let reason = reason.clone();
                    return Action::RollBack { reason, step: index, weight: weight_at(index), restore_stable: None };
                }
                (Some(index), _) => index + 1,
            };
            match weights.get(next) {
                Some(&weight) if weight < 1.0 && !o.promote_requested => {
                    Action::Step { index: next, weight, keep_stable: None }
                }
                // All traffic on the new release leaves nothing to compare it with: it passed.
                _ => Action::Promote { reason: None, keep_old_ms: None },
            }
        }
        Strategy::BlueGreen { preview_ms, keep_old_ms } => {
            if o.at.is_none() {
                return Action::Preview;
            }
            if o.promote_requested || o.preview_ms >= *preview_ms {
                return Action::Promote { reason: None, keep_old_ms: Some(*keep_old_ms) };
            }
            Action::WaitPreview { remaining_ms: preview_ms - o.preview_ms }
        }
        // Without a stable release (or as an emergency) a rolling update replaces all at once.
        Strategy::Rolling { .. } => Action::Promote { reason: None, keep_old_ms: None },
    }
}

/// One move of a rolling update (the environment has a stable release).
fn rolling_step(plan: &Plan, o: &Observed, max_surge: usize, max_unavailable: usize) -> Action {
    let n = plan.instances.max(1);
    let (size, batches) = plan.batches(max_surge, max_unavailable);
    let next = match (o.at, &o.judged) {
        (None, _) => o.step.min(batches - 1),
        (Some(_), _) if o.n_stable == 0 => return Action::Promote { reason: None, keep_old_ms: None },
        (Some(index), None) if !o.promote_requested => return Action::Judge { index, alpha: plan.step_alpha() },
        (Some(index), Some(Judgement::Failed { reason })) => {
            let reason = reason.clone();
            return Action::RollBack { reason, step: index, weight: 0.0, restore_stable: Some(n) };
        }
        (Some(index), _) => index + 1,
    };
    if next >= batches {
        return Action::Promote { reason: None, keep_old_ms: None };
    }
    let wanted = ((next + 1) * size).min(n);
    // Never more than the count plus the surge: old instances leave first where there is no room
    // (always without surge; after a resume, where the stable release came back whole).
    if o.n_stable + wanted > n + max_surge {
        return Action::RetireStable { keep: (n + max_surge).saturating_sub(wanted) };
    }
    if o.n_new < wanted {
        return Action::StartNew { total: wanted };
    }
    let keep_stable = (n - wanted).min(o.n_stable);
    let weight = o.n_new as f64 / (keep_stable + o.n_new).max(1) as f64;
    Action::Step { index: next, weight, keep_stable: Some(keep_stable) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary() -> Plan {
        Plan {
            kind: Kind::Deploy,
            strategy: Strategy::Canary { weights: vec![0.1, 0.5, 1.0] },
            instances: 2,
            alpha: 0.01,
        }
    }

    fn running(n_new: usize) -> Observed {
        Observed { started: true, has_stable: true, n_stable: 2, n_new, ..Observed::default() }
    }

    #[test]
    fn alpha_is_shared_by_the_judged_steps() {
        assert_eq!(canary().judged_steps(), 2);
        assert!((canary().step_alpha() - 0.005).abs() < 1e-12);
        let rolling =
            Plan { strategy: Strategy::Rolling { max_surge: 1, max_unavailable: 0 }, instances: 3, ..canary() };
        assert_eq!(rolling.judged_steps(), 2, "three batches, the last one unjudged");
    }

    #[test]
    fn a_canary_goes_step_by_step_then_is_promoted() {
        let plan = canary();
        let mut o = running(0);
        assert_eq!(decide(&plan, &o), Action::StartNew { total: 2 });
        o.n_new = 2;
        assert_eq!(decide(&plan, &o), Action::Step { index: 0, weight: 0.1, keep_stable: None });
        o.at = Some(0);
        assert_eq!(decide(&plan, &o), Action::Judge { index: 0, alpha: 0.005 });
        o.judged = Some(Judgement::Healthy);
        assert_eq!(decide(&plan, &o), Action::Step { index: 1, weight: 0.5, keep_stable: None });
        o.at = Some(1);
        o.judged = None;
        assert_eq!(decide(&plan, &o), Action::Judge { index: 1, alpha: 0.005 });
        o.judged = Some(Judgement::Healthy);
        assert_eq!(decide(&plan, &o), Action::Promote { reason: None, keep_old_ms: None });
    }
}
