//! A 30-day burn-rate query over 10,000 series of backfilled history, Tandem against Prometheus:
//! the same OpenMetrics file loaded into each (`tandem metrics import`, `promtool tsdb
//! create-blocks-from openmetrics`), then the same instant queries over their HTTP APIs, whose
//! answers must agree.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench_monitoring::{Process, get, wait_for};

const SERVICES: usize = 50;
const INSTANCES: usize = 100;
/// One sample an hour over 30 days and an hour: a 30-day window at now sees 720 increases.
const HOURS: i64 = 30 * 24 + 1;

const QUERIES: [&str; 2] = [
    "sum(rate(errors_total[30d])) / sum(rate(requests_total[30d])) / (1 - 0.999)",
    "sum by (service) (rate(errors_total[30d])) / sum by (service) (rate(requests_total[30d]))",
];

/// Writes the history: `requests_total` and `errors_total` for 50 services × 100 instances,
/// hourly, ending at the last whole hour. Returns the number of samples.
fn write_history(path: &Path, end_s: i64) -> Result<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut samples = 0;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for family in ["requests", "errors"] {
        writeln!(out, "# TYPE {family} counter")?;
        for service in 0..SERVICES {
            for instance in 0..INSTANCES {
                let mut value = 0u64;
                for hour in 0..HOURS {
                    // Each hour: 1,000–4,999 requests; errors about 0.1% of that.
                    let requests = 1000 + next() % 4000;
                    value += if family == "requests" { requests } else { (requests / 1000) * (next() % 2) };
                    let t = end_s - (HOURS - 1 - hour) * 3600;
                    writeln!(
                        out,
                        "{family}_total{{service=\"s{service:02}\",instance=\"i{instance:02}\"}} {value} {t}"
                    )?;
                    samples += 1;
                }
            }
        }
    }
    writeln!(out, "# EOF")?;
    out.flush()?;
    Ok(samples)
}

/// Median milliseconds of 10 answers to `path`.
fn median_ms(port: u16, token: Option<&str>, path: &str) -> Result<f64> {
    let mut times = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let body = get(port, path, token)?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        if !body.contains("\"success\"") {
            bail!("{path} on port {port}: {body}");
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// An instant query's answer as (series, value) pairs in label order, to compare the two.
/// Chunked answers (Prometheus's) are put back together first.
fn values(body: &str) -> Option<Vec<(String, f64)>> {
    let json: serde_json::Value = serde_json::from_str(body).ok().or_else(|| {
        let mut whole = String::new();
        let mut rest = body;
        loop {
            let (size, tail) = rest.split_once("\r\n")?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            if size == 0 {
                break;
            }
            whole.push_str(tail.get(..size)?);
            rest = tail.get(size + 2..)?;
        }
        serde_json::from_str(&whole).ok()
    })?;
    let mut out: Vec<(String, f64)> = json["data"]["result"]
        .as_array()?
        .iter()
        .filter_map(|r| Some((r["metric"].to_string(), r["value"][1].as_str()?.parse().ok()?)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Some(out)
}

/// Both answers hold the same series with values equal to 1e-9.
fn agree(ours: &[(String, f64)], theirs: &[(String, f64)]) -> bool {
    ours.len() == theirs.len()
        && !ours.is_empty()
        && ours.iter().zip(theirs).all(|((a, x), (b, y))| a == b && (x - y).abs() <= 1e-9 * y.abs().max(1.0))
}

pub fn run(tandem: &Path, scratch: &Path) -> Result<String> {
    let (tandem_port, prometheus_port) = (19180u16, 19181u16);
    let dir = scratch.join("history");
    std::fs::create_dir_all(&dir)?;
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    let end_s = now_s - now_s % 3600;
    let file = dir.join("history.om");
    eprintln!("history bench: writing 30 days of hourly samples for {} series", SERVICES * INSTANCES * 2);
    let samples = write_history(&file, end_s)?;

    let started = Instant::now();
    let imported = Command::new(tandem)
        .args(["metrics", "import"])
        .arg(&file)
        .arg("--data")
        .arg(dir.join("tandem"))
        .stdout(Stdio::null())
        .status()?;
    let ours_import = started.elapsed().as_secs_f64();
    if !imported.success() {
        bail!("tandem metrics import failed");
    }
    let started = Instant::now();
    let blocks = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=744h"])
        .arg(&file)
        .arg(dir.join("prometheus"))
        .stdout(Stdio::null())
        .status()
        .context("promtool is missing: run ../shared/peers/prometheus/setup.sh")?;
    let theirs_import = started.elapsed().as_secs_f64();
    if !blocks.success() {
        bail!("promtool tsdb create-blocks-from openmetrics failed");
    }
    std::fs::remove_file(&file)?;

    let mut server = Command::new(tandem)
        .args(["server", "--listen", &format!("127.0.0.1:{tandem_port}"), "--data"])
        .arg(dir.join("tandem"))
        .env("TANDEM_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let token = {
        use std::io::BufRead as _;
        let mut reader = std::io::BufReader::new(server.stdout.take().context("no stdout")?);
        let mut token = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while token.is_none() && Instant::now() < deadline {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                bail!("the Tandem server exited early");
            }
            token = line.find("tdm_").map(|at| line[at..].trim().to_string());
        }
        std::thread::spawn(move || for _ in reader.lines() {});
        token.context("the server printed no token")?
    };
    let _tandem = Process(server);
    std::fs::write(dir.join("prometheus.yml"), "global:\n  scrape_interval: 15s\n")?;
    let _prometheus = Process(
        Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("prometheus").display()))
            .arg("--storage.tsdb.retention.time=90d")
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start Prometheus")?,
    );
    wait_for(tandem_port, "/healthz", Duration::from_secs(60))?;
    wait_for(prometheus_port, "/-/ready", Duration::from_secs(120))?;

    let mut report = format!(
        "\n{} series (`requests_total` and `errors_total`, 50 services × 100 instances), hourly over 30 days: {samples} samples, loaded from one OpenMetrics file into each.\n\n| measure | Tandem | Prometheus 2.42 | ratio |\n|---|---|---|---|\n",
        SERVICES * INSTANCES * 2
    );
    let _ = writeln!(
        report,
        "| backfill (`tandem metrics import` / `promtool tsdb create-blocks-from openmetrics`) | {ours_import:.1} s | {theirs_import:.1} s | {:.2}× |",
        ours_import / theirs_import
    );
    for query in QUERIES {
        // Both at the same instant (a minute after the last sample): a rate's extrapolation
        // depends on where the window starts.
        let path = format!("/api/v1/query?query={}&time={}", crate::bench_monitoring::encode(query), end_s + 60);
        let (ours_values, theirs_values) =
            (values(&get(tandem_port, &path, Some(&token))?), values(&get(prometheus_port, &path, None)?));
        match (&ours_values, &theirs_values) {
            (Some(a), Some(b)) if agree(a, b) => {}
            _ => bail!("`{query}`: Tandem answers {ours_values:?}, Prometheus {theirs_values:?}"),
        }
        let ours = median_ms(tandem_port, Some(&token), &path)?;
        let theirs = median_ms(prometheus_port, None, &path)?;
        let _ = writeln!(
            report,
            "| `{query}` (median of 10; the answers agree) | {ours:.1} ms | {theirs:.1} ms | {:.2}× |",
            ours / theirs
        );
    }
    Ok(report)
}
