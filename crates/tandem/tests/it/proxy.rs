//! `tandem proxy --steps`: a canary judged live between two real upstream processes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A small HTTP server process; `fail_every` > 0 answers 500 to every n-th request.
struct Upstream {
    child: Child,
    port: u16,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn upstream(fail_every: u32) -> Upstream {
    let script = format!(
        "import http.server\nn = [0]\nclass H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        n[0] += 1\n        code = 500 if {fail_every} and n[0] % {fail_every} == 0 else 200\n        self.send_response(code)\n        self.send_header('content-length', '2')\n        self.end_headers()\n        self.wfile.write(b'ok')\n    def log_message(self, *args):\n        pass\ns = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)\nprint(s.server_address[1], flush=True)\ns.serve_forever()\n"
    );
    let mut child = Command::new("python3").arg("-c").arg(script).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    Upstream { child, port: line.trim().parse().unwrap() }
}

fn get(addr: &str) {
    if let Ok(mut stream) = TcpStream::connect(addr) {
        let _ = stream.write_all(format!("GET / HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes());
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
    }
}

/// Starts `tandem proxy` with `args`, sends it 50 requests per second until it exits, and returns
/// its exit code, its JSON record and how long it ran.
fn drive(args: &[&str]) -> (i32, serde_json::Value, Duration) {
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["proxy", "--listen", "127.0.0.1:0", "--format", "json"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(proxy.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr =
        line.trim().strip_prefix("proxy listening on ").unwrap_or_else(|| panic!("unexpected: {line}")).to_string();
    let started = Instant::now();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (addr, done) = (addr.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
                let addr = addr.clone();
                std::thread::spawn(move || get(&addr));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let output = proxy.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    load.join().unwrap();
    let record = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("no JSON record: {}", String::from_utf8_lossy(&output.stdout)));
    (output.status.code().unwrap_or(-1), record, elapsed)
}

fn canary(fail_every: u32) -> (i32, serde_json::Value, Duration) {
    let (stable, canary) = (upstream(0), upstream(fail_every));
    let (stable, canary) = (format!("127.0.0.1:{}", stable.port), format!("127.0.0.1:{}", canary.port));
    drive(&["--stable", &stable, "--canary", &canary, "--steps", "10,50", "--min-requests", "40", "--min-seconds", "2"])
}

#[test]
fn a_failing_canary_is_rolled_back_and_a_healthy_one_promoted() {
    let (code, record, elapsed) = canary(10);
    assert_eq!(code, 1, "{record:#}");
    let last = record.as_array().unwrap().last().unwrap();
    assert_eq!(last["event"], "rolled_back", "{record:#}");
    assert_eq!(last["evidence"]["metric"], "error-rate", "{record:#}");
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");

    let (code, record, _) = canary(0);
    assert_eq!(code, 0, "{record:#}");
    let events: Vec<&str> = record.as_array().unwrap().iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["step_reached", "step_reached", "promoted"]);
}

/// A shell command running a small HTTP server on `$PORT` that answers 500 to every n-th request
/// (0: never) and 200 on `/health`.
fn server_command(fail_every: u32, marker: &str) -> String {
    let script = format!(
        "# {marker}\nimport http.server, os\nn = [0]\nclass H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        n[0] += 1\n        bad = {fail_every} and self.path != '/health' and n[0] % {fail_every} == 0\n        self.send_response(500 if bad else 200)\n        self.send_header('content-length', '2')\n        self.end_headers()\n        self.wfile.write(b'ok')\n    def log_message(self, *args):\n        pass\nhttp.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n"
    );
    format!("exec python3 -c \"{}\"", script.replace('"', "\\\""))
}

#[test]
fn tandem_runs_both_versions_and_stops_the_one_that_lost() {
    let marker = format!("tandem-proxy-test-{}", std::process::id());
    let (stable, canary) = (server_command(0, &marker), server_command(10, &marker));
    let (code, record, _) = drive(&[
        "--stable-command",
        &stable,
        "--canary-command",
        &canary,
        "--instances",
        "2",
        "--health",
        "/health",
        "--steps",
        "10,50",
        "--min-requests",
        "40",
        "--min-seconds",
        "2",
    ]);
    assert_eq!(code, 1, "{record:#}");
    assert_eq!(record.as_array().unwrap().last().unwrap()["event"], "rolled_back", "{record:#}");
    // Every instance Tandem started is gone.
    let leftover = Command::new("sh")
        .arg("-c")
        .arg(format!("ps -eo args | grep -v grep | grep -c '{marker}' || true"))
        .output()
        .unwrap();
    let count: u32 = String::from_utf8_lossy(&leftover.stdout).trim().parse().unwrap_or(0);
    assert_eq!(count, 0, "instances survived the rollout");
}

#[test]
fn a_canary_that_never_becomes_healthy_is_rolled_back_before_traffic() {
    let output = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--stable-command",
            &server_command(0, "unhealthy-canary"),
            "--canary-command",
            "exit 3",
        ])
        .args(["--health", "/health", "--steps", "10", "--ready-timeout", "3", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stderr));
    let record: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let last = record.as_array().unwrap().last().unwrap();
    assert!(last["reason"].as_str().unwrap().contains("failed health check"), "{record:#}");
}
