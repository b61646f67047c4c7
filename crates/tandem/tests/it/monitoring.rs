//! Monitoring end to end: PromQL side by side with a real Prometheus (Debian's 2.42: the same
//! history loaded into both, the same queries, the same answers), imported history, probes,
//! SLOs and scrape targets of a monitors file, alerting rules, and the store through `kill -9`
//! and a full disk.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::{Server, http};

struct Prometheus(Child);

impl Prometheus {
    /// Debian's Prometheus on a free loopback port, with no scrape targets, storing in `data`;
    /// returns once it answers queries.
    fn start(dir: &std::path::Path, data: &std::path::Path, extra: &[&str]) -> (Prometheus, u16) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        std::fs::write(dir.join("prometheus.yml"), "global: {}\n").unwrap();
        let prometheus = Prometheus(
            Command::new("prometheus")
                .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("Debian's prometheus; `cargo xtask test` installs it"),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        // Until its storage is open, Prometheus refuses connections, then answers 503 in plain text.
        while answer(port, "/api/v1/query?query=1", None).ok().and_then(|r| json_body(&r)).map(|v| v["status"].clone())
            != Some(serde_json::Value::from("success"))
        {
            assert!(Instant::now() < deadline, "Prometheus did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        (prometheus, port)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two hours of a small fleet, at 15 s with a 7 s offset (so no sample sits on a window's edge,
/// where Prometheus 2 and 3 differ), from the Unix epoch, as OpenMetrics.
fn history() -> String {
    let mut text =
        String::from("# TYPE http_requests counter\n# TYPE memory_bytes gauge\n# TYPE latency_seconds histogram\n");
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f64 / (1u64 << 24) as f64
    };
    let mut lines: Vec<(u64, String)> = Vec::new();
    for job in ["api", "web", "worker"] {
        for instance in 0..4 {
            let (mut ok, mut bad, mut memory) = (0.0f64, 0.0f64, 5e8 + instance as f64 * 1e7);
            let mut buckets = [0.0f64; 5];
            for step in 0..480u64 {
                let t = 7 + step * 15;
                ok += (20.0 * next()).floor();
                bad += if next() < 0.2 { 1.0 } else { 0.0 };
                if job == "web" && instance == 1 && step == 240 {
                    ok = 0.0; // a restart: the counter resets
                }
                memory += (next() - 0.45) * 1e6;
                for (i, bound) in [0.05, 0.1, 0.25, 0.5].iter().enumerate() {
                    let share = (bound / 0.6f64).min(1.0);
                    buckets[i] += (10.0 * share * next()).floor();
                }
                buckets[4] = buckets[4].max(buckets[3]) + (2.0 * next()).floor();
                for i in 1..4 {
                    buckets[i] = buckets[i].max(buckets[i - 1]);
                }
                let labels = format!("job=\"{job}\",instance=\"{job}-{instance}\"");
                lines.push((t, format!("http_requests_total{{{labels},code=\"200\"}} {ok} {t}")));
                lines.push((t, format!("http_requests_total{{{labels},code=\"500\"}} {bad} {t}")));
                lines.push((t, format!("memory_bytes{{{labels}}} {memory} {t}")));
                for (i, bound) in ["0.05", "0.1", "0.25", "0.5", "+Inf"].iter().enumerate() {
                    lines.push((t, format!("latency_seconds_bucket{{{labels},le=\"{bound}\"}} {} {t}", buckets[i])));
                }
            }
        }
    }
    // OpenMetrics wants each metric family's samples together; within them, by series then time.
    lines.sort_by(|a, b| {
        let family = |l: &str| {
            l.split(['{', ' ']).next().unwrap_or("").trim_end_matches("_total").trim_end_matches("_bucket").to_string()
        };
        family(&a.1).cmp(&family(&b.1)).then(a.1.split(' ').next().cmp(&b.1.split(' ').next())).then(a.0.cmp(&b.0))
    });
    for (_, line) in lines {
        text.push_str(&line);
        text.push('\n');
    }
    text.push_str("# EOF\n");
    text
}

const QUERIES: &[&str] = &[
    "sum by (job) (rate(http_requests_total[5m]))",
    "rate(http_requests_total{code=\"200\"}[2m])",
    "irate(http_requests_total[1m])",
    "increase(http_requests_total{job=\"web\"}[10m])",
    "sum without (instance) (increase(http_requests_total[15m]))",
    "sum by (job) (rate(http_requests_total{code=\"500\"}[5m])) / on (job) sum by (job) (rate(http_requests_total[5m]))",
    "topk(3, memory_bytes)",
    "bottomk(2, avg_over_time(memory_bytes[10m]))",
    "avg by (job) (memory_bytes) > bool 5.1e8",
    "memory_bytes offset 10m - memory_bytes",
    "max_over_time(memory_bytes[30m]) - min_over_time(memory_bytes[30m])",
    "quantile_over_time(0.9, memory_bytes{job=\"api\"}[20m])",
    "deriv(memory_bytes{job=\"worker\"}[15m])",
    "predict_linear(memory_bytes{job=\"web\"}[30m], 3600)",
    "histogram_quantile(0.95, sum by (job, le) (rate(latency_seconds_bucket[5m])))",
    "histogram_quantile(0.5, rate(latency_seconds_bucket{job=\"api\"}[10m]))",
    "count by (job) (memory_bytes > 5.05e8)",
    "stddev by (job) (memory_bytes)",
    "quantile by (job) (0.25, memory_bytes)",
    "clamp_max(rate(http_requests_total[5m]), 0.5)",
    "delta(memory_bytes[10m])",
    "changes(http_requests_total{code=\"500\"}[10m])",
    "resets(http_requests_total[1h])",
    "absent(nonexistent_metric{job=\"api\"})",
    "label_replace(memory_bytes{job=\"api\"}, \"host\", \"$1\", \"instance\", \"api-(.*)\")",
    "sum(rate(http_requests_total[5m])) by (code) * on (code) group_left () count by (code) (http_requests_total)",
    "time() - timestamp(memory_bytes{instance=\"api-0\"})",
    "count_values(\"value\", round(memory_bytes / 1e8))",
    "sum(rate(http_requests_total[5m:40s]))",
    "max_over_time(rate(http_requests_total{job=\"api\"}[2m])[10m:30s])",
];

/// The whole HTTP/1.0 response to `GET path`.
fn answer(port: u16, path: &str, token: Option<&str>) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.0\r\nhost: 127.0.0.1\r\n{auth}\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// A response's body, when it is JSON.
fn json_body(response: &str) -> Option<serde_json::Value> {
    serde_json::from_str(response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")).ok()
}

fn get(port: u16, path: &str, token: Option<&str>) -> serde_json::Value {
    let response = answer(port, path, token).unwrap_or_else(|e| panic!("GET {path} on {port}: {e}"));
    json_body(&response).unwrap_or_else(|| panic!("GET {path} on {port}: {response}"))
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// A result as comparable rows: labels, then each (time, value) rounded to 9 significant digits.
fn rows(answer: &serde_json::Value) -> Vec<String> {
    let data = &answer["data"];
    let value = |v: &serde_json::Value| {
        let text = v.as_str().unwrap_or_default();
        match text.parse::<f64>() {
            Ok(x) if x.is_finite() && x != 0.0 => format!("{:.9e}", x),
            _ => text.to_string(),
        }
    };
    let mut out: Vec<String> = match data["resultType"].as_str() {
        Some("scalar") => vec![format!("scalar {}", value(&data["result"][1]))],
        _ => data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let points: Vec<String> = match s.get("values") {
                    Some(values) => {
                        values.as_array().unwrap().iter().map(|p| format!("{}={}", p[0], value(&p[1]))).collect()
                    }
                    None => vec![value(&s["value"][1])],
                };
                format!("{} {}", s["metric"], points.join(" "))
            })
            .collect(),
    };
    out.sort();
    out
}

#[test]
fn promql_answers_equal_a_real_prometheus_on_the_same_history() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("history.om");
    std::fs::write(&file, history()).unwrap();
    let blocks = dir.path().join("prometheus");
    let created = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&file)
        .arg(&blocks)
        .output()
        .expect("promtool is part of Debian's prometheus package; `cargo xtask test` installs it");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let data = dir.path().join("tandem");
    let imported = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["metrics", "import"])
        .arg(&file)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));

    let (_prometheus, port) = Prometheus::start(dir.path(), &blocks, &[]);
    let server = Server::start(&data, None);
    let ours_port: u16 = server.addr.rsplit(':').next().unwrap().parse().unwrap();
    let mut differences = Vec::new();
    let mut compared = 0;
    for query in QUERIES {
        // Evaluation times (and range steps) sit 10 s past a minute: no sample and no subquery
        // step falls on a window's edge, where Prometheus 2 (closed windows) and 3 (left-open,
        // which Tandem follows) differ.
        for at in [1810, 3610, 6910] {
            let path = format!("/api/v1/query?query={}&time={at}", encode(query));
            let theirs = get(port, &path, None);
            let ours = get(ours_port, &path, Some(&server.token));
            assert_eq!(theirs["status"], "success", "Prometheus refused {query}: {theirs}");
            compared += 1;
            if rows(&ours) != rows(&theirs) {
                differences.push(format!(
                    "{query} at {at}:\n  Tandem:     {:?}\n  Prometheus: {:?}",
                    rows(&ours),
                    rows(&theirs)
                ));
            }
        }
        let path = format!("/api/v1/query_range?query={}&start=3010&end=4210&step=60", encode(query));
        let (theirs, ours) = (get(port, &path, None), get(ours_port, &path, Some(&server.token)));
        compared += 1;
        if rows(&ours) != rows(&theirs) {
            differences.push(format!(
                "{query} over 3000..4200:\n  Tandem:     {:?}\n  Prometheus: {:?}",
                rows(&ours),
                rows(&theirs)
            ));
        }
    }
    assert!(differences.is_empty(), "{} of {compared} answers differ:\n{}", differences.len(), differences.join("\n"));
}

