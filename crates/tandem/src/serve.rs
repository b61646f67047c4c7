//! `tandem server`, `tandem up` (server + demo repository + first run), and the commands that work
//! on a data directory directly: `audit verify`, `token create`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use server::{ServerConfig, Started};
use store::{SqliteStore, Store};

use crate::Format;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  tandem server\n  tandem server --data ./data --listen 127.0.0.1:8080")]
pub struct ServerArgs {
    /// Data directory: database, repository mirrors, run scratch space.
    #[arg(long, env = "TANDEM_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Address to serve the API on.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Runs executed at once.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub parallel_runs: usize,
    /// Jobs at once within a run (default: the number of cores).
    #[arg(short = 'j', long = "parallel", value_name = "N")]
    pub parallel: Option<usize>,
    /// A monitors file: probes and SLOs of services Tandem does not deploy (read again every 15 s).
    #[arg(long, env = "TANDEM_MONITORS", value_name = "FILE")]
    pub monitors: Option<PathBuf>,
    /// Prometheus rule files (or directories of them) to evaluate; repeat for more.
    #[arg(long = "rules", value_name = "PATH")]
    pub rules: Vec<PathBuf>,
    /// How often to scrape targets, record Tandem's own figures and evaluate SLOs (whole seconds).
    #[arg(long, default_value = "15s", value_parser = parse_interval, value_name = "DURATION")]
    pub scrape_interval: std::time::Duration,
    /// A Prometheus remote-write URL every stored sample is also sent to; repeat for more.
    #[arg(long = "remote-write", value_name = "URL")]
    pub remote_write: Vec<String>,
    /// An Alertmanager configuration file: the route tree, receivers (webhooks) and inhibition rules.
    #[arg(long, value_name = "FILE")]
    pub alertmanager_config: Option<PathBuf>,
    /// An on-call file: people, schedules (rotations, layers) and escalation policies that page
    /// for incidents; email goes through the Alertmanager configuration's SMTP server.
    #[arg(long, value_name = "FILE")]
    pub oncall: Option<PathBuf>,
    #[command(flatten)]
    pub actions: crate::run::ActionArgs,
    /// Sign-in with an OpenID Connect provider (its issuer URL); the client secret comes from
    /// TANDEM_OIDC_CLIENT_SECRET.
    #[arg(long, env = "TANDEM_OIDC_ISSUER", value_name = "URL", requires = "oidc_client_id")]
    pub oidc_issuer: Option<String>,
    /// The client id registered with the provider (its redirect URI: http://ADDR/signin/oidc/callback).
    #[arg(long, env = "TANDEM_OIDC_CLIENT_ID", value_name = "ID")]
    pub oidc_client_id: Option<String>,
    /// The role on `*` of a person who signs in with the provider for the first time.
    #[arg(long, default_value = "viewer", value_name = "ROLE", value_parser = ["viewer", "developer", "maintainer", "admin"])]
    pub oidc_default_role: String,
    /// The redirect URI registered with the provider, when the server is reached at another address.
    #[arg(long, value_name = "URL")]
    pub oidc_redirect_url: Option<String>,
    /// An OSV export (a directory of OSV records) every push's lock files are checked against.
    #[arg(long, env = "TANDEM_OSV", value_name = "DIR")]
    pub osv: Option<PathBuf>,
}

fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    match spec::service::parse_duration(text) {
        Some(ms) if ms >= 1000 && ms % 1000 == 0 => Ok(std::time::Duration::from_millis(ms)),
        _ => Err(format!("`{text}` is not a whole number of seconds such as 15s or 1m")),
    }
}

