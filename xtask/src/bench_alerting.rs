//! Alert routing side by side with Alertmanager (Debian's `prometheus-alertmanager`, 0.25): both
//! read the same configuration file and are fed the same alerts at the same moment.
//!
//! - latency: 20 alerts of distinct groups; the time from the POST to the webhook's receipt, with
//!   the default `group_wait` (30 s) — what a person waits for a page;
//! - storm: 10,000 alerts (100 alert names × 100 instances) in batches of 500; how many
//!   notifications reach the receiver, how many alerts they carry, and the CPU and memory each
//!   process used.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench_monitoring::{Process, cpu_seconds, rss_mib, wait_for};

const ALERTMANAGER_PORT: u16 = 19161;
const TANDEM_PORT: u16 = 19162;

/// What a receiver heard: (when, the JSON body).
type Heard = Arc<Mutex<Vec<(Instant, serde_json::Value)>>>;

/// A webhook receiver on loopback that notes the arrival of every notification.
fn receiver() -> Result<(u16, Heard)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let heard: Heard = Arc::new(Mutex::new(Vec::new()));
    let seen = heard.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
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
                    seen.lock().unwrap_or_else(|e| e.into_inner()).push((Instant::now(), json));
                }
                let _ =
                    reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            });
        }
    });
    Ok((port, heard))
}

fn post(port: u16, path: &str, token: Option<&str>, body: &str) -> Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        bail!("POST {path} on {port}: {}", response.lines().next().unwrap_or_default());
    }
    Ok(())
}

fn alerts(names: std::ops::Range<usize>, instances: usize) -> Vec<String> {
    names
        .flat_map(|n| {
            (0..instances).map(move |i| {
                format!(
                    r#"{{"labels": {{"alertname": "Bench{n:03}", "instance": "host-{i:03}", "severity": "ticket"}}}}"#
                )
            })
        })
        .collect()
}

/// Tandem and Alertmanager, each routing to its own receiver with the same configuration.
struct Pair {
    _alertmanager: Process,
    tandem: Process,
    alertmanager_pid: u32,
    token: String,
    ours: Heard,
    theirs: Heard,
}

