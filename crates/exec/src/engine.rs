//! The run engine: executes a workflow's jobs along their `needs` graph, matrix legs in
//! parallel under a concurrency limit, each step through an [`Executor`], reporting progress as
//! [`RunEvent`]s and returning a [`RunReport`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ci::matrix::Combination;
use serde::Serialize;
use spec::expr::{self, Host, Value};
use spec::workflow::{BuiltinAction, Condition, Job, Step, StepAction, Text, Workflow};
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::artifacts::ArtifactStore;
use crate::cache::{CacheStore, Saved};
use crate::commands::{self, WorkflowCommand};
use crate::git::{self, RepoFacts};
use crate::process::{Exit, ProcessGroups, ProcessSpec, Stream};
use crate::{Cancel, Executor, LocalExecutor};

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
    /// Scratch directory of this run; artifacts and workspaces go below it.
    pub run_dir: PathBuf,
    /// `runs-on` labels that run in a container of the given image (`-P label=image`).
    pub platforms: BTreeMap<String, String>,
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

/// Everything the jobs of one run share.
struct Shared {
    request: RunRequest,
    config: EngineConfig,
    events: mpsc::UnboundedSender<RunEvent>,
    slots: Arc<Semaphore>,
    groups: ProcessGroups,
    concurrency: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    workspaces: WorkspacePool,
    /// The Docker engine, connected on first use (and what a crashed Tandem left reaped then).
    docker: tokio::sync::OnceCell<Result<crate::docker::DockerEngine, String>>,
    n_container_jobs: std::sync::atomic::AtomicUsize,
    artifacts: ArtifactStore,
    cache: Option<CacheStore>,
    executor: Arc<dyn Executor>,
    github: Value,
}

/// Runs the workflow and reports every job. Never panics on user input: problems become job
/// failures with an error message.
pub async fn run(
    request: RunRequest,
    config: EngineConfig,
    events: mpsc::UnboundedSender<RunEvent>,
    cancel: Cancel,
    groups: ProcessGroups,
) -> RunReport {
    let started = Instant::now();
    let workflow = request.workflow.clone();
    let (graph, _) = ci::check::graph(&workflow);
    let selected: Vec<usize> = match &request.jobs {
        Some(ids) => ids.iter().filter_map(|id| graph.ids.iter().position(|g| g == id)).collect(),
        None => (0..graph.ids.len()).collect(),
    };
    let wanted = graph.closure(&selected);
    let cache = CacheStore::open(&config.data_dir.join("cache"), config.cache_limit).ok();
    // `$GITHUB_EVENT_PATH`, written once for every step of the run.
    let _ = std::fs::create_dir_all(&request.run_dir);
    let _ = std::fs::write(
        request.run_dir.join("event.json"),
        serde_json::to_vec_pretty(&request.event.to_json()).unwrap_or_default(),
    );
    let artifacts = ArtifactStore::new(&request.run_dir.join("artifacts"));
    let github = github_context(&request);
    let shared = Arc::new(Shared {
        slots: Arc::new(Semaphore::new(config.max_parallel.max(1))),
        request,
        config,
        events,
        groups,
        concurrency: Mutex::new(HashMap::new()),
        workspaces: WorkspacePool::default(),
        docker: tokio::sync::OnceCell::new(),
        n_container_jobs: std::sync::atomic::AtomicUsize::new(0),
        artifacts,
        cache,
        executor: Arc::new(LocalExecutor),
        github,
    });
    let mut results: BTreeMap<usize, JobResult> = BTreeMap::new();
    let mut reports: Vec<(usize, Vec<JobReport>)> = Vec::new();
    let mut running: JoinSet<(usize, JobResult, Vec<JobReport>)> = JoinSet::new();
    let mut started_jobs = std::collections::BTreeSet::new();
    loop {
        for &index in &wanted {
            if started_jobs.contains(&index) || !graph.needs[index].iter().all(|n| results.contains_key(n)) {
                continue;
            }
            started_jobs.insert(index);
            let needs: BTreeMap<String, JobResult> =
                graph.needs[index].iter().map(|&n| (graph.ids[n].clone(), results[&n].clone())).collect();
            let shared = shared.clone();
            let cancel = cancel.clone();
            let job = workflow.jobs[index].clone();
            running.spawn(async move {
                let (result, legs) = run_job(&shared, &job, needs, cancel).await;
                (index, result, legs)
            });
        }
        match running.join_next().await {
            Some(Ok((index, result, legs))) => {
                results.insert(index, result);
                reports.push((index, legs));
            }
            Some(Err(error)) => {
                // A job task panicked: nothing else can tell which job; fail the run loudly.
                eprintln!("internal error in a job: {error}");
                break;
            }
            None => break,
        }
    }
    reports.sort_by_key(|(index, _)| *index);
    let jobs: Vec<JobReport> = reports.into_iter().flat_map(|(_, legs)| legs).collect();
    let status = if cancel.is_cancelled() {
        Status::Cancelled
    } else if results.len() < wanted.len() || results.values().any(|r| r.status == Status::Failure) {
        Status::Failure
    } else if results.values().any(|r| r.status == Status::Cancelled) {
        Status::Cancelled
    } else {
        Status::Success
    };
    RunReport {
        workflow: workflow.name.clone().unwrap_or_else(|| shared.request.workflow_path.clone()),
        status,
        duration: started.elapsed(),
        jobs,
        artifacts: shared.artifacts.list(),
        artifacts_dir: shared.artifacts.root().to_path_buf(),
    }
}

