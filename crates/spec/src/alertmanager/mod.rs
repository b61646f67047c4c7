//! Alertmanager's configuration file, the parts Tandem routes with: the route tree (matchers,
//! `continue`, grouping and its timers, inherited by child routes; mute and active time
//! intervals, not inherited), receivers (webhook, Slack, email) with the `global` defaults, and
//! inhibition rules. What Tandem does not support yet is named, with its place, as a warning —
//! never silently dropped.

mod receivers;
mod time;

use std::collections::BTreeMap;

pub use receivers::{Email, Global, Receiver, Slack, Webhook};
pub use time::TimeInterval;

use crate::diag::{Diagnostic, Span};
use crate::rules::prometheus_duration;
use crate::service::Checker;
use crate::yaml::{self, Node};

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub global: Global,
    pub route: Route,
    pub receivers: Vec<Receiver>,
    pub inhibit_rules: Vec<Inhibit>,
    /// Named time intervals, for routes' `mute_time_intervals` and `active_time_intervals`.
    pub time_intervals: BTreeMap<String, Vec<TimeInterval>>,
}

impl Config {
    /// Whether a route may notify at this instant: outside its mute intervals, and inside its
    /// active ones when it has any (a mute interval wins).
    pub fn may_notify(&self, route: &Route, ms: i64) -> bool {
        let inside = |names: &[String]| {
            names.iter().any(|name| self.time_intervals.get(name).is_some_and(|all| all.iter().any(|i| i.contains(ms))))
        };
        !inside(&route.mute_time_intervals)
            && (route.active_time_intervals.is_empty() || inside(&route.active_time_intervals))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub receiver: String,
    /// Empty: one group for every alert of the route; `["..."]`: every label set its own group.
    pub group_by: Vec<String>,
    pub group_wait_ms: u64,
    pub group_interval_ms: u64,
    pub repeat_interval_ms: u64,
    pub matchers: Vec<Matcher>,
    pub continue_matching: bool,
    pub routes: Vec<Route>,
    /// Names of time intervals when this route does not notify (not inherited).
    pub mute_time_intervals: Vec<String>,
    /// Names of time intervals outside which this route does not notify (not inherited).
    pub active_time_intervals: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl Matcher {
    /// Whether a label's value (empty when absent) satisfies the matcher.
    pub fn matches(&self, value: &str) -> bool {
        let regex = || regex_lite_full(&self.value, value);
        match self.op {
            MatchOp::Equal => value == self.value,
            MatchOp::NotEqual => value != self.value,
            MatchOp::Regex => regex(),
            MatchOp::NotRegex => !regex(),
        }
    }
}

/// A fully anchored match, as Alertmanager's matchers are.
fn regex_lite_full(pattern: &str, value: &str) -> bool {
    regex::Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|r| r.is_match(value))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Inhibit {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    /// Labels whose values must be equal in the source and the target alert.
    pub equal: Vec<String>,
}

const TOP_KEYS: &[&str] =
    &["global", "route", "receivers", "inhibit_rules", "templates", "time_intervals", "mute_time_intervals"];
const ROUTE_KEYS: &[&str] = &[
    "receiver",
    "group_by",
    "group_wait",
    "group_interval",
    "repeat_interval",
    "matchers",
    "match",
    "match_re",
    "continue",
    "routes",
    "mute_time_intervals",
    "active_time_intervals",
];

/// Parses an Alertmanager configuration; every problem is reported at once.
pub fn parse(source: &str) -> (Option<Config>, Vec<Diagnostic>) {
    let root = match yaml::parse(source) {
        Ok(Some(root)) => root,
        Ok(None) => {
            return (
                None,
                vec![Diagnostic::error("empty-file", Span::at(1, 1, 1), "the Alertmanager configuration is empty")],
            );
        }
        Err(diagnostic) => return (None, vec![diagnostic]),
    };
    let mut checker = Checker { diagnostics: Vec::new() };
    let entries = checker.entries(&root, "the Alertmanager configuration", TOP_KEYS);
    let field = |key: &str| entries.iter().find(|(k, ..)| *k == key).map(|(_, v, _)| *v);
    if let Some((_, _, span)) = entries.iter().find(|(k, ..)| *k == "templates") {
        checker.push(Diagnostic::warning(
            "unsupported",
            *span,
            "`templates` are not supported yet: Tandem writes its own notification text",
        ));
    }
    let global = field("global").map(|n| checker.global(n)).unwrap_or_default();
    let mut time_intervals = BTreeMap::new();
    for key in ["time_intervals", "mute_time_intervals"] {
        if let Some(node) = field(key) {
            time_intervals.extend(checker.time_intervals(node));
        }
    }
    let mut receivers: Vec<Receiver> = Vec::new();
    if let Some(list) = field("receivers").and_then(|n| n.as_seq()) {
        for item in list {
            if let Some(receiver) = checker.receiver(item, &global) {
                if receivers.iter().any(|r| r.name == receiver.name) {
                    checker.push(Diagnostic::error(
                        "duplicate-receiver",
                        item.span,
                        format!("two receivers are named `{}`", receiver.name),
                    ));
                }
                receivers.push(receiver);
            }
        }
    }
    let defaults = Route {
        receiver: String::new(),
        group_by: Vec::new(),
        group_wait_ms: 30_000,
        group_interval_ms: 300_000,
        repeat_interval_ms: 4 * 3_600_000,
        matchers: Vec::new(),
        continue_matching: false,
        routes: Vec::new(),
        mute_time_intervals: Vec::new(),
        active_time_intervals: Vec::new(),
    };
    let route = match field("route") {
        Some(node) => checker.route(node, &defaults, &receivers, &time_intervals, true),
        None => {
            checker.push(
                Diagnostic::error("missing-key", root.span, "the configuration has no `route`")
                    .hint("add `route: {receiver: NAME}`"),
            );
            None
        }
    };
    let mut inhibit_rules = Vec::new();
    if let Some(list) = field("inhibit_rules").and_then(|n| n.as_seq()) {
        for item in list {
            let entries = checker.entries(
                item,
                "an inhibit rule",
                &[
                    "source_matchers",
                    "target_matchers",
                    "equal",
                    "source_match",
                    "target_match",
                    "source_match_re",
                    "target_match_re",
                ],
            );
            let mut rule = Inhibit { source: Vec::new(), target: Vec::new(), equal: Vec::new() };
            for (key, value, _) in entries {
                match key {
                    "source_matchers" => rule.source.extend(checker.matchers(value)),
                    "target_matchers" => rule.target.extend(checker.matchers(value)),
                    "source_match" | "source_match_re" => {
                        rule.source.extend(checker.match_map(value, key.ends_with("_re")))
                    }
                    "target_match" | "target_match_re" => {
                        rule.target.extend(checker.match_map(value, key.ends_with("_re")))
                    }
                    _ => rule.equal = checker.strings(value, "`equal`"),
                }
            }
            inhibit_rules.push(rule);
        }
    }
    checker.diagnostics.sort_by_key(|d| (d.span.line, d.span.col));
    let ok = !checker.diagnostics.iter().any(Diagnostic::is_error);
    let config = route.filter(|_| ok).map(|route| Config { global, route, receivers, inhibit_rules, time_intervals });
    (config, checker.diagnostics)
}

impl Checker {
    fn strings(&mut self, node: &Node, what: &str) -> Vec<String> {
        match node.as_seq() {
            Some(items) => items.iter().filter_map(|i| self.string(i, what)).collect(),
            None => {
                self.push(Diagnostic::error("wrong-type", node.span, format!("{what} must be a list")));
                Vec::new()
            }
        }
    }

    fn matchers(&mut self, node: &Node) -> Vec<Matcher> {
        let mut out = Vec::new();
        for text in self.strings(node, "`matchers`") {
            match parse_matcher(&text) {
                Some(m) => out.push(m),
                None => self.push(
                    Diagnostic::error("bad-matcher", node.span, format!("`{text}` is not a matcher"))
                        .expected("`name=value`, `name!=value`, `name=~regex` or `name!~regex`"),
                ),
            }
        }
        out
    }

    fn match_map(&mut self, node: &Node, regex: bool) -> Vec<Matcher> {
        let op = if regex { MatchOp::Regex } else { MatchOp::Equal };
        let mut out = Vec::new();
        for (name, value, _) in self.entries(node, "`match`", &[]) {
            if let Some(value) = self.string(value, &format!("`{name}`")) {
                out.push(Matcher { name: name.to_string(), op, value });
            }
        }
        out
    }

    fn route(
        &mut self,
        node: &Node,
        parent: &Route,
        receivers: &[Receiver],
        intervals: &BTreeMap<String, Vec<TimeInterval>>,
        root: bool,
    ) -> Option<Route> {
        let entries = self.entries(node, "a route", ROUTE_KEYS);
        let field = |key: &str| entries.iter().find(|(k, ..)| *k == key).map(|(_, v, _)| *v);
        let mut route = Route {
            matchers: Vec::new(),
            continue_matching: false,
            routes: Vec::new(),
            mute_time_intervals: Vec::new(),
            active_time_intervals: Vec::new(),
            ..parent.clone()
        };
        match field("receiver").and_then(|n| self.string(n, "`receiver`")) {
            Some(name) => {
                if !receivers.iter().any(|r| r.name == name) {
                    self.push(Diagnostic::error(
                        "unknown-receiver",
                        field("receiver").map_or(node.span, |n| n.span),
                        format!("no receiver is named `{name}`"),
                    ));
                }
                route.receiver = name;
            }
            None if root => {
                self.push(Diagnostic::error("missing-key", node.span, "the root route has no `receiver`"));
                return None;
            }
            None => {}
        }
        if let Some(n) = field("group_by") {
            route.group_by = self.strings(n, "`group_by`");
        }
        for (key, slot) in [("group_wait", 0), ("group_interval", 1), ("repeat_interval", 2)] {
            if let Some(n) = field(key) {
                match n.as_scalar().and_then(prometheus_duration) {
                    Some(ms) => {
                        *[&mut route.group_wait_ms, &mut route.group_interval_ms, &mut route.repeat_interval_ms][slot] =
                            ms
                    }
                    None => self.push(Diagnostic::error(
                        "wrong-type",
                        n.span,
                        format!("`{key}` must be a duration such as 30s or 5m"),
                    )),
                }
            }
        }
        if let Some(n) = field("matchers") {
            route.matchers.extend(self.matchers(n));
        }
        if let Some(n) = field("match") {
            route.matchers.extend(self.match_map(n, false));
        }
        if let Some(n) = field("match_re") {
            route.matchers.extend(self.match_map(n, true));
        }
        route.continue_matching = field("continue").and_then(|n| n.as_scalar()) == Some("true");
        for key in ["mute_time_intervals", "active_time_intervals"] {
            let Some(node) = field(key) else { continue };
            if root {
                self.push(
                    Diagnostic::error("bad-value", node.span, format!("the root route cannot have `{key}`"))
                        .hint("put them on a child route"),
                );
                continue;
            }
            let names = self.strings(node, &format!("`{key}`"));
            for name in &names {
                if !intervals.contains_key(name) {
                    self.push(
                        Diagnostic::error("unknown-interval", node.span, format!("no time interval is named `{name}`"))
                            .hint("declare it under `time_intervals:`"),
                    );
                }
            }
            if key == "mute_time_intervals" {
                route.mute_time_intervals = names;
            } else {
                route.active_time_intervals = names;
            }
        }
        if let Some(children) = field("routes").and_then(|n| n.as_seq()) {
            let inherited = route.clone();
            route.routes =
                children.iter().filter_map(|c| self.route(c, &inherited, receivers, intervals, false)).collect();
        }
        Some(route)
    }
}

/// `name=value`, `name!="value"`, `name=~regex`, `name!~regex`.
pub fn parse_matcher(text: &str) -> Option<Matcher> {
    let text = text.trim();
    let (at, op, width) = ["!=", "=~", "!~", "="]
        .iter()
        .filter_map(|op| text.find(op).map(|at| (at, *op, op.len())))
        .min_by_key(|(at, op, _)| (*at, std::cmp::Reverse(op.len())))?;
    let name = text[..at].trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let raw = text[at + width..].trim();
    let value = raw.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(raw).replace("\\\"", "\"");
    let op = match op {
        "!=" => MatchOp::NotEqual,
        "=~" => MatchOp::Regex,
        "!~" => MatchOp::NotRegex,
        _ => MatchOp::Equal,
    };
    Some(Matcher { name: name.to_string(), op, value })
}