fn start(tandem: &Path, scratch: &Path) -> Result<Pair> {
    let (our_port, ours) = receiver()?;
    let (their_port, theirs) = receiver()?;
    // One file, read by both; only the receiver's URL differs.
    let config = |port: u16| {
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: http://127.0.0.1:{port}/\n"
        )
    };
    std::fs::write(scratch.join("ours.yml"), config(our_port))?;
    std::fs::write(scratch.join("theirs.yml"), config(their_port))?;
    std::fs::create_dir_all(scratch.join("alertmanager"))?;
    let alertmanager = Process(
        Command::new("/usr/bin/prometheus-alertmanager")
            .arg(format!("--config.file={}", scratch.join("theirs.yml").display()))
            .arg(format!("--storage.path={}", scratch.join("alertmanager").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{ALERTMANAGER_PORT}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start Alertmanager (Debian's prometheus-alertmanager)")?,
    );
    let alertmanager_pid = alertmanager.0.id();
    let mut server = Command::new(tandem)
        .args(["server", "--listen", &format!("127.0.0.1:{TANDEM_PORT}"), "--data"])
        .arg(scratch.join("tandem"))
        .arg("--alertmanager-config")
        .arg(scratch.join("ours.yml"))
        .env("TANDEM_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut reader = BufReader::new(server.stdout.take().context("no stdout")?);
    let mut token = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while token.is_none() && Instant::now() < deadline {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("the Tandem server exited early");
        }
        token = line.find("tdm_").map(|at| line[at..].trim().to_string());
    }
    std::thread::spawn(move || for _ in reader.lines() {});
    let tandem = Process(server);
    wait_for(ALERTMANAGER_PORT, "/-/ready", Duration::from_secs(30))?;
    wait_for(TANDEM_PORT, "/healthz", Duration::from_secs(30))?;
    Ok(Pair { _alertmanager: alertmanager, tandem, alertmanager_pid, token: token.context("no token")?, ours, theirs })
}

impl Pair {
    /// Sends the same batch to both, ours first then theirs, back to back.
    fn send(&self, batch: &str) -> Result<()> {
        post(TANDEM_PORT, "/api/v2/alerts", Some(&self.token), batch)?;
        post(ALERTMANAGER_PORT, "/api/v2/alerts", None, batch)
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Seconds from sending to the first notification of each group.
fn latencies(heard: &Heard, sent: &[(String, Instant)]) -> Vec<f64> {
    let heard = heard.lock().unwrap_or_else(|e| e.into_inner());
    sent.iter()
        .filter_map(|(name, at)| {
            heard
                .iter()
                .find(|(_, body)| body["groupLabels"]["alertname"] == name.as_str())
                .map(|(when, _)| when.duration_since(*at).as_secs_f64())
        })
        .collect()
}

pub fn run(_args: &[String]) -> Result<()> {
    if !Path::new("/usr/bin/prometheus-alertmanager").exists() {
        crate::run(Command::new("apt-get").args(["install", "-y", "-q", "prometheus-alertmanager"]))?;
    }
    crate::run(Command::new("cargo").args(["build", "--release", "-p", "tandem", "--quiet"]))?;
    let tandem = Path::new("target/release/tandem").canonicalize()?;
    let scratch: PathBuf = std::env::temp_dir().join(format!("tandem-bench-alerting-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let pair = start(&tandem, &scratch)?;

    // Latency: 20 groups, one alert each, sent to both within a millisecond of each other.
    let mut sent_ours = Vec::new();
    let mut sent_theirs = Vec::new();
    for (i, alert) in alerts(900..920, 1).into_iter().enumerate() {
        let name = format!("Bench{:03}", 900 + i);
        let batch = format!("[{alert}]");
        sent_ours.push((name.clone(), Instant::now()));
        post(TANDEM_PORT, "/api/v2/alerts", Some(&pair.token), &batch)?;
        sent_theirs.push((name, Instant::now()));
        post(ALERTMANAGER_PORT, "/api/v2/alerts", None, &batch)?;
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(40));
    let (ours, theirs) = (latencies(&pair.ours, &sent_ours), latencies(&pair.theirs, &sent_theirs));
    if ours.len() < 20 || theirs.len() < 20 {
        bail!("some pages never arrived: Tandem {} of 20, Alertmanager {} of 20", ours.len(), theirs.len());
    }
    let (ours_ms, theirs_ms) = (median(ours.clone()) * 1000.0, median(theirs.clone()) * 1000.0);
    let spread = |v: &[f64]| {
        v.iter().copied().fold(0.0_f64, f64::max) * 1000.0 - v.iter().copied().fold(f64::MAX, f64::min) * 1000.0
    };

    // The storm: 10,000 alerts of 100 names in batches of 500.
    pair.ours.lock().unwrap_or_else(|e| e.into_inner()).clear();
    pair.theirs.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let (cpu_ours0, cpu_theirs0) = (cpu_seconds(pair.tandem.0.id())?, cpu_seconds(pair.alertmanager_pid)?);
    let storm = alerts(0..100, 100);
    let started = Instant::now();
    for chunk in storm.chunks(500) {
        pair.send(&format!("[{}]", chunk.join(",")))?;
    }
    let intake = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(45));
    let (cpu_ours, cpu_theirs) =
        (cpu_seconds(pair.tandem.0.id())? - cpu_ours0, cpu_seconds(pair.alertmanager_pid)? - cpu_theirs0);
    let (rss_ours, rss_theirs) = (rss_mib(pair.tandem.0.id())?, rss_mib(pair.alertmanager_pid)?);
    let count = |heard: &Heard| {
        let heard = heard.lock().unwrap_or_else(|e| e.into_inner());
        let alerts: usize = heard.iter().map(|(_, b)| b["alerts"].as_array().map_or(0, Vec::len)).sum();
        (heard.len(), alerts)
    };
    let ((n_ours, a_ours), (n_theirs, a_theirs)) = (count(&pair.ours), count(&pair.theirs));
    drop(pair);
    let _ = std::fs::remove_dir_all(&scratch);

    println!("| measure | Tandem | Alertmanager 0.25 | ratio |\n|---|---|---|---|");
    println!(
        "| page latency, median of 20 groups (group_wait 30 s) | {ours_ms:.0} ms | {theirs_ms:.0} ms | {:.3}× |",
        ours_ms / theirs_ms
    );
    println!("| spread of those 20 latencies | {:.0} ms | {:.0} ms | |", spread(&ours), spread(&theirs));
    println!("| storm of 10,000 alerts (100 groups): notifications | {n_ours} | {n_theirs} | |");
    println!("| alerts carried by those notifications | {a_ours} | {a_theirs} | |");
    println!(
        "| CPU seconds for the storm (intake {intake:.1} s, both) | {cpu_ours:.2} | {cpu_theirs:.2} | {:.2}× |",
        cpu_ours / cpu_theirs
    );
    println!("| RSS after the storm | {rss_ours:.0} MiB | {rss_theirs:.0} MiB | {:.2}× |", rss_ours / rss_theirs);
    Ok(())
}
