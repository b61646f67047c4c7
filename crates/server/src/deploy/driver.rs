//! The driver of one deployment: it observes (the store, the instances, the proxy's judgement),
//! asks the pure reconciler (`rollout::reconcile::decide`) for the next action, carries it out and
//! records it — one action at a time, holding the environment's lock only while it changes what
//! serves. The store alone says where a deployment stands, so a new driver resumes it after a crash.

use std::time::Duration;

use rollout::reconcile::{Plan, Strategy as Moves};
use targets::canary::Deadline;

#[allow(unused_imports)]
use super::*;

/// What the driver holds in memory while it carries a deployment: lost in a crash, and rebuilt
/// from the store by the next driver.
struct Progress {
    /// Instances of the new release, started and ready.
    new: Vec<Instance>,
    /// Why starting new instances failed, if it did.
    start_failure: Option<String>,
    at: Option<usize>,
    judged: Option<Judgement>,
    /// The evidence of the last judgement that failed, for the rollback's record.
    evidence: Option<rollout::analysis::Evidence>,
    recorded_gate: Option<Gate>,
    preview_began: Option<Instant>,
}

/// The reconciler's plan for a deployment, from its service file.
pub(super) fn plan_of(deployment: &Deployment, spec: &service::Environment) -> Plan {
    let kind = match deployment.kind {
        DeploymentKind::Emergency => Kind::Emergency,
        DeploymentKind::Rollback => Kind::Rollback,
        DeploymentKind::Deploy => Kind::Deploy,
    };
    let strategy = match &spec.strategy {
        Strategy::Canary { steps, .. } => Moves::Canary { weights: steps.iter().map(|p| p / 100.0).collect() },
        Strategy::BlueGreen { preview_ms, keep_old_ms } => {
            Moves::BlueGreen { preview_ms: *preview_ms, keep_old_ms: *keep_old_ms }
        }
        Strategy::Rolling { max_surge, max_unavailable } => {
            Moves::Rolling { max_surge: *max_surge as usize, max_unavailable: *max_unavailable as usize }
        }
    };
    Plan { kind, strategy, instances: spec.instances as usize, alpha: spec.analysis.alpha }
}