#[test]
fn imported_history_and_tandems_own_figures_answer_promql_on_the_prometheus_api() {
    let data = tempfile::tempdir().unwrap();
    // Two hours of a service's requests, as OpenMetrics with timestamps (seconds), from the epoch.
    let mut history = String::from("# TYPE http_requests counter\n");
    for minute in 0..=120 {
        let t = minute * 60;
        history += &format!("http_requests_total{{code=\"200\",service=\"shop\"}} {} {t}\n", minute * 600);
        history += &format!("http_requests_total{{code=\"500\",service=\"shop\"}} {} {t}\n", minute * 6);
    }
    history += "# EOF\n";
    let file = data.path().join("history.om");
    std::fs::write(&file, history).unwrap();
    let import = || {
        crate::Run::from(
            Command::new(env!("CARGO_BIN_EXE_tandem"))
                .args(["metrics", "import"])
                .arg(&file)
                .arg("--data")
                .arg(data.path())
                .output()
                .unwrap(),
        )
    };
    let imported = import();
    assert_eq!(imported.code, 0, "{}", imported.all());
    assert!(imported.stdout.contains("imported 242 samples"), "{}", imported.all());
    // A malformed file is refused with its place, and nothing of it is stored.
    std::fs::write(&file, "ok 1 1\nbad{code=\"200\" 1 2\n").unwrap();
    let refused = import();
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("history.om:2:16: expected `,` or `}`"), "{}", refused.all());

    let server = Server::start(data.path(), None);
    // The error ratio over the last five minutes of the imported history: 1% of requests failed.
    let ratio = server.cli(&[
        "query",
        r#"sum(rate(http_requests_total{code=~"5.."}[5m])) / sum(rate(http_requests_total[5m]))"#,
        "--time",
        "7200",
        "--format",
        "json",
    ]);
    assert_eq!(ratio.code, 0, "{}", ratio.all());
    let value: f64 = ratio.json()["result"][0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!((value - 6.0 / 606.0).abs() < 1e-9, "{value}");
    let range =
        server.cli(&["query", "sum by (code) (rate(http_requests_total[5m]))", "--range", "1h", "--time", "7200"]);
    assert_eq!(range.code, 0, "{}", range.all());
    assert!(range.stdout.contains("{code=\"500\"}") && range.stdout.contains("POINTS"), "{}", range.all());
    // Tandem records its own figures: the first scrape happens as the server starts.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let own = server.cli(&["query", r#"tandem_queue_depth{job="tandem"}"#, "--format", "json"]);
        assert_eq!(own.code, 0, "{}", own.all());
        if own.json()["result"].as_array().is_some_and(|r| r.len() == 1) {
            break;
        }
        assert!(Instant::now() < deadline, "Tandem's own figures never appeared: {}", own.all());
        std::thread::sleep(Duration::from_millis(200));
    }
    // The API speaks Prometheus's dialect: label values, series, and errors in its shape.
    let auth = format!("Bearer {}", server.token);
    let (status, body) = http(&server.addr, "GET", "/api/v1/label/code/values", &[("authorization", &auth)], b"");
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["data"], serde_json::json!(["200", "500"]));
    let (status, body) = http(
        &server.addr,
        "GET",
        "/api/v1/series?match%5B%5D=http_requests_total%7Bcode%3D%22500%22%7D",
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"service\":\"shop\""), "{body}");
    let (status, body) = http(&server.addr, "GET", "/api/v1/query?query=sum(", &[("authorization", &auth)], b"");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"errorType\":\"bad_data\""), "{body}");
}

