//! Response pages: incidents (list; one with its timeline, suspect commits, acknowledge, resolve
//! and notes), the postmortem draft, and the audit log with filters and the chain's verification.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::pages::{Flash, IncidentRow, incident_row, missing};
use super::render::{self, time};
use super::session::Viewer;
use super::{Chrome, page};
use crate::App;

#[derive(askama::Template)]
#[template(path = "incidents.html")]
struct IncidentsPage {
    chrome: Chrome,
    incidents: Vec<IncidentRow>,
}

pub(super) async fn incidents(State(app): State<Arc<App>>, viewer: Viewer, Query(flash): Query<Flash>) -> Response {
    let list = crate::incidents::list(&app).await.unwrap_or_default();
    let mut chrome = Chrome::new(&viewer, "Incidents", "incidents", flash.flash);
    chrome.live = list.iter().any(|i| i.state.is_open());
    page(IncidentsPage { chrome, incidents: list.iter().map(incident_row).collect() })
}

#[derive(askama::Template)]
#[template(path = "incident.html")]
struct IncidentPage {
    chrome: Chrome,
    i: IncidentRow,
    open: bool,
    resolution: String,
    timeline: Vec<(String, String, String)>,
    commits: Vec<String>,
}

pub(super) async fn incident(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    Path(id): Path<i64>,
    Query(flash): Query<Flash>,
) -> Response {
    let Ok(incident) = crate::incidents::get(&app, id).await else {
        return missing(&viewer, format!("There is no incident {id}."));
    };
    let timeline = crate::incidents::timeline(&app, &incident).await.unwrap_or_default();
    let commits = crate::incidents::commits(&app, &incident).await;
    let mut chrome = Chrome::new(&viewer, format!("Incident {id}: {}", incident.title), "incidents", flash.flash);
    chrome.live = incident.state.is_open();
    page(IncidentPage {
        chrome,
        open: incident.state.is_open(),
        resolution: incident.resolution.clone().unwrap_or_else(|| "—".into()),
        timeline: timeline.into_iter().map(|e| (time(&e.time), e.text, e.actor)).collect(),
        commits,
        i: incident_row(&incident),
    })
}

pub(super) async fn postmortem(State(app): State<Arc<App>>, viewer: Viewer, Path(id): Path<i64>) -> Response {
    match crate::incidents::postmortem(&app, id).await {
        Ok(p) => ([(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], p.markdown).into_response(),
        Err(_) => missing(&viewer, format!("There is no incident {id}.")),
    }
}

#[derive(serde::Deserialize, Default)]
pub(super) struct AuditQuery {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    before: Option<i64>,
}

#[derive(askama::Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    chain: String,
    chain_class: &'static str,
    kind: String,
    subject: String,
    actor: String,
    events: Vec<(i64, String, String, String, String, String)>,
    older: String,
}

pub(super) async fn audit(State(app): State<Arc<App>>, viewer: Viewer, Query(query): Query<AuditQuery>) -> Response {
    let mut n_events = 0;
    let (chain, chain_class) = match app.store.verify_chain().await {
        Ok(report) => {
            n_events = report.n_events;
            match report.first_broken {
                None => {
                    (format!("✓ The event log is intact: {} events, every link verified.", report.n_events), "success")
                }
                Some((seq, why)) => (format!("✗ The event log is broken at event {seq}: {why}."), "failure"),
            }
        }
        Err(error) => (format!("The chain could not be verified: {error}"), "failure"),
    };
    // Newest first: read back from the end (or from `before`) until a page is full.
    let last = query.before.unwrap_or(n_events + 1);
    let matches = |e: &store::Event| {
        e.kind.starts_with(&query.kind)
            && e.subject.starts_with(&query.subject)
            && (query.actor.is_empty() || e.actor == query.actor)
    };
    let mut rows = Vec::new();
    let mut end = last;
    while rows.len() < 100 && end > 1 {
        let from = (end - 1000).max(0);
        let page_events = app.store.events(from, end - from - 1).await.unwrap_or_default();
        if page_events.is_empty() {
            break;
        }
        for e in page_events.iter().rev().filter(|e| matches(e)) {
            if rows.len() < 100 {
                let payload = e.payload.to_string();
                let payload = if payload.len() > 300 {
                    format!("{}…", &payload[..payload.floor_char_boundary(300)])
                } else {
                    payload
                };
                rows.push((e.seq, time(&e.time), e.kind.clone(), e.subject.clone(), e.actor.clone(), payload));
            }
        }
        end = from + 1;
    }
    let older = match rows.last() {
        Some(row) if rows.len() == 100 => format!(
            "/audit?kind={}&subject={}&actor={}&before={}",
            super::session::urlencode(&query.kind),
            super::session::urlencode(&query.subject),
            super::session::urlencode(&query.actor),
            row.0
        ),
        _ => String::new(),
    };
    page(AuditPage {
        chrome: Chrome::new(&viewer, "Audit log", "audit", None),
        chain,
        chain_class,
        kind: query.kind,
        subject: query.subject,
        actor: query.actor,
        events: rows,
        older,
    })
}

