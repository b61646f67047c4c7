//! Prometheus rule files (`groups:` of recording and alerting rules), read as Prometheus reads
//! them, with every unknown key and wrong type reported at its place. PromQL expressions are
//! kept as text with their span; the server parses them (and reports their errors there).

use std::collections::BTreeMap;

use crate::diag::{Diagnostic, Span};
use crate::service::{Checker, parse_duration};
use crate::yaml::{self, Node};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuleFile {
    pub groups: Vec<Group>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    /// Evaluation interval; `None` for the server's default.
    pub interval_ms: Option<u64>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub kind: RuleKind,
    pub expr: String,
    pub expr_span: Span,
    pub labels: BTreeMap<String, String>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    Record(String),
    Alert { name: String, for_ms: u64, keep_firing_for_ms: u64, annotations: BTreeMap<String, String> },
}

const GROUP_KEYS: &[&str] = &["name", "interval", "rules", "limit", "query_offset", "labels"];
const RULE_KEYS: &[&str] = &["record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"];

/// Parses a rule file; every problem is reported at once.
pub fn parse(source: &str) -> (Option<RuleFile>, Vec<Diagnostic>) {
    let root = match yaml::parse(source) {
        Ok(Some(root)) => root,
        Ok(None) => return (Some(RuleFile::default()), Vec::new()),
        Err(diagnostic) => return (None, vec![diagnostic]),
    };
    let mut checker = Checker { diagnostics: Vec::new() };
    if root.get("rule_files").is_some() || root.get("tests").is_some() {
        checker.push(
            Diagnostic::error("not-rules", root.span, "this is a promtool unit-test file, not a rule file")
                .hint("pass the rule files it names instead"),
        );
        return (None, checker.diagnostics);
    }
    let mut file = RuleFile::default();
    for (_, value, _) in checker.entries(&root, "the rule file", &["groups"]) {
        let Some(items) = value.as_seq() else {
            checker.push(
                Diagnostic::error("wrong-type", value.span, "`groups` must be a list").expected("a list of groups"),
            );
            continue;
        };
        for item in items {
            if let Some(group) = checker.group(item, &file.groups) {
                file.groups.push(group);
            }
        }
    }
    checker.diagnostics.sort_by_key(|d| (d.span.line, d.span.col));
    let ok = !checker.diagnostics.iter().any(Diagnostic::is_error);
    (ok.then_some(file), checker.diagnostics)
}

impl Checker {
    fn group(&mut self, node: &Node, seen: &[Group]) -> Option<Group> {
        let entries = self.entries(node, "a group", GROUP_KEYS);
        let field = |key: &str| entries.iter().find(|(k, ..)| *k == key).map(|(_, v, _)| *v);
        let name = match field("name") {
            Some(n) => self.string(n, "a group's `name`")?,
            None => {
                self.push(Diagnostic::error("missing-key", node.span, "a group has no `name`"));
                return None;
            }
        };
        if seen.iter().any(|g| g.name == name) {
            self.push(Diagnostic::error("duplicate-group", node.span, format!("group `{name}` appears twice")));
        }
        let interval_ms = field("interval").and_then(|n| self.duration(n, "`interval`"));
        for key in ["limit", "query_offset", "labels"] {
            if let Some((_, _, span)) = entries.iter().find(|(k, ..)| *k == key) {
                self.push(Diagnostic::warning(
                    "unsupported",
                    *span,
                    format!("`{key}` of a group is not supported yet; it is ignored"),
                ));
            }
        }
        let mut rules = Vec::new();
        if let Some(list) = field("rules") {
            match list.as_seq() {
                Some(items) => rules.extend(items.iter().filter_map(|r| self.rule(r))),
                None if list.is_null() => {}
                None => self.push(Diagnostic::error("wrong-type", list.span, "`rules` must be a list")),
            }
        }
        Some(Group { name, interval_ms, rules })
    }

    fn rule(&mut self, node: &Node) -> Option<Rule> {
        let entries = self.entries(node, "a rule", RULE_KEYS);
        let field = |key: &str| entries.iter().find(|(k, ..)| *k == key).map(|(_, v, _)| *v);
        let expr_node = match field("expr") {
            Some(n) => n,
            None => {
                self.push(Diagnostic::error("missing-key", node.span, "a rule has no `expr`"));
                return None;
            }
        };
        let expr = match expr_node.as_scalar() {
            Some(text) if !text.trim().is_empty() => text.trim().to_string(),
            _ => {
                self.push(Diagnostic::error("wrong-type", expr_node.span, "`expr` must be a PromQL expression"));
                return None;
            }
        };
        let labels = self.string_map(field("labels"), "`labels`");
        let kind = match (field("record"), field("alert")) {
            (Some(record), None) => {
                for key in ["for", "keep_firing_for", "annotations"] {
                    if let Some((_, _, span)) = entries.iter().find(|(k, ..)| *k == key) {
                        self.push(Diagnostic::error(
                            "wrong-key",
                            *span,
                            format!("`{key}` applies to alerting rules, not recording rules"),
                        ));
                    }
                }
                let name = self.string(record, "`record`")?;
                if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                    || name.starts_with(|c: char| c.is_ascii_digit())
                {
                    self.push(Diagnostic::error(
                        "bad-name",
                        record.span,
                        format!("`{name}` is not a valid metric name"),
                    ));
                }
                RuleKind::Record(name)
            }
            (None, Some(alert)) => {
                let name = self.string(alert, "`alert`")?;
                let duration = |checker: &mut Checker, key: &str| {
                    field(key)
                        .and_then(|n| {
                            n.as_scalar()
                                .and_then(prometheus_duration)
                                .or_else(|| checker.duration(n, &format!("`{key}`")))
                        })
                        .unwrap_or(0)
                };
                let for_ms = duration(self, "for");
                let keep_firing_for_ms = duration(self, "keep_firing_for");
                let annotations = self.string_map(field("annotations"), "`annotations`");
                RuleKind::Alert { name, for_ms, keep_firing_for_ms, annotations }
            }
            (Some(_), Some(_)) => {
                self.push(
                    Diagnostic::error("rule-kind", node.span, "a rule has both `record` and `alert`")
                        .hint("split it into two rules"),
                );
                return None;
            }
            (None, None) => {
                self.push(Diagnostic::error("rule-kind", node.span, "a rule has neither `record` nor `alert`"));
                return None;
            }
        };
        Some(Rule { kind, expr, expr_span: expr_node.span, labels, span: node.span })
    }

    fn string_map(&mut self, node: Option<&Node>, what: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(node) = node else { return out };
        for (key, value, _) in yaml::entries(node, what, &[], true, &mut self.diagnostics) {
            match value.as_scalar() {
                Some(text) => {
                    out.insert(key.to_string(), text.to_string());
                }
                None => self.push(Diagnostic::error(
                    "wrong-type",
                    value.span,
                    format!("`{key}` in {what} must be a string"),
                )),
            }
        }
        out
    }
}

/// Prometheus's durations: `1h30m`, `90s`, `2d`, `1w`, `0`.
pub fn prometheus_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "0" {
        return Some(0);
    }
    if let Some(ms) = parse_duration(text) {
        return Some(ms);
    }
    let mut total = 0u64;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().ok()?;
        number.clear();
        let unit = match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            'w' => 7 * 86_400_000,
            'y' => 365 * 86_400_000,
            _ => return None,
        };
        total += n * unit;
    }
    number.is_empty().then_some(total)
}