/// Answers every connection with `200 ok` until the test ends.
fn tiny_http_server() -> u16 {
    serve_text("ok")
}

/// Answers every connection with `body` until the test ends.
fn serve_text(body: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer);
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
    });
    port
}

#[test]
fn probes_of_a_monitors_file_record_series_events_and_an_slo() {
    let data = tempfile::tempdir().unwrap();
    let web = tiny_http_server();
    let exporter = serve_text("# TYPE node_load1 gauge\nnode_load1{cpu=\"all\"} 0.75\n");
    let broken = serve_text("node_load1{cpu=\"all\" 0.75\n");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let monitors = data.path().join("monitors.yml");
    std::fs::write(
        &monitors,
        format!(
            "probes:\n  web:\n    http: http://127.0.0.1:{web}/health\n    interval: 1s\n    expect-body: ok\n  closed:\n    tcp: 127.0.0.1:{closed}\n    interval: 1s\n    failing-after: 2\nslos:\n  web-up:\n    objective: 99%\n    window: 1d\n    probe: web\nscrape:\n  node:\n    url: http://127.0.0.1:{exporter}/metrics\n    labels: {{ team: infra }}\n  broken:\n    url: http://127.0.0.1:{broken}/metrics\n"
        ),
    )
    .unwrap();
    let server = Server::start_with(data.path(), None, &["--monitors", monitors.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let probes = server.cli(&["probes", "--format", "json"]);
        let json = probes.json();
        let state = |name: &str| {
            json.as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .map(|p| p["state"].as_str().unwrap().to_string())
        };
        if state("web").as_deref() == Some("up") && state("closed").as_deref() == Some("failing") {
            break;
        }
        assert!(Instant::now() < deadline, "probes never settled: {json}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let table = server.cli(&["probes"]);
    assert_eq!(table.code, 1, "a failing probe makes `tandem probes` exit 1: {}", table.all());
    assert!(table.stdout.contains("monitors/closed") && table.stdout.contains("cannot connect"), "{}", table.all());
    // The failure is an event, and the results are series.
    let auth = format!("Bearer {}", server.token);
    let (_, events) = http(&server.addr, "GET", "/api/v1/events?limit=1000", &[("authorization", &auth)], b"");
    assert!(events.contains("probe.failing") && events.contains("probe/monitors/closed"), "{events}");
    let success = server.cli(&["query", r#"probe_success{probe="web"}"#, "--format", "json"]);
    assert_eq!(success.json()["result"][0]["value"][1], "1", "{}", success.all());
    // The SLO counts the web probe's checks: all good, the whole budget left.
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let shown = server.cli(&["slo", "show", "web-up", "--format", "json"]);
        assert_eq!(shown.code, 0, "{}", shown.all());
        let json = shown.json();
        if json["figures"]["sli"].as_f64() == Some(1.0) {
            assert_eq!(json["figures"]["budget_remaining"].as_f64(), Some(1.0), "{json}");
            break;
        }
        assert!(Instant::now() < deadline, "the SLO was never evaluated with data: {json}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let listed = server.cli(&["slo", "list"]);
    assert!(listed.stdout.contains("monitors/web-up") && listed.stdout.contains("100.0%"), "{}", listed.all());
    // Scrape targets: the exporter's series with the target's labels; a malformed one is down.
    let load = server.cli(&["query", "node_load1", "--format", "json"]);
    let series = &load.json()["result"][0];
    assert_eq!(
        (series["metric"]["team"].as_str(), series["value"][1].as_str()),
        (Some("infra"), Some("0.75")),
        "{}",
        load.all()
    );
    let up = server.cli(&["query", "sum by (job) (up)", "--format", "json"]);
    let up: std::collections::BTreeMap<String, String> = up.json()["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["metric"]["job"].as_str().unwrap().to_string(), r["value"][1].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(up.get("node").map(String::as_str), Some("1"), "{up:?}");
    assert_eq!(up.get("broken").map(String::as_str), Some("0"), "{up:?}");
    let alerts = server.cli(&["alerts"]);
    assert_eq!(alerts.code, 0, "{}", alerts.all());
}

#[test]
fn alerting_rules_from_a_rule_file_fire_on_tandems_own_figures() {
    let data = tempfile::tempdir().unwrap();
    let rules = data.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: tandem\n    interval: 1s\n    rules:\n      - alert: QueueWatched\n        expr: tandem_queue_depth{job=\"tandem\"} >= 0\n        labels: { severity: ticket }\n        annotations: { summary: 'queue depth is {{ $value }}' }\n",
    )
    .unwrap();
    let bad = data.path().join("bad.yml");
    std::fs::write(&bad, "groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: sum(rate(x[5m])\n")
        .unwrap();
    let checked = crate::Run::from(
        Command::new(env!("CARGO_BIN_EXE_tandem")).args(["rules", "check"]).arg(&rules).arg(&bad).output().unwrap(),
    );
    assert_eq!(checked.code, 1, "{}", checked.all());
    assert!(checked.stdout.contains("1 groups, 1 rules"), "{}", checked.all());
    assert!(checked.stderr.contains("bad.yml:5:15: invalid PromQL"), "{}", checked.all());

    let server = Server::start_with(data.path(), None, &["--rules", rules.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alerts = server.cli(&["alerts", "--format", "json"]);
        assert_eq!(alerts.code, 0, "{}", alerts.all());
        let json = alerts.json();
        let firing = json["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["labels"]["alertname"] == "QueueWatched" && a["state"] == "firing");
        if let Some(alert) = firing {
            assert_eq!(alert["annotations"]["summary"], "queue depth is 0", "{alert}");
            assert_eq!(alert["labels"]["severity"], "ticket");
            break;
        }
        assert!(Instant::now() < deadline, "the alert never fired: {json}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let auth = format!("Bearer {}", server.token);
    let (_, body) = http(&server.addr, "GET", "/api/v1/rules", &[("authorization", &auth)], b"");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["data"]["groups"][0]["rules"][0]["health"], "ok", "{json}");
    assert_eq!(json["data"]["groups"][0]["rules"][0]["state"], "firing", "{json}");
    let (_, events) = http(&server.addr, "GET", "/api/v1/events?limit=1000", &[("authorization", &auth)], b"");
    assert!(events.contains("alert.firing") && events.contains("alert/tandem/QueueWatched"), "{events}");
}

#[test]
fn kill_9_during_ingestion_keeps_every_sample_a_query_saw() {
    let data = tempfile::tempdir().unwrap();
    let exporter = serve_text("# TYPE queue_depth gauge\nqueue_depth{queue=\"mail\"} 3\n");
    let monitors = data.path().join("monitors.yml");
    std::fs::write(&monitors, format!("scrape:\n  mailer:\n    url: http://127.0.0.1:{exporter}/metrics\n")).unwrap();
    let args = ["--monitors", monitors.to_str().unwrap(), "--scrape-interval", "1s"];
    let server = Server::start_with(data.path(), None, &args);
    let token = server.token.clone();
    let count = |server: &Server, at: &str| -> u64 {
        let answer = server.cli(&[
            "query",
            r#"count_over_time(queue_depth{job="mailer"}[1h])"#,
            "--time",
            at,
            "--format",
            "json",
        ]);
        assert_eq!(answer.code, 0, "{}", answer.all());
        answer.json()["result"][0]["value"][1].as_str().map_or(0, |v| v.parse().unwrap())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (at, seen) = loop {
        let at =
            format!("{:.3}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64());
        let seen = count(&server, &at);
        if seen >= 5 {
            break (at, seen);
        }
        assert!(Instant::now() < deadline, "ingestion never reached 5 samples ({seen})");
        std::thread::sleep(Duration::from_millis(300));
    };
    // Killed while it keeps ingesting every second: what a query saw was in the log already.
    let _crashed = server.kill9();
    let server = Server::start_with(data.path(), Some(&token), &args);
    assert_eq!(count(&server, &at), seen, "samples seen before the kill are lost");
}

/// Serves `n` gauges, each in its own series, at every request.
fn serve_many(n: usize) -> u16 {
    let body: String = (0..n).map(|i| format!("wide_gauge{{i=\"{i}\"}} {i}\n")).collect();
    serve_text(Box::leak(body.into_boxed_str()))
}

#[test]
fn a_full_disk_stops_ingestion_with_an_alert_and_corrupts_nothing() {
    let data = tempfile::tempdir().unwrap();
    let mut monitors = String::from("scrape:\n");
    for name in ["a", "b", "c"] {
        monitors += &format!("  {name}:\n    url: http://127.0.0.1:{}/metrics\n", serve_many(9_000));
    }
    let file = data.path().join("monitors.yml");
    std::fs::write(&file, monitors).unwrap();
    // Files may not grow past 8 MiB: the store's log fills up within seconds (SIGXFSZ ignored, so a
    // write past the limit fails as a full disk's would).
    let mut command = Command::new("bash");
    command
        .args(["-c", "trap '' XFSZ; ulimit -f 8192; exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_tandem"))
        .args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .args(["--monitors", file.to_str().unwrap(), "--scrape-interval", "1s"]);
    let server = Server::spawn(command, data.path(), None);
    let token = server.token.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let alerts = server.cli(&["alerts", "--format", "json"]);
        assert_eq!(alerts.code, 0, "the server must keep answering: {}", alerts.all());
        if alerts.json()["alerts"].as_array().unwrap().iter().any(|a| a["labels"]["alertname"] == "StoreWriteFailing") {
            break;
        }
        assert!(Instant::now() < deadline, "no alert while the log cannot grow: {}", alerts.all());
        std::thread::sleep(Duration::from_millis(500));
    }
    let auth = format!("Bearer {}", server.token);
    let (_, events) = http(&server.addr, "GET", "/api/v1/events?limit=1000", &[("authorization", &auth)], b"");
    assert!(events.contains("alert/tandem/StoreWriteFailing"), "{events}");
    let stored = |server: &Server| -> u64 {
        let answer = server.cli(&["query", "count(count_over_time(wide_gauge[1h]))", "--format", "json"]);
        answer.json()["result"][0]["value"][1].as_str().map_or(0, |v| v.parse().unwrap())
    };
    let before = stored(&server);
    assert!(before > 0, "nothing was stored before the disk filled");
    drop(server);
    // With room again, the store opens from a log cut at its last whole record and ingests again.
    let server = Server::start_with(
        data.path(),
        Some(&token),
        &["--monitors", file.to_str().unwrap(), "--scrape-interval", "1s"],
    );
    assert_eq!(stored(&server), before, "the series stored before the disk filled");
}

#[test]
fn remote_write_sends_every_sample_to_a_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let (_prometheus, port) =
        Prometheus::start(dir.path(), &dir.path().join("prometheus"), &["--web.enable-remote-write-receiver"]);
    let url = format!("http://127.0.0.1:{port}/api/v1/write");
    let server =
        Server::start_with(&dir.path().join("tandem"), None, &["--remote-write", &url, "--scrape-interval", "1s"]);
    let ours_port: u16 = server.addr.rsplit(':').next().unwrap().parse().unwrap();
    // Tandem's own figures arrive in Prometheus with the same labels and values.
    let query = format!("/api/v1/query?query={}", encode("tandem_tsdb_series{job=\"tandem\"}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let theirs = get(port, &query, None);
        if let Some(series) = theirs["data"]["result"].as_array().and_then(|r| r.first()) {
            assert_eq!(series["metric"]["instance"].as_str(), Some(server.addr.as_str()), "{theirs}");
            break;
        }
        assert!(Instant::now() < deadline, "nothing arrived in Prometheus: {theirs}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Over the same window both hold the same number of samples of a series (give the queue a moment).
    std::thread::sleep(Duration::from_secs(3));
    let at =
        get(ours_port, &format!("/api/v1/query?query={}", encode("time() - 2")), Some(&server.token))["data"]["result"]
            [1]
        .as_str()
        .unwrap()
        .to_string();
    let count =
        format!("/api/v1/query?query={}&time={at}", encode("count_over_time(tandem_queue_depth{job=\"tandem\"}[1h])"));
    let ours = get(ours_port, &count, Some(&server.token))["data"]["result"][0]["value"][1].clone();
    let theirs = get(port, &count, None)["data"]["result"][0]["value"][1].clone();
    assert_eq!(ours, theirs, "samples stored here and received there");
    let metrics = get_text(ours_port, "/metrics");
    assert!(metrics.contains("tandem_remote_write_samples_total{outcome=\"failed\"} 0"), "{metrics}");
}

fn get_text(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nhost: 127.0.0.1\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn a_heartbeat_fails_when_its_job_goes_silent_and_recovers_with_a_ping() {
    let data = tempfile::tempdir().unwrap();
    let monitors = data.path().join("monitors.yml");
    std::fs::write(&monitors, "probes:\n  nightly-backup:\n    heartbeat: 2s\n    interval: 1s\n").unwrap();
    let server = Server::start_with(data.path(), None, &["--monitors", monitors.to_str().unwrap()]);
    let state = |server: &Server| -> (String, String) {
        let probes = server.cli(&["probes", "--format", "json"]);
        let probe = &probes.json()[0];
        (probe["state"].as_str().unwrap_or("").to_string(), probe["last"]["error"].as_str().unwrap_or("").to_string())
    };
    let wait_for = |wanted: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (now, error) = state(&server);
            if now == wanted {
                return error;
            }
            assert!(Instant::now() < deadline, "the heartbeat never became {wanted} (it is {now}: {error})");
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let error = wait_for("failing");
    assert!(error.contains("no ping"), "{error}");
    let pinged = server.cli(&["heartbeat", "nightly-backup"]);
    assert_eq!(pinged.code, 0, "{}", pinged.all());
    assert!(pinged.stdout.contains("monitors/nightly-backup"), "{}", pinged.all());
    wait_for("up");
    let unknown = server.cli(&["heartbeat", "no-such-job"]);
    assert_ne!(unknown.code, 0);
    assert!(unknown.stderr.contains("no heartbeat probe is named `no-such-job`"), "{}", unknown.all());
}

/// Records every request body it receives (a webhook receiver) and answers 200.
pub fn webhook_receiver() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let (mut line, mut length) = (String::new(), 0usize);
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            if let Ok(json) = serde_json::from_slice(&body) {
                seen.lock().unwrap().push(json);
            }
            let _ = reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, bodies)
}

#[test]
fn alerts_from_a_prometheus_are_routed_grouped_and_sent_to_a_webhook_once() {
    let data = tempfile::tempdir().unwrap();
    let (page_port, pages) = webhook_receiver();
    let (team_port, team) = webhook_receiver();
    let config = data.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: team\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  routes:\n    - matchers: ['severity=\"page\"']\n      receiver: pager\ninhibit_rules:\n  - source_matchers: [alertname=ServiceDown]\n    target_matchers: [alertname=HighLatency]\n    equal: [service]\nreceivers:\n  - name: pager\n    webhook_configs: [{{ url: 'http://127.0.0.1:{page_port}/hook' }}]\n  - name: team\n    webhook_configs: [{{ url: 'http://127.0.0.1:{team_port}/hook', send_resolved: false }}]\n    pagerduty_configs: [{{ routing_key: x }}]\n"
        ),
    )
    .unwrap();
    let server = Server::start_with(data.path(), None, &["--alertmanager-config", config.to_str().unwrap()]);
    let auth = format!("Bearer {}", server.token);
    let post = |body: &str| {
        http(
            &server.addr,
            "POST",
            "/api/v2/alerts",
            &[("authorization", &auth), ("content-type", "application/json")],
            body.as_bytes(),
        )
    };
    // Two pages for one service in the same group, a latency alert the outage inhibits, and a ticket.
    let (status, body) = post(
        r#"[{"labels": {"alertname": "ServiceDown", "severity": "page", "service": "shop", "instance": "a"}, "annotations": {"summary": "shop is down"}},
            {"labels": {"alertname": "ServiceDown", "severity": "page", "service": "shop", "instance": "b"}},
            {"labels": {"alertname": "HighLatency", "severity": "page", "service": "shop"}},
            {"labels": {"alertname": "DiskFilling", "severity": "ticket"}}]"#,
    );
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while pages.lock().unwrap().is_empty() || team.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no notification arrived");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let sent = pages.lock().unwrap().clone();
    let outage = sent.iter().find(|p| p["groupLabels"]["alertname"] == "ServiceDown").expect("the outage's page");
    assert_eq!((outage["version"].as_str(), outage["status"].as_str()), (Some("4"), Some("firing")), "{outage}");
    assert_eq!(outage["alerts"].as_array().unwrap().len(), 2, "both instances in one notification: {outage}");
    assert_eq!(outage["commonLabels"]["service"], "shop");
    assert!(
        !sent.iter().any(|p| p["groupLabels"]["alertname"] == "HighLatency"),
        "the outage inhibits the latency page: {sent:?}"
    );
    assert_eq!(
        sent.iter().filter(|p| p["groupLabels"]["alertname"] == "ServiceDown").count(),
        1,
        "told once, not every interval: {sent:?}"
    );
    assert_eq!(team.lock().unwrap()[0]["alerts"][0]["labels"]["alertname"], "DiskFilling");
    // The outage ends: the pager hears it is resolved; the team, without send_resolved, does not.
    let (status, _) = post(
        r#"[{"labels": {"alertname": "ServiceDown", "severity": "page", "service": "shop", "instance": "a"}, "endsAt": "2020-01-01T00:00:00Z"},
                             {"labels": {"alertname": "ServiceDown", "severity": "page", "service": "shop", "instance": "b"}, "endsAt": "2020-01-01T00:00:00Z"}]"#,
    );
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pages
        .lock()
        .unwrap()
        .iter()
        .any(|p| p["status"] == "resolved" && p["groupLabels"]["alertname"] == "ServiceDown")
    {
        assert!(Instant::now() < deadline, "no resolved notification: {:?}", pages.lock().unwrap());
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = server.cli(&["notifications", "--format", "json"]);
    let events = log.json()["events"].as_array().unwrap().clone();
    assert!(events.iter().filter(|e| e["kind"] == "notification.sent").count() >= 3, "{events:?}");
    let table = server.cli(&["notifications"]);
    assert!(table.stdout.contains("pager") && table.stdout.contains("resolved"), "{}", table.all());
    // A malformed alert is refused with its reason.
    let (status, body) = post(r#"[{"labels": {}}]"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no labels"), "{body}");
}

#[test]
fn after_kill_9_a_receiver_is_not_told_again_what_it_heard() {
    let data = tempfile::tempdir().unwrap();
    let (port, bodies) = webhook_receiver();
    let config = data.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        format!("route:\n  receiver: r\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: r\n    webhook_configs: [{{ url: 'http://127.0.0.1:{port}/' }}]\n"),
    )
    .unwrap();
    let args = ["--alertmanager-config", config.to_str().unwrap()];
    let post = |server: &Server, body: &str| {
        let auth = format!("Bearer {}", server.token);
        let (status, answer) = http(
            &server.addr,
            "POST",
            "/api/v2/alerts",
            &[("authorization", &auth), ("content-type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(status, 200, "{answer}");
    };
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while bodies.lock().unwrap().len() < n {
            assert!(Instant::now() < deadline, "{} notification(s), expected {n}", bodies.lock().unwrap().len());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // What the server recorded as told: a notification the receiver got in the instant before
    // a crash, before it was recorded, is told again (at least once, never lost).
    let recorded = |server: &Server, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let events = server.cli(&["audit", "log", "--kind", "notification.sent", "--format", "json"]).stdout;
            if events.lines().count() >= n {
                return;
            }
            assert!(Instant::now() < deadline, "the notification was never recorded: {events}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let alert = r#"[{"labels": {"alertname": "QueueStuck", "instance": "a"}}]"#;
    let server = Server::start_with(data.path(), None, &args);
    let token = server.token.clone();
    post(&server, alert);
    wait_for(1);
    recorded(&server, 1);
    let _crashed = server.kill9();
    // Prometheus sends its firing alerts again after the restart: the receiver heard this one.
    let server = Server::start_with(data.path(), Some(&token), &args);
    post(&server, alert);
    std::thread::sleep(Duration::from_secs(4));
    let heard = bodies.lock().unwrap().clone();
    assert_eq!(heard.len(), 1, "told twice: {heard:?}");
    // What changes is told.
    post(
        &server,
        r#"[{"labels": {"alertname": "QueueStuck", "instance": "a"}}, {"labels": {"alertname": "QueueStuck", "instance": "b"}}]"#,
    );
    wait_for(2);
    let heard = bodies.lock().unwrap().clone();
    assert_eq!(heard[1]["alerts"].as_array().unwrap().len(), 2, "{heard:?}");
    // Killed between an alert and its notification (within group_wait): after the restart it is
    // told once, though nobody sends it again.
    post(&server, r#"[{"labels": {"alertname": "DiskFull", "instance": "db"}}]"#);
    let _crashed = server.kill9();
    let _server = Server::start_with(data.path(), Some(&token), &args);
    wait_for(3);
    std::thread::sleep(Duration::from_secs(3));
    let told = bodies.lock().unwrap().clone();
    assert_eq!(told.len(), 3, "told once: {told:?}");
    assert_eq!(told[2]["alerts"][0]["labels"]["alertname"], "DiskFull");
}

#[test]
fn a_silence_mutes_matching_alerts_until_it_expires_and_survives_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let (port, bodies) = webhook_receiver();
    let config = data.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        format!("route:\n  receiver: r\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n  - name: r\n    webhook_configs: [{{ url: 'http://127.0.0.1:{port}/' }}]\n"),
    )
    .unwrap();
    let args = ["--alertmanager-config", config.to_str().unwrap()];
    let server = Server::start_with(data.path(), None, &args);
    let token = server.token.clone();
    let added = server.cli(&[
        "silence",
        "add",
        "alertname=Noisy",
        "instance=~db-.*",
        "--duration",
        "1h",
        "--comment",
        "resizing",
    ]);
    assert_eq!(added.code, 0, "{}", added.all());
    let id = added.stdout.split_whitespace().nth(1).unwrap().to_string();
    // The silence is in the log: a crash does not lift it.
    let _crashed = server.kill9();
    let server = Server::start_with(data.path(), Some(&token), &args);
    let listed = server.cli(&["silence", "list"]);
    assert!(
        listed.stdout.contains(&id) && listed.stdout.contains("active") && listed.stdout.contains("instance=~db-.*"),
        "{}",
        listed.all()
    );
    let auth = format!("Bearer {}", server.token);
    let post = |body: &str| {
        let (status, answer) = http(
            &server.addr,
            "POST",
            "/api/v2/alerts",
            &[("authorization", &auth), ("content-type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(status, 200, "{answer}");
    };
    post(
        r#"[{"labels": {"alertname": "Noisy", "instance": "db-1"}}, {"labels": {"alertname": "Other", "instance": "db-1"}}]"#,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while bodies.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "nothing was told");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let names: Vec<String> = bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| b["groupLabels"]["alertname"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names, ["Other"], "the silenced alert was told");
    let expired = server.cli(&["silence", "expire", &id]);
    assert_eq!(expired.code, 0, "{}", expired.all());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !bodies.lock().unwrap().iter().any(|b| b["groupLabels"]["alertname"] == "Noisy") {
        assert!(Instant::now() < deadline, "the alert stayed muted after its silence expired");
        std::thread::sleep(Duration::from_millis(200));
    }
}
