//! The server end to end: the real binary, a real git repository, real HTTP on loopback, and a
//! real `kill -9` in the middle of a run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Repo, pid_alive};

/// A `tandem server` process on an ephemeral loopback port.
/// A `tandem server` child process. Dropping it stops it as systemd would (SIGTERM), then ends
/// anything it left (`tandem reap`), so no test leaves instances or steps running.
pub struct Server {
    child: Child,
    data: std::path::PathBuf,
    pub addr: String,
    pub token: String,
}

impl Server {
    pub fn start(data: &std::path::Path, token: Option<&str>) -> Server {
        Server::start_with(data, token, &[])
    }

    /// A server with more arguments (e.g. `--monitors FILE`).
    pub fn start_with(data: &std::path::Path, token: Option<&str>, extra: &[&str]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tandem"));
        command.args(["server", "--listen", "127.0.0.1:0", "--data"]).arg(data).args(extra);
        Server::spawn(command, data, token)
    }

    /// A server started by `command` (which runs `tandem server` on `data`, e.g. under limits).
    pub fn spawn(mut command: Command, data: &std::path::Path, token: Option<&str>) -> Server {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let (mut addr, mut found_token) = (String::new(), token.map(str::to_string));
        let deadline = Instant::now() + Duration::from_secs(30);
        while addr.is_empty() || found_token.is_none() {
            assert!(Instant::now() < deadline, "the server did not start");
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 {
                panic!("the server exited early");
            }
            if let Some(rest) = line.strip_prefix("Tandem is serving http://") {
                addr = rest.split_whitespace().next().unwrap().to_string();
            }
            if let Some(at) = line.find("tdm_") {
                found_token = Some(line[at..].trim().to_string());
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader.lines() {});
        Server { child, data: data.to_path_buf(), addr, token: found_token.unwrap() }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn cli(&self, args: &[&str]) -> crate::Run {
        self.cli_as(&self.token, args)
    }

    /// The CLI with another token.
    pub fn cli_as(&self, token: &str, args: &[&str]) -> crate::Run {
        let output = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(args)
            .env("TANDEM_URL", self.url())
            .env("TANDEM_TOKEN", token)
            .output()
            .unwrap();
        crate::Run::from(output)
    }

    /// A user with `role` on `on` and a token of theirs with `scope`, made in the data directory.
    pub fn user_token(&self, name: &str, role: &str, on: &str, scope: &str) -> String {
        let data = self.data.to_string_lossy().to_string();
        let added = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["user", "add", name, "--role", role, "--on", on, "--data", &data])
            .output()
            .unwrap();
        assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
        let token = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["token", "create", name, "--user", name, "--scope", scope, "--data", &data])
            .output()
            .unwrap();
        assert!(token.status.success(), "{}", String::from_utf8_lossy(&token.stderr));
        String::from_utf8(token.stdout).unwrap().trim().to_string()
    }

    fn runs(&self) -> Vec<serde_json::Value> {
        let run = self.cli(&["runs", "list", "--format", "json", "--limit", "1000"]);
        assert_eq!(run.code, 0, "{}", run.all());
        run.json()["runs"].as_array().unwrap().clone()
    }