pub(super) struct SloRow {
    key: String,
    sli: String,
    objective: String,
    window: String,
    now: String,
    budget: String,
    burn: String,
    alerts: String,
}

#[derive(askama::Template)]
#[template(path = "monitoring.html")]
struct MonitoringPage {
    chrome: Chrome,
    slos: Vec<SloRow>,
    probes: Vec<(String, String, String, String, String)>,
    oncall: Vec<(String, String, String, String)>,
    dora: Vec<(String, String, String, String)>,
}

/// SLOs with their budget and burn, probes, who is on call, and the last 30 days' DORA figures.
pub(super) async fn monitoring(State(app): State<Arc<App>>, viewer: Viewer, Query(flash): Query<Flash>) -> Response {
    let percent = |v: f64| format!("{:.2}%", v * 100.0);
    let mut slos: Vec<SloRow> = super::super::monitoring::slo_views(&app)
        .into_iter()
        .map(|s| {
            let figures = s.figures.as_ref();
            let burn = |w: &str| {
                figures
                    .and_then(|f| f.burn.iter().find(|b| b.window == w))
                    .and_then(|b| b.rate)
                    .map_or("—".to_string(), |r| format!("{r:.1}×"))
            };
            let budget = figures.and_then(|f| f.budget_remaining).map_or("—".to_string(), |b| {
                let class = if b < 0.0 {
                    "failure"
                } else if b < 0.25 {
                    "running"
                } else {
                    "success"
                };
                format!("<span class=\"badge {class}\">{:.1}%</span>", b * 100.0)
            });
            let firing: Vec<String> = s
                .alerts
                .iter()
                .filter(|a| a.firing_since.is_some())
                .map(|a| {
                    if a.long_window == a.short_window {
                        format!("{} {} ({})", a.severity, a.name, a.long_window)
                    } else {
                        format!("{} {} ({} / {})", a.severity, a.name, a.long_window, a.short_window)
                    }
                })
                .collect();
            SloRow {
                key: s.key.clone(),
                sli: s.sli.clone(),
                objective: percent(s.objective),
                window: s.window.clone(),
                now: figures.and_then(|f| f.sli).map_or("no data".to_string(), percent),
                budget,
                burn: format!("{} / {} / {}", burn("5m"), burn("1h"), burn("6h")),
                alerts: if firing.is_empty() { "none firing".into() } else { firing.join("; ") },
            }
        })
        .collect();
    slos.sort_by(|a, b| a.key.cmp(&b.key));
    let probes = super::super::monitoring::probe_views(&app)
        .into_iter()
        .map(|p| {
            let last = p.last.as_ref().map_or("—".to_string(), |l| {
                let outcome = if l.ok { "ok".to_string() } else { l.error.clone().unwrap_or_else(|| "failed".into()) };
                let certificate = l
                    .certificate_expires
                    .as_ref()
                    .map(|t| format!("; certificate valid until {}", t.chars().take(10).collect::<String>()))
                    .unwrap_or_default();
                format!("{} — {outcome} in {:.0} ms{certificate}", time(&l.at), l.seconds * 1000.0)
            });
            let state = match p.state.as_str() {
                "up" => "success",
                "failing" => "failure",
                _ => "neutral",
            };
            (p.key, p.target, state.to_string(), last, format!("{} ({})", p.checks, p.failures))
        })
        .collect();
    let oncall = match app.oncall.config() {
        Some(config) => {
            let overrides = app.incidents.book.lock().await.overrides.clone();
            crate::incidents::oncall::now_and_next(&config, &overrides, jiff::Timestamp::now().as_millisecond())
                .into_iter()
                .map(|o| {
                    let until = o.until.as_deref().map(time).unwrap_or_else(|| "—".into());
                    (o.schedule, o.user.unwrap_or_else(|| "nobody".into()), until, o.next.unwrap_or_else(|| "—".into()))
                })
                .collect()
        }
        None => Vec::new(),
    };
    let dora = match crate::dora::report(&app, api::DoraQuery::default()).await {
        Ok(d) => [
            ("Deployment frequency", &d.deployment_frequency),
            ("Lead time for changes", &d.lead_time_for_changes),
            ("Change failure rate", &d.change_failure_rate),
            ("Time to restore", &d.time_to_restore),
            ("Rework rate", &d.rework_rate),
        ]
        .into_iter()
        .map(|(name, m)| {
            let value = match (m.value, m.unit.as_str()) {
                (None, _) => "—".to_string(),
                (Some(v), "ratio") => format!("{:.1}%", v * 100.0),
                (Some(v), "hours") if v < 1.0 => format!("{:.0} min", v * 60.0),
                (Some(v), "hours") => format!("{v:.1} h"),
                (Some(v), _) => format!("{v:.2} a day"),
            };
            (name.to_string(), value, m.band.clone().unwrap_or_default(), m.basis.clone())
        })
        .collect(),
        Err(error) => vec![("DORA".into(), "—".into(), String::new(), error.to_string())],
    };
    let mut chrome = Chrome::new(&viewer, "Monitoring", "monitoring", flash.flash);
    chrome.live = true;
    page(MonitoringPage { chrome, slos, probes, oncall, dora })
}

