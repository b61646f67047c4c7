//! Alert routing with Alertmanager's semantics: alerts arrive from Tandem's own evaluations (SLO
//! burn rates, alerting rules, the store) and from any Prometheus (`POST /api/v2/alerts`); the
//! route tree of `--alertmanager-config` sends each to its groups (`group_by`), a group notifies
//! after `group_wait`, then every `group_interval` when it changed, and again after
//! `repeat_interval`; inhibition rules mute what a matching alert makes redundant, and a route's
//! time intervals mute it at set times. Receivers ([`receivers`]) are webhooks in Alertmanager's
//! JSON (version 4), Slack-compatible webhooks and email, sent with retries and backoff. Every
//! attempt is an event (`notification.sent`, `notification.failed`): the notification log that
//! answers "who was told what, and when".

pub mod receivers;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spec::alertmanager::{Config, Matcher, Route};

use crate::App;

/// An alert as Alertmanager's API carries it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt", default)]
    pub starts_at: Option<String>,
    #[serde(rename = "endsAt", default)]
    pub ends_at: Option<String>,
    #[serde(rename = "generatorURL", default)]
    pub generator_url: Option<String>,
}

/// An alert Tandem holds: resolved once `ends_at` has passed.
#[derive(Debug, Clone)]
struct Held {
    alert: Alert,
    fingerprint: String,
    /// Unix ms; `None` while firing with no end given.
    ends_at: Option<i64>,
    /// When the router last heard of it (Unix ms).
    seen: i64,
}

impl Held {
    fn resolved(&self, now: i64) -> bool {
        self.ends_at.is_some_and(|end| end <= now)
    }
}

/// What a group last told its receiver: (fingerprint, resolved) per alert, and when (Unix ms).
type Told = (Vec<(String, bool)>, i64);

#[derive(Debug)]
struct Group {
    receiver: String,
    route: Route,
    labels: BTreeMap<String, String>,
    fingerprints: Vec<String>,
    next_flush: i64,
    /// What the last notification said.
    last_sent: Option<Told>,
}

/// The router's state: alerts by fingerprint, aggregation groups by (receiver, group key).
#[derive(Debug, Default)]
pub struct Router {
    config: Mutex<Option<Arc<Config>>>,
    alerts: Mutex<HashMap<String, Held>>,
    groups: Mutex<BTreeMap<String, Group>>,
    /// What the notification log says each group was last told, read at start: a restart does
    /// not tell a receiver again what it already heard within the repeat interval.
    remembered: Mutex<HashMap<String, Told>>,
    /// Silences by id, expired ones included (as Alertmanager lists them).
    silences: Mutex<BTreeMap<String, Silence>>,
}

/// A silence: alerts its matchers all match are not notified between its start and end.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Silence {
    #[serde(default)]
    pub id: String,
    pub matchers: Vec<SilenceMatcher>,
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    #[serde(rename = "endsAt")]
    pub ends_at: String,
    #[serde(rename = "createdBy")]
    pub created_by: String,
    pub comment: String,
}

/// A matcher as Alertmanager's silences API writes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SilenceMatcher {
    pub name: String,
    pub value: String,
    #[serde(rename = "isRegex", default)]
    pub is_regex: bool,
    #[serde(rename = "isEqual", default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl Silence {
    fn span(&self) -> (i64, i64) {
        (
            parse_time(&Some(self.starts_at.clone())).unwrap_or(i64::MIN),
            parse_time(&Some(self.ends_at.clone())).unwrap_or(i64::MIN),
        )
    }

    pub fn state(&self, now: i64) -> &'static str {
        let (start, end) = self.span();
        if now >= end {
            "expired"
        } else if now < start {
            "pending"
        } else {
            "active"
        }
    }

    fn mutes(&self, labels: &BTreeMap<String, String>, now: i64) -> bool {
        self.state(now) == "active"
            && self.matchers.iter().all(|m| {
                let value = labels.get(&m.name).map_or("", String::as_str);
                let hit = if m.is_regex {
                    regex::Regex::new(&format!("^(?:{})$", m.value)).is_ok_and(|r| r.is_match(value))
                } else {
                    value == m.value
                };
                hit == m.is_equal
            })
    }
}

/// The same labels give the same fingerprint in every run (it is kept in the notification log).
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    use sha2::{Digest, Sha256};
    let canonical = serde_json::to_string(labels).unwrap_or_default();
    hex::encode(&Sha256::digest(canonical.as_bytes())[..8])
}

