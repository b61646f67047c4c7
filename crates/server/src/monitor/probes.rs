//! Probes: each check runs on its own interval in its own task, with a timeout; its result is a
//! sample (`probe_success`, `probe_duration_seconds`, `probe_http_status_code`,
//! `probe_ssl_earliest_cert_expiry`) and, when it crosses its failing or recovered threshold, an
//! event in the log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spec::monitors::{BodyMatch, Check, JsonPath, ProbeSpec};

use super::Scope;
use crate::App;

/// One probe's live state, as `tandem probes` and `/api/v1/probes` show it.
#[derive(Debug, Clone)]
pub struct ProbeState {
    pub scope: Scope,
    pub spec: ProbeSpec,
    /// Where a path-only http probe goes: the environment's proxy.
    pub base: Option<String>,
    pub next_due: Instant,
    pub running: bool,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub failing: bool,
    pub checks: u64,
    pub failures: u64,
    pub last: Option<Outcome>,
    /// Heartbeats: the last ping (Unix ms), and when watching began.
    pub last_ping: Option<i64>,
    pub watched_since: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub ok: bool,
    pub seconds: f64,
    pub status: Option<u16>,
    pub error: Option<String>,
    /// Unix ms.
    pub at: i64,
    /// TLS probes: when the earliest certificate the server sent expires (Unix seconds).
    pub cert_expiry: Option<i64>,
}

impl ProbeState {
    pub fn new(scope: Scope, spec: ProbeSpec, base: Option<String>) -> ProbeState {
        ProbeState {
            scope,
            spec,
            base,
            next_due: Instant::now(),
            running: false,
            consecutive_failures: 0,
            consecutive_successes: 0,
            failing: false,
            checks: 0,
            failures: 0,
            last: None,
            last_ping: None,
            watched_since: jiff::Timestamp::now().as_millisecond(),
        }
    }

    /// Takes an outcome; returns the transition it causes (`Some(true)`: now failing).
    pub fn record(&mut self, outcome: Outcome) -> Option<bool> {
        self.checks += 1;
        let mut transition = None;
        if outcome.ok {
            self.consecutive_successes += 1;
            self.consecutive_failures = 0;
            if self.failing && self.consecutive_successes >= self.spec.recovered_after {
                self.failing = false;
                transition = Some(false);
            }
        } else {
            self.failures += 1;
            self.consecutive_failures += 1;
            self.consecutive_successes = 0;
            if !self.failing && self.consecutive_failures >= self.spec.failing_after {
                self.failing = true;
                transition = Some(true);
            }
        }
        self.last = Some(outcome);
        transition
    }
}

/// Records a ping of every heartbeat probe named `name` (in `scope`, when given); the keys pinged.
pub fn ping(app: &App, name: &str, service: Option<&str>, environment: Option<&str>) -> Vec<String> {
    let now = jiff::Timestamp::now().as_millisecond();
    let mut probes = app.monitor.probes.lock().unwrap_or_else(|e| e.into_inner());
    let mut pinged = Vec::new();
    for (key, probe) in probes.iter_mut() {
        let wanted = probe.spec.name == name
            && matches!(probe.spec.check, Check::Heartbeat { .. })
            && service.is_none_or(|s| probe.scope.service.as_deref() == Some(s))
            && environment.is_none_or(|e| probe.scope.environment.as_deref() == Some(e));
        if wanted {
            probe.last_ping = Some(now);
            // Checked at once, so a recovery shows without waiting for the next interval.
            probe.next_due = Instant::now();
            pinged.push(key.clone());
        }
    }
    pinged.sort();
    pinged
}

/// Starts every due probe that is not already running.
pub(super) fn start_due(app: &Arc<App>) {
    let now = Instant::now();
    let due: Vec<(String, ProbeState)> = {
        let mut probes = app.monitor.probes.lock().unwrap_or_else(|e| e.into_inner());
        probes
            .iter_mut()
            .filter(|(_, p)| !p.running && p.next_due <= now)
            .map(|(key, p)| {
                p.running = true;
                p.next_due = now + Duration::from_millis(p.spec.interval_ms);
                (key.clone(), p.clone())
            })
            .collect()
    };
    for (key, probe) in due {
        let app = app.clone();
        tokio::spawn(async move {
            let outcome = check(&probe).await;
            finish(&app, &key, outcome).await;
        });
    }
}

