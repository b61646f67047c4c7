//! Deployments through the real server at 50 requests/s: seconds from a bad release (10% of its
//! requests fail) first answering to all traffic back on stable, and seconds from requesting a
//! healthy release to its promotion — against the arithmetic of Flagger's defaults.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const APP: &str = r#"import http.server, os
here = os.path.dirname(os.path.abspath(__file__))
version = open(os.path.join(here, "version")).read().strip()
fail_every = int(open(os.path.join(here, "fail_every")).read().strip() or 0)
n = [0]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        code = 200
        if self.path != "/health":
            n[0] += 1
            if fail_every and n[0] % fail_every == 0:
                code = 500
        self.send_response(code)
        self.send_header("content-length", str(len(version)))
        self.end_headers()
        self.wfile.write(version.encode())
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

const SERVICE: &str = "service: bench
environments:
  staging:
    target: process
    command: python3 app.py
    instances: 2
    health:
      path: /health
      interval: 500ms
    strategy:
      canary:
        steps: [10, 50, 100]
        pause: 5s
    analysis:
      min-requests: 50
";

fn git(dir: &Path, args: &[&str]) -> Result<()> {
    crate::run(Command::new("git").arg("-C").arg(dir).args(args).stdout(Stdio::null()))
}

fn get(addr: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(format!("GET / HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

type Seen = Arc<Mutex<Vec<(Instant, u16, String)>>>;

/// `per_second` requests to `addr` until `stop`; every answer with its time.
fn load(addr: String, per_second: u32, stop: Arc<AtomicBool>, seen: Seen) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut next = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            let (addr, seen) = (addr.clone(), seen.clone());
            std::thread::spawn(move || {
                let (status, body) = get(&addr).unwrap_or((0, String::new()));
                seen.lock().map(|mut s| s.push((Instant::now(), status, body))).ok();
            });
            next += Duration::from_secs(1) / per_second;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    })
}

