//! `tandem server`: the durable event log, git triggers, the run queue and its worker, live logs,
//! and the REST API — wired together.

pub mod access;
pub mod alerting;
mod api;
pub mod attest;
pub mod checkpoint;
pub mod code;
pub mod credentials;
pub mod deploy;
pub mod dora;
pub mod encoding;
pub mod incidents;
pub mod monitor;
mod repos;
pub mod scanning;
mod status;
pub mod vault;
mod worker;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use exec::CancelSource;
use sha2::{Digest, Sha256};
use store::{Access, SqliteStore, Store};

pub use api::web::oidc::verify as oidc_verify;
pub use api::{openapi, page_routes, router};
pub use repos::{Origin, QueueError, git as git_output, plan_runs, push_change, push_payload, queue_change};

/// Brings the repository's mirror up to date and returns its path.
pub async fn sync_mirror(app: &App, repo: &store::Repo) -> Result<PathBuf, String> {
    repos::sync(app, repo, None).await
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Runs executed at once.
    pub max_parallel_runs: usize,
    /// Jobs at once within a run.
    pub max_parallel_jobs: usize,
    /// How often a run interrupted by a crash is started again before it fails.
    pub max_attempts: i64,
    /// A monitors file (probes and SLOs of what Tandem does not deploy), read again every 15 s.
    pub monitors: Option<PathBuf>,
    /// Prometheus rule files, or directories of them, read again every scrape interval.
    pub rules: Vec<PathBuf>,
    /// How often targets are scraped and SLOs evaluated (whole seconds; 15 s by default).
    pub scrape_interval: std::time::Duration,
    /// Prometheus remote-write receivers every stored sample is also sent to.
    pub remote_write: Vec<String>,
    /// An Alertmanager configuration: how alerts are routed to receivers.
    pub alertmanager: Option<PathBuf>,
    /// An on-call file: people, schedules and escalation policies that page for incidents.
    pub oncall: Option<PathBuf>,
    /// Where runs' `uses:` actions come from and what runs them.
    pub actions: exec::engine::ActionOptions,
    /// Sign-in with an OpenID Connect provider, when set up.
    pub oidc: Option<OidcConfig>,
    /// An OSV export (a directory of advisories) every push's lock files are checked against.
    pub osv: Option<PathBuf>,
}

/// An OpenID Connect provider people sign in with (the authorization code flow with PKCE).
#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// The role on `*` of a person who signs in for the first time.
    pub default_role: String,
    /// The callback URL registered with the provider; empty: `http://<listen>/signin/oidc/callback`.
    pub redirect_url: String,
}

/// The workflow files of one commit: (path, text).
pub type WorkflowFiles = Arc<Vec<(String, String)>>;

/// Counters behind `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub runs_success: AtomicU64,
    pub runs_failure: AtomicU64,
    pub runs_cancelled: AtomicU64,
    pub run_seconds_milli: AtomicU64,
    pub steps_success: AtomicU64,
    pub steps_failure: AtomicU64,
    pub steps_skipped: AtomicU64,
    pub steps_cancelled: AtomicU64,
    pub webhooks_accepted: AtomicU64,
    pub webhooks_rejected: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Everything the API handlers and the worker share.