fn matches(matchers: &[Matcher], labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|m| m.matches(labels.get(&m.name).map_or("", String::as_str)))
}

/// The routes an alert's labels reach: depth first, the deepest match wins unless `continue`.
fn routes_for<'r>(route: &'r Route, labels: &BTreeMap<String, String>, out: &mut Vec<&'r Route>) -> bool {
    if !matches(&route.matchers, labels) {
        return false;
    }
    let mut matched_child = false;
    for child in &route.routes {
        if routes_for(child, labels, out) {
            matched_child = true;
            if !child.continue_matching {
                break;
            }
        }
    }
    if !matched_child {
        out.push(route);
    }
    true
}

fn parse_time(text: &Option<String>) -> Option<i64> {
    text.as_deref()
        .filter(|t| !t.is_empty() && !t.starts_with("0001-"))
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_millisecond())
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
}

impl Router {
    pub fn configure(&self, config: Option<Config>) {
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = config.map(Arc::new);
    }

    /// When the soonest group is due to flush (Unix ms).
    pub fn next_flush(&self) -> Option<i64> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner()).values().map(|g| g.next_flush).min()
    }

    /// The configuration's `global` block, when one is loaded.
    pub fn global(&self) -> Option<spec::alertmanager::Global> {
        self.config.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|c| c.global.clone())
    }

    pub fn configured(&self) -> bool {
        self.config.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Takes alerts (new, updated or resolved) and places them in their groups. Alerts from the
    /// API without an end resolve after Alertmanager's resolve timeout unless re-sent; Tandem's
    /// own (`own`) fire until their resolution arrives. Returns the alerts that started or
    /// ended with this call: (`alert.firing` or `alert.resolved`, the alert), for the event log.
    pub fn receive(&self, alerts: Vec<Alert>, now: i64, own: bool) -> Vec<(&'static str, Alert)> {
        let config = self.config.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(config) = config else { return Vec::new() };
        let mut moved = Vec::new();
        let mut held = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let mut remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        for mut alert in alerts {
            let fingerprint = fingerprint(&alert.labels);
            let ends_at = match parse_time(&alert.ends_at) {
                Some(end) => Some(end),
                None if own => None,
                // Alertmanager's resolve timeout: an alert re-sent without an end is resolved
                // this long after its last update.
                None => Some(now + config.global.resolve_timeout_ms as i64),
            };
            if alert.starts_at.as_deref().is_none_or(str::is_empty) {
                alert.starts_at = Some(
                    held.get(&fingerprint).and_then(|h| h.alert.starts_at.clone()).unwrap_or_else(|| rfc3339(now)),
                );
            }
            let mut routes = Vec::new();
            routes_for(&config.route, &alert.labels, &mut routes);
            for route in routes {
                let group_labels: BTreeMap<String, String> = if route.group_by.iter().any(|g| g == "...") {
                    alert.labels.clone()
                } else {
                    route.group_by.iter().filter_map(|g| alert.labels.get(g).map(|v| (g.clone(), v.clone()))).collect()
                };
                let key = format!("{}:{}", route.receiver, serde_json::to_string(&group_labels).unwrap_or_default());
                let last_sent = remembered.remove(&key);
                let group = groups.entry(key).or_insert_with(|| Group {
                    receiver: route.receiver.clone(),
                    route: route.clone(),
                    labels: group_labels,
                    fingerprints: Vec::new(),
                    next_flush: now + route.group_wait_ms as i64,
                    last_sent,
                });
                if !group.fingerprints.contains(&fingerprint) {
                    group.fingerprints.push(fingerprint.clone());
                }
            }
            let was_firing = held.get(&fingerprint).map(|h| !h.resolved(now));
            let firing = ends_at.is_none_or(|end| end > now);
            match (was_firing, firing) {
                (None | Some(false), true) => moved.push(("alert.firing", alert.clone())),
                (Some(true), false) => moved.push(("alert.resolved", alert.clone())),
                _ => {}
            }
            held.insert(fingerprint.clone(), Held { alert, fingerprint, ends_at, seen: now });
        }
        moved
    }

    /// Alerts held now, as `GET /api/v2/alerts` lists them.
    pub fn alerts(&self, now: i64) -> Vec<serde_json::Value> {
        let held = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<serde_json::Value> = held
            .values()
            .map(|h| {
                serde_json::json!({
                    "labels": h.alert.labels, "annotations": h.alert.annotations,
                    "startsAt": h.alert.starts_at, "endsAt": h.ends_at.map(rfc3339),
                    "generatorURL": h.alert.generator_url, "fingerprint": h.fingerprint,
                    "status": {"state": if h.resolved(now) { "resolved" } else { "active" }, "silencedBy": [], "inhibitedBy": []},
                })
            })
            .collect();
        out.sort_by_key(|a| a["fingerprint"].as_str().unwrap_or_default().to_string());
        out
    }

    /// The notifications due now: (receiver, payload), and the groups' bookkeeping done.
    fn due(&self, now: i64) -> Vec<(spec::alertmanager::Receiver, String, serde_json::Value)> {
        let config = self.config.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(config) = config else { return Vec::new() };
        let mut held = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if groups.values().all(|g| g.next_flush > now) {
            return Vec::new();
        }
        // The firing alerts that may inhibit others (none without inhibition rules).
        let firing_now: Vec<BTreeMap<String, String>> = if config.inhibit_rules.is_empty() {
            Vec::new()
        } else {
            held.values()
                .filter(|h| {
                    !h.resolved(now) && config.inhibit_rules.iter().any(|r| matches(&r.source, &h.alert.labels))
                })
                .map(|h| h.alert.labels.clone())
                .collect()
        };
        let inhibited = |labels: &BTreeMap<String, String>| {
            config.inhibit_rules.iter().any(|rule| {
                matches(&rule.target, labels)
                    && firing_now.iter().any(|source| {
                        source != labels
                            && matches(&rule.source, source)
                            && rule.equal.iter().all(|l| source.get(l) == labels.get(l))
                    })
            })
        };
        let mut out = Vec::new();
        for (key, group) in groups.iter_mut() {
            if group.next_flush > now {
                continue;
            }
            if !config.may_notify(&group.route, now) {
                // Muted now: looked at again each second, told as soon as the interval ends.
                group.next_flush = now + 1000;
                continue;
            }
            group.next_flush = now + group.route.group_interval_ms as i64;
            let silences = self.silences.lock().unwrap_or_else(|e| e.into_inner());
            let silenced = |labels: &BTreeMap<String, String>| silences.values().any(|s| s.mutes(labels, now));
            let members: Vec<&Held> = group
                .fingerprints
                .iter()
                .filter_map(|f| held.get(f))
                .filter(|h| !inhibited(&h.alert.labels) && !silenced(&h.alert.labels))
                .collect();
            drop(silences);
            // Compared as a set: the order alerts joined the group in is not news.
            let mut state: Vec<(String, bool)> =
                members.iter().map(|h| (h.fingerprint.clone(), h.resolved(now))).collect();
            state.sort();
            let changed = group.last_sent.as_ref().is_none_or(|(last, _)| *last != state);
            let repeat =
                group.last_sent.as_ref().is_some_and(|(_, at)| now - at >= group.route.repeat_interval_ms as i64);
            let any_firing = state.iter().any(|(_, resolved)| !resolved);
            let nothing_sent_yet = group.last_sent.is_none();
            if state.is_empty() || !(changed || repeat) || (nothing_sent_yet && !any_firing) {
                continue;
            }
            let Some(receiver) = config.receivers.iter().find(|r| r.name == group.receiver).cloned() else { continue };
            let alerts: Vec<serde_json::Value> = members
                .iter()
                .map(|h| {
                    serde_json::json!({
                        "status": if h.resolved(now) { "resolved" } else { "firing" },
                        "labels": h.alert.labels, "annotations": h.alert.annotations,
                        "startsAt": h.alert.starts_at, "endsAt": h.ends_at.filter(|_| h.resolved(now)).map(rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
                        "generatorURL": h.alert.generator_url, "fingerprint": h.fingerprint,
                    })
                })
                .collect();
            let common = |pick: fn(&Held) -> &BTreeMap<String, String>| -> BTreeMap<String, String> {
                let mut common = members.first().map(|h| pick(h).clone()).unwrap_or_default();
                common.retain(|k, v| members.iter().all(|h| pick(h).get(k) == Some(v)));
                common
            };
            let payload = serde_json::json!({
                "version": "4", "groupKey": key, "truncatedAlerts": 0,
                "status": if any_firing { "firing" } else { "resolved" },
                "receiver": group.receiver, "groupLabels": group.labels,
                "commonLabels": common(|h| &h.alert.labels), "commonAnnotations": common(|h| &h.alert.annotations),
                "externalURL": "", "alerts": alerts,
            });
            group.last_sent = Some((state, now));
            out.push((receiver, key.clone(), payload));
        }
        // Resolved alerts are kept an hour after the router heard of their end (their groups tell
        // it meanwhile, however long ago the end itself lies), then forgotten, as are empty groups.
        let told: Vec<String> = held
            .values()
            .filter(|h| h.resolved(now) && now - h.seen > 3_600_000)
            .map(|h| h.fingerprint.clone())
            .collect();
        for fingerprint in &told {
            held.remove(fingerprint);
        }
        groups.retain(|_, g| {
            g.fingerprints.retain(|f| held.contains_key(f));
            !g.fingerprints.is_empty()
        });
        out
    }
}

impl Router {
    /// Adds (or, with a known id, replaces) a silence; its id.
    pub fn silence(&self, mut silence: Silence) -> String {
        if silence.id.is_empty() {
            silence.id = crate::random_secret()
                .unwrap_or_else(|_| format!("{:x}", jiff::Timestamp::now().as_nanosecond()))[..16]
                .to_string();
        }
        let id = silence.id.clone();
        self.silences.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), silence);
        id
    }

    /// Ends a silence now; false when there is none with that id.
    pub fn expire(&self, id: &str, now: i64) -> Option<Silence> {
        let mut silences = self.silences.lock().unwrap_or_else(|e| e.into_inner());
        let silence = silences.get_mut(id)?;
        silence.ends_at = rfc3339(now);
        Some(silence.clone())
    }

    pub fn silences(&self) -> Vec<Silence> {
        self.silences.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }
}

