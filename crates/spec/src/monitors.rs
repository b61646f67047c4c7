//! Probes and SLOs: declared per environment in `.tandem/service.yml` (`probes:`, `slos:`) or in
//! a standalone monitors file for what Tandem does not deploy (`probes:`, `slos:` at the top).
//!
//! ```yaml
//! probes:
//!   home:
//!     http: /health            # a path on the environment's proxy, or an http:// URL
//!     interval: 15s
//!     expect-status: [200, 204]
//!     expect-body: ok           # a substring, or /a regex/
//!     max-latency: 500ms
//!     failing-after: 3          # consecutive failures before the probe is failing
//!     recovered-after: 2
//!   database: { tcp: 127.0.0.1:5432 }
//!   disk: { command: test -w /var/lib/app }
//! slos:
//!   availability:
//!     objective: 99.9%
//!     window: 30d
//!     sli: requests              # the proxy's requests; 5xx and failed upstreams are errors
//!   checkout-latency:
//!     objective: 99%
//!     good: sum(rate(checkout_seconds_bucket{le="0.5"}[$window]))
//!     total: sum(rate(checkout_seconds_count[$window]))
//! ```

use crate::diag::{Diagnostic, Span};
use crate::service::{Checker, parse_duration};
use crate::yaml::{self, Node};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Monitors {
    pub probes: Vec<ProbeSpec>,
    pub slos: Vec<SloSpec>,
    /// Prometheus endpoints to scrape every 15 s.
    pub scrapes: Vec<ScrapeSpec>,
    /// Trends to watch: when a query's line reaches a limit within a horizon, a warning.
    pub forecasts: Vec<ForecastSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ForecastSpec {
    pub name: String,
    /// PromQL giving one series (e.g. `min(node_filesystem_avail_bytes{mountpoint="/"})`).
    pub query: String,
    /// The value that means exhausted (0 free bytes, 100% used…).
    pub limit: f64,
    /// How much history the line is fitted to.
    pub window_ms: u64,
    /// Warn when the limit is reached within this.
    pub within_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeSpec {
    pub name: String,
    pub url: String,
    /// Added to every sample (besides `job`, which is the name).
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSpec {
    pub name: String,
    pub span: Span,
    pub check: Check,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Consecutive failures before the probe is failing (an event, and its SLI counts them).
    pub failing_after: u32,
    /// Consecutive successes before a failing probe has recovered.
    pub recovered_after: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Http {
        /// A path (on the environment's proxy) or an `http://` URL.
        target: String,
        method: String,
        headers: Vec<(String, String)>,
        /// Accepted statuses; empty means 200–399.
        expect_status: Vec<u16>,
        expect_body: Option<BodyMatch>,
        /// Values the JSON body must hold at each path, compared as text (`"ok"`, `3`, `true`).
        expect_json: Vec<(JsonPath, String)>,
        max_latency_ms: Option<u64>,
        /// For `https://` targets.
        tls: TlsOptions,
    },
    Tcp {
        address: String,
    },
    /// A TLS handshake with `address` (HOST:PORT): fails when the certificate chain does not
    /// verify or its earliest expiry is closer than `min_validity_ms`.
    Tls {
        address: String,
        /// The name the certificate must carry; the address's host when not given.
        server_name: Option<String>,
        min_validity_ms: u64,
        tls: TlsOptions,
    },
    Command {
        command: String,
    },
    /// Something pings `POST /api/v1/heartbeats/NAME` (a job, a cron task); silence longer than
    /// the period is a failure.
    Heartbeat {
        period_ms: u64,
    },
}

/// How a probe's TLS connection is verified.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsOptions {
    /// Whether the chain and name are verified (`tls-verify: false` for self-signed services,
    /// whose expiry is still checked).
    pub verify: bool,
    /// A PEM file of certificate authorities trusted besides the system's.
    pub ca_file: Option<String>,
    /// With `https://` targets: fail when the certificate expires within this.
    pub min_validity_ms: Option<u64>,
}

impl Default for TlsOptions {
    fn default() -> TlsOptions {
        TlsOptions { verify: true, ca_file: None, min_validity_ms: None }
    }
}

/// The default `min-validity` of a `tls` probe: certificates are renewed well before.
pub const DEFAULT_MIN_VALIDITY_MS: u64 = 14 * 24 * 3_600_000;

/// A path into a JSON document: `$.status`, `$.checks[0].name`, `$['a key']`.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    pub text: String,
    pub steps: Vec<PathStep>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PathStep {
    Key(String),
    Index(usize),
}

impl JsonPath {
    /// Parses the subset of JSONPath probes need: a root `$` then `.key`, `['key']`, `[N]`.
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let rest = text.trim().strip_prefix('$').ok_or("a JSON path starts with `$`")?;
        let mut steps = Vec::new();
        let mut chars = rest.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '.' => {
                    let mut key = String::new();
                    while let Some(&(_, c)) = chars.peek() {
                        if c == '.' || c == '[' {
                            break;
                        }
                        key.push(c);
                        chars.next();
                    }
                    if key.is_empty() {
                        return Err(format!("an empty key after `.` at character {}", at + 2));
                    }
                    steps.push(PathStep::Key(key));
                }
                '[' => {
                    let close = rest[at..].find(']').ok_or(format!("`[` at character {} is not closed", at + 2))?;
                    let inner = &rest[at + 1..at + close];
                    let quoted = inner
                        .strip_prefix('\'')
                        .and_then(|t| t.strip_suffix('\''))
                        .or_else(|| inner.strip_prefix('"').and_then(|t| t.strip_suffix('"')));
                    match quoted {
                        Some(key) => steps.push(PathStep::Key(key.to_string())),
                        None => match inner.trim().parse::<usize>() {
                            Ok(index) => steps.push(PathStep::Index(index)),
                            Err(_) => {
                                return Err(format!("`[{inner}]` is neither an index nor a quoted key"));
                            }
                        },
                    }
                    while chars.next_if(|&(i, _)| i <= at + close).is_some() {}
                }
                other => return Err(format!("unexpected `{other}` at character {}", at + 2)),
            }
        }
        Ok(JsonPath { text: text.trim().to_string(), steps })
    }

    /// The value at this path, if the document has one.
    pub fn select<'a>(&self, document: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        self.steps.iter().try_fold(document, |value, step| match step {
            PathStep::Key(key) => value.get(key.as_str()),
            PathStep::Index(index) => value.get(*index),
        })
    }
}

