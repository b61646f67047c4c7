//! The on-call file (`tandem server --oncall FILE`): people and how to reach them, schedules of
//! rotating layers (hand-off time, time zone, restrictions; a later layer wins where it covers),
//! escalation policies (levels notified in turn until someone acknowledges, repeated), and which
//! policy pages for which service.
//!
//! ```yaml
//! users:
//!   ana: { email: ana@example.org }
//!   bo: { webhook: https://chat.example.org/hooks/bo }
//! schedules:
//!   primary:
//!     time_zone: Europe/Berlin
//!     layers:
//!       - users: [ana, bo]
//!         rotation: weekly          # daily, weekly, or a duration such as 12h
//!         handoff: monday 09:00
//!       - users: [bo]
//!         rotation: daily
//!         handoff: "18:00"
//!         restrict: { days: [saturday, sunday] }
//! escalation_policies:
//!   default:
//!     repeat: 1
//!     levels:
//!       - { notify: [schedule:primary], after: 5m }
//!       - { notify: [user:bo], after: 10m }
//! services: { shop: default }
//! default_policy: default
//! teams: { payments: { services: [shop] } }
//! ```

use std::collections::BTreeMap;

use crate::diag::{Diagnostic, Span};
use crate::service::Checker;
use crate::yaml::{self, Node};

#[derive(Debug, Clone, PartialEq)]
pub struct OnCall {
    pub users: BTreeMap<String, Contact>,
    pub schedules: BTreeMap<String, Schedule>,
    pub policies: BTreeMap<String, Policy>,
    /// Service → policy name.
    pub services: BTreeMap<String, String>,
    pub default_policy: Option<String>,
    /// Team → the services it owns (for DORA per team).
    pub teams: BTreeMap<String, Vec<String>>,
}

/// How a person is reached.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Contact {
    pub email: Option<String>,
    /// A URL that receives a JSON page.
    pub webhook: Option<String>,
    /// A Slack-compatible incoming webhook.
    pub slack: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub time_zone: jiff::tz::TimeZone,
    pub layers: Vec<Layer>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rotation {
    Daily,
    Weekly,
    /// A fixed length in ms.
    Every(u64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub users: Vec<String>,
    pub rotation: Rotation,
    /// Weekday of the hand-off for weekly rotations (0 = Monday … 6 = Sunday).
    pub handoff_weekday: i8,
    /// Minutes after midnight of the hand-off, in the schedule's time zone.
    pub handoff_minute: i32,
    /// The rotation's first day (the first user's first shift starts at its hand-off).
    pub start: jiff::civil::Date,
    /// Days the layer covers (0 = Monday …); empty: every day.
    pub days: Vec<i8>,
    /// Minutes of the day it covers, `[from, to)`, wrapping past midnight when `to < from`.
    pub hours: Option<(i32, i32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub levels: Vec<Level>,
    /// How many more times the levels are gone through when nobody acknowledged.
    pub repeat: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Level {
    /// `schedule:NAME` or `user:NAME`.
    pub notify: Vec<Target>,
    /// Unacknowledged this long after notifying, the next level is notified.
    pub after_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Schedule(String),
    User(String),
}

const WEEKDAYS: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];

fn clock(text: &str) -> Option<i32> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m)).then_some(h * 60 + m)
}

