//! Jobs that call a reusable workflow (`jobs.<id>.uses`): the called file is read (from the
//! run's commit, or fetched like an action), its `workflow_call` inputs and secrets checked and
//! given, its jobs run as a run of their own whose lines and jobs show under the caller's name
//! (`caller / job`), and its outputs evaluated for the jobs that need the caller.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use spec::expr::Value;
use spec::workflow::{ActionRef, InputKind, Job, MAX_WORKFLOW_DEPTH, WorkflowCall};

use super::contexts::*;
use super::*;
use crate::Cancel;

/// The called workflow's text: from the repository at the run's commit for a local path (the
/// working tree for `--worktree` runs), from the action sources for `owner/repo/…@ref`.
async fn read(shared: &Arc<Shared>, call: &WorkflowCall) -> Result<String, String> {
    let request = &shared.request;
    match &call.target {
        ActionRef::Local { path } => {
            if request.worktree {
                return std::fs::read_to_string(request.repo.root.join(path))
                    .map_err(|e| format!("cannot read {path}: {e}"));
            }
            git::repo::git(&request.repo.root, &["show", &format!("{}:{path}", request.repo.sha)]).await.map_err(|e| {
                format!("cannot read {path} at {}: {e}", &request.repo.sha[..request.repo.sha.len().min(12)])
            })
        }
        ActionRef::Remote { owner, repo, path, git_ref } => {
            let sources = shared.action_sources().await;
            let (o, r, g) = (owner.clone(), repo.clone(), git_ref.clone());
            let fetched =
                tokio::task::spawn_blocking(move || sources.fetch(&o, &r, &g)).await.map_err(|e| e.to_string())??;
            std::fs::read_to_string(fetched.root.join(path))
                .map_err(|e| format!("{owner}/{repo}@{git_ref} has no {path}: {e}"))
        }
        ActionRef::Docker { .. } => Err(format!("`{}` is not a workflow", call.uses)),
    }
}

/// The called workflow's inputs: each declared one from `with` (typed as declared) or its
/// default; an input it does not declare, or a required one not given, is an error.
fn inputs(
    call: &WorkflowCall,
    declared: &[spec::workflow::Input],
    contexts: &Contexts,
) -> Result<BTreeMap<String, Value>, String> {
    let mut values = BTreeMap::new();
    for (key, text) in &call.with {
        let Some(input) = declared.iter().find(|i| i.name == *key) else {
            let names: Vec<&str> = declared.iter().map(|i| i.name.as_str()).collect();
            return Err(format!(
                "`{}` has no input `{key}`; it declares {}",
                call.uses,
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            ));
        };
        let value = contexts.evaluate(text)?;
        let typed = match input.kind {
            InputKind::Boolean => match &value {
                Value::Bool(_) => value,
                other if other.to_text() == "true" => Value::Bool(true),
                other if other.to_text() == "false" => Value::Bool(false),
                other => return Err(format!("input `{key}` must be a boolean, found `{}`", other.to_text())),
            },
            InputKind::Number => {
                let n = value.to_number();
                if n.is_nan() {
                    return Err(format!("input `{key}` must be a number, found `{}`", value.to_text()));
                }
                Value::Number(n)
            }
            _ => Value::String(value.to_text()),
        };
        values.insert(key.clone(), typed);
    }
    for input in declared {
        if values.contains_key(&input.name) {
            continue;
        }
        match (&input.default, input.required) {
            (Some(default), _) => {
                values.insert(input.name.clone(), default.clone());
            }
            (None, true) => return Err(format!("`{}` needs the input `{}`", call.uses, input.name)),
            (None, false) => {
                let empty = match input.kind {
                    InputKind::Boolean => Value::Bool(false),
                    InputKind::Number => Value::Number(0.0),
                    _ => Value::str(""),
                };
                values.insert(input.name.clone(), empty);
            }
        }
    }
    Ok(values)
}

