//! Prometheus rule files evaluated over the time-series store: recording rules write their
//! result back as series; alerting rules move each alert through pending (while `for` runs),
//! firing, and resolved (after `keep_firing_for`), each move an event in the log. Annotations
//! take `{{ $labels.NAME }}`, `{{ $value }}` (and their `.Labels`/`.Value` spellings).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use metrics::Labels;
use metrics::promql::{Engine, Value};
use spec::rules::{Group, RuleKind};

/// Groups without an `interval` are evaluated this often.
pub const DEFAULT_INTERVAL_MS: u64 = 15_000;

/// What one evaluation of a group gives: samples from recording rules, and alert moves as
/// `(event kind, payload)`.
pub type Evaluation = (Vec<(Labels, i64, f64)>, Vec<(&'static str, serde_json::Value)>);

#[derive(Debug, Clone)]
pub struct GroupState {
    pub file: PathBuf,
    pub group: Group,
    pub next_due: i64,
    pub last_evaluation: Option<i64>,
    /// Per rule: the last evaluation's error, if it failed.
    pub errors: Vec<Option<String>>,
    /// Per alerting rule: its alerts by label set.
    pub alerts: Vec<HashMap<Labels, Active>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Active {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub value: f64,
    pub active_at: i64,
    pub firing: bool,
    /// While `keep_firing_for` holds a vanished alert: when it vanished.
    pub vanished_at: Option<i64>,
}

/// The rule files under `paths` (files, or directories of `*.yml`/`*.yaml`/`*.rules`), parsed; a
/// file that does not parse, or whose expressions do not, is skipped with a warning.
pub fn load(paths: &[PathBuf]) -> Vec<(PathBuf, Group)> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            found.retain(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml" || e == "rules"));
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    let mut out = Vec::new();
    for file in files {
        match check_file(&file) {
            Ok(groups) => out.extend(groups.into_iter().map(|g| (file.clone(), g))),
            Err(error) => tracing::warn!("{error}"),
        }
    }
    out
}

/// A rule file's groups, or the first problem as `FILE:LINE:COL: message`.
pub fn check_file(file: &Path) -> Result<Vec<Group>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let (parsed, diagnostics) = spec::rules::parse(&text);
    let Some(parsed) = parsed else {
        let d = diagnostics.iter().find(|d| d.is_error()).or(diagnostics.first());
        return Err(d.map_or_else(
            || format!("{} is not a rule file", file.display()),
            |d| format!("{}:{}:{}: {}", file.display(), d.span.line, d.span.col, d.message),
        ));
    };
    for group in &parsed.groups {
        for rule in &group.rules {
            if let Err(error) = metrics::promql::parse(&rule.expr) {
                let first = error.to_string().lines().next().unwrap_or_default().to_string();
                return Err(format!(
                    "{}:{}:{}: invalid PromQL: {first}",
                    file.display(),
                    rule.expr_span.line,
                    rule.expr_span.col
                ));
            }
        }
    }
    Ok(parsed.groups)
}

impl GroupState {
    pub fn new(file: PathBuf, group: Group, now: i64) -> GroupState {
        let n = group.rules.len();
        GroupState {
            file,
            group,
            next_due: now,
            last_evaluation: None,
            errors: vec![None; n],
            alerts: vec![HashMap::new(); n],
        }
    }

    pub fn interval_ms(&self) -> u64 {
        self.group.interval_ms.unwrap_or(DEFAULT_INTERVAL_MS).max(1_000)
    }

    /// Evaluates every rule at `now`; returns the samples recording rules produced and the
    /// alert transitions as `(event kind, payload)`.
    pub fn evaluate(&mut self, db: &metrics::Db, now: i64) -> Evaluation {
        let mut samples = Vec::new();
        let mut events = Vec::new();
        self.last_evaluation = Some(now);
        self.next_due = now + self.interval_ms() as i64;
        for (index, rule) in self.group.rules.iter().enumerate() {
            let result = match Engine::instant(db, &rule.expr, now) {
                Ok(Value::Vector(v)) => Ok(v),
                Ok(Value::Scalar(v)) => Ok(vec![metrics::promql::Sample { labels: Labels::default(), v, ts: now }]),
                Ok(other) => Err(format!("the expression gives a {}, not an instant vector", other.kind())),
                Err(error) => Err(error.to_string()),
            };
            let vector = match result {
                Ok(v) => {
                    self.errors[index] = None;
                    v
                }
                Err(error) => {
                    self.errors[index] = Some(error);
                    continue;
                }
            };
            match &rule.kind {
                RuleKind::Record(name) => {
                    for sample in vector {
                        let mut labels = sample.labels.with(metrics::labels::NAME, name);
                        for (k, v) in &rule.labels {
                            labels = labels.with(k, v);
                        }
                        samples.push((labels, now, sample.v));
                    }
                }
                RuleKind::Alert { name, for_ms, keep_firing_for_ms, annotations } => {
                    let alerts = &mut self.alerts[index];
                    let mut seen = std::collections::HashSet::new();
                    for sample in vector {
                        let mut labels = sample.labels.without_name();
                        for (k, v) in &rule.labels {
                            labels = labels.with(k, &expand(v, &sample.labels, sample.v));
                        }
                        labels = labels.with("alertname", name);
                        seen.insert(labels.clone());
                        let rendered: BTreeMap<String, String> =
                            annotations.iter().map(|(k, v)| (k.clone(), expand(v, &labels, sample.v))).collect();
                        let alert = alerts.entry(labels.clone()).or_insert_with(|| {
                            let active = Active {
                                labels: labels.clone(),
                                annotations: rendered.clone(),
                                value: sample.v,
                                active_at: now,
                                firing: false,
                                vanished_at: None,
                            };
                            events.push(("alert.pending", payload(&self.group.name, &active)));
                            active
                        });
                        alert.value = sample.v;
                        alert.annotations = rendered;
                        alert.vanished_at = None;
                        if !alert.firing && now - alert.active_at >= *for_ms as i64 {
                            alert.firing = true;
                            events.push(("alert.firing", payload(&self.group.name, alert)));
                        }
                    }
                    let group = self.group.name.clone();
                    alerts.retain(|labels, alert| {
                        if seen.contains(labels) {
                            return true;
                        }
                        if alert.firing {
                            let vanished = *alert.vanished_at.get_or_insert(now);
                            if now - vanished < *keep_firing_for_ms as i64 {
                                return true;
                            }
                            events.push(("alert.resolved", payload(&group, alert)));
                        } else {
                            events.push(("alert.inactive", payload(&group, alert)));
                        }
                        false
                    });
                }
            }
        }
        (samples, events)
    }
}

fn payload(group: &str, alert: &Active) -> serde_json::Value {
    let labels: serde_json::Map<String, serde_json::Value> =
        alert.labels.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(v))).collect();
    serde_json::json!({
        "group": group,
        "labels": labels,
        "annotations": alert.annotations,
        "value": alert.value,
        "summary": alert.annotations.get("summary").or(alert.annotations.get("description")),
    })
}

/// Fills `{{ $labels.x }}`, `{{ .Labels.x }}`, `{{ $value }}`, `{{ .Value }}` (a `| humanize`
/// and other pipes are read as plain printing). Other template code is left as written.
pub fn expand(template: &str, labels: &Labels, value: f64) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = rest[start + 2..start + end].trim().trim_start_matches('-').trim_end_matches('-').trim();
        let head = inner.split('|').next().unwrap_or("").trim();
        let replaced = if let Some(name) = head.strip_prefix("$labels.").or_else(|| head.strip_prefix(".Labels.")) {
            Some(labels.get(name).to_string())
        } else if head == "$value" || head == ".Value" {
            Some(metrics::promql::format_value(value))
        } else {
            None
        };
        match replaced {
            Some(text) => out.push_str(&text),
            None => out.push_str(&rest[start..start + end + 2]),
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}
