//! The records of a deployment's moves (one event each) and the gates that hold it: freeze windows, error budget, approval.

#[allow(unused_imports)]
use super::*;

/// Records one move of a deployment.
#[allow(clippy::too_many_arguments)]
pub(super) async fn transition(
    app: &App,
    deployment: &Deployment,
    event: &str,
    status: DeploymentStatus,
    step: i64,
    weight: f64,
    reason: Option<String>,
    detail: serde_json::Value,
) -> Result<Deployment, String> {
    let transition = Transition { event: event.into(), status, step, weight, reason, detail };
    app.store.transition_deployment(deployment.id, transition, "tandem").await.map_err(|e| e.to_string())
}

/// The gate's name in events and API answers.
pub(super) fn gate_name(gate: Gate) -> &'static str {
    match gate {
        Gate::Freeze => "freeze",
        Gate::ErrorBudget => "error-budget",
        Gate::Approval => "approval",
    }
}

/// What holds a deployment back now, if anything: the gate and why.
pub(super) async fn gate(
    app: &App,
    deployment: &Deployment,
    spec: &service::Environment,
    env: &Env,
) -> Option<(Gate, String)> {
    if spec.gates.require_provenance {
        let mirror = match app.store.repo_by_id(deployment.repo_id).await {
            Ok(repo) => crate::repos::mirror_path(app, &repo),
            Err(error) => return Some((Gate::Freeze, format!("cannot read its repository: {error}"))),
        };
        if let Some(reason) = crate::attest::refusal(app, deployment, &mirror).await {
            return Some((Gate::Freeze, format!("provenance required: {reason}")));
        }
    }
    if let Some(reason) = frozen(spec) {
        return Some((Gate::Freeze, reason));
    }
    if let Some(floor) = spec.gates.min_error_budget {
        // The environment's SLOs, as the monitor last evaluated them, decide when they have data.
        if let Some((name, left)) = lowest_budget(app, deployment, spec) {
            if left < floor {
                return Some((
                    Gate::ErrorBudget,
                    format!(
                        "error budget of SLO `{name}` is {:.0}% left, below the {:.0}% floor (`tandem slo show {name}`)",
                        left.max(0.0) * 100.0,
                        floor * 100.0
                    ),
                ));
            }
            return approval(app, deployment, spec).await;
        }
        let (requests, errors) = env.traffic();
        if requests > 0 {
            let allowed = 1.0 - spec.gates.objective;
            let rate = errors as f64 / requests as f64;
            let left = 1.0 - rate / allowed;
            if left < floor {
                return Some((
                    Gate::ErrorBudget,
                    format!(
                        "error budget {:.0}% left, below the {:.0}% floor ({:.2}% of {requests} requests failed in the last {} min against a {:.2}% objective)",
                        left.max(0.0) * 100.0,
                        floor * 100.0,
                        rate * 100.0,
                        BUDGET_WINDOW.as_secs() / 60,
                        spec.gates.objective * 100.0
                    ),
                ));
            }
        }
    }
    approval(app, deployment, spec).await
}

/// The freeze window the environment is in now, in words (a window that cannot be read holds too).
pub(crate) fn frozen(spec: &service::Environment) -> Option<String> {
    let now = jiff::Timestamp::now();
    spec.gates.freezes.iter().find_map(|freeze| match freeze.active_at(now) {
        Ok(Some(end)) => Some(format!("freeze window `{}` ({}) until {end}", freeze.cron, freeze.timezone)),
        Ok(None) => None,
        Err(error) => Some(format!("freeze window cannot be read: {error}")),
    })
}

/// The SLO of this environment with the least budget left, among those with data.
fn lowest_budget(app: &App, deployment: &Deployment, spec: &service::Environment) -> Option<(String, f64)> {
    let slos = app.monitor.slos.lock().unwrap_or_else(|e| e.into_inner());
    slos.iter()
        .filter(|s| {
            s.scope.service.as_deref() == Some(deployment.service.as_str())
                && s.scope.environment.as_deref() == Some(deployment.environment.as_str())
                && spec.slos.iter().any(|declared| declared.name == s.spec.name)
        })
        .filter_map(|s| Some((s.spec.name.clone(), s.status.as_ref()?.budget_remaining?)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// The security findings recorded for the runs of commit `sha` of repository `repo_id`, in words
/// (none: empty).
pub(crate) async fn findings(app: &App, repo_id: i64, sha: &str) -> Result<Vec<String>, String> {
    let runs = app
        .store
        .runs(store::RunFilter { repo_id: Some(repo_id), limit: 500, ..Default::default() })
        .await
        .map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    for run in runs.iter().filter(|r| r.sha == sha) {
        for event in app.store.events_about(&format!("run/{}", run.id)).await.map_err(|e| e.to_string())? {
            let n = |key: &str| event.payload[key].as_array().map_or(0, Vec::len);
            match event.kind.as_str() {
                "scan.secrets_found" => found.push(format!("{} secret(s) (run {})", n("findings"), run.id)),
                "scan.vulnerabilities_found" => {
                    let critical = event.payload["findings"]
                        .as_array()
                        .map_or(0, |f| f.iter().filter(|f| f["severity"] == "critical").count());
                    if critical > 0 {
                        found.push(format!("{critical} critical vulnerabilit(ies) (run {})", run.id));
                    }
                }
                _ => {}
            }
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

async fn approval(app: &App, deployment: &Deployment, spec: &service::Environment) -> Option<(Gate, String)> {
    if spec.gates.block_on_findings {
        // Fails closed: findings that cannot be read hold the deployment.
        let found = match findings(app, deployment.repo_id, &deployment.sha).await {
            Ok(found) => found,
            Err(error) => return Some((Gate::Approval, format!("cannot read the security findings: {error}"))),
        };
        if !found.is_empty() {
            let overridden = app
                .store
                .events_about(&format!("deployment/{}", deployment.id))
                .await
                .is_ok_and(|events| events.iter().any(|e| e.kind == "deployment.override"));
            if !overridden {
                return Some((
                    Gate::Approval,
                    format!(
                        "security findings on {}: {}; a maintainer may override with a reason: `tandem approve {} --reason TEXT`",
                        &deployment.sha[..deployment.sha.len().min(12)],
                        found.join(", "),
                        deployment.id
                    ),
                ));
            }
        }
    }
    if spec.gates.approval {
        // Fails closed: a deployment whose approval cannot be read stays held.
        match app.store.deployment(deployment.id).await {
            Ok(current) if current.approved_by.is_some() => {}
            Ok(_) => {
                return Some((Gate::Approval, format!("waits for approval: `tandem approve {}`", deployment.id)));
            }
            Err(error) => return Some((Gate::Approval, format!("cannot read its approval: {error}"))),
        }
    }
    None
}
