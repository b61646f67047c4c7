//! The incident book: incidents folded from the event log, and — for each new event — what the
//! responder does about it (open an incident for a paging alert or a production rollback, gather
//! an alert into the incident of its service, resolve the incident whose suspect was rolled back
//! or whose alerts all ended). Pure: events in, incident events out; the caller records them.
//!
//! Every incident event states a whole fact (`at` included), so applying it again — eagerly when
//! it is decided, then once more when the log hands it back, or at every start — changes nothing.

use std::collections::{BTreeMap, HashMap};

use api::{ActionItem, Incident, IncidentAlert, IncidentState, Suspect};
use serde_json::{Value, json};

/// Deployments that started this long before an incident opened are its suspects.
pub const LOOK_BACK_MS: i64 = 2 * 3_600_000;

/// Alerts with these severities page: they open incidents.
pub const PAGING: [&str; 2] = ["page", "critical"];

/// An incident event to record: (kind, subject, payload). The book has applied it already.
pub type Decision = (String, String, Value);

#[derive(Debug, Default)]
pub struct Book {
    pub incidents: BTreeMap<i64, Incident>,
    /// Postmortem drafts by incident.
    pub postmortems: HashMap<i64, String>,
    /// Every deployment the log told of, by id.
    deployments: BTreeMap<i64, (Suspect, i64)>,
    /// The last event applied.
    pub cursor: i64,
    /// (seq, Unix ms) of every 256th event: where to start reading for a time.
    marks: Vec<(i64, i64)>,
    /// On-call overrides, oldest first.
    pub overrides: Vec<Override>,
    /// The furthest page of each incident's escalation: (level, round, Unix ms).
    pages: HashMap<i64, (usize, u32, i64)>,
    /// The last event a recorded decision answered (its `cause`): what follows it may still
    /// await its reaction after a crash.
    pub reacted_through: i64,
}

/// Someone on call in a schedule's place for a while.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub schedule: String,
    pub user: String,
    pub from_ms: i64,
    pub until_ms: i64,
}

/// `production`, `prod`, `prod-eu`, …: environments whose rollbacks open incidents.
pub fn is_production(environment: &str) -> bool {
    environment == "production" || environment == "prod" || environment.starts_with("prod-")
}

fn ms(time: &str) -> i64 {
    time.parse::<jiff::Timestamp>().map(|t| t.as_millisecond()).unwrap_or(0)
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
}

fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::to_string)
}

impl Book {
    /// The first event to read for what happened at or after `at_ms`.
    pub fn seq_before(&self, at_ms: i64) -> i64 {
        let i = self.marks.partition_point(|(_, t)| *t < at_ms);
        if i == 0 { 0 } else { self.marks[i - 1].0 }
    }

    /// Where an incident's escalation stands: the last level paged, its round, and when.
    pub fn last_page(&self, incident: i64) -> Option<(usize, u32, i64)> {
        self.pages.get(&incident).copied()
    }

    fn next_id(&self) -> i64 {
        self.incidents.keys().next_back().map_or(1, |id| id + 1)
    }

    /// The open incident an alert or a deployment of `service` belongs to.
    fn open_for(&self, service: Option<&str>, fingerprint: Option<&str>) -> Option<i64> {
        self.incidents
            .values()
            .filter(|i| i.state.is_open())
            .find(|i| {
                fingerprint.is_some_and(|f| i.alerts.iter().any(|a| a.fingerprint == f))
                    || (service.is_some() && i.service.as_deref() == service)
            })
            .map(|i| i.id)
    }

    /// Applies one event of the log; returns the incident events it calls for (applied already)
    /// when `react` (a live event, not a replay).
    pub fn apply(&mut self, event: &store::Event, react: bool) -> Vec<Decision> {
        let mut decisions = self.apply_inner(event, react);
        for decision in &mut decisions {
            decision.2["cause"] = json!(event.seq);
        }
        if !decisions.is_empty() {
            self.reacted_through = self.reacted_through.max(event.seq);
        }
        decisions
    }