#[derive(Debug)]
pub struct App {
    /// The store behind its port: SQLite today; any adapter that passes the conformance suite.
    pub store: Arc<dyn Store>,
    pub config: ServerConfig,
    pub metrics: Metrics,
    /// Cancel handles of the runs executing in this process.
    pub running: Mutex<HashMap<i64, CancelSource>>,
    /// Wakes the worker when a run is queued.
    pub wake: tokio::sync::Notify,
    /// One fetch at a time per repository mirror.
    pub fetch_locks: tokio::sync::Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// Workflow files (path, text) per (repository, commit): a commit never changes, and
    /// deliveries for the same commit are common (several forges, re-deliveries, pushes of tags).
    pub workflows_at: Mutex<HashMap<(i64, String), WorkflowFiles>>,
    /// The rollout controller's live side: proxies and instances of each environment.
    pub deployer: deploy::Deployer,
    /// Workflow-level concurrency groups of the runs executing or waiting in this process.
    pub(crate) concurrency: worker::Groups,
    /// The time-series store: Tandem's own figures (and later its targets'), queried with PromQL.
    pub tsdb: Arc<metrics::Db>,
    /// Probes and SLOs being watched, with their state.
    pub monitor: monitor::Monitor,
    /// Senders to the remote-write receivers.
    pub remote: monitor::remote_write::RemoteWrite,
    /// Alerts, their groups and routes to receivers.
    pub router: alerting::Router,
    /// Incidents, folded from the event log.
    pub incidents: incidents::Desk,
    /// Who is on call, and the key of acknowledgement links.
    pub oncall: incidents::oncall::Roster,
    /// The tokens of the runs executing (`github.token`), by hash: each reads the API while its
    /// run lasts, and can change nothing.
    pub run_tokens: RunTokens,
    /// One-time sign-in links of the web pages.
    pub(crate) signin_links: api::web::session::Links,
    /// Failed sign-ins per name, to slow down guessing.
    pub(crate) signin_failures: api::web::session::Throttle,
    /// The server's secret (sessions, CSRF tokens, acknowledgement links), read or made at first use.
    secret: std::sync::OnceLock<String>,
    /// The secrets vault, opened at first use.
    vault: std::sync::OnceLock<Result<vault::Vault, String>>,
    /// The merge queues, by repository and target branch.
    pub queues: code::queue::Queues,
    /// OpenID Connect sign-ins begun and not finished.
    pub(crate) oidc: api::web::oidc::Pending,
}

