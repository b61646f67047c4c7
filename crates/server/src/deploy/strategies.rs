//! Driving one deployment: canary steps, blue-green preview and switch, rolling batches; promotion and rollback.

#[allow(unused_imports)]
use super::*;

/// Carries one deployment from wherever the store says it is to its end.
pub(super) async fn drive(app: &Arc<App>, mut deployment: Deployment) -> Result<(), String> {
    let spec = environment_spec(&deployment)?;
    let env = environment(app, &deployment, &spec).await?;
    if deployment.abort_requested {
        app.deployer.abort(deployment.id);
    }
    let subject = format!("deployment/{}", deployment.id);
    if app.store.events_about(&subject).await.is_ok_and(|e| e.iter().any(|e| e.kind == "deployment.promote_requested"))
    {
        app.deployer.promote(deployment.id);
    }
    // Gates hold a deployment before anything starts; rollbacks pass them.
    if deployment.kind == "deploy" {
        // One event per gate that holds it, not one per check.
        let mut last_gate = (deployment.status == DeploymentStatus::AwaitingApproval).then_some("approval");
        loop {
            if let Some(newer) = app.deployer.superseded_by(deployment.id) {
                skip(app, &deployment, newer).await?;
                return Ok(());
            }
            if app.deployer.aborted(deployment.id) {
                let reason = Some("rolled back before it started".to_string());
                rolled_back(app, &deployment, 0, 0.0, reason, serde_json::json!({})).await?;
                return Ok(());
            }
            let Some((held_by, reason)) = gate(app, &deployment, &spec, &env).await else { break };
            if last_gate != Some(held_by) {
                let status =
                    if held_by == "approval" { DeploymentStatus::AwaitingApproval } else { DeploymentStatus::Gated };
                let detail = serde_json::json!({"gate": held_by});
                deployment = transition(app, &deployment, "gated", status, 0, 0.0, Some(reason), detail).await?;
                last_gate = Some(held_by);
            }
            tokio::select! {
                () = app.deployer.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
    if deployment.status != DeploymentStatus::Running {
        deployment = transition(
            app,
            &deployment,
            "started",
            DeploymentStatus::Running,
            deployment.step,
            0.0,
            None,
            serde_json::json!({"strategy": strategy_name(&spec.strategy)}),
        )
        .await?;
    }
    let mut serving = env.state.lock().await;

    // Blue-green rollbacks to the release still kept warm switch back at once.
    if deployment.kind != "deploy"
        && let Some((warm_id, _)) = &serving.warm
        && app.store.deployment(*warm_id).await.is_ok_and(|w| w.sha == deployment.sha)
        && let Some((_, warm)) = serving.warm.take()
    {
        env.routing(&warm, &[], 0.0);
        let old = std::mem::replace(&mut serving.stable, warm);
        serving.stable_deployment = Some(deployment.id);
        drop(serving);
        retire(old);
        let reason = Some("switched back to the release kept warm".to_string());
        transition(app, &deployment, "promoted", DeploymentStatus::Promoted, 0, 1.0, reason, serde_json::json!({}))
            .await?;
        return Ok(());
    }

    let health = Checks::from_spec(&spec.health);
    let launch = launch(app, &deployment, &spec).await?;
    let n = spec.instances as usize;
    if matches!(spec.strategy, Strategy::Rolling { .. }) && !serving.stable.is_empty() && deployment.kind != "emergency"
    {
        return rolling(app, &env, serving, deployment, &spec, &launch, &health).await;
    }

    let new = match start_instances(&launch, n, &health).await {
        Ok(new) => new,
        Err(error) => {
            let reason = Some(format!("failed health check: {error}"));
            rolled_back(app, &deployment, deployment.step, 0.0, reason, serde_json::json!({})).await?;
            return Ok(());
        }
    };

    // The first release has nothing to be compared with; an emergency skips the analysis.
    if serving.stable.is_empty() || deployment.kind == "emergency" {
        let reason = if serving.stable.is_empty() {
            "first release of the environment: nothing to compare it with"
        } else {
            "emergency: switched at once, without analysis"
        };
        return promote(app, &env, serving, deployment, new, Some(reason.into()), None).await;
    }

    match &spec.strategy {
        Strategy::Canary { steps, pause_ms } => {
            let judged = steps.iter().filter(|s| **s < 100.0).count();
            let config = analysis_config(&spec, *pause_ms, judged);
            let first = (deployment.step.max(0) as usize).min(steps.len().saturating_sub(1));
            for (index, percent) in steps.iter().enumerate().skip(first) {
                let weight = percent / 100.0;
                if weight >= 1.0 || app.deployer.promoting(deployment.id) {
                    // All traffic on the canary leaves nothing to compare it with: it has passed.
                    break;
                }
                env.routing(&serving.stable, &new, weight);
                deployment =
                    stepped(app, &deployment, index as i64, weight, None, serde_json::json!({"percent": percent}))
                        .await?;
                let mut outcomes = env.listen_to_step();
                let deadline = step_deadline(&spec);
                let end = judge_step(&mut outcomes, &config, deadline, || step_stop(app, deployment.id, &new)).await;
                env.stop_listening();
                if let StepEnd::RolledBack { evidence, reason } = end {
                    env.routing(&serving.stable, &[], 0.0);
                    drop(serving);
                    retire(new);
                    let detail = serde_json::json!({"evidence": evidence});
                    rolled_back(app, &deployment, index as i64, weight, Some(reason), detail).await?;
                    return Ok(());
                }
            }
            promote(app, &env, serving, deployment, new, None, None).await
        }
        Strategy::BlueGreen { preview_ms, keep_old_ms } => {
            // Preview: the new release answers requests carrying the preview header only.
            env.routing(&serving.stable, &new, 0.0);
            deployment = stepped(
                app,
                &deployment,
                0,
                0.0,
                Some("preview".into()),
                serde_json::json!({"preview_header": proxy::PREVIEW_HEADER}),
            )
            .await?;
            let until = Instant::now() + Duration::from_millis(*preview_ms);
            while Instant::now() < until && !app.deployer.promoting(deployment.id) {
                if let Some(reason) = stop_reason(app, deployment.id, &new) {
                    env.routing(&serving.stable, &[], 0.0);
                    drop(serving);
                    retire(new);
                    rolled_back(app, &deployment, 0, 0.0, Some(reason), serde_json::json!({})).await?;
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let keep = Duration::from_millis(*keep_old_ms);
            promote(app, &env, serving, deployment, new, None, Some(keep)).await
        }
        Strategy::Rolling { .. } => promote(app, &env, serving, deployment, new, None, None).await,
    }
}

pub(super) fn strategy_name(strategy: &Strategy) -> &'static str {
    match strategy {
        Strategy::Canary { .. } => "canary",
        Strategy::Rolling { .. } => "rolling",
        Strategy::BlueGreen { .. } => "blue-green",
    }
}

/// The analysis of each judged step. α is the whole rollout's bound on a false rollback, so it
/// is shared between the steps that are judged.
pub(super) fn analysis_config(spec: &service::Environment, pause_ms: u64, judged_steps: usize) -> Config {
    Config {
        alpha: spec.analysis.alpha / judged_steps.max(1) as f64,
        min_canary_requests: spec.analysis.min_requests,
        min_seconds: pause_ms as f64 / 1000.0,
        ..Config::default()
    }
}

/// The service file's `analysis.deadline` and `on-deadline`, for each judged step.
pub(super) fn step_deadline(spec: &service::Environment) -> Option<targets::canary::Deadline> {
    spec.analysis.deadline_ms.map(|ms| targets::canary::Deadline {
        after: Duration::from_millis(ms),
        promote: spec.analysis.on_deadline == service::OnDeadline::Promote,
    })
}

/// Why a step must end now: a manual rollback, or a new instance that failed its liveness check.
pub(super) fn stop_reason(app: &App, id: i64, new: &[Instance]) -> Option<String> {
    if app.deployer.aborted(id) {
        return Some("rollback requested".into());
    }
    new.iter().find_map(Instance::failure).map(|failure| format!("failed health check: {failure}"))
}

/// How a step ends from outside: rolled back (see `stop_reason`) or promoted by hand.
pub(super) fn step_stop(app: &App, id: i64, new: &[Instance]) -> Option<StepEnd> {
    if let Some(reason) = stop_reason(app, id, new) {
        return Some(StepEnd::RolledBack { evidence: None, reason });
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

/// Rolling: batches of new instances replace old ones; each batch takes its share of traffic
/// and is judged against the old ones still serving before the next.
pub(super) async fn rolling(
    app: &Arc<App>,
    env: &Arc<Env>,
    mut serving: tokio::sync::MutexGuard<'_, Serving>,
    mut deployment: Deployment,
    spec: &service::Environment,
    launch: &Launch,
    health: &Checks,
) -> Result<(), String> {
    let Strategy::Rolling { max_surge, max_unavailable } = spec.strategy else { return Ok(()) };
    let n = spec.instances as usize;
    let batch = (if max_surge > 0 { max_surge } else { max_unavailable }).max(1) as usize;
    let batches = n.div_ceil(batch);
    let config = analysis_config(spec, 5_000, batches.saturating_sub(1));
    let mut new: Vec<Instance> = Vec::new();
    let mut retired: Vec<Instance> = Vec::new();
    let first = (deployment.step.max(0) as usize).min(batches - 1);
    for index in first..batches {
        let wanted = ((index + 1) * batch).min(n);
        if max_surge == 0 {
            // No room above the count: take old instances out of service first.
            let out = (wanted - new.len()).min(serving.stable.len());
            let keep = serving.stable.len() - out;
            retired.extend(serving.stable.drain(keep..));
            env.routing(&serving.stable, &new, share(&serving.stable, &new));
        }
        match start_instances(launch, wanted - new.len(), health).await {
            Ok(started) => new.extend(started),
            Err(error) => {
                return rolling_back(
                    app,
                    env,
                    serving,
                    deployment,
                    n,
                    new,
                    retired,
                    index,
                    format!("failed health check: {error}"),
                )
                .await;
            }
        }
        let keep = n.saturating_sub(wanted).min(serving.stable.len());
        retired.extend(serving.stable.drain(keep..));
        let weight = share(&serving.stable, &new);
        env.routing(&serving.stable, &new, weight);
        deployment = stepped(
            app,
            &deployment,
            index as i64,
            weight,
            None,
            serde_json::json!({"new_instances": new.len(), "old_instances": serving.stable.len()}),
        )
        .await?;
        // Old instances out of service stop once traffic no longer reaches them.
        retire(std::mem::take(&mut retired));
        if serving.stable.is_empty() {
            break;
        }
        if app.deployer.promoting(deployment.id) {
            // Promoted by hand: the remaining batches replace the old instances unjudged.
            continue;
        }
        let mut outcomes = env.listen_to_step();
        let end = judge_step(&mut outcomes, &config, step_deadline(spec), || step_stop(app, deployment.id, &new)).await;
        env.stop_listening();
        if let StepEnd::RolledBack { reason, .. } = end {
            return rolling_back(app, env, serving, deployment, n, new, retired, index, reason).await;
        }
    }
    promote(app, env, serving, deployment, new, None, None).await
}

pub(super) fn share(old: &[Instance], new: &[Instance]) -> f64 {
    new.len() as f64 / (old.len() + new.len()).max(1) as f64
}

/// A rolling update that failed: the old release is brought back to its full count first.
#[allow(clippy::too_many_arguments)]
pub(super) async fn rolling_back(
    app: &Arc<App>,
    env: &Arc<Env>,
    mut serving: tokio::sync::MutexGuard<'_, Serving>,
    deployment: Deployment,
    instances: usize,
    new: Vec<Instance>,
    retired: Vec<Instance>,
    index: usize,
    reason: String,
) -> Result<(), String> {
    retire(retired);
    // Old instances already retired come back first, so the environment keeps its count.
    let missing = instances.saturating_sub(serving.stable.len());
    if missing > 0
        && let Some(stable_id) = serving.stable_deployment
        && let Ok(stable) = app.store.deployment(stable_id).await
        && let Ok(stable_spec) = environment_spec(&stable)
        && let Ok(stable_launch) = launch(app, &stable, &stable_spec).await
        && let Ok(back) = start_instances(&stable_launch, missing, &Checks::from_spec(&stable_spec.health)).await
    {
        serving.stable.extend(back);
    }
    env.routing(&serving.stable, &[], 0.0);
    drop(serving);
    retire(new);
    rolled_back(app, &deployment, index as i64, 0.0, Some(reason), serde_json::json!({})).await?;
    Ok(())
}