fn config(args: &ServerArgs) -> ServerConfig {
    ServerConfig {
        data_dir: args.data.clone().unwrap_or_else(crate::run::default_data_dir),
        listen: args.listen,
        max_parallel_runs: args.parallel_runs.max(1),
        max_parallel_jobs: args.parallel.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        max_attempts: 2,
        monitors: args.monitors.clone(),
        rules: args.rules.clone(),
        scrape_interval: args.scrape_interval,
        remote_write: args.remote_write.clone(),
        alertmanager: args.alertmanager_config.clone(),
        oncall: args.oncall.clone(),
        actions: args.actions.options(),
        oidc: args.oidc_issuer.as_ref().map(|issuer| server::OidcConfig {
            issuer: issuer.clone(),
            client_id: args.oidc_client_id.clone().unwrap_or_default(),
            client_secret: std::env::var("TANDEM_OIDC_CLIENT_SECRET").unwrap_or_default(),
            default_role: args.oidc_default_role.clone(),
            redirect_url: args.oidc_redirect_url.clone().unwrap_or_default(),
        }),
        osv: args.osv.clone(),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

/// Ctrl-C, or SIGTERM (what systemd and `docker stop` send): either stops the server the same way,
/// with every instance it runs.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(error) => {
            eprintln!("warning: cannot listen for SIGTERM ({error}); only Ctrl-C stops the server cleanly");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    eprintln!("\nstopping…");
}

fn print_token(started: &Started) {
    match &started.admin_token {
        Some(token) => {
            println!("admin token (shown once, stored hashed): {token}");
        }
        None => println!(
            "admin token: created on this data directory's first start (make another with `tandem token create NAME`)"
        ),
    }
    if let Some(password) = &started.admin_password {
        println!("web sign-in: user admin, password {password} (shown once, stored as an Argon2id hash)");
    }
}

pub fn server(args: ServerArgs) -> Result<i32> {
    let config = config(&args);
    runtime()?.block_on(async move {
        let data = config.data_dir.clone();
        let started = server::start(config, shutdown_signal()).await?;
        println!("Tandem is serving http://{} (data: {})", started.addr, data.display());
        print_token(&started);
        started.served.await.context("the server task failed")?;
        Ok(0)
    })
}

pub fn up(args: ServerArgs) -> Result<i32> {
    let config = config(&args);
    runtime()?.block_on(async move {
        let data = config.data_dir.clone();
        let started = server::start(config, shutdown_signal()).await?;
        let url = format!("http://{}", started.addr);
        let (demo, fresh) = create_demo_repository(&data).await?;
        let app = &started.app;
        let repo = match app.store.repo("sample-service").await {
            Ok(repo) => repo,
            Err(_) => {
                let secret = server::random_secret()?;
                let repo = app
                    .store
                    .add_repo("sample-service", &demo.to_string_lossy(), &secret, Some(5), "tandem up")
                    .await?;
                // A secret for the demo's deploy job: sealed in the vault, masked in the log.
                let value = format!("demo-{}", server::random_secret()?);
                let sealed = app.vault().map_err(anyhow::Error::msg)?.seal(
                    "repo/sample-service",
                    "DEMO_API_KEY",
                    value.as_bytes(),
                );
                app.store
                    .set_secret(
                        "secret",
                        "repo/sample-service",
                        "DEMO_API_KEY",
                        &sealed.map_err(anyhow::Error::msg)?,
                        "tandem up",
                    )
                    .await?;
                repo
            }
        };
        let mirror_ok = trigger_first_run(app, &repo).await;
        println!("\nTandem is up at {url}");
        println!(
            "sign in to the web pages: {} (once, within 15 minutes; later with the admin token)",
            server::signin_link(app, "admin")
        );
        println!("data directory: {}", data.display());
        print_token(&started);
        println!("demo repository: {} (watched: commits there start runs)", demo.display());
        match mirror_ok {
            Ok(ids) => {
                println!("first run queued: {}", ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", "))
            }
            Err(error) => println!("the first run could not be queued: {error}"),
        }
        let token = started.admin_token.clone().unwrap_or_else(|| "<your token>".to_string());
        println!("\nNext, in another terminal:");
        println!("  export TANDEM_URL={url} TANDEM_TOKEN={token}");
        println!("  tandem runs list");
        println!("  tandem runs logs 1 --follow");
        println!(
            "  cd {} && echo '# change' >> README.md && git commit -qam change   # a new run starts",
            demo.display()
        );
        println!("  tandem deployments list            # what reached staging, and what was rolled back");
        println!("  tandem environments                # each environment's stable release and proxy");
        println!("  tandem service show sample-service # SLO, probe, traffic and errors, deployments on one axis");
        println!("  tandem slo list                    # error budget and burn rates; `tandem alerts` for what fires");
        println!("  tandem incident list               # what paged, the suspect deployment, MTTA and MTTR");
        println!("  tandem dora                        # delivery figures from the same event log");
        println!("  tandem secret list --repository sample-service   # the demo's secret, by name only");
        println!("  tandem audit verify --data {}", data.display());
        if fresh {
            if let Err(error) = crate::demo::start_pager(&started.app).await {
                println!("the demo's on-call webhook cannot start: {error:#}");
            }
            println!("\nThe demo deploys sample-service to staging, then ships a good change and a bad one:");
            let (story_url, story_token, site) = (url.clone(), token.clone(), data.join("demo/sample-site"));
            let (started_app, demo_dir) = (started.app.clone(), demo.clone());
            tokio::spawn(async move {
                demo_story(started_app, demo_dir).await;
                if let Err(error) = crate::demo::code_story(&story_url, &story_token, &site).await {
                    println!("demo: the code review part did not start: {error:#}");
                }
            });
        }
        println!("\nPress Ctrl-C to stop.");
        started.served.await.context("the server task failed")?;
        Ok(0)
    })
}