fn github_context(request: &RunRequest) -> Value {
    let repo = &request.repo;
    let (ref_name, ref_type) = match repo.git_ref.strip_prefix("refs/tags/") {
        Some(tag) => (tag.to_string(), "tag"),
        None => (repo.git_ref.strip_prefix("refs/heads/").unwrap_or(&repo.git_ref).to_string(), "branch"),
    };
    let owner = repo.repository.split('/').next().unwrap_or_default().to_string();
    let event = &request.event;
    let pr = event.get("pull_request");
    let head_ref = pr.and_then(|p| p.get("head")).and_then(|h| h.get("ref")).map(Value::to_text).unwrap_or_default();
    let base_ref = pr.and_then(|p| p.get("base")).and_then(|h| h.get("ref")).map(Value::to_text).unwrap_or_default();
    let map = [
        ("action", Value::str("__run")),
        ("actor", Value::str(&repo.actor)),
        ("triggering_actor", Value::str(&repo.actor)),
        ("api_url", Value::str("")),
        ("server_url", Value::str("")),
        ("base_ref", Value::str(base_ref)),
        ("head_ref", Value::str(head_ref)),
        ("event", event.clone()),
        ("event_name", Value::str(&request.event_name)),
        ("event_path", Value::str(request.run_dir.join("event.json").to_string_lossy())),
        ("ref", Value::str(&repo.git_ref)),
        ("ref_name", Value::str(ref_name)),
        ("ref_type", Value::str(ref_type)),
        ("ref_protected", Value::Bool(false)),
        ("repository", Value::str(&repo.repository)),
        ("repository_owner", Value::str(owner)),
        ("retention_days", Value::str("90")),
        ("run_attempt", Value::str("1")),
        ("run_id", Value::str(request.run_id.to_string())),
        ("run_number", Value::str(request.run_number.to_string())),
        ("sha", Value::str(&repo.sha)),
        ("token", Value::str("")),
        ("workflow", Value::str(request.workflow.name.clone().unwrap_or_else(|| request.workflow_path.clone()))),
        ("workflow_ref", Value::str(format!("{}/{}@{}", repo.repository, request.workflow_path, repo.git_ref))),
        ("workflow_sha", Value::str(&repo.sha)),
    ];
    Value::Object(map.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// Contexts for expression evaluation inside a job.
#[derive(Debug, Clone, Default)]
struct Contexts {
    values: BTreeMap<String, Value>,
    status: expr::Status,
    workspace: PathBuf,
}

impl Host for Contexts {
    fn context(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    fn status(&self) -> expr::Status {
        self.status
    }

    fn hash_files(&self, patterns: &[String]) -> Result<String, String> {
        crate::paths::hash_files(&self.workspace, patterns)
    }
}

impl Contexts {
    fn set(&mut self, name: &str, value: Value) {
        self.values.insert(name.to_string(), value);
    }

    fn insert_step(&mut self, id: &str, value: Value) {
        match self.values.get_mut("steps") {
            Some(Value::Object(steps)) => {
                steps.insert(id.to_string(), value);
            }
            _ => self.set("steps", Value::Object([(id.to_string(), value)].into_iter().collect())),
        }
    }

    fn render(&self, text: &Text) -> Result<String, String> {
        text.render(self).map_err(|e| format!("expression in `{}`: {e}", text.raw.trim()))
    }

    fn evaluate(&self, text: &Text) -> Result<Value, String> {
        text.evaluate(self).map_err(|e| format!("expression in `{}`: {e}", text.raw.trim()))
    }

    fn condition(&self, condition: Option<&Condition>) -> Result<bool, String> {
        match condition {
            Some(c) => {
                expr::evaluate(&c.expr, self).map(|v| v.is_truthy()).map_err(|e| format!("condition `{}`: {e}", c.raw))
            }
            None => Ok(!self.status.failed && !self.status.cancelled && !self.status.blocked),
        }
    }
}

fn string_map(map: &BTreeMap<String, String>) -> Value {
    Value::Object(map.iter().map(|(k, v)| (k.clone(), Value::str(v))).collect())
}

async fn run_job(
    shared: &Arc<Shared>,
    job: &Job,
    needs: BTreeMap<String, JobResult>,
    cancel: Cancel,
) -> (JobResult, Vec<JobReport>) {
    let request = &shared.request;
    let mut contexts = Contexts::default();
    contexts.set("github", shared.github.clone());
    contexts.set("inputs", Value::Object(request.inputs.clone()));
    contexts.set("vars", string_map(&request.vars));
    contexts.set("secrets", string_map(&request.secrets));
    let needs_value = needs
        .iter()
        .map(|(id, r)| {
            let outputs = Value::Object(r.outputs.iter().map(|(k, v)| (k.clone(), Value::str(v))).collect());
            (
                id.clone(),
                Value::Object(
                    [("result".to_string(), Value::str(r.status.as_str())), ("outputs".to_string(), outputs)]
                        .into_iter()
                        .collect(),
                ),
            )
        })
        .collect();
    contexts.set("needs", Value::Object(needs_value));
    contexts.status = expr::Status {
        failed: needs.values().any(|r| r.status == Status::Failure),
        cancelled: cancel.is_cancelled(),
        blocked: needs.values().any(|r| r.status != Status::Success),
    };
    let display = job.name.as_ref().and_then(|n| contexts.render(n).ok()).unwrap_or_else(|| job.id.clone());
    let finish = |status: Status, error: Option<String>| {
        let _ = shared.events.send(RunEvent::JobFinished {
            job: display.clone(),
            status,
            duration: Duration::ZERO,
            error: error.clone(),
        });
        let report = JobReport {
            id: job.id.clone(),
            name: display.clone(),
            status,
            started_at_ms: unix_ms(),
            duration: Duration::ZERO,
            steps: Vec::new(),
            summary: String::new(),
            error,
            outputs: BTreeMap::new(),
        };
        (JobResult { status, outputs: BTreeMap::new() }, vec![report])
    };
    match contexts.condition(job.condition.as_ref()) {
        Ok(true) => {}
        Ok(false) if cancel.is_cancelled() => return finish(Status::Cancelled, None),
        Ok(false) => return finish(Status::Skipped, None),
        Err(error) => return finish(Status::Failure, Some(error)),
    }
    let legs = match matrix_legs(job, &contexts) {
        Ok(legs) => legs,
        Err(error) => return finish(Status::Failure, Some(error)),
    };
    if legs.is_empty() {
        return finish(Status::Skipped, Some("the matrix expands to no jobs".to_string()));
    }
    let strategy = job.strategy.as_ref();
    let fail_fast = match strategy.and_then(|s| s.fail_fast.as_ref()) {
        Some(text) => contexts.evaluate(text).map(|v| v.is_truthy()).unwrap_or(true),
        None => true,
    };
    let max_parallel = strategy
        .and_then(|s| s.max_parallel.as_ref())
        .and_then(|t| contexts.evaluate(t).ok())
        .map(|v| v.to_number())
        .filter(|n| *n >= 1.0)
        .map_or(legs.len(), |n| n as usize);
    let leg_slots = Arc::new(Semaphore::new(max_parallel));
    let (fail_fast_source, job_cancel) = cancel.child();
    let n_legs = legs.len();
    let mut set = JoinSet::new();
    for (index, combination) in legs.into_iter().enumerate() {
        let shared = shared.clone();
        let job = job.clone();
        let mut contexts = contexts.clone();
        let leg_slots = leg_slots.clone();
        let mut job_cancel = job_cancel.clone();
        let is_matrix = job.strategy.as_ref().is_some_and(|s| s.matrix.is_some());
        set.spawn(async move {
            let name = match (&job.name, is_matrix) {
                (Some(_), _) | (None, false) if !is_matrix => contexts_name(&job, &contexts),
                _ => format!("{} {}", contexts_name(&job, &contexts), combination.label()),
            };
            let strategy = [
                ("fail-fast", Value::Bool(fail_fast)),
                ("job-index", Value::Number(index as f64)),
                ("job-total", Value::Number(n_legs as f64)),
                ("max-parallel", Value::Number(max_parallel as f64)),
            ];
            contexts.set("strategy", Value::Object(strategy.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
            contexts.set("matrix", combination.to_value());
            // The leg's name may use the matrix, so it is rendered once the matrix is known.
            let name = match &job.name {
                Some(text) if is_matrix && text.raw.contains("matrix") => contexts.render(text).unwrap_or(name),
                _ => name,
            };
            let _leg_permit = tokio::select! {
                permit = leg_slots.acquire_owned() => permit.ok(),
                () = job_cancel.cancelled() => None,
            };
            let report = run_leg(&shared, &job, name, contexts, job_cancel.clone()).await;
            (index, report)
        });
    }
    let mut reports: Vec<(usize, JobReport)> = Vec::new();
    let mut outputs = BTreeMap::new();
    while let Some(joined) = set.join_next().await {
        let Ok((index, report)) = joined else { continue };
        if report.status == Status::Failure && fail_fast {
            fail_fast_source.cancel();
        }
        outputs.extend(report.outputs.clone());
        reports.push((index, report));
    }
    reports.sort_by_key(|(i, _)| *i);
    let reports: Vec<JobReport> = reports.into_iter().map(|(_, r)| r).collect();
    let status = if reports.iter().any(|r| r.status == Status::Failure) {
        Status::Failure
    } else if reports.iter().any(|r| r.status == Status::Cancelled) {
        Status::Cancelled
    } else {
        Status::Success
    };
    (JobResult { status, outputs }, reports)
}

fn contexts_name(job: &Job, contexts: &Contexts) -> String {
    job.name.as_ref().and_then(|n| contexts.render(n).ok()).unwrap_or_else(|| job.id.clone())
}

fn matrix_legs(job: &Job, contexts: &Contexts) -> Result<Vec<Combination>, String> {
    let Some(node) = job.strategy.as_ref().and_then(|s| s.matrix.as_ref()) else {
        return Ok(vec![Combination::default()]);
    };
    let value = spec::workflow::evaluate_node(node, contexts).map_err(|e| format!("matrix: {e}"))?;
    ci::matrix::expand(&value, &spec::workflow::matrix_key_order(node)).map_err(|e| format!("matrix: {e}"))
}

/// Per-leg state that steps change: environment, PATH additions, outputs, masks.
struct LegState {
    env: BTreeMap<String, String>,
    path_prepend: Vec<String>,
    masks: Vec<String>,
    summary: String,
    post: Vec<PostAction>,
    pgids: Vec<i32>,
    /// Where steps run: this machine, or the job's container.
    executor: Arc<dyn Executor>,
    /// The job container's shell (`bash` or `sh`), when the job runs in a container.
    container_shell: Option<String>,
    /// The job's Docker network, when it has services.
    network: Option<String>,
}

/// Work a built-in action leaves for the end of the job (the cache save).
struct PostAction {
    step: usize,
    key: String,
    /// The `path` patterns, resolved when the job ends and has produced the files.
    patterns: Vec<String>,
    version: String,
}

/// Job directories, reused from one job to the next as a runner reuses its work folder:
/// creating and deleting directories for every job is the largest cost of short jobs.
#[derive(Debug, Default)]
struct WorkspacePool {
    free: std::sync::Mutex<Vec<PathBuf>>,
    n_made: std::sync::atomic::AtomicUsize,
}

impl WorkspacePool {
    /// A clean directory for one job; `keep` gives each job its own, named after it, to inspect later.
    fn take(&self, run_dir: &Path, name: &str, keep: bool) -> PathBuf {
        if keep {
            let slug: String =
                name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
            let n = self.n_made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return run_dir.join("jobs").join(format!("{slug}-{n}"));
        }
        if let Some(slot) = self.free.lock().ok().and_then(|mut free| free.pop()) {
            return slot;
        }
        let n = self.n_made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        run_dir.join("slots").join(n.to_string())
    }

    /// Empties a job's directories and makes them available to the next job.
    fn give_back(&self, slot: PathBuf) {
        for dir in ["workspace", "temp"] {
            let dir = slot.join(dir);
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                    if removed.is_err() {
                        // Something the job left cannot be removed; do not hand it to another job.
                        return;
                    }
                }
            }
        }
        if let Ok(mut free) = self.free.lock() {
            free.push(slot);
        }
    }
}

struct LegDirs {
    workspace: PathBuf,
    temp: PathBuf,
    /// Where a step's script and its talk-back files live (not `RUNNER_TEMP`, which is the user's).
    files: PathBuf,
}

async fn run_leg(shared: &Arc<Shared>, job: &Job, name: String, mut contexts: Contexts, cancel: Cancel) -> JobReport {
    let started = Instant::now();
    let request = &shared.request;
    let step_names: Vec<String> = job.steps.iter().enumerate().map(|(i, s)| step_name(s, i, &contexts)).collect();
    let _ = shared.events.send(RunEvent::JobStarted { job: name.clone(), steps: step_names.clone() });
    let mut report = JobReport {
        id: job.id.clone(),
        name: name.clone(),
        status: Status::Success,
        started_at_ms: unix_ms(),
        duration: Duration::ZERO,
        steps: Vec::new(),
        summary: String::new(),
        error: None,
        outputs: BTreeMap::new(),
    };
    let fail = |mut report: JobReport, status: Status, error: String| {
        report.status = status;
        report.error = Some(error.clone());
        report.duration = started.elapsed();
        let _ = shared.events.send(RunEvent::JobFinished {
            job: report.name.clone(),
            status,
            duration: report.duration,
            error: Some(error),
        });
        report
    };
    if let Err(error) = check_executor(job, &contexts) {
        return fail(report, Status::Failure, error);
    }
    // Global concurrency: one slot per running leg.
    let mut cancel_wait = cancel.clone();
    let _permit = tokio::select! {
        permit = shared.slots.clone().acquire_owned() => permit.ok(),
        () = cancel_wait.cancelled() => None,
    };
    if cancel.is_cancelled() {
        return fail(report, Status::Cancelled, "cancelled before it started".to_string());
    }
    // Jobs in the same concurrency group run one at a time.
    let group_lock = match &job.concurrency {
        Some(concurrency) => match contexts.render(&concurrency.group) {
            Ok(group) => {
                let lock = shared.concurrency.lock().await.entry(group).or_default().clone();
                Some(lock.lock_owned().await)
            }
            Err(error) => return fail(report, Status::Failure, error),
        },
        None => None,
    };
    let slot = shared.workspaces.take(&request.run_dir, &name, shared.config.keep_workspaces);
    let dirs = LegDirs { workspace: slot.join("workspace"), temp: slot.join("temp"), files: slot.clone() };
    let tool_cache = shared.config.data_dir.join("toolcache");
    for dir in [&dirs.workspace, &dirs.temp, &tool_cache] {
        if let Err(error) = std::fs::create_dir_all(dir) {
            return fail(report, Status::Failure, format!("cannot create {}: {error}", dir.display()));
        }
    }
    contexts.workspace = dirs.workspace.clone();
    if let Some(Value::Object(github)) = contexts.values.get_mut("github") {
        github.insert("job".to_string(), Value::str(&job.id));
        github.insert("workspace".to_string(), Value::str(dirs.workspace.to_string_lossy()));
    }
    let runner = [
        ("os", "Linux"),
        ("arch", if cfg!(target_arch = "aarch64") { "ARM64" } else { "X64" }),
        ("name", "tandem-local"),
        ("environment", "self-hosted"),
    ];
    let mut runner: BTreeMap<String, Value> = runner.iter().map(|(k, v)| (k.to_string(), Value::str(*v))).collect();
    runner.insert("temp".to_string(), Value::str(dirs.temp.to_string_lossy()));
    runner.insert("tool_cache".to_string(), Value::str(shared.config.data_dir.join("toolcache").to_string_lossy()));
    runner.insert("debug".to_string(), Value::str(""));
    contexts.set("runner", Value::Object(runner));
    contexts.set("job", Value::Object([("status".to_string(), Value::str("success"))].into_iter().collect()));
    contexts.set("steps", Value::Object(BTreeMap::new()));
    contexts.status = expr::Status::default();

    // Environment: workflow, then job; each level may use what the previous defined.
    let mut state = LegState {
        env: BTreeMap::new(),
        path_prepend: Vec::new(),
        masks: request.secrets.values().filter(|s| !s.is_empty()).cloned().collect(),
        summary: String::new(),
        post: Vec::new(),
        pgids: Vec::new(),
        executor: shared.executor.clone(),
        container_shell: None,
        network: None,
    };
    state.masks.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for (key, text) in request.workflow.env.iter().chain(job.env.iter()) {
        contexts.set("env", string_map(&state.env));
        match contexts.render(text) {
            Ok(value) => {
                state.env.insert(key.clone(), value);
            }
            Err(error) => return fail(report, Status::Failure, format!("env `{key}`: {error}")),
        }
    }
    contexts.set("env", string_map(&state.env));

    // Service containers and the job container, when the job asks for them.
    // A `runs-on` label mapped to an image runs the job in a container of it.
    let platform_image = job
        .runs_on
        .iter()
        .filter_map(|label| contexts.render(label).ok())
        .find_map(|label| shared.request.platforms.get(&label).cloned());
    let containers = if job.container.is_some() || !job.services.is_empty() || platform_image.is_some() {
        match start_containers(shared, job, &contexts, &name, &dirs, platform_image).await {
            Ok(environment) => {
                state.network = environment.network.clone();
                if let Some(executor) = environment.executor() {
                    state.executor = Arc::new(executor);
                    state.container_shell = Some("sh".to_string());
                }
                Some(environment)
            }
            Err(error) => {
                if !shared.config.keep_workspaces {
                    shared.workspaces.give_back(slot);
                }
                return fail(report, Status::Failure, error);
            }
        }
    } else {
        None
    };

    let job_timeout = match &job.timeout_minutes {
        Some(text) => match contexts.evaluate(text) {
            Ok(v) if v.to_number() > 0.0 => Duration::from_secs_f64(v.to_number() * 60.0),
            Ok(v) => {
                return fail(
                    report,
                    Status::Failure,
                    format!("timeout-minutes must be a positive number, found `{}`", v.to_text()),
                );
            }
            Err(error) => return fail(report, Status::Failure, error),
        },
        None => DEFAULT_JOB_TIMEOUT,
    };
    let deadline = started + job_timeout;
    let (timeout_source, leg_cancel) = cancel.child();
    let timer = tokio::spawn({
        let source = timeout_source.clone();
        async move {
            tokio::time::sleep_until(deadline.into()).await;
            source.cancel();
        }
    });

    let mut failed = false;
    for (index, step) in job.steps.iter().enumerate() {
        let step_started = Instant::now();
        let cancelled = leg_cancel.is_cancelled();
        contexts.status = expr::Status { failed, cancelled, blocked: false };
        if let Some(Value::Object(job_ctx)) = contexts.values.get_mut("job") {
            let status = if cancelled {
                "cancelled"
            } else if failed {
                "failure"
            } else {
                "success"
            };
            job_ctx.insert("status".to_string(), Value::str(status));
        }
        contexts.set("env", string_map(&state.env));
        // A step that does not start ends here: skipped by its condition, or failed by it.
        let ended = match contexts.condition(step.condition.as_ref()) {
            Ok(true) => None,
            Ok(false) => Some(Status::Skipped),
            Err(error) => {
                emit_line(shared, &name, index, Stream::Stderr, &format!("error: {error}"), &state.masks);
                failed = true;
                Some(Status::Failure)
            }
        };
        if let Some(status) = ended {
            let name = &step_names[index];
            record_step(
                shared,
                &mut report,
                &mut contexts,
                step,
                index,
                name,
                status,
                status,
                step_started,
                BTreeMap::new(),
            );
            continue;
        }
        let _ = shared.events.send(RunEvent::StepStarted { job: name.clone(), step: index });
        // A step that runs although the job is cancelled (`always()`, `cancelled()`) runs to its
        // end as on GitHub, within its own budget; a second interrupt still kills it.
        let (step_cancel, step_deadline) = if cancelled {
            (Cancel::never(), Instant::now() + AFTER_CANCEL_BUDGET)
        } else {
            (leg_cancel.clone(), deadline)
        };
        let result =
            run_step(shared, job, step, index, &name, &mut contexts, &mut state, &dirs, &step_cancel, step_deadline)
                .await;
        let (outcome, outputs) = match result {
            Ok(outcome) => outcome,
            Err(error) => {
                emit_line(shared, &name, index, Stream::Stderr, &format!("error: {error}"), &state.masks);
                (Status::Failure, BTreeMap::new())
            }
        };
        let continue_on_error = match &step.continue_on_error {
            Some(text) => contexts.evaluate(text).map(|v| v.is_truthy()).unwrap_or(false),
            None => false,
        };
        let conclusion = if outcome == Status::Failure && continue_on_error { Status::Success } else { outcome };
        if conclusion == Status::Failure {
            failed = true;
        }
        record_step(
            shared,
            &mut report,
            &mut contexts,
            step,
            index,
            &step_names[index],
            outcome,
            conclusion,
            step_started,
            outputs,
        );
    }

    // Post steps: cache saves, only when the job succeeded, in reverse order.
    let post = std::mem::take(&mut state.post);
    for action in post.into_iter().rev() {
        if failed || leg_cancel.is_cancelled() {
            break;
        }
        if let Some(cache) = shared.cache.clone() {
            let scope = request.repo.repository.clone();
            let workspace = dirs.workspace.clone();
            let PostAction { step, key, patterns, version } = action;
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
            let paths = crate::paths::resolve(&workspace, &home, &patterns);
            let saved = tokio::task::spawn_blocking(move || {
                cache.save(&scope, &version, &key, &paths, &workspace).map(|s| (s, key))
            })
            .await;
            let message = match saved {
                Ok(Ok((Saved::Stored { n_files, size, n_evicted }, key))) => format!(
                    "cache saved with key `{key}`: {n_files} entries, {size} bytes{}",
                    if n_evicted > 0 { format!(", {n_evicted} old entries evicted") } else { String::new() }
                ),
                Ok(Ok((Saved::Exists, key))) => format!("cache entry `{key}` exists already; not saved again"),
                Ok(Ok((Saved::NothingToSave, _))) => "cache not saved: none of the paths exist".to_string(),
                Ok(Err(error)) => format!("warning: cache not saved: {error}"),
                Err(error) => format!("warning: cache not saved: {error}"),
            };
            emit_line(shared, &name, step, Stream::Stdout, &format!("post: {message}"), &state.masks);
        }
    }
    timer.abort();
    drop(group_lock);

    // Outputs, evaluated with the final steps context.
    for (key, text) in &job.outputs {
        match contexts.render(text) {
            Ok(value) => {
                report.outputs.insert(key.clone(), commands::mask(&value, &state.masks));
            }
            Err(error) => emit_line(
                shared,
                &name,
                job.steps.len().saturating_sub(1),
                Stream::Stderr,
                &format!("warning: output `{key}`: {error}"),
                &state.masks,
            ),
        }
    }
    // Whatever the steps left running in the background dies with the job.
    shared.groups.kill(&state.pgids);
    if let Some(environment) = containers {
        let last_step = job.steps.len().saturating_sub(1);
        for (service, lines) in environment.teardown().await {
            for line in lines {
                emit_line(
                    shared,
                    &name,
                    last_step,
                    Stream::Stdout,
                    &format!("service {service} | {line}"),
                    &state.masks,
                );
            }
        }
    }
    if !shared.config.keep_workspaces {
        shared.workspaces.give_back(slot);
    }
    let timed_out = timeout_source.token().is_cancelled() && !cancel.is_cancelled();
    report.status = if timed_out {
        report.error = Some(format!("the job exceeded its timeout of {} minutes", job_timeout.as_secs_f64() / 60.0));
        Status::Failure
    } else if cancel.is_cancelled() {
        Status::Cancelled
    } else if failed {
        Status::Failure
    } else {
        Status::Success
    };
    report.summary = state.summary;
    report.duration = started.elapsed();
    let _ = shared.events.send(RunEvent::JobFinished {
        job: name,
        status: report.status,
        duration: report.duration,
        error: report.error.clone(),
    });
    report
}

/// The Docker engine, connected on first use in a run; what dead Tandem processes left is reaped then.
async fn docker_engine(shared: &Shared) -> Result<crate::docker::DockerEngine, String> {
    shared
        .docker
        .get_or_init(|| async {
            let engine = crate::docker::DockerEngine::connect().await?;
            engine.reap().await;
            Ok(engine)
        })
        .await
        .clone()
}

/// Starts the job's services and container with the job's contexts applied.
async fn start_containers(
    shared: &Arc<Shared>,
    job: &Job,
    contexts: &Contexts,
    name: &str,
    dirs: &LegDirs,
    platform_image: Option<String>,
) -> Result<crate::docker::JobEnvironment, String> {
    use crate::docker::{ContainerSpec, JobContainers};
    let engine = docker_engine(shared).await?;
    let evaluate = |container: &spec::workflow::Container| -> Result<ContainerSpec, String> {
        let mut env = Vec::new();
        for (key, text) in &container.env {
            env.push((key.clone(), contexts.render(text)?));
        }
        let image = contexts.render(&container.image)?;
        if image.trim().is_empty() {
            return Err("the container image is empty".to_string());
        }
        Ok(ContainerSpec {
            image,
            env,
            ports: container.ports.iter().map(|p| contexts.render(p)).collect::<Result<_, _>>()?,
            volumes: container.volumes.iter().map(|v| contexts.render(v)).collect::<Result<_, _>>()?,
            options: container.options.as_ref().map(|o| contexts.render(o)).transpose()?.unwrap_or_default(),
            credentials: match &container.credentials {
                Some((user, password)) => Some((contexts.render(user)?, contexts.render(password)?)),
                None => None,
            },
        })
    };
    let container = match (&job.container, platform_image) {
        (Some(container), _) => Some(evaluate(container)?),
        (None, Some(image)) => Some(ContainerSpec { image, ..ContainerSpec::default() }),
        (None, None) => None,
    };
    let mut services = Vec::new();
    for (service, spec) in &job.services {
        services.push((service.clone(), evaluate(spec).map_err(|e| format!("service `{service}`: {e}"))?));
    }
    let n = shared.n_container_jobs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let slug: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(40).collect();
    let request = JobContainers {
        run_id: shared.request.run_id,
        key: format!("{}-{n}", if slug.is_empty() { "job" } else { &slug }),
        container,
        services,
        mounts: vec![
            dirs.files.clone(),
            shared.config.data_dir.join("toolcache"),
            shared.request.run_dir.join("event.json"),
        ],
        health_timeout: Duration::from_secs(120),
    };
    engine.start_job(&request).await
}

/// Refuses runners no executor here can serve.
fn check_executor(job: &Job, contexts: &Contexts) -> Result<(), String> {
    for label in &job.runs_on {
        let label = contexts.render(label)?;
        let lower = label.to_ascii_lowercase();
        if lower.starts_with("windows") || lower.starts_with("macos") {
            return Err(format!(
                "runs-on `{label}`: no executor here runs {}; Tandem runs jobs on Linux (e.g. `ubuntu-latest`, `self-hosted`)",
                if lower.starts_with("windows") { "Windows" } else { "macOS" }
            ));
        }
    }
    Ok(())
}

fn step_name(step: &Step, index: usize, contexts: &Contexts) -> String {
    if let Some(name) = &step.name {
        if let Ok(name) = contexts.render(name) {
            return name;
        }
        return name.raw.clone();
    }
    match &step.action {
        StepAction::Run { script, .. } => {
            let first = script.raw.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
            let first: String = first.chars().take(60).collect();
            if first.is_empty() { format!("step {}", index + 1) } else { format!("Run {first}") }
        }
        StepAction::Uses { reference, .. } => format!("Run {reference}"),
    }
}

#[allow(clippy::too_many_arguments)]
fn record_step(
    shared: &Shared,
    report: &mut JobReport,
    contexts: &mut Contexts,
    step: &Step,
    index: usize,
    name: &str,
    outcome: Status,
    conclusion: Status,
    started: Instant,
    outputs: BTreeMap<String, String>,
) {
    let duration = started.elapsed();
    let _ = shared.events.send(RunEvent::StepFinished {
        job: report.name.clone(),
        step: index,
        status: conclusion,
        duration,
    });
    let started_at_ms = unix_ms().saturating_sub(duration.as_millis() as u64);
    report.steps.push(StepReport { name: name.to_string(), status: conclusion, outcome, started_at_ms, duration });
    if let Some(id) = &step.id {
        let entry: BTreeMap<String, Value> = [
            ("outputs".to_string(), Value::Object(outputs.into_iter().map(|(k, v)| (k, Value::String(v))).collect())),
            ("outcome".to_string(), Value::str(outcome.as_str())),
            ("conclusion".to_string(), Value::str(conclusion.as_str())),
        ]
        .into_iter()
        .collect();
        contexts.insert_step(id, Value::Object(entry));
    }
}

fn emit_line(shared: &Shared, job: &str, step: usize, stream: Stream, text: &str, masks: &[String]) {
    let _ =
        shared.events.send(RunEvent::Line { job: job.to_string(), step, stream, text: commands::mask(text, masks) });
}

#[allow(clippy::too_many_arguments)]
async fn run_step(
    shared: &Arc<Shared>,
    job: &Job,
    step: &Step,
    index: usize,
    leg: &str,
    contexts: &mut Contexts,
    state: &mut LegState,
    dirs: &LegDirs,
    cancel: &Cancel,
    deadline: Instant,
) -> Result<(Status, BTreeMap<String, String>), String> {
    // Step environment on top of the job's.
    let mut env = state.env.clone();
    for (key, text) in &step.env {
        contexts.set("env", string_map(&env));
        env.insert(key.clone(), contexts.render(text)?);
    }
    contexts.set("env", string_map(&env));
    let remaining = deadline.saturating_duration_since(Instant::now());
    let timeout = match &step.timeout_minutes {
        Some(text) => {
            let minutes = contexts.evaluate(text)?.to_number();
            if minutes.is_nan() || minutes <= 0.0 {
                return Err(format!("timeout-minutes must be a positive number, found `{}`", text.raw));
            }
            Duration::from_secs_f64(minutes * 60.0).min(remaining)
        }
        None => remaining,
    };
    match &step.action {
        StepAction::Run { script, shell, working_directory } => {
            let script = contexts.render(script)?;
            let shell = shell
                .clone()
                .or_else(|| job.defaults.shell.clone())
                .or_else(|| shared.request.workflow.defaults.shell.clone());
            let working_directory = match working_directory
                .as_ref()
                .or(job.defaults.working_directory.as_ref())
                .or(shared.request.workflow.defaults.working_directory.as_ref())
            {
                Some(text) => Some(contexts.render(text)?),
                None => None,
            };
            let cwd = match working_directory {
                Some(dir) => dirs.workspace.join(dir),
                None => dirs.workspace.clone(),
            };
            let launch = Launch::Script { script, shell };
            run_script(shared, step, index, leg, launch, &cwd, env, state, dirs, cancel, timeout).await
        }
        StepAction::Uses { action: BuiltinAction::DockerImage, reference, with } => {
            let mut inputs = BTreeMap::new();
            for (key, text) in with {
                inputs.insert(key.clone(), contexts.render(text)?);
            }
            let launch = Launch::Image {
                image: reference.trim_start_matches("docker://").to_string(),
                args: inputs.get("args").map(|a| crate::docker::split_words(a)).unwrap_or_default(),
                entrypoint: inputs.get("entrypoint").filter(|e| !e.is_empty()).cloned(),
            };
            let cwd = dirs.workspace.clone();
            run_script(shared, step, index, leg, launch, &cwd, env, state, dirs, cancel, timeout).await
        }
        StepAction::Uses { action, with, .. } => {
            let mut inputs = BTreeMap::new();
            for (key, text) in with {
                inputs.insert(key.clone(), contexts.render(text)?);
            }
            let log = |text: &str| emit_line(shared, leg, index, Stream::Stdout, text, &state.masks);
            run_builtin(shared, *action, &inputs, index, dirs, &log).await.map(|(status, outputs, post)| {
                if let Some(post) = post {
                    state.post.push(post);
                }
                (status, outputs)
            })
        }
    }
}

/// The default shell of container steps: bash when the image has it, else sh (as on GitHub).
/// Words are separated by `${IFS}` because the template is split on whitespace.
const CONTAINER_DEFAULT_SHELL: &str = "sh -c command${IFS}-v${IFS}bash>/dev/null&&exec${IFS}bash${IFS}-e${IFS}\"$0\"||exec${IFS}sh${IFS}-e${IFS}\"$0\" {0}";

/// What a step starts: a script in a shell, or a container of an image.
enum Launch {
    Script { script: String, shell: Option<String> },
    Image { image: String, args: Vec<String>, entrypoint: Option<String> },
}

#[allow(clippy::too_many_arguments)]
async fn run_script(
    shared: &Arc<Shared>,
    step: &Step,
    index: usize,
    leg: &str,
    launch: Launch,
    cwd: &Path,
    step_env: BTreeMap<String, String>,
    state: &mut LegState,
    dirs: &LegDirs,
    cancel: &Cancel,
    timeout: Duration,
) -> Result<(Status, BTreeMap<String, String>), String> {
    let request = &shared.request;
    let (argv, image_step) = match launch {
        Launch::Script { script, shell } => {
            let (extension, template): (&str, String) = match shell.as_deref() {
                // In a container: bash where the image has it, else sh, decided by the step's own
                // shell, which spares a round trip to the engine.
                None => match &state.container_shell {
                    Some(_) => (".sh", CONTAINER_DEFAULT_SHELL.to_string()),
                    None => (".sh", if which("bash") { "bash -e {0}".into() } else { "sh -e {0}".into() }),
                },
                Some("bash") => (".sh", "bash --noprofile --norc -eo pipefail {0}".into()),
                Some("sh") => (".sh", "sh -e {0}".into()),
                Some("python") => (".py", if which("python") { "python {0}".into() } else { "python3 {0}".into() }),
                Some(custom) => ("", custom.to_string()),
            };
            // One script file per job and shell, rewritten in place for each step: steps run one
            // after the other, and reusing the inode spares the file system an allocation per
            // step (the largest cost of a trivial step on ext4).
            let script_path = dirs.files.join(format!("step{extension}"));
            overwrite(&script_path, script.as_bytes()).map_err(|e| format!("cannot write the step's script: {e}"))?;
            let mut argv: Vec<String> =
                template.split_whitespace().map(|part| part.replace("{0}", &script_path.to_string_lossy())).collect();
            // Resolving the program once here spares the child a search of every PATH entry per step.
            if let Some(resolved) =
                argv.first().filter(|_| state.container_shell.is_none()).and_then(|program| resolve_program(program))
            {
                argv[0] = resolved;
            }
            (argv, None)
        }
        Launch::Image { image, args, entrypoint } => {
            let engine = docker_engine(shared).await?;
            let mounts =
                vec![dirs.files.clone(), shared.config.data_dir.join("toolcache"), request.run_dir.join("event.json")];
            let step = crate::docker::ImageStep { engine, image, entrypoint, mounts, network: state.network.clone() };
            (args, Some(step))
        }
    };
    if !cwd.is_dir() {
        return Err(format!(
            "working directory `{}` does not exist in the workspace",
            cwd.strip_prefix(&dirs.workspace).unwrap_or(cwd).display()
        ));
    }

    // Files the step writes to talk back, fresh for each step.
    let file = |name: &str| dirs.files.join(format!("{name}-{index}"));
    // Steps append to these with `>>`, which creates them; a missing file means nothing written.
    let (output_file, env_file, path_file, summary_file) = (file("output"), file("env"), file("path"), file("summary"));
    let event_path = request.run_dir.join("event.json");

    // On this machine a step inherits Tandem's environment; in a container, the image's.
    let in_container = state.container_shell.is_some() || image_step.is_some();
    let mut env: BTreeMap<String, String> = if in_container { BTreeMap::new() } else { std::env::vars().collect() };
    let github = &shared.github;
    let g = |key: &str| github.get(key).map(Value::to_text).unwrap_or_default();
    let fixed = [
        ("CI", "true".to_string()),
        ("TANDEM", "true".to_string()),
        ("GITHUB_ACTIONS", "true".to_string()),
        ("GITHUB_WORKSPACE", dirs.workspace.to_string_lossy().into_owned()),
        ("GITHUB_SHA", g("sha")),
        ("GITHUB_REF", g("ref")),
        ("GITHUB_REF_NAME", g("ref_name")),
        ("GITHUB_REF_TYPE", g("ref_type")),
        ("GITHUB_HEAD_REF", g("head_ref")),
        ("GITHUB_BASE_REF", g("base_ref")),
        ("GITHUB_REPOSITORY", g("repository")),
        ("GITHUB_REPOSITORY_OWNER", g("repository_owner")),
        ("GITHUB_RUN_ID", g("run_id")),
        ("GITHUB_RUN_NUMBER", g("run_number")),
        ("GITHUB_RUN_ATTEMPT", "1".to_string()),
        ("GITHUB_JOB", g("job")),
        ("GITHUB_WORKFLOW", g("workflow")),
        ("GITHUB_WORKFLOW_REF", g("workflow_ref")),
        ("GITHUB_EVENT_NAME", g("event_name")),
        ("GITHUB_EVENT_PATH", event_path.to_string_lossy().into_owned()),
        ("GITHUB_ACTOR", g("actor")),
        ("GITHUB_ACTION", step.id.clone().unwrap_or_else(|| format!("__run_{index}"))),
        ("GITHUB_OUTPUT", output_file.to_string_lossy().into_owned()),
        ("GITHUB_ENV", env_file.to_string_lossy().into_owned()),
        ("GITHUB_PATH", path_file.to_string_lossy().into_owned()),
        ("GITHUB_STEP_SUMMARY", summary_file.to_string_lossy().into_owned()),
        ("RUNNER_OS", "Linux".to_string()),
        ("RUNNER_ARCH", if cfg!(target_arch = "aarch64") { "ARM64".to_string() } else { "X64".to_string() }),
        ("RUNNER_NAME", "tandem-local".to_string()),
        ("RUNNER_ENVIRONMENT", "self-hosted".to_string()),
        ("RUNNER_TEMP", dirs.temp.to_string_lossy().into_owned()),
        ("RUNNER_TOOL_CACHE", shared.config.data_dir.join("toolcache").to_string_lossy().into_owned()),
        ("RUNNER_WORKSPACE", dirs.workspace.parent().unwrap_or(&dirs.workspace).to_string_lossy().into_owned()),
    ];
    for (key, value) in fixed {
        env.insert(key.to_string(), value);
    }
    env.extend(step_env);
    if !state.path_prepend.is_empty() {
        let base = env
            .get("PATH")
            .cloned()
            .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string());
        let mut parts = state.path_prepend.clone();
        parts.reverse();
        parts.push(base);
        env.insert("PATH".to_string(), parts.join(":"));
    }

    let spec = ProcessSpec { argv, env, cwd: cwd.to_path_buf(), timeout: Some(timeout) };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let executor: Arc<dyn Executor> = match image_step {
        Some(step) => Arc::new(step),
        None => state.executor.clone(),
    };
    let groups = shared.groups.clone();
    let process = async move {
        let result = executor.run(&spec, &tx, cancel, &groups).await;
        drop(tx);
        result
    };
    let mut step_outputs = BTreeMap::new();
    let consume = async {
        while let Some((stream, line)) = rx.recv().await {
            match commands::parse_command(&line) {
                Some(WorkflowCommand::AddMask(value)) => {
                    if !value.is_empty() && !state.masks.contains(&value) {
                        state.masks.push(value);
                        state.masks.sort_by_key(|s| std::cmp::Reverse(s.len()));
                    }
                }
                Some(WorkflowCommand::Group(title)) => {
                    emit_line(shared, leg, index, stream, &format!("▸ {title}"), &state.masks)
                }
                Some(WorkflowCommand::EndGroup) => {}
                Some(WorkflowCommand::Annotation { level, message }) => {
                    emit_line(shared, leg, index, stream, &format!("{level}: {message}"), &state.masks)
                }
                Some(WorkflowCommand::SetOutput { name, value }) => {
                    step_outputs.insert(name, value);
                }
                None => emit_line(shared, leg, index, stream, &line, &state.masks),
            }
        }
    };
    let ((exit, pgid), ()) = tokio::join!(process, consume);
    if let Some(pgid) = pgid {
        state.pgids.push(pgid);
    }

    // What the step wrote back.
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    let mut problems = Vec::new();
    match commands::parse_key_values(&read(&output_file)) {
        Ok(pairs) => step_outputs.extend(pairs),
        Err(error) => problems.push(format!("$GITHUB_OUTPUT: {error}")),
    }
    match commands::parse_key_values(&read(&env_file)) {
        Ok(pairs) => {
            for (key, value) in pairs {
                state.env.insert(key, value);
            }
        }
        Err(error) => problems.push(format!("$GITHUB_ENV: {error}")),
    }
    for line in read(&path_file).lines().map(str::trim).filter(|l| !l.is_empty()) {
        state.path_prepend.push(line.to_string());
    }
    let summary = read(&summary_file);
    if !summary.trim().is_empty() {
        state.summary.push_str(&commands::mask(&summary, &state.masks));
        if !summary.ends_with('\n') {
            state.summary.push('\n');
        }
    }
    for problem in &problems {
        emit_line(shared, leg, index, Stream::Stderr, &format!("error: {problem}"), &state.masks);
    }
    let status = match exit {
        Exit::Code(0) if problems.is_empty() => Status::Success,
        Exit::Code(0) => Status::Failure,
        Exit::Code(code) => {
            emit_line(
                shared,
                leg,
                index,
                Stream::Stderr,
                &format!("error: the step exited with code {code}"),
                &state.masks,
            );
            Status::Failure
        }
        Exit::Signal(signal) => {
            emit_line(
                shared,
                leg,
                index,
                Stream::Stderr,
                &format!("error: the step was killed by signal {signal}"),
                &state.masks,
            );
            Status::Failure
        }
        Exit::TimedOut => {
            emit_line(
                shared,
                leg,
                index,
                Stream::Stderr,
                &format!(
                    "error: the step timed out after {:.1} minutes and was killed with its process group",
                    timeout.as_secs_f64() / 60.0
                ),
                &state.masks,
            );
            Status::Failure
        }
        Exit::Cancelled => {
            emit_line(shared, leg, index, Stream::Stderr, "the step was cancelled", &state.masks);
            Status::Cancelled
        }
        Exit::NotStarted => Status::Failure,
    };
    Ok((status, step_outputs))
}

/// Replaces a file's contents without truncating it to zero first: on ext4, closing a file that
/// was truncated to zero forces a flush to disk (`auto_da_alloc`), which costs more than the step.
fn overwrite(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path)?;
    file.write_all(bytes)?;
    file.set_len(bytes.len() as u64)
}

fn which(program: &str) -> bool {
    resolve_program(program).is_some()
}

/// The absolute path of a program on Tandem's own PATH, remembered for the process's lifetime.
fn resolve_program(program: &str) -> Option<String> {
    use std::sync::{Mutex, OnceLock};
    static RESOLVED: OnceLock<Mutex<HashMap<String, Option<String>>>> = OnceLock::new();
    if program.contains('/') {
        return None;
    }
    let cache = RESOLVED.get_or_init(Mutex::default);
    if let Some(found) = cache.lock().ok()?.get(program) {
        return found.clone();
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
            .map(|path| path.to_string_lossy().into_owned())
    });
    cache.lock().ok()?.insert(program.to_string(), found.clone());
    found
}