    pub fn wait_for(&self, what: &str, mut done: impl FnMut(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let runs = self.runs();
            if done(&runs) {
                return runs;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {runs:#?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Ctrl-C: the server stops gracefully; returns its exit status.
    pub fn interrupt(self) -> std::process::ExitStatus {
        self.stop_with("-INT")
    }

    /// SIGTERM (systemd, `docker stop`): the server stops as on Ctrl-C; returns its exit status.
    pub fn terminate(self) -> std::process::ExitStatus {
        self.stop_with("-TERM")
    }

    fn stop_with(mut self, signal: &str) -> std::process::ExitStatus {
        std::process::Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not stop on {signal}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9`: what the server started keeps running until a restart (or the returned guard,
    /// when it is dropped) ends it.
    pub fn kill9(mut self) -> Crashed {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        // The guard ends the orphans, not this drop: the restart is meant to find them.
        Crashed { data: std::mem::take(&mut self.data) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        stop(&mut self.child, &self.data);
    }
}

/// Stops a server as systemd would (SIGTERM: it stops what it deployed), kills it if it has not
/// stopped within 20 s, then reaps what it left in `data` (nothing, unless it was killed).
pub fn stop(child: &mut Child, data: &std::path::Path) {
    if child.try_wait().ok().flatten().is_none() {
        let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    if !data.as_os_str().is_empty() {
        reap(data);
    }
}

/// A data directory whose server was killed with `kill -9`: dropping it ends what that server left.
#[must_use = "dropping it at once ends the orphans a restart is meant to find"]
pub struct Crashed {
    data: std::path::PathBuf,
}

impl Drop for Crashed {
    fn drop(&mut self) {
        reap(&self.data);
    }
}

/// `tandem reap`: ends the steps, instances, containers and services a stopped server left.
fn reap(data: &std::path::Path) {
    let output = Command::new(env!("CARGO_BIN_EXE_tandem")).arg("reap").arg("--data").arg(data).output();
    if let Ok(output) = output
        && !output.status.success()
    {
        eprintln!("tandem reap --data {}: {}", data.display(), String::from_utf8_lossy(&output.stderr));
    }
}

/// A bare HTTP/1.1 request over loopback: (status, body).
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    try_http(addr, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

pub fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).unwrap_or("0").parse().unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

pub fn add_repo(server: &Server, repo: &Repo, name: &str) -> String {
    let run = server.cli(&["repo", "add", repo.path().to_str().unwrap(), "--name", name]);
    assert_eq!(run.code, 0, "{}", run.all());

    run.stdout.lines().find_map(|l| l.strip_prefix("webhook secret (shown once): ")).unwrap().trim().to_string()
}

pub fn head(repo: &Repo) -> String {
    let output = Command::new("git").arg("-C").arg(repo.path()).args(["rev-parse", "HEAD"]).output().unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

const WORKFLOW: &str = "on:\n  push:\n    branches: [main]\njobs:\n  hello:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - run: echo \"hello from $(cat name.txt)\"\n";

#[test]
fn webhooks_from_each_forge_queue_runs_exactly_once() {
    let repo = Repo::new(&[("ci.yml", WORKFLOW)]);
    repo.write("name.txt", "tandem\n");
    repo.commit("name");
    let sha = head(&repo);
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    let secret = add_repo(&server, &repo, "team/app");

    let github = format!(
        r#"{{"ref":"refs/heads/main","before":"{zero}","after":"{sha}","repository":{{"full_name":"team/app","clone_url":"https://example.invalid/team/app.git"}},"commits":[]}}"#,
        zero = "0".repeat(40)
    );
    let signature = format!("sha256={}", git::webhook::sign(&secret, github.as_bytes()));
    let headers = [
        ("x-github-event", "push"),
        ("x-github-delivery", "gh-1"),
        ("x-hub-signature-256", signature.as_str()),
        ("content-type", "application/json"),
    ];
    let (status, body) = http(&server.addr, "POST", "/api/v1/webhooks/github", &headers, github.as_bytes());
    assert_eq!(status, 202, "{body}");
    assert!(body.contains(r#""status":"queued""#), "{body}");
    // The same delivery again starts nothing.
    let (status, body) = http(&server.addr, "POST", "/api/v1/webhooks/github", &headers, github.as_bytes());
    assert_eq!((status, body.contains("duplicate")), (202, true), "{body}");
    // A bad signature is refused and stores nothing.
    let bad = [
        ("x-github-event", "push"),
        ("x-github-delivery", "gh-2"),
        ("x-hub-signature-256", "sha256=00"),
        ("content-type", "application/json"),
    ];
    let (status, body) = http(&server.addr, "POST", "/api/v1/webhooks/github", &bad, github.as_bytes());
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("bad_signature"), "{body}");

    let gitea = github.replace("gh-1", "x");
    let gitea_signature = git::webhook::sign(&secret, gitea.as_bytes());
    let (status, body) = http(
        &server.addr,
        "POST",
        "/api/v1/webhooks/gitea",
        &[("x-gitea-event", "push"), ("x-gitea-delivery", "gt-1"), ("x-gitea-signature", &gitea_signature)],
        gitea.as_bytes(),
    );
    assert_eq!(status, 202, "{body}");
    let gitlab = format!(
        r#"{{"object_kind":"push","ref":"refs/heads/main","before":"{zero}","after":"{sha}","project":{{"path_with_namespace":"team/app","git_http_url":"https://example.invalid/team/app.git"}},"commits":[]}}"#,
        zero = "0".repeat(40)
    );
    let (status, body) = http(
        &server.addr,
        "POST",
        "/api/v1/webhooks/gitlab",
        &[("x-gitlab-event", "Push Hook"), ("x-gitlab-event-uuid", "gl-1"), ("x-gitlab-token", &secret)],
        gitlab.as_bytes(),
    );
    assert_eq!(status, 202, "{body}");
    let (status, _) = http(
        &server.addr,
        "POST",
        "/api/v1/webhooks/gitlab",
        &[("x-gitlab-event", "Push Hook"), ("x-gitlab-event-uuid", "gl-2"), ("x-gitlab-token", "wrong")],
        gitlab.as_bytes(),
    );
    assert_eq!(status, 401);

    let runs = server
        .wait_for("three successful runs", |runs| runs.len() == 3 && runs.iter().all(|r| r["status"] == "success"));
    assert!(runs.iter().all(|r| r["sha"] == sha.as_str()));
    let id = runs[0]["id"].to_string();
    let logs = server.cli(&["runs", "logs", &id]);
    assert!(logs.stdout.contains("[hello] hello from tandem"), "{}", logs.all());
    let followed = server.cli(&["runs", "logs", &id, "--follow"]);
    assert!(
        followed.stdout.contains("hello from tandem") && followed.stdout.contains(&format!("run {id}: success")),
        "{}",
        followed.all()
    );
    let shown = server.cli(&["runs", "show", &id]);
    assert!(shown.stdout.contains("success") && shown.stdout.contains("refs/heads/main"), "{}", shown.all());
    let audit = server.cli(&["audit", "verify", "--data", data.path().to_str().unwrap()]);
    assert_eq!(audit.code, 0, "{}", audit.all());
    let (status, metrics) = http(&server.addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    assert!(metrics.contains("tandem_runs_finished_total{status=\"success\"} 3"), "{metrics}");
    assert!(metrics.contains("tandem_webhooks_total{outcome=\"rejected\"} 2"), "{metrics}");
}

#[test]
fn every_documented_route_is_served_and_errors_are_json() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    let (status, doc) = http(&server.addr, "GET", "/api/v1/openapi.json", &[], b"");
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let n_operations: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(n_operations, 76);
    // The schemas are derived from the types the CLI reads: a client generated from the document
    // sees the same shapes.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in ["RunDetail", "RunSummary", "LogPage", "Deployment", "DeploymentDetail", "Environment", "ErrorBody"] {
        assert!(schemas.contains_key(name), "no schema {name} in {:?}", schemas.keys().collect::<Vec<_>>());
    }
    let show_run = &doc["paths"]["/api/v1/runs/{id}"]["get"];
    assert_eq!(
        show_run["responses"]["200"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/RunDetail",
        "{show_run}"
    );
    assert_eq!(show_run["security"][0]["token"], serde_json::json!([]), "{show_run}");
    assert!(doc["paths"]["/healthz"]["get"].get("security").is_none());
    assert_eq!(doc["components"]["securitySchemes"]["token"]["scheme"], "bearer");
    let auth = format!("Bearer {}", server.token);
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let concrete = path
                .replace("{forge}", "github")
                .replace("{name}", "none")
                .replace("{id}", "1")
                .replace("{service}", "none")
                .replace("{environment}", "none");
            let (status, body) = http(
                &server.addr,
                &method.to_uppercase(),
                &concrete,
                &[("authorization", &auth), ("content-type", "application/json")],
                b"{}",
            );
            assert_ne!(status, 405, "{method} {path}: {body}");
            assert!(status < 500, "{method} {path}: {status} {body}");
            if status >= 400 {
                let json: serde_json::Value =
                    serde_json::from_str(&body).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {body}"));
                // Tandem's own shape, or Prometheus's on the query API (what Grafana reads).
                let prometheus = json["status"] == "error" && json["errorType"].is_string();
                assert!(json["error"]["code"].is_string() || prometheus, "{method} {path}: {body}");
            }
        }
    }
    let (status, body) = http(&server.addr, "GET", "/api/v1/runs", &[], b"");
    assert_eq!(status, 401, "{body}");
    let (status, body) = http(&server.addr, "GET", "/api/v1/runs", &[("authorization", "Bearer wrong")], b"");
    assert_eq!(status, 401, "{body}");
    let big = vec![b'x'; 11 * 1024 * 1024];
    let (status, body) = http(&server.addr, "POST", "/api/v1/webhooks/github", &[("x-github-event", "push")], &big);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");
}

#[test]
fn cancel_and_rerun_failed_jobs() {
    let wf = "on: push\njobs:\n  ok:\n    runs-on: ubuntu-latest\n    steps:\n      - run: seq 1 30000\n  flaky:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo \"attempt $GITHUB_RUN_ATTEMPT ${{ github.run_attempt }}\"\n      - run: test -f \"$RUNNER_TOOL_CACHE/../flag\" || { touch \"$RUNNER_TOOL_CACHE/../flag\"; exit 1; }\n  slow:\n    if: github.event_name == 'never'\n    runs-on: ubuntu-latest\n    steps:\n      - run: sleep 60\n";
    let repo = Repo::new(&[("ci.yml", wf)]);
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    add_repo(&server, &repo, "app");
    let queued = server.cli(&["repo", "run", "app"]);
    assert_eq!(queued.code, 0, "{}", queued.all());
    let runs = server.wait_for("the first run to fail", |runs| runs.first().is_some_and(|r| r["status"] == "failure"));
    let id = runs[0]["id"].to_string();
    // A long log comes page by page (60 chunks of 500 lines; 50 chunks a page), and whole.
    let logs = server.cli(&["runs", "logs", &id]);
    assert_eq!(logs.code, 0, "{}", logs.all());
    let numbers: Vec<&str> =
        logs.stdout.lines().filter_map(|l| l.rsplit(' ').next()).filter(|w| w.parse::<u32>().is_ok()).collect();
    assert!(numbers.len() >= 30_000 && logs.stdout.contains("30000"), "{} numbered lines", numbers.len());
    let rerun = server.cli(&["runs", "rerun", &id, "--failed"]);
    assert!(rerun.stdout.contains("[\"flaky\"]"), "{}", rerun.all());
    let runs = server.wait_for("the re-run to pass", |runs| runs.len() == 2 && runs[0]["status"] == "success");
    let shown = server.cli(&["runs", "show", &runs[0]["id"].to_string(), "--format", "json"]).json();
    let jobs: Vec<&str> =
        shown["report"]["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(jobs, ["flaky"], "only the failed job runs again");
    assert_eq!(shown["run_attempt"], 2, "a re-run is the run's second attempt: {shown}");
    let logs = server.cli(&["runs", "logs", &runs[0]["id"].to_string()]);
    assert!(logs.stdout.contains("attempt 2 2"), "GITHUB_RUN_ATTEMPT and github.run_attempt: {}", logs.all());

    // Cancel a run while its step sleeps.
    let sleepy = "on: push\njobs:\n  nap:\n    runs-on: ubuntu-latest\n    steps:\n      - run: sleep 60\n";
    repo.write(".github/workflows/ci.yml", sleepy);
    repo.commit("sleepy");
    server.cli(&["repo", "run", "app"]);
    let runs = server.wait_for("the sleepy run to start", |runs| runs.len() == 3 && runs[0]["status"] == "running");
    let id = runs[0]["id"].to_string();
    let started = Instant::now();
    let cancelled = server.cli(&["runs", "cancel", &id]);
    assert_eq!(cancelled.code, 0, "{}", cancelled.all());
    server.wait_for("the cancel", |runs| runs[0]["status"] == "cancelled");
    assert!(started.elapsed() < Duration::from_secs(20));
    let again = server.cli(&["runs", "cancel", &id]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("already finished"), "{}", again.all());
}

#[test]
fn kill_9_mid_run_loses_nothing_and_leaves_no_orphans() {
    let wf = "on: push\njobs:\n  long:\n    runs-on: ubuntu-latest\n    steps:\n      - run: |\n          echo $$ >> \"$RUNNER_TOOL_CACHE/../step-pids\"\n          if [ ! -f \"$RUNNER_TOOL_CACHE/../interrupted\" ]; then touch \"$RUNNER_TOOL_CACHE/../interrupted\"; sleep 120; fi\n          echo finished\n";
    let repo = Repo::new(&[("ci.yml", wf)]);
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    let token = server.token.clone();
    let secret = add_repo(&server, &repo, "app");
    let sha = head(&repo);
    let payload = format!(
        r#"{{"ref":"refs/heads/main","before":"{zero}","after":"{sha}","repository":{{"full_name":"app"}},"commits":[]}}"#,
        zero = "0".repeat(40)
    );
    let signature = format!("sha256={}", git::webhook::sign(&secret, payload.as_bytes()));
    let headers = [
        ("x-github-event", "push"),
        ("x-github-delivery", "before-crash"),
        ("x-hub-signature-256", signature.as_str()),
    ];
    let (status, _) = http(&server.addr, "POST", "/api/v1/webhooks/github", &headers, payload.as_bytes());
    assert_eq!(status, 202);
    let pids = data.path().join("step-pids");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pids.exists() {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let step_pid: i32 = std::fs::read_to_string(&pids).unwrap().lines().next().unwrap().parse().unwrap();
    let _crashed = server.kill9();
    assert!(pid_alive(step_pid), "the step should outlive a kill -9 of the server until the restart");

    let server = Server::start(data.path(), Some(&token));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!pid_alive(step_pid), "the restarted server must kill the orphaned step {step_pid}");
    let runs = server.wait_for("the interrupted run to be retried and pass", |runs| {
        runs.len() == 1 && runs[0]["status"] == "success"
    });
    assert_eq!(runs[0]["attempt"], 2);
    // The delivery acknowledged before the crash is still known: no second run.
    let (status, body) = http(&server.addr, "POST", "/api/v1/webhooks/github", &headers, payload.as_bytes());
    assert_eq!((status, body.contains("duplicate")), (202, true), "{body}");
    let logs = server.cli(&["runs", "logs", &runs[0]["id"].to_string()]);
    assert!(logs.stdout.contains("finished"), "{}", logs.all());
    let audit = server.cli(&["audit", "verify", "--data", data.path().to_str().unwrap(), "--format", "json"]).json();
    assert_eq!(audit["first_broken"], serde_json::Value::Null);
}

#[test]
fn kill_9_at_random_points_during_a_delivery_stream() {
    let wf = "on: push\njobs:\n  quick:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo quick\n";
    let repo = Repo::new(&[("ci.yml", wf)]);
    let sha = head(&repo);
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path(), None);
    let token = server.token.clone();
    let secret = add_repo(&server, &repo, "app");
    let payload = format!(
        r#"{{"ref":"refs/heads/main","before":"{zero}","after":"{sha}","repository":{{"full_name":"app"}},"commits":[]}}"#,
        zero = "0".repeat(40)
    );
    let signature = format!("sha256={}", git::webhook::sign(&secret, payload.as_bytes()));
    let mut acknowledged: Vec<String> = Vec::new();
    // A cheap, deterministic "random" schedule of kill points.
    let kill_after_ms = [137u64, 412, 59, 733, 260];
    for (round, wait) in kill_after_ms.iter().enumerate() {
        let addr = server.addr.clone();
        let (payload, signature) = (payload.clone(), signature.clone());
        let sender = std::thread::spawn(move || {
            let mut ok = Vec::new();
            for i in 0.. {
                let id = format!("r{round}-{i}");
                let headers = [
                    ("x-github-event", "push"),
                    ("x-github-delivery", id.as_str()),
                    ("x-hub-signature-256", signature.as_str()),
                ];
                match try_http(&addr, "POST", "/api/v1/webhooks/github", &headers, payload.as_bytes()) {
                    Ok((202, _)) => ok.push(id),
                    _ => break,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            ok
        });
        std::thread::sleep(Duration::from_millis(*wait));
        let _crashed = server.kill9();
        acknowledged.extend(sender.join().unwrap());
        server = Server::start(data.path(), Some(&token));
    }
    assert!(acknowledged.len() >= 5, "too few deliveries got through: {}", acknowledged.len());
    // Every acknowledged delivery is known after the crashes: sending it again starts nothing.
    for id in &acknowledged {
        let headers = [
            ("x-github-event", "push"),
            ("x-github-delivery", id.as_str()),
            ("x-hub-signature-256", signature.as_str()),
        ];
        let (status, body) = http(&server.addr, "POST", "/api/v1/webhooks/github", &headers, payload.as_bytes());
        assert_eq!(
            (status, body.contains("duplicate")),
            (202, true),
            "delivery {id} was acknowledged but lost: {body}"
        );
    }
    // No run is lost or stuck: each acknowledged delivery has its run, and all of them finish.
    let runs = server.wait_for("every run to finish", |runs| {
        runs.len() >= acknowledged.len() && runs.iter().all(|r| r["status"] != "queued" && r["status"] != "running")
    });
    assert!(
        runs.iter()
            .all(|r| r["status"] == "success" || r["reason"].as_str().is_some_and(|s| s.contains("server stopped"))),
        "{runs:#?}"
    );
    let audit = server.cli(&["audit", "verify", "--data", data.path().to_str().unwrap(), "--format", "json"]).json();
    assert_eq!(audit["first_broken"], serde_json::Value::Null, "{audit}");
}

#[test]
fn up_serves_a_demo_repository_and_runs_it() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["up", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    let (mut url, mut token) = (String::new(), String::new());
    while !printed.contains("Press Ctrl-C to stop.") {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "tandem up exited early:\n{printed}");
        if let Some(rest) = line.strip_prefix("Tandem is up at ") {
            url = rest.trim().to_string();
        }
        if let Some(at) = line.find("TANDEM_TOKEN=") {
            token = line[at + "TANDEM_TOKEN=".len()..].trim().to_string();
        }
        printed.push_str(&line);
    }
    assert!(printed.contains("first run queued: 1"), "{printed}");
    assert!(printed.contains("tandem runs logs 1 --follow"), "{printed}");
    let server =
        Server { child, data: data.path().to_path_buf(), addr: url.trim_start_matches("http://").to_string(), token };
    let runs = server.wait_for("the demo run to pass", |runs| {
        runs.first().is_some_and(|r| r["status"] != "queued" && r["status"] != "running")
    });
    assert_eq!(runs[0]["status"], "success", "{runs:#?}");
    let logs = server.cli(&["runs", "logs", "1"]);
    assert!(logs.stdout.contains("Ran 2 tests") && logs.stdout.contains("OK"), "{}", logs.all());
    // The demo's secret reaches the deploy job, masked; the composite action said which Python.
    assert!(logs.stdout.contains("the deploy key (a secret from the vault) shows masked as ***"), "{}", logs.all());
    assert!(logs.stdout.contains("compiled with Python 3"), "{}", logs.all());

    // The demo story: the first release, a good change promoted, a bad one rolled back.
    let mut story = String::new();
    let deadline = Instant::now() + Duration::from_secs(480);
    let mut reader = reader;
    while !story.contains("demo: done") {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "tandem up exited:\n{story}");
        assert!(Instant::now() < deadline, "the demo did not finish:\n{story}");
        story.push_str(&line);
    }
    let lines: Vec<&str> =
        story.lines().filter(|l| l.starts_with("demo: ✓ deployment") || l.starts_with("demo: ✗ deployment")).collect();
    assert_eq!(lines.len(), 3, "{story}");
    assert!(lines[0].contains("deployment 1") && lines[0].contains("promoted"), "{story}");
    assert!(lines[1].contains("deployment 2") && lines[1].contains("promoted"), "{story}");
    assert!(lines[2].contains("deployment 3") && lines[2].contains("rolled back"), "{story}");
    assert!(lines[2].contains("worse on the canary"), "{story}");
    // Its burn paged the on-call webhook; an incident opened naming it, and was resolved once
    // the rollback had stopped the burn; the postmortem draft was written.
    // The windowed page (the canary is rolled back within seconds, often before the live page
    // has its evidence, so that one may or may not come too).
    let pages: Vec<&str> =
        story.lines().filter(|l| l.starts_with("demo: ✉ the on-call webhook received a firing notification")).collect();
    assert!(pages.iter().any(|l| l.contains("SLOBurnRate sample-service (page, firing)")), "{story}");
    // (Its number is usually 1; another alert can open one before it on a loaded machine.)
    let opened = story.lines().find(|l| l.starts_with("demo: 🚨 incident ")).unwrap_or_else(|| panic!("{story}"));
    assert!(opened.contains("opened by the page") && opened.contains("suspect: deployment 3"), "{story}");
    let id: i64 = opened["demo: 🚨 incident ".len()..].split(' ').next().unwrap().parse().unwrap();
    let resolved = story
        .lines()
        .find(|l| l.starts_with(&format!("demo: ✓ incident {id} resolved")))
        .unwrap_or_else(|| panic!("{story}"));
    assert!(resolved.contains("deployment 3") && resolved.contains("rolled back"), "{story}");
    let draft = std::fs::read_to_string(data.path().join(format!("postmortems/incident-{id}.md"))).unwrap();
    assert!(draft.contains("## Timeline") && draft.contains("The suspect change is deployment 3"), "{draft}");
    let incidents = server.cli(&["incident", "list", "--format", "json"]);
    let listed = incidents.json().as_array().unwrap().iter().find(|i| i["id"] == id).cloned();
    assert_eq!(listed.map(|i| i["state"].clone()), Some("resolved".into()), "{}", incidents.all());
    let dora = server.cli(&["dora", "--format", "json"]);
    assert_eq!(dora.json()["deployments"], 3, "{}", dora.all());
    assert_eq!(dora.json()["change_failure_rate"]["value"].as_f64(), Some(1.0 / 3.0), "{}", dora.all());
    // The bad canary's errors burned the SLO's budget.
    let slo = story.lines().find(|l| l.starts_with("demo: SLO availability")).unwrap_or_else(|| panic!("{story}"));
    let hour: f64 = slo.split("burn ").nth(1).and_then(|r| r.split('×').next()).unwrap().parse().unwrap();
    assert!(hour > 0.0, "the SLO did not see the bad release: {slo}");
    let probes = server.cli(&["probes", "--format", "json"]);
    assert_eq!(probes.json()[0]["key"], "sample-service/staging/greet", "{}", probes.all());
    // The overview puts traffic, errors and the three deployments on one time axis.
    let overview = server.cli(&["service", "show", "sample-service", "--range", "1h"]);
    assert_eq!(overview.code, 0, "{}", overview.all());
    let axis = overview.stdout.lines().find(|l| l.trim_start().starts_with("deployments")).unwrap_or_default();
    assert!(axis.contains('▲') && axis.contains('✗'), "{}", overview.all());
    assert!(
        overview.stdout.contains("staging: error ratio") && overview.stdout.contains("SLO availability"),
        "{}",
        overview.all()
    );
    let shown = server.cli(&["deployments", "list"]);
    assert!(shown.stdout.contains("rolled_back") && shown.stdout.contains("promoted"), "{}", shown.all());
}

/// A stand-in for a forge's API: records every request (method, path, headers, body) and answers 201.
struct StandIn {
    addr: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
}

impl StandIn {
    fn start() -> StandIn {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut head = String::new();
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    head.push_str(&line);
                    line.clear();
                }
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let request_line = head.lines().next().unwrap_or("").to_string();
                recorded.lock().unwrap().push((
                    request_line,
                    head.to_ascii_lowercase(),
                    String::from_utf8_lossy(&body).into_owned(),
                ));
                let _ = reader
                    .get_mut()
                    .write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
            }
        });
        StandIn { addr, requests }
    }
}

#[test]
fn commit_statuses_are_posted_to_each_forge_in_its_dialect() {
    let wf = "on: push\njobs:\n  check:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo checked\n";
    let repo = Repo::new(&[("ci.yml", wf)]);
    let sha = head(&repo);
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    let stand_in = StandIn::start();
    let api = format!("http://{}/api", stand_in.addr);
    for (forge, name) in [("github", "team/gh"), ("gitea", "team/gt"), ("gitlab", "group/sub/gl")] {
        let run = server.cli(&[
            "repo",
            "add",
            repo.path().to_str().unwrap(),
            "--name",
            name,
            "--forge",
            forge,
            "--api-url",
            &api,
            "--status-token",
            &format!("tok-{forge}"),
        ]);
        assert_eq!(run.code, 0, "{}", run.all());
        let queued = server.cli(&["repo", "run", name]);
        assert_eq!(queued.code, 0, "{}", queued.all());
    }
    server.wait_for("three runs to pass", |runs| runs.len() == 3 && runs.iter().all(|r| r["status"] == "success"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while stand_in.requests.lock().unwrap().len() < 6 {
        assert!(Instant::now() < deadline, "statuses missing: {:#?}", stand_in.requests.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    let requests = stand_in.requests.lock().unwrap().clone();
    let find = |path: &str, state: &str| {
        requests
            .iter()
            .find(|(line, _, body)| {
                line.starts_with(&format!("POST {path} ")) && body.contains(&format!("\"state\":\"{state}\""))
            })
            .cloned()
    };
    let github =
        find(&format!("/api/repos/team/gh/statuses/{sha}"), "success").unwrap_or_else(|| panic!("{requests:#?}"));
    assert!(
        github.1.contains("authorization: bearer tok-github") && github.2.contains("\"context\":\"tandem/ci\""),
        "{github:?}"
    );
    assert!(find(&format!("/api/repos/team/gh/statuses/{sha}"), "pending").is_some(), "{requests:#?}");
    let gitea =
        find(&format!("/api/repos/team/gt/statuses/{sha}"), "success").unwrap_or_else(|| panic!("{requests:#?}"));
    assert!(gitea.1.contains("authorization: token tok-gitea"), "{gitea:?}");
    let gitlab = find(&format!("/api/projects/group%2Fsub%2Fgl/statuses/{sha}"), "success")
        .unwrap_or_else(|| panic!("{requests:#?}"));
    assert!(
        gitlab.1.contains("private-token: tok-gitlab") && gitlab.2.contains("\"name\":\"tandem/ci\""),
        "{gitlab:?}"
    );
    assert!(find(&format!("/api/projects/group%2Fsub%2Fgl/statuses/{sha}"), "running").is_some(), "{requests:#?}");
    // The tokens stay out of the event log; each status is recorded.
    let events = http(
        &server.addr,
        "GET",
        "/api/v1/events?limit=1000",
        &[("authorization", &format!("Bearer {}", server.token))],
        b"",
    )
    .1;
    assert!(!events.contains("tok-github") && !events.contains("tok-gitlab"), "{events}");
    assert_eq!(events.matches("status.posted").count(), 6, "{events}");
    // Nor are they in the database in clear: the vault holds them, sealed.
    let database = std::fs::read(data.path().join("tandem.db")).unwrap();
    let wal = std::fs::read(data.path().join("tandem.db-wal")).unwrap_or_default();
    for token in ["tok-github", "tok-gitea", "tok-gitlab"] {
        for bytes in [&database, &wal] {
            assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()), "{token} is stored in clear");
        }
    }
}

#[test]
fn a_newer_run_of_a_concurrency_group_cancels_the_one_in_progress() {
    let wf = "on: push\nconcurrency:\n  group: deploy-${{ github.ref }}\n  cancel-in-progress: true\njobs:\n  nap:\n    runs-on: ubuntu-latest\n    steps:\n      - run: sleep 30\n";
    let repo = Repo::new(&[("ci.yml", wf)]);
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    add_repo(&server, &repo, "app");
    server.cli(&["repo", "run", "app"]);
    server.wait_for("the first run to start", |runs| runs.len() == 1 && runs[0]["status"] == "running");
    let started = Instant::now();
    repo.write("README.md", "newer\n");
    repo.commit("newer");
    server.cli(&["repo", "run", "app"]);
    let runs =
        server.wait_for("the first run to be cancelled", |runs| runs.len() == 2 && runs[1]["status"] == "cancelled");
    assert!(started.elapsed() < Duration::from_secs(20), "the newer run cancelled the older one late");
    assert_eq!(runs[0]["status"], "running", "the newer run goes on: {runs:#?}");
    let cancelled = server.cli(&["runs", "cancel", &runs[0]["id"].to_string()]);
    assert_eq!(cancelled.code, 0, "{}", cancelled.all());
    server.wait_for("the newer run to end", |runs| runs[0]["status"] == "cancelled");
}

#[test]
fn forge_deliveries_that_start_nothing_say_why_and_gitlab_is_answered_as_it_means() {
    let repo = Repo::new(&[("ci.yml", WORKFLOW)]);
    let sha = head(&repo);
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    // Known to the server by a GitLab-style URL path as its name.
    let secret = add_repo(&server, &repo, "group/sub/app");
    let post = |forge: &str, headers: &[(&str, &str)], body: &str| {
        http(&server.addr, "POST", &format!("/api/v1/webhooks/{forge}"), headers, body.as_bytes())
    };

    // A closed pull request starts nothing (the workflow runs on pushes to main): "ignored".
    let closed = format!(
        r#"{{"action":"closed","number":4,"pull_request":{{"number":4,"merged":false,"head":{{"ref":"topic","sha":"{sha}"}},"base":{{"ref":"main","sha":"{sha}"}}}},"repository":{{"full_name":"group/sub/app"}}}}"#
    );
    let signature = format!("sha256={}", git::webhook::sign(&secret, closed.as_bytes()));
    let headers = [
        ("x-github-event", "pull_request"),
        ("x-github-delivery", "pr-closed"),
        ("x-hub-signature-256", signature.as_str()),
    ];
    let (status, body) = post("github", &headers, &closed);
    assert_eq!(status, 202, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["status"], "ignored", "{body}");
    assert!(answer["reason"].as_str().unwrap().contains("pull_request"), "{body}");

    // An older GitLab job hook names its project only by id and repository URLs: matched, not 404.
    let job = r#"{"object_kind":"build","ref":"main","build_id":1977,"build_status":"success","project_id":380,"project_name":"group / sub / app","repository":{"name":"app","url":"git@gitlab.example:group/sub/app.git","homepage":"https://gitlab.example/group/sub/app","git_http_url":"https://gitlab.example/group/sub/app.git","git_ssh_url":"git@gitlab.example:group/sub/app.git"}}"#;
    let gitlab = |uuid: &'static str, key: &'static str| {
        [
            ("x-gitlab-event", "Job Hook"),
            ("x-gitlab-token", secret.as_str()),
            ("x-gitlab-event-uuid", uuid),
            ("idempotency-key", key),
        ]
    };
    let (status, body) = post("gitlab", &gitlab("uuid-1", "key-1"), job);
    assert_eq!(status, 202, "matched by its repository URL: {body}");
    assert!(body.contains(r#""status":"ignored""#), "{body}");

    // A GitLab retry carries the same Idempotency-Key (and maybe another event UUID).
    let push = format!(
        r#"{{"object_kind":"push","ref":"refs/heads/main","before":"{zero}","after":"{sha}","project":{{"path_with_namespace":"group/sub/app","git_http_url":"https://gitlab.example/group/sub/app.git"}},"commits":[]}}"#,
        zero = "0".repeat(40)
    );
    let push_headers = |uuid: &'static str| {
        [
            ("x-gitlab-event", "Push Hook"),
            ("x-gitlab-token", secret.as_str()),
            ("x-gitlab-event-uuid", uuid),
            ("idempotency-key", "push-1"),
        ]
    };
    let (status, body) = post("gitlab", &push_headers("uuid-2"), &push);
    assert!(status == 202 && body.contains(r#""status":"queued""#), "{body}");
    let (status, body) = post("gitlab", &push_headers("uuid-3"), &push);
    assert_eq!((status, body.contains("duplicate")), (202, true), "a retry is recognised: {body}");
}
