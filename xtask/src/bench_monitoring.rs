//! Monitoring side by side with Prometheus (Debian's 2.42, from `../shared/peers/prometheus`):
//! both scrape the same synthetic exporter (200 targets × 100 series every 15 s) at the same time;
//! after a warm-up, CPU per 1,000 samples and RSS of each process over a window, bytes per sample
//! on disk, and the median time of the same two queries on each.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const EXPORTER_PORT: u16 = 19150;
const PROMETHEUS_PORT: u16 = 19151;
const TANDEM_PORT: u16 = 19152;
const QUERIES: [&str; 2] =
    ["sum by (job) (rate(x_total[5m]))", "histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m])))"];

pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = nix_kill(self.0.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nix_kill(pid: u32, signal: &str) -> Result<()> {
    crate::run(Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()))
}

/// CPU seconds (user + system) of a process.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit_once(')').context("odd /proc stat")?.1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

pub fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok(kb / 1024.0)
}

pub fn get(port: u16, path: &str, token: Option<&str>) -> Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{auth}connection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP answer")?;
    if head.split_whitespace().nth(1) != Some("200") {
        bail!("GET {path}: {head}\n{body}");
    }
    // Chunked answers (Prometheus's) are read whole; only their figures matter here.
    Ok(body.to_string())
}

/// A metric's value in a Prometheus text exposition (the sum over its series).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn wait_for(port: u16, path: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if get(port, path, None).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("nothing answered on 127.0.0.1:{port}{path}")
}

