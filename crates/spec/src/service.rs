//! The service file, `.tandem/service.yml`: a service, its environments, and for each the
//! target, instances, health checks, rollout strategy, analysis and gates — checked with the same
//! diagnostics as workflows.

use crate::diag::{Diagnostic, Span, did_you_mean};
use crate::expr::Value;
use crate::yaml::{self, Node};

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub environments: Vec<Environment>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub name: String,
    pub span: Span,
    pub target: Target,
    pub instances: u32,
    /// The port the application listens on inside its container (docker and swarm targets).
    pub port: u16,
    /// The address of the environment's proxy.
    pub listen: Option<String>,
    pub health: Health,
    /// Keep each client on one version during a rollout.
    pub sticky: Option<Sticky>,
    pub strategy: Strategy,
    pub analysis: Analysis,
    pub gates: Gates,
    /// Checks run against the environment (a path probes its proxy).
    pub probes: Vec<crate::monitors::ProbeSpec>,
    pub slos: Vec<crate::monitors::SloSpec>,
    /// The path each instance serves Prometheus metrics on, scraped every 15 s.
    pub metrics_path: Option<String>,
    /// Series the service's overview shows beside traffic, errors and latency (business
    /// counters such as orders or sign-ups): name → PromQL.
    pub key_series: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Tandem runs the command (`$PORT` is the instance's port).
    Process {
        command: String,
    },
    Docker {
        image: String,
    },
    Swarm {
        image: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// HTTP path answering 2xx when an instance is ready (with `probe: Http`).
    pub path: String,
    pub probe: Probe,
    /// How long a new instance has to become ready before the rollout fails.
    pub ready_within_ms: u64,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Consecutive failures before an instance counts as down.
    pub threshold: u32,
    /// A different check for instances already serving (`health.liveness`); `None`: the same.
    pub liveness: Option<Box<Health>>,
}

/// What keeps a client on one version: a request header or a cookie.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sticky {
    pub header: Option<String>,
    pub cookie: Option<String>,
}