/// Parses an on-call file; every problem is reported at once.
pub fn parse(source: &str) -> (Option<OnCall>, Vec<Diagnostic>) {
    let root = match yaml::parse(source) {
        Ok(Some(root)) => root,
        Ok(None) => {
            return (None, vec![Diagnostic::error("empty-file", Span::at(1, 1, 1), "the on-call file is empty")]);
        }
        Err(diagnostic) => return (None, vec![diagnostic]),
    };
    let mut c = Checker { diagnostics: Vec::new() };
    let known = ["users", "schedules", "escalation_policies", "services", "default_policy", "teams"];
    let entries = c.entries(&root, "the on-call file", &known);
    let field = |key: &str| entries.iter().find(|(k, ..)| *k == key).map(|(_, v, _)| *v);
    let mut config = OnCall {
        users: BTreeMap::new(),
        schedules: BTreeMap::new(),
        policies: BTreeMap::new(),
        services: BTreeMap::new(),
        default_policy: None,
        teams: BTreeMap::new(),
    };
    for (name, node, _) in field("users").map(|n| c.entries(n, "`users`", &[])).unwrap_or_default() {
        let entries = c.entries(node, "a user", &["email", "webhook", "slack"]);
        let mut contact = Contact::default();
        for (key, value, _) in entries {
            let text = c.string(value, &format!("`{key}`"));
            match key {
                "email" => contact.email = text,
                "webhook" => contact.webhook = text,
                _ => contact.slack = text,
            }
        }
        if contact == Contact::default() {
            c.push(
                Diagnostic::error("missing-key", node.span, format!("user `{name}` has no way to be reached"))
                    .expected("`email`, `webhook` or `slack`"),
            );
        }
        config.users.insert(name.to_string(), contact);
    }
    for (name, node, _) in field("schedules").map(|n| c.entries(n, "`schedules`", &[])).unwrap_or_default() {
        if let Some(schedule) = c.schedule(node, &config.users) {
            config.schedules.insert(name.to_string(), schedule);
        }
    }
    for (name, node, _) in
        field("escalation_policies").map(|n| c.entries(n, "`escalation_policies`", &[])).unwrap_or_default()
    {
        if let Some(policy) = c.policy(node, &config) {
            config.policies.insert(name.to_string(), policy);
        }
    }
    for (service, node, _) in field("services").map(|n| c.entries(n, "`services`", &[])).unwrap_or_default() {
        if let Some(policy) = c.policy_name(node, &config) {
            config.services.insert(service.to_string(), policy);
        }
    }
    if let Some(node) = field("default_policy") {
        config.default_policy = c.policy_name(node, &config);
    }
    for (team, node, _) in field("teams").map(|n| c.entries(n, "`teams`", &[])).unwrap_or_default() {
        let entries = c.entries(node, "a team", &["services"]);
        let services = entries.iter().find(|(k, ..)| *k == "services").map(|(_, v, _)| c.names(v, "`services`"));
        config.teams.insert(team.to_string(), services.unwrap_or_default());
    }
    c.diagnostics.sort_by_key(|d| (d.span.line, d.span.col));
    let ok = !c.diagnostics.iter().any(Diagnostic::is_error);
    (ok.then_some(config), c.diagnostics)
}

impl Checker {
    fn policy_name(&mut self, node: &Node, config: &OnCall) -> Option<String> {
        let name = self.string(node, "a policy name")?;
        if !config.policies.contains_key(&name) {
            self.push(Diagnostic::error(
                "unknown-policy",
                node.span,
                format!("no escalation policy is named `{name}`"),
            ));
            return None;
        }
        Some(name)
    }

    fn names(&mut self, node: &Node, what: &str) -> Vec<String> {
        match node.as_seq() {
            Some(items) => items.iter().filter_map(|i| self.string(i, what)).collect(),
            None => {
                self.push(Diagnostic::error("wrong-type", node.span, format!("{what} must be a list")));
                Vec::new()
            }
        }
    }

    fn schedule(&mut self, node: &Node, users: &BTreeMap<String, Contact>) -> Option<Schedule> {
        let entries = self.entries(node, "a schedule", &["time_zone", "layers"]);
        let field = |key: &str| entries.iter().find(|(k, ..)| *k == key).map(|(_, v, _)| *v);
        let time_zone = match field("time_zone") {
            Some(n) => {
                let name = n.as_scalar().unwrap_or_default();
                match jiff::tz::TimeZone::get(name) {
                    Ok(zone) => zone,
                    Err(_) => {
                        self.push(
                            Diagnostic::error("bad-value", n.span, format!("`{name}` is not a known time zone"))
                                .expected("an IANA name such as Europe/Berlin or UTC"),
                        );
                        return None;
                    }
                }
            }
            None => jiff::tz::TimeZone::UTC,
        };
        let mut layers = Vec::new();
        for item in field("layers").and_then(Node::as_seq).unwrap_or_default() {
            if let Some(layer) = self.layer(item, users) {
                layers.push(layer);
            }
        }
        if layers.is_empty() {
            self.push(Diagnostic::error("missing-key", node.span, "a schedule needs at least one layer with users"));
            return None;
        }
        Some(Schedule { time_zone, layers })
    }