/// Carries one deployment from wherever the store says it is to its end.
pub(super) async fn drive(app: &Arc<App>, mut deployment: Deployment) -> Result<(), String> {
    let spec = environment_spec(&deployment)?;
    let env = environment(app, &deployment, &spec).await?;
    let id = deployment.id;
    if deployment.abort_requested {
        app.deployer.abort(id);
    }
    let subject = format!("deployment/{id}");
    if app.store.events_about(&subject).await.is_ok_and(|e| e.iter().any(|e| e.kind == "deployment.promote_requested"))
    {
        app.deployer.promote(id);
    }
    let plan = plan_of(&deployment, &spec);
    let has_stable = !env.state.lock().await.stable.is_empty();
    let mut launched: Option<Launch> = None;
    let health = Checks::from_spec(&spec.health);
    let mut progress = Progress {
        new: Vec::new(),
        start_failure: None,
        at: None,
        judged: None,
        evidence: None,
        recorded_gate: (deployment.status == DeploymentStatus::AwaitingApproval).then_some(Gate::Approval),
        preview_began: None,
    };
    loop {
        let started = deployment.status == DeploymentStatus::Running;
        let held = if started || plan.kind != Kind::Deploy { None } else { gate(app, &deployment, &spec, &env).await };
        let observed = {
            let serving = env.state.lock().await;
            let warm_is_target = match &serving.warm {
                Some((warm_id, _)) if plan.kind != Kind::Deploy => {
                    app.store.deployment(*warm_id).await.is_ok_and(|w| w.sha == deployment.sha)
                }
                _ => false,
            };
            Observed {
                started,
                step: deployment.step.max(0) as usize,
                held_by: held.as_ref().map(|(gate, _)| *gate),
                recorded_gate: progress.recorded_gate,
                superseded_by: app.deployer.superseded_by(id),
                rollback_requested: app.deployer.aborted(id),
                promote_requested: app.deployer.promoting(id),
                has_stable,
                n_stable: serving.stable.len(),
                warm_is_target,
                n_new: progress.new.len(),
                new_failure: progress.start_failure.clone().or_else(|| progress.new.iter().find_map(Instance::failure)),
                at: progress.at,
                judged: progress.judged.clone(),
                preview_ms: progress.preview_began.map_or(0, |t| t.elapsed().as_millis() as u64),
            }
        };
        let action = reconcile::decide(&plan, &observed);
        match action {
            Action::Skip { newer } => {
                skip(app, &deployment, newer).await?;
                return Ok(());
            }
            Action::Hold { gate: held_by, record } => {
                if record {
                    let status = if held_by == Gate::Approval {
                        DeploymentStatus::AwaitingApproval
                    } else {
                        DeploymentStatus::Gated
                    };
                    let reason = held.map(|(_, reason)| reason);
                    let detail = serde_json::json!({"gate": gate_name(held_by)});
                    deployment = transition(app, &deployment, "gated", status, 0, 0.0, reason, detail).await?;
                    progress.recorded_gate = Some(held_by);
                }
                tokio::select! {
                    () = app.deployer.wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Action::Start => {
                let detail = serde_json::json!({"strategy": strategy_name(&spec.strategy)});
                let step = deployment.step;
                deployment =
                    transition(app, &deployment, "started", DeploymentStatus::Running, step, 0.0, None, detail).await?;
            }
            Action::SwitchToWarm => {
                let mut serving = env.state.lock().await;
                let Some((_, warm)) = serving.warm.take() else { continue };
                env.routing(&warm, &[], 0.0);
                let old = std::mem::replace(&mut serving.stable, warm);
                serving.stable_deployment = Some(id);
                drop(serving);
                retire(old);
                let reason = Some("switched back to the release kept warm".to_string());
                let detail = serde_json::json!({});
                transition(app, &deployment, "promoted", DeploymentStatus::Promoted, 0, 1.0, reason, detail).await?;
                return Ok(());
            }
            Action::StartNew { total } => {
                let launch = match &launched {
                    Some(launch) => launch,
                    None => launched.insert(launch(app, &deployment, &spec).await?),
                };
                match start_instances(launch, total.saturating_sub(progress.new.len()), &health).await {
                    Ok(started) => progress.new.extend(started),
                    Err(error) => progress.start_failure = Some(error),
                }
            }
            Action::RetireStable { keep } => {
                let mut serving = env.state.lock().await;
                let keep = keep.min(serving.stable.len());
                let out: Vec<Instance> = serving.stable.drain(keep..).collect();
                env.routing(&serving.stable, &progress.new, share(&serving.stable, &progress.new));
                drop(serving);
                retire(out);
            }
            Action::Step { index, weight, keep_stable } => {
                let mut serving = env.state.lock().await;
                let mut out = Vec::new();
                if let Some(keep) = keep_stable {
                    let keep = keep.min(serving.stable.len());
                    out = serving.stable.drain(keep..).collect();
                }
                env.routing(&serving.stable, &progress.new, weight);
                let detail = match keep_stable {
                    Some(_) => {
                        serde_json::json!({"new_instances": progress.new.len(), "old_instances": serving.stable.len()})
                    }
                    None => serde_json::json!({"percent": weight * 100.0}),
                };
                drop(serving);
                // Old instances out of service stop once traffic no longer reaches them.
                retire(out);
                deployment =
                    transition(app, &deployment, "step", DeploymentStatus::Running, index as i64, weight, None, detail)
                        .await?;
                progress.at = Some(index);
                progress.judged = None;
            }
            Action::Preview => {
                let serving = env.state.lock().await;
                // The new release answers requests carrying the preview header only.
                env.routing(&serving.stable, &progress.new, 0.0);
                drop(serving);
                let detail = serde_json::json!({"preview_header": proxy::PREVIEW_HEADER});
                let (status, reason) = (DeploymentStatus::Running, Some("preview".to_string()));
                deployment = transition(app, &deployment, "step", status, 0, 0.0, reason, detail).await?;
                progress.at = Some(0);
                progress.preview_began = Some(Instant::now());
            }
            Action::WaitPreview { remaining_ms } => {
                tokio::select! {
                    () = app.deployer.wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_millis(remaining_ms.min(100))) => {}
                }
            }
            Action::Judge { alpha, .. } => {
                let min_seconds = match &spec.strategy {
                    Strategy::Canary { pause_ms, .. } => *pause_ms as f64 / 1000.0,
                    _ => 5.0,
                };
                let config =
                    Config { alpha, min_canary_requests: spec.analysis.min_requests, min_seconds, ..Config::default() };
                let mut outcomes = env.listen_to_step();
                let new = &progress.new;
                let end = judge_step(&mut outcomes, &config, step_deadline(&spec), || step_stop(app, id, new)).await;
                env.stop_listening();
                progress.judged = Some(match end {
                    StepEnd::Healthy => Judgement::Healthy,
                    StepEnd::RolledBack { evidence, reason } => {
                        progress.evidence = evidence;
                        Judgement::Failed { reason }
                    }
                });
            }
            Action::Promote { reason, keep_old_ms } => {
                let serving = env.state.lock().await;
                let keep = keep_old_ms.map(Duration::from_millis);
                let new = std::mem::take(&mut progress.new);
                return promote(app, &env, serving, deployment, new, reason.map(str::to_string), keep).await;
            }
            Action::RollBack { reason, step, weight, restore_stable } => {
                let mut serving = env.state.lock().await;
                if let Some(count) = restore_stable {
                    restore_count(app, &mut serving, count).await;
                }
                env.routing(&serving.stable, &[], 0.0);
                drop(serving);
                retire(std::mem::take(&mut progress.new));
                let detail = match progress.evidence.take() {
                    Some(evidence) => serde_json::json!({"evidence": evidence}),
                    None => serde_json::json!({}),
                };
                // Traffic is back on stable before the end is recorded.
                let status = DeploymentStatus::RolledBack;
                transition(app, &deployment, "rolled_back", status, step as i64, weight, Some(reason), detail).await?;
                return Ok(());
            }
        }
    }
}

pub(super) fn strategy_name(strategy: &Strategy) -> &'static str {
    match strategy {
        Strategy::Canary { .. } => "canary",
        Strategy::Rolling { .. } => "rolling",
        Strategy::BlueGreen { .. } => "blue-green",
    }
}

