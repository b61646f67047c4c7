//! DORA's measures from Tandem's own records: deployment frequency, lead time for changes (first
//! commit of a release → its promotion), change failure rate (deployments rolled back, failed, or
//! named first suspect of an incident), time to restore (incidents opened → resolved) and rework
//! rate (rollbacks, emergency deployments and deployments made while an incident was open), each
//! placed in DORA's published performance bands.

use std::collections::HashMap;
use std::sync::Arc;

use api::{Dora, DoraMeasure, Incident};
use store::{Deployment, DeploymentKind, DeploymentStatus};

use crate::App;

const DAY_MS: f64 = 86_400_000.0;

fn ms(time: &str) -> Option<i64> {
    time.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond())
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 })
}

/// The band of a value where a lower value is better: `limits` are the elite, high and medium ceilings.
fn band_below(value: Option<f64>, limits: [f64; 3]) -> Option<String> {
    let value = value?;
    let names = ["elite", "high", "medium"];
    Some(limits.iter().zip(names).find(|(limit, _)| value < **limit).map_or("low", |(_, name)| name).to_string())
}

fn measure(value: Option<f64>, unit: &str, band: Option<String>, basis: String) -> DoraMeasure {
    DoraMeasure { value, unit: unit.into(), band, basis }
}

/// Whose measures: a service, a team's services, or every service (`services` empty).
#[derive(Debug, Default)]
pub struct Scope {
    pub service: Option<String>,
    pub team: Option<String>,
    pub services: Vec<String>,
}

/// What the measures are computed from.
#[derive(Debug, Default)]
pub struct Inputs {
    /// Deployments of the chosen service(s) and environments, any time.
    pub deployments: Vec<Deployment>,
    pub incidents: Vec<Incident>,
    /// Unix ms of the first commit each deployment shipped, by deployment id.
    pub first_commit: HashMap<i64, i64>,
}

/// The measures over `[from, to)` (Unix ms).
pub fn compute(inputs: &Inputs, scope: Scope, environments: Vec<String>, from: i64, to: i64) -> Dora {
    let days = ((to - from) as f64 / DAY_MS).max(1.0 / 24.0);
    let within = |t: Option<i64>| t.is_some_and(|t| t >= from && t < to);
    let in_period: Vec<&Deployment> = inputs.deployments.iter().filter(|d| within(ms(&d.created))).collect();
    let changes: Vec<&&Deployment> = in_period.iter().filter(|d| d.kind == DeploymentKind::Deploy).collect();
    let promoted: Vec<&&&Deployment> = changes
        .iter()
        .filter(|d| d.status == DeploymentStatus::Promoted && within(d.finished.as_deref().and_then(ms)))
        .collect();

    let per_day = promoted.len() as f64 / days;
    let frequency = measure(
        (!changes.is_empty()).then_some(per_day),
        "deployments/day",
        (!changes.is_empty()).then(|| {
            let band = if per_day >= 1.0 {
                "elite"
            } else if per_day >= 1.0 / 7.0 {
                "high"
            } else if per_day >= 1.0 / 30.0 {
                "medium"
            } else {
                "low"
            };
            band.to_string()
        }),
        format!("{} promoted deployments in {days:.1} days", promoted.len()),
    );

    let lead_hours: Vec<f64> = promoted
        .iter()
        .filter_map(|d| {
            let done = d.finished.as_deref().and_then(ms)?;
            let first = *inputs.first_commit.get(&d.id)?;
            Some((done - first).max(0) as f64 / 3_600_000.0)
        })
        .collect();
    let n_lead = lead_hours.len();
    let lead = median(lead_hours);
    let lead_time = measure(
        lead,
        "hours",
        band_below(lead, [24.0, 24.0 * 7.0, 24.0 * 30.0]),
        format!("median over {n_lead} promoted releases, from their first commit to promotion"),
    );

    let suspects: Vec<i64> = inputs.incidents.iter().filter_map(|i| i.suspects.first().map(|s| s.deployment)).collect();
    let finished: Vec<&&&Deployment> = changes.iter().filter(|d| d.status.is_finished()).collect();
    let failed = finished
        .iter()
        .filter(|d| {
            matches!(d.status, DeploymentStatus::RolledBack | DeploymentStatus::Failed) || suspects.contains(&d.id)
        })
        .count();
    let cfr = (!finished.is_empty()).then(|| failed as f64 / finished.len() as f64);
    let change_failure_rate = measure(
        cfr,
        "ratio",
        band_below(cfr.map(|r| r - 1e-9), [0.05 + 1e-9, 0.10 + 1e-9, 0.15 + 1e-9]),
        format!("{failed} of {} finished deployments rolled back, failed or suspected by an incident", finished.len()),
    );

    let restored: Vec<f64> = inputs
        .incidents
        .iter()
        .filter(|i| within(i.resolved_at.as_deref().and_then(ms)))
        .filter_map(|i| i.mttr_seconds.map(|s| s / 3600.0))
        .collect();
    let n_restored = restored.len();
    let restore = median(restored);
    let time_to_restore = measure(
        restore,
        "hours",
        band_below(restore, [1.0, 24.0, 24.0 * 7.0]),
        format!("median over {n_restored} incidents resolved in the period, from opening to resolution"),
    );

    let during_incident = |d: &Deployment| {
        let Some(at) = ms(&d.created) else { return false };
        inputs.incidents.iter().any(|i| {
            i.service.as_deref().is_none_or(|s| s == d.service)
                && ms(&i.opened_at).is_some_and(|o| o <= at)
                && i.resolved_at.as_deref().and_then(ms).is_none_or(|r| at < r)
        })
    };
    let rework = in_period.iter().filter(|d| d.kind != DeploymentKind::Deploy || during_incident(d)).count();
    let rework_ratio = (!in_period.is_empty()).then(|| rework as f64 / in_period.len() as f64);
    let rework_rate = measure(
        rework_ratio,
        "ratio",
        None,
        format!(
            "{rework} of {} deployments were unplanned: rollbacks, emergency deployments, or made during an incident",
            in_period.len()
        ),
    );

    let rfc3339 = |ms: i64| jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default();
    Dora {
        service: scope.service,
        team: scope.team,
        services: scope.services,
        environments,
        from: rfc3339(from),
        to: rfc3339(to),
        deployments: in_period.len() as i64,
        deployment_frequency: frequency,
        lead_time_for_changes: lead_time,
        change_failure_rate,
        time_to_restore,
        rework_rate,
    }
}

