//! The pages of the delivery loop's start: overview, runs (filtered, paged by id), a run with its
//! jobs and live log. Rows and helpers here are shared with `delivery.rs` and `response.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use store::{DeploymentFilter, RunFilter, RunStatus};

use super::render::{self, ansi, duration, escape, time};
use super::session::Viewer;
use super::{Chrome, page};
use crate::App;

/// A page's answer when the store fails or the thing is not there.
pub(super) fn missing(viewer: &Viewer, what: String) -> Response {
    page(Message { chrome: Chrome::new(viewer, "Not found", "", None), message: what })
}

#[derive(askama::Template)]
#[template(source = "{% extends \"layout.html\" %}{% block content %}<p>{{ message }}</p>{% endblock %}", ext = "html")]
struct Message {
    chrome: Chrome,
    message: String,
}

#[derive(serde::Deserialize, Default)]
pub(super) struct Flash {
    #[serde(default)]
    pub(super) flash: Option<String>,
}

pub(super) struct RunRow {
    pub(super) id: i64,
    pub(super) repo: String,
    pub(super) workflow: String,
    pub(super) git_ref: String,
    pub(super) sha: String,
    pub(super) status: &'static str,
    pub(super) created: String,
    pub(super) duration: String,
}

fn seconds_between(start: &Option<String>, end: &Option<String>) -> Option<f64> {
    let ms = |t: &Option<String>| t.as_deref()?.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond());
    Some((ms(end).unwrap_or_else(|| jiff::Timestamp::now().as_millisecond()) - ms(start)?) as f64 / 1000.0)
}

pub(super) fn run_rows(runs: &[store::Run], repos: &HashMap<i64, String>) -> Vec<RunRow> {
    runs.iter()
        .map(|r| RunRow {
            id: r.id,
            repo: repos.get(&r.repo_id).cloned().unwrap_or_default(),
            workflow: r.workflow.clone(),
            git_ref: r.git_ref.trim_start_matches("refs/heads/").to_string(),
            sha: r.sha.get(..10).unwrap_or(&r.sha).to_string(),
            status: r.status.as_str(),
            created: time(&r.created),
            duration: seconds_between(&r.started, &r.finished).map(duration).unwrap_or_default(),
        })
        .collect()
}

pub(super) struct DeploymentRow {
    pub(super) id: i64,
    pub(super) service: String,
    pub(super) environment: String,
    pub(super) release: String,
    pub(super) kind: &'static str,
    pub(super) status: &'static str,
    pub(super) weight: String,
    pub(super) created: String,
    pub(super) reason: String,
}

pub(super) fn deployment_rows(list: &[store::Deployment]) -> Vec<DeploymentRow> {
    list.iter()
        .map(|d| DeploymentRow {
            id: d.id,
            service: d.service.clone(),
            environment: d.environment.clone(),
            release: d.release.clone(),
            kind: d.kind.as_str(),
            status: d.status.as_str(),
            weight: format!("{:.0}%", d.weight * 100.0),
            created: time(&d.created),
            reason: d.reason.clone().unwrap_or_default(),
        })
        .collect()
}

pub(super) struct EnvironmentRow {
    pub(super) service: String,
    pub(super) environment: String,
    pub(super) stable: String,
    pub(super) previous: String,
    pub(super) listen: String,
    pub(super) health: String,
    pub(super) health_class: &'static str,
    /// Approval, freeze windows (and whether one holds now), the error-budget gate.
    pub(super) gates: String,
}

/// The gates of an environment as its stable release's service file declares them.
fn gates(spec: &str, environment: &str) -> String {
    let Some(service) = spec::service::parse(spec).0 else { return "—".into() };
    let Some(env) = service.environments.iter().find(|e| e.name == environment) else { return "—".into() };
    let g = &env.gates;
    let mut parts = Vec::new();
    if g.approval {
        parts.push("approval required".to_string());
    }
    for freeze in &g.freezes {
        let now = match freeze.active_at(jiff::Timestamp::now()) {
            Ok(Some(end)) => format!(" — frozen now, until {}", time(&end.to_string())),
            _ => String::new(),
        };
        parts.push(format!(
            "freeze `{}` for {} ({}){now}",
            freeze.cron,
            duration(freeze.duration_ms as f64 / 1000.0),
            freeze.timezone
        ));
    }
    if let Some(min) = g.min_error_budget {
        parts.push(format!("error budget ≥ {:.0}% of {:.2}%", min * 100.0, g.objective * 100.0));
    }
    if parts.is_empty() { "none".into() } else { parts.join("; ") }
}

