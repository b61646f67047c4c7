//! One leg of a job (a job, or one combination of its matrix): its directories, environment,
//! containers, steps in order, post actions and outputs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use spec::expr::{self, Value};
use spec::workflow::{Job, Step, StepAction};

use super::contexts::*;
use super::slots::*;
use super::step::*;
use super::*;
use crate::cache::Saved;
use crate::commands::{self};
use crate::process::Stream;
use crate::{Cancel, Executor};

/// Per-leg state that steps change: environment, PATH additions, outputs, masks.
pub(super) struct LegState {
    pub(super) env: BTreeMap<String, String>,
    pub(super) path_prepend: Vec<String>,
    pub(super) masks: commands::Masker,
    pub(super) summary: String,
    pub(super) post: Vec<super::action::Post>,
    /// What each step saved through `$GITHUB_STATE`, by step index, for its later phases.
    pub(super) saved: HashMap<usize, BTreeMap<String, String>>,
    pub(super) pgids: Vec<i32>,
    /// Where steps run: this machine, or the job's container.
    pub(super) executor: Arc<dyn Executor>,
    /// The job container's shell (`bash` or `sh`), when the job runs in a container.
    pub(super) container_shell: Option<String>,
    /// The job's Docker network, when it has services.
    pub(super) network: Option<String>,
    /// `GITHUB_JOB`: the job's id.
    pub(super) job_id: String,
}

/// Work a built-in action leaves for the end of the job (the cache save).
pub(super) struct PostAction {
    pub(super) step: usize,
    pub(super) key: String,
    /// The `path` patterns, resolved when the job ends and has produced the files.
    pub(super) patterns: Vec<String>,
    pub(super) version: String,
}

