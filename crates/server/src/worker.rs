//! The run worker: takes queued runs from the store, executes them with the same engine as
//! `tandem run`, stores their logs in chunks as they come, and records how they ended.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use exec::CancelSource;
use exec::engine::{self, EngineConfig, RunEvent, RunRequest, Status};
use exec::process::ProcessGroups;
use git::repo::RepoFacts;
use spec::expr::Value;
use store::{LogLine, Run, RunStatus};
use tokio::sync::{Semaphore, mpsc};

use crate::{App, Metrics, repos};

/// Lines are written to the store at least this often while a run is live.
const LOG_FLUSH: Duration = Duration::from_millis(250);
const LOG_CHUNK_LINES: usize = 500;

pub async fn run_forever(app: Arc<App>) {
    let slots = Arc::new(Semaphore::new(app.config.max_parallel_runs.max(1)));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        match app.store.claim_next().await {
            Ok(Some(run)) => {
                let app = app.clone();
                // The cancel handle exists from the moment the run is claimed; `execute` then
                // re-reads the stored flag, so a cancel arriving in between is never lost.
                let (source, cancel) = CancelSource::new();
                if let Ok(mut running) = app.running.lock() {
                    running.insert(run.id, source.clone());
                }
                // Supervised: a panic while executing fails the run with the reason instead of
                // leaving it `running` until the next restart.
                tokio::spawn(async move {
                    let id = run.id;
                    let task = tokio::spawn({
                        let app = app.clone();
                        async move { execute(&app, run, source, cancel).await }
                    });
                    let failure = match task.await {
                        Ok(Ok(())) => None,
                        Ok(Err(error)) => Some(error),
                        Err(panic) => Some(format!("internal error while executing the run: {panic}")),
                    };
                    if let Some(error) = failure {
                        tracing::warn!("run {id}: {error}");
                        if let Err(store_error) = app.store.finish(id, RunStatus::Failure, Some(error), None).await {
                            tracing::error!("run {id}: cannot record its failure: {store_error}");
                        }
                    }
                    app.running.lock().map(|mut r| r.remove(&id)).ok();
                    drop(permit);
                });
            }
            Ok(None) => {
                drop(permit);
                tokio::select! {
                    () = app.wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Err(error) => {
                drop(permit);
                tracing::error!("cannot take a run from the queue: {error}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn line(job: &str, step: Option<usize>, text: String) -> LogLine {
    LogLine { job: job.to_string(), step, text }
}

async fn execute(app: &Arc<App>, run: Run, cancel_source: CancelSource, cancel: exec::Cancel) -> Result<(), String> {
    let repo = app.store.repo_by_id(run.repo_id).await.map_err(|e| e.to_string())?;
    crate::status::post(app, &repo, &run, RunStatus::Running).await;
    let result = execute_inner(app, &repo, &run, cancel_source, cancel).await;
    let finished = app.store.run(run.id).await.map_err(|e| e.to_string())?;
    let status = if result.is_err() { RunStatus::Failure } else { finished.status };
    crate::status::post(app, &repo, &finished, status).await;
    let finished = app.store.run(run.id).await.map_err(|e| e.to_string())?;
    crate::code::queue::run_finished(app, &finished).await;
    result
}

async fn execute_inner(
    app: &Arc<App>,
    repo: &store::Repo,
    run: &Run,
    cancel_source: CancelSource,
    cancel: exec::Cancel,
) -> Result<(), String> {
    let mirror = repos::sync(app, repo, Some(&run.sha)).await?;
    let source = repos::git(&mirror, &["show", &format!("{}:{}", run.sha, run.workflow)]).await?;
    let (workflow, diagnostics) = ci::check::validate(&source);
    let errors: Vec<String> =
        diagnostics.iter().filter(|d| d.is_error()).map(|d| d.render(&run.workflow, &source)).collect();
    let Some(workflow) = workflow.filter(|_| errors.is_empty()) else {
        let lines: Vec<LogLine> = errors.join("\n").lines().map(|l| line("workflow", None, l.to_string())).collect();
        app.store.append_log(run.id, &lines).await.map_err(|e| e.to_string())?;
        let reason = format!("{} has {} error(s); see the log", run.workflow, errors.len().max(1));
        app.store.finish(run.id, RunStatus::Failure, Some(reason), None).await.map_err(|e| e.to_string())?;
        Metrics::add(&app.metrics.runs_failure, 1);
        return Ok(());
    };
    // The push is scanned for secrets when the repository has rules; findings lead the log.
    let mut scanned = crate::scanning::scan_push(app, &mirror, run).await;
    scanned.extend(crate::scanning::scan_dependencies(app, &mirror, run).await);
    if !scanned.is_empty() {
        app.store.append_log(run.id, &scanned).await.map_err(|e| e.to_string())?;
    }
    let commit = repos::git(&mirror, &["log", "-1", "--format=%an%x00%ae%x00%B", &run.sha]).await.unwrap_or_default();
    let mut parts = commit.splitn(3, '\0');
    let (author_name, author_email, message) =
        (parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let facts = RepoFacts {
        root: mirror.clone(),
        sha: run.sha.clone(),
        git_ref: run.git_ref.clone(),
        branch: run.git_ref.strip_prefix("refs/heads/").map(str::to_string),
        repository: repo.name.clone(),
        actor: "tandem".to_string(),
        commit_message: message.trim().to_string(),
        author_name: author_name.to_string(),
        author_email: author_email.to_string(),
        before: run.before_sha.clone(),
        changed_paths: Vec::new(),
    };
    let run_dir = app.config.data_dir.join("runs").join(run.id.to_string());
    std::fs::create_dir_all(&run_dir).map_err(|e| e.to_string())?;
    let event = Value::from_json(&run.payload);
    let inputs = match event.get("inputs") {
        Some(Value::Object(map)) if run.event == "workflow_dispatch" => map.clone(),
        _ => BTreeMap::new(),
    };
    // Jobs with `environment:` deploy the run's commit there once they succeed.
    let deploying: Vec<(String, String)> = workflow
        .jobs
        .iter()
        .filter_map(|job| job.environment.as_ref().map(|e| (job.id.clone(), e.name.raw.clone())))
        .collect();
    // Secrets and variables from the vault: org, then repository; environments' on the side.
    let (secrets, vars, environment_secrets) = crate::api::secrets::for_run(app, &repo.name)
        .await
        .map_err(|e| format!("the run's secrets could not be read: {e}"))?;
    let request = RunRequest {
        workflow: Arc::new(workflow),
        workflow_path: run.workflow.clone(),
        jobs: run.jobs.clone(),
        repo: facts,
        worktree: false,
        event_name: run.event.clone(),
        event,
        inputs,
        secrets,
        vars,
        run_id: run.id as u64,
        run_number: run.number as u64,
        run_attempt: run.run_attempt as u64,
        run_dir: run_dir.clone(),
        platforms: BTreeMap::new(),
        token: exec::engine::run_token(),
        call_depth: 0,
        environment_secrets,
        environment_gate: Some(exec::engine::EnvironmentGate(Arc::new(crate::deploy::job_gate::JobGate::new(
            app.clone(),
            run.clone(),
        )))),
    };
    let config = EngineConfig {
        data_dir: app.config.data_dir.clone(),
        max_parallel: app.config.max_parallel_jobs,
        cache_limit: exec::cache::DEFAULT_LIMIT,
        keep_workspaces: false,
        actions: app.config.actions.clone(),
        executor: std::sync::Arc::new(exec::LocalExecutor),
    };
    if app.store.run(run.id).await.map_err(|e| e.to_string())?.cancel_requested {
        cancel_source.cancel();
    }
    // One run at a time per workflow concurrency group; a newer one replaces one still waiting
    // and, with `cancel-in-progress`, cancels the one running.
    let _turn = match engine::workflow_concurrency(&request) {
        Ok(None) => None,
        Ok(Some((group, cancel_in_progress))) => {
            match app.concurrency.wait_turn(&group, run.id, cancel_in_progress, &cancel_source, &cancel).await {
                Some(turn) => Some(turn),
                None => {
                    let reason = format!("cancelled: a newer run took its place in concurrency group `{group}`");
                    app.store
                        .finish(run.id, RunStatus::Cancelled, Some(reason), None)
                        .await
                        .map_err(|e| e.to_string())?;
                    Metrics::add(&app.metrics.runs_cancelled, 1);
                    return Ok(());
                }
            }
        }
        Err(error) => {
            let reason = format!("{}: concurrency: {error}", run.workflow);
            app.store.finish(run.id, RunStatus::Failure, Some(reason), None).await.map_err(|e| e.to_string())?;
            Metrics::add(&app.metrics.runs_failure, 1);
            return Ok(());
        }
    };
    let groups = ProcessGroups::with_journal(app.config.data_dir.join("pgids").join(run.id.to_string()));
    let (tx, rx) = mpsc::channel(engine::EVENT_BUFFER);
    let collector = tokio::spawn(collect_logs(app.clone(), run.id, rx));
    let started = std::time::Instant::now();
    let token = request.token.clone();
    app.run_tokens.register(&token, run.id);
    let report = engine::run(request, config, tx, cancel, groups.clone()).await;
    app.run_tokens.forget(&token);
    groups.kill_all();
    groups.close_journal();
    let _ = collector.await;
    for job in &report.jobs {
        for step in &job.steps {
            let counter = match step.status {
                Status::Success => &app.metrics.steps_success,
                Status::Failure => &app.metrics.steps_failure,
                Status::Skipped => &app.metrics.steps_skipped,
                Status::Cancelled => &app.metrics.steps_cancelled,
            };
            Metrics::add(counter, 1);
        }
    }
    Metrics::add(&app.metrics.run_seconds_milli, started.elapsed().as_millis() as u64);
    let (status, counter) = match report.status {
        Status::Success => (RunStatus::Success, &app.metrics.runs_success),
        Status::Cancelled => (RunStatus::Cancelled, &app.metrics.runs_cancelled),
        Status::Failure | Status::Skipped => (RunStatus::Failure, &app.metrics.runs_failure),
    };
    Metrics::add(counter, 1);
    let reason = report.jobs.iter().find_map(|j| j.error.clone());
    request_deployments(app, repo, run, &deploying, &report).await;
    let report = serde_json::to_value(&report).ok();
    app.store.finish(run.id, status, reason, report).await.map_err(|e| e.to_string())?;
    // Workspaces are gone already; artifacts stay with the run.
    Ok(())
}

/// Workflow-level concurrency groups: one run at a time per group, as on GitHub. A run that
/// arrives cancels the one waiting for the group (only the newest waits) and, with
/// `cancel-in-progress`, the one running.
#[derive(Debug, Default)]
pub struct Groups {
    groups: Mutex<HashMap<String, Group>>,
}

#[derive(Debug, Default)]
struct Group {
    turn: Arc<tokio::sync::Mutex<()>>,
    running: Option<(i64, CancelSource)>,
    waiting: Option<(i64, CancelSource)>,
}

/// A run's turn in its group; the group is free again when it is dropped.
pub struct Turn<'a> {
    groups: &'a Groups,
    group: String,
    run_id: i64,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        // The run is over: nothing newer may cancel it any more.
        if let Ok(mut groups) = self.groups.groups.lock()
            && let Some(entry) = groups.get_mut(&self.group)
            && entry.running.as_ref().is_some_and(|(id, _)| *id == self.run_id)
        {
            entry.running = None;
        }
    }
}

impl Groups {
    /// Waits for the run's turn in `group`; `None` when the run was cancelled meanwhile (by a
    /// newer run of the group, or by a person).
    async fn wait_turn(
        &self,
        group: &str,
        run_id: i64,
        cancel_in_progress: bool,
        source: &CancelSource,
        cancel: &exec::Cancel,
    ) -> Option<Turn<'_>> {
        let turn = {
            let mut groups = self.groups.lock().ok()?;
            let entry = groups.entry(group.to_string()).or_default();
            if let Some((_, waiting)) = entry.waiting.take() {
                waiting.cancel();
            }
            if cancel_in_progress && let Some((_, running)) = &entry.running {
                running.cancel();
            }
            entry.waiting = Some((run_id, source.clone()));
            entry.turn.clone()
        };
        let mut cancelled = cancel.clone();
        let guard = tokio::select! {
            guard = turn.lock_owned() => guard,
            () = cancelled.cancelled() => return None,
        };
        if cancel.is_cancelled() {
            return None;
        }
        let mut groups = self.groups.lock().ok()?;
        let entry = groups.entry(group.to_string()).or_default();
        if entry.waiting.as_ref().is_some_and(|(id, _)| *id == run_id) {
            entry.waiting = None;
        }
        entry.running = Some((run_id, source.clone()));
        Some(Turn { groups: self, group: group.to_string(), run_id, _guard: guard })
    }
}

/// Turns engine events into stored log lines, flushed in chunks.
async fn collect_logs(app: Arc<App>, run_id: i64, mut rx: mpsc::Receiver<RunEvent>) {
    let mut buffer: Vec<LogLine> = Vec::new();
    let mut steps: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    let mut tick = tokio::time::interval(LOG_FLUSH);
    loop {
        tokio::select! {
            event = rx.recv() => {
                let Some(event) = event else { break };
                match event {
                    RunEvent::JobStarted { job, steps: names } => {
                        buffer.push(line(&job, None, format!("▶ job {job} started ({} steps)", names.len())));
                        steps.insert(job, names);
                    }
                    RunEvent::StepStarted { job, step } => {
                        let name = steps.get(&job).and_then(|s| s.get(step)).cloned().unwrap_or_default();
                        buffer.push(line(&job, Some(step), format!("▶ {name}")));
                    }
                    RunEvent::Line { job, step, text, .. } => buffer.push(line(&job, Some(step), text)),
                    RunEvent::StepFinished { job, step, status, duration } => {
                        let name = steps.get(&job).and_then(|s| s.get(step)).cloned().unwrap_or_default();
                        buffer.push(line(&job, Some(step), format!("{} {name} ({:.1}s)", status.as_str(), duration.as_secs_f64())));
                    }
                    RunEvent::JobFinished { job, status, duration, error } => {
                        let error = error.map(|e| format!(" — {e}")).unwrap_or_default();
                        buffer.push(line(&job, None, format!("job {job}: {}{error} ({:.1}s)", status.as_str(), duration.as_secs_f64())));
                    }
                }
                if buffer.len() >= LOG_CHUNK_LINES {
                    flush(&app, run_id, &mut buffer).await;
                }
            }
            _ = tick.tick() => flush(&app, run_id, &mut buffer).await,
        }
    }
    flush(&app, run_id, &mut buffer).await;
}

async fn flush(app: &App, run_id: i64, buffer: &mut Vec<LogLine>) {
    if buffer.is_empty() {
        return;
    }
    if let Err(error) = app.store.append_log(run_id, buffer).await {
        tracing::error!("run {run_id}: cannot store {} log lines: {error}", buffer.len());
        return;
    }
    buffer.clear();
}

/// Requests a deployment for each succeeded job with an `environment`, noting it in the log.
async fn request_deployments(
    app: &Arc<App>,
    repo: &store::Repo,
    run: &Run,
    deploying: &[(String, String)],
    report: &engine::RunReport,
) {
    for (job, environment) in deploying {
        let legs: Vec<_> = report.jobs.iter().filter(|j| &j.id == job).collect();
        if legs.is_empty() || legs.iter().any(|j| j.status != Status::Success) {
            continue;
        }
        let text = if environment.contains("${{") {
            format!("environment `{environment}` is an expression; deployments need a literal environment name")
        } else {
            match crate::deploy::plan(app, repo, &run.sha, environment, store::DeploymentKind::Deploy, Some(run.id))
                .await
            {
                Ok(new) => match app.store.request_deployment(new, &format!("run/{}", run.id)).await {
                    Ok(deployment) => {
                        // Whoever let the job use the environment approved what it deploys there.
                        if let Some((approver, reason)) =
                            crate::deploy::job_gate::approval(app, run.id, job, environment).await
                        {
                            carry_approval(app, deployment.id, &approver, reason).await;
                        }
                        crate::api::attest(app, repo, &deployment).await;
                        app.deployer.wake.notify_waiters();
                        format!(
                            "deployment {} of {} to {environment} requested; follow it with `tandem deployments show {} --wait`",
                            deployment.id, deployment.release, deployment.id
                        )
                    }
                    Err(error) => format!("cannot request the deployment to {environment}: {error}"),
                },
                Err(error) => format!("nothing deployed to {environment}: {error}"),
            }
        };
        if let Err(error) = app.store.append_log(run.id, &[line(job, None, text)]).await {
            tracing::error!("run {}: cannot log what job {job} deployed: {error}", run.id);
        }
    }
}

/// Approves deployment `id` as `approver` did its job (and keeps their reason as an override).
async fn carry_approval(app: &App, id: i64, approver: &str, reason: Option<String>) {
    if let Err(error) = app.store.approve_deployment(id, approver).await {
        tracing::error!("deployment {id}: cannot carry the job's approval over: {error}");
        return;
    }
    if let Some(reason) = reason {
        let payload = serde_json::json!({"reason": reason, "approved_for": "the job that deployed it"});
        if let Err(error) =
            app.store.record_event("deployment.override", &format!("deployment/{id}"), approver, payload).await
        {
            tracing::error!("deployment {id}: cannot record the override: {error}");
        }
    }
}