/// Sends what is due, every second; each attempt is an event.
pub async fn run_forever(app: Arc<App>) {
    loop {
        // Wake when the next group is due (a page waits its group_wait, not a tick more), and at
        // least every second for groups born meanwhile.
        let now = jiff::Timestamp::now().as_millisecond();
        let wait = app.router.next_flush().map_or(1000, |at| (at - now).clamp(5, 1000));
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        let now = jiff::Timestamp::now().as_millisecond();
        for (receiver, key, payload) in app.router.due(now) {
            for channel in receivers::Channel::of(&receiver) {
                if payload["status"] == "resolved" && !channel.send_resolved() {
                    continue;
                }
                let (app, name, key, payload) = (app.clone(), receiver.name.clone(), key.clone(), payload.clone());
                tokio::spawn(async move { receivers::deliver(&app, &name, &key, channel, payload).await });
            }
        }
    }
}

/// Reads what each group was last told from the notification log (the events of earlier runs).
pub async fn remember(app: &App) {
    let mut remembered = HashMap::new();
    // Alerts Prometheus sent through the API, by fingerprint: (the alert, when heard, firing).
    let mut heard: HashMap<String, (Alert, i64, bool)> = HashMap::new();
    let mut after = 0;
    loop {
        let page = match app.store.events(after, 1000).await {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!("cannot read the notification log: {error}; groups may notify again after this restart");
                return;
            }
        };
        let Some(last) = page.last().map(|e| e.seq) else { break };
        for event in page.iter().filter(|e| e.kind == "silence.created" || e.kind == "silence.expired") {
            if let Ok(silence) = serde_json::from_value::<Silence>(event.payload.clone()) {
                app.router.silence(silence);
            }
        }
        for event in page.iter().filter(|e| e.kind.starts_with("alert.") && e.payload["source"] == "api") {
            let (Ok(alert), Ok(at)) =
                (serde_json::from_value::<Alert>(event.payload.clone()), event.time.parse::<jiff::Timestamp>())
            else {
                continue;
            };
            heard.insert(fingerprint(&alert.labels), (alert, at.as_millisecond(), event.kind == "alert.firing"));
        }
        for event in page.into_iter().filter(|e| e.kind == "notification.sent") {
            let (Some(group), Ok(at)) = (event.payload["group"].as_str(), event.time.parse::<jiff::Timestamp>()) else {
                continue;
            };
            let state: Vec<(String, bool)> = event.payload["state"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|pair| Some((pair[0].as_str()?.to_string(), pair[1].as_bool()?)))
                .collect();
            let mut state = state;
            state.sort();
            remembered.insert(group.to_string(), (state, at.as_millisecond()));
        }
        after = last;
    }
    *app.router.remembered.lock().unwrap_or_else(|e| e.into_inner()) = remembered;
    // Alerts that were firing when the server stopped come back until their resolve timeout
    // (Prometheus re-sends them anyway): one heard just before a crash is still notified, once.
    let now = jiff::Timestamp::now().as_millisecond();
    let timeout = app.router.global().map_or(5 * 60_000, |g| g.resolve_timeout_ms as i64);
    let firing: Vec<Alert> = heard
        .into_values()
        .filter(|(alert, at, firing)| *firing && alert.ends_at.is_none() && now < at + timeout)
        .map(|(mut alert, at, _)| {
            alert.ends_at = Some(rfc3339(at + timeout));
            alert
        })
        .collect();
    if !firing.is_empty() {
        tracing::info!("{} alert(s) heard before the restart are routed again", firing.len());
        app.router.receive(firing, now, false);
    }
}