    fn apply_inner(&mut self, event: &store::Event, react: bool) -> Vec<Decision> {
        self.cursor = self.cursor.max(event.seq);
        let at = ms(&event.time);
        if event.seq % 256 == 0 || self.marks.is_empty() {
            self.marks.push((event.seq, at));
        }
        let p = &event.payload;
        if let Some(id) = event.subject.strip_prefix("deployment/").and_then(|id| id.parse::<i64>().ok()) {
            return self.deployment(id, event, at, react);
        }
        if event.kind.starts_with("incident.") {
            if let Some(cause) = p["cause"].as_i64() {
                self.reacted_through = self.reacted_through.max(cause);
            }
            self.absorb(&event.kind, &event.actor, p);
            return Vec::new();
        }
        if event.kind == "oncall.override" {
            let (Some(schedule), Some(user)) = (text(&p["schedule"]), text(&p["user"])) else { return Vec::new() };
            let (from_ms, until_ms) = (p["from"].as_str().map_or(at, ms), p["until"].as_str().map_or(at, ms));
            self.overrides.push(Override { schedule, user, from_ms, until_ms });
            return Vec::new();
        }
        if !react {
            return Vec::new();
        }
        match event.kind.as_str() {
            "alert.firing" | "alert.resolved" => self.alert(event.kind == "alert.firing", p, at),
            _ => Vec::new(),
        }
    }

    fn deployment(&mut self, id: i64, event: &store::Event, at: i64, react: bool) -> Vec<Decision> {
        let p = &event.payload;
        let entry = self.deployments.entry(id).or_insert_with(|| {
            (
                Suspect {
                    deployment: id,
                    service: text(&p["service"]).unwrap_or_default(),
                    environment: text(&p["environment"]).unwrap_or_default(),
                    release: text(&p["release"]).unwrap_or_default(),
                    sha: text(&p["sha"]).unwrap_or_default(),
                    status: String::new(),
                    created: event.time.clone(),
                },
                at,
            )
        });
        if let Some(status) = p["status"].as_str() {
            entry.0.status = status.to_string();
            for incident in self.incidents.values_mut() {
                for suspect in incident.suspects.iter_mut().filter(|s| s.deployment == id) {
                    suspect.status = status.to_string();
                }
            }
        }
        if !react || event.kind != "deployment.rolled_back" {
            return Vec::new();
        }
        let suspect = entry.0.clone();
        let reason = text(&p["reason"]).map(|r| format!(": {r}")).unwrap_or_default();
        let how = format!("deployment {id} ({}) rolled back{reason}", suspect.release);
        let by_suspect =
            self.incidents.values().find(|i| i.state.is_open() && i.suspects.iter().any(|s| s.deployment == id));
        if let Some(incident) = by_suspect.map(|i| i.id) {
            return vec![self.resolve(incident, &how, "tandem", at)];
        }
        if !is_production(&suspect.environment) {
            return Vec::new();
        }
        if let Some(incident) = self.open_for(Some(&suspect.service), None) {
            return vec![self.resolve(incident, &how, "tandem", at)];
        }
        let title = format!("{} rolled back in {}{reason}", suspect.service, suspect.environment);
        let opening = Opening {
            title,
            severity: "page".into(),
            service: Some(suspect.service.clone()),
            environment: Some(suspect.environment.clone()),
            source: "rollback",
            commander: None,
            by: "tandem".into(),
        };
        vec![self.open(opening, at)]
    }