/// Runs one leg of a calling job: the called workflow's jobs, as a run nested in this one.
/// Returns the caller's report (its status and the called workflow's outputs) and the reports of
/// the jobs it ran.
pub(super) async fn run_call(
    shared: &Arc<Shared>,
    job: &Job,
    name: String,
    contexts: Contexts,
    cancel: Cancel,
) -> (JobReport, Vec<JobReport>) {
    let started = Instant::now();
    let started_at_ms = unix_ms();
    let call = job.call.as_ref().expect("a calling job");
    let _ = shared.events.send(RunEvent::JobStarted { job: name.clone(), steps: Vec::new() }).await;
    let result = prepare(shared, call, &contexts).await;
    let (status, error, outputs, inner) = match result {
        Err(error) => (Status::Failure, Some(error), BTreeMap::new(), Vec::new()),
        Ok((request, outputs_spec)) => {
            let (tx, mut rx) = mpsc::channel(EVENT_BUFFER);
            let events = shared.events.clone();
            let prefix = name.clone();
            // The called run's progress, under the caller's name.
            let forward = tokio::spawn(async move {
                while let Some(event) = rx.recv().await {
                    let renamed = match event {
                        RunEvent::JobStarted { job, steps } => {
                            RunEvent::JobStarted { job: format!("{prefix} / {job}"), steps }
                        }
                        RunEvent::StepStarted { job, step } => {
                            RunEvent::StepStarted { job: format!("{prefix} / {job}"), step }
                        }
                        RunEvent::Line { job, step, stream, text } => {
                            RunEvent::Line { job: format!("{prefix} / {job}"), step, stream, text }
                        }
                        RunEvent::StepFinished { job, step, status, duration } => {
                            RunEvent::StepFinished { job: format!("{prefix} / {job}"), step, status, duration }
                        }
                        RunEvent::JobFinished { job, status, duration, error } => {
                            RunEvent::JobFinished { job: format!("{prefix} / {job}"), status, duration, error }
                        }
                    };
                    if events.send(renamed).await.is_err() {
                        break;
                    }
                }
            });
            let report = nested_run(request, shared.config.clone(), tx, cancel, shared.groups.clone()).await;
            let _ = forward.await;
            // `jobs.<id>.result` and `.outputs` of the called run, for its `outputs` values.
            let mut jobs_value: BTreeMap<String, Value> = BTreeMap::new();
            for inner in &report.jobs {
                let entry = jobs_value.entry(inner.id.clone()).or_insert_with(|| {
                    Value::Object(
                        [
                            ("result".to_string(), Value::str(inner.status.as_str())),
                            ("outputs".to_string(), Value::Object(BTreeMap::new())),
                        ]
                        .into_iter()
                        .collect(),
                    )
                });
                if let Value::Object(map) = entry {
                    if inner.status == Status::Failure {
                        map.insert("result".into(), Value::str("failure"));
                    }
                    if let Some(Value::Object(outputs)) = map.get_mut("outputs") {
                        outputs.extend(inner.outputs.iter().map(|(k, v)| (k.clone(), Value::str(v))));
                    }
                }
            }
            let mut output_contexts = contexts.clone();
            output_contexts.set("jobs", Value::Object(jobs_value));
            let mut outputs = BTreeMap::new();
            let mut error = None;
            for (key, text) in &outputs_spec {
                match output_contexts.render(text) {
                    Ok(value) => {
                        outputs.insert(key.clone(), value);
                    }
                    Err(e) => error = Some(format!("output `{key}` of {}: {e}", call.uses)),
                }
            }
            let inner: Vec<JobReport> = report
                .jobs
                .into_iter()
                .map(|mut r| {
                    r.name = format!("{name} / {}", r.name);
                    r
                })
                .collect();
            let status = if error.is_some() { Status::Failure } else { report.status };
            (status, error, outputs, inner)
        }
    };
    if let Some(error) = &error {
        let line = RunEvent::Line {
            job: name.clone(),
            step: 0,
            stream: crate::process::Stream::Stderr,
            text: format!("error: {error}"),
        };
        let _ = shared.events.send(line).await;
    }
    let duration = started.elapsed();
    let _ =
        shared.events.send(RunEvent::JobFinished { job: name.clone(), status, duration, error: error.clone() }).await;
    let report = JobReport {
        id: job.id.clone(),
        name,
        status,
        started_at_ms,
        duration,
        steps: Vec::new(),
        summary: String::new(),
        error,
        outputs,
    };
    (report, inner)
}

/// A run inside a run, boxed: the engine calls itself here.
fn nested_run(
    request: RunRequest,
    config: EngineConfig,
    events: mpsc::Sender<RunEvent>,
    cancel: Cancel,
    groups: ProcessGroups,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = RunReport> + Send>> {
    Box::pin(super::scheduler::run(request, config, events, cancel, groups))
}

/// The nested run's request, and the called workflow's `outputs`.
async fn prepare(
    shared: &Arc<Shared>,
    call: &WorkflowCall,
    contexts: &Contexts,
) -> Result<(RunRequest, Vec<(String, spec::workflow::Text)>), String> {
    let request = &shared.request;
    if request.call_depth + 1 >= MAX_WORKFLOW_DEPTH {
        return Err(format!("reusable workflows nest deeper than {MAX_WORKFLOW_DEPTH} levels at `{}`", call.uses));
    }
    let source = read(shared, call).await?;
    let (workflow, diagnostics) = ci::check::validate(&source);
    let errors: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| format!("{}:{}:{}: {}", call.uses, d.span.line, d.span.col, d.message))
        .collect();
    let Some(workflow) = workflow.filter(|_| errors.is_empty()) else {
        return Err(format!("the called workflow is not valid:\n{}", errors.join("\n")));
    };
    let Some(trigger) = workflow.trigger("workflow_call").cloned() else {
        return Err(format!("`{}` cannot be called: it has no `on: workflow_call`", call.uses));
    };
    let inputs = inputs(call, &trigger.inputs, contexts)?;
    let caller_secrets: BTreeMap<String, String> = match spec::expr::Host::context(contexts, "secrets") {
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), v.to_text())).collect(),
        _ => BTreeMap::new(),
    };
    let secrets = match &call.secrets {
        None => caller_secrets,
        Some(given) => {
            let mut secrets = BTreeMap::new();
            for (key, text) in given {
                secrets.insert(key.clone(), contexts.render(text)?);
            }
            if let Some(token) = caller_secrets.get("GITHUB_TOKEN") {
                secrets.insert("GITHUB_TOKEN".into(), token.clone());
            }
            secrets
        }
    };
    for (name, required) in &trigger.secrets {
        if *required && !secrets.contains_key(name) {
            return Err(format!(
                "`{}` needs the secret `{name}`; pass it under `secrets:` (or `secrets: inherit`)",
                call.uses
            ));
        }
    }
    let path = match &call.target {
        ActionRef::Local { path } | ActionRef::Remote { path, .. } => path.clone(),
        ActionRef::Docker { .. } => String::new(),
    };
    let nested = RunRequest {
        workflow: Arc::new(workflow),
        workflow_path: path,
        jobs: None,
        inputs,
        secrets,
        run_dir: request
            .run_dir
            .join(format!("call-{}", shared.n_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed))),
        call_depth: request.call_depth + 1,
        ..request.clone()
    };
    Ok((nested, trigger.outputs))
}
