//! Deployments end to end: the real server deploys a real Python service from its git
//! repository, moves real traffic through its proxy, promotes a good release, rolls back a bad
//! one, holds releases at their gates, and survives a `kill -9` in the middle of a rollout.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::server::{Server, add_repo};
use crate::{Repo, pid_alive};

/// The service: answers its version; every `fail_every`-th request is a 500; its health check
/// fails `sick_after` seconds after it started; writes its pid to the file named in `pidfile`.
const APP: &str = r#"import http.server, os, time
here = os.path.dirname(os.path.abspath(__file__))
def read(name, default=""):
    path = os.path.join(here, name)
    return open(path).read().strip() if os.path.exists(path) else default
version, fail_every, pidfile = read("version"), int(read("fail_every", "0") or 0), read("pidfile")
sick_after, started = float(read("sick_after", "0") or 0), time.time()
if pidfile:
    with open(pidfile, "a") as f:
        f.write(f"{os.getpid()}\n")
n = [0]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        code, body = 200, version
        if self.path == "/health" and sick_after and time.time() - started > sick_after:
            code = 500
        if self.path != "/health":
            n[0] += 1
            if fail_every and n[0] % fail_every == 0:
                code = 500
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

const SHIP: &str = "on: push
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: python3 -c 'import ast; ast.parse(open(\"app.py\").read())'
  ship:
    needs: test
    runs-on: ubuntu-latest
    environment: staging
    steps:
      - run: echo shipping
";

fn service_file(extra_gates: &str) -> String {
    format!(
        "service: shop
environments:
  staging:
    target: process
    command: python3 app.py
    instances: 2
    health:
      path: /health
      interval: 200ms
      threshold: 2
      ready-within: 20s
    strategy:
      canary:
        steps: [20, 50, 100]
        pause: 2s
    analysis:
      min-requests: 100
  production:
    target: process
    command: python3 app.py
    health:
      path: /health
      ready-within: 20s
    strategy:
      blue-green:
        keep-old: 1m
    gates:
{extra_gates}
  budget:
    target: process
    command: python3 app.py
    health:
      path: /health
      ready-within: 20s
    strategy:
      blue-green:
        keep-old: 0s
    gates:
      error-budget: 0.5
      objective: 99
  watched:
    target: process
    command: python3 app.py
    health:
      path: /health
      ready-within: 20s
    slos:
      availability:
        objective: 99.9%
"
    )
}

fn shop(pidfile: &std::path::Path, gates: &str) -> Repo {
    let repo = Repo::new(&[]);
    repo.write("app.py", APP);
    repo.write("version", "v1\n");
    repo.write("pidfile", &format!("{}\n", pidfile.display()));
    repo.write(".tandem/service.yml", &service_file(gates));
    repo.commit("v1");
    repo
}