/// Gathers the inputs from the store, the incident book and the repositories' mirrors.
pub async fn report(app: &Arc<App>, query: api::DoraQuery) -> Result<Dora, DoraError> {
    let to = jiff::Timestamp::now().as_millisecond();
    let from = to - i64::from(query.days.unwrap_or(30)) * 86_400_000;
    let services: Vec<String> = match (&query.service, &query.team) {
        (Some(service), _) => vec![service.clone()],
        (None, Some(team)) => {
            let teams = app.oncall.config().map(|c| c.teams).unwrap_or_default();
            teams.get(team).cloned().ok_or_else(|| DoraError::UnknownTeam(team.clone()))?
        }
        (None, None) => Vec::new(),
    };
    let filter = store::DeploymentFilter { limit: 100_000, ..Default::default() };
    let all: Vec<Deployment> = app
        .store
        .deployments(filter)
        .await?
        .into_iter()
        .filter(|d| services.is_empty() || services.contains(&d.service))
        .collect();
    let environments: Vec<String> = match &query.environment {
        Some(environment) => vec![environment.clone()],
        None => {
            let mut production: Vec<String> = all
                .iter()
                .map(|d| d.environment.clone())
                .filter(|e| crate::incidents::book::is_production(e))
                .collect();
            if production.is_empty() {
                production = all.iter().map(|d| d.environment.clone()).collect();
            }
            production.sort();
            production.dedup();
            production
        }
    };
    let mut deployments: Vec<Deployment> = all.into_iter().filter(|d| environments.contains(&d.environment)).collect();
    deployments.sort_by_key(|d| d.id);
    let incidents: Vec<Incident> = crate::incidents::all(app)
        .await
        .into_iter()
        .filter(|i| services.is_empty() || i.service.as_ref().is_some_and(|s| services.contains(s)))
        .filter(|i| i.environment.as_ref().is_none_or(|e| environments.contains(e)))
        .collect();
    let mut first_commit = HashMap::new();
    let mut last_promoted: HashMap<(String, String), String> = HashMap::new();
    for d in &deployments {
        let key = (d.service.clone(), d.environment.clone());
        if d.kind == DeploymentKind::Deploy && d.status == DeploymentStatus::Promoted {
            let range = match last_promoted.get(&key) {
                Some(before) if *before != d.sha => format!("{before}..{}", d.sha),
                _ => format!("{0}^!", d.sha),
            };
            if let Ok(repo) = app.store.repo_by_id(d.repo_id).await {
                let mirror = crate::repos::mirror_path(app, &repo);
                if let Ok(times) = crate::repos::git(&mirror, &["log", "--format=%ct", range.as_str()]).await
                    && let Some(first) = times.lines().filter_map(|l| l.trim().parse::<i64>().ok()).min()
                {
                    first_commit.insert(d.id, first * 1000);
                }
            }
            last_promoted.insert(key, d.sha.clone());
        }
    }
    let inputs = Inputs { deployments, incidents, first_commit };
    let scope = Scope { service: query.service, team: query.team, services };
    Ok(compute(&inputs, scope, environments, from, to))
}

#[derive(Debug, thiserror::Error)]
pub enum DoraError {
    #[error("no team is named `{0}` in the on-call file (`teams:`)")]
    UnknownTeam(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}
