//! The scheduler: jobs start when their needs are done, matrix legs run under the job's `max-parallel`
//! and the run's slots, and `fail-fast` cancels the siblings of a failed leg.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spec::expr::{self, Value};
use spec::workflow::Job;
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio::task::JoinSet;

use super::contexts::*;
use super::leg::*;
use super::*;
use crate::Cancel;
use ci::matrix::Combination;

/// Runs the workflow and reports every job. Never panics on user input: problems become job
/// failures with an error message.
pub async fn run(
    request: RunRequest,
    config: EngineConfig,
    events: mpsc::Sender<RunEvent>,
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
    let event_path = request.run_dir.join("event.json");
    let written = std::fs::create_dir_all(&request.run_dir).and_then(|()| {
        std::fs::write(&event_path, serde_json::to_vec_pretty(&request.event.to_json()).unwrap_or_default())
    });
    if let Err(error) = written {
        tracing::warn!("cannot write the event payload to {}: steps will not find it: {error}", event_path.display());
    }
    let artifacts = ArtifactStore::new(&request.run_dir.join("artifacts"));
    let github = Arc::new(github_context(&request));
    // Actions that run as themselves may call the cache service: it runs while the run does.
    let real_actions = workflow.jobs.iter().flat_map(|j| &j.steps).any(|s| {
        matches!(&s.action, spec::workflow::StepAction::Uses { builtin, target, .. }
            if !matches!(target, spec::workflow::ActionRef::Docker { .. }) && (builtin.is_none() || !config.actions.builtin))
    });
    let cache_service = match (&cache, real_actions) {
        (Some(store), true) => {
            let own = format!("{}@{}", request.repo.repository, request.repo.git_ref);
            let mut scopes = vec![own];
            let base = github.get("base_ref").map(Value::to_text).unwrap_or_default();
            for branch in [base.as_str(), "main", "master"] {
                let scope = format!("{}@refs/heads/{branch}", request.repo.repository);
                if !branch.is_empty() && !scopes.contains(&scope) {
                    scopes.push(scope);
                }
            }
            let token = crate::cache_service::runtime_token(request.run_id);
            let artifacts = request.run_dir.join("artifacts-v4");
            match crate::cache_service::start(store.clone(), token, scopes, artifacts).await {
                Ok(service) => Some(service),
                Err(error) => {
                    tracing::warn!("the cache service did not start; actions that cache will miss: {error}");
                    None
                }
            }
        }
        _ => None,
    };
    let masks = crate::commands::Masker::new(
        request
            .secrets
            .values()
            .chain(request.environment_secrets.values().flat_map(|e| e.values()))
            .chain([&request.token])
            .chain(cache_service.as_ref().map(|s| &s.token))
            .filter(|s| !s.is_empty())
            .flat_map(|s| crate::commands::secret_forms(s))
            .collect::<Vec<_>>(),
    );
    let base_env = Arc::new(super::step::base_environment(&request, &config, &github, cache_service.as_ref()));
    let shared = Arc::new(Shared {
        base_env,
        masks,
        _cache_service: cache_service,
        n_calls: std::sync::atomic::AtomicUsize::new(0),
        action_sources: tokio::sync::OnceCell::new(),
        fetched: std::sync::Mutex::default(),
        node: tokio::sync::OnceCell::new(),
        slots: Arc::new(Semaphore::new(config.max_parallel.max(1))),
        request,
        config,
        events,
        groups,
        concurrency: Mutex::new(HashMap::new()),
        workspaces: Arc::default(),
        docker: tokio::sync::OnceCell::new(),
        n_container_jobs: std::sync::atomic::AtomicUsize::new(0),
        artifacts,
        cache,
        github,
    });
    let mut results: BTreeMap<usize, JobResult> = BTreeMap::new();
    let mut reports: Vec<(usize, Vec<JobReport>)> = Vec::new();
    let mut running: JoinSet<(usize, JobResult, Vec<JobReport>)> = JoinSet::new();
    // How many needs each job still waits for, and which jobs wait for each: a job that ends
    // makes ready only those that need it, without a look at every job of the graph.
    let mut waiting: HashMap<usize, usize> = HashMap::new();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); graph.ids.len()];
    for &index in &wanted {
        let mut needs = graph.needs[index].clone();
        needs.sort_unstable();
        needs.dedup();
        waiting.insert(index, needs.len());
        for need in needs {
            dependents[need].push(index);
        }
    }
    let mut ready: Vec<usize> = wanted.iter().copied().filter(|index| waiting[index] == 0).collect();
    // Which job each task runs, so that a task that panics fails its own job with the reason.
    let mut task_jobs: HashMap<tokio::task::Id, usize> = HashMap::new();
    loop {
        // When a job ends and makes many ready (a fan-out), the first few — as many as there are
        // free slots — go ahead of the others: their tasks reach their processes before the rest
        // are even spawned, instead of after every ready job was prepared.
        let head_start = shared.slots.available_permits().max(1);
        for (n, index) in ready.drain(..).enumerate() {
            if n == head_start {
                tokio::task::yield_now().await;
            }
            let needs: BTreeMap<String, JobResult> =
                graph.needs[index].iter().map(|&n| (graph.ids[n].clone(), results[&n].clone())).collect();
            let shared = shared.clone();
            let cancel = cancel.clone();
            // The task borrows its job from the shared workflow instead of taking a copy of it.
            let workflow = workflow.clone();
            // Boxed where it is made: the task then takes a pointer, not a copy of the whole
            // (large) future at each layer of spawning.
            let handle = running.spawn(Box::pin(async move {
                let (result, legs) = run_job(&shared, &workflow.jobs[index], needs, cancel).await;
                (index, result, legs)
            }));
            task_jobs.insert(handle.id(), index);
        }
        let ended = match running.join_next_with_id().await {
            Some(Ok((_, (index, result, legs)))) => {
                results.insert(index, result);
                reports.push((index, legs));
                index
            }
            Some(Err(error)) => {
                let Some(&index) = task_jobs.get(&error.id()) else { break };
                let job = &workflow.jobs[index];
                tracing::error!(job = %job.id, %error, "a job's task panicked; the job fails");
                let _ = shared
                    .events
                    .send(RunEvent::JobFinished {
                        job: job.id.clone(),
                        status: Status::Failure,
                        duration: Duration::ZERO,
                        error: Some(format!("internal error: {error}")),
                    })
                    .await;
                results.insert(index, JobResult { status: Status::Failure, outputs: BTreeMap::new() });
                reports.push((index, vec![panicked_leg(job, &error.to_string())]));
                index
            }
            None => break,
        };
        for &dependent in &dependents[ended] {
            if let Some(count) = waiting.get_mut(&dependent) {
                *count -= 1;
                if *count == 0 {
                    ready.push(dependent);
                }
            }
        }
    }
    if !shared.config.keep_workspaces {
        super::slots::park_slots(&shared.workspaces, &shared.config.data_dir, &shared.request.run_dir);
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

pub(super) async fn run_job(
    shared: &Arc<Shared>,
    job: &Job,
    needs: BTreeMap<String, JobResult>,
    cancel: Cancel,
) -> (JobResult, Vec<JobReport>) {
    let request = &shared.request;
    let mut contexts = Contexts::default();
    contexts.set_shared("github", shared.github.clone());
    contexts.set("inputs", Value::Object(request.inputs.clone()));
    contexts.set("vars", string_map(&request.vars));
    let mut secrets = request.secrets.clone();
    secrets.entry("GITHUB_TOKEN".to_string()).or_insert_with(|| request.token.clone());
    // An environment's secrets go only to the jobs that deploy there, once its gates let them.
    let environment = job.environment.as_ref().map(|environment| {
        let mut named = Contexts::default();
        named.set_shared("github", shared.github.clone());
        named.set("inputs", Value::Object(request.inputs.clone()));
        named.set("vars", string_map(&request.vars));
        named.render(&environment.name).unwrap_or_else(|_| environment.name.raw.clone())
    });
    contexts.set("secrets", string_map(&secrets));
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
    let finish = async |status: Status, error: Option<String>| {
        let _ = shared
            .events
            .send(RunEvent::JobFinished {
                job: display.clone(),
                status,
                duration: Duration::ZERO,
                error: error.clone(),
            })
            .await;
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
        Ok(false) if cancel.is_cancelled() => return finish(Status::Cancelled, None).await,
        Ok(false) => return finish(Status::Skipped, None).await,
        Err(error) => return finish(Status::Failure, Some(error)).await,
    }
    if let Some(environment) = &environment {
        if let Some(gate) = &request.environment_gate {
            let mut cancel = cancel.clone();
            if let Err((status, error)) =
                Box::pin(wait_at_gate(shared, gate, &display, &job.id, environment, &mut cancel)).await
            {
                return finish(status, error).await;
            }
        }
        if let Some(own) = request.environment_secrets.get(environment) {
            secrets.extend(own.clone());
            contexts.set("secrets", string_map(&secrets));
        }
    }
    let legs = match matrix_legs(job, &contexts) {
        Ok(legs) => legs,
        Err(error) => return finish(Status::Failure, Some(error)).await,
    };
    if legs.is_empty() {
        return finish(Status::Skipped, Some("the matrix expands to no jobs".to_string())).await;
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
    let plan = LegPlan { fail_fast, n_legs, max_parallel, leg_slots, job_cancel };
    // A job of one leg (most jobs) runs it in its own task: no task to spawn and wake, and the
    // first jobs to become ready reach their processes before the others are prepared. Its
    // panic still fails only this job, as the scheduler's task fails it with the reason.
    let mut inline: Option<LegOutcome> = None;
    let mut set = JoinSet::new();
    if n_legs == 1 {
        let combination = legs.into_iter().next().unwrap_or_default();
        // Boxed: inline, the job's future reserved room for the leg's beside its own state (8 KB
        // where the two boxes hold 5 KB), and a fan-out of a hundred jobs waits with a hundred.
        inline = Some(Box::pin(run_matrix_leg(shared.clone(), job, 0, combination, contexts, &plan)).await);
    } else {
        for (index, combination) in legs.into_iter().enumerate() {
            let (shared, job, contexts) = (shared.clone(), job.clone(), contexts.clone());
            let plan = plan.clone();
            set.spawn(Box::pin(async move { run_matrix_leg(shared, &job, index, combination, contexts, &plan).await }));
        }
    }
    let mut reports: Vec<(usize, JobReport)> = Vec::new();
    let mut called: Vec<(usize, Vec<JobReport>)> = Vec::new();
    let mut outputs = BTreeMap::new();
    let mut failed = false;
    loop {
        let joined = match inline.take() {
            Some(done) => Ok(done),
            None => match set.join_next().await {
                Some(joined) => joined.map_err(|error| error.to_string()),
                None => break,
            },
        };
        let (index, report, tolerated, inner) = match joined {
            Ok(done) => done,
            Err(error) => {
                // A leg's task panicked: its job fails with the reason instead of hanging or vanishing.
                failed = true;
                fail_fast_source.cancel();
                reports.push((usize::MAX, panicked_leg(job, &error)));
                continue;
            }
        };
        if report.status == Status::Failure && !tolerated {
            failed = true;
            if fail_fast {
                fail_fast_source.cancel();
            }
        }
        outputs.extend(report.outputs.clone());
        reports.push((index, report));
        called.push((index, inner));
    }
    reports.sort_by_key(|(i, _)| *i);
    called.sort_by_key(|(i, _)| *i);
    let reports: Vec<JobReport> = reports.into_iter().map(|(_, r)| r).collect();
    let status_reports = reports.clone();
    // The called workflows' jobs follow their callers in the run's report.
    let reports: Vec<JobReport> = reports.into_iter().chain(called.into_iter().flat_map(|(_, inner)| inner)).collect();
    let status = if failed {
        Status::Failure
    } else if status_reports.iter().any(|r| r.status == Status::Cancelled) {
        Status::Cancelled
    } else {
        Status::Success
    };
    (JobResult { status, outputs }, reports)
}

/// What every leg of a job shares: the job's strategy and the cancellation its fail-fast uses.
#[derive(Clone)]
struct LegPlan {
    fail_fast: bool,
    n_legs: usize,
    max_parallel: usize,
    leg_slots: Arc<Semaphore>,
    job_cancel: Cancel,
}

/// A leg's position in its job, its report, whether its failure is tolerated, and the reports of
/// the jobs of the workflow it called.
type LegOutcome = (usize, JobReport, bool, Vec<JobReport>);

/// Runs leg `index` of `job` (its matrix `combination`) once the job's `max-parallel` lets it.
async fn run_matrix_leg(
    shared: Arc<Shared>,
    job: &Job,
    index: usize,
    combination: Combination,
    mut contexts: Contexts,
    plan: &LegPlan,
) -> LegOutcome {
    let LegPlan { fail_fast, n_legs, max_parallel, .. } = *plan;
    let mut job_cancel = plan.job_cancel.clone();
    let is_matrix = job.strategy.as_ref().is_some_and(|s| s.matrix.is_some());
    let name = match (&job.name, is_matrix) {
        (Some(_), _) | (None, false) if !is_matrix => contexts_name(job, &contexts),
        _ => format!("{} {}", contexts_name(job, &contexts), combination.label()),
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
        permit = plan.leg_slots.acquire() => permit.ok(),
        () = job_cancel.cancelled() => None,
    };
    // Job-level `continue-on-error` (often `${{ matrix.experimental }}`): a failure of
    // this leg neither cancels its siblings nor fails the job.
    let tolerated = match &job.continue_on_error {
        Some(text) => contexts.evaluate(text).map(|v| v.is_truthy()).unwrap_or(false),
        None => false,
    };
    if job.call.is_some() {
        // Boxed, as a called workflow's state is large: every leg that waits for a slot would
        // otherwise hold room for one.
        let called = Box::pin(super::call::run_call(&shared, job, name.clone(), contexts, job_cancel.clone()));
        let (report, inner) = called.await;
        return (index, report, tolerated, inner);
    }
    let report = run_leg(&shared, job, name.clone(), contexts, job_cancel.clone()).await;
    (index, report, tolerated, Vec::new())
}

pub(super) fn contexts_name(job: &Job, contexts: &Contexts) -> String {
    job.name.as_ref().and_then(|n| contexts.render(n).ok()).unwrap_or_else(|| job.id.clone())
}

pub(super) fn matrix_legs(job: &Job, contexts: &Contexts) -> Result<Vec<Combination>, String> {
    let Some(node) = job.strategy.as_ref().and_then(|s| s.matrix.as_ref()) else {
        return Ok(vec![Combination::default()]);
    };
    let value = spec::workflow::evaluate_node(node, contexts).map_err(|e| format!("matrix: {e}"))?;
    ci::matrix::expand(&value, &spec::workflow::matrix_key_order(node)).map_err(|e| format!("matrix: {e}"))
}

/// The report of a leg whose task panicked: a failure with the reason, so nothing stays `running`.
fn panicked_leg(job: &Job, reason: &str) -> JobReport {
    JobReport {
        id: job.id.clone(),
        name: job.id.clone(),
        status: Status::Failure,
        started_at_ms: unix_ms(),
        duration: Duration::ZERO,
        steps: Vec::new(),
        summary: String::new(),
        error: Some(format!("internal error in Tandem while running this job: {reason}")),
        outputs: BTreeMap::new(),
    }
}

/// Holds `job` until `gate` lets it use `environment`, saying in the job's log what it waits for
/// (each new reason once). `Err` ends the job: cancelled while waiting, or refused.
async fn wait_at_gate(
    shared: &Shared,
    gate: &super::EnvironmentGate,
    display: &str,
    job: &str,
    environment: &str,
    cancel: &mut Cancel,
) -> Result<(), (Status, Option<String>)> {
    let mut said: Option<String> = None;
    loop {
        let reason = match gate.0.holds(job, environment).await {
            Ok(None) => {
                if said.is_some() {
                    shared.say(display, format!("environment {environment}: its gates passed; the job starts")).await;
                }
                return Ok(());
            }
            Ok(Some(reason)) => reason,
            Err(error) => return Err((Status::Failure, Some(format!("environment {environment}: {error}")))),
        };
        if said.as_deref() != Some(reason.as_str()) {
            shared.say(display, format!("⏸ waiting for environment {environment}: {reason}")).await;
            said = Some(reason);
        }
        tokio::select! {
            () = tokio::time::sleep(super::GATE_POLL) => {}
            () = cancel.cancelled() => return Err((Status::Cancelled, None)),
        }
    }
}
