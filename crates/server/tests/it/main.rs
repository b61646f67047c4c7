//! The API's handlers through the router alone (`oneshot`, no socket, no worker): authentication,
//! stable error codes, webhooks that store nothing when refused, log paging, and conflicts.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use server::{App, ServerConfig};
use store::{LogLine, NewRun, SqliteStore, Store};
use tower::ServiceExt;

mod access;
mod incidents;
mod probes;

struct Api {
    app: Arc<App>,
    token: String,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn new() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&server::database_path(dir.path())).await.unwrap();
        let token = "tdm_test".to_string();
        store.add_token("admin", &server::token_hash(&token), "test").await.unwrap();
        let config = ServerConfig {
            data_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            max_parallel_runs: 1,
            max_parallel_jobs: 1,
            max_attempts: 2,
            monitors: None,
            rules: Vec::new(),
            scrape_interval: server::monitor::SCRAPE_INTERVAL,
            remote_write: Vec::new(),
            alertmanager: None,
            oncall: None,
            actions: Default::default(),
            oidc: None,
            osv: None,
        };
        let tsdb = metrics::Db::open(&server::tsdb_path(dir.path()), metrics::Options::default()).unwrap();
        Api { app: Arc::new(App::new(Arc::new(store), Arc::new(tsdb), config)), token, _dir: dir }
    }

    /// (status, JSON body) of one request through the router.
    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> (StatusCode, serde_json::Value) {
        let mut request = Request::builder().method(method).uri(path).header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        self.send(request.body(Body::from(body.to_string())).unwrap()).await
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, serde_json::Value) {
        let response = server::router(self.app.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 26).await.unwrap();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, json)
    }

    async fn get(&self, path: &str) -> (StatusCode, serde_json::Value) {
        self.call("GET", path, Some(&self.token.clone()), "").await
    }
}

fn new_run(repo_id: i64) -> NewRun {
    NewRun {
        repo_id,
        workflow: ".github/workflows/ci.yml".into(),
        event: "push".into(),
        git_ref: "refs/heads/main".into(),
        sha: "a".repeat(40),
        before_sha: "0".repeat(40),
        change_request: None,
        jobs: None,
        payload: serde_json::json!({}),
        rerun_of: None,
    }
}