pub(super) async fn environment_rows(app: &App) -> Vec<EnvironmentRow> {
    let link = |id: Option<i64>, releases: &HashMap<i64, String>| match id {
        Some(id) => {
            format!("<a href=\"/deployments/{id}\">{}</a>", escape(releases.get(&id).map_or("?", String::as_str)))
        }
        None => "—".into(),
    };
    let deployments = app.store.deployments(DeploymentFilter { limit: 1000, ..Default::default() }).await;
    let deployments = deployments.unwrap_or_default();
    let releases: HashMap<i64, String> = deployments.iter().map(|d| (d.id, d.release.clone())).collect();
    let specs: HashMap<i64, &str> = deployments.iter().map(|d| (d.id, d.spec.as_str())).collect();
    let slos = app.monitor.slos.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut rows = Vec::new();
    for e in app.store.environments().await.unwrap_or_default() {
        let firing = slos.iter().any(|s| {
            s.scope.service.as_deref() == Some(&e.service)
                && s.scope.environment.as_deref() == Some(&e.environment)
                && s.alerts.iter().any(|a| a.firing_since.is_some())
        });
        let budget = slos
            .iter()
            .filter(|s| {
                s.scope.service.as_deref() == Some(&e.service) && s.scope.environment.as_deref() == Some(&e.environment)
            })
            .filter_map(|s| s.status.as_ref()?.budget_remaining)
            .fold(None, |min: Option<f64>, b| Some(min.map_or(b, |m| m.min(b))));
        let (health, class) = match (firing, budget) {
            (true, _) => ("burning its error budget".to_string(), "failure"),
            (false, Some(b)) if b < 0.0 => (format!("budget overspent ({:.0}%)", b * 100.0), "failure"),
            (false, Some(b)) => (format!("{:.0}% of the error budget left", b * 100.0), "success"),
            (false, None) => ("no SLO".to_string(), "neutral"),
        };
        let gates =
            e.stable.and_then(|id| specs.get(&id)).map_or("—".to_string(), |spec| gates(spec, &e.environment));
        rows.push(EnvironmentRow {
            gates,
            stable: link(e.stable, &releases),
            previous: link(e.previous, &releases),
            listen: e.listen.clone().unwrap_or_default(),
            service: e.service,
            environment: e.environment,
            health,
            health_class: class,
        });
    }
    rows
}

pub(super) struct IncidentRow {
    pub(super) id: i64,
    pub(super) title: String,
    pub(super) state: &'static str,
    pub(super) severity: String,
    pub(super) service: String,
    pub(super) opened: String,
    pub(super) mtta: String,
    pub(super) mttr: String,
    pub(super) suspect: String,
}

pub(super) fn incident_row(i: &api::Incident) -> IncidentRow {
    IncidentRow {
        id: i.id,
        title: i.title.clone(),
        state: i.state.as_str(),
        severity: i.severity.clone(),
        service: i.service.clone().unwrap_or_default(),
        opened: time(&i.opened_at),
        mtta: i.mtta_seconds.map(duration).unwrap_or_else(|| "—".into()),
        mttr: i.mttr_seconds.map(duration).unwrap_or_else(|| "—".into()),
        suspect: i
            .suspects
            .first()
            .map(|s| format!("deployment {} ({}), {}", s.deployment, s.release, s.status.replace('_', " ")))
            .unwrap_or_else(|| "—".into()),
    }
}

async fn repo_names(app: &App) -> HashMap<i64, String> {
    app.store.repos().await.unwrap_or_default().into_iter().map(|r| (r.id, r.name)).collect()
}

#[derive(askama::Template)]
#[template(path = "overview.html")]
struct Overview {
    chrome: Chrome,
    running: usize,
    queued: i64,
    failing: usize,
    open_incidents: usize,
    incidents: Vec<IncidentRow>,
    environments: Vec<EnvironmentRow>,
    runs: Vec<RunRow>,
    deployments: Vec<DeploymentRow>,
    chart: String,
    has_chart: bool,
}