/// A JSON value as a probe compares it: strings bare, everything else as JSON text.
pub fn json_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum BodyMatch {
    Contains(String),
    Regex(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SloSpec {
    pub name: String,
    pub span: Span,
    /// The share of good events (or good time slices) wanted, e.g. 0.999.
    pub objective: f64,
    pub window_ms: u64,
    pub sli: Sli,
    /// Below this many events in an alert's long window, burn alerts do not fire (one failed
    /// request of three is not a page).
    pub min_events: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Sli {
    /// The environment's proxy: requests, and errors (5xx or no answer).
    Requests,
    /// A probe of the same file: its failed checks over all checks.
    Probe(String),
    /// PromQL for good and total events; `$window` is replaced by each window evaluated.
    Ratio { good: String, total: String },
}

const MONITOR_KEYS: &[&str] = &["probes", "slos", "scrape", "forecasts"];
const PROBE_KEYS: &[&str] = &[
    "http",
    "heartbeat",
    "tcp",
    "tls",
    "command",
    "expect-json",
    "tls-verify",
    "ca",
    "min-validity",
    "server-name",
    "method",
    "headers",
    "interval",
    "timeout",
    "expect-status",
    "expect-body",
    "max-latency",
    "failing-after",
    "recovered-after",
];
const SLO_KEYS: &[&str] = &["objective", "window", "sli", "probe", "good", "total", "min-events"];

/// Parses and checks a standalone monitors file; every problem is reported at once.
pub fn parse(source: &str) -> (Option<Monitors>, Vec<Diagnostic>) {
    let root = match yaml::parse(source) {
        Ok(Some(root)) => root,
        Ok(None) => return (Some(Monitors::default()), Vec::new()),
        Err(diagnostic) => return (None, vec![diagnostic]),
    };
    let mut checker = Checker { diagnostics: Vec::new() };
    let mut monitors = Monitors::default();
    for (key, value, _) in checker.entries(&root, "the monitors file", MONITOR_KEYS) {
        match key {
            "probes" => monitors.probes = checker.probes(value),
            "scrape" => monitors.scrapes = checker.scrapes(value),
            "forecasts" => monitors.forecasts = checker.forecasts(value),
            _ => monitors.slos = checker.slos(value, &monitors.probes, false),
        }
    }
    // SLOs may name probes declared after them.
    let probes = monitors.probes.clone();
    checker.check_probe_references(&monitors.slos, &probes);
    checker.diagnostics.sort_by_key(|d| (d.span.line, d.span.col));
    let ok = !checker.diagnostics.iter().any(Diagnostic::is_error);
    (ok.then_some(monitors), checker.diagnostics)
}

/// `99.9%`, `0.999` or `99.9` (read as a percentage when above 1).
fn objective_of(node: &Node) -> Option<f64> {
    let text = node.as_scalar()?.trim();
    let value: f64 = match text.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().ok()? / 100.0,
        None => {
            let v: f64 = text.parse().ok()?;
            if v > 1.0 { v / 100.0 } else { v }
        }
    };
    (value > 0.0 && value < 1.0).then_some(value)
}

impl Checker {
    fn forecasts(&mut self, node: &Node) -> Vec<ForecastSpec> {
        let mut out = Vec::new();
        for (name, value, span) in self.entries(node, "`forecasts`", &[]) {
            let what = format!("forecast `{name}`");
            let entries = self.entries(value, &what, &["query", "limit", "window", "within"]);
            let field = |key: &str| entries.iter().find(|(k, ..)| *k == key).map(|(_, v, _)| *v);
            let query = match field("query") {
                Some(n) => self.string(n, "`query`"),
                None => {
                    self.push(Diagnostic::error("missing-key", span, format!("{what} has no `query`")));
                    None
                }
            };
            let limit = match field("limit") {
                Some(n) => self.number(n, "`limit`", f64::MIN, f64::MAX),
                None => {
                    self.push(
                        Diagnostic::error("missing-key", span, format!("{what} has no `limit`"))
                            .hint("e.g. `limit: 0` for free space"),
                    );
                    None
                }
            };
            let window_ms = field("window").map_or(Some(6 * 3_600_000), |n| self.duration(n, "`window`"));
            let within_ms = field("within").map_or(Some(24 * 3_600_000), |n| self.duration(n, "`within`"));
            if let (Some(query), Some(limit), Some(window_ms), Some(within_ms)) = (query, limit, window_ms, within_ms) {
                out.push(ForecastSpec { name: name.to_string(), query, limit, window_ms, within_ms });
            }
        }
        out
    }

    fn scrapes(&mut self, node: &Node) -> Vec<ScrapeSpec> {
        let mut out = Vec::new();
        for (name, value, span) in self.entries(node, "`scrape`", &[]) {
            let entries = self.entries(value, &format!("scrape target `{name}`"), &["url", "labels"]);
            let mut url = None;
            let mut labels = Vec::new();
            for (key, value, _) in entries {
                if key == "url" {
                    url = self.string(value, "`url`");
                    if let Some(text) = &url
                        && !text.starts_with("http://")
                    {
                        self.push(
                            Diagnostic::error(
                                "wrong-type",
                                value.span,
                                format!("`url` must be an http:// URL, found `{text}`"),
                            )
                            .expected("e.g. http://127.0.0.1:9100/metrics"),
                        );
                    }
                } else {
                    for (label, text, _) in self.entries(value, "`labels`", &[]) {
                        if let Some(text) = self.string(text, &format!("label `{label}`")) {
                            labels.push((label.to_string(), text));
                        }
                    }
                }
            }
            match url {
                Some(url) => out.push(ScrapeSpec { name: name.to_string(), url, labels }),
                None => {
                    self.push(Diagnostic::error("missing-key", span, format!("scrape target `{name}` has no `url`")))
                }
            }
        }
        out
    }

    pub(crate) fn probes(&mut self, node: &Node) -> Vec<ProbeSpec> {
        let mut out = Vec::new();
        for (name, value, span) in self.entries(node, "`probes`", &[]) {
            if let Some(probe) = self.probe(name, value, span) {
                out.push(probe);
            }
        }
        out
    }

    fn probe(&mut self, name: &str, node: &Node, span: Span) -> Option<ProbeSpec> {
        let what = format!("probe `{name}`");
        let entries = self.entries(node, &what, PROBE_KEYS);
        let field = |key: &str| entries.iter().find(|(k, ..)| *k == key).map(|(_, v, _)| *v);
        let kinds: Vec<&str> =
            ["http", "tcp", "tls", "command", "heartbeat"].into_iter().filter(|k| field(k).is_some()).collect();
        if kinds.len() != 1 {
            let message = if kinds.is_empty() {
                format!("{what} says nothing to check")
            } else {
                format!("{what} has {}: a probe checks one thing", kinds.join(" and "))
            };
            self.push(
                Diagnostic::error("probe-kind", span, message)
                    .expected("exactly one of `http`, `tcp`, `tls`, `command` or `heartbeat`")
                    .hint("e.g. `http: /health`, `tcp: 127.0.0.1:5432`, `tls: example.com:443`, `command: pg_isready` or `heartbeat: 1h`"),
            );
            return None;
        }
        let duration = |checker: &mut Checker, key: &str, default: u64| {
            field(key).map_or(Some(default), |n| checker.duration(n, &format!("`{key}` of {what}"))).unwrap_or(default)
        };
        let heartbeat = match kinds[0] {
            "heartbeat" => Some(self.duration(field("heartbeat")?, "`heartbeat`")?.max(1_000)),
            _ => None,
        };
        // A heartbeat is checked often enough to notice silence within a quarter of its period.
        let default_interval = heartbeat.map_or(15_000, |period| (period / 4).clamp(1_000, 15_000));
        let interval_ms = duration(self, "interval", default_interval).max(1_000);
        let timeout_ms = duration(self, "timeout", interval_ms.min(10_000));
        let count = |checker: &mut Checker, key: &str| {
            field(key).map_or(Some(1.0), |n| checker.number(n, &format!("`{key}`"), 1.0, 100.0)).unwrap_or(1.0) as u32
        };
        let failing_after = count(self, "failing-after");
        let recovered_after = count(self, "recovered-after");
        let http_only = ["method", "headers", "expect-status", "expect-body", "expect-json", "max-latency"];
        let tls_keys = ["tls-verify", "ca", "min-validity"];
        for (key, _, key_span) in &entries {
            let misplaced = match kinds[0] {
                "http" => *key == "server-name",
                "tls" => http_only.contains(key),
                _ => http_only.contains(key) || tls_keys.contains(key) || *key == "server-name",
            };
            if misplaced {
                let applies = if http_only.contains(key) { "http probes" } else { "tls and https probes" };
                self.push(Diagnostic::error(
                    "probe-kind",
                    *key_span,
                    format!("`{key}` applies to {applies} only; {what} is a {} probe", kinds[0]),
                ));
            }
        }
        let tls = TlsOptions {
            verify: match field("tls-verify") {
                Some(node) => match node.as_scalar().map(str::trim) {
                    Some("true") => true,
                    Some("false") => false,
                    _ => {
                        self.push(
                            Diagnostic::error("wrong-type", node.span, "`tls-verify` must be true or false")
                                .expected("true (the default) or false"),
                        );
                        true
                    }
                },
                None => true,
            },
            ca_file: field("ca").and_then(|n| self.string(n, "`ca`")),
            min_validity_ms: field("min-validity").and_then(|n| self.duration(n, "`min-validity`")),
        };
        let check = match kinds[0] {
            "tcp" => {
                let address = self.string(field("tcp")?, "`tcp`")?;
                if !address.contains(':') {
                    self.push(
                        Diagnostic::error(
                            "wrong-type",
                            field("tcp")?.span,
                            format!("`tcp` must be HOST:PORT, found `{address}`"),
                        )
                        .expected("an address such as 127.0.0.1:5432"),
                    );
                }
                Check::Tcp { address }
            }
            "tls" => {
                let node = field("tls")?;
                let address = self.string(node, "`tls`")?;
                if !address.contains(':') || address.contains("://") {
                    self.push(
                        Diagnostic::error(
                            "wrong-type",
                            node.span,
                            format!("`tls` must be HOST:PORT, found `{address}`"),
                        )
                        .expected("an address such as example.com:443"),
                    );
                }
                let server_name = field("server-name").and_then(|n| self.string(n, "`server-name`"));
                let min_validity_ms = tls.min_validity_ms.unwrap_or(DEFAULT_MIN_VALIDITY_MS);
                Check::Tls { address, server_name, min_validity_ms, tls }
            }
            "command" => Check::Command { command: self.string(field("command")?, "`command`")? },
            "heartbeat" => Check::Heartbeat { period_ms: heartbeat? },
            _ => {
                let target_node = field("http")?;
                let target = self.string(target_node, "`http`")?;
                let https = target.starts_with("https://");
                if !https && !target.starts_with('/') && !target.starts_with("http://") {
                    self.push(
                        Diagnostic::error(
                            "wrong-type",
                            target_node.span,
                            format!("`http` must be a path or an http:// or https:// URL, found `{target}`"),
                        )
                        .expected("`/health` (on the environment's proxy) or `https://host:port/path`"),
                    );
                }
                if !https {
                    for key in tls_keys {
                        if let Some((_, _, key_span)) = entries.iter().find(|(k, ..)| *k == key) {
                            self.push(Diagnostic::error(
                                "probe-kind",
                                *key_span,
                                format!("`{key}` applies to https:// targets; {what} probes `{target}`"),
                            ));
                        }
                    }
                }
                let mut expect_json = Vec::new();
                if let Some(node) = field("expect-json") {
                    for (path, value, key_span) in self.entries(node, "`expect-json`", &[]) {
                        let Some(wanted) = self.string(value, &format!("the value expected at `{path}`")) else {
                            continue;
                        };
                        match JsonPath::parse(path) {
                            Ok(path) => expect_json.push((path, wanted)),
                            Err(error) => self.push(
                                Diagnostic::error(
                                    "bad-json-path",
                                    key_span,
                                    format!("`{path}` is not a JSON path: {error}"),
                                )
                                .expected("`$.key`, `$.list[0]` or `$['a key']`"),
                            ),
                        }
                    }
                }
                let method = field("method").and_then(|n| self.string(n, "`method`")).unwrap_or_else(|| "GET".into());
                let mut headers = Vec::new();
                if let Some(node) = field("headers") {
                    for (key, value, _) in self.entries(node, "`headers`", &[]) {
                        if let Some(text) = self.string(value, &format!("header `{key}`")) {
                            headers.push((key.to_string(), text));
                        }
                    }
                }
                let expect_status = match field("expect-status") {
                    None => Vec::new(),
                    Some(node) => {
                        let items: Vec<&Node> = match node.as_seq() {
                            Some(items) => items.iter().collect(),
                            None => vec![node],
                        };
                        items
                            .into_iter()
                            .filter_map(|n| self.number(n, "`expect-status`", 100.0, 599.0).map(|v| v as u16))
                            .collect()
                    }
                };
                let expect_body = field("expect-body").and_then(|n| self.string(n, "`expect-body`")).and_then(|text| {
                    match text.strip_prefix('/').and_then(|t| t.strip_suffix('/')) {
                        Some(pattern) => match regex_check(pattern) {
                            Ok(()) => Some(BodyMatch::Regex(pattern.to_string())),
                            Err(error) => {
                                self.push(Diagnostic::error(
                                    "bad-regex",
                                    field("expect-body").map_or(span, |n| n.span),
                                    format!("`expect-body` is not a valid regular expression: {error}"),
                                ));
                                None
                            }
                        },
                        None => Some(BodyMatch::Contains(text)),
                    }
                });
                let max_latency_ms = field("max-latency").and_then(|n| self.duration(n, "`max-latency`"));
                Check::Http { target, method, headers, expect_status, expect_body, expect_json, max_latency_ms, tls }
            }
        };
        Some(ProbeSpec { name: name.to_string(), span, check, interval_ms, timeout_ms, failing_after, recovered_after })
    }

    /// `in_service`: SLOs of an environment may use `sli: requests` (its proxy's traffic).
    pub(crate) fn slos(&mut self, node: &Node, probes: &[ProbeSpec], in_service: bool) -> Vec<SloSpec> {
        let mut out = Vec::new();
        for (name, value, span) in self.entries(node, "`slos`", &[]) {
            if let Some(slo) = self.slo(name, value, span, in_service) {
                out.push(slo);
            }
        }
        if in_service {
            self.check_probe_references(&out, probes);
        }
        out
    }

    fn slo(&mut self, name: &str, node: &Node, span: Span, in_service: bool) -> Option<SloSpec> {
        let what = format!("SLO `{name}`");
        let entries = self.entries(node, &what, SLO_KEYS);
        let field = |key: &str| entries.iter().find(|(k, ..)| *k == key).map(|(_, v, _)| *v);
        let objective = match field("objective") {
            Some(node) => match objective_of(node) {
                Some(v) => Some(v),
                None => {
                    self.push(
                        Diagnostic::error(
                            "out-of-range",
                            node.span,
                            format!("the objective of {what} must be between 0 and 100%"),
                        )
                        .expected("e.g. `99.9%` or `0.999`"),
                    );
                    None
                }
            },
            None => {
                self.push(
                    Diagnostic::error("missing-key", span, format!("{what} has no `objective`"))
                        .hint("add e.g. `objective: 99.9%`"),
                );
                None
            }
        };
        let window_ms = field("window").map_or(Some(30 * 86_400_000), |n| self.duration(n, "`window`"))?;
        let min_events = field("min-events").map_or(Some(10.0), |n| self.number(n, "`min-events`", 0.0, 1e12))?;
        let sli = match (field("sli").and_then(|n| n.as_scalar()), field("probe"), field("good"), field("total")) {
            (_, Some(probe), None, None) => Sli::Probe(self.string(probe, "`probe`")?),
            (_, None, Some(good), Some(total)) => {
                Sli::Ratio { good: self.string(good, "`good`")?, total: self.string(total, "`total`")? }
            }
            (Some("requests") | None, None, None, None) if in_service => Sli::Requests,
            (Some(other), None, None, None) if other != "requests" => {
                self.push(
                    Diagnostic::error(
                        "unknown-sli",
                        field("sli").map_or(span, |n| n.span),
                        format!("unknown SLI `{other}` in {what}"),
                    )
                    .expected("`requests`, or `probe: NAME`, or `good:` and `total:` queries"),
                );
                return None;
            }
            _ => {
                let hint = if in_service {
                    "use `sli: requests`, `probe: NAME`, or `good:` and `total:` PromQL queries"
                } else {
                    "outside a service file, use `probe: NAME`, or `good:` and `total:` PromQL queries"
                };
                self.push(
                    Diagnostic::error("unknown-sli", span, format!("{what} does not say how to count good events"))
                        .hint(hint),
                );
                return None;
            }
        };
        Some(SloSpec { name: name.to_string(), span, objective: objective?, window_ms, sli, min_events })
    }

    fn check_probe_references(&mut self, slos: &[SloSpec], probes: &[ProbeSpec]) {
        for slo in slos {
            if let Sli::Probe(name) = &slo.sli
                && !probes.iter().any(|p| &p.name == name)
            {
                let names: Vec<&str> = probes.iter().map(|p| p.name.as_str()).collect();
                let hint =
                    crate::diag::did_you_mean(name, names.iter().copied()).map(|s| format!("did you mean `{s}`?"));
                self.push(
                    Diagnostic::error(
                        "unknown-probe",
                        slo.span,
                        format!("SLO `{}` counts probe `{name}`, which is not declared", slo.name),
                    )
                    .maybe_hint(hint),
                );
            }
        }
    }
}

/// A minimal check of a regular expression's syntax: balanced groups and classes. The server
/// compiles it; this catches the common mistakes at validation time.
fn regex_check(pattern: &str) -> Result<(), String> {
    let (mut depth, mut class, mut escaped) = (0i32, false, false);
    for c in pattern.chars() {
        match (escaped, class, c) {
            (true, ..) => escaped = false,
            (false, _, '\\') => escaped = true,
            (false, false, '[') => class = true,
            (false, true, ']') => class = false,
            (false, false, '(') => depth += 1,
            (false, false, ')') => {
                depth -= 1;
                if depth < 0 {
                    return Err("a `)` closes nothing".into());
                }
            }
            _ => {}
        }
    }
    if depth > 0 || class || escaped {
        return Err("a group, class or escape is not closed".into());
    }
    Ok(())
}

/// A duration as the monitors file writes it (also `d` for days).
pub fn duration_ms(text: &str) -> Option<u64> {
    parse_duration(text)
}