type BuiltinResult = Result<(Status, BTreeMap<String, String>, Option<PostAction>), String>;

async fn run_builtin(
    shared: &Arc<Shared>,
    action: BuiltinAction,
    inputs: &BTreeMap<String, String>,
    index: usize,
    dirs: &LegDirs,
    log: &(dyn Fn(&str) + Sync),
) -> BuiltinResult {
    let request = &shared.request;
    let input = |key: &str| inputs.get(key).map(String::as_str).unwrap_or("");
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
    let mut outputs = BTreeMap::new();
    match action {
        BuiltinAction::DockerImage => Err("docker:// steps run as containers, not as built-in actions".to_string()),
        BuiltinAction::BuildPush => {
            let engine = docker_engine(shared).await?;
            let context_dir = crate::paths::normalize(&dirs.workspace.join(input("context")));
            if !context_dir.starts_with(&dirs.workspace) || !context_dir.is_dir() {
                return Err(format!("build context `{}` is not a directory in the workspace", input("context")));
            }
            let dockerfile = if input("file").is_empty() {
                "Dockerfile".to_string()
            } else {
                let file = crate::paths::normalize(&dirs.workspace.join(input("file")));
                file.strip_prefix(&context_dir)
                    .map(|f| f.to_string_lossy().into_owned())
                    .map_err(|_| format!("the Dockerfile `{}` must lie inside the build context", input("file")))?
            };
            if !context_dir.join(&dockerfile).is_file() {
                return Err(format!(
                    "no Dockerfile at `{dockerfile}` in the build context; check `context` and `file`"
                ));
            }
            let list = |key: &str| -> Vec<String> {
                input(key).split(['\n', ',']).map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect()
            };
            let pairs = |key: &str| -> HashMap<String, String> {
                list(key)
                    .into_iter()
                    .filter_map(|p| p.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                    .collect()
            };
            let sha = &request.repo.sha;
            let short = &sha[..sha.len().min(12)];
            let mut tags = list("tags");
            if tags.is_empty() {
                let name = request
                    .repo
                    .repository
                    .to_ascii_lowercase()
                    .replace(|c: char| !c.is_ascii_alphanumeric() && c != '/' && c != '-', "-");
                tags.push(format!("tandem/{name}:latest"));
            }
            // Every image is also tagged with the commit it was built from.
            let (repo, _) = crate::docker::split_tag(&tags[0]);
            tags.push(format!("{repo}:{short}"));
            let mut labels = pairs("labels");
            labels.insert("org.opencontainers.image.revision".into(), sha.clone());
            labels.insert("org.opencontainers.image.source".into(), request.repo.repository.clone());
            let context = crate::docker::context_tar(&context_dir)?;
            log(&format!(
                "building {} from {} ({} bytes of context)",
                tags[0],
                if input("context").is_empty() { "." } else { input("context") },
                context.len()
            ));
            let push = input("push") == "true";
            let build =
                crate::docker::ImageBuild { context, dockerfile, tags, build_args: pairs("build-args"), labels, push };
            let built = engine.build_and_push(build, log).await?;
            log(&format!("image {} tagged {}", built.id, built.tags.join(", ")));
            // The release deployments will ship: recorded as an artifact of the run.
            let record = dirs.temp.join("image.json");
            std::fs::write(&record, serde_json::to_vec_pretty(&built).unwrap_or_default())
                .map_err(|e| e.to_string())?;
            let slug: String =
                repo.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
            shared.artifacts.upload(&format!("image-{slug}"), &[record], true)?;
            outputs.insert("imageid".into(), built.id.clone());
            outputs.insert("digest".into(), built.digest.clone().unwrap_or_default());
            outputs.insert("metadata".into(), serde_json::to_string(&built).unwrap_or_default());
            Ok((Status::Success, outputs, None))
        }
        BuiltinAction::Checkout => {
            if !input("repository").is_empty() && input("repository") != request.repo.repository {
                return Err(format!(
                    "checkout of another repository (`{}`) is not supported; only this run's repository can be checked out",
                    input("repository")
                ));
            }
            let dest = crate::paths::normalize(&dirs.workspace.join(input("path")));
            if !dest.starts_with(&dirs.workspace) {
                return Err(format!("checkout path `{}` leaves the workspace", input("path")));
            }
            let sha = if input("ref").is_empty() {
                request.repo.sha.clone()
            } else {
                resolve_ref(&request.repo.root, input("ref")).await?
            };
            let worktree = request.worktree && input("ref").is_empty();
            log(&format!(
                "checking out {} at {}{}",
                request.repo.repository,
                &sha[..sha.len().min(12)],
                if worktree { " with the working tree's changes" } else { "" }
            ));
            git::checkout(&request.repo.root, &sha, &dest, worktree).await?;
            outputs.insert("commit".to_string(), sha);
            outputs.insert("ref".to_string(), request.repo.git_ref.clone());
            Ok((Status::Success, outputs, None))
        }
        BuiltinAction::Cache | BuiltinAction::CacheRestore | BuiltinAction::CacheSave => {
            let Some(cache) = shared.cache.clone() else {
                return Err("the cache directory could not be opened".to_string());
            };
            let key = input("key").to_string();
            if key.is_empty() {
                return Err("the cache `key` is empty".to_string());
            }
            if key.contains(',') {
                return Err(format!("cache key `{key}` contains a comma, which is not allowed"));
            }
            let patterns: Vec<String> =
                input("path").lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
            use sha2::Digest;
            let version = crate::paths::hex(&sha2::Sha256::digest(patterns.join("\n").as_bytes()));
            let save_version = version.clone();
            if action == BuiltinAction::CacheSave {
                let resolved = crate::paths::resolve(&dirs.workspace, &home, &patterns);
                let scope = request.repo.repository.clone();
                let workspace = dirs.workspace.clone();
                let saved =
                    tokio::task::spawn_blocking(move || cache.save(&scope, &version, &key, &resolved, &workspace))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| format!("cache save failed: {e}"))?;
                log(&format!("cache save: {saved:?}"));
                return Ok((Status::Success, outputs, None));
            }
            let restore_keys: Vec<String> =
                input("restore-keys").lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
            let scope = request.repo.repository.clone();
            let workspace = dirs.workspace.clone();
            let lookup_key = key.clone();
            let found = tokio::task::spawn_blocking(move || {
                cache.restore(&scope, &version, &lookup_key, &restore_keys, &workspace)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cache restore failed: {e}"))?;
            let exact = found.as_ref().is_some_and(|f| f.exact);
            match &found {
                Some(restored) => log(&format!(
                    "cache restored from key `{}` ({} entries){}",
                    restored.key,
                    restored.n_files,
                    if restored.exact { "" } else { ", a partial match" }
                )),
                None => log(&format!("cache not found for key `{key}`")),
            }
            outputs.insert("cache-hit".to_string(), exact.to_string());
            outputs.insert("cache-primary-key".to_string(), key.clone());
            outputs.insert("cache-matched-key".to_string(), found.as_ref().map(|f| f.key.clone()).unwrap_or_default());
            if found.is_none() && input("fail-on-cache-miss") == "true" {
                return Err(format!("no cache entry for key `{key}` and `fail-on-cache-miss` is set"));
            }
            let post = (action == BuiltinAction::Cache && !exact).then_some(PostAction {
                step: index,
                key,
                patterns,
                version: save_version,
            });
            Ok((Status::Success, outputs, post))
        }
        BuiltinAction::UploadArtifact => {
            let name = if input("name").is_empty() { "artifact" } else { input("name") };
            let patterns: Vec<String> = input("path").lines().map(str::to_string).collect();
            let resolved = crate::paths::resolve(&dirs.workspace, &home, &patterns);
            if resolved.is_empty() {
                let message = format!("no files were found with the provided path: {}", input("path").trim());
                return match input("if-no-files-found") {
                    "error" => Err(message),
                    "ignore" => Ok((Status::Success, outputs, None)),
                    _ => {
                        log(&format!("warning: {message}. No artifact will be uploaded."));
                        Ok((Status::Success, outputs, None))
                    }
                };
            }
            let uploaded = shared.artifacts.upload(name, &resolved, input("overwrite") == "true")?;
            log(&format!(
                "artifact `{name}` uploaded: {} files, {} bytes, stored in {}",
                uploaded.n_files,
                uploaded.size,
                uploaded.location.display()
            ));
            outputs.insert("artifact-id".to_string(), name.to_string());
            Ok((Status::Success, outputs, None))
        }
        BuiltinAction::DownloadArtifact => {
            let dest = crate::paths::normalize(&dirs.workspace.join(input("path")));
            let name = Some(input("name")).filter(|n| !n.is_empty());
            let n = shared.artifacts.download(name, &dest)?;
            log(&format!("downloaded {n} files to {}", dest.display()));
            outputs.insert("download-path".to_string(), dest.to_string_lossy().into_owned());
            Ok((Status::Success, outputs, None))
        }
    }
}

async fn resolve_ref(repo: &Path, name: &str) -> Result<String, String> {
    let output = tokio::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "--verify", "--quiet", &format!("{name}^{{commit}}")])
        .output()
        .await
        .map_err(|e| format!("cannot run git: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(format!("ref `{name}` does not exist in the repository"))
    }
}