pub(super) async fn overview(State(app): State<Arc<App>>, viewer: Viewer, Query(flash): Query<Flash>) -> Response {
    let repos = repo_names(&app).await;
    let recent = app.store.runs(RunFilter { limit: 50, ..Default::default() }).await.unwrap_or_default();
    let incidents: Vec<api::Incident> =
        crate::incidents::list(&app).await.unwrap_or_default().into_iter().filter(|i| i.state.is_open()).collect();
    let mut bars: Vec<(f64, bool, String)> = recent
        .iter()
        .filter(|r| r.status.is_finished())
        .filter_map(|r| {
            let seconds = seconds_between(&r.started, &r.finished)?;
            Some((seconds, r.status == RunStatus::Success, format!("run #{} {}", r.id, r.status.as_str())))
        })
        .collect();
    bars.reverse();
    let deployments =
        app.store.deployments(DeploymentFilter { limit: 10, ..Default::default() }).await.unwrap_or_default();
    let mut chrome = Chrome::new(&viewer, "Overview", "", flash.flash);
    chrome.live = true;
    page(Overview {
        chrome,
        running: recent.iter().filter(|r| r.status == RunStatus::Running).count(),
        queued: app.store.queue_depth().await.unwrap_or(0),
        failing: recent.iter().filter(|r| r.status == RunStatus::Failure).count(),
        open_incidents: incidents.len(),
        incidents: incidents.iter().map(incident_row).collect(),
        environments: environment_rows(&app).await,
        runs: run_rows(&recent[..recent.len().min(10)], &repos),
        deployments: deployment_rows(&deployments),
        chart: render::duration_bars(&bars),
        has_chart: !bars.is_empty(),
    })
}

#[derive(serde::Deserialize, Default)]
pub(super) struct RunsQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    repo: Option<String>,
    #[serde(default)]
    before: Option<i64>,
    #[serde(default)]
    flash: Option<String>,
}

#[derive(askama::Template)]
#[template(path = "runs.html")]
struct RunsPage {
    chrome: Chrome,
    runs: Vec<RunRow>,
    statuses: Vec<(String, String, bool)>,
    repos: Vec<(String, String, bool)>,
    newer: String,
    older: String,
}

const PAGE: i64 = 50;

pub(super) async fn runs(State(app): State<Arc<App>>, viewer: Viewer, Query(query): Query<RunsQuery>) -> Response {
    let repos = repo_names(&app).await;
    let status = query.status.as_deref().and_then(RunStatus::parse);
    let repo_id = query.repo.as_deref().and_then(|name| repos.iter().find(|(_, n)| *n == name).map(|(id, _)| *id));
    let filter = RunFilter { repo_id, status, before: query.before, limit: PAGE + 1, ..Default::default() };
    let mut list = app.store.runs(filter).await.unwrap_or_default();
    let more = list.len() as i64 > PAGE;
    list.truncate(PAGE as usize);
    let keep = |extra: String| {
        let mut parts = Vec::new();
        if let Some(s) = &query.status {
            parts.push(format!("status={}", super::session::urlencode(s)));
        }
        if let Some(r) = &query.repo {
            parts.push(format!("repo={}", super::session::urlencode(r)));
        }
        if !extra.is_empty() {
            parts.push(extra);
        }
        format!("/runs?{}", parts.join("&"))
    };
    let older = match (more, list.last()) {
        (true, Some(last)) => keep(format!("before={}", last.id)),
        _ => String::new(),
    };
    let newer = if query.before.is_some() { keep(String::new()) } else { String::new() };
    let statuses = std::iter::once(("".to_string(), "any".to_string(), status.is_none()))
        .chain(
            ["queued", "running", "success", "failure", "cancelled"]
                .iter()
                .map(|s| (s.to_string(), s.to_string(), query.status.as_deref() == Some(*s))),
        )
        .collect();
    let mut names: Vec<&String> = repos.values().collect();
    names.sort();
    let repo_options = std::iter::once(("".to_string(), "any".to_string(), repo_id.is_none()))
        .chain(names.into_iter().map(|n| (n.clone(), n.clone(), query.repo.as_ref() == Some(n))))
        .collect();
    page(RunsPage {
        chrome: Chrome::new(&viewer, "Runs", "runs", query.flash),
        runs: run_rows(&list, &repos),
        statuses,
        repos: repo_options,
        newer,
        older,
    })
}

pub(super) struct JobRow {
    pub(super) name: String,
    pub(super) status: String,
    pub(super) duration: String,
    pub(super) steps: Vec<(String, String, String)>,
}