/// Reads `--alertmanager-config` into the router (an invalid file is reported and routes nothing).
pub fn load(app: &App) {
    let Some(path) = &app.config.alertmanager else { return };
    match std::fs::read_to_string(path) {
        Ok(text) => match spec::alertmanager::parse(&text) {
            (Some(config), _) => app.router.configure(Some(config)),
            (None, diagnostics) => {
                let first = diagnostics
                    .iter()
                    .find(|d| d.is_error())
                    .map(|d| format!("{}:{}: {}", d.span.line, d.span.col, d.message));
                tracing::error!("{} is not valid: {}", path.display(), first.unwrap_or_default());
            }
        },
        Err(error) => tracing::error!("cannot read {}: {error}", path.display()),
    }
}

/// Tandem's own alert moves (SLO burn, rules, the store) go to the router as Alertmanager alerts.
pub fn from_event(app: &App, kind: &str, payload: &serde_json::Value) {
    if !matches!(kind, "alert.firing" | "alert.resolved") || !app.router.configured() {
        return;
    }
    let labels = labels_of(payload);
    let mut annotations = BTreeMap::new();
    if let Some(summary) = payload["summary"].as_str() {
        annotations.insert("summary".to_string(), summary.to_string());
    }
    let now = jiff::Timestamp::now().as_millisecond();
    // Firing alerts carry no end (they are re-evaluated); a resolved one ends now.
    let ends_at = (kind == "alert.resolved").then(|| rfc3339(now));
    let alert = Alert { labels, annotations, starts_at: None, ends_at, generator_url: None };
    app.router.receive(vec![alert], now, true);
}