    fn alert(&mut self, firing: bool, p: &Value, at: i64) -> Vec<Decision> {
        let labels = crate::alerting::labels_of(p);
        let fingerprint = crate::alerting::fingerprint(&labels);
        let severity = labels.get("severity").cloned().unwrap_or_default();
        let service = labels.get("service").cloned();
        let attach = |book: &mut Book, incident: i64| {
            let payload = json!({"id": incident, "fingerprint": fingerprint, "labels": labels, "firing": firing, "at": rfc3339(at)});
            book.decide("incident.alert", incident, payload)
        };
        if !firing {
            let mut out = Vec::new();
            let holding: Vec<i64> = self
                .incidents
                .values()
                .filter(|i| i.state.is_open() && i.alerts.iter().any(|a| a.fingerprint == fingerprint && a.firing))
                .map(|i| i.id)
                .collect();
            for incident in holding {
                out.push(attach(self, incident));
                let held = &self.incidents[&incident];
                if held.alerts.iter().all(|a| !a.firing) {
                    let how = match held.suspects.first().filter(|s| s.status == "rolled_back") {
                        Some(s) => format!(
                            "its alerts resolved after deployment {} ({}) was rolled back",
                            s.deployment, s.release
                        ),
                        None => "its alerts resolved".to_string(),
                    };
                    out.push(self.resolve(incident, &how, "tandem", at));
                }
            }
            return out;
        }
        if !PAGING.contains(&severity.as_str()) {
            return Vec::new();
        }
        if let Some(incident) = self.open_for(service.as_deref(), Some(&fingerprint)) {
            let known = self.incidents[&incident].alerts.iter().any(|a| a.fingerprint == fingerprint && a.firing);
            return if known { Vec::new() } else { vec![attach(self, incident)] };
        }
        let name = labels.get("alertname").cloned().unwrap_or_else(|| "alert".into());
        let summary = p["summary"]
            .as_str()
            .or_else(|| p["annotations"]["summary"].as_str())
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        let scope = service.as_ref().map(|s| format!(" on {s}")).unwrap_or_default();
        let opening = Opening {
            title: format!("{name}{scope}{summary}"),
            severity,
            service,
            environment: labels.get("environment").cloned(),
            source: "alert",
            commander: None,
            by: "tandem".into(),
        };
        let opened = self.open(opening, at);
        let id = self.next_id() - 1;
        vec![opened, attach(self, id)]
    }

    /// Opens an incident: its id, suspects and opening event.
    pub fn open(&mut self, opening: Opening, at: i64) -> Decision {
        let id = self.next_id();
        let mut suspects: Vec<Suspect> = self
            .deployments
            .values()
            .filter(|(d, created)| {
                opening.service.as_deref().is_none_or(|s| d.service == s)
                    && opening.environment.as_deref().is_none_or(|e| d.environment == e)
                    && (*created >= at - LOOK_BACK_MS || matches!(d.status.as_str(), "pending" | "running"))
                    && *created <= at
            })
            .map(|(d, _)| d.clone())
            .collect();
        suspects.reverse();
        let payload = json!({
            "id": id, "title": opening.title, "severity": opening.severity, "service": opening.service,
            "environment": opening.environment, "source": opening.source, "commander": opening.commander,
            "by": opening.by, "at": rfc3339(at), "suspects": suspects,
        });
        self.decide("incident.opened", id, payload)
    }

    pub fn resolve(&mut self, incident: i64, how: &str, by: &str, at: i64) -> Decision {
        self.decide("incident.resolved", incident, json!({"id": incident, "how": how, "by": by, "at": rfc3339(at)}))
    }

    /// Applies an incident event now and hands it back to be recorded.
    pub fn decide(&mut self, kind: &str, incident: i64, payload: Value) -> Decision {
        let by = payload["by"].as_str().unwrap_or("tandem").to_string();
        self.absorb(kind, &by, &payload);
        (kind.to_string(), format!("incident/{incident}"), payload)
    }

