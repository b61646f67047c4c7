//! The run engine: executes a workflow's jobs along their `needs` graph, matrix legs in
//! parallel under a concurrency limit, each step through an [`Executor`], reporting progress as
//! [`RunEvent`]s and returning a [`RunReport`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use spec::expr::Value;
use spec::workflow::Workflow;
use tokio::sync::{Mutex, Semaphore, mpsc};

use crate::Executor;
use crate::artifacts::ArtifactStore;
use crate::cache::CacheStore;
use crate::process::{ProcessGroups, Stream};
use git::repo::RepoFacts;
use slots::WorkspacePool;

mod action;
mod builtin;
mod call;
mod contexts;
mod leg;
mod scheduler;
mod slots;
mod step;

pub use scheduler::run;
pub use slots::prepare_slots;

/// The run's workflow-level `concurrency`: its group and whether a newer run of the group cancels
/// the one in progress — evaluated with the `github`, `inputs` and `vars` contexts, as GitHub
/// does before the run starts. `None` when the workflow has none.
pub fn workflow_concurrency(request: &RunRequest) -> Result<Option<(String, bool)>, String> {
    let Some(concurrency) = &request.workflow.concurrency else { return Ok(None) };
    let mut contexts = contexts::Contexts::default();
    contexts.set("github", contexts::github_context(request));
    contexts.set("inputs", Value::Object(request.inputs.clone()));
    contexts.set("vars", contexts::string_map(&request.vars));
    let group = contexts.render(&concurrency.group)?;
    let cancel_in_progress = match &concurrency.cancel_in_progress {
        Some(text) => contexts.evaluate(text)?.is_truthy(),
        None => false,
    };
    Ok(Some((group, cancel_in_progress)))
}

/// Events in flight between the engine and whoever renders or stores them: when the reader
/// falls behind, steps wait (their output pipes fill) rather than lines piling up in memory.
pub const EVENT_BUFFER: usize = 4096;

/// Default job timeout, as on GitHub: six hours.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(360 * 60);
/// Time a step that starts after its job was cancelled (an `always()` step) may take.
pub const AFTER_CANCEL_BUDGET: Duration = Duration::from_secs(5 * 60);

/// A job's or step's result, with GitHub's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Success,
    Failure,
    Cancelled,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failure => "failure",
            Status::Cancelled => "cancelled",
            Status::Skipped => "skipped",
        }
    }
}

/// Settings that hold for every run of an engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Tandem's data directory: the cache and the tool cache live here.
    pub data_dir: PathBuf,
    /// Most job legs running at once.
    pub max_parallel: usize,
    pub cache_limit: u64,
    /// Keep each job's workspace after the run, for debugging.
    pub keep_workspaces: bool,
    /// Where actions come from and what runs them.
    pub actions: ActionOptions,
    /// Where steps of jobs without a container run: [`LocalExecutor`](crate::LocalExecutor) in
    /// Tandem; tests inject a fake to exercise the scheduler without processes.
    pub executor: Arc<dyn Executor>,
}

/// How `uses:` steps run.
#[derive(Debug, Clone)]
pub struct ActionOptions {
    /// Where remote actions are fetched from, in order: forge base URLs or directories of
    /// repositories. Empty means GitHub.
    pub sources: Vec<String>,
    /// Run Tandem's own version of actions/checkout, actions/cache, the artifact actions and
    /// docker/build-push-action (faster, nothing to fetch) instead of the actions themselves.
    pub builtin: bool,
    /// The `node` that runs JavaScript actions (default: the first on `PATH`).
    pub node: Option<String>,
}

impl Default for ActionOptions {
    fn default() -> ActionOptions {
        ActionOptions { sources: Vec::new(), builtin: true, node: None }
    }
}

/// One run of one workflow.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub workflow: Arc<Workflow>,
    /// The workflow's file, relative to the repository root.
    pub workflow_path: String,
    /// Jobs to run (with everything they need); `None` runs all.
    pub jobs: Option<Vec<String>>,
    pub repo: RepoFacts,
    /// Lay the working tree's uncommitted state over the checkout.
    pub worktree: bool,
    pub event_name: String,
    pub event: Value,
    pub inputs: BTreeMap<String, Value>,
    pub secrets: BTreeMap<String, String>,
    pub vars: BTreeMap<String, String>,
    pub run_id: u64,
    pub run_number: u64,
    /// `github.run_attempt`: 1, plus one for each re-run.
    pub run_attempt: u64,
    /// Scratch directory of this run; artifacts and workspaces go below it.
    pub run_dir: PathBuf,
    /// `runs-on` labels that run in a container of the given image (`-P label=image`).
    pub platforms: BTreeMap<String, String>,
    /// `github.token` and `secrets.GITHUB_TOKEN`: the run's own token, masked in its logs (see
    /// [`run_token`]).
    pub token: String,
    /// 0 for a run of its own; one more for each reusable workflow it was called through.
    pub call_depth: usize,
    /// Secrets of each environment (by name): given, on top of `secrets`, only to the jobs whose
    /// `environment:` is that one.
    pub environment_secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// What a job naming an environment waits for before it starts (and gets that environment's
    /// secrets); `None`: nothing holds it (a run on a laptop).
    pub environment_gate: Option<EnvironmentGate>,
}

