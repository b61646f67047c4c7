//! Incidents: the responder follows the event log (every second, and at once after a person's
//! command), folds it into the [`book::Book`], records what the book decides (an incident opened
//! by a paging alert or a production rollback, alerts gathered, a resolution when the suspect is
//! rolled back or the alerts end), and writes a postmortem draft when an incident is resolved.
//! The timeline of an incident is read back from the same log, so it holds by construction every
//! alert, probe move, deployment and note of the affected service.

pub mod book;
pub mod oncall;
pub mod postmortem;

use std::sync::Arc;
use std::time::Duration;

use api::{Incident, TimelineEntry};
use serde_json::json;

use crate::App;
use book::{Book, Decision, LOOK_BACK_MS, Opening};

/// The incident book behind one lock: decisions and their recording never interleave.
#[derive(Debug, Default)]
pub struct Desk {
    pub(crate) book: tokio::sync::Mutex<Book>,
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
}

/// Why a responder's command was refused.
#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error("no incident has the id {0}")]
    NotFound(i64),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("incident {0} has no action item {1}")]
    NoActionItem(i64, i64),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// How far back, at start, an event without its reaction (the server died in between) is still
/// acted on.
const CATCH_UP_MS: i64 = 10 * 60_000;

/// Reads the whole log into the book without acting on it: what it called for was recorded then
/// (each decision names its `cause`). Then the events of the last ten minutes that came after the
/// last answered one are acted on — a crash between an event and its reaction loses nothing
/// recent, and an old log does not open incidents for old alerts. Runs before the API serves.
pub async fn replay(app: &Arc<App>) -> Result<(), store::StoreError> {
    catch_up(app, false).await?;
    let mut book = app.incidents.book.lock().await;
    let since = jiff::Timestamp::now().as_millisecond() - CATCH_UP_MS;
    let mut after = book.reacted_through;
    let mut decisions = Vec::new();
    loop {
        let page = app.store.events(after, 1000).await?;
        let Some(last) = page.last().map(|e| e.seq) else { break };
        for event in page.iter().filter(|e| !e.kind.starts_with("incident.")) {
            let recent = event.time.parse::<jiff::Timestamp>().is_ok_and(|t| t.as_millisecond() >= since);
            if recent {
                decisions.extend(book.apply(event, true));
            }
        }
        after = last;
    }
    for decision in decisions {
        tracing::warn!("acting on {} after a restart: {}", decision.1, decision.0);
        tell(&decision);
        record(app, decision).await;
    }
    Ok(())
}

/// Follows the log, every second.
pub async fn run_forever(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if let Err(error) = catch_up(&app, true).await {
            tracing::error!("cannot follow the event log for incidents: {error}");
        }
        oncall::escalate(&app).await;
    }
}

/// Applies the events after the book's cursor; records and carries out what they call for.
async fn catch_up(app: &Arc<App>, react: bool) -> Result<(), store::StoreError> {
    let mut book = app.incidents.book.lock().await;
    let mut resolved = Vec::new();
    loop {
        let page = app.store.events(book.cursor, 1000).await?;
        if page.is_empty() {
            break;
        }
        for event in &page {
            for decision in book.apply(event, react) {
                if decision.0 == "incident.resolved" {
                    resolved.extend(decision.2["id"].as_i64());
                }
                tell(&decision);
                record(app, decision).await;
            }
        }
    }
    drop(book);
    for id in resolved {
        if let Err(error) = draft_postmortem(app, id).await {
            tracing::error!("cannot write the postmortem draft of incident {id}: {error}");
        }
    }
    Ok(())
}

fn tell(decision: &Decision) {
    let (kind, subject, p) = decision;
    match kind.as_str() {
        "incident.opened" => {
            let suspect = p["suspects"][0]["deployment"]
                .as_i64()
                .map(|d| format!("; suspect: deployment {d} ({})", p["suspects"][0]["release"].as_str().unwrap_or("")))
                .unwrap_or_default();
            tracing::warn!("{subject} opened: {}{suspect}", p["title"].as_str().unwrap_or(""));
        }
        "incident.resolved" => tracing::warn!("{subject} resolved: {}", p["how"].as_str().unwrap_or("")),
        _ => {}
    }
}

async fn record(app: &App, (kind, subject, payload): Decision) {
    let by = payload["by"].as_str().unwrap_or("tandem").to_string();
    if let Err(error) = app.store.record_event(&kind, &subject, &by, payload).await {
        tracing::error!("cannot record {kind} of {subject}: {error}");
    }
}

/// Every incident, newest first.
pub async fn list(app: &Arc<App>) -> Result<Vec<Incident>, IncidentError> {
    catch_up(app, true).await?;
    let book = app.incidents.book.lock().await;
    Ok(book.incidents.values().rev().cloned().collect())
}