async fn trigger_first_run(app: &server::App, repo: &store::Repo) -> Result<Vec<i64>> {
    if !app.store.runs(store::RunFilter { repo_id: Some(repo.id), limit: 1, ..Default::default() }).await?.is_empty() {
        return Ok(Vec::new());
    }
    queue_head(app, repo).await
}

/// Queues the runs a push of the demo's `main` starts.
async fn queue_head(app: &server::App, repo: &store::Repo) -> Result<Vec<i64>> {
    let mirror = server::sync_mirror(app, repo).await.map_err(anyhow::Error::msg)?;
    let sha = server::git_output(&mirror, &["rev-parse", "refs/heads/main"]).await.map_err(anyhow::Error::msg)?;
    let sha = sha.trim().to_string();
    let (change, payload) = server::push_change(repo, "refs/heads/main", &"0".repeat(40), &sha);
    let ids =
        match server::queue_change(app, repo, Some(&change), &payload, server::Origin::Direct, "tandem up").await? {
            store::Delivery::Stored(ids) => ids,
            store::Delivery::Duplicate => Vec::new(),
        };
    app.store.set_ref(repo.id, "refs/heads/main", &sha).await?;
    Ok(ids)
}

const DEMO_SERVICE: &str = r#""""A small HTTP service: GET /health and GET /greet?name=..."""
import itertools
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


# Every n-th greeting fails (0: never). The demo's bad release sets it to 2.
ERRORS_EVERY = 0
greetings = itertools.count(1)


def greeting(name):
    return f"Hello, {name.strip() or 'world'}!"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/health":
            body, status = {"status": "ok"}, 200
        elif url.path == "/greet" and ERRORS_EVERY and next(greetings) % ERRORS_EVERY == 0:
            body, status = {"error": "a bug"}, 500
        elif url.path == "/greet":
            name = parse_qs(url.query).get("name", [""])[0]
            body, status = {"message": greeting(name)}, 200
        else:
            body, status = {"error": "not found"}, 404
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def serve(port=0):
    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


if __name__ == "__main__":
    server = serve(int(os.environ.get("PORT", "8000")))
    print("listening on", server.server_address)
    server.serve_forever()
"#;

const DEMO_TESTS: &str = r#"import json
import threading
import unittest
import urllib.request

import service


class ServiceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = service.serve(0)
        cls.port = cls.server.server_address[1]
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}") as response:
            return json.load(response)

    def test_health(self):
        self.assertEqual(self.get("/health"), {"status": "ok"})

    def test_greeting(self):
        self.assertEqual(self.get("/greet?name=Ada")["message"], "Hello, Ada!")
        self.assertEqual(service.greeting("  "), "Hello, world!")


if __name__ == "__main__":
    unittest.main()
"#;

const DEMO_SERVICE_FILE: &str = r#"service: sample-service
environments:
  staging:
    target: process
    command: python3 service.py
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
    probes:
      greet:
        http: /greet?name=probe
        interval: 5s
        expect-body: Hello
    slos:
      # A strict objective and a one-day window, so that the burn of a few seconds of canary
      # errors pages at demo speed; real services use 99.9% (or what users need) over 30d.
      availability:
        objective: 99.99%
        window: 1d
"#;