pub fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Median milliseconds of 10 evaluations of `query` at now.
pub fn query_ms(port: u16, token: Option<&str>, query: &str) -> Result<f64> {
    let mut times = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let body = get(port, &format!("/api/v1/query?query={}", encode(query)), token)?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        if !body.contains("\"success\"") {
            bail!("{query} on port {port}: {body}");
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .map(|e| {
            let path = e.path();
            if path.is_dir() { dir_bytes(&path) } else { e.metadata().map_or(0, |m| m.len()) }
        })
        .sum()
}

pub fn run(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let (warmup, window) = if quick { (45, 90) } else { (60, 300) };
    // `--targets=N`: the exporter's targets of 100 series each (the peer's figures are at 200).
    let targets: usize = match args.iter().find_map(|a| a.strip_prefix("--targets=")) {
        Some(n) => n.parse().ok().filter(|n| (10..=5000).contains(n)).context("--targets takes 10 to 5000")?,
        None => 200,
    };
    let peer =
        Path::new("../shared/peers/prometheus").canonicalize().context("the Prometheus peer scripts are missing")?;
    let peer_binaries =
        ["/usr/bin/prometheus", "/usr/bin/prometheus-alertmanager", "/usr/bin/prometheus-blackbox-exporter"];
    if peer_binaries.iter().any(|b| !Path::new(b).exists()) {
        crate::run(Command::new("bash").arg(peer.join("setup.sh")))?;
    }
    crate::run(Command::new("cargo").args(["build", "--release", "-p", "tandem", "--quiet"]))?;
    let tandem = Path::new("target/release/tandem").canonicalize()?;
    let scratch: PathBuf = std::env::temp_dir().join(format!("tandem-bench-monitoring-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(scratch.join("prometheus"))?;
    // `cargo xtask bench monitoring history`: that part alone.
    if args.iter().any(|a| a == "history") {
        let rows = crate::bench_history::run(&tandem, &scratch)?;
        println!("{rows}");
        let _ = std::fs::remove_dir_all(&scratch);
        return Ok(());
    }
    // `cargo xtask bench monitoring detection`: that part alone.
    if args.iter().any(|a| a == "detection") {
        let row = detection(&tandem, &peer, &scratch)?;
        let live = crate::bench_deploy::live_page(&tandem, &peer, 5)?;
        println!("| measure | Tandem | peer | ratio |\n|---|---|---|---|\n{row}{live}");
        let _ = std::fs::remove_dir_all(&scratch);
        return Ok(());
    }

    let _exporter = Process(
        Command::new("python3")
            .arg(peer.join("tools/exporter.py"))
            .args([EXPORTER_PORT.to_string(), targets.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_for(EXPORTER_PORT, "/healthz", Duration::from_secs(30))?;
    let mut prometheus_config =
        String::from("global:\n  scrape_interval: 15s\n  scrape_timeout: 10s\nscrape_configs:\n");
    let mut monitors = String::from("scrape:\n");
    for i in 0..targets {
        let job = format!("svc{:02}", i / (targets / 10));
        let _ = write!(
            prometheus_config,
            "- job_name: t{i:03}\n  metrics_path: /t/{i}/metrics\n  static_configs:\n  - targets: ['127.0.0.1:{EXPORTER_PORT}']\n    labels: {{job: {job}, instance: target-{i:03}}}\n"
        );
        let _ = write!(
            monitors,
            "  t{i:03}:\n    url: http://127.0.0.1:{EXPORTER_PORT}/t/{i}/metrics\n    labels: {{job: {job}, instance: target-{i:03}}}\n"
        );
    }
    std::fs::write(scratch.join("prometheus.yml"), &prometheus_config)?;
    std::fs::write(scratch.join("monitors.yml"), &monitors)?;
    let prometheus = Process(
        Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", scratch.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", scratch.join("prometheus").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let mut server = Command::new(&tandem)
        .args(["server", "--listen", &format!("127.0.0.1:{TANDEM_PORT}"), "--data"])
        .arg(scratch.join("tandem"))
        .arg("--monitors")
        .arg(scratch.join("monitors.yml"))
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
    let tandem_process = Process(server);
    let token = token.context("the server printed no token")?;
    wait_for(PROMETHEUS_PORT, "/-/ready", Duration::from_secs(60))?;
    let (tandem_pid, prometheus_pid) = (tandem_process.0.id(), prometheus.0.id());

    eprintln!("monitoring bench: {targets} targets × 100 series every 15 s; warm-up {warmup} s, window {window} s");
    std::thread::sleep(Duration::from_secs(warmup));
    let chunk_bytes_at =
        || -> Result<f64> { Ok(metric(&get(TANDEM_PORT, "/metrics", None)?, "tandem_tsdb_chunk_bytes")) };
    let snapshot = || -> Result<(f64, f64, f64, f64)> {
        let ours = metric(&get(TANDEM_PORT, "/metrics", None)?, "tandem_tsdb_samples");
        let theirs = metric(&get(PROMETHEUS_PORT, "/metrics", None)?, "prometheus_tsdb_head_samples_appended_total");
        Ok((ours, theirs, cpu_seconds(tandem_pid)?, cpu_seconds(prometheus_pid)?))
    };
    let bytes_before = chunk_bytes_at()?;
    let start = snapshot()?;
    std::thread::sleep(Duration::from_secs(window));
    let end = snapshot()?;
    // What each sample of the window added to the chunks: the steady-state cost, without the
    // first sample each series' chunk spends on a whole timestamp and value.
    let marginal = (chunk_bytes_at()? - bytes_before) / (end.0 - start.0);
    let (rss_ours, rss_theirs) = (rss_mib(tandem_pid)?, rss_mib(prometheus_pid)?);
    let cpu_ours = (end.2 - start.2) / ((end.0 - start.0) / 1000.0);
    let cpu_theirs = (end.3 - start.3) / ((end.1 - start.1) / 1000.0);
    let mut query_rows = String::new();
    for query in QUERIES {
        let ours = query_ms(TANDEM_PORT, Some(&token), query)?;
        let theirs = query_ms(PROMETHEUS_PORT, None, query)?;
        let _ = writeln!(
            query_rows,
            "| query `{query}` (median of 10) | {ours:.1} ms | {theirs:.1} ms | {:.2}× |",
            ours / theirs
        );
    }
    let own = get(TANDEM_PORT, "/metrics", None)?;
    let series_ours = metric(&own, "tandem_tsdb_series");
    let chunk_bytes = metric(&own, "tandem_tsdb_chunk_bytes") / metric(&own, "tandem_tsdb_samples");
    let samples_theirs = end.1;
    let prometheus_disk = dir_bytes(&scratch.join("prometheus/chunks_head")) as f64;
    let prometheus_wal = dir_bytes(&scratch.join("prometheus/wal")) as f64;
    // Stopping Tandem writes its snapshot (and empties its log); sealed chunks old or many enough
    // are in blocks beside it.
    drop(tandem_process);
    let snapshot_bytes = std::fs::metadata(scratch.join("tandem/tsdb/snapshot")).map_or(0, |m| m.len()) as f64
        + dir_bytes(&scratch.join("tandem/tsdb/blocks")) as f64;
    let samples_ours = end.0;
    drop(prometheus);
    let mut report = String::new();
    let _ = writeln!(
        report,
        "Both scrape the same {targets} targets × 100 series every 15 s at once; window {window} s after {warmup} s of warm-up.\n"
    );
    let _ = writeln!(report, "| measure | Tandem | Prometheus 2.42 | ratio |\n|---|---|---|---|");
    let _ = writeln!(
        report,
        "| CPU per 1,000 samples ingested | {:.2} ms | {:.2} ms | {:.2}× |",
        cpu_ours * 1000.0,
        cpu_theirs * 1000.0,
        cpu_ours / cpu_theirs
    );
    let _ = writeln!(
        report,
        "| RSS at the end ({series_ours:.0} series in Tandem) | {rss_ours:.0} MiB | {rss_theirs:.0} MiB | {:.2}× |",
        rss_ours / rss_theirs
    );
    let _ = writeln!(
        report,
        "| bytes per sample on disk (Tandem: snapshot and blocks of compressed chunks; Prometheus: chunks_head + WAL) | {:.2} B | {:.2} B ({:.2} B chunks alone) | {:.2}× |",
        snapshot_bytes / samples_ours,
        (prometheus_disk + prometheus_wal) / samples_theirs,
        prometheus_disk / samples_theirs,
        (snapshot_bytes / samples_ours) / ((prometheus_disk + prometheus_wal) / samples_theirs)
    );
    let _ = writeln!(
        report,
        "| compressed samples alone (Tandem: chunk bytes; Prometheus: 1.3–4.1 B in its docs and the peer's 10-minute run) | {chunk_bytes:.2} B | — | — |"
    );
    let _ = writeln!(
        report,
        "| chunk bytes each sample of the window added (steady state: no chunk starts within it) | {marginal:.2} B | — | — |"
    );
    report.push_str(&query_rows);
    // `cargo xtask bench monitoring ingestion`: that part alone.
    if args.iter().any(|a| a == "ingestion") {
        println!("{report}");
        let _ = std::fs::remove_dir_all(&scratch);
        return Ok(());
    }
    report.push_str(&probes(&tandem, &peer, &scratch, quick)?);
    report.push_str(&detection(&tandem, &peer, &scratch)?);
    report.push_str(&crate::bench_deploy::live_page(&tandem, &peer, 5)?);
    report.push_str(&crate::bench_history::run(&tandem, &scratch)?);
    println!("{report}");
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

const PROBES: usize = 500;

/// 500 HTTP probes every 15 s: Tandem alone, against blackbox_exporter probing for Prometheus,
/// each against its own copy of the peer's counting target. CPU per 1,000 probes.
fn probes(tandem: &Path, peer: &Path, scratch: &Path, quick: bool) -> Result<String> {
    let (warmup, window) = if quick { (30, 90) } else { (45, 240) };
    let (ours_port, theirs_port, blackbox_port, prometheus_port, tandem_port) =
        (19160u16, 19161u16, 19162u16, 19163u16, 19164u16);
    let target = |port: u16| -> Result<Process> {
        Ok(Process(
            Command::new("python3")
                .arg(peer.join("tools/probe_target.py"))
                .arg(port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        ))
    };
    let _ours_target = target(ours_port)?;
    let _theirs_target = target(theirs_port)?;
    wait_for(ours_port, "/__count", Duration::from_secs(30))?;
    wait_for(theirs_port, "/__count", Duration::from_secs(30))?;
    let dir = scratch.join("probes");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("blackbox.yml"),
        "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n      ip_protocol_fallback: false\n",
    )?;
    let mut prometheus_config = format!(
        "global:\n  scrape_interval: 15s\n  scrape_timeout: 10s\nscrape_configs:\n- job_name: blackbox\n  metrics_path: /probe\n  params:\n    module: [http_2xx]\n  relabel_configs:\n  - source_labels: [__address__]\n    target_label: __param_target\n  - source_labels: [__param_target]\n    target_label: instance\n  - target_label: __address__\n    replacement: 127.0.0.1:{blackbox_port}\n  static_configs:\n  - targets:\n"
    );
    let mut monitors = String::from("probes:\n");
    for i in 0..PROBES {
        let _ = writeln!(prometheus_config, "    - http://127.0.0.1:{theirs_port}/p/{i}");
        let _ = write!(monitors, "  p{i}:\n    http: http://127.0.0.1:{ours_port}/p/{i}\n    interval: 15s\n");
    }
    std::fs::write(dir.join("prometheus.yml"), prometheus_config)?;
    std::fs::write(dir.join("monitors.yml"), monitors)?;
    let blackbox = Process(
        Command::new("/usr/bin/prometheus-blackbox-exporter")
            .arg(format!("--config.file={}", dir.join("blackbox.yml").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{blackbox_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("blackbox_exporter is missing: run ../shared/peers/prometheus/setup.sh")?,
    );
    let prometheus = Process(
        Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("prometheus").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let server = Process(
        Command::new(tandem)
            .args(["server", "--listen", &format!("127.0.0.1:{tandem_port}"), "--data"])
            .arg(dir.join("tandem"))
            .arg("--monitors")
            .arg(dir.join("monitors.yml"))
            .env("TANDEM_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_for(tandem_port, "/healthz", Duration::from_secs(30))?;
    eprintln!("probes bench: {PROBES} HTTP probes every 15 s; warm-up {warmup} s, window {window} s");
    std::thread::sleep(Duration::from_secs(warmup));
    let count = |port: u16| -> Result<f64> { Ok(get(port, "/__count", None)?.trim().parse()?) };
    let cpu = |ids: &[u32]| -> Result<f64> { ids.iter().map(|id| cpu_seconds(*id)).sum() };
    let (ours_ids, theirs_ids) = ([server.0.id()], [blackbox.0.id(), prometheus.0.id()]);
    let start = (count(ours_port)?, count(theirs_port)?, cpu(&ours_ids)?, cpu(&theirs_ids)?);
    std::thread::sleep(Duration::from_secs(window));
    let end = (count(ours_port)?, count(theirs_port)?, cpu(&ours_ids)?, cpu(&theirs_ids)?);
    let ours = (end.2 - start.2) / ((end.0 - start.0) / 1000.0);
    let theirs = (end.3 - start.3) / ((end.1 - start.1) / 1000.0);
    Ok(format!(
        "| CPU per 1,000 HTTP probes ({PROBES} every 15 s; {:.0} and {:.0} probes in the window) | {ours:.2} s | {theirs:.2} s (blackbox_exporter + Prometheus) | {:.2}× |\n",
        end.0 - start.0,
        end.1 - start.1,
        ours / theirs
    ))
}

/// A service starts failing 10% of its requests: seconds until a webhook gets the page, from
/// Tandem (scrape, rule, routing in one process) and from Prometheus + Alertmanager, with the
/// same rule, the same 15 s scrape and evaluation intervals, and `group_wait: 0s`.
fn detection(tandem: &Path, peer: &Path, scratch: &Path) -> Result<String> {
    let (ours_svc, theirs_svc, hook, prometheus_port, alertmanager_port, tandem_port) =
        (19170u16, 19171u16, 19172u16, 19173u16, 19174u16, 19175u16);
    let dir = scratch.join("detection");
    std::fs::create_dir_all(&dir)?;
    let python = |args: Vec<String>| -> Result<Process> {
        Ok(Process(Command::new("python3").args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?))
    };
    let _ours = python(vec![peer.join("tools/errsvc.py").display().to_string(), ours_svc.to_string()])?;
    let _theirs = python(vec![peer.join("tools/errsvc.py").display().to_string(), theirs_svc.to_string()])?;
    let log = dir.join("webhook.jsonl");
    let _hook =
        python(vec![peer.join("tools/webhook.py").display().to_string(), hook.to_string(), log.display().to_string()])?;
    let rules = "groups:\n- name: detect\n  interval: 15s\n  rules:\n  - alert: HighErrorRatio\n    expr: sum(rate(errors_total[1m])) / sum(rate(requests_total[1m])) > 0.05\n    labels: {severity: page}\n";
    std::fs::write(dir.join("rules.yml"), rules)?;
    let route = |path: &str| {
        format!(
            "route:\n  receiver: webhook\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 5m\n  repeat_interval: 4h\nreceivers:\n- name: webhook\n  webhook_configs:\n  - url: http://127.0.0.1:{hook}/{path}\n"
        )
    };
    std::fs::write(dir.join("alertmanager-prometheus.yml"), route("prometheus"))?;
    std::fs::write(dir.join("alertmanager-tandem.yml"), route("tandem"))?;
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\nrule_files: ['{}']\nalerting:\n  alertmanagers:\n  - static_configs:\n    - targets: ['127.0.0.1:{alertmanager_port}']\nscrape_configs:\n- job_name: errsvc\n  static_configs:\n  - targets: ['127.0.0.1:{theirs_svc}']\n",
            dir.join("rules.yml").display()
        ),
    )?;
    std::fs::write(
        dir.join("monitors.yml"),
        format!("scrape:\n  errsvc:\n    url: http://127.0.0.1:{ours_svc}/metrics\n"),
    )?;
    let _alertmanager = Process(
        Command::new("/usr/bin/prometheus-alertmanager")
            .arg(format!("--config.file={}", dir.join("alertmanager-prometheus.yml").display()))
            .arg(format!("--storage.path={}", dir.join("am").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{alertmanager_port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("Alertmanager is missing: run ../shared/peers/prometheus/setup.sh")?,
    );
    let _prometheus = Process(
        Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("prometheus").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let _tandem = Process(
        Command::new(tandem)
            .args(["server", "--listen", &format!("127.0.0.1:{tandem_port}"), "--data"])
            .arg(dir.join("tandem"))
            .arg("--monitors")
            .arg(dir.join("monitors.yml"))
            .arg("--rules")
            .arg(dir.join("rules.yml"))
            .arg("--alertmanager-config")
            .arg(dir.join("alertmanager-tandem.yml"))
            .env("TANDEM_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_for(tandem_port, "/healthz", Duration::from_secs(30))?;
    wait_for(prometheus_port, "/-/ready", Duration::from_secs(60))?;
    wait_for(alertmanager_port, "/-/ready", Duration::from_secs(60))?;
    eprintln!("detection bench: both services clean for 60 s, then 10% errors");
    std::thread::sleep(Duration::from_secs(60));
    let switched = |port: u16| -> Result<f64> {
        let body = get(port, "/set?ratio=0.1", None)?;
        let json: serde_json::Value = serde_json::from_str(body.trim())?;
        json["t"].as_f64().context("errsvc gave no switch time")
    };
    let (ours_at, theirs_at) = (switched(ours_svc)?, switched(theirs_svc)?);
    let deadline = Instant::now() + Duration::from_secs(240);
    let arrival = |path: &str| -> Option<f64> {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|r| r["path"].as_str().is_some_and(|p| p.ends_with(path)) && r["status"] == "firing")
            .and_then(|r| r["t"].as_f64())
    };
    loop {
        if let (Some(ours), Some(theirs)) = (arrival("/tandem"), arrival("/prometheus")) {
            return Ok(format!(
                "| 0 → 10% errors until the webhook gets the page (rule over `rate[1m]` > 5%, 15 s scrape and evaluation, `group_wait: 0s`; one trial) | {:.1} s | {:.1} s (Prometheus + Alertmanager 0.25) | {:.2}× |\n",
                ours - ours_at,
                theirs - theirs_at,
                (ours - ours_at) / (theirs - theirs_at)
            ));
        }
        if Instant::now() > deadline {
            bail!("no page within 240 s (Tandem: {:?}, Prometheus: {:?})", arrival("/tandem"), arrival("/prometheus"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