    /// Folds an incident event into the book; idempotent.
    fn absorb(&mut self, kind: &str, actor: &str, p: &Value) {
        let Some(id) = p["id"].as_i64() else { return };
        let at = text(&p["at"]).unwrap_or_default();
        let by = text(&p["by"]).unwrap_or_else(|| actor.to_string());
        if kind == "incident.opened" {
            let suspects = serde_json::from_value(p["suspects"].clone()).unwrap_or_default();
            self.incidents.entry(id).or_insert_with(|| Incident {
                id,
                title: text(&p["title"]).unwrap_or_default(),
                severity: text(&p["severity"]).unwrap_or_default(),
                service: text(&p["service"]),
                environment: text(&p["environment"]),
                state: IncidentState::Triggered,
                source: text(&p["source"]).unwrap_or_default(),
                commander: text(&p["commander"]),
                opened_at: at.clone(),
                opened_by: by.clone(),
                acknowledged_at: None,
                acknowledged_by: None,
                resolved_at: None,
                resolved_by: None,
                resolution: None,
                mtta_seconds: None,
                mttr_seconds: None,
                alerts: Vec::new(),
                suspects,
                action_items: Vec::new(),
                postmortem: false,
            });
            return;
        }
        if kind == "incident.paged" {
            let level = p["level"].as_u64().unwrap_or(1).saturating_sub(1) as usize;
            let round = p["round"].as_u64().unwrap_or(0) as u32;
            let step = (level, round, ms(&at));
            let furthest = self.pages.entry(id).or_insert(step);
            if (round, level) > (furthest.1, furthest.0) {
                *furthest = step;
            }
        }
        if kind == "incident.postmortem_drafted"
            && let Some(markdown) = p["markdown"].as_str()
        {
            self.postmortems.insert(id, markdown.to_string());
        }
        let Some(incident) = self.incidents.get_mut(&id) else { return };
        let since_open = |at: &str| (ms(at) - ms(&incident.opened_at)) as f64 / 1000.0;
        match kind {
            "incident.alert" => {
                let fingerprint = text(&p["fingerprint"]).unwrap_or_default();
                let firing = p["firing"].as_bool().unwrap_or(true);
                match incident.alerts.iter_mut().find(|a| a.fingerprint == fingerprint) {
                    Some(alert) => alert.firing = firing,
                    None => incident.alerts.push(IncidentAlert {
                        fingerprint,
                        labels: serde_json::from_value(p["labels"].clone()).unwrap_or_default(),
                        firing,
                        since: at,
                    }),
                }
            }
            "incident.acknowledged" if incident.acknowledged_at.is_none() => {
                incident.mtta_seconds = Some(since_open(&at));
                incident.acknowledged_at = Some(at);
                incident.acknowledged_by = Some(by);
                if incident.state == IncidentState::Triggered {
                    incident.state = IncidentState::Acknowledged;
                }
            }
            "incident.resolved" if incident.resolved_at.is_none() => {
                incident.mttr_seconds = Some(since_open(&at));
                incident.resolved_at = Some(at);
                incident.resolved_by = Some(by);
                incident.resolution = text(&p["how"]);
                incident.state = IncidentState::Resolved;
            }
            "incident.commander" => incident.commander = text(&p["name"]),
            "incident.postmortem_drafted" => incident.postmortem = true,
            "incident.postmortem_done" => incident.state = IncidentState::PostmortemDone,
            "incident.action_item" => {
                let item: Option<ActionItem> = serde_json::from_value(p["item"].clone()).ok();
                if let Some(item) = item {
                    match incident.action_items.iter_mut().find(|i| i.number == item.number) {
                        Some(slot) => *slot = item,
                        None => incident.action_items.push(item),
                    }
                }
            }
            _ => {}
        }
    }
}