const DEMO_WORKFLOW: &str = r#"name: sample-service
on:
  push:
    branches: [main]
  pull_request:
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: Compile
        id: compile
        uses: ./.github/actions/python-check
        with:
          files: service.py test_service.py
      - run: echo "compiled with ${{ steps.compile.outputs.python }}"
      - name: Package
        run: mkdir -p dist && cp service.py dist/ && echo "version=$(git rev-parse --short HEAD)" >> "$GITHUB_OUTPUT"
        id: package
      - uses: actions/upload-artifact@v4
        with:
          name: service
          path: dist/
    outputs:
      version: ${{ steps.package.outputs.version }}
  test:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: Unit tests
        run: python3 -m unittest -v test_service.py
  deploy:
    needs: test
    if: github.event_name == 'push'
    runs-on: ubuntu-latest
    environment: staging
    steps:
      - run: echo "tests passed; Tandem deploys ${{ github.sha }} to staging when this job succeeds"
      - run: echo "the deploy key (a secret from the vault) shows masked as $KEY"
        env:
          KEY: ${{ secrets.DEMO_API_KEY }}
      - run: echo '### sample-service ${{ needs.build.outputs.version }} passed its tests' >> "$GITHUB_STEP_SUMMARY"
"#;

/// A composite action of the demo repository: actions run as GitHub's runner runs them.
const DEMO_ACTION: &str = r#"name: python-check
description: Compile Python files and say which Python did it
inputs:
  files:
    description: The files to compile
    required: true
outputs:
  python:
    description: The Python version
    value: ${{ steps.version.outputs.python }}
runs:
  using: composite
  steps:
    - shell: bash
      run: python3 -m py_compile ${{ inputs.files }}
    - id: version
      shell: bash
      run: echo "python=$(python3 --version)" >> "$GITHUB_OUTPUT"
"#;

/// The demo repository under the data directory: a small Python service, its tests, and a
/// workflow that builds and tests it. Created once.
async fn create_demo_repository(data: &Path) -> Result<(PathBuf, bool)> {
    let dir = data.join("demo").join("sample-service");
    if dir.join(".git").exists() {
        return Ok((dir, false));
    }
    std::fs::create_dir_all(dir.join(".tandem/workflows"))?;
    std::fs::write(dir.join("service.py"), DEMO_SERVICE)?;
    std::fs::write(dir.join("test_service.py"), DEMO_TESTS)?;
    std::fs::write(dir.join(".tandem/workflows/ci.yml"), DEMO_WORKFLOW)?;
    std::fs::create_dir_all(dir.join(".github/actions/python-check"))?;
    std::fs::write(dir.join(".github/actions/python-check/action.yml"), DEMO_ACTION)?;
    std::fs::write(dir.join(".tandem/service.yml"), DEMO_SERVICE_FILE)?;
    std::fs::write(dir.join("README.md"), "# sample-service\n\nA demo service that Tandem builds and tests.\n")?;
    std::fs::write(dir.join(".gitignore"), "__pycache__/\ndist/\n")?;
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &["-c", "user.name=Tandem", "-c", "user.email=tandem@localhost", "commit", "-qm", "Sample service"],
    ] {
        git::repo::git(&dir, args).await.map_err(|e| anyhow::anyhow!("{e} (in {})", dir.display()))?;
    }
    Ok((dir, true))
}

async fn commit_all(dir: &Path, message: &str) -> Result<()> {
    for args in [
        &["add", "-A"][..],
        &["-c", "user.name=Tandem demo", "-c", "user.email=demo@localhost", "commit", "-qm", message],
    ] {
        git::repo::git(dir, args).await.map_err(|e| anyhow::anyhow!("{e} (in {})", dir.display()))?;
    }
    Ok(())
}

