//! On-call: who is on call (schedules, with overrides recorded as events), and escalation — an
//! open, unacknowledged incident pages its policy's first level, then the next after that level's
//! `after`, through every level and again `repeat` times, until someone acknowledges (by CLI, API
//! or the signed link in the page). Each page is an event (`incident.paged`), so a restart
//! resumes where the escalation stood and the timeline shows who was paged, how and when.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use spec::oncall::{OnCall, Target};

use super::book::{Book, Override};
use crate::App;

/// The on-call file as loaded.
#[derive(Debug, Default)]
pub struct Roster {
    config: Mutex<Option<OnCall>>,
}

impl Roster {
    pub fn config(&self) -> Option<OnCall> {
        self.config.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn configure(&self, config: Option<OnCall>) {
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = config;
    }
}

/// Reads `--oncall FILE` (an invalid file is reported and pages nobody).
pub fn load(app: &App) {
    let Some(path) = &app.config.oncall else { return };
    match std::fs::read_to_string(path) {
        Ok(text) => match spec::oncall::parse(&text) {
            (Some(config), _) => app.oncall.configure(Some(config)),
            (None, diagnostics) => {
                let first =
                    diagnostics.iter().find(|d| d.is_error()).map(|d| d.render(&path.display().to_string(), &text));
                tracing::error!("{} is not valid; nobody is paged:\n{}", path.display(), first.unwrap_or_default());
            }
        },
        Err(error) => tracing::error!("cannot read {}: {error}", path.display()),
    }
}

/// The signature of an acknowledgement link for one incident and person.
pub fn ack_signature(app: &App, incident: i64, user: &str) -> String {
    git::webhook::sign(crate::secret_key(app), format!("ack:{incident}:{user}").as_bytes())[..32].to_string()
}

pub fn ack_url(app: &App, incident: i64, user: &str) -> String {
    format!("http://{}/ack/{incident}?user={user}&key={}", app.config.listen, ack_signature(app, incident, user))
}

/// Whether a link's key was signed by this server for that incident and person.
pub fn ack_valid(app: &App, incident: i64, user: &str, key: &str) -> bool {
    git::webhook::constant_time_eq(ack_signature(app, incident, user).as_bytes(), key.as_bytes())
}

/// Who a schedule puts on call at the instant: the newest override covering it, else its layers.
pub fn who(config: &OnCall, overrides: &[Override], schedule: &str, ms: i64) -> Option<String> {
    overrides
        .iter()
        .rev()
        .find(|o| o.schedule == schedule && o.from_ms <= ms && ms < o.until_ms)
        .map(|o| o.user.clone())
        .or_else(|| config.schedules.get(schedule)?.on_call(ms).map(str::to_string))
}

/// Each schedule: who is on call now, until when, and who is next.
pub fn now_and_next(config: &OnCall, overrides: &[Override], now: i64) -> Vec<api::OnCallNow> {
    config
        .schedules
        .keys()
        .map(|name| {
            let current = who(config, overrides, name, now);
            // The next change, minute by minute over the coming eight days.
            let change = (1..=8 * 1440)
                .map(|m| now - now.rem_euclid(60_000) + m * 60_000)
                .find(|t| who(config, overrides, name, *t) != current);
            let rfc3339 = |ms: i64| jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default();
            api::OnCallNow {
                schedule: name.clone(),
                user: current,
                until: change.map(rfc3339),
                next: change.and_then(|t| who(config, overrides, name, t)),
                overrides: overrides
                    .iter()
                    .filter(|o| &o.schedule == name && o.until_ms > now)
                    .map(|o| api::OnCallOverride {
                        user: o.user.clone(),
                        from: rfc3339(o.from_ms),
                        until: rfc3339(o.until_ms),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The pages due now: (incident, level, round, people) for every open, unacknowledged incident
/// whose policy's next step has come.
pub fn due(book: &Book, config: &OnCall, now: i64) -> Vec<(api::Incident, usize, u32, Vec<String>)> {
    let mut out = Vec::new();
    for incident in book.incidents.values().filter(|i| i.state == api::IncidentState::Triggered) {
        let policy_name =
            incident.service.as_ref().and_then(|s| config.services.get(s)).or(config.default_policy.as_ref());
        let Some(policy) = policy_name.and_then(|p| config.policies.get(p)) else { continue };
        let (level, round) = match book.last_page(incident.id) {
            None => (0, 0),
            Some((level, round, at)) => {
                if now < at + policy.levels[level].after_ms as i64 {
                    continue;
                }
                match (level + 1 < policy.levels.len(), round < policy.repeat) {
                    (true, _) => (level + 1, round),
                    (false, true) => (0, round + 1),
                    (false, false) => continue,
                }
            }
        };
        let mut people: Vec<String> = policy.levels[level]
            .notify
            .iter()
            .filter_map(|target| match target {
                Target::User(user) => Some(user.clone()),
                Target::Schedule(schedule) => who(config, &book.overrides, schedule, now),
            })
            .collect();
        people.dedup();
        out.push((incident.clone(), level, round, people));
    }
    out
}

/// Pages whoever is due, every second after the log is caught up.
pub async fn escalate(app: &Arc<App>) {
    let Some(config) = app.oncall.config() else { return };
    let now = jiff::Timestamp::now().as_millisecond();
    let due = {
        let book = app.incidents.book.lock().await;
        due(&book, &config, now)
    };
    for (incident, level, round, people) in due {
        if people.is_empty() {
            let payload = json!({"id": incident.id, "level": level + 1, "round": round, "user": null, "to": null,
                "error": "nobody is on call for this level", "at": jiff::Timestamp::now().to_string()});
            record(app, incident.id, payload).await;
        }
        for user in people {
            let contact = config.users.get(&user).cloned().unwrap_or_default();
            let ack = ack_url(app, incident.id, &user);
            let outcome = page(app, &contact, &incident, &user, level, &ack).await;
            let (to, error) = match outcome {
                Ok(to) => (to, None),
                Err((to, error)) => (to, Some(error)),
            };
            let payload = json!({"id": incident.id, "level": level + 1, "round": round, "user": user, "to": to,
                "error": error, "at": jiff::Timestamp::now().to_string()});
            record(app, incident.id, payload).await;
        }
    }
}

async fn record(app: &App, id: i64, payload: serde_json::Value) {
    let decision = app.incidents.book.lock().await.decide("incident.paged", id, payload);
    if let Err(error) = app.store.record_event(&decision.0, &decision.1, "tandem", decision.2).await {
        tracing::error!("cannot record a page of incident {id}: {error}");
    }
}

/// Tells one person, by the first way they can be reached that works: (where, or why not).
async fn page(
    app: &App,
    contact: &spec::oncall::Contact,
    incident: &api::Incident,
    user: &str,
    level: usize,
    ack: &str,
) -> Result<String, (String, String)> {
    let suspect = incident
        .suspects
        .first()
        .map(|s| format!("suspect: deployment {} ({}) to {}", s.deployment, s.release, s.environment))
        .unwrap_or_else(|| "no suspect deployment".into());
    let title = format!("[Tandem] incident {} ({}): {}", incident.id, incident.severity, incident.title);
    let text = format!("{title}\n{suspect}\nAcknowledge: {ack}\nOr: tandem incident ack {}\n", incident.id);
    let client = reqwest::Client::new();
    let mut last = (String::from("nowhere"), "no way to reach them".to_string());
    if let Some(url) = &contact.webhook {
        let body = json!({"incident": incident, "user": user, "level": level + 1, "ack_url": ack, "text": text});
        match client.post(url).timeout(Duration::from_secs(10)).json(&body).send().await {
            Ok(r) if r.status().is_success() => return Ok(url.clone()),
            Ok(r) => last = (url.clone(), format!("answered {}", r.status())),
            Err(e) => last = (url.clone(), e.to_string()),
        }
    }
    if let Some(url) = &contact.slack {
        let body = json!({"text": text});
        let to = "slack".to_string();
        match client.post(url).timeout(Duration::from_secs(10)).json(&body).send().await {
            Ok(r) if r.status().is_success() => return Ok(to),
            Ok(r) => last = (to, format!("answered {}", r.status())),
            Err(e) => last = (to, e.to_string()),
        }
    }
    if let Some(address) = &contact.email {
        let to = format!("mailto:{address}");
        match crate::alerting::receivers::mail(app, address, &title, &text).await {
            Ok(()) => return Ok(to),
            Err(error) => last = (to, error),
        }
    }
    Err(last)
}