/// What holds a job that names an environment before it starts, and so before it gets that
/// environment's secrets: on the server, the environment's approval and security gates.
pub trait Gate: Send + Sync {
    /// Why `job` may not use `environment` yet (`Ok(None)`: it may now). The engine asks again
    /// every [`GATE_POLL`] while the answer is a reason; an `Err` fails the job with it.
    fn holds<'a>(
        &'a self,
        job: &'a str,
        environment: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<String>, String>> + Send + 'a>>;
}

/// How often a held job asks its [`Gate`] again.
pub const GATE_POLL: Duration = Duration::from_secs(1);

/// A shared [`Gate`].
#[derive(Clone)]
pub struct EnvironmentGate(pub Arc<dyn Gate>);

impl std::fmt::Debug for EnvironmentGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnvironmentGate")
    }
}

/// A fresh random token for a run (`tdm_run_` and 48 hex digits).
pub fn run_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        // No /dev/urandom: the clock and the process id, hashed, are still unique per run.
        use sha2::Digest;
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        bytes.copy_from_slice(&sha2::Sha256::digest(seed.as_bytes())[..24]);
    }
    format!("tdm_run_{}", hex::encode(bytes))
}

/// Progress, as it happens. `job` is the leg's display key, e.g. `test (linux, 1)`.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    JobStarted { job: String, steps: Vec<String> },
    StepStarted { job: String, step: usize },
    Line { job: String, step: usize, stream: Stream, text: String },
    StepFinished { job: String, step: usize, status: Status, duration: Duration },
    JobFinished { job: String, status: Status, duration: Duration, error: Option<String> },
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub name: String,
    /// The conclusion (after `continue-on-error`).
    pub status: Status,
    pub outcome: Status,
    /// When the step started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub id: String,
    pub name: String,
    pub status: Status,
    /// When the job started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    pub steps: Vec<StepReport>,
    /// What steps wrote to `$GITHUB_STEP_SUMMARY`.
    pub summary: String,
    pub error: Option<String>,
    pub outputs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub workflow: String,
    pub status: Status,
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    pub jobs: Vec<JobReport>,
    pub artifacts: Vec<String>,
    pub artifacts_dir: PathBuf,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64((duration.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// What a finished job leaves for the jobs that need it.
#[derive(Debug, Clone)]
struct JobResult {
    status: Status,
    outputs: BTreeMap<String, String>,
}

/// A concurrency group of jobs within a run: one runs at a time; `holder` cancels the one that
/// runs when a newer job of the group has `cancel-in-progress`.
#[derive(Default)]
struct ConcurrencyGroup {
    lock: Arc<Mutex<()>>,
    holder: Option<crate::CancelSource>,
}

/// Everything the jobs of one run share.
struct Shared {
    request: RunRequest,
    config: EngineConfig,
    events: mpsc::Sender<RunEvent>,
    slots: Arc<Semaphore>,
    groups: ProcessGroups,
    concurrency: Mutex<HashMap<String, ConcurrencyGroup>>,
    workspaces: Arc<WorkspacePool>,
    /// The Docker engine, connected on first use (and what a crashed Tandem left reaped then).
    docker: tokio::sync::OnceCell<Result<crate::docker::DockerEngine, String>>,
    n_container_jobs: std::sync::atomic::AtomicUsize,
    artifacts: ArtifactStore,
    cache: Option<CacheStore>,
    github: Arc<Value>,
    /// The variables every step of the run gets (see [`step::base_environment`]).
    base_env: Arc<crate::process::BaseEnvironment>,
    /// Where remote actions come from, read on first use: a run without remote actions spares
    /// the git call that reads the repository's own sources.
    action_sources: tokio::sync::OnceCell<crate::actions::ActionSources>,
    /// Every form of the run's secrets and tokens, built once; each job adds its own masks.
    masks: crate::commands::Masker,
    /// The Actions cache service, when the run has actions that may call it: held for the run,
    /// as it stops when dropped (steps find its address in `base_env`).
    _cache_service: Option<crate::cache_service::CacheService>,
    /// Reusable workflows called so far, naming their scratch directories.
    n_calls: std::sync::atomic::AtomicUsize,
    /// Remote actions fetched in this run, by `owner/repo@ref`: each is resolved once per run.
    fetched: std::sync::Mutex<HashMap<String, crate::actions::Fetched>>,
    /// The `node` for JavaScript actions and its major version, found on first use.
    node: tokio::sync::OnceCell<Result<(String, u32), String>>,
}

impl Shared {
    /// The run's action sources: the repository's own (`.tandem/action-sources`) first, then the
    /// server's or the command line's.
    async fn action_sources(&self) -> crate::actions::ActionSources {
        self.action_sources
            .get_or_init(|| async {
                let repo = &self.request.repo;
                let mut sources =
                    crate::actions::repository_sources(&repo.root, &repo.sha, self.request.worktree).await;
                sources.extend(self.config.actions.sources.iter().cloned());
                crate::actions::ActionSources::new(&self.config.data_dir, sources)
            })
            .await
            .clone()
    }

    /// A line in `job`'s log from the engine itself (what holds the job, for instance).
    async fn say(&self, job: &str, text: String) {
        let line = RunEvent::Line { job: job.to_string(), step: 0, stream: crate::process::Stream::Stdout, text };
        if self.events.send(line).await.is_err() {
            tracing::debug!("nobody reads the run's events any more");
        }
    }
}