impl App {
    /// The secrets vault (its key from `TANDEM_SECRETS_KEY` or `<data>/secrets.key`).
    pub fn vault(&self) -> Result<&vault::Vault, String> {
        self.vault
            .get_or_init(|| {
                vault::Vault::open(&self.config.data_dir, std::env::var("TANDEM_SECRETS_KEY").ok().as_deref())
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// The server's secret, kept in `secret.key` of the data directory (made at first use).
pub(crate) fn secret_key(app: &App) -> &str {
    app.secret.get_or_init(|| {
        let path = app.config.data_dir.join("secret.key");
        if let Ok(key) = std::fs::read_to_string(&path)
            && key.trim().len() >= 32
        {
            return key.trim().to_string();
        }
        let key = random_secret().unwrap_or_else(|_| format!("{:x}", jiff::Timestamp::now().as_nanosecond()));
        if let Err(error) = std::fs::write(&path, &key) {
            tracing::warn!(
                "cannot keep the server's secret in {}: {error}; sessions and links end at restart",
                path.display()
            );
        }
        key
    })
}

/// A password's Argon2id hash (PHC string, random salt).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Whether a password matches a stored hash (constant time, in Argon2's verification).
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    argon2::password_hash::phc::PasswordHash::new(hash)
        .is_ok_and(|parsed| argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A one-time link that signs `actor` in to the web pages (valid fifteen minutes).
pub fn signin_link(app: &App, actor: &str) -> String {
    format!("http://{}/signin/link/{}", app.config.listen, app.signin_links.issue(actor))
}

impl App {
    /// The shared state over an opened store; nothing runs until the worker, the poller and the
    /// controller are started (`start` does; tests drive the router alone).
    pub fn new(store: Arc<dyn Store>, tsdb: Arc<metrics::Db>, config: ServerConfig) -> App {
        App {
            tsdb,
            monitor: monitor::Monitor::default(),
            remote: monitor::remote_write::RemoteWrite::start(&config.remote_write),
            router: alerting::Router::default(),
            incidents: incidents::Desk::default(),
            oncall: incidents::oncall::Roster::default(),
            signin_links: Default::default(),
            signin_failures: Default::default(),
            run_tokens: RunTokens::default(),
            secret: std::sync::OnceLock::new(),
            vault: std::sync::OnceLock::new(),
            queues: code::queue::Queues::default(),
            oidc: api::web::oidc::Pending::default(),
            store,
            config,
            metrics: Metrics::default(),
            running: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
            fetch_locks: tokio::sync::Mutex::new(HashMap::new()),
            workflows_at: Mutex::new(HashMap::new()),
            deployer: deploy::Deployer::default(),
            concurrency: worker::Groups::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tsdb(#[from] metrics::DbError),
    #[error("a server (pid {0}) is running on this data directory; stop it first")]
    Running(i32),
}

/// Tokens of runs in progress: a run's `github.token` is accepted by the API for reading only,
/// from when the run starts until it ends.
#[derive(Debug, Default)]
pub struct RunTokens(Mutex<HashMap<String, i64>>);

impl RunTokens {
    /// Accepts `token` for run `run_id` until [`RunTokens::forget`].
    pub fn register(&self, token: &str, run_id: i64) {
        if let Ok(mut tokens) = self.0.lock() {
            tokens.insert(token_hash(token), run_id);
        }
    }

    pub fn forget(&self, token: &str) {
        if let Ok(mut tokens) = self.0.lock() {
            tokens.remove(&token_hash(token));
        }
    }

    /// The run whose token this is, while it runs.
    pub fn run_of(&self, token: &str) -> Option<i64> {
        self.0.lock().ok().and_then(|tokens| tokens.get(&token_hash(token)).copied())
    }
}

/// SHA-256 of a token, as stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random secret, hex encoded.
pub fn random_secret() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Where the time-series store lives in a data directory (`tandem metrics import` writes there).
pub fn tsdb_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tsdb")
}

pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tandem.db")
}

/// The file naming the pid of the server that uses a data directory (gone after a clean stop).
fn pid_file(data_dir: &Path) -> PathBuf {
    data_dir.join("server.pid")
}

/// The pid of a live server on this data directory, if one runs.
pub fn running_server(data_dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file(data_dir)).ok()?.trim().parse().ok()?;
    (exec::process::pid_alive(pid) && pid != std::process::id() as i32).then_some(pid)
}

/// What a stopped server had left running and [`reap`] ended.
#[derive(Debug, Default, serde::Serialize)]
pub struct Reaped {
    pub step_groups: usize,
    pub instance_groups: usize,
    pub containers: usize,
    pub services: usize,
}

/// Ends what a server that is no longer running left behind on this data directory: step and
/// instance process groups (from their journals), and the containers and Swarm services whose
/// owning Tandem is dead. A start does the same before anything else; this is for operators
/// (after a crash, or as systemd's `ExecStopPost`) and test harnesses.
pub async fn reap(data_dir: &Path) -> Result<Reaped, ServerError> {
    if let Some(pid) = running_server(data_dir) {
        return Err(ServerError::Running(pid));
    }
    let mut reaped = Reaped {
        step_groups: exec::process::ProcessGroups::kill_journaled(&data_dir.join("pgids")),
        instance_groups: exec::process::ProcessGroups::kill_journaled(&data_dir.join("instances")),
        ..Reaped::default()
    };
    if let Ok(engine) = exec::docker::DockerEngine::connect().await {
        let docker = engine.client();
        reaped.containers = targets::instance::reap_containers(docker, targets::instance::Owner::Dead).await;
        reaped.services = targets::instance::reap_services(docker, targets::instance::Owner::Dead).await;
        reaped.containers += engine.reap().await;
    }
    Ok(reaped)
}

/// A started server: its address, and the admin token when this start created it.
#[derive(Debug)]
pub struct Started {
    pub app: Arc<App>,
    pub addr: SocketAddr,
    pub admin_token: Option<String>,
    /// The web password of the `admin` user, on the first start only.
    pub admin_password: Option<String>,
    pub served: tokio::task::JoinHandle<()>,
}

/// Opens the store, recovers from a crash, creates the admin token on first start, starts the
/// worker and the poller, and serves the API until `shutdown` resolves.
pub async fn start(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Started, ServerError> {
    std::fs::create_dir_all(&config.data_dir)?;
    std::fs::create_dir_all(config.data_dir.join("pgids"))?;
    if let Some(pid) = running_server(&config.data_dir) {
        return Err(ServerError::Running(pid));
    }
    std::fs::write(pid_file(&config.data_dir), std::process::id().to_string())?;
    // Steps a crashed server left running die first: their runs are about to be retried.
    let n_orphans = exec::process::ProcessGroups::kill_journaled(&config.data_dir.join("pgids"));
    if n_orphans > 0 {
        tracing::info!("killed {n_orphans} step process group(s) left by a previous server");
    }
    let store = SqliteStore::open(&database_path(&config.data_dir)).await?;
    for run in store.recover_interrupted(config.max_attempts).await? {
        tracing::warn!("run {} was interrupted: now {}", run.id, run.status.as_str());
    }
    let admin_token = if store.n_tokens().await? == 0 {
        let token = format!("tdm_{}", random_secret()?);
        store.add_token("admin", &token_hash(&token), "tandem").await?;
        Some(token)
    } else {
        None
    };
    let admin_password = if store.n_users().await? == 0 {
        let password = random_secret()?[..20].to_string();
        let hash = hash_password(&password).map_err(|e| ServerError::Io(std::io::Error::other(e)))?;
        store.add_user("admin", &hash, "tandem").await?;
        store.grant("user:admin", "admin", "*", "tandem").await?;
        Some(password)
    } else {
        None
    };
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.map_err(|e| ServerError::Listen(config.listen, e))?;
    let addr = listener.local_addr()?;
    // The address actually bound (an ephemeral port is known only now): `instance` labels use it.
    let mut config = config;
    config.listen = addr;
    let tsdb = metrics::Db::open(&tsdb_path(&config.data_dir), metrics::Options::default())?;
    let app = Arc::new(App::new(Arc::new(store), Arc::new(tsdb), config));
    match credentials::seal_clear(&app).await {
        Ok(0) => {}
        Ok(n) => tracing::info!("moved {n} repository credential(s) kept in clear into the vault"),
        Err(error) => tracing::error!("repository credentials stay in clear: {error}"),
    }
    code::queue::restore(&app).await;
    let worker = tokio::spawn(worker::run_forever(app.clone()));
    let monitor = tokio::spawn(monitor::run_forever(app.clone()));
    alerting::load(&app);
    incidents::oncall::load(&app);
    alerting::remember(&app).await;
    let alerter = tokio::spawn(alerting::run_forever(app.clone()));
    incidents::replay(&app).await?;
    let responder = tokio::spawn(incidents::run_forever(app.clone()));
    let poller = tokio::spawn(repos::poll_forever(app.clone()));
    let checkpoints = tokio::spawn(checkpoint::every_hour(app.clone()));
    let deployer = tokio::spawn(deploy::run_forever(app.clone()));
    let router = api::router(app.clone());
    let shutting_down = app.clone();
    let served = tokio::spawn(async move {
        let result = axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
            .with_graceful_shutdown(shutdown)
            .await;
        worker.abort();
        poller.abort();
        checkpoints.abort();
        deployer.abort();
        monitor.abort();
        alerter.abort();
        responder.abort();
        shutting_down.deployer.shutdown(&shutting_down.config.data_dir).await;
        if let Err(error) = shutting_down.tsdb.checkpoint() {
            tracing::warn!(
                "cannot write the time-series snapshot (the write-ahead log still holds every sample): {error}"
            );
        }
        if let Err(error) = std::fs::remove_file(pid_file(&shutting_down.config.data_dir)) {
            tracing::warn!("cannot remove the server's pid file: {error}");
        }
        if let Err(error) = result {
            tracing::error!("server stopped: {error}");
        }
    });
    Ok(Started { app, addr, admin_token, admin_password, served })
}