async fn finish(app: &Arc<App>, key: &str, outcome: Outcome) {
    let (transition, probe) = {
        let mut probes = app.monitor.probes.lock().unwrap_or_else(|e| e.into_inner());
        let Some(probe) = probes.get_mut(key) else { return };
        probe.running = false;
        (probe.record(outcome.clone()), probe.clone())
    };
    let labels = probe.scope.labels(&[("job", "probe"), ("probe", &probe.spec.name)]);
    let mut batch = vec![
        (labels.with(metrics::labels::NAME, "probe_success"), outcome.at, if outcome.ok { 1.0 } else { 0.0 }),
        (labels.with(metrics::labels::NAME, "probe_duration_seconds"), outcome.at, outcome.seconds),
    ];
    if let Some(status) = outcome.status {
        batch.push((labels.with(metrics::labels::NAME, "probe_http_status_code"), outcome.at, status as f64));
    }
    if let Some(expiry) = outcome.cert_expiry {
        batch.push((labels.with(metrics::labels::NAME, "probe_ssl_earliest_cert_expiry"), outcome.at, expiry as f64));
    }
    if let Err(error) = super::store(app, &batch) {
        tracing::warn!("cannot record probe {key}: {error}");
    }
    if let Some(failing) = transition {
        let kind = if failing { "probe.failing" } else { "probe.recovered" };
        let payload = serde_json::json!({
            "probe": probe.spec.name,
            "service": probe.scope.service,
            "environment": probe.scope.environment,
            "error": outcome.error,
            "consecutive": if failing { probe.consecutive_failures } else { probe.consecutive_successes },
        });
        if let Err(error) = app.store.record_event(kind, &format!("probe/{key}"), "tandem", payload).await {
            tracing::error!("cannot record {kind} of {key}: {error}");
        }
        if failing {
            tracing::warn!("probe {key} is failing: {}", outcome.error.as_deref().unwrap_or("no detail"));
        } else {
            tracing::info!("probe {key} recovered");
        }
    }
}

/// Runs one check within its timeout.
pub async fn check(probe: &ProbeState) -> Outcome {
    let started = Instant::now();
    let at = jiff::Timestamp::now().as_millisecond();
    let timeout = Duration::from_millis(probe.spec.timeout_ms.max(1));
    let mut cert_expiry = None;
    let result = tokio::time::timeout(timeout, run(probe, &mut cert_expiry)).await;
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(Ok(status)) => Outcome { ok: true, seconds, status, error: None, at, cert_expiry },
        Ok(Err((status, error))) => Outcome { ok: false, seconds, status, error: Some(error), at, cert_expiry },
        Err(_) => Outcome {
            ok: false,
            seconds,
            status: None,
            error: Some(format!("no answer within {} ms", probe.spec.timeout_ms)),
            at,
            cert_expiry,
        },
    }
}

/// One HTTP client for every probe: its connection pool is shared, as a browser's would be.
fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new)
}

type CheckResult = Result<Option<u16>, (Option<u16>, String)>;

/// Fails when a certificate expires (Unix seconds) within `min_validity_ms` from now.
fn check_validity(expiry: Option<i64>, min_validity_ms: u64, what: &str) -> Result<(), String> {
    let Some(expiry) = expiry else { return Ok(()) };
    let now = jiff::Timestamp::now().as_second();
    let left = expiry - now;
    if left < 0 {
        return Err(format!("the certificate of {what} expired {} ago", days(-left)));
    }
    if (left as u64) * 1000 < min_validity_ms {
        return Err(format!(
            "the certificate of {what} expires in {}, within the {} asked for",
            days(left),
            days((min_validity_ms / 1000) as i64)
        ));
    }
    Ok(())
}

fn days(seconds: i64) -> String {
    if seconds >= 86_400 { format!("{:.1} days", seconds as f64 / 86_400.0) } else { format!("{} h", seconds / 3_600) }
}

/// The first of `expected` the JSON `body` does not hold, as an error.
fn check_json(body: &str, expected: &[(JsonPath, String)], url: &str) -> Result<(), String> {
    if expected.is_empty() {
        return Ok(());
    }
    let document: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("{url}: the body is not JSON ({e})"))?;
    for (path, wanted) in expected {
        match path.select(&document) {
            Some(value) if spec::monitors::json_text(value) == *wanted => {}
            Some(value) => {
                return Err(format!("{url}: {} is {}, expected `{wanted}`", path.text, value));
            }
            None => return Err(format!("{url}: the body has nothing at {}", path.text)),
        }
    }
    Ok(())
}