/// One GET through the proxy: (status, body).
fn get(addr: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(format!("GET / HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

/// 50 requests per second through the proxy, recording what came back.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(Instant, u16, String)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str) -> Load {
        let (stop, seen) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let thread = {
            let (addr, stop, seen) = (addr.to_string(), stop.clone(), seen.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let (addr, seen) = (addr.clone(), seen.clone());
                    std::thread::spawn(move || {
                        let answer = get(&addr).unwrap_or((0, String::new()));
                        seen.lock().unwrap().push((Instant::now(), answer.0, answer.1));
                    });
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Load { stop, seen, thread: Some(thread) }
    }

    fn since(&self, start: Instant) -> Vec<(u16, String)> {
        self.seen.lock().unwrap().iter().filter(|(t, ..)| *t >= start).map(|(_, s, b)| (*s, b.clone())).collect()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn proxy_of(server: &Server, environment: &str) -> String {
    let envs = server.cli(&["environments", "--format", "json"]).json();
    let env = envs.as_array().unwrap().iter().find(|e| e["environment"] == environment).unwrap();
    env["listen"].as_str().unwrap().to_string()
}

fn deployment(server: &Server, id: i64) -> serde_json::Value {
    let shown = server.cli(&["deployments", "show", &id.to_string(), "--format", "json"]);
    assert_eq!(shown.code, 0, "{}", shown.all());
    shown.json()
}

fn wait_status(server: &Server, id: i64, wanted: &[&str], within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let d = deployment(server, id);
        if wanted.iter().any(|w| d["status"] == *w) {
            return d;
        }
        assert!(Instant::now() < deadline, "deployment {id} never reached {wanted:?}: {d:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn request(server: &Server, environment: &str) -> i64 {
    let run = server.cli(&["deploy", "shop", environment, "--format", "json"]);
    assert_eq!(run.code, 0, "{}", run.all());
    run.json()["id"].as_i64().unwrap()
}

fn kinds(d: &serde_json::Value) -> Vec<String> {
    d["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().replace("deployment.", "")).collect()
}

/// Pids that are still running the service.
fn alive(pidfile: &std::path::Path) -> Vec<i32> {
    let text = std::fs::read_to_string(pidfile).unwrap_or_default();
    text.lines().filter_map(|l| l.trim().parse().ok()).filter(|pid| pid_alive(*pid)).collect()
}

/// Waits (bounded) until `n` instances run: instances out of traffic stop after a drain second.
fn settle(pidfile: &std::path::Path, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pidfile).len() != n {
        assert!(Instant::now() < deadline, "{what}: {:?} still run", alive(pidfile));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_good_release_is_promoted_and_a_bad_one_rolled_back_on_live_traffic() {
    let scratch = tempfile::tempdir().unwrap();
    let pidfile = scratch.path().join("pids");
    let repo = shop(&pidfile, "      approval: false");
    repo.write(".github/workflows/ci.yml", SHIP);
    repo.commit("ship on green");
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    add_repo(&server, &repo, "shop");

    // A workflow job with `environment: staging` deploys its run's commit once it succeeds.
    // The first release has nothing to compare with: it goes straight to all traffic.
    let queued = server.cli(&["repo", "run", "shop"]);
    assert_eq!(queued.code, 0, "{}", queued.all());
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        let list = server.cli(&["deployments", "list", "--format", "json"]).json();
        if let Some(d) = list.as_array().unwrap().first() {
            break d.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the run never requested a deployment: {}",
            server.cli(&["runs", "logs", "1"]).all()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(first["run_id"], 1, "{first:#}");
    let first = server.cli(&["deployments", "show", &first["id"].to_string(), "--wait"]);
    assert_eq!(first.code, 0, "{}", first.all());
    assert!(first.stdout.contains("first release") && first.stdout.contains("by run/1"), "{}", first.all());
    let log = server.cli(&["runs", "logs", "1"]);
    assert!(log.stdout.contains("deployment 1 of"), "{}", log.all());
    let proxy = proxy_of(&server, "staging");
    assert_eq!(get(&proxy).unwrap(), (200, "v1".to_string()));
    let load = Load::start(&proxy);

    // A good release: canary steps, judged, promoted.
    repo.write("version", "v2\n");
    repo.commit("v2");
    let good = server.cli(&["deploy", "shop", "staging", "--wait"]);
    assert_eq!(good.code, 0, "{}", good.all());
    for expected in ["20% of traffic on the new release", "50% of traffic", "promoted"] {
        assert!(good.stdout.contains(expected), "missing {expected:?}:\n{}", good.all());
    }
    let after_good = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    assert!(load.since(after_good).iter().all(|(s, b)| *s == 200 && b == "v2"), "after promotion only v2 answers");

    // A bad release: one request in ten fails; it is rolled back on its own, within seconds.
    repo.write("version", "v3\n");
    repo.write("fail_every", "10\n");
    repo.commit("v3: breaks one request in ten");
    let started = Instant::now();
    let bad = server.cli(&["deploy", "shop", "staging", "--wait"]);
    assert_eq!(bad.code, 1, "{}", bad.all());
    assert!(bad.stdout.contains("rolled_back") && bad.stdout.contains("worse on the canary"), "{}", bad.all());
    assert!(bad.stdout.contains("evidence"), "the verdict explains itself:\n{}", bad.all());
    assert!(started.elapsed() < Duration::from_secs(40), "rolled back after {:?}", started.elapsed());
    let after_bad = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    assert!(load.since(after_bad).iter().all(|(s, b)| *s == 200 && b == "v2"), "v2 serves everything again");

    // A release that turns unhealthy while it takes traffic fails its liveness check: rolled back.
    repo.write("fail_every", "0\n");
    repo.write("sick_after", "4\n");
    repo.write("version", "v4\n");
    repo.commit("v4: its health check fails after four seconds");
    let sick = server.cli(&["deploy", "shop", "staging", "--wait"]);
    assert_eq!(sick.code, 1, "{}", sick.all());
    assert!(sick.stdout.contains("failed health check") && sick.stdout.contains("liveness"), "{}", sick.all());
    let after_sick = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    assert!(load.since(after_sick).iter().all(|(s, b)| *s == 200 && b == "v2"), "v2 serves everything again");

    // The record: every deployment with its events, and the environment's releases.
    let list = server.cli(&["deployments", "list", "--format", "json"]).json();
    let statuses: Vec<&str> = list.as_array().unwrap().iter().map(|d| d["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["rolled_back", "rolled_back", "promoted", "promoted"]);
    let bad_id = list[1]["id"].as_i64().unwrap();
    let record = deployment(&server, bad_id);
    let kinds = kinds(&record);
    assert_eq!(kinds[..3], ["requested", "started", "step"]);
    assert_eq!(kinds.last().unwrap(), "rolled_back");
    let verdict = &record["events"].as_array().unwrap().last().unwrap()["payload"];
    assert_eq!(verdict["evidence"]["metric"], "error-rate", "{verdict:#}");
    assert!(verdict["evidence"]["canary_rate"].as_f64().unwrap() > 0.05, "{verdict:#}");
    let text = server.cli(&["deployments", "list"]);
    assert!(text.stdout.contains("RELEASE") && text.stdout.contains("rolled_back"), "{}", text.all());

    // An emergency rollback goes back one release at once, without analysis.
    let back = server.cli(&["rollback", "shop", "staging", "--emergency", "--wait"]);
    assert_eq!(back.code, 0, "{}", back.all());
    let after_back = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    assert!(load.since(after_back).iter().all(|(s, b)| *s == 200 && b == "v1"), "v1 serves again");
    let envs = server.cli(&["environments", "--format", "json"]).json();
    assert_eq!(envs[0]["stable"]["release"].as_str().unwrap().len(), 12);
    drop(load);

    // The proxy's figures per version, and the deployments' results, for Prometheus.
    let (status, metrics) = crate::server::http(&server.addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    let canary_errors = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                r#"tandem_proxy_requests_total{service="shop",environment="staging",version="canary",class="5xx"}"#,
            )
        })
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(canary_errors.is_some_and(|n| n > 0), "{metrics}");
    assert!(metrics.contains(r#"tandem_deployments_total{result="rolled_back"} 2"#), "{metrics}");
    assert!(metrics.contains("tandem_proxy_request_duration_seconds_bucket{"), "{metrics}");

    // Only the stable release's two instances are left running.
    settle(&pidfile, 2, "instances of releases that lost are stopped");
    let audit = server.cli(&["audit", "verify", "--data", data.path().to_str().unwrap(), "--format", "json"]).json();
    assert_eq!(audit["first_broken"], serde_json::Value::Null);
    // Ctrl-C stops the server and every instance it runs.
    let status = server.interrupt();
    assert!(status.success(), "{status:?}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(alive(&pidfile), Vec::<i32>::new(), "instances outlived the server");
}

#[test]
fn gates_hold_a_release_until_approved_and_freezes_hold_it_until_rolled_back() {
    let scratch = tempfile::tempdir().unwrap();
    let pidfile = scratch.path().join("pids");
    let repo = shop(&pidfile, "      approval: true");
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    add_repo(&server, &repo, "shop");

    let id = request(&server, "production");
    let held = wait_status(&server, id, &["awaiting_approval"], Duration::from_secs(30));
    assert!(held["reason"].as_str().unwrap().contains(&format!("tandem approve {id}")), "{held:#}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(deployment(&server, id)["status"], "awaiting_approval", "nothing starts without approval");
    // A newer request replaces one that has not started: shipping often, only the newest goes out.
    let older = id;
    let id = request(&server, "production");
    let skipped = wait_status(&server, older, &["skipped"], Duration::from_secs(30));
    assert_eq!(skipped["reason"], format!("superseded by deployment {id}"), "{skipped:#}");
    wait_status(&server, id, &["awaiting_approval"], Duration::from_secs(30));
    // Four eyes: the admin asked for it, so the admin may not approve it; nor may a developer.
    let own = server.cli(&["approve", &id.to_string()]);
    assert_ne!(own.code, 0, "{}", own.all());
    assert!(own.all().contains("another maintainer must approve it"), "{}", own.all());
    let developer = server.user_token("dev", "developer", "*", "read,run,deploy");
    let refused = server.cli_as(&developer, &["approve", &id.to_string()]);
    assert_ne!(refused.code, 0, "{}", refused.all());
    assert!(refused.all().contains("`dev` is a developer on environment:shop/production"), "{}", refused.all());
    let maintainer = server.user_token("mia", "maintainer", "service:shop", "deploy");
    let approved = server.cli_as(&maintainer, &["approve", &id.to_string()]);
    assert_eq!(approved.code, 0, "{}", approved.all());
    let done = wait_status(&server, id, &["promoted", "rolled_back", "failed"], Duration::from_secs(60));
    assert_eq!(done["status"], "promoted", "{done:#}");
    assert_eq!(kinds(&done), ["requested", "gated", "approved", "started", "promoted"]);
    assert_eq!(done["events"][2]["actor"], "mia");

    // A freeze window that covers every minute holds the next release, however long it waits.
    repo.write(
        ".tandem/service.yml",
        &service_file(
            "      freeze:\n        - cron: \"* * * * *\"\n          duration: 1h\n          timezone: Europe/Berlin",
        ),
    );
    repo.write("version", "v2\n");
    repo.commit("v2 during a freeze");
    let frozen = request(&server, "production");
    let held = wait_status(&server, frozen, &["gated"], Duration::from_secs(30));
    assert!(held["reason"].as_str().unwrap().contains("freeze window"), "{held:#}");
    // A rollback request ends it before it ever starts.
    let stopped = server.cli(&["rollback", "shop", "production", "--wait"]);
    assert_eq!(stopped.code, 0, "{}", stopped.all());
    let ended = deployment(&server, frozen);
    assert_eq!(ended["status"], "rolled_back");
    assert_eq!(ended["reason"], "rolled back before it started");
    let proxy = proxy_of(&server, "production");
    assert_eq!(get(&proxy).unwrap(), (200, "v1".to_string()), "the approved release still serves");

    // A canary without traffic waits (no traffic is never a failure); a person can promote it.
    repo.write(".tandem/service.yml", &service_file("      approval: false"));
    repo.commit("staging");
    let first = server.cli(&["deploy", "shop", "staging", "--wait"]);
    assert_eq!(first.code, 0, "{}", first.all());
    repo.write("version", "v3\n");
    repo.commit("v3");
    let id = request(&server, "staging");
    let deadline = Instant::now() + Duration::from_secs(30);
    while deployment(&server, id)["weight"].as_f64().unwrap() == 0.0 {
        assert!(Instant::now() < deadline, "the canary never took its first step");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(deployment(&server, id)["status"], "running", "without traffic the step waits");
    let promoted = server.cli(&["promote", &id.to_string()]);
    assert_eq!(promoted.code, 0, "{}", promoted.all());
    let done = wait_status(&server, id, &["promoted", "rolled_back"], Duration::from_secs(15));
    assert_eq!(done["status"], "promoted", "{done:#}");
    assert!(kinds(&done).contains(&"promote_requested".to_string()), "{:?}", kinds(&done));
    assert_eq!(get(&proxy_of(&server, "staging")).unwrap(), (200, "v3".to_string()));
    let again = server.cli(&["promote", &id.to_string()]);
    assert_ne!(again.code, 0, "a finished deployment cannot be promoted");
    assert!(again.stderr.contains("only a running deployment can be promoted"), "{}", again.all());

    // A service file that is wrong is refused with its diagnostics, before anything is recorded.
    repo.write(".tandem/service.yml", "service: shop\nenvironments:\n  production:\n    target: proces\n");
    repo.commit("typo");
    let refused = server.cli(&["deploy", "shop", "production"]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("unknown target `proces`"), "{}", refused.all());
    assert!(refused.stderr.contains("did you mean `process`?"), "{}", refused.all());
}

#[test]
fn kill_9_mid_rollout_resumes_from_the_store_and_leaves_no_orphans() {
    let scratch = tempfile::tempdir().unwrap();
    let pidfile = scratch.path().join("pids");
    let repo = shop(&pidfile, "      approval: false");
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    let token = server.token.clone();
    add_repo(&server, &repo, "shop");
    let first = request(&server, "staging");
    wait_status(&server, first, &["promoted"], Duration::from_secs(60));
    let proxy = proxy_of(&server, "staging");
    let load = Load::start(&proxy);

    repo.write("version", "v2\n");
    repo.commit("v2");
    let id = request(&server, "staging");
    // Wait until the canary takes traffic, then kill the server.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = deployment(&server, id);
        if d["status"] == "running" && d["weight"].as_f64().unwrap() > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the canary never took traffic: {d:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before_crash = alive(&pidfile);
    assert_eq!(before_crash.len(), 4, "two stable and two canary instances");
    let _crashed = server.kill9();
    let crashed = Instant::now();

    let server = Server::start(data.path(), Some(&token));
    let done = wait_status(&server, id, &["promoted", "rolled_back", "failed"], Duration::from_secs(90));
    assert_eq!(done["status"], "promoted", "{done:#}");
    for pid in &before_crash {
        assert!(
            !pid_alive(*pid),
            "instance {pid} from before the crash is still running: {:?} in {:?}; journal {:?}",
            std::fs::read_to_string(format!("/proc/{pid}/stat")),
            std::fs::read_link(format!("/proc/{pid}/cwd")),
            std::fs::read_dir(data.path().join("instances")).map(|d| d
                .flatten()
                .map(|e| (e.file_name(), std::fs::read_to_string(e.path()).unwrap_or_default()))
                .collect::<Vec<_>>())
        );
    }
    // It continued, not restarted: one `started`, and the steps after the crash carry on.
    let kinds = kinds(&done);
    assert_eq!(kinds.iter().filter(|k| *k == "started").count(), 1, "{kinds:?}");
    let steps: Vec<f64> = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "deployment.step")
        .map(|e| e["payload"]["weight"].as_f64().unwrap())
        .collect();
    assert!(steps.windows(2).all(|w| w[1] >= w[0]), "steps never go back: {steps:?}");
    assert_eq!(steps.last(), Some(&0.5), "{steps:?}");
    // Once up again, every answer comes from a live instance: never an error.
    let back = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let answers = load.since(back);
    assert!(!answers.is_empty() && answers.iter().all(|(s, b)| *s == 200 && b == "v2"), "{answers:?}");
    let served_after_restart = load.since(crashed).iter().filter(|(s, _)| *s == 200).count();
    assert!(served_after_restart > 0);
    drop(load);
    settle(&pidfile, 2, "only the promoted release runs");
}

const STRATEGIES: &str = "service: shop
environments:
  blue:
    target: process
    command: python3 app.py
    health:
      path: /health
      ready-within: 20s
    strategy:
      blue-green:
        preview: 3s
        keep-old: 5m
  rolling:
    target: process
    command: python3 app.py
    instances: 3
    health:
      path: /health
      interval: 200ms
      ready-within: 5s
    strategy:
      rolling:
        max-surge: 1
    analysis:
      min-requests: 20
";

#[test]
fn blue_green_previews_switches_and_switches_back_and_rolling_replaces_without_errors() {
    let scratch = tempfile::tempdir().unwrap();
    let pidfile = scratch.path().join("pids");
    let repo = shop(&pidfile, "      approval: false");
    repo.write(".tandem/service.yml", STRATEGIES);
    repo.commit("strategies");
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    add_repo(&server, &repo, "shop");
    for environment in ["blue", "rolling"] {
        let first = server.cli(&["deploy", "shop", environment, "--wait"]);
        assert_eq!(first.code, 0, "{}", first.all());
    }
    let (blue, rolling) = (proxy_of(&server, "blue"), proxy_of(&server, "rolling"));
    repo.write("version", "v2\n");
    repo.commit("v2");

    // Blue-green: during the preview only requests with the header reach v2.
    let id = request(&server, "blue");
    let deadline = Instant::now() + Duration::from_secs(30);
    while deployment(&server, id)["reason"] != "preview" {
        assert!(Instant::now() < deadline, "no preview");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(&blue).unwrap().1, "v1");
    let previewed = preview_get(&blue);
    assert_eq!(previewed, "v2", "the preview header reaches the new release");
    let done = wait_status(&server, id, &["promoted", "rolled_back"], Duration::from_secs(30));
    assert_eq!(done["status"], "promoted");
    assert_eq!(get(&blue).unwrap().1, "v2");
    // The old release is still warm: going back is a switch, not a start.
    let started = Instant::now();
    let back = server.cli(&["rollback", "shop", "blue", "--wait"]);
    assert_eq!(back.code, 0, "{}", back.all());
    assert!(back.stdout.contains("switched back to the release kept warm"), "{}", back.all());
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert_eq!(get(&blue).unwrap().1, "v1");

    // Rolling: one new instance at a time replaces an old one; no request fails on the way.
    let load = Load::start(&rolling);
    let began = Instant::now();
    let rolled = server.cli(&["deploy", "shop", "rolling", "--wait"]);
    assert_eq!(rolled.code, 0, "{}", rolled.all());
    let id = server.cli(&["deployments", "list", "--format", "json"]).json()[0]["id"].as_i64().unwrap();
    let record = deployment(&server, id);
    let batches: Vec<i64> = record["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "deployment.step")
        .map(|e| e["payload"]["new_instances"].as_i64().unwrap())
        .collect();
    assert_eq!(batches, [1, 2, 3]);
    std::thread::sleep(Duration::from_millis(300));
    let answers = load.since(began);
    assert!(answers.iter().all(|(s, _)| *s == 200), "a request failed during the rolling update");
    assert_eq!(answers.last().unwrap().1, "v2");

    // A release whose instances never become ready is rolled back; the old count is restored.
    repo.write("app.py", "import sys\nsys.exit(3)\n");
    repo.write("version", "v3\n");
    repo.commit("v3 crashes at start");
    let began = Instant::now();
    let failed = server.cli(&["deploy", "shop", "rolling", "--wait"]);
    assert_eq!(failed.code, 1, "{}", failed.all());
    assert!(failed.stdout.contains("failed health check"), "{}", failed.all());
    std::thread::sleep(Duration::from_millis(300));
    let answers = load.since(began);
    assert!(answers.iter().all(|(s, b)| *s == 200 && b == "v2"), "v2 kept serving: {answers:?}");
    drop(load);

    // SIGTERM (systemd, `docker stop`) stops the server and every instance, as Ctrl-C does.
    assert!(!alive(&pidfile).is_empty());
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !alive(&pidfile).is_empty() {
        assert!(Instant::now() < deadline, "instances outlived a SIGTERM of the server: {:?}", alive(&pidfile));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A GET with the blue-green preview header.
fn preview_get(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(
            format!("GET / HTTP/1.1\r\nhost: {addr}\r\nx-tandem-preview: 1\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

#[test]
fn the_error_budget_gate_holds_releases_while_the_service_burns_its_budget() {
    let scratch = tempfile::tempdir().unwrap();
    let pidfile = scratch.path().join("pids");
    let repo = shop(&pidfile, "      approval: false");
    repo.write("fail_every", "5\n");
    repo.commit("v1 fails one request in five");
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    // The repository has another name than its service: `tandem deploy` takes the service.
    add_repo(&server, &repo, "shop-repo");
    let unknown = server.cli(&["deploy", "nothing-here", "budget"]);
    assert_ne!(unknown.code, 0);
    assert!(unknown.stderr.contains("no service or repository is named `nothing-here`"), "{}", unknown.all());
    // No traffic yet: nothing is known against the release, so the gate lets it through.
    let first = server.cli(&["deploy", "shop", "budget", "--wait"]);
    assert_eq!(first.code, 0, "{}", first.all());
    let load = Load::start(&proxy_of(&server, "budget"));
    std::thread::sleep(Duration::from_secs(3));
    repo.write("fail_every", "0\n");
    repo.commit("v2: the fix");
    let id = request(&server, "budget");
    let held = wait_status(&server, id, &["gated"], Duration::from_secs(30));
    let reason = held["reason"].as_str().unwrap();
    assert!(reason.starts_with("error budget 0% left, below the 50% floor"), "{reason}");
    assert!(reason.contains("against a 99.00% objective"), "{reason}");
    drop(load);
    // The fix itself can still go out: as a rollback-free emergency, by hand.
    let stopped = server.cli(&["rollback", "shop", "budget"]);
    assert_eq!(stopped.code, 0, "{}", stopped.all());
    let ended = wait_status(&server, id, &["rolled_back"], Duration::from_secs(30));
    assert_eq!(ended["reason"], "rolled back before it started");
}

#[test]
fn a_service_failing_through_its_proxy_gets_the_live_page_within_seconds() {
    let scratch = tempfile::tempdir().unwrap();
    let pidfile = scratch.path().join("pids");
    let repo = shop(&pidfile, "      approval: false");
    repo.write("fail_every", "5\n");
    repo.commit("v1 fails one request in five");
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    add_repo(&server, &repo, "shop");
    let first = server.cli(&["deploy", "shop", "watched", "--wait"]);
    assert_eq!(first.code, 0, "{}", first.all());
    // The SLO is read at the monitor's next look (every scrape interval); wait until it is known.
    let deadline = Instant::now() + Duration::from_secs(40);
    while !server.cli(&["slo", "list"]).stdout.contains("shop/watched/availability") {
        assert!(Instant::now() < deadline, "the SLO never showed up");
        std::thread::sleep(Duration::from_millis(500));
    }
    let load = Load::start(&proxy_of(&server, "watched"));
    let started = Instant::now();
    let page = loop {
        let alerts = server.cli(&["alerts", "--format", "json"]).json();
        let live =
            alerts["alerts"].as_array().unwrap().iter().find(|a| a["labels"]["alertname"] == "SLOFastBurn").cloned();
        if let Some(live) = live {
            break live;
        }
        // 20% of 50 requests a second against a 99.9% objective: a few seconds of evidence; the
        // windowed pages need a scrape interval or more.
        assert!(started.elapsed() < Duration::from_secs(30), "no live page: {alerts}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(page["labels"]["severity"], "page", "{page}");
    assert_eq!(page["labels"]["service"], "shop", "{page}");
    let summary = page["annotations"]["summary"].as_str().unwrap();
    assert!(summary.contains("requests through the proxy failed in the last"), "{summary}");
    drop(load);
    // Its move is in the event log, as every alert's.
    let log =
        server.cli(&["audit", "log", "--kind", "alert.firing", "--subject", "slo/shop/watched", "--format", "json"]);
    assert!(log.stdout.lines().any(|l| l.contains("SLOFastBurn")), "{}", log.all());
}

#[test]
fn an_environment_can_hold_commits_with_security_findings_until_a_maintainer_overrides_with_a_reason() {
    let scratch = tempfile::tempdir().unwrap();
    let pidfile = scratch.path().join("pids");
    let repo = shop(&pidfile, "      security: block");
    // A locked crate with a critical advisory in the server's OSV export, and a workflow so that
    // the push has a run (whose scan the gate reads).
    repo.write(
        "Cargo.lock",
        "version = 3\n\n[[package]]\nname = \"time\"\nversion = \"0.1.44\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n",
    );
    repo.write(
        ".github/workflows/ci.yml",
        "on: push\njobs:\n  ok:\n    runs-on: ubuntu-latest\n    steps:\n      - run: true\n",
    );
    repo.commit("a vulnerable lock file");
    let osv = scratch.path().join("osv");
    std::fs::create_dir_all(&osv).unwrap();
    std::fs::write(
        osv.join("RUSTSEC-2020-0071.json"),
        r#"{"id": "RUSTSEC-2020-0071", "modified": "2026-11-28T00:00:00Z", "summary": "Potential segfault in the time crate",
            "database_specific": {"severity": "critical"},
            "affected": [{"package": {"ecosystem": "crates.io", "name": "time"}, "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "0.2.23"}]}]}]}"#,
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    // Security findings are alerts, routed like any other.
    let (port, received) = crate::monitoring::webhook_receiver();
    let routes = data.path().join("alertmanager.yml");
    std::fs::write(
        &routes,
        format!("route:\n  receiver: security\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n  - name: security\n    webhook_configs: [{{ url: 'http://127.0.0.1:{port}/' }}]\n"),
    )
    .unwrap();
    let server = Server::start_with(
        data.path(),
        None,
        &["--osv", osv.to_str().unwrap(), "--alertmanager-config", routes.to_str().unwrap()],
    );
    add_repo(&server, &repo, "shop");
    let queued = server.cli(&["repo", "run", "shop"]);
    assert_eq!(queued.code, 0, "{}", queued.all());
    server.wait_for("the push's run", |runs| runs.len() == 1 && runs[0]["status"] == "success");
    let run_id = server.cli(&["runs", "list", "--format", "json"]).json()["runs"][0]["id"].as_i64().unwrap();
    let log = server.cli(&["runs", "logs", &run_id.to_string()]).stdout;
    assert!(log.contains("time 0.1.44 (critical) — RUSTSEC-2020-0071"), "{log}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let bodies = received.lock().unwrap().clone();
        if let Some(alert) = bodies
            .iter()
            .flat_map(|b| b["alerts"].as_array().cloned().unwrap_or_default())
            .find(|a| a["labels"]["alertname"] == "VulnerableDependency")
        {
            assert_eq!(
                (alert["labels"]["category"].as_str(), alert["labels"]["severity"].as_str()),
                (Some("security"), Some("critical")),
                "{alert:#}"
            );
            assert!(
                alert["annotations"]["summary"].as_str().unwrap().contains("time 0.1.44 (RUSTSEC-2020-0071)"),
                "{alert:#}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no security alert reached the receiver: {bodies:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let id = request(&server, "production");
    let held = wait_status(&server, id, &["awaiting_approval"], Duration::from_secs(30));
    let reason = held["reason"].as_str().unwrap();
    assert!(reason.contains("security findings") && reason.contains("1 critical vulnerabilit(ies)"), "{held:#}");
    assert!(reason.contains(&format!("tandem approve {id} --reason")), "{reason}");
    // An approval without a reason does not override the findings.
    let maintainer = server.user_token("mia", "maintainer", "*", "deploy");
    let plain = server.cli_as(&maintainer, &["approve", &id.to_string()]);
    assert_eq!(plain.code, 0, "{}", plain.all());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(deployment(&server, id)["status"], "awaiting_approval", "still held on its findings");
    let overridden = server.cli_as(
        &maintainer,
        &["approve", &id.to_string(), "--reason", "the segfault needs a local-time call we never make"],
    );
    assert_eq!(overridden.code, 0, "{}", overridden.all());
    let done = wait_status(&server, id, &["promoted", "rolled_back", "failed"], Duration::from_secs(60));
    assert_eq!(done["status"], "promoted", "{done:#}");
    let audit = server.cli(&["audit", "log", "--kind", "deployment.override", "--format", "json"]).stdout;
    assert!(audit.contains("we never make") && audit.contains("\"actor\":\"mia\""), "{audit}");
}

#[test]
fn releases_carry_an_sbom_and_signed_provenance_and_an_environment_can_require_them() {
    let scratch = tempfile::tempdir().unwrap();
    let pidfile = scratch.path().join("pids");
    let repo = shop(&pidfile, "      provenance: required");
    repo.write(
        "Cargo.lock",
        "version = 3\n\n[[package]]\nname = \"serde\"\nversion = \"1.0.200\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n",
    );
    repo.commit("a lock file");
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    add_repo(&server, &repo, "shop");

    // From main: attested, and deployed.
    let id = request(&server, "production");
    let done = wait_status(&server, id, &["promoted", "rolled_back", "failed"], Duration::from_secs(60));
    assert_eq!(done["status"], "promoted", "{done:#}");
    let get = |path: &str| {
        let (status, body) = crate::server::http(
            &server.addr,
            "GET",
            path,
            &[("authorization", &format!("Bearer {}", server.token))],
            b"",
        );
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let sbom = get(&format!("/api/v1/deployments/{id}/sbom"));
    assert_eq!((sbom["bomFormat"].as_str(), sbom["specVersion"].as_str()), (Some("CycloneDX"), Some("1.5")));
    assert_eq!(sbom["components"][0]["purl"], "pkg:cargo/serde@1.0.200", "{sbom:#}");
    let envelope = get(&format!("/api/v1/deployments/{id}/provenance"));
    let checkpoint = server.cli(&["audit", "checkpoint"]).json();
    let statement = server::attest::verify(&envelope, checkpoint["public_key"].as_str().unwrap()).unwrap();
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(statement["subject"][0]["digest"]["gitCommit"], done["sha"], "{statement:#}");
    let mut forged = envelope.clone();
    forged["payload"] = serde_json::Value::String(envelope["payload"].as_str().unwrap().replace('A', "B"));
    assert!(
        server::attest::verify(&forged, checkpoint["public_key"].as_str().unwrap()).is_err(),
        "a changed statement does not verify"
    );

    // A commit only on a side branch is refused, with why.
    repo.git(&["checkout", "-q", "-b", "experiment"]);
    repo.write("version", "v2\n");
    repo.commit("v2 on a side branch");
    let run = server.cli(&["deploy", "shop", "production", "--ref", "experiment", "--format", "json"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let side = run.json()["id"].as_i64().unwrap();
    let held = wait_status(&server, side, &["gated"], Duration::from_secs(30));
    assert!(
        held["reason"].as_str().unwrap().contains("provenance required: its commit is on no protected branch (main)"),
        "{held:#}"
    );
}
