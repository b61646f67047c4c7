//! PromQL side by side with a real Prometheus (Debian's 2.42): the same history is loaded into
//! both — `promtool tsdb create-blocks-from openmetrics` for Prometheus, `tandem metrics import`
//! for Tandem — and the same queries must give the same answers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::Server;

struct Prometheus(Child);

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

fn get(port: u16, path: &str, token: Option<&str>) -> serde_json::Value {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.0\r\nhost: 127.0.0.1\r\n{auth}\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|_| panic!("GET {path} on {port}: {response}"))
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

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(dir.path().join("prometheus.yml"), "global: {}\n").unwrap();
    let _prometheus = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", blocks.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err()
        || get(port, "/api/v1/query?query=1", None)["status"] != "success"
    {
        assert!(Instant::now() < deadline, "Prometheus did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
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