pub async fn get(app: &Arc<App>, id: i64) -> Result<Incident, IncidentError> {
    catch_up(app, true).await?;
    let book = app.incidents.book.lock().await;
    book.incidents.get(&id).cloned().ok_or(IncidentError::NotFound(id))
}

/// Opens an incident by hand.
pub async fn open(app: &Arc<App>, request: api::OpenIncident, by: &str) -> Result<Incident, IncidentError> {
    catch_up(app, true).await?;
    let mut book = app.incidents.book.lock().await;
    let opening = Opening {
        title: request.title,
        severity: request.severity,
        service: request.service,
        environment: request.environment,
        source: "manual",
        commander: request.commander,
        by: by.to_string(),
    };
    let decision = book.open(opening, now_ms());
    let id = decision.2["id"].as_i64().unwrap_or_default();
    tell(&decision);
    app.store.record_event(&decision.0, &decision.1, by, decision.2).await?;
    Ok(book.incidents[&id].clone())
}

/// What a responder can say of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Acknowledge,
    Resolve,
    Note,
    Commander,
    PostmortemDone,
}

/// Acknowledges, resolves, notes, names a commander or closes the postmortem.
pub async fn command(
    app: &Arc<App>,
    id: i64,
    command: Command,
    text: Option<String>,
    by: &str,
) -> Result<Incident, IncidentError> {
    catch_up(app, true).await?;
    let mut book = app.incidents.book.lock().await;
    let incident = book.incidents.get(&id).cloned().ok_or(IncidentError::NotFound(id))?;
    let at = rfc3339(now_ms());
    let (kind, payload) = match command {
        Command::Acknowledge => {
            if !incident.state.is_open() {
                return Err(IncidentError::Conflict(format!("incident {id} is {}", incident.state.as_str())));
            }
            ("incident.acknowledged", json!({"id": id, "by": by, "at": at, "text": text}))
        }
        Command::Resolve => {
            if !incident.state.is_open() {
                return Err(IncidentError::Conflict(format!("incident {id} is already {}", incident.state.as_str())));
            }
            let how = text.unwrap_or_else(|| format!("resolved by {by}"));
            ("incident.resolved", json!({"id": id, "by": by, "at": at, "how": how}))
        }
        Command::Note => {
            let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
                return Err(IncidentError::Invalid("a note needs text".into()));
            };
            ("incident.note", json!({"id": id, "by": by, "at": at, "text": text}))
        }
        Command::Commander => {
            let name = text.unwrap_or_else(|| by.to_string());
            ("incident.commander", json!({"id": id, "by": by, "at": at, "name": name}))
        }
        Command::PostmortemDone => {
            if incident.state != api::IncidentState::Resolved {
                return Err(IncidentError::Conflict(format!(
                    "incident {id} is {}: only a resolved incident's postmortem can be done",
                    incident.state.as_str()
                )));
            }
            if let Some(open) = incident.action_items.iter().find(|i| !i.done) {
                return Err(IncidentError::Conflict(format!(
                    "action item {} (\"{}\", {}) is not done; finish it or close it first",
                    open.number, open.title, open.owner
                )));
            }
            ("incident.postmortem_done", json!({"id": id, "by": by, "at": at}))
        }
    };
    let decision = book.decide(kind, id, payload);
    app.store.record_event(&decision.0, &decision.1, by, decision.2).await?;
    let incident = book.incidents[&id].clone();
    drop(book);
    if command == Command::Resolve {
        draft_postmortem(app, id).await?;
    }
    Ok(incident)
}

/// Adds an action item, or (with `done`) marks item `number` done.
pub async fn action_item(
    app: &Arc<App>,
    id: i64,
    item: Result<api::NewActionItem, i64>,
    by: &str,
) -> Result<Incident, IncidentError> {
    catch_up(app, true).await?;
    let mut book = app.incidents.book.lock().await;
    let incident = book.incidents.get(&id).cloned().ok_or(IncidentError::NotFound(id))?;
    let item = match item {
        Ok(new) => {
            if let Some(due) = &new.due
                && due.parse::<jiff::civil::Date>().is_err()
            {
                return Err(IncidentError::Invalid(format!("`{due}` is not a date (YYYY-MM-DD)")));
            }
            api::ActionItem {
                number: incident.action_items.len() as i64 + 1,
                title: new.title,
                owner: new.owner,
                due: new.due,
                done: false,
            }
        }
        Err(number) => {
            let Some(item) = incident.action_items.iter().find(|i| i.number == number) else {
                return Err(IncidentError::NoActionItem(id, number));
            };
            api::ActionItem { done: true, ..item.clone() }
        }
    };
    let payload = json!({"id": id, "by": by, "at": rfc3339(now_ms()), "item": item});
    let decision = book.decide("incident.action_item", id, payload);
    app.store.record_event(&decision.0, &decision.1, by, decision.2).await?;
    Ok(book.incidents[&id].clone())
}