#[derive(askama::Template)]
#[template(path = "service.html")]
struct ServicePage {
    chrome: Chrome,
    name: String,
    ranges: Vec<(&'static str, bool)>,
    charts: Vec<(String, String)>,
    marks: Vec<String>,
}

#[derive(serde::Deserialize, Default)]
pub(super) struct RangeQuery {
    #[serde(default)]
    range: Option<String>,
}

/// A service at a glance: its key series over a range, every chart with the deployments on it.
pub(super) async fn service(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    Path(name): Path<String>,
    Query(query): Query<RangeQuery>,
) -> Response {
    let range =
        query.range.filter(|r| ["15m", "1h", "6h", "1d", "7d"].contains(&r.as_str())).unwrap_or_else(|| "1h".into());
    let answer = super::super::monitoring::service_overview(
        State(app.clone()),
        super::super::Caller(viewer.actor.clone()),
        Path(name.clone()),
        super::super::Params(super::super::monitoring::OverviewQuery { range: Some(range.clone()) }),
    )
    .await;
    let Ok(axum::Json(overview)) = answer else { return missing(&viewer, format!("No overview of {name}.")) };
    let marks: Vec<(f64, bool, String)> = overview
        .marks
        .iter()
        .map(|m| {
            let promoted = m.status == store::DeploymentStatus::Promoted;
            (
                m.at,
                promoted,
                format!(
                    "deployment {} of {} to {} ({}, {})",
                    m.deployment,
                    m.release,
                    m.environment,
                    m.kind.as_str(),
                    m.status.as_str()
                ),
            )
        })
        .collect();
    let charts = overview
        .series
        .iter()
        .filter(|s| !s.points.is_empty())
        .map(|s| (s.name.clone(), render::timeline(&s.name, &s.points, &marks, overview.start, overview.end)))
        .collect();
    page(ServicePage {
        chrome: Chrome::new(&viewer, format!("Service {name}"), "monitoring", None),
        ranges: ["15m", "1h", "6h", "1d", "7d"].iter().map(|r| (*r, *r == range)).collect(),
        charts,
        marks: marks.into_iter().map(|m| m.2).collect(),
        name,
    })
}