    fn layer(&mut self, node: &Node, known_users: &BTreeMap<String, Contact>) -> Option<Layer> {
        let entries = self.entries(node, "a layer", &["users", "rotation", "handoff", "start", "restrict"]);
        let field = |key: &str| entries.iter().find(|(k, ..)| *k == key).map(|(_, v, _)| *v);
        let users = field("users").map(|n| self.names(n, "`users`")).unwrap_or_default();
        for user in &users {
            if !known_users.contains_key(user) {
                let span = field("users").map_or(node.span, |n| n.span);
                self.push(Diagnostic::error("unknown-user", span, format!("`{user}` is not under `users`")));
            }
        }
        if users.is_empty() {
            self.push(Diagnostic::error("missing-key", node.span, "a layer needs `users`"));
            return None;
        }
        let rotation = match field("rotation").and_then(Node::as_scalar).unwrap_or("weekly") {
            "daily" => Rotation::Daily,
            "weekly" => Rotation::Weekly,
            other => match crate::service::parse_duration(other).filter(|ms| *ms >= 3_600_000) {
                Some(ms) => Rotation::Every(ms),
                None => {
                    let span = field("rotation").map_or(node.span, |n| n.span);
                    self.push(
                        Diagnostic::error("bad-value", span, format!("`{other}` is not a rotation"))
                            .expected("daily, weekly, or a duration of at least 1h such as 12h"),
                    );
                    return None;
                }
            },
        };
        let handoff = field("handoff").and_then(Node::as_scalar).unwrap_or(match rotation {
            Rotation::Weekly => "monday 09:00",
            _ => "09:00",
        });
        let (weekday, time) = match handoff.split_once(' ') {
            Some((day, time)) => (WEEKDAYS.iter().position(|d| d.eq_ignore_ascii_case(day)).map(|d| d as i8), time),
            None => (Some(0), handoff),
        };
        let (Some(handoff_weekday), Some(handoff_minute)) = (weekday, clock(time)) else {
            let span = field("handoff").map_or(node.span, |n| n.span);
            self.push(
                Diagnostic::error("bad-value", span, format!("`{handoff}` is not a hand-off time"))
                    .expected("HH:MM, or a weekday and HH:MM such as `monday 09:00`"),
            );
            return None;
        };
        let start = match field("start") {
            Some(n) => match n.as_scalar().and_then(|t| t.parse::<jiff::civil::Date>().ok()) {
                Some(date) => date,
                None => {
                    self.push(Diagnostic::error("bad-value", n.span, "`start` must be a date (YYYY-MM-DD)"));
                    return None;
                }
            },
            None => jiff::civil::date(2024, 1, 1),
        };
        let (mut days, mut hours) = (Vec::new(), None);
        if let Some(restrict) = field("restrict") {
            for (key, value, span) in self.entries(restrict, "`restrict`", &["days", "hours"]) {
                if key == "days" {
                    for day in self.names(value, "`days`") {
                        match WEEKDAYS.iter().position(|d| d.eq_ignore_ascii_case(&day)) {
                            Some(d) => days.push(d as i8),
                            None => self.push(Diagnostic::error(
                                "bad-value",
                                value.span,
                                format!("`{day}` is not a weekday"),
                            )),
                        }
                    }
                } else {
                    let text = value.as_scalar().unwrap_or_default();
                    match text.split_once('-').and_then(|(a, b)| Some((clock(a)?, clock(b)?))) {
                        Some((a, b)) if a != b => hours = Some((a, b)),
                        _ => self.push(
                            Diagnostic::error("bad-value", span, format!("`{text}` is not a range of hours"))
                                .expected("HH:MM-HH:MM, e.g. 18:00-09:00"),
                        ),
                    }
                }
            }
        }
        Some(Layer { users, rotation, handoff_weekday, handoff_minute, start, days, hours })
    }