#[derive(askama::Template)]
#[template(path = "run.html")]
struct RunPage {
    chrome: Chrome,
    id: i64,
    status: &'static str,
    reason: String,
    repo: String,
    workflow: String,
    event: String,
    sha: String,
    git_ref: String,
    attempt: i64,
    running: bool,
    jobs: Vec<JobRow>,
    graph: String,
    log: String,
    n_lines: usize,
    from: usize,
    to: usize,
    window: usize,
    previous: String,
    later: String,
    paged: bool,
    /// Lines follow that were not read: `n_lines` counts only those before.
    more: bool,
    next: i64,
    /// The search of the whole log, when one was asked: its text, matches (line, link, job,
    /// text as HTML) and their count.
    query: String,
    matches: Vec<(usize, String, String, String)>,
    n_matches: usize,
    /// Jobs held at an environment's gates: (job, environment, what they wait for).
    waiting: Vec<(String, String, String)>,
}

/// Lines rendered in the page; the rest is a search or a download away.
const MAX_LINES: usize = 10_000;

#[derive(serde::Deserialize, Default)]
pub(super) struct RunQuery {
    #[serde(default)]
    flash: Option<String>,
    /// The first log line shown (1 by default); a page shows `MAX_LINES` lines.
    #[serde(default)]
    from: Option<usize>,
    /// Text to find in the whole log (case-insensitive), not only the page shown.
    #[serde(default)]
    q: Option<String>,
}

/// Matches shown for a search of the whole log; the count goes on past it.
const MAX_MATCHES: usize = 1_000;

/// Every line of run `id`'s log that contains `query` (case-insensitive), as (line number, job,
/// text), the first `MAX_MATCHES` of them, and how many there are in all.
async fn search_log(app: &App, id: i64, query: &str) -> (Vec<(usize, String, String)>, usize) {
    let query = query.to_lowercase();
    let (mut found, mut total, mut n, mut after) = (Vec::new(), 0usize, 0usize, 0i64);
    loop {
        let chunks = app.store.log(id, after, 50).await.unwrap_or_default();
        let Some((last, _)) = chunks.last() else { break };
        after = *last;
        for (_, lines) in chunks {
            for line in lines {
                n += 1;
                if line.text.to_lowercase().contains(&query) {
                    total += 1;
                    if found.len() < MAX_MATCHES {
                        found.push((n, line.job, line.text));
                    }
                }
            }
        }
    }
    (found, total)
}