/// The incident's timeline: its own events and, from its look-back window to a little after its
/// end, every alert, probe move, deployment and notification about its service.
pub async fn timeline(app: &Arc<App>, incident: &Incident) -> Result<Vec<TimelineEntry>, IncidentError> {
    let opened = incident.opened_at.parse::<jiff::Timestamp>().map(|t| t.as_millisecond()).unwrap_or(0);
    let from = opened - LOOK_BACK_MS.min(30 * 60_000);
    let until = incident
        .resolved_at
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map_or(i64::MAX, |t| t.as_millisecond() + 10 * 60_000);
    let mut after = app.incidents.book.lock().await.seq_before(from);
    let subject = format!("incident/{}", incident.id);
    let fingerprints: Vec<&str> = incident.alerts.iter().map(|a| a.fingerprint.as_str()).collect();
    let mut out = Vec::new();
    'read: loop {
        let page = app.store.events(after, 1000).await?;
        let Some(last) = page.last().map(|e| e.seq) else { break };
        for event in page {
            let at = event.time.parse::<jiff::Timestamp>().map(|t| t.as_millisecond()).unwrap_or(0);
            if at > until {
                break 'read;
            }
            if at < from && event.subject != subject {
                continue;
            }
            let about = event.subject == subject || postmortem::concerns(&event, incident, &fingerprints);
            if about && let Some(text) = postmortem::describe(&event) {
                out.push(TimelineEntry {
                    seq: event.seq,
                    time: event.time,
                    kind: event.kind,
                    actor: event.actor,
                    text,
                });
            }
        }
        after = last;
    }
    Ok(out)
}

/// `sha subject` of the commits the first suspect shipped since the release before it.
pub async fn commits(app: &Arc<App>, incident: &Incident) -> Vec<String> {
    let Some(suspect) = incident.suspects.first() else { return Vec::new() };
    let Ok(deployment) = app.store.deployment(suspect.deployment).await else { return Vec::new() };
    let Ok(repo) = app.store.repo_by_id(deployment.repo_id).await else { return Vec::new() };
    let filter = store::DeploymentFilter {
        service: Some(deployment.service.clone()),
        environment: Some(deployment.environment.clone()),
        active_only: false,
        limit: 200,
    };
    let before = app
        .store
        .deployments(filter)
        .await
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.id < deployment.id && d.status == store::DeploymentStatus::Promoted && d.sha != deployment.sha);
    let range = match &before {
        Some(before) => format!("{}..{}", before.sha, deployment.sha),
        None => deployment.sha.clone(),
    };
    let mirror = crate::repos::mirror_path(app, &repo);
    let args = ["log", "--format=%h %s", "-n", "50", range.as_str()];
    crate::repos::git(&mirror, &args).await.map(|log| log.lines().map(str::to_string).collect()).unwrap_or_default()
}

/// Writes (again) the postmortem draft of an incident from what the log says now.
pub async fn draft_postmortem(app: &Arc<App>, id: i64) -> Result<String, IncidentError> {
    let incident = app.incidents.book.lock().await.incidents.get(&id).cloned().ok_or(IncidentError::NotFound(id))?;
    let timeline = timeline(app, &incident).await?;
    let commits = commits(app, &incident).await;
    let budget = postmortem::budget_consumed(app, &incident);
    let markdown = postmortem::draft(&incident, &timeline, &commits, &budget);
    let payload = json!({"id": id, "by": "tandem", "at": rfc3339(now_ms()), "markdown": markdown});
    let decision = app.incidents.book.lock().await.decide("incident.postmortem_drafted", id, payload);
    app.store.record_event(&decision.0, &decision.1, "tandem", decision.2).await?;
    tracing::warn!("incident/{id}: postmortem draft written ({} lines)", markdown.lines().count());
    Ok(markdown)
}

/// The postmortem draft, written from what the log says now (action items included).
pub async fn postmortem(app: &Arc<App>, id: i64) -> Result<api::Postmortem, IncidentError> {
    let incident = get(app, id).await?;
    let timeline = timeline(app, &incident).await?;
    let commits = commits(app, &incident).await;
    let markdown = postmortem::draft(&incident, &timeline, &commits, &postmortem::budget_consumed(app, &incident));
    Ok(api::Postmortem { incident: id, markdown, done: incident.state == api::IncidentState::PostmortemDone })
}

/// Every incident, for DORA's time to restore.
pub async fn all(app: &Arc<App>) -> Vec<Incident> {
    list(app).await.unwrap_or_default()
}