struct Server {
    child: std::process::Child,
    url: String,
    token: String,
    tandem: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// `tandem server` on a free port with its data in `scratch/data`; its URL and admin token
    /// read from what it prints.
    fn start(tandem: &Path, scratch: &Path, extra: &[&std::ffi::OsStr]) -> Result<Server> {
        let mut child = Command::new(tandem)
            .args(["server", "--listen", "127.0.0.1:0", "--data"])
            .arg(scratch.join("data"))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut reader = BufReader::new(child.stdout.take().context("no stdout")?);
        let (mut url, mut token) = (String::new(), String::new());
        while url.is_empty() || token.is_empty() {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                bail!("the server exited");
            }
            if let Some(rest) = line.strip_prefix("Tandem is serving ") {
                url = rest.split_whitespace().next().unwrap_or_default().to_string();
            }
            if let Some(at) = line.find("tdm_") {
                token = line[at..].trim().to_string();
            }
        }
        std::thread::spawn(move || for _ in reader.lines() {});
        Ok(Server { child, url, token, tandem: tandem.to_path_buf() })
    }

    fn cli(&self, args: &[&str]) -> Result<String> {
        let output = Command::new(&self.tandem)
            .args(args)
            .env("TANDEM_URL", &self.url)
            .env("TANDEM_TOKEN", &self.token)
            .output()?;
        if !output.status.success() && !args.contains(&"--wait") {
            bail!("tandem {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(((sorted.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN)
}

pub fn run(args: &[String]) -> Result<()> {
    let rounds: usize = args.iter().find_map(|a| a.strip_prefix("--rounds=")).and_then(|n| n.parse().ok()).unwrap_or(5);
    crate::run(Command::new("cargo").args(["build", "--release", "-p", "tandem", "--quiet"]))?;
    let tandem = Path::new("target/release/tandem").canonicalize()?;
    let scratch = tempfile_dir("tandem-bench-deploy")?;
    let repo = scratch.join("repo");
    std::fs::create_dir_all(repo.join(".tandem"))?;
    std::fs::write(repo.join("app.py"), APP)?;
    std::fs::write(repo.join("version"), "v0\n")?;
    std::fs::write(repo.join("fail_every"), "0\n")?;
    std::fs::write(repo.join(".tandem/service.yml"), SERVICE)?;
    git(&repo, &["init", "-q", "-b", "main"])?;
    let commit = |message: &str| -> Result<()> {
        git(&repo, &["add", "-A"])?;
        git(&repo, &["-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", message])
    };
    commit("v0")?;

    let server = Server::start(&tandem, &scratch, &[])?;
    server.cli(&["repo", "add", &repo.display().to_string(), "--name", "bench"])?;
    server.cli(&["deploy", "bench", "staging", "--wait"])?;
    let envs: serde_json::Value = serde_json::from_str(&server.cli(&["environments", "--format", "json"])?)?;
    let proxy = envs[0]["listen"].as_str().context("no proxy address")?.to_string();

    let (stop, seen): (Arc<AtomicBool>, Seen) = (Arc::default(), Arc::default());
    let loader = load(proxy, 50, stop.clone(), seen.clone());
    let (mut rollbacks, mut promotions, mut failed_answers) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        // A healthy release: requested → promoted.
        let good = format!("good{round}");
        std::fs::write(repo.join("version"), format!("{good}\n"))?;
        std::fs::write(repo.join("fail_every"), "0\n")?;
        commit(&good)?;
        let requested = Instant::now();
        let out = server.cli(&["deploy", "bench", "staging", "--wait"])?;
        if !out.contains("promoted") {
            bail!("the healthy release was not promoted:\n{out}");
        }
        promotions.push(requested.elapsed().as_secs_f64());
        eprintln!("round {round}: healthy release promoted in {:.1} s", requested.elapsed().as_secs_f64());

        // A bad release: its first answer → its last answer (all traffic back on stable).
        let bad = format!("bad{round}");
        std::fs::write(repo.join("version"), format!("{bad}\n"))?;
        std::fs::write(repo.join("fail_every"), "10\n")?;
        commit(&bad)?;
        let out = server.cli(&["deploy", "bench", "staging", "--wait"])?;
        if !out.contains("rolled_back") {
            bail!("the bad release was not rolled back:\n{out}");
        }
        std::thread::sleep(Duration::from_millis(500));
        let answers = seen.lock().map(|s| s.clone()).unwrap_or_default();
        let by_bad: Vec<&(Instant, u16, String)> = answers.iter().filter(|(_, _, body)| *body == bad).collect();
        let (Some(first), Some(last)) = (by_bad.first(), by_bad.last()) else {
            bail!("the bad release never answered")
        };
        let seconds = last.0.duration_since(first.0).as_secs_f64();
        rollbacks.push(seconds);
        failed_answers.push(by_bad.iter().filter(|(_, status, _)| *status >= 500).count());
        eprintln!(
            "round {round}: bad release answered {} requests ({} failed) over {seconds:.1} s, then none",
            by_bad.len(),
            failed_answers.last().unwrap_or(&0)
        );
    }
    stop.store(true, Ordering::SeqCst);
    let _ = loader.join();
    let errors_outside = seen
        .lock()
        .map(|s| s.iter().filter(|(_, status, body)| *status != 200 && !body.starts_with("bad")).count())
        .unwrap_or(0);

    let mut report = String::new();
    writeln!(
        report,
        "| through `tandem server`, 50 req/s, steps 10/50/100, pause 5 s, 50 requests a step | {rounds} rounds: median / max |"
    )?;
    writeln!(report, "|---|---|")?;
    writeln!(
        report,
        "| bad release (10% of its requests fail): its first answer → all traffic back on stable | {:.1} / {:.1} s (Flagger's defaults: 3–4 min) |",
        percentile(&rollbacks, 0.5),
        percentile(&rollbacks, 1.0)
    )?;
    writeln!(
        report,
        "| … requests that failed on the bad release before its rollback | {:.0} / {:.0} |",
        percentile(&failed_answers.iter().map(|n| *n as f64).collect::<Vec<_>>(), 0.5),
        percentile(&failed_answers.iter().map(|n| *n as f64).collect::<Vec<_>>(), 1.0)
    )?;
    writeln!(
        report,
        "| healthy release: requested → promoted | {:.1} / {:.1} s (Flagger, interval 1 m, stepWeight 10, maxWeight 50: ≥ 5 min) |",
        percentile(&promotions, 0.5),
        percentile(&promotions, 1.0)
    )?;
    writeln!(report, "| failed answers from anything but the bad releases | {errors_outside} |")?;
    println!("{report}");
    drop(server);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

fn tempfile_dir(prefix: &str) -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The service of the live-page bench: it fails every `n`th request while the file at `FAIL_PATH`
/// says `n` (read on every request, so the switch takes effect at once).
const LIVE_APP: &str = r#"import http.server, os
FAIL = "FAIL_PATH"
n = [0]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        code = 200
        if self.path != "/health":
            n[0] += 1
            every = int(open(FAIL).read().strip() or 0)
            if every and n[0] % every == 0:
                code = 500
        self.send_response(code)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// A service deployed by `tandem server` with a 99.9% SLO on its requests, 100 requests a second
/// through its proxy, starts failing 10% of them: seconds until a webhook gets the live page
/// (`SLOFastBurn`), over `trials` failures each followed by the fix.
pub fn live_page(tandem: &Path, peer: &Path, trials: usize) -> Result<String> {
    let scratch = tempfile_dir("tandem-bench-live-page")?;
    let repo = scratch.join("repo");
    let fail = scratch.join("fail_every");
    std::fs::write(&fail, "0\n")?;
    std::fs::create_dir_all(repo.join(".tandem"))?;
    std::fs::write(repo.join("app.py"), LIVE_APP.replace("FAIL_PATH", &fail.display().to_string()))?;
    std::fs::write(
        repo.join(".tandem/service.yml"),
        "service: live\nenvironments:\n  production:\n    target: process\n    command: python3 app.py\n    instances: 2\n    health:\n      path: /health\n      interval: 500ms\n    slos:\n      availability:\n        objective: 99.9%\n",
    )?;
    git(&repo, &["init", "-q", "-b", "main"])?;
    git(&repo, &["add", "-A"])?;
    git(&repo, &["-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "v1"])?;
    let hook = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let log = scratch.join("webhook.jsonl");
    let _hook = Child(
        Command::new("python3")
            .arg(peer.join("tools/webhook.py"))
            .arg(hook.to_string())
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    // The detection row's routing (`group_wait: 0s`), with a short group interval so that each
    // trial's page is a notification of its own.
    let routes = scratch.join("alertmanager.yml");
    std::fs::write(
        &routes,
        format!(
            "route:\n  receiver: webhook\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 4h\nreceivers:\n- name: webhook\n  webhook_configs:\n  - url: http://127.0.0.1:{hook}/live\n"
        ),
    )?;
    let server = Server::start(tandem, &scratch, &["--alertmanager-config".as_ref(), routes.as_os_str()])?;
    server.cli(&["repo", "add", &repo.display().to_string(), "--name", "live"])?;
    let out = server.cli(&["deploy", "live", "production", "--wait"])?;
    if !out.contains("promoted") {
        bail!("the service was not deployed:\n{out}");
    }
    let envs: serde_json::Value = serde_json::from_str(&server.cli(&["environments", "--format", "json"])?)?;
    let proxy = envs[0]["listen"].as_str().context("no proxy address")?.to_string();
    let (stop, seen): (Arc<AtomicBool>, Seen) = (Arc::default(), Arc::default());
    let loader = load(proxy, 100, stop.clone(), seen.clone());
    let unix = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let arrival = |status: &str, after: f64| -> Option<f64> {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["status"] == status && r["alerts"][0]["alertname"] == "SLOFastBurn")
            .filter_map(|r| r["t"].as_f64())
            .find(|t| *t > after)
    };
    eprintln!("live page bench: 20 s of healthy traffic, then {trials} failures of 10%, each fixed once paged");
    std::thread::sleep(Duration::from_secs(20));
    let mut delays = Vec::new();
    for trial in 1..=trials {
        std::fs::write(&fail, "10\n")?;
        let failing = unix();
        let deadline = Instant::now() + Duration::from_secs(120);
        let paged = loop {
            if let Some(t) = arrival("firing", failing) {
                break t;
            }
            if Instant::now() > deadline {
                bail!("trial {trial}: no live page within 120 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        delays.push(paged - failing);
        eprintln!("trial {trial}: paged {:.1} s after the failures started", paged - failing);
        std::fs::write(&fail, "0\n")?;
        let fixed = unix();
        let deadline = Instant::now() + Duration::from_secs(120);
        while arrival("resolved", fixed).is_none() {
            if Instant::now() > deadline {
                bail!("trial {trial}: the live page did not resolve within 120 s of the fix");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    stop.store(true, Ordering::SeqCst);
    let _ = loader.join();
    drop(server);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(format!(
        "| 0 → 10% errors of a service Tandem deploys, 100 req/s through its proxy, SLO 99.9%: seconds until the webhook gets the live page (`SLOFastBurn`, `group_wait: 0s`; median / max of {trials}) | {:.1} s / {:.1} s | — (Prometheus sees the service only through scrapes: the row above) | — |\n",
        percentile(&delays, 0.5),
        percentile(&delays, 1.0)
    ))
}

/// A helper process, killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