pub(super) async fn run_leg(
    shared: &Arc<Shared>,
    job: &Job,
    name: String,
    contexts: Contexts,
    cancel: Cancel,
) -> JobReport {
    let started = Instant::now();
    let step_names: Vec<String> = job.steps.iter().enumerate().map(|(i, s)| step_name(s, i, &contexts)).collect();
    let report = JobReport {
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
    let fail =
        async |report: JobReport, status: Status, error: String| fail_leg(shared, started, report, status, error).await;
    if let Err(error) = check_executor(job, &contexts) {
        return fail(report, Status::Failure, error).await;
    }
    // Global concurrency: one slot per running leg.
    let mut cancel_wait = cancel.clone();
    let permit = tokio::select! {
        permit = shared.slots.clone().acquire_owned() => permit.ok(),
        () = cancel_wait.cancelled() => None,
    };
    if cancel.is_cancelled() {
        return fail(report, Status::Cancelled, "cancelled before it started".to_string()).await;
    }
    // Jobs in the same concurrency group run one at a time; one with `cancel-in-progress`
    // cancels the job of its group that is running.
    let (group_source, cancel) = cancel.child();
    let group_lock = match &job.concurrency {
        Some(concurrency) => {
            let group = match contexts.render(&concurrency.group) {
                Ok(group) => group,
                Err(error) => return fail(report, Status::Failure, error).await,
            };
            let cancel_in_progress = match &concurrency.cancel_in_progress {
                Some(text) => match contexts.evaluate(text) {
                    Ok(value) => value.is_truthy(),
                    Err(error) => return fail(report, Status::Failure, error).await,
                },
                None => false,
            };
            let slot = {
                let mut groups = shared.concurrency.lock().await;
                let slot = groups.entry(group.clone()).or_default();
                if cancel_in_progress && let Some(holder) = slot.holder.take() {
                    holder.cancel();
                }
                slot.lock.clone()
            };
            let mut cancel_wait = cancel.clone();
            let guard = tokio::select! {
                guard = slot.lock_owned() => guard,
                () = cancel_wait.cancelled() => {
                    return fail(report, Status::Cancelled, "cancelled while waiting for its concurrency group".to_string()).await;
                }
            };
            if let Some(entry) = shared.concurrency.lock().await.get_mut(&group) {
                entry.holder = Some(group_source.clone());
            }
            Some(guard)
        }
        None => None,
    };
    // What follows holds the slot. Its large state is made only now, in a box: the legs that
    // wait for a slot stay small (a fan-out of a hundred jobs does not touch a hundred of them),
    // and the box that the job before freed is used again.
    let held = Held { permit, group_lock, group_source, report, step_names };
    Box::pin(run_held(shared, job, name, contexts, cancel, held)).await
}

/// What a leg holds once it has a slot, and what it brings from before.
struct Held {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    group_lock: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// Kept while the leg runs: the source of the token that `cancel-in-progress` cancels.
    group_source: crate::CancelSource,
    report: JobReport,
    step_names: Vec<String>,
}

/// Ends a leg that did not run its steps: `status`, with `error`, reported as the job's end.
async fn fail_leg(
    shared: &Shared,
    started: Instant,
    mut report: JobReport,
    status: Status,
    error: String,
) -> JobReport {
    report.status = status;
    report.error = Some(error.clone());
    report.duration = started.elapsed();
    let _ = shared
        .events
        .send(RunEvent::JobFinished { job: report.name.clone(), status, duration: report.duration, error: Some(error) })
        .await;
    report
}

/// The leg from its start to its end, holding its slot (and its concurrency group).
async fn run_held(
    shared: &Arc<Shared>,
    job: &Job,
    name: String,
    mut contexts: Contexts,
    cancel: Cancel,
    held: Held,
) -> JobReport {
    let Held { permit, group_lock, group_source: _group_source, mut report, step_names } = held;
    // The job starts now, with its slot: its time, and its `timeout-minutes`, do not count the wait.
    let started = Instant::now();
    report.started_at_ms = unix_ms();
    let request = &shared.request;
    let fail =
        async |report: JobReport, status: Status, error: String| fail_leg(shared, started, report, status, error).await;
    // Started means running: a job waiting for a slot or its concurrency group has not started.
    let _ = shared.events.send(RunEvent::JobStarted { job: name.clone(), steps: step_names.clone() }).await;
    let (slot, handle, reused) = shared.workspaces.take(&request.run_dir, &name, shared.config.keep_workspaces);
    let mut dirs = LegDirs { workspace: slot.join("workspace"), temp: slot.join("temp"), files: slot, handle };
    let tool_cache = shared.config.data_dir.join("toolcache");
    // A reused slot was emptied, not removed: its folders (and the tool cache) exist.
    if !reused {
        for dir in [&dirs.workspace, &dirs.temp, &tool_cache] {
            if let Err(error) = std::fs::create_dir_all(dir) {
                return fail(report, Status::Failure, format!("cannot create {}: {error}", dir.display())).await;
            }
        }
        if !shared.config.keep_workspaces {
            dirs.handle = open_handle(&dirs.files);
        }
    }
    let stamps = [stamp(&dirs, "workspace"), stamp(&dirs, "temp")];
    contexts.workspace = dirs.workspace.clone();
    contexts.set_github("job", Value::str(&job.id));
    contexts.set_github("workspace", Value::str(dirs.workspace.to_string_lossy()));
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
        masks: shared.masks.clone(),
        summary: String::new(),
        post: Vec::new(),
        saved: HashMap::new(),
        pgids: Vec::new(),
        executor: shared.config.executor.clone(),
        container_shell: None,
        network: None,
        job_id: job.id.clone(),
    };
    for (key, text) in request.workflow.env.iter().chain(job.env.iter()) {
        contexts.set("env", string_map(&state.env));
        match contexts.render(text) {
            Ok(value) => {
                state.env.insert(key.clone(), value);
            }
            Err(error) => return fail(report, Status::Failure, format!("env `{key}`: {error}")).await,
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
                    release(&shared.workspaces, &dirs, stamps).await;
                }
                return fail(report, Status::Failure, error).await;
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
                )
                .await;
            }
            Err(error) => return fail(report, Status::Failure, error).await,
        },
        None => DEFAULT_JOB_TIMEOUT,
    };
    let deadline = started + job_timeout;
    let (timeout_source, leg_cancel) = cancel.child();
    let timer = tokio::spawn({
        let source = timeout_source.clone();
        async move {
            tokio::time::sleep_until(deadline).await;
            source.cancel();
        }
    });

    let mut failed = false;
    let timeout = deadline.saturating_duration_since(Instant::now());
    if let Err(error) =
        super::action::run_pres(shared, job, &name, &contexts, &mut state, &dirs, &leg_cancel, timeout).await
    {
        emit_line(shared, &name, 0, Stream::Stderr, &format!("error: {error}"), &state.masks).await;
        report.error = Some(error);
        failed = true;
    }
    for (index, step) in job.steps.iter().enumerate() {
        let step_started = Instant::now();
        let cancelled = leg_cancel.is_cancelled();
        contexts.status = expr::Status { failed, cancelled, blocked: false };
        if let Some(Value::Object(job_ctx)) = contexts.get_mut("job") {
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
                emit_line(shared, &name, index, Stream::Stderr, &format!("error: {error}"), &state.masks).await;
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
            )
            .await;
            continue;
        }
        let _ = shared.events.send(RunEvent::StepStarted { job: name.clone(), step: index }).await;
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
                emit_line(shared, &name, index, Stream::Stderr, &format!("error: {error}"), &state.masks).await;
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
        )
        .await;
    }

    // Post steps, in reverse order: actions' `post` (by their `post-if`, `always()` when
    // unset) and the built-in cache's saves (only when the job succeeded).
    let post = std::mem::take(&mut state.post);
    for action in post.into_iter().rev() {
        let cancelled = leg_cancel.is_cancelled();
        match action {
            super::action::Post::Cache(action) => {
                if failed || cancelled {
                    continue;
                }
                save_cache(shared, &name, action, &dirs, &state.masks).await;
            }
            super::action::Post::Action { step, name: title, action, condition, env } => {
                contexts.status = expr::Status { failed, cancelled, blocked: false };
                let run = match &condition {
                    Some(condition) => contexts.condition(Some(condition)).unwrap_or(false),
                    None => true,
                };
                if !run {
                    continue;
                }
                emit_line(shared, &name, step, Stream::Stdout, &format!("▸ {title}"), &state.masks).await;
                let (step_cancel, step_deadline) = if cancelled {
                    (Cancel::never(), Instant::now() + AFTER_CANCEL_BUDGET)
                } else {
                    (leg_cancel.clone(), deadline)
                };
                let timeout = step_deadline.saturating_duration_since(Instant::now());
                let status = super::action::run_post(
                    shared,
                    &job.steps[step],
                    step,
                    &name,
                    &action,
                    env,
                    &mut state,
                    &dirs,
                    &step_cancel,
                    timeout,
                )
                .await;
                if status != Status::Success {
                    failed = true;
                }
            }
        }
    }
    timer.abort();
    drop(group_lock);

    // Outputs, evaluated with the final steps context.
    for (key, text) in &job.outputs {
        match contexts.render(text) {
            Ok(value) => {
                report.outputs.insert(key.clone(), state.masks.mask(&value));
            }
            Err(error) => {
                emit_line(
                    shared,
                    &name,
                    job.steps.len().saturating_sub(1),
                    Stream::Stderr,
                    &format!("warning: output `{key}`: {error}"),
                    &state.masks,
                )
                .await
            }
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
                )
                .await;
            }
        }
    }
    // The job's processes have ended: its slot goes to the next job now, and what is left here
    // (emptying its folders, its report) happens while that job starts rather than before.
    drop(permit);
    tokio::task::yield_now().await;
    if !shared.config.keep_workspaces {
        release(&shared.workspaces, &dirs, stamps).await;
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
    let _ = shared
        .events
        .send(RunEvent::JobFinished {
            job: name,
            status: report.status,
            duration: report.duration,
            error: report.error.clone(),
        })
        .await;
    report
}

