//! Server benchmarks: push-to-first-step latency (20 sequential pushes, each announced by a
//! signed GitHub webhook, as Buildbot's peer script measures it) and a burst of 1,000 webhook
//! deliveries from 50 concurrent clients on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

const N_SEQUENTIAL: usize = 20;
const N_BURST: usize = 1000;
const N_CLIENTS: usize = 50;

struct Server {
    child: Child,
    addr: String,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("git").arg("-C").arg(dir).args(args).output()?;
    if !output.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn start(tandem: &Path, data: &Path) -> Result<Server> {
    let mut child = Command::new(tandem)
        .args(["server", "--listen", "127.0.0.1:0", "--parallel-runs", "1", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut reader = BufReader::new(child.stdout.take().context("no stdout")?);
    let (mut addr, mut token) = (String::new(), String::new());
    while addr.is_empty() || token.is_empty() {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("the server exited early");
        }
        if let Some(rest) = line.strip_prefix("Tandem is serving http://") {
            addr = rest.split_whitespace().next().unwrap_or_default().to_string();
        }
        if let Some(at) = line.find("tdm_") {
            token = line[at..].trim().to_string();
        }
    }
    std::thread::spawn(move || for _ in reader.lines() {});
    Ok(Server { child, addr, token })
}

fn post(addr: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

fn webhook(addr: &str, secret: &str, sha: &str, delivery: &str) -> Result<(u16, String)> {
    let body = format!(
        r#"{{"ref":"refs/heads/main","before":"{zero}","after":"{sha}","repository":{{"full_name":"bench/app"}},"commits":[]}}"#,
        zero = "0".repeat(40)
    );
    let signature = format!("sha256={}", git::webhook::sign(secret, body.as_bytes()));
    post(
        addr,
        "/api/v1/webhooks/github",
        &[
            ("x-github-event", "push".into()),
            ("x-github-delivery", delivery.into()),
            ("x-hub-signature-256", signature),
        ],
        body.as_bytes(),
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let k = (sorted.len() - 1) as f64 * p;
    let (lo, hi) = (k.floor() as usize, (k.ceil() as usize).min(sorted.len() - 1));
    sorted[lo] + (sorted[hi] - sorted[lo]) * (k - lo as f64)
}

pub fn run(args: &[String]) -> Result<()> {
    let with_peer = args.iter().any(|a| a == "--peer");
    crate::run(Command::new("cargo").args(["build", "--release", "-p", "tandem", "--quiet"]))?;
    let tandem = Path::new("target/release/tandem").canonicalize()?;
    let scratch = std::env::temp_dir().join(format!("tandem-bench-server-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let (bare, src, stamps, data) =
        (scratch.join("repo.git"), scratch.join("src"), scratch.join("stamps"), scratch.join("data"));
    for dir in [&src, &stamps, &data] {
        std::fs::create_dir_all(dir)?;
    }
    git(&scratch, &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap_or_default()])?;
    git(&src, &["init", "-q", "-b", "main"])?;
    std::fs::create_dir_all(src.join(".tandem/workflows"))?;
    let workflow = format!(
        "on:\n  push:\n    branches: [main]\njobs:\n  stamp:\n    runs-on: ubuntu-latest\n    steps:\n      - run: date +%s.%N > {}/${{{{ github.sha }}}}\n",
        stamps.display()
    );
    std::fs::write(src.join(".tandem/workflows/stamp.yml"), workflow)?;
    std::fs::write(src.join("README"), "hello\n")?;
    for args in [
        &["add", "-A"][..],
        &["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "initial"],
        &["push", "-q", bare.to_str().unwrap_or_default(), "main"],
    ] {
        git(&src, args)?;
    }
    let server = start(&tandem, &data)?;
    let added = Command::new(&tandem)
        .args(["repo", "add", bare.to_str().unwrap_or_default(), "--name", "bench/app"])
        .env("TANDEM_URL", format!("http://{}", server.addr))
        .env("TANDEM_TOKEN", &server.token)
        .output()?;
    let stdout = String::from_utf8_lossy(&added.stdout);
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("webhook secret (shown once): "))
        .context("no webhook secret")?
        .trim()
        .to_string();

    // Sequential: commit, push, POST, wait for the step's timestamp.
    let mut latencies = Vec::new();
    let mut sha = String::new();
    for i in 0..N_SEQUENTIAL {
        std::fs::write(src.join("README"), format!("change {i}\n"))?;
        git(&src, &["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qam", &format!("change {i}")])?;
        git(&src, &["push", "-q", bare.to_str().unwrap_or_default(), "main"])?;
        sha = git(&src, &["rev-parse", "HEAD"])?;
        let t0 = now();
        let (status, body) = webhook(&server.addr, &secret, &sha, &format!("seq-{i}"))?;
        if status != 202 {
            bail!("webhook answered {status}: {body}");
        }
        let stamp = stamps.join(&sha);
        let deadline = Instant::now() + Duration::from_secs(60);
        let stamped = loop {
            if let Some(value) = std::fs::read_to_string(&stamp).ok().and_then(|t| t.trim().parse::<f64>().ok()) {
                break value;
            }
            if Instant::now() > deadline {
                bail!("no first step within 60 s for push {i}");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        latencies.push((stamped - t0) * 1000.0);
        std::thread::sleep(Duration::from_millis(500));
    }
    latencies.sort_by(f64::total_cmp);

    // Burst: 1,000 distinct deliveries of the last push, 50 clients at once.
    let started = Instant::now();
    let secret_for = std::sync::Arc::new(secret.clone());
    let server_addr = server.addr.clone();
    let threads: Vec<_> = (0..N_CLIENTS)
        .map(|client| {
            let (secret, sha, addr) = (secret_for.clone(), sha.clone(), server_addr.clone());
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for i in 0..N_BURST / N_CLIENTS {
                    let t = Instant::now();
                    let status =
                        webhook(&addr, &secret, &sha, &format!("burst-{client}-{i}")).map(|(s, _)| s).unwrap_or(0);
                    out.push((status, t.elapsed().as_secs_f64() * 1000.0));
                }
                out
            })
        })
        .collect();
    let mut results = Vec::new();
    for thread in threads {
        results.extend(thread.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))?);
    }
    let burst_wall = started.elapsed();
    let n_ok = results.iter().filter(|(s, _)| *s == 202).count();
    let n_5xx = results.iter().filter(|(s, _)| *s >= 500 || *s == 0).count();
    let mut burst: Vec<f64> = results.iter().map(|(_, ms)| *ms).collect();
    burst.sort_by(f64::total_cmp);
    // Every delivery stored and its run queued: count through the API.
    let runs = Command::new(&tandem)
        .args(["runs", "list", "--format", "json", "--limit", "5000"])
        .env("TANDEM_URL", format!("http://{}", server.addr))
        .env("TANDEM_TOKEN", &server.token)
        .output()?;
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap_or_default();
    let n_runs = runs["runs"].as_array().map(|r| r.iter().filter(|r| r["sha"] == sha.as_str()).count()).unwrap_or(0);
    drop(server);

    let mut report = String::new();
    use std::fmt::Write as _;
    writeln!(report, "| server benchmark | Tandem |")?;
    writeln!(report, "|---|---|")?;
    writeln!(
        report,
        "| push → first step running, {N_SEQUENTIAL} sequential pushes (median / p90 / max) | {:.0} / {:.0} / {:.0} ms |",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        latencies.last().copied().unwrap_or(f64::NAN)
    )?;
    writeln!(
        report,
        "| {N_BURST} webhook deliveries, {N_CLIENTS} concurrent clients: accepted / 5xx | {n_ok} / {n_5xx} |"
    )?;
    writeln!(
        report,
        "| … response time p50 / p99 | {:.1} / {:.1} ms |",
        percentile(&burst, 0.5),
        percentile(&burst, 0.99)
    )?;
    writeln!(report, "| … throughput | {:.0} deliveries/s |", N_BURST as f64 / burst_wall.as_secs_f64())?;
    writeln!(report, "| … runs queued for the burst's commit (expected {}) | {n_runs} |", N_BURST + 1)?;
    if with_peer {
        let (median, p90) = buildbot(&scratch)?;
        writeln!(report, "\n| push → first step (median / p90) | Tandem | Buildbot 4 | ratio Tandem / Buildbot |")?;
        writeln!(report, "|---|---|---|---|")?;
        writeln!(
            report,
            "| {N_SEQUENTIAL} sequential pushes | {:.0} / {:.0} ms | {median:.0} / {p90:.0} ms | **{:.2}× / {:.2}×** |",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.9),
            percentile(&latencies, 0.5) / median,
            percentile(&latencies, 0.9) / p90
        )?;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    println!("{report}");
    Ok(())
}

/// Runs the Buildbot peer scripts from `../shared/peers/buildbot` (copied to a writable place)
/// and returns its sequential first-step median and p90 in milliseconds.
fn buildbot(scratch: &Path) -> Result<(f64, f64)> {
    let peer = PathBuf::from("../shared/peers/buildbot");
    if !peer.is_dir() {
        bail!("the Buildbot peer scripts are missing at {}", peer.display());
    }
    let dir = scratch.join("buildbot");
    crate::run(Command::new("cp").arg("-r").arg(&peer).arg(&dir))?;
    crate::run(Command::new("chmod").arg("-R").arg("u+w").arg(&dir))?;
    crate::run(Command::new("bash").arg("setup.sh").current_dir(&dir))?;
    let measured =
        Command::new("bash").arg("measure.sh").current_dir(&dir).env("N_BURST", "50").env("IDLE_S", "5").status();
    let _ = Command::new("bash").arg("stop.sh").current_dir(&dir).status();
    if !measured?.success() {
        bail!("the Buildbot measurement failed");
    }
    let result = std::fs::read_dir(dir.join("results"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .context("Buildbot wrote no result")?;
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(result)?)?;
    let seq = &json["seq_first_step_ms"];
    Ok((seq["median"].as_f64().unwrap_or(f64::NAN), seq["p90"].as_f64().unwrap_or(f64::NAN)))
}