#[tokio::test]
async fn every_call_but_health_needs_a_valid_token_and_errors_have_stable_codes() {
    let api = Api::new().await;
    let (status, body) = api.call("GET", "/healthz", None, "").await;
    assert_eq!((status, body), (StatusCode::OK, serde_json::Value::String("ok\n".into())));
    for token in [None, Some("tdm_wrong")] {
        let (status, body) = api.call("GET", "/api/v1/runs", token, "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    let (status, body) = api.get("/api/v1/runs").await;
    assert_eq!((status, body["runs"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)));
    let (status, body) = api.get("/api/v1/runs/999").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, body) = api.get("/api/v1/runs/abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = api.get("/api/v1/nothing-here").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, body) = api.call("POST", "/api/v1/deployments", Some("tdm_test"), "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = api
        .call("POST", "/api/v1/deployments", Some("tdm_test"), r#"{"service": "ghost", "environment": "prod"}"#)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("no service or repository is named `ghost`"), "{body}");
}

#[tokio::test]
async fn a_webhook_with_a_bad_signature_is_refused_and_stores_nothing() {
    use hmac::Mac;
    let api = Api::new().await;
    api.app.store.add_repo("team/app", "/nowhere", "s3cret", None, "test").await.unwrap();
    let payload = r#"{"ref": "refs/heads/main", "after": "abc", "repository": {"full_name": "team/app"}}"#;
    let sign = |secret: &[u8]| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        mac.update(payload.as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let request = |signature: String| {
        Request::builder()
            .method("POST")
            .uri("/api/v1/webhooks/github")
            .header("x-github-event", "push")
            .header("x-github-delivery", "d-1")
            .header("x-hub-signature-256", signature)
            .body(Body::from(payload))
            .unwrap()
    };
    let events_before = api.app.store.events(0, 1000).await.unwrap().len();
    let (status, body) = api.send(request(sign(b"wrong"))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("bad_signature")), "{body}");
    assert_eq!(api.app.store.events(0, 1000).await.unwrap().len(), events_before, "a refused delivery stores nothing");
    let (status, body) = api.send(request(sign(b"s3cret"))).await;
    // Signed right, but the repository cannot be read: the forge is told to try again later.
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");

    // A secret kept in clear in the row (from before the vault) moves into the vault, and
    // deliveries signed with it are still accepted.
    assert_eq!(server::credentials::seal_clear(&api.app).await.unwrap(), 1);
    let repo = api.app.store.repos().await.unwrap().remove(0);
    assert_eq!(repo.webhook_secret, server::credentials::IN_VAULT);
    assert_eq!(server::credentials::seal_clear(&api.app).await.unwrap(), 0, "once is enough");
    let (status, _) = api.send(request(sign(b"s3cret"))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "still verified with the sealed secret");
    let (status, _) = api.send(request(sign(b"wrong"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Archived, the repository takes the delivery (the forge keeps its hook) and starts nothing,
    // saying why — without reading the repository at all.
    let repo = api.app.store.repo("team/app").await.unwrap();
    api.app.store.set_archived(repo.id, true, "test").await.unwrap();
    let (status, body) = api.send(request(sign(b"s3cret"))).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::ACCEPTED, Some("ignored")), "{body}");
    assert_eq!(body["reason"], "team/app is archived: it starts no runs", "{body}");
}

#[tokio::test]
async fn a_long_log_is_served_page_by_page_and_whole() {
    let api = Api::new().await;
    let repo = api.app.store.add_repo("app", "/nowhere", "s", None, "test").await.unwrap();
    let run = api.app.store.enqueue(new_run(repo.id), "test").await.unwrap();
    for chunk in 0..120 {
        let lines: Vec<LogLine> = (0..10)
            .map(|i| LogLine { job: "build".into(), step: Some(0), text: format!("{}", chunk * 10 + i) })
            .collect();
        api.app.store.append_log(run.id, &lines).await.unwrap();
    }
    let mut after = 0;
    let mut texts = Vec::new();
    let mut pages = 0;
    loop {
        let (status, page) = api.get(&format!("/api/v1/runs/{}/logs?after={after}", run.id)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        texts.extend(page["lines"].as_array().unwrap().iter().map(|l| l["text"].as_str().unwrap().to_string()));
        after = page["next"].as_i64().unwrap();
        if page["complete"] == true {
            break;
        }
        assert!(pages < 10, "paging never ends");
    }
    assert_eq!(pages, 3, "120 chunks at 50 a page");
    assert_eq!(texts, (0..1200).map(|n| n.to_string()).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_run_still_going_cannot_be_rerun_and_a_finished_one_counts_its_attempt() {
    let api = Api::new().await;
    let repo = api.app.store.add_repo("app", "/nowhere", "s", None, "test").await.unwrap();
    let run = api.app.store.enqueue(new_run(repo.id), "test").await.unwrap();
    let (status, body) = api.call("POST", &format!("/api/v1/runs/{}/rerun", run.id), Some("tdm_test"), "{}").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")), "{body}");
    api.app.store.claim_next().await.unwrap();
    api.app.store.finish(run.id, store::RunStatus::Failure, None, None).await.unwrap();
    let (status, body) = api.call("POST", &format!("/api/v1/runs/{}/rerun", run.id), Some("tdm_test"), "{}").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (_, shown) = api.get(&format!("/api/v1/runs/{}", body["id"])).await;
    assert_eq!((shown["run_attempt"].as_i64(), shown["rerun_of"].as_i64()), (Some(2), Some(run.id)), "{shown}");
    // --failed without a report of failed jobs has nothing to run again.
    let (status, body) =
        api.call("POST", &format!("/api/v1/runs/{}/rerun", run.id), Some("tdm_test"), r#"{"failed": true}"#).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("nothing_failed")), "{body}");
}

#[tokio::test]
async fn a_runs_token_reads_the_api_while_it_runs_and_changes_nothing() {
    let api = Api::new().await;
    let repo = api.app.store.add_repo("app", "/nowhere", "s", None, "test").await.unwrap();
    let run = api.app.store.enqueue(new_run(repo.id), "test").await.unwrap();
    let token = exec::engine::run_token();
    let path = format!("/api/v1/runs/{}", run.id);
    assert_eq!(api.call("GET", &path, Some(&token), "").await.0, StatusCode::UNAUTHORIZED);
    api.app.run_tokens.register(&token, run.id);
    let (status, body) = api.call("GET", &path, Some(&token), "").await;
    assert_eq!((status, body["id"].as_i64()), (StatusCode::OK, Some(run.id)), "{body}");
    let (status, body) = api.call("POST", &format!("{path}/cancel"), Some(&token), "{}").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("may only read"), "{body}");
    // Once the run has ended, its token is worth nothing.
    api.app.run_tokens.forget(&token);
    assert_eq!(api.call("GET", &path, Some(&token), "").await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn credentials_in_a_repository_url_are_never_shown_or_recorded() {
    let api = Api::new().await;
    api.app.store.add_repo("app", "https://ana:ghp_T0ken@git.example/team/app.git", "s", None, "test").await.unwrap();
    let (_, repos) = api.get("/api/v1/repos").await;
    assert_eq!(repos["repos"][0]["source"], "https://ana:***@git.example/team/app.git", "{repos}");
    let (_, events) = api.get("/api/v1/events").await;
    assert!(!events.to_string().contains("ghp_T0ken"), "{events}");
    assert!(events.to_string().contains("https://ana:***@git.example"), "{events}");
    // A row from before the vault: its password moves there at start, and git gets it as a
    // header for that URL through its environment.
    // Two: the URL's password and the webhook secret, both in the row in clear.
    assert_eq!(server::credentials::seal_clear(&api.app).await.unwrap(), 2);
    let repo = api.app.store.repo("app").await.unwrap();
    assert_eq!(repo.source, "https://ana:***@git.example/team/app.git");
    let (url, env) = server::credentials::remote(&api.app, &repo).await.unwrap();
    assert_eq!(url, "https://git.example/team/app.git");
    let header = format!("Authorization: Basic {}", server::encoding::base64(b"ana:ghp_T0ken"));
    assert!(env.contains(&("GIT_CONFIG_VALUE_0".to_string(), header)), "{env:?}");
    assert!(env.contains(&("GIT_CONFIG_KEY_0".to_string(), format!("http.{url}.extraHeader"))), "{env:?}");
    // Adding one that cannot be reached: the error names the URL without its credentials.
    let body = r#"{"source": "https://bo:s3cret-pass@127.0.0.1:9/x.git", "name": "x"}"#;
    let (_, answer) = api.call("POST", "/api/v1/repos", Some("tdm_test"), body).await;
    assert!(answer["warning"].as_str().unwrap().contains("cannot clone https://127.0.0.1:9/x.git"), "{answer}");
    assert_eq!(answer["repo"]["source"], "https://bo:***@127.0.0.1:9/x.git", "{answer}");
    assert!(!answer.to_string().contains("s3cret-pass"), "{answer}");
    // A password git could only be given as an argument is refused.
    let body = r#"{"source": "ssh://bo:s3cret-pass@127.0.0.1/x.git", "name": "z"}"#;
    let (status, answer) = api.call("POST", "/api/v1/repos", Some("tdm_test"), body).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_source")), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("SSH key"), "{answer}");
    // A source git would read as an option is refused before git sees it.
    let body = r#"{"source": "--upload-pack=touch /tmp/x;://h/x.git", "name": "y"}"#;
    let (status, answer) = api.call("POST", "/api/v1/repos", Some("tdm_test"), body).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_source")), "{answer}");
}

#[tokio::test]
async fn sign_in_is_refused_for_a_while_after_five_wrong_passwords() {
    let api = Api::new().await;
    let hash = server::hash_password("the-right-password").unwrap();
    api.app.store.add_user("ana", &hash, "test").await.unwrap();
    let sign_in = |password: &str| {
        let body = format!("user=ana&password={password}&next=/");
        Request::builder()
            .method("POST")
            .uri("/signin")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap()
    };
    let location = |response: &axum::response::Response| {
        response.headers().get("location").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
    };
    for _ in 0..5 {
        let response = server::router(api.app.clone()).oneshot(sign_in("wrong")).await.unwrap();
        assert!(location(&response).contains("error=The%20user%20name"), "{}", location(&response));
    }
    // The sixth try, with the right password, is refused without being checked.
    let response = server::router(api.app.clone()).oneshot(sign_in("the-right-password")).await.unwrap();
    assert!(response.headers().get("set-cookie").is_none());
    assert!(location(&response).contains("Too%20many%20failed%20sign-ins%20for%20ana"), "{}", location(&response));
    let (_, events) = api.get("/api/v1/events?limit=1000").await;
    let kinds: Vec<&str> = events["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "session.refused").count(), 5);
    assert!(kinds.contains(&"session.throttled"), "{kinds:?}");
}

#[tokio::test]
async fn answers_read_as_the_api_types_and_bad_query_parameters_are_json_errors() {
    let api = Api::new().await;
    let repo = api.app.store.add_repo("app", "/nowhere", "s", None, "test").await.unwrap();
    let run = api.app.store.enqueue(new_run(repo.id), "test").await.unwrap();
    api.app.store.claim_next().await.unwrap();
    let report = serde_json::json!({"workflow": "ci", "status": "failure", "duration": 1.5, "artifacts": [], "artifacts_dir": "/x",
        "jobs": [{"id": "build", "name": "build", "status": "failure", "started_at_ms": 1, "duration": 1.25, "summary": "",
                  "error": "exit 1", "outputs": {}, "steps": [{"name": "make", "status": "failure", "outcome": "failure", "started_at_ms": 1, "duration": 1.0}]}]});
    api.app.store.finish(run.id, store::RunStatus::Failure, Some("exit 1".into()), Some(report)).await.unwrap();

    let (status, body) = api.get("/api/v1/runs?status=failure").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list: api::RunList = serde_json::from_value(body).unwrap();
    assert_eq!(list.runs.iter().map(|r| (r.id, r.status)).collect::<Vec<_>>(), [(run.id, store::RunStatus::Failure)]);
    let (_, body) = api.get(&format!("/api/v1/runs/{}", run.id)).await;
    let detail: api::RunDetail = serde_json::from_value(body).unwrap();
    let report = detail.report.expect("the stored report reads as a RunReport");
    assert_eq!((report.jobs[0].id.as_str(), report.jobs[0].steps[0].name.as_str()), ("build", "make"));
    assert_eq!(detail.run.git_ref, "refs/heads/main");

    // An unknown status is refused with a stable code, as every other error.
    let (status, body) = api.get("/api/v1/runs?status=exploded").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{body}");
    let (status, body) = api.get("/api/v1/events?limit=many").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{body}");
}

/// A 30-day 99.9% SLO on an environment's requests, fed with proxy counters scraped every 15 s.
fn requests_slo(min_events: f64) -> server::monitor::slos::SloState {
    let spec = spec::monitors::SloSpec {
        name: "availability".into(),
        span: spec::Span::at(1, 1, 1),
        objective: 0.999,
        window_ms: 30 * 86_400_000,
        sli: spec::monitors::Sli::Requests,
        min_events,
    };
    let scope = server::monitor::Scope { service: Some("shop".into()), environment: Some("production".into()) };
    let mut state = server::monitor::slos::SloState::new(scope, spec);
    state.watched_since = 0;
    state
}

/// Two hours of traffic at `per_scrape` requests a scrape, failing `error_ratio` in the last hour.
fn feed(db: &metrics::Db, per_scrape: f64, error_ratio: f64) -> i64 {
    let labels = |class: &str| {
        metrics::Labels::new(
            [
                ("__name__", "tandem_proxy_requests_total"),
                ("service", "shop"),
                ("environment", "production"),
                ("version", "stable"),
                ("class", class),
            ]
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        )
    };
    let (mut ok, mut bad) = (0.0, 0.0);
    let start = 1_800_000_000_000i64;
    let mut batch = Vec::new();
    for i in 0..480 {
        let ratio = if i >= 240 { error_ratio } else { 0.0 };
        ok += per_scrape * (1.0 - ratio);
        bad += per_scrape * ratio;
        let t = start + i * 15_000;
        batch.push((labels("2xx"), t, ok));
        batch.push((labels("5xx"), t, bad));
    }
    db.append(&batch).unwrap();
    start + 479 * 15_000
}

#[test]
fn burn_rate_alerts_fire_on_a_fast_burn_not_on_one_failure_of_a_quiet_service() {
    use server::monitor::slos::evaluate_one;
    let dir = tempfile::tempdir().unwrap();
    let db = metrics::Db::open(dir.path(), metrics::Options::default()).unwrap();
    let now = feed(&db, 100.0, 0.02);
    let mut slo = requests_slo(10.0);
    evaluate_one(&db, &mut slo, now);
    let status = slo.status.clone().unwrap();
    let burn = |w: u64| status.burn.iter().find(|(window, _)| *window == w).unwrap().1.unwrap();
    // 2% errors against a 0.1% budget: 20× over the last hour and the last 5 minutes.
    assert!((burn(3_600_000) - 20.0).abs() < 0.5, "{status:?}");
    assert!((burn(300_000) - 20.0).abs() < 0.5, "{status:?}");
    // Over two hours of data half of it clean: about 1% errors, ten times the allowed ratio.
    let left = status.budget_remaining.unwrap();
    assert!((left - (1.0 - 10.0)).abs() < 0.5, "{left}");
    assert_eq!(status.exhaustion_seconds, Some(0.0), "the budget is overspent");
    let firing: Vec<(&str, u64)> =
        slo.alerts.iter().filter(|a| a.firing_since.is_some()).map(|a| (a.severity, a.long_ms)).collect();
    // 14.4× over 1 h and 5 m; over the 6 h and 3 d windows the two hours of data burn 10× (the
    // clean hour halves it), above 6× and 1×: every burn alert fires, the absence alert does not.
    assert_eq!(firing, [("page", 3_600_000), ("page", 21_600_000), ("ticket", 259_200_000)], "{:#?}", slo.alerts);

    // A quiet service: one failed request of three in the last hour is not a page.
    let dir = tempfile::tempdir().unwrap();
    let db = metrics::Db::open(dir.path(), metrics::Options::default()).unwrap();
    let now = feed(&db, 0.0125, 0.3);
    let mut slo = requests_slo(10.0);
    evaluate_one(&db, &mut slo, now);
    assert!(slo.alerts.iter().all(|a| a.firing_since.is_none()), "{:#?}", slo.alerts);

    // No data at all: the SLI's absence is the alert.
    let dir = tempfile::tempdir().unwrap();
    let db = metrics::Db::open(dir.path(), metrics::Options::default()).unwrap();
    let mut slo = requests_slo(10.0);
    evaluate_one(&db, &mut slo, 1_800_000_000_000);
    let firing: Vec<&str> = slo.alerts.iter().filter(|a| a.firing_since.is_some()).map(|a| a.name.as_str()).collect();
    assert_eq!(firing, ["SLODataAbsent"]);
    assert_eq!(slo.status.unwrap().budget_remaining, None);
}

#[test]
fn the_live_page_fires_within_seconds_of_proxied_failures_and_resolves_after_the_fix() {
    use server::monitor::slos::{LIVE_ALERT, evaluate_one};
    let mut slo = requests_slo(10.0);
    let live =
        |slo: &server::monitor::slos::SloState| slo.alerts.iter().find(|a| a.name == LIVE_ALERT).cloned().unwrap();
    assert_eq!(live(&slo).severity, "page");
    let start = slo.live.as_ref().expect("a requests SLI of an environment is watched live").last_second + 1;
    // A minute of healthy traffic at 100 requests a second.
    let healthy: Vec<(u64, u64, u64)> = (0..60).map(|i| (start + i, 100, 0)).collect();
    slo.feed(&healthy, 1_000);
    assert_eq!(live(&slo).firing_since, None);
    // 10% of requests fail: the page fires at the third second, with its evidence.
    for i in 0..3u64 {
        slo.feed(&[(start + 60 + i, 100, 10)], 2_000 + i as i64);
    }
    let page = live(&slo);
    assert_eq!(page.firing_since, Some(2_002), "{page:#?}");
    assert!(
        page.summary
            .contains("30 of 1000 requests through the proxy failed in the last 10 s (3.0%; it pages above 1.44%"),
        "{}",
        page.summary
    );
    // A second already given is not counted again, and the windowed evaluation leaves the live
    // page to the live test.
    slo.feed(&healthy, 3_000);
    let dir = tempfile::tempdir().unwrap();
    let db = metrics::Db::open(dir.path(), metrics::Options::default()).unwrap();
    evaluate_one(&db, &mut slo, 1_800_000_000_000);
    assert_eq!(live(&slo).firing_since, Some(2_002));
    // Fixed: three healthy seconds resolve it.
    for i in 0..3u64 {
        slo.feed(&[(start + 63 + i, 100, 0)], 4_000 + i as i64);
        assert_eq!(live(&slo).firing_since.is_none(), i == 2, "second {i}");
    }
    assert!(live(&slo).summary.contains("back under the page rate"), "{}", live(&slo).summary);

    // A probe's SLI has no live traffic to judge.
    let spec = spec::monitors::SloSpec { sli: spec::monitors::Sli::Probe("home".into()), ..requests_slo(1.0).spec };
    let probe = server::monitor::slos::SloState::new(requests_slo(1.0).scope, spec);
    assert!(probe.live.is_none() && probe.alerts.iter().all(|a| a.name != LIVE_ALERT));
}

#[test]
fn an_alerting_rule_goes_pending_firing_and_resolved_and_a_recording_rule_writes_its_series() {
    use server::monitor::rules::{GroupState, expand};
    let dir = tempfile::tempdir().unwrap();
    let db = metrics::Db::open(dir.path(), metrics::Options::default()).unwrap();
    let source = "groups:\n  - name: api\n    interval: 15s\n    rules:\n      - record: job:errors:sum\n        expr: sum by (job) (errors)\n      - alert: TooManyErrors\n        expr: job:errors:sum > 5\n        for: 30s\n        keep_firing_for: 15s\n        labels: { severity: page }\n        annotations: { summary: '{{ $labels.job }} has {{ $value }} errors' }\n";
    let (file, diagnostics) = spec::rules::parse(source);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let group = file.unwrap().groups.remove(0);
    let mut state = GroupState::new("rules.yml".into(), group, 0);
    let errors = || metrics::Labels::new(vec![("__name__".into(), "errors".into()), ("job".into(), "api".into())]);
    let mut kinds = Vec::new();
    // Errors climb past 5 at 30 s, stay there, and fall back at 120 s.
    for (step, value) in [1.0, 2.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 0.0, 0.0, 0.0].iter().enumerate() {
        let t = step as i64 * 15_000;
        db.append(&[(errors(), t, *value)]).unwrap();
        let (samples, events) = state.evaluate(&db, t);
        db.append(&samples).unwrap();
        kinds.extend(
            events.iter().map(|(kind, payload)| (t / 1000, *kind, payload["summary"].as_str().map(str::to_string))),
        );
    }
    // Recorded at 30 s; 15 s later the recording rule's own series reaches the alert (pending),
    // `for: 30s` after that it fires, and it resolves 15 s after the condition ends.
    assert_eq!(
        kinds,
        [
            (45, "alert.pending", Some("api has 9 errors".to_string())),
            (75, "alert.firing", Some("api has 9 errors".to_string())),
            (150, "alert.resolved", Some("api has 9 errors".to_string())),
        ]
    );
    let recorded = db.select(&[metrics::Match::Equal("__name__".into(), "job:errors:sum".into())], 0, i64::MAX);
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].labels.get("job"), "api");
    let labels = metrics::Labels::new(vec![("instance".into(), "a:1".into())]);
    assert_eq!(
        expand("{{ $labels.instance }} at {{ .Value | humanize }} ({{ .Labels.none }})", &labels, 0.5),
        "a:1 at 0.5 ()"
    );
}

#[test]
fn an_openslo_ratio_slo_is_evaluated_over_the_store() {
    let source = "apiVersion: openslo/v1\nkind: SLO\nmetadata: { name: checkout }\nspec:\n  service: shop\n  indicator:\n    metadata: { name: ok }\n    spec:\n      ratioMetric:\n        counter: true\n        good: { metricSource: { type: Prometheus, spec: { query: 'sum(http_requests_total{code=\"200\"})' } } }\n        total: { metricSource: { type: Prometheus, spec: { query: 'sum(http_requests_total)' } } }\n  timeWindow: [{ duration: 1d, isRolling: true }]\n  objectives: [{ target: 0.99 }]\n";
    let (found, _) = spec::openslo::parse(source);
    let spec = found[0].slo.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = metrics::Db::open(dir.path(), metrics::Options::default()).unwrap();
    let labels = |code: &str| {
        metrics::Labels::new(vec![("__name__".into(), "http_requests_total".into()), ("code".into(), code.into())])
    };
    // An hour at 100 requests a minute, 5% of them failing.
    let start = 1_800_000_000_000i64;
    let batch: Vec<_> = (0..=60)
        .flat_map(|m| {
            [(labels("200"), start + m * 60_000, m as f64 * 95.0), (labels("500"), start + m * 60_000, m as f64 * 5.0)]
        })
        .collect();
    db.append(&batch).unwrap();
    let mut state = server::monitor::slos::SloState::new(server::monitor::Scope::default(), spec);
    server::monitor::slos::evaluate_one(&db, &mut state, start + 60 * 60_000);
    let status = state.status.unwrap();
    assert!((status.sli.unwrap() - 0.95).abs() < 0.005, "{status:?}");
    let hour = status.burn.iter().find(|(w, _)| *w == 3_600_000).unwrap().1.unwrap();
    assert!((hour - 5.0).abs() < 0.3, "5% errors against a 1% budget burns 5×: {hour}");
    // Every evaluable SLO of the corpus translates to PromQL Tandem parses.
    let Some(dir) =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/openslo").canonicalize().ok()
    else {
        assert!(std::env::var_os("TANDEM_REQUIRE_CORPUS").is_none(), "the corpus is missing");
        return;
    };
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for slo in spec::openslo::parse(&text).0.into_iter().filter_map(|o| o.slo) {
            let spec::monitors::Sli::Ratio { good, total } = slo.sli else { continue };
            for query in [good, total] {
                let query = query.replace("$window", "5m");
                assert!(metrics::promql::parse(&query).is_ok(), "{query}");
            }
        }
    }
}

#[test]
fn insights_forecast_a_filling_disk_and_flag_traffic_unusual_for_the_time_of_day() {
    use server::monitor::Scope;
    use server::monitor::insights::evaluate;
    let dir = tempfile::tempdir().unwrap();
    let db = metrics::Db::open(dir.path(), metrics::Options::default()).unwrap();
    let now = 1_800_000_000_000i64;
    let name = |n: &str| metrics::Labels::new(vec![("__name__".into(), n.into())]);
    // 10 GB free, losing 2 GB an hour for the last six hours: empty in five hours.
    let disk: Vec<_> =
        (0..=360).map(|m| (name("disk_free_bytes"), now - (360 - m) * 60_000, 22e9 - m as f64 / 60.0 * 2e9)).collect();
    db.append(&disk).unwrap();
    let spec = spec::monitors::ForecastSpec {
        name: "disk-full".into(),
        query: "disk_free_bytes".into(),
        limit: 0.0,
        window_ms: 6 * 3_600_000,
        within_ms: 24 * 3_600_000,
    };
    // Eight days of a proxy's requests at 100 a second, steady; the last ten minutes at 300.
    let labels = metrics::Labels::new(
        [
            ("__name__", "tandem_proxy_requests_total"),
            ("service", "shop"),
            ("environment", "production"),
            ("version", "stable"),
            ("class", "2xx"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect(),
    );
    let mut total = 0.0;
    let mut batch = Vec::new();
    let start = now - 8 * 86_400_000;
    let mut t = start;
    while t <= now {
        let rate = if t > now - 600_000 { 300.0 } else { 100.0 + 5.0 * ((t / 60_000) % 7) as f64 };
        total += rate * 60.0;
        batch.push((labels.clone(), t, total));
        t += 60_000;
    }
    db.append(&batch).unwrap();
    let environment = Scope { service: Some("shop".into()), environment: Some("production".into()) };
    let found = evaluate(&db, &[(Scope::default(), spec)], &[environment], now);
    let forecast = found.iter().find(|i| i.kind == "forecast").expect("the disk forecast");
    let seconds = forecast.evidence["seconds_to_limit"].as_f64().unwrap();
    assert!((seconds / 3600.0 - 5.0).abs() < 0.05, "{forecast:?}");
    assert!(forecast.summary.contains("5.0 h"), "{}", forecast.summary);
    let anomaly = found.iter().find(|i| i.kind == "anomaly").expect("the traffic anomaly");
    assert_eq!(anomaly.name, "request rate", "{anomaly:?}");
    assert!(anomaly.evidence["score"].as_f64().unwrap() > 3.5, "{anomaly:?}");
    assert!(!found.iter().any(|i| i.name == "error ratio"), "no errors, no error-ratio anomaly: {found:#?}");
}