/// What an incident opens with.
#[derive(Debug, Clone)]
pub struct Opening {
    pub title: String,
    pub severity: String,
    pub service: Option<String>,
    pub environment: Option<String>,
    pub source: &'static str,
    pub commander: Option<String>,
    pub by: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64, minute: i64, kind: &str, subject: &str, payload: Value) -> store::Event {
        store::Event {
            seq,
            time: rfc3339(1_800_000_000_000 + minute * 60_000),
            kind: kind.into(),
            subject: subject.into(),
            actor: "tandem".into(),
            payload,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    fn deploy(seq: i64, minute: i64, id: i64, kind: &str, environment: &str, status: &str) -> store::Event {
        let payload = json!({"service": "shop", "environment": environment, "release": format!("r{id}"), "sha": "abc", "status": status, "reason": "errors"});
        event(seq, minute, kind, &format!("deployment/{id}"), payload)
    }

    fn page(seq: i64, minute: i64, firing: bool) -> store::Event {
        let kind = if firing { "alert.firing" } else { "alert.resolved" };
        let payload =
            json!({"alertname": "SLOBurnRate", "service": "shop", "environment": "staging", "severity": "page"});
        event(seq, minute, kind, "slo/shop/staging/availability", payload)
    }

    /// Applies events live, feeding each decision back as the log would.
    fn run(events: &[store::Event]) -> Book {
        let mut book = Book::default();
        let mut seq = 1000;
        for e in events {
            for (kind, subject, payload) in book.apply(e, true) {
                seq += 1;
                assert!(book.apply(&event(seq, 0, &kind, &subject, payload), true).is_empty());
            }
        }
        book
    }

    #[test]
    fn a_page_opens_one_incident_naming_the_deployments_of_its_look_back_window() {
        let book = run(&[
            deploy(1, 0, 1, "deployment.requested", "staging", "pending"),
            deploy(9, 1, 1, "deployment.promoted", "staging", "promoted"),
            deploy(2, 130, 2, "deployment.requested", "staging", "pending"),
            deploy(3, 131, 2, "deployment.started", "staging", "running"),
            page(4, 140, true),
            page(5, 141, true),
        ]);
        assert_eq!(book.incidents.len(), 1, "a second firing of the same page opens nothing");
        let incident = &book.incidents[&1];
        assert_eq!(incident.state, IncidentState::Triggered);
        assert_eq!(incident.service.as_deref(), Some("shop"));
        let suspects: Vec<i64> = incident.suspects.iter().map(|s| s.deployment).collect();
        assert_eq!(suspects, [2], "deployment 1 is older than the look-back window");
        assert_eq!(incident.alerts.len(), 1);
    }

    #[test]
    fn rolling_back_the_suspect_resolves_the_incident_and_measures_its_time_to_restore() {
        let book = run(&[
            deploy(1, 0, 7, "deployment.requested", "staging", "pending"),
            page(2, 3, true),
            deploy(3, 8, 7, "deployment.rolled_back", "staging", "rolled_back"),
        ]);
        let incident = &book.incidents[&1];
        assert_eq!(incident.state, IncidentState::Resolved);
        assert_eq!(incident.resolution.as_deref(), Some("deployment 7 (r7) rolled back: errors"));
        assert_eq!(incident.mttr_seconds, Some(300.0));
    }

    #[test]
    fn an_incident_whose_alerts_all_end_is_resolved() {
        let book = run(&[page(1, 0, true), page(2, 10, false)]);
        let incident = &book.incidents[&1];
        assert_eq!(incident.state, IncidentState::Resolved);
        assert_eq!(incident.resolution.as_deref(), Some("its alerts resolved"));
        assert!(!incident.alerts[0].firing);
    }

    #[test]
    fn a_production_rollback_opens_an_incident_and_a_staging_one_does_not() {
        let book = run(&[
            deploy(1, 0, 1, "deployment.requested", "staging", "pending"),
            deploy(2, 1, 1, "deployment.rolled_back", "staging", "rolled_back"),
            deploy(3, 2, 2, "deployment.requested", "production", "pending"),
            deploy(4, 3, 2, "deployment.rolled_back", "production", "rolled_back"),
        ]);
        assert_eq!(book.incidents.len(), 1);
        let incident = &book.incidents[&1];
        assert_eq!(incident.source, "rollback");
        assert_eq!(incident.suspects[0].deployment, 2);
        assert_eq!(incident.suspects[0].status, "rolled_back");
    }

    #[test]
    fn warnings_do_not_page_and_a_replay_decides_nothing() {
        let mut warning = page(1, 0, true);
        warning.payload["severity"] = json!("warning");
        assert!(run(&[warning]).incidents.is_empty());
        let mut book = Book::default();
        assert!(book.apply(&page(1, 0, true), false).is_empty());
        assert!(book.incidents.is_empty());
    }

    #[test]
    fn acknowledging_twice_keeps_the_first_time() {
        let mut book = run(&[page(1, 0, true)]);
        let ack = |minute: i64, by: &str| {
            event(
                9,
                minute,
                "incident.acknowledged",
                "incident/1",
                json!({"id": 1, "by": by, "at": rfc3339(1_800_000_000_000 + minute * 60_000)}),
            )
        };
        book.apply(&ack(2, "ana"), true);
        book.apply(&ack(5, "bo"), true);
        let incident = &book.incidents[&1];
        assert_eq!(incident.acknowledged_by.as_deref(), Some("ana"));
        assert_eq!(incident.mtta_seconds, Some(120.0));
        assert_eq!(incident.state, IncidentState::Acknowledged);
    }
}
