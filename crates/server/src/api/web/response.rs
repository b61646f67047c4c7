//! Response pages: incidents (list; one with its timeline, suspect commits, acknowledge, resolve
//! and notes), the postmortem draft, and the audit log with filters and the chain's verification.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::pages::{Flash, IncidentRow, incident_row, missing};
use super::render::time;
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