/// The deployment the given runs requested, once it has ended.
async fn ended_deployment(
    app: &server::App,
    wanted: impl Fn(&store::Deployment) -> bool,
    within: std::time::Duration,
) -> Option<store::Deployment> {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        let filter = store::DeploymentFilter { limit: 20, ..Default::default() };
        let found = app.store.deployments(filter).await.ok()?.into_iter().find(|d| wanted(d));
        if let Some(deployment) = found.filter(|d| d.status.is_finished()) {
            return Some(deployment);
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    None
}

fn tell(deployment: &store::Deployment, since: std::time::Instant) {
    let mark = if deployment.status == store::DeploymentStatus::Promoted { "✓" } else { "✗" };
    let reason = deployment.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    println!(
        "demo: {mark} deployment {} of release {} {} {:.1} s after the commit{reason}",
        deployment.id,
        deployment.release,
        deployment.status.as_str().replace('_', " "),
        since.elapsed().as_secs_f64()
    );
}

/// A change the demo makes to its repository.
type DemoChange = fn(&Path) -> std::io::Result<()>;

/// The demo: release 1 reaches staging through its workflow; demo traffic starts; a good
/// change is promoted step by step and a bad one (every 10th request fails) is rolled back.
async fn demo_story(app: std::sync::Arc<server::App>, dir: PathBuf) {
    let minutes = std::time::Duration::from_secs(300);
    let started = std::time::Instant::now();
    let Some(first) = ended_deployment(&app, |d| d.run_id == Some(1), minutes).await else {
        println!("demo: the first release did not reach staging; see `tandem runs logs 1`");
        return;
    };
    tell(&first, started);
    let Ok(Some(staging)) = app.store.environment("sample-service", "staging").await else { return };
    let Some(proxy) = staging.listen else { return };
    println!("demo: staging answers at http://{proxy}/greet?name=you; sending it 50 requests/s of demo traffic");
    tokio::spawn(demo_traffic(proxy));
    let changes: [(&str, DemoChange); 2] = [
        ("Say when the service was released (a good change)", |dir| {
            std::fs::write(dir.join("RELEASES.md"), "- release 2: greetings are unchanged, notes added\n")
        }),
        ("Count greetings (a bad change: every 2nd request fails)", |dir| {
            let path = dir.join("service.py");
            let text = std::fs::read_to_string(&path)?;
            std::fs::write(path, text.replace("ERRORS_EVERY = 0", "ERRORS_EVERY = 2"))
        }),
    ];
    let mut bad = None;
    for (message, change) in changes {
        let committed = std::time::Instant::now();
        let sha = match change(&dir) {
            Ok(()) => match commit_all(&dir, message).await {
                Ok(()) => server::git_output(&dir, &["rev-parse", "HEAD"]).await.map_err(anyhow::Error::msg),
                Err(error) => Err(error),
            },
            Err(error) => Err(error.into()),
        };
        let sha = match sha {
            Ok(sha) => sha.trim().to_string(),
            Err(error) => {
                println!("demo: cannot commit the change: {error:#}");
                return;
            }
        };
        // The server watches the demo repository: the commit starts a run, whose deploy job
        // requests the deployment.
        println!("demo: committed \"{message}\" ({})", &sha[..12]);
        match ended_deployment(&app, |d| d.sha == sha, minutes).await {
            Some(deployment) => {
                tell(&deployment, committed);
                bad = Some(deployment.id);
            }
            None => {
                println!("demo: the change was not deployed; see `tandem runs list`");
                return;
            }
        }
    }
    // The SLO saw the bad canary's errors: its budget burned, a page went out, an incident
    // opened naming the bad deployment; the burn stops after the rollback.
    tokio::time::sleep(app.config.scrape_interval + std::time::Duration::from_secs(2)).await;
    if let Some(line) = slo_line(&app) {
        println!("demo: {line}");
    }
    if let Some(bad) = bad {
        crate::demo::incident_story(&app, bad).await;
    }
    println!("demo: done — see both with `tandem deployments list` and `tandem deployments show 3`;");
    println!("demo: the SLO with `tandem slo show availability`, the probe with `tandem probes`,");
    println!("demo: the incident with `tandem incident show 1`, the team's figures with `tandem dora`");
}

/// The demo SLO in one line: budget left and how fast it burned over the last hour.
fn slo_line(app: &server::App) -> Option<String> {
    let slos = app.monitor.slos.lock().ok()?;
    let slo = slos.iter().find(|s| s.spec.name == "availability")?;
    let status = slo.status.as_ref()?;
    let burn = |w: u64| status.burn.iter().find(|(window, _)| *window == w).and_then(|(_, b)| *b);
    Some(format!(
        "SLO availability ({}%): {:.1}% of the error budget left; burn {:.1}× over the last hour, {:.1}× over the last 5 minutes",
        slo.spec.objective * 100.0,
        status.budget_remaining? * 100.0,
        burn(3_600_000).unwrap_or(0.0),
        burn(300_000).unwrap_or(0.0)
    ))
}

/// Steady demo traffic: 50 GET /greet per second through staging's proxy.
async fn demo_traffic(proxy: String) {
    let Ok(client) = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).build() else { return };
    let url = format!("http://{proxy}/greet?name=demo");
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(20));
    loop {
        tick.tick().await;
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let _ = client.get(url).send().await;
        });
    }
}