async fn run(probe: &ProbeState, cert_expiry: &mut Option<i64>) -> CheckResult {
    match &probe.spec.check {
        Check::Tls { address, server_name, min_validity_ms, tls } => {
            let name = server_name.as_deref().unwrap_or_else(|| super::tls::host_of(address));
            let (_, expiry) = super::tls::connect(address, name, tls).await.map_err(|e| (None, e))?;
            *cert_expiry = expiry;
            check_validity(expiry, *min_validity_ms, address).map_err(|e| (None, e))?;
            Ok(None)
        }
        Check::Tcp { address } => match tokio::net::TcpStream::connect(address.as_str()).await {
            Ok(_) => Ok(None),
            Err(error) => Err((None, format!("cannot connect to {address}: {error}"))),
        },
        Check::Heartbeat { period_ms } => {
            let now = jiff::Timestamp::now().as_millisecond();
            let since = probe.last_ping.unwrap_or(probe.watched_since);
            let silence = now - since;
            if silence <= *period_ms as i64 {
                Ok(None)
            } else if probe.last_ping.is_none() {
                Err((
                    None,
                    format!("no ping in the {} s since watching began (period {} s)", silence / 1000, period_ms / 1000),
                ))
            } else {
                Err((None, format!("last ping {} s ago, over the {} s period", silence / 1000, period_ms / 1000)))
            }
        }
        Check::Command { command } => {
            let output = tokio::process::Command::new("sh")
                .args(["-c", command])
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|e| (None, format!("cannot run `{command}`: {e}")))?;
            if output.status.success() {
                Ok(None)
            } else {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let last = stderr.lines().last().unwrap_or("").trim();
                Err((
                    None,
                    format!(
                        "`{command}` exited with {}{}",
                        output.status,
                        if last.is_empty() { String::new() } else { format!(": {last}") }
                    ),
                ))
            }
        }
        Check::Http { target, method, headers, expect_status, expect_body, expect_json, max_latency_ms, tls } => {
            let url = match (&probe.base, target.starts_with('/')) {
                (Some(base), true) => format!("http://{base}{target}"),
                (None, true) => {
                    return Err((None, format!("`{target}` is a path, but the environment has no proxy address yet")));
                }
                _ => target.clone(),
            };
            let started = Instant::now();
            let (status, body) = if url.starts_with("https://") {
                let answer = super::tls::request(&url, method, headers, tls).await.map_err(|e| (None, e))?;
                *cert_expiry = answer.expiry;
                if let Some(min) = tls.min_validity_ms {
                    check_validity(answer.expiry, min, &url).map_err(|e| (Some(answer.status), e))?;
                }
                (answer.status, answer.body)
            } else {
                let method = reqwest::Method::from_bytes(method.as_bytes())
                    .map_err(|_| (None, format!("`{method}` is not an HTTP method")))?;
                let mut request = client().request(method.clone(), &url);
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                let response = request.send().await.map_err(|e| (None, format!("{method} {url}: {e}")))?;
                let status = response.status().as_u16();
                let body =
                    response.text().await.map_err(|e| (Some(status), format!("{url}: the body broke off: {e}")))?;
                (status, body)
            };
            let latency = started.elapsed();
            let status_ok =
                if expect_status.is_empty() { (200..400).contains(&status) } else { expect_status.contains(&status) };
            if !status_ok {
                return Err((Some(status), format!("{url} answered {status}")));
            }
            match expect_body {
                Some(BodyMatch::Contains(text)) if !body.contains(text.as_str()) => {
                    return Err((Some(status), format!("{url}: the body does not contain `{text}`")));
                }
                Some(BodyMatch::Regex(pattern)) => match regex::Regex::new(pattern) {
                    Ok(re) if re.is_match(&body) => {}
                    Ok(_) => return Err((Some(status), format!("{url}: the body does not match /{pattern}/"))),
                    Err(error) => {
                        return Err((Some(status), format!("/{pattern}/ is not a valid regular expression: {error}")));
                    }
                },
                _ => {}
            }
            check_json(&body, expect_json, &url).map_err(|e| (Some(status), e))?;
            if let Some(max) = max_latency_ms
                && latency > Duration::from_millis(*max)
            {
                return Err((
                    Some(status),
                    format!("{url} took {} ms, over the {max} ms allowed", latency.as_millis()),
                ));
            }
            Ok(Some(status))
        }
    }
}