    fn policy(&mut self, node: &Node, config: &OnCall) -> Option<Policy> {
        let entries = self.entries(node, "an escalation policy", &["levels", "repeat"]);
        let field = |key: &str| entries.iter().find(|(k, ..)| *k == key).map(|(_, v, _)| *v);
        let repeat = field("repeat").and_then(Node::as_scalar).and_then(|t| t.parse().ok()).unwrap_or(0);
        let mut levels = Vec::new();
        for item in field("levels").and_then(Node::as_seq).unwrap_or_default() {
            let entries = self.entries(item, "a level", &["notify", "after"]);
            let get = |key: &str| entries.iter().find(|(k, ..)| *k == key).map(|(_, v, _)| *v);
            let after_ms = match get("after") {
                Some(n) => self.duration(n, "`after`")?,
                None => 5 * 60_000,
            };
            let mut notify = Vec::new();
            for text in get("notify").map(|n| self.names(n, "`notify`")).unwrap_or_default() {
                let span = get("notify").map_or(item.span, |n| n.span);
                match text.split_once(':') {
                    Some(("schedule", name)) if config.schedules.contains_key(name) => {
                        notify.push(Target::Schedule(name.into()))
                    }
                    Some(("user", name)) if config.users.contains_key(name) => notify.push(Target::User(name.into())),
                    _ => self.push(
                        Diagnostic::error("unknown-target", span, format!("`{text}` names no schedule or user"))
                            .expected("schedule:NAME or user:NAME, declared in this file"),
                    ),
                }
            }
            if notify.is_empty() {
                self.push(Diagnostic::error("missing-key", item.span, "a level needs `notify`"));
                continue;
            }
            levels.push(Level { notify, after_ms });
        }
        if levels.is_empty() {
            self.push(Diagnostic::error("missing-key", node.span, "an escalation policy needs `levels`"));
            return None;
        }
        Some(Policy { levels, repeat })
    }
}

impl Layer {
    /// Who this layer puts on call at the instant, if it covers it.
    pub fn on_call(&self, zone: &jiff::tz::TimeZone, ms: i64) -> Option<&str> {
        let t = jiff::Timestamp::from_millisecond(ms).ok()?.to_zoned(zone.clone());
        let minute = i32::from(t.hour()) * 60 + i32::from(t.minute());
        let weekday = t.weekday().to_monday_zero_offset();
        if !self.days.is_empty() && !self.days.contains(&weekday) {
            return None;
        }
        if let Some((from, to)) = self.hours {
            let inside = if from < to { from <= minute && minute < to } else { minute >= from || minute < to };
            if !inside {
                return None;
            }
        }
        let n = self.users.len() as i64;
        let shift = match self.rotation {
            Rotation::Every(length) => {
                let anchor = self.start.to_zoned(zone.clone()).ok()?.timestamp().as_millisecond()
                    + i64::from(self.handoff_minute) * 60_000;
                (ms - anchor).div_euclid(length as i64)
            }
            Rotation::Daily => {
                // The shift began at the last hand-off, on the local calendar (DST-proof).
                let began = if minute < self.handoff_minute { t.date().yesterday().ok()? } else { t.date() };
                i64::from((began - self.start).get_days())
            }
            Rotation::Weekly => {
                let mut back = i64::from((weekday - self.handoff_weekday).rem_euclid(7));
                if back == 0 && minute < self.handoff_minute {
                    back = 7;
                }
                let began = t.date().checked_sub(jiff::Span::new().days(back)).ok()?;
                let ahead =
                    i64::from((self.handoff_weekday - self.start.weekday().to_monday_zero_offset()).rem_euclid(7));
                let first = self.start.checked_add(jiff::Span::new().days(ahead)).ok()?;
                i64::from((began - first).get_days()).div_euclid(7)
            }
        };
        Some(self.users[shift.rem_euclid(n) as usize].as_str())
    }
}