#[derive(clap::Args, Debug)]
pub struct DataArgs {
    /// Data directory of a (running or stopped) server.
    #[arg(long, env = "TANDEM_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub(crate) fn open_store(data: &Option<PathBuf>) -> Result<(tokio::runtime::Runtime, SqliteStore)> {
    let data = data.clone().unwrap_or_else(crate::run::default_data_dir);
    let path = server::database_path(&data);
    if !path.exists() {
        bail!("no Tandem database at {}\n  hint: pass the server's data directory with --data", path.display());
    }
    let runtime = runtime()?;
    let store = runtime.block_on(SqliteStore::open(&path))?;
    Ok((runtime, store))
}

/// `tandem audit verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    data: DataArgs,
    /// A checkpoint kept elsewhere (`tandem audit checkpoint`): the log must still hold its event.
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// The signer's public key (hex) to insist on; without it, the key in the checkpoint is used.
    #[arg(long, value_name = "HEX", requires = "checkpoint")]
    public_key: Option<String>,
}

pub fn audit_verify(VerifyArgs { data: args, checkpoint, public_key }: VerifyArgs) -> Result<i32> {
    let (runtime, store) = open_store(&args.data)?;
    let report = runtime.block_on(store.verify_chain())?;
    if let Some(path) = checkpoint {
        use server::checkpoint::Verify;
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let checkpoint: api::Checkpoint =
            serde_json::from_str(&text).with_context(|| format!("{} is not a checkpoint", path.display()))?;
        if let Err(why) = checkpoint.verify_signature(public_key.as_deref()) {
            println!("✗ {}: {why}", path.display());
            return Ok(1);
        }
        let held = runtime.block_on(store.events(checkpoint.seq - 1, 1))?;
        let problem = match held.first() {
            None => Some(format!("the log has no event {} any more (it has {})", checkpoint.seq, report.n_events)),
            Some(event) if event.seq != checkpoint.seq => Some(format!("event {} is missing", checkpoint.seq)),
            Some(event) if event.hash != checkpoint.hash => {
                Some(format!("event {} has another hash than the one signed: the log was rewritten", checkpoint.seq))
            }
            Some(_) => match &report.first_broken {
                Some((seq, why)) if *seq <= checkpoint.seq => Some(format!("the chain breaks at event {seq}: {why}")),
                _ => None,
            },
        };
        match problem {
            Some(why) => {
                println!("✗ checkpoint of event {} (signed by {}): {why}", checkpoint.seq, checkpoint.public_key);
                return Ok(1);
            }
            None => println!(
                "✓ checkpoint of event {} holds: signed by {}, and the log still has that event with that hash",
                checkpoint.seq, checkpoint.public_key
            ),
        }
    }
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        match &report.first_broken {
            None => println!("✓ the event log is intact: {} events, every link verified", report.n_events),
            Some((seq, why)) => {
                println!("✗ the event log is broken at event {seq}: {why} ({} events in all)", report.n_events)
            }
        }
    }
    Ok(if report.first_broken.is_none() { 0 } else { 1 })
}

/// `tandem reap`: ends what a stopped or crashed server left running on a data directory.
pub fn reap(args: DataArgs) -> Result<i32> {
    let data = args.data.clone().unwrap_or_else(crate::run::default_data_dir);
    let reaped = runtime()?.block_on(server::reap(&data)).context("cannot reap")?;
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&reaped)?);
    } else {
        println!(
            "ended {} step and {} instance process group(s); removed {} container(s) and {} service(s)",
            reaped.step_groups, reaped.instance_groups, reaped.containers, reaped.services
        );
    }
    Ok(0)
}