/// A security event as an alert (`category="security"`), routed like any other and resolved on
/// its own after an hour; also an event (`security.alert`), so that it is in the audit log even
/// without a router.
pub async fn security(app: &App, name: &str, severity: &str, labels: &[(&str, String)], summary: String) {
    let mut all: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    all.insert("alertname".into(), name.into());
    all.insert("severity".into(), severity.into());
    all.insert("category".into(), "security".into());
    let payload = serde_json::json!({"labels": all, "summary": summary});
    if let Err(error) = app.store.record_event("security.alert", &format!("alert/{name}"), "tandem", payload).await {
        tracing::error!("cannot record the security alert {name}: {error}");
    }
    if !app.router.configured() {
        return;
    }
    let now = jiff::Timestamp::now().as_millisecond();
    let annotations = BTreeMap::from([("summary".to_string(), summary)]);
    let alert = Alert {
        labels: all,
        annotations,
        starts_at: Some(rfc3339(now)),
        ends_at: Some(rfc3339(now + 3_600_000)),
        generator_url: None,
    };
    app.router.receive(vec![alert], now, true);
}

/// An alert event's labels: its `labels`, and the fields Tandem's own alerts carry beside them.
pub fn labels_of(payload: &serde_json::Value) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    if let Some(object) = payload["labels"].as_object() {
        labels.extend(object.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))));
    }
    for key in ["alertname", "slo", "service", "environment", "severity", "long_window"] {
        if let Some(value) = payload[key].as_str() {
            labels.entry(key.to_string()).or_insert_with(|| value.to_string());
        }
    }
    labels
}