/// The service file's `analysis.deadline` and `on-deadline`, for each judged step.
pub(super) fn step_deadline(spec: &service::Environment) -> Option<Deadline> {
    spec.analysis.deadline_ms.map(|ms| Deadline {
        after: Duration::from_millis(ms),
        promote: spec.analysis.on_deadline == service::OnDeadline::Promote,
    })
}

/// How a step ends from outside: rolled back (a manual rollback, or a new instance that failed
/// its liveness check) or promoted by hand.
pub(super) fn step_stop(app: &App, id: i64, new: &[Instance]) -> Option<StepEnd> {
    if app.deployer.aborted(id) {
        return Some(StepEnd::RolledBack { evidence: None, reason: "rollback requested".into() });
    }
    if let Some(failure) = new.iter().find_map(Instance::failure) {
        return Some(StepEnd::RolledBack { evidence: None, reason: format!("failed health check: {failure}") });
    }
    app.deployer.promoting(id).then_some(StepEnd::Healthy)
}

/// The new release takes all traffic and becomes stable; the old one stops (or stays warm).
pub(super) async fn promote(
    app: &Arc<App>,
    env: &Arc<Env>,
    mut serving: tokio::sync::MutexGuard<'_, Serving>,
    deployment: Deployment,
    new: Vec<Instance>,
    reason: Option<String>,
    keep_old: Option<Duration>,
) -> Result<(), String> {
    env.routing(&new, &[], 0.0);
    let old = std::mem::replace(&mut serving.stable, new);
    let old_deployment = serving.stable_deployment.replace(deployment.id);
    let detail = serde_json::json!({"replaced": old_deployment});
    let step = deployment.step;
    let recorded =
        transition(app, &deployment, "promoted", DeploymentStatus::Promoted, step, 1.0, reason, detail).await;
    match (keep_old, old_deployment) {
        (Some(keep), Some(old_id)) if !old.is_empty() && !keep.is_zero() => {
            let previous = serving.warm.replace((old_id, old));
            drop(serving);
            if let Some((_, instances)) = previous {
                stop_all(instances).await;
            }
            let env = env.clone();
            tokio::spawn(async move {
                tokio::time::sleep(keep).await;
                let mut serving = env.state.lock().await;
                if serving.warm.as_ref().is_some_and(|(id, ..)| *id == old_id)
                    && let Some((_, instances)) = serving.warm.take()
                {
                    drop(serving);
                    stop_all(instances).await;
                }
            });
        }
        _ => {
            drop(serving);
            retire(old);
        }
    }
    recorded.map(|_| ())
}

pub(super) fn share(old: &[Instance], new: &[Instance]) -> f64 {
    new.len() as f64 / (old.len() + new.len()).max(1) as f64
}

/// A rolling update that failed: old instances already retired come back first, from the stable
/// release, so the environment keeps its count.
async fn restore_count(app: &Arc<App>, serving: &mut Serving, count: usize) {
    let missing = count.saturating_sub(serving.stable.len());
    if missing == 0 {
        return;
    }
    let Some(stable_id) = serving.stable_deployment else { return };
    let restored = async {
        let stable = app.store.deployment(stable_id).await.map_err(|e| e.to_string())?;
        let stable_spec = environment_spec(&stable)?;
        let stable_launch = launch(app, &stable, &stable_spec).await?;
        start_instances(&stable_launch, missing, &Checks::from_spec(&stable_spec.health)).await
    };
    match restored.await {
        Ok(back) => serving.stable.extend(back),
        Err(error) => tracing::error!("cannot bring the stable release back to {count} instances: {error}"),
    }
}