pub(super) async fn run(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    Path(id): Path<i64>,
    Query(query): Query<RunQuery>,
) -> Response {
    let from = query.from.unwrap_or(1).max(1);
    let flash = Flash { flash: query.flash };
    let Ok(run) = app.store.run(id).await else { return missing(&viewer, format!("There is no run {id}.")) };
    let repos = repo_names(&app).await;
    let report = run.report.clone().and_then(|r| serde_json::from_value::<api::RunReport>(r).ok());
    let jobs = report
        .iter()
        .flat_map(|r| &r.jobs)
        .map(|j| JobRow {
            name: j.name.clone(),
            status: j.status.clone(),
            duration: duration(j.duration),
            steps: j.steps.iter().map(|s| (s.name.clone(), s.status.clone(), duration(s.duration))).collect(),
        })
        .collect();
    let (mut html, mut n, mut next, mut after) = (String::new(), 0usize, 0i64, 0i64);
    let mut open_group = false;
    let mut more = false;
    loop {
        if n >= from + MAX_LINES {
            // Past the page: what follows is only counted as "more".
            more = !app.store.log(id, after, 1).await.unwrap_or_default().is_empty();
            break;
        }
        let chunks = app.store.log(id, after, 20).await.unwrap_or_default();
        let Some((last, _)) = chunks.last() else { break };
        after = *last;
        next = *last;
        for (_, lines) in chunks {
            for line in lines {
                n += 1;
                if n < from || n >= from + MAX_LINES {
                    continue;
                }
                let text = line.text.as_str();
                if let Some(title) = text.strip_prefix("::group::") {
                    if open_group {
                        html.push_str("</ol></details></li>");
                    }
                    html.push_str(&format!(
                        "<li class=\"group\"><details open><summary>{}</summary><ol>",
                        escape(title)
                    ));
                    open_group = true;
                    continue;
                }
                if text.starts_with("::endgroup::") {
                    if open_group {
                        html.push_str("</ol></details></li>");
                        open_group = false;
                    }
                    continue;
                }
                html.push_str(&format!(
                    "<li id=\"L{n}\"><a class=\"ln\" href=\"#L{n}\" aria-label=\"line {n}\">{n}</a><span class=\"job\">{}</span> {}</li>",
                    escape(&line.job),
                    ansi(text)
                ));
            }
        }
    }
    if open_group {
        html.push_str("</ol></details></li>");
    }
    let graph = job_graph(&app, &run, report.as_ref()).await;
    let query = query.q.unwrap_or_default();
    let (matches, n_matches) = if query.trim().is_empty() {
        (Vec::new(), 0)
    } else {
        let (found, total) = search_log(&app, id, &query).await;
        let matches = found
            .into_iter()
            .map(|(n, job, text)| {
                let page = (n - 1) / MAX_LINES * MAX_LINES + 1;
                (n, format!("/runs/{id}?from={page}#L{n}"), job, ansi(&text))
            })
            .collect();
        (matches, total)
    };
    let waiting = if run.status.is_finished() { Vec::new() } else { held_jobs(&app, id).await };
    // The log streams in through its own connection; the page reloads when the run ends.
    let chrome = Chrome::new(&viewer, format!("Run #{id}"), "runs", flash.flash);
    page(RunPage {
        chrome,
        id,
        status: run.status.as_str(),
        reason: run.reason.clone().unwrap_or_default(),
        repo: repos.get(&run.repo_id).cloned().unwrap_or_default(),
        workflow: run.workflow.clone(),
        event: run.event.clone(),
        sha: run.sha.clone(),
        git_ref: run.git_ref.clone(),
        attempt: run.run_attempt,
        running: !run.status.is_finished(),
        jobs,
        graph,
        log: html,
        n_lines: n,
        from,
        to: n.min(from + MAX_LINES - 1),
        window: MAX_LINES,
        previous: if from > 1 {
            format!("/runs/{id}?from={}", from.saturating_sub(MAX_LINES).max(1))
        } else {
            String::new()
        },
        later: if n >= from + MAX_LINES || more {
            format!("/runs/{id}?from={}", from + MAX_LINES)
        } else {
            String::new()
        },
        paged: n >= MAX_LINES || from > 1 || more,
        more,
        next,
        query,
        matches,
        n_matches,
        waiting,
    })
}

/// The jobs of run `id` held at an environment's gates and not approved yet.
async fn held_jobs(app: &App, id: i64) -> Vec<(String, String, String)> {
    let events = app.store.events_about(&format!("run/{id}")).await.unwrap_or_default();
    let approved =
        |job: &serde_json::Value| events.iter().any(|e| e.kind == "job.approved" && &e.payload["job"] == job);
    events
        .iter()
        .filter(|e| e.kind == "job.waiting" && !approved(&e.payload["job"]))
        .map(|e| {
            let text = |key: &str| e.payload[key].as_str().unwrap_or_default().to_string();
            (text("job"), text("environment"), text("reason"))
        })
        .collect()
}

/// The run's workflow at its commit, drawn from `needs`, each job with the status it reached.
async fn job_graph(app: &App, run: &store::Run, report: Option<&api::RunReport>) -> String {
    let Ok(repo) = app.store.repo_by_id(run.repo_id).await else { return String::new() };
    let Ok(files) = crate::repos::workflows_at(app, &repo, &run.sha).await else { return String::new() };
    let Some((_, source)) = files.iter().find(|(path, _)| *path == run.workflow) else { return String::new() };
    let Some(workflow) = spec::workflow::parse(source).0 else { return String::new() };
    let status = |id: &str| -> String {
        let legs: Vec<&str> =
            report.iter().flat_map(|r| &r.jobs).filter(|j| j.id == id).map(|j| j.status.as_str()).collect();
        let selected = run.jobs.as_ref().is_none_or(|only| only.iter().any(|j| j == id));
        match () {
            _ if legs.contains(&"failure") => "failure",
            _ if legs.contains(&"cancelled") => "cancelled",
            _ if !legs.is_empty() && legs.iter().all(|s| *s == "skipped") => "skipped",
            _ if !legs.is_empty() => "success",
            _ if !selected => "skipped",
            _ if run.status.is_finished() => "skipped",
            _ => run.status.as_str(),
        }
        .to_string()
    };
    let jobs: Vec<(String, Vec<String>, String)> = workflow
        .jobs
        .iter()
        .map(|j| (j.id.clone(), j.needs.iter().map(|(n, _)| n.clone()).collect(), status(&j.id)))
        .collect();
    render::job_graph(&jobs)
}
