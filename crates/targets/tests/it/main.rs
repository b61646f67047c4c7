//! The proxy and the canary controller with real HTTP on loopback: a bad release is rolled back
//! on its own within seconds at 50 requests/s; a good one is promoted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rollout::analysis::Config;
use targets::canary::{self, Plan, Record};
use targets::proxy::{self, Proxy, Routing};

mod relay;

/// An upstream that answers 500 to every `fail_every`-th request (0: never), counting hits.
async fn upstream(fail_every: u64) -> (SocketAddr, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            if fail_every > 0 && n.is_multiple_of(fail_every) {
                (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom")
            } else {
                (axum::http::StatusCode::OK, "ok")
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

async fn serve_proxy(proxy: Arc<Proxy>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(proxy::serve(listener, proxy));
    addr
}

/// A proxy that sends everything to one stable upstream (its outcomes unread).
fn only_stable(upstream: SocketAddr) -> Arc<Proxy> {
    let routing = Routing {
        stable: vec![upstream],
        canary: vec![],
        canary_weight: 0.0,
        sticky_header: None,
        sticky_cookie: None,
    };
    Proxy::new(routing).0
}

/// Sends `rate` requests per second to `addr` until dropped.
fn load(addr: SocketAddr, rate: f64, header: Option<(&'static str, String)>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Empty<axum::body::Bytes>>();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        loop {
            tick.tick().await;
            let mut request = axum::http::Request::builder().uri(format!("http://{addr}/"));
            if let Some((name, value)) = &header {
                request = request.header(*name, value.as_str());
            }
            let request = request.body(http_body_util::Empty::new()).unwrap();
            let client = client.clone();
            tokio::spawn(async move {
                let _ = client.request(request).await;
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_failing_one_request_in_ten_is_rolled_back_within_seconds() {
    let (stable, _) = upstream(0).await;
    let (bad, canary_hits) = upstream(10).await;
    let (proxy, outcomes) = Proxy::new(Routing {
        stable: vec![stable],
        canary: vec![bad],
        canary_weight: 0.0,
        sticky_header: None,
        sticky_cookie: None,
    });
    let addr = serve_proxy(proxy.clone()).await;
    let traffic = load(addr, 50.0, None);
    let started = Instant::now();
    let plan = Plan { steps: vec![0.1, 0.5, 1.0], analysis: Config::default(), deadline: None };
    let record = canary::run(proxy.clone(), outcomes, plan).await;
    let elapsed = started.elapsed();
    eprintln!("rolled back after {elapsed:?}: {:?}", record.last());
    let Some(Record::RolledBack { weight, evidence, reason, .. }) = record.last() else {
        panic!("expected a rollback: {record:?}")
    };
    assert_eq!(*weight, 0.1, "{record:?}");
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?} to roll back ({reason})");
    let evidence = evidence.as_ref().unwrap();
    assert!(evidence.canary_rate > evidence.stable_rate && evidence.evidence >= evidence.threshold, "{evidence:?}");
    assert_eq!(proxy.routing().canary_weight, 0.0);
    // All traffic is back on stable: the canary gets nothing more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = canary_hits.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(canary_hits.load(Ordering::SeqCst), before, "the canary still receives traffic after the rollback");
    traffic.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_release_is_promoted_step_by_step() {
    let (stable, _) = upstream(0).await;
    let (good, good_hits) = upstream(0).await;
    let (proxy, outcomes) = Proxy::new(Routing {
        stable: vec![stable],
        canary: vec![good],
        canary_weight: 0.0,
        sticky_header: None,
        sticky_cookie: None,
    });
    let addr = serve_proxy(proxy.clone()).await;
    let traffic = load(addr, 100.0, None);
    let analysis = Config { min_canary_requests: 30, min_seconds: 1.0, ..Config::default() };
    let record = canary::run(proxy.clone(), outcomes, Plan { steps: vec![0.25, 0.5], analysis, deadline: None }).await;
    traffic.abort();
    let weights: Vec<f64> = record
        .iter()
        .filter_map(|r| if let Record::StepReached { weight, .. } = r { Some(*weight) } else { None })
        .collect();
    assert_eq!(weights, [0.25, 0.5]);
    assert!(matches!(record.last(), Some(Record::Promoted { .. })), "{record:?}");
    assert_eq!(proxy.routing().stable, vec![good]);
    assert!(good_hits.load(Ordering::SeqCst) >= 45);
}

/// A step with no traffic: without a deadline it waits (here until a manual promotion after 20
/// checks); with one it rolls back or goes on, as `on-deadline` says.
#[tokio::test]
async fn a_step_without_traffic_waits_unless_its_deadline_decides() {
    use targets::canary::{Deadline, StepEnd, judge_step};
    let config = Config::default();
    let (_keep, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let mut checks = 0;
    let end = judge_step(&mut outcomes, &config, None, || {
        checks += 1;
        (checks == 20).then_some(StepEnd::Healthy)
    })
    .await;
    assert_eq!((end, checks), (StepEnd::Healthy, 20), "no traffic and no deadline: it waited");

    let deadline = Deadline { after: Duration::from_millis(200), promote: false };
    let end = judge_step(&mut outcomes, &config, Some(deadline), || None).await;
    let StepEnd::RolledBack { evidence: None, reason } = end else { panic!("{end:?}") };
    assert!(reason.contains("deadline") && reason.contains("200ms"), "{reason}");

    let deadline = Deadline { after: Duration::from_millis(200), promote: true };
    assert_eq!(judge_step(&mut outcomes, &config, Some(deadline), || None).await, StepEnd::Healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_requests_stay_on_one_version_and_weights_are_respected() {
    let (stable, stable_hits) = upstream(0).await;
    let (canary_addr, canary_hits) = upstream(0).await;
    let (proxy, mut outcomes) = Proxy::new(Routing {
        stable: vec![stable],
        canary: vec![canary_addr],
        canary_weight: 0.2,
        sticky_header: Some("x-user".into()),
        sticky_cookie: None,
    });
    let addr = serve_proxy(proxy.clone()).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<axum::body::Bytes>>();
    for _ in 0..20 {
        let request = axum::http::Request::builder()
            .uri(format!("http://{addr}/"))
            .header("x-user", "ada")
            .body(http_body_util::Empty::new())
            .unwrap();
        assert!(client.request(request).await.unwrap().status().is_success());
    }
    let (s, c) = (stable_hits.load(Ordering::SeqCst), canary_hits.load(Ordering::SeqCst));
    assert!(s == 20 || c == 20, "a sticky user was split: {s} stable, {c} canary");
    // The same by cookie, among other cookies.
    proxy.set_routing(Routing { sticky_header: None, sticky_cookie: Some("session".into()), ..proxy.routing() });
    for _ in 0..20 {
        let request = axum::http::Request::builder()
            .uri(format!("http://{addr}/"))
            .header("cookie", "theme=dark; session=grace")
            .body(http_body_util::Empty::new())
            .unwrap();
        assert!(client.request(request).await.unwrap().status().is_success());
    }
    let (s2, c2) = (stable_hits.load(Ordering::SeqCst) - s, canary_hits.load(Ordering::SeqCst) - c);
    assert!(s2 == 20 || c2 == 20, "a sticky cookie was split: {s2} stable, {c2} canary");
    let sticky_canary = c + c2;
    // Without either, 1,000 requests split close to the weight.
    proxy.set_routing(Routing { sticky_header: None, sticky_cookie: None, ..proxy.routing() });
    for _ in 0..1000 {
        let request =
            axum::http::Request::builder().uri(format!("http://{addr}/")).body(http_body_util::Empty::new()).unwrap();
        client.request(request).await.unwrap();
    }
    let mut canary = 0;
    while let Ok(outcome) = outcomes.try_recv() {
        if outcome.arm == rollout::analysis::Arm::Canary {
            canary += 1;
        }
    }
    let share = (canary - sticky_canary) as f64 / 1000.0;
    assert!((share - 0.2).abs() < 0.02, "canary share {share}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_instances_are_supervised_and_restarted() {
    use targets::process::{self, ProcessTarget};
    let dir = std::env::temp_dir();
    let server = "import http.server, os\nclass H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        self.send_response(200 if self.path == '/health' else 404)\n        self.send_header('content-length', '0')\n        self.end_headers()\n    def log_message(self, *a):\n        pass\nhttp.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n";
    let target = ProcessTarget {
        command: format!("exec python3 -c \"{}\"", server.replace('"', "\\\"")),
        dir,
        env: Vec::new(),
        instances: 2,
        health_path: "/health".into(),
        journal: None,
    };
    let supervised = process::start(&target).unwrap();
    supervised.wait_ready("/health", Duration::from_secs(20)).await.unwrap();
    assert_eq!(supervised.addrs.len(), 2);
    assert_ne!(supervised.addrs[0], supervised.addrs[1]);
    // Kill one instance from outside: it is restarted on the same port.
    let victim = supervised.pids()[0];
    std::process::Command::new("kill").arg("-9").arg(victim.to_string()).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while supervised.restarts() == 0 || !process::probe(supervised.addrs[0], "/health").await {
        assert!(Instant::now() < deadline, "the killed instance was not restarted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(supervised.pids()[0], victim);
    let pids = supervised.pids();
    let addrs = supervised.addrs.clone();
    supervised.stop().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (pid, addr) in pids.iter().zip(&addrs) {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().split_whitespace().nth(2)
                    == Some("Z"),
            "instance {pid} survived stop"
        );
        assert!(!process::probe(*addr, "/health").await, "{addr} still answers after stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_by_tcp_and_command_and_a_liveness_failure_restarts_the_instance() {
    use targets::instance::{Check, Health, Instance, Launch, check};
    let scratch = tempfile::tempdir().unwrap();
    // Healthy until the file `sick` appears next to it; then /health answers 500.
    let server = "import http.server, os\nclass H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        sick = os.path.exists('sick')\n        self.send_response(500 if sick and self.path == '/health' else 200)\n        self.send_header('content-length', '0')\n        self.end_headers()\n    def log_message(self, *a):\n        pass\nhttp.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n";
    std::fs::write(scratch.path().join("server.py"), server).unwrap();
    let launch = Launch::Process {
        command: "exec python3 server.py".into(),
        dir: scratch.path().to_path_buf(),
        env: Vec::new(),
        journal: None,
    };
    let health = Health {
        check: Check::Http("/health".into()),
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(1),
        threshold: 3,
        ready_within: Duration::from_secs(20),
    };
    let mut instance = Instance::start(&launch).await.unwrap();
    instance.wait_ready(&health).await.unwrap();
    let second = Duration::from_secs(1);
    assert!(check(instance.addr, &Check::Tcp, second).await, "the port accepts connections");
    assert!(check(instance.addr, &Check::Command("test \"$PORT\" -gt 0".into()), second).await);
    assert!(!check(instance.addr, &Check::Command("exit 3".into()), second).await);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    assert!(!check(closed, &Check::Tcp, second).await, "nothing listens on {closed}");

    // Liveness: three failed checks in a row record the failure and restart the instance.
    instance.watch(health.clone());
    assert_eq!(instance.failure(), None);
    std::fs::write(scratch.path().join("sick"), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while instance.failure().is_none() {
        assert!(Instant::now() < deadline, "the liveness check never gave up on a failing instance");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failure = instance.failure().unwrap();
    assert!(failure.contains("failed its liveness check (GET /health) 3 times in a row"), "{failure}");
    instance.stop().await;
}

/// An upstream that promises keep-alive but closes each connection right after its first answer:
/// the proxy must not hand the client the closed connection's failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_closing_its_keep_alive_connections_never_fails_a_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Closed without a `connection: close`: the proxy finds out only when it reuses it.
    let (upstream, connections) =
        relay::raw_upstream(|_| (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(), true)).await;
    let addr = serve_proxy(only_stable(upstream)).await;
    // One client connection, keep-alive, requests one after another (some right away, some after
    // the upstream's close has arrived).
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    for n in 0..20u64 {
        if n % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        client.write_all(format!("GET /{n} HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let mut buffer = [0u8; 1024];
        while !answer.ends_with(b"ok") {
            let n = client.read(&mut buffer).await.unwrap();
            assert!(n > 0, "the proxy closed the client's connection: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buffer[..n]);
        }
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200"), "request {n}: {text}");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 20, "one upstream connection per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_small_large_streamed_and_to_head_pass_through_whole() {
    use http_body_util::BodyExt;
    let large = "x".repeat(200_000);
    let chunks = || futures_util::stream::iter((0..50).map(|i| Ok::<_, std::io::Error>(format!("part {i}\n"))));
    let app = axum::Router::new()
        .route("/small", axum::routing::get(|| async { "small answer" }))
        .route("/large", axum::routing::get(move || async move { large }))
        .route("/streamed", axum::routing::get(move || async move { axum::body::Body::from_stream(chunks()) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let addr = serve_proxy(only_stable(upstream)).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<axum::body::Bytes>>();
    let fetch = |method: &str, path: &str| {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .body(http_body_util::Empty::new())
            .unwrap();
        let client = client.clone();
        async move {
            let response = client.request(request).await.unwrap();
            let length = response.headers().get("content-length").map(|v| v.to_str().unwrap().to_string());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (length, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    assert_eq!(fetch("GET", "/small").await, (Some("12".into()), "small answer".into()));
    let (length, body) = fetch("GET", "/large").await;
    assert_eq!((length.as_deref(), body.len()), (Some("200000"), 200_000));
    let (length, body) = fetch("GET", "/streamed").await;
    assert_eq!(length, None, "a streamed answer stays streamed");
    assert!(body.starts_with("part 0\n") && body.ends_with("part 49\n"), "{body}");
    // A HEAD answer says the length of what GET would send, and sends nothing.
    assert_eq!(fetch("HEAD", "/small").await, (Some("12".into()), String::new()));
    assert_eq!(fetch("GET", "/small").await.1, "small answer", "the connection still works after HEAD");
}