impl Schedule {
    /// Who is on call at the instant: the last layer that covers it.
    pub fn on_call(&self, ms: i64) -> Option<&str> {
        self.layers.iter().rev().find_map(|layer| layer.on_call(&self.time_zone, ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        text.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    const FILE: &str = "users:\n  ana: { email: ana@example.org }\n  bo: { webhook: 'http://127.0.0.1:1/bo' }\n  cy: { slack: 'http://127.0.0.1:1/cy' }\nschedules:\n  primary:\n    time_zone: Europe/Berlin\n    layers:\n      - users: [ana, bo]\n        rotation: weekly\n        handoff: monday 09:00\n        start: 2026-11-02\n      - users: [cy]\n        rotation: daily\n        restrict: { days: [saturday, sunday], hours: '20:00-08:00' }\nescalation_policies:\n  default:\n    repeat: 2\n    levels:\n      - { notify: [schedule:primary], after: 5m }\n      - { notify: ['user:cy'] }\nservices: { shop: default }\ndefault_policy: default\nteams: { payments: { services: [shop, checkout] } }\n";

    #[test]
    fn a_weekly_rotation_hands_off_on_monday_morning_local_time_and_a_later_layer_wins() {
        let (config, diagnostics) = parse(FILE);
        let config = config.unwrap_or_else(|| panic!("{diagnostics:#?}"));
        let primary = &config.schedules["primary"];
        // The week of 2026-11-02 is ana's, the next is bo's; hand-off at 09:00 Berlin (08:00 UTC).
        assert_eq!(primary.on_call(at("2026-11-04T12:00:00Z")), Some("ana"));
        assert_eq!(primary.on_call(at("2026-11-09T07:59:00Z")), Some("ana"), "before Monday 09:00 in Berlin");
        assert_eq!(primary.on_call(at("2026-11-09T08:00:00Z")), Some("bo"));
        assert_eq!(primary.on_call(at("2026-11-16T08:30:00Z")), Some("ana"));
        // Weekend nights belong to the second layer.
        assert_eq!(primary.on_call(at("2026-11-07T21:00:00Z")), Some("cy"), "Saturday 22:00 in Berlin");
        assert_eq!(primary.on_call(at("2026-11-07T12:00:00Z")), Some("ana"), "Saturday noon");
        // Across the end of summer time (2026-10-25) the hand-off stays at 09:00 local.
        assert_eq!(primary.on_call(at("2026-10-26T07:30:00Z")), Some("ana"), "08:30 local: still last week's");
        assert_eq!(primary.on_call(at("2026-10-26T08:00:00Z")), Some("bo"), "09:00 local");
        let policy = &config.policies["default"];
        assert_eq!((policy.repeat, policy.levels[0].after_ms, policy.levels[1].after_ms), (2, 300_000, 300_000));
        assert_eq!(config.services["shop"], "default");
        assert_eq!(config.teams["payments"], ["shop", "checkout"]);
    }

    #[test]
    fn unknown_people_policies_and_bad_times_are_refused_at_their_lines() {
        let source = "users:\n  ana: {}\nschedules:\n  s:\n    time_zone: Mars/Base\n    layers: [{ users: [ana] }]\n  t:\n    layers:\n      - users: [zed]\n        handoff: someday 25:00\nescalation_policies:\n  p:\n    levels: [{ notify: [schedule:nope] }]\nservices: { shop: missing }\n";
        let (config, diagnostics) = parse(source);
        assert!(config.is_none());
        let codes: Vec<(u32, &str)> = diagnostics.iter().map(|d| (d.span.line, d.code)).collect();
        assert_eq!(
            codes,
            [
                (2, "missing-key"),
                (5, "bad-value"),
                (8, "missing-key"),
                (9, "unknown-user"),
                (10, "bad-value"),
                (13, "missing-key"),
                (13, "missing-key"),
                (13, "unknown-target"),
                (14, "unknown-policy"),
            ],
            "{diagnostics:#?}"
        );
    }
}