/// Saves what a built-in cache step restored (or missed), at the end of a job that succeeded.
async fn save_cache(shared: &Shared, leg: &str, action: PostAction, dirs: &LegDirs, masks: &commands::Masker) {
    let Some(cache) = shared.cache.clone() else { return };
    let scope = shared.request.repo.repository.clone();
    let workspace = dirs.workspace.clone();
    let PostAction { step, key, patterns, version } = action;
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
    let paths = crate::paths::resolve(&workspace, &home, &patterns);
    let saved =
        tokio::task::spawn_blocking(move || cache.save(&scope, &version, &key, &paths, &workspace).map(|s| (s, key)))
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
    emit_line(shared, leg, step, Stream::Stdout, &format!("post: {message}"), masks).await;
}

/// The Docker engine, connected on first use in a run; what dead Tandem processes left is reaped then.
pub(super) async fn docker_engine(shared: &Shared) -> Result<crate::docker::DockerEngine, String> {
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
pub(super) async fn start_containers(
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
    Ok(engine.start_job(&request).await?)
}

/// Refuses runners no executor here can serve.
pub(super) fn check_executor(job: &Job, contexts: &Contexts) -> Result<(), String> {
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

pub(super) fn step_name(step: &Step, index: usize, contexts: &Contexts) -> String {
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
pub(super) async fn record_step(
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
    let _ = shared
        .events
        .send(RunEvent::StepFinished { job: report.name.clone(), step: index, status: conclusion, duration })
        .await;
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

pub(super) async fn emit_line(
    shared: &Shared,
    job: &str,
    step: usize,
    stream: Stream,
    text: &str,
    masks: &commands::Masker,
) {
    let line = RunEvent::Line { job: job.to_string(), step, stream, text: masks.mask(text) };
    // A reader that is gone (the run's output closed) takes nothing more; the run goes on.
    let _ = shared.events.send(line).await;
}

/// [`emit_line`] of a line the caller gives away (a step's output line, most of the run's lines).
pub(super) async fn emit_owned_line(
    shared: &Shared,
    job: &str,
    step: usize,
    stream: Stream,
    text: String,
    masks: &commands::Masker,
) {
    let line = RunEvent::Line { job: job.to_string(), step, stream, text: masks.mask_owned(text) };
    let _ = shared.events.send(line).await;
}

/// The lines of a built-in action, as the step's output.
pub(super) struct StepLog<'a> {
    pub(super) shared: &'a Shared,
    pub(super) leg: &'a str,
    pub(super) index: usize,
    pub(super) masks: &'a commands::Masker,
}

impl crate::LineSink for StepLog<'_> {
    fn line<'a>(&'a self, text: String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move { emit_line(self.shared, self.leg, self.index, Stream::Stdout, &text, self.masks).await })
    }
}