/// How an instance is checked: readiness before it gets traffic, liveness after.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// GET `path` answers 2xx.
    Http,
    /// The port accepts a connection.
    Tcp,
    /// A shell command exits 0 (`$PORT` is the instance's port).
    Command(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Traffic percentages in order, each held at least `pause_ms`.
    Canary {
        steps: Vec<f64>,
        pause_ms: u64,
    },
    Rolling {
        max_surge: u32,
        max_unavailable: u32,
    },
    /// The new version starts beside the old; after `preview_ms` (reachable with the
    /// `x-tandem-preview` header) all traffic switches; the old stays warm `keep_old_ms`.
    BlueGreen {
        preview_ms: u64,
        keep_old_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub alpha: f64,
    pub min_requests: u64,
    /// `deadline`: the longest a judged step waits for enough traffic to decide. `None` (the
    /// default): it waits as long as it takes — no traffic means "wait", never "fail".
    pub deadline_ms: Option<u64>,
    /// `on-deadline`: what a step that reached its deadline undecided does.
    pub on_deadline: OnDeadline,
}

/// What a step does when its deadline passes before the analysis could decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDeadline {
    /// Roll back: a release must prove itself on traffic.
    #[default]
    Rollback,
    /// Go on: little traffic is no evidence against the release.
    Promote,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gates {
    pub approval: bool,
    /// `security: block`: a commit with secret findings or critical vulnerabilities is held
    /// until a maintainer overrides with a reason.
    pub block_on_findings: bool,
    /// `provenance: required`: only releases with provenance signed by this Tandem, of a commit
    /// on a protected branch.
    pub require_provenance: bool,
    pub freezes: Vec<Freeze>,
    /// Refuse to start while the error budget is below this fraction (0..1).
    pub min_error_budget: Option<f64>,
    /// The availability objective the budget is measured against, e.g. 0.999.
    pub objective: f64,
}

impl Default for Gates {
    fn default() -> Gates {
        Gates {
            approval: false,
            block_on_findings: false,
            require_provenance: false,
            freezes: Vec::new(),
            min_error_budget: None,
            objective: 0.999,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Freeze {
    pub cron: String,
    pub duration_ms: u64,
    pub timezone: String,
}

impl Freeze {
    /// When the window that covers `now` ends, if one does.
    pub fn active_at(&self, now: jiff::Timestamp) -> Result<Option<jiff::Timestamp>, String> {
        use std::str::FromStr;
        let cron = croner::Cron::from_str(&self.cron).map_err(|e| format!("cron `{}`: {e}", self.cron))?;
        let zone =
            jiff::tz::TimeZone::get(&self.timezone).map_err(|e| format!("time zone `{}`: {e}", self.timezone))?;
        let here = now.to_zoned(zone);
        let Ok(start) = cron.find_previous_occurrence(&here, true) else { return Ok(None) };
        let end = start.timestamp() + jiff::SignedDuration::from_millis(self.duration_ms as i64);
        Ok((now < end).then_some(end))
    }
}

const TOP_KEYS: &[&str] = &["service", "environments"];
const ENV_KEYS: &[&str] = &[
    "target",
    "command",
    "image",
    "port",
    "instances",
    "listen",
    "health",
    "sticky",
    "strategy",
    "analysis",
    "gates",
    "probes",
    "slos",
];
const HEALTH_KEYS: &[&str] =
    &["path", "tcp", "command", "interval", "timeout", "threshold", "ready-within", "liveness"];
const LIVENESS_KEYS: &[&str] = &["path", "tcp", "command", "interval", "timeout", "threshold"];
const STRATEGY_KEYS: &[&str] = &["canary", "rolling", "blue-green"];
const ANALYSIS_KEYS: &[&str] = &["alpha", "min-requests", "deadline", "on-deadline"];
const GATE_KEYS: &[&str] = &["approval", "freeze", "error-budget", "objective", "security", "provenance"];

/// Parses a duration such as `500ms`, `30s`, `10m`, `2h` into milliseconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale = match unit {
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return None,
    };
    (value >= 0.0).then_some((value * scale) as u64)
}

/// Parses and checks a service file; every problem is reported at once.
pub fn parse(source: &str) -> (Option<Service>, Vec<Diagnostic>) {
    let root = match yaml::parse(source) {
        Ok(Some(root)) => root,
        Ok(None) => {
            return (
                None,
                vec![
                    Diagnostic::error("empty-file", Span::at(1, 1, 1), "the service file is empty")
                        .hint("start with `service: NAME` and `environments:`"),
                ],
            );
        }
        Err(diagnostic) => return (None, vec![diagnostic]),
    };
    let mut checker = Checker { diagnostics: Vec::new() };
    let service = checker.service(&root);
    checker.diagnostics.sort_by_key(|d| (d.span.line, d.span.col));
    (service, checker.diagnostics)
}

pub(crate) struct Checker {
    pub(crate) diagnostics: Vec<Diagnostic>,
}

impl Checker {
    pub(crate) fn push(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    pub(crate) fn entries<'n>(&mut self, node: &'n Node, what: &str, known: &[&str]) -> Vec<(&'n str, &'n Node, Span)> {
        yaml::entries(node, what, known, false, &mut self.diagnostics)
    }

    pub(crate) fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match node.as_scalar() {
            Some(text) if !text.trim().is_empty() => Some(text.to_string()),
            _ => {
                self.push(
                    Diagnostic::error("wrong-type", node.span, format!("{what} must be a non-empty string"))
                        .expected("a string"),
                );
                None
            }
        }
    }

    pub(crate) fn number(&mut self, node: &Node, what: &str, min: f64, max: f64) -> Option<f64> {
        match node.to_value() {
            Value::Number(n) if n >= min && n <= max => Some(n),
            _ => {
                let found = node.as_scalar().map_or_else(|| node.type_name().to_string(), |t| format!("`{t}`"));
                self.push(
                    Diagnostic::error(
                        "out-of-range",
                        node.span,
                        format!("{what} must be a number from {min} to {max}, found {found}"),
                    )
                    .expected(format!("a number from {min} to {max}")),
                );
                None
            }
        }
    }

    pub(crate) fn duration(&mut self, node: &Node, what: &str) -> Option<u64> {
        match node.as_scalar().and_then(parse_duration) {
            Some(ms) => Some(ms),
            None => {
                let found = node.as_scalar().unwrap_or_default().to_string();
                self.push(
                    Diagnostic::error("wrong-type", node.span, format!("{what} must be a duration, found `{found}`"))
                        .expected("a duration such as 500ms, 30s, 10m or 2h"),
                );
                None
            }
        }
    }

    fn service(&mut self, root: &Node) -> Option<Service> {
        let entries = self.entries(root, "the service file", TOP_KEYS);
        let mut name = None;
        let mut environments = Vec::new();
        for (key, value, _) in &entries {
            match *key {
                "service" => name = self.string(value, "`service`"),
                _ => {
                    for (env_name, env, span) in self.entries(value, "`environments`", &[]) {
                        if let Some(environment) = self.environment(env_name, env, span) {
                            environments.push(environment);
                        }
                    }
                }
            }
        }
        if !entries.iter().any(|(k, ..)| *k == "service") {
            self.push(
                Diagnostic::error(
                    "missing-key",
                    Span::at(root.span.line, root.span.col, 1),
                    "the service file has no `service:` name",
                )
                .hint("add `service: my-service`"),
            );
        }
        if !entries.iter().any(|(k, ..)| *k == "environments") {
            self.push(
                Diagnostic::error(
                    "missing-key",
                    Span::at(root.span.line, root.span.col, 1),
                    "the service file has no `environments:`",
                )
                .hint("add at least one environment, e.g. `staging:` with a `target`"),
            );
        }
        Some(Service { name: name?, environments })
    }

    fn environment(&mut self, name: &str, node: &Node, span: Span) -> Option<Environment> {
        let what = format!("environment `{name}`");
        let entries = self.entries(node, &what, ENV_KEYS);
        let field = |key: &str| entries.iter().find(|(k, ..)| *k == key).map(|(_, v, _)| *v);
        let target_kind = match field("target") {
            Some(node) => self.string(node, "`target`"),
            None => {
                self.push(
                    Diagnostic::error("missing-key", span, format!("{what} has no `target`"))
                        .hint("add `target: process` (with `command`), `docker` or `swarm` (with `image`)"),
                );
                None
            }
        };
        let target = match target_kind.as_deref() {
            Some("process") => match field("command") {
                Some(node) => self.string(node, "`command`").map(|command| Target::Process { command }),
                None => {
                    self.push(
                        Diagnostic::error("missing-key", span, format!("{what}: a `process` target needs a `command`"))
                            .hint("the command listens on `$PORT`, e.g. `command: python3 app.py --port $PORT`"),
                    );
                    None
                }
            },
            Some(kind @ ("docker" | "swarm")) => match field("image") {
                Some(node) => self
                    .string(node, "`image`")
                    .map(|image| if kind == "docker" { Target::Docker { image } } else { Target::Swarm { image } }),
                None => {
                    self.push(Diagnostic::error(
                        "missing-key",
                        span,
                        format!("{what}: a `{kind}` target needs an `image`"),
                    ));
                    None
                }
            },
            Some(other) => {
                let target_node = field("target").unwrap_or(node);
                let hint = did_you_mean(other, ["process", "docker", "swarm"]).map(|s| format!("did you mean `{s}`?"));
                self.push(
                    Diagnostic::error("unknown-target", target_node.span, format!("unknown target `{other}`"))
                        .expected("process, docker or swarm")
                        .maybe_hint(hint),
                );
                None
            }
            None => None,
        };
        let instances =
            field("instances").map_or(Some(1.0), |n| self.number(n, "`instances`", 1.0, 1000.0)).unwrap_or(1.0) as u32;
        let port =
            field("port").map_or(Some(8080.0), |n| self.number(n, "`port`", 1.0, 65535.0)).unwrap_or(8080.0) as u16;
        let listen = field("listen").and_then(|n| self.string(n, "`listen`"));
        if let (Some(text), Some(node)) = (&listen, field("listen"))
            && text.parse::<std::net::SocketAddr>().is_err()
        {
            self.push(Diagnostic::error(
                "wrong-type",
                node.span,
                format!("`listen` must be an address such as 127.0.0.1:8090, found `{text}`"),
            ));
        }
        let health = self.health(field("health"));
        let sticky = field("sticky").map(|node| {
            let mut sticky = Sticky::default();
            for (key, value, _) in self.entries(node, "`sticky`", &["header", "cookie"]) {
                let text = self.string(value, &format!("`sticky.{key}`"));
                if key == "header" { sticky.header = text } else { sticky.cookie = text }
            }
            sticky
        });
        let strategy = self.strategy(field("strategy"), &what);
        let analysis = self.analysis(field("analysis"));
        let gates = self.gates(field("gates"));
        let probes = field("probes").map(|n| self.probes(n)).unwrap_or_default();
        let slos = field("slos").map(|n| self.slos(n, &probes, true)).unwrap_or_default();
        let metrics_path = field("metrics").and_then(|n| self.string(n, "`metrics`"));
        let mut key_series = Vec::new();
        if let Some(node) = field("key-series") {
            for (name, query, _) in self.entries(node, "`key-series`", &[]) {
                if let Some(text) = self.string(query, &format!("key series `{name}`")) {
                    key_series.push((name.to_string(), text));
                }
            }
        }
        if let (Some(path), Some(node)) = (&metrics_path, field("metrics"))
            && !path.starts_with('/')
        {
            self.push(Diagnostic::error(
                "wrong-type",
                node.span,
                format!("`metrics` must be a path such as /metrics, found `{path}`"),
            ));
        }
        Some(Environment {
            probes,
            slos,
            metrics_path,
            key_series,
            name: name.to_string(),
            span,
            target: target?,
            instances,
            port,
            listen,
            health,
            sticky,
            strategy: strategy?,
            analysis,
            gates,
        })
    }

    fn health(&mut self, node: Option<&Node>) -> Health {
        let health = Health {
            path: "/".into(),
            probe: Probe::Http,
            ready_within_ms: 60_000,
            interval_ms: 1_000,
            timeout_ms: 2_000,
            threshold: 3,
            liveness: None,
        };
        let Some(node) = node else { return health };
        let (mut health, liveness) = self.health_fields(node, "health", HEALTH_KEYS, health);
        if let Some(node) = liveness {
            // Liveness starts from the readiness settings and overrides what it names.
            let (live, _) = self.health_fields(node, "health.liveness", LIVENESS_KEYS, health.clone());
            health.liveness = Some(Box::new(live));
        }
        health
    }

    /// Reads the keys of a `health` block (or its `liveness` block) over `health`.
    fn health_fields<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        known: &[&str],
        mut health: Health,
    ) -> (Health, Option<&'n Node>) {
        let mut liveness = None;
        for (key, value, _) in self.entries(node, &format!("`{what}`"), known) {
            match key {
                "liveness" => liveness = Some(value),
                "path" => {
                    if let Some(path) = self.string(value, &format!("`{what}.path`")) {
                        if !path.starts_with('/') {
                            self.push(
                                Diagnostic::error(
                                    "wrong-type",
                                    value.span,
                                    format!("`{what}.path` must start with `/`, found `{path}`"),
                                )
                                .hint(format!("write `/{path}`")),
                            );
                        }
                        health.path = path;
                        health.probe = Probe::Http;
                    }
                }
                "tcp" => {
                    if matches!(value.to_value(), Value::Bool(true)) {
                        health.probe = Probe::Tcp;
                    }
                }
                "command" => {
                    if let Some(command) = self.string(value, &format!("`{what}.command`")) {
                        health.probe = Probe::Command(command);
                    }
                }
                "ready-within" => {
                    health.ready_within_ms =
                        self.duration(value, &format!("`{what}.ready-within`")).unwrap_or(health.ready_within_ms)
                }
                "interval" => {
                    health.interval_ms =
                        self.duration(value, &format!("`{what}.interval`")).unwrap_or(health.interval_ms)
                }
                "timeout" => {
                    health.timeout_ms = self.duration(value, &format!("`{what}.timeout`")).unwrap_or(health.timeout_ms)
                }
                _ => {
                    health.threshold = self
                        .number(value, &format!("`{what}.threshold`"), 1.0, 100.0)
                        .map_or(health.threshold, |n| n as u32)
                }
            }
        }
        (health, liveness)
    }

    fn strategy(&mut self, node: Option<&Node>, what: &str) -> Option<Strategy> {
        let Some(node) = node else {
            return Some(Strategy::Canary { steps: vec![10.0, 50.0, 100.0], pause_ms: 30_000 });
        };
        let entries = self.entries(node, "`strategy`", STRATEGY_KEYS);
        if entries.len() != 1 {
            self.push(
                Diagnostic::error(
                    "strategy",
                    node.span,
                    format!("{what} needs exactly one strategy, found {}", entries.len()),
                )
                .expected("one of `canary`, `rolling`, `blue-green`"),
            );
            return None;
        }
        let (kind, value, _) = entries[0];
        match kind {
            "canary" => {
                let mut steps = vec![10.0, 50.0, 100.0];
                let mut pause_ms = 30_000;
                for (key, v, _) in self.entries(value, "`canary`", &["steps", "pause"]) {
                    if key == "pause" {
                        pause_ms = self.duration(v, "`canary.pause`").unwrap_or(pause_ms);
                        continue;
                    }
                    let Some(items) = v.as_seq() else {
                        self.push(
                            Diagnostic::error(
                                "wrong-type",
                                v.span,
                                "`canary.steps` must be a list of traffic percentages",
                            )
                            .expected("e.g. [10, 50, 100]"),
                        );
                        continue;
                    };
                    let parsed: Vec<f64> =
                        items.iter().filter_map(|i| self.number(i, "a canary step", 0.0, 100.0)).collect();
                    if parsed.len() == items.len() {
                        if parsed.windows(2).any(|w| w[1] <= w[0]) {
                            self.push(
                                Diagnostic::error("canary-steps", v.span, "canary steps must increase")
                                    .hint("list the percentages in order, e.g. [10, 50, 100]"),
                            );
                        } else if parsed.last() != Some(&100.0) {
                            self.push(Diagnostic::warning("canary-steps", v.span, "the last canary step is not 100").hint("the canary is promoted after its last step; end with 100 to test it with all traffic first"));
                        }
                        steps = parsed;
                    }
                }
                Some(Strategy::Canary { steps, pause_ms })
            }
            "rolling" => {
                let mut strategy = (1, 0);
                for (key, v, _) in self.entries(value, "`rolling`", &["max-surge", "max-unavailable"]) {
                    let n = self.number(v, &format!("`rolling.{key}`"), 0.0, 1000.0).unwrap_or(0.0) as u32;
                    if key == "max-surge" { strategy.0 = n } else { strategy.1 = n }
                }
                if strategy == (0, 0) {
                    self.push(Diagnostic::error(
                        "rolling",
                        value.span,
                        "`max-surge` and `max-unavailable` cannot both be 0: the rollout could not make progress",
                    ));
                }
                Some(Strategy::Rolling { max_surge: strategy.0, max_unavailable: strategy.1 })
            }
            _ => {
                let (mut preview_ms, mut keep_old_ms) = (0, 600_000);
                for (key, v, _) in self.entries(value, "`blue-green`", &["preview", "keep-old"]) {
                    if key == "preview" {
                        preview_ms = self.duration(v, "`blue-green.preview`").unwrap_or(preview_ms);
                    } else {
                        keep_old_ms = self.duration(v, "`blue-green.keep-old`").unwrap_or(keep_old_ms);
                    }
                }
                Some(Strategy::BlueGreen { preview_ms, keep_old_ms })
            }
        }
    }

    fn analysis(&mut self, node: Option<&Node>) -> Analysis {
        let mut analysis =
            Analysis { alpha: 0.01, min_requests: 200, deadline_ms: None, on_deadline: OnDeadline::Rollback };
        let Some(node) = node else { return analysis };
        for (key, value, _) in self.entries(node, "`analysis`", ANALYSIS_KEYS) {
            match key {
                "alpha" => {
                    analysis.alpha = self.number(value, "`analysis.alpha`", 0.0001, 0.5).unwrap_or(analysis.alpha)
                }
                "deadline" => analysis.deadline_ms = self.duration(value, "`analysis.deadline`"),
                "on-deadline" => match value.as_scalar() {
                    Some("rollback") => analysis.on_deadline = OnDeadline::Rollback,
                    Some("promote") => analysis.on_deadline = OnDeadline::Promote,
                    _ => {
                        let found = value.as_scalar().unwrap_or("a mapping or list").to_string();
                        let message =
                            format!("`analysis.on-deadline` must be `rollback` or `promote`, found `{found}`");
                        self.diagnostics.push(
                            Diagnostic::error("wrong-value", value.span, message).expected("`rollback` or `promote`"),
                        );
                    }
                },
                _ => {
                    analysis.min_requests = self
                        .number(value, "`analysis.min-requests`", 1.0, 1e9)
                        .map_or(analysis.min_requests, |n| n as u64)
                }
            }
        }
        analysis
    }

    fn gates(&mut self, node: Option<&Node>) -> Gates {
        let mut gates = Gates::default();
        let Some(node) = node else { return gates };
        for (key, value, _) in self.entries(node, "`gates`", GATE_KEYS) {
            match key {
                "approval" => gates.approval = matches!(value.to_value(), Value::Bool(true)),
                "provenance" => match value.as_scalar().map(str::trim) {
                    Some("required") => gates.require_provenance = true,
                    Some("optional") => gates.require_provenance = false,
                    _ => self.push(
                        Diagnostic::error("wrong-type", value.span, "`gates.provenance` is `required` or `optional`")
                            .hint("`required` deploys only releases signed by Tandem from a protected branch"),
                    ),
                },
                "security" => match value.as_scalar().map(str::trim) {
                    Some("block") => gates.block_on_findings = true,
                    Some("allow") => gates.block_on_findings = false,
                    _ => self.push(
                        Diagnostic::error("wrong-type", value.span, "`gates.security` is `block` or `allow`")
                            .hint("`block` holds commits with secret findings or critical vulnerabilities"),
                    ),
                },
                "error-budget" => gates.min_error_budget = self.number(value, "`gates.error-budget`", 0.0, 1.0),
                "objective" => {
                    gates.objective = self
                        .number(value, "`gates.objective` (a percentage)", 50.0, 99.9999)
                        .map_or(gates.objective, |n| n / 100.0)
                }
                _ => {
                    let Some(items) = value.as_seq() else {
                        self.push(
                            Diagnostic::error("wrong-type", value.span, "`gates.freeze` must be a list of windows")
                                .expected("- { cron: '0 18 * * 5', duration: 64h, timezone: Europe/Berlin }"),
                        );
                        continue;
                    };
                    for item in items {
                        let mut freeze = Freeze { cron: String::new(), duration_ms: 0, timezone: "UTC".into() };
                        for (k, v, _) in self.entries(item, "a freeze window", &["cron", "duration", "timezone"]) {
                            match k {
                                "cron" => {
                                    freeze.cron = self.string(v, "`cron`").unwrap_or_default();
                                    let n_fields = freeze.cron.split_whitespace().count();
                                    let problem = if n_fields != 5 {
                                        Some(format!("cron `{}` has {n_fields} fields", freeze.cron))
                                    } else {
                                        <croner::Cron as std::str::FromStr>::from_str(&freeze.cron)
                                            .err()
                                            .map(|e| format!("cron `{}` is not valid: {e}", freeze.cron))
                                    };
                                    if let Some(problem) = problem {
                                        self.push(
                                            Diagnostic::error("invalid-cron", v.span, problem)
                                                .expected("5 fields: minute hour day-of-month month day-of-week"),
                                        );
                                    }
                                }
                                "duration" => freeze.duration_ms = self.duration(v, "`duration`").unwrap_or(0),
                                _ => {
                                    freeze.timezone = self.string(v, "`timezone`").unwrap_or_else(|| "UTC".into());
                                    if jiff::tz::TimeZone::get(&freeze.timezone).is_err() {
                                        self.push(
                                            Diagnostic::error(
                                                "unknown-timezone",
                                                v.span,
                                                format!("unknown time zone `{}`", freeze.timezone),
                                            )
                                            .expected("an IANA time zone such as Europe/Berlin or UTC"),
                                        );
                                    }
                                }
                            }
                        }
                        if freeze.cron.is_empty() || freeze.duration_ms == 0 {
                            self.push(Diagnostic::error(
                                "missing-key",
                                item.span,
                                "a freeze window needs `cron` and `duration`",
                            ));
                        }
                        gates.freezes.push(freeze);
                    }
                }
            }
        }
        gates
    }
}
