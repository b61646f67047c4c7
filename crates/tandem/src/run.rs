//! `tandem run`: run the repository's workflows on this machine, as the server will.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ci::filter::{EventFacts, fires};
use exec::CancelSource;
use exec::engine::{self, EngineConfig, RunReport, RunRequest, Status};
use exec::process::ProcessGroups;
use git::repo::RepoFacts;
use spec::expr::Value;
use spec::workflow::{InputKind, Workflow};
use tokio::sync::mpsc;

use crate::Format;
use crate::render::Renderer;
use crate::workflows::{self, LoadedWorkflow};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  tandem run                          run every workflow that starts on a push to this branch
  tandem run ci --job test            one workflow, one job and the jobs it needs
  tandem run --event pull_request     what a change request would run
  tandem run deploy --input env=prod  a workflow_dispatch workflow with an input
  tandem run --worktree               include uncommitted changes
  tandem run -P ubuntu-latest=debian:12  run ubuntu-latest jobs in a container of that image")]
pub struct RunArgs {
    /// Workflow to run: its file name without extension, or its `name:`. Default: all that the event starts.
    pub workflow: Option<String>,
    /// Run only this job and the jobs it needs (repeatable).
    #[arg(long = "job", value_name = "JOB")]
    pub jobs: Vec<String>,
    /// The event to simulate: push, pull_request, workflow_dispatch or schedule.
    #[arg(long, value_name = "EVENT")]
    pub event: Option<String>,
    /// A JSON file to use as the event payload (`github.event`).
    #[arg(long, value_name = "FILE")]
    pub event_file: Option<PathBuf>,
    /// Run the working tree as it is, uncommitted changes included, instead of a clean checkout of HEAD.
    #[arg(long)]
    pub worktree: bool,
    /// Most jobs running at once (default: the number of cores).
    #[arg(short = 'j', long = "parallel", value_name = "N")]
    pub parallel: Option<usize>,
    /// A workflow_dispatch input, `name=value` (repeatable).
    #[arg(long = "input", value_name = "NAME=VALUE")]
    pub inputs: Vec<String>,
    /// A secret, `NAME=VALUE`, or `NAME` to take it from the environment (repeatable). Masked in logs.
    #[arg(long = "secret", value_name = "NAME[=VALUE]")]
    pub secrets: Vec<String>,
    /// A configuration variable for the `vars` context, `NAME=VALUE` (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Run jobs whose `runs-on` has this label in a container of this image, `LABEL=IMAGE`
    /// (repeatable; other labels run on this machine).
    #[arg(short = 'P', long = "platform", value_name = "LABEL=IMAGE")]
    pub platforms: Vec<String>,
    /// Tandem's data directory (cache, run scratch space).
    #[arg(long, env = "TANDEM_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Keep job workspaces after the run.
    #[arg(long)]
    pub keep: bool,
    /// Output: live text for people, or a JSON report on stdout (logs go to stderr).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    pub actions: ActionArgs,
}

/// Where `uses:` actions come from and what runs them.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ActionArgs {
    /// Fetch actions from here, tried in order: a forge's base URL (e.g. a Gitea at
    /// `https://git.example.com`) or a directory of repositories (`DIR/owner/repo.git`);
    /// repeatable, or comma-separated in TANDEM_ACTION_SOURCES. Default: https://github.com.
    #[arg(long = "action-source", value_name = "URL|DIR", env = "TANDEM_ACTION_SOURCES", value_delimiter = ',')]
    pub action_sources: Vec<String>,
    /// Run actions/checkout, actions/cache, the artifact actions and docker/build-push-action
    /// themselves instead of Tandem's built-in versions.
    #[arg(long)]
    pub no_builtin_actions: bool,
    /// The `node` that runs JavaScript actions (default: the first on PATH).
    #[arg(long, value_name = "PATH", env = "TANDEM_NODE")]
    pub node: Option<String>,
}

impl ActionArgs {
    pub fn options(&self) -> exec::engine::ActionOptions {
        exec::engine::ActionOptions {
            sources: self.action_sources.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            builtin: !self.no_builtin_actions,
            node: self.node.clone(),
        }
    }
}

/// The default data directory: `$XDG_DATA_HOME/tandem`, else `~/.local/share/tandem`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("tandem");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/tandem"),
        None => PathBuf::from(".tandem-data"),
    }
}

/// A local run drives its jobs from one thread: the work between processes is short, and a
/// second worker costs more in wake-ups (each one a cross-CPU interrupt) than it saves; the
/// jobs' processes have the other cores. Slow file work goes to the blocking pool, the terminal
/// and the log file to the renderer's thread.
pub fn run(root: &Path, args: RunArgs) -> Result<i32> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    let result = runtime.block_on(run_async(root, args));
    // Every task has ended; the idle threads of the blocking pool need not be woken and joined.
    runtime.shutdown_background();
    result
}

async fn run_async(root: &Path, args: RunArgs) -> Result<i32> {
    // HEAD's commit is read from the repository's files (or git answers, in its own process), the
    // workflows are read and checked, and the first run's folders are made, all on this thread:
    // nothing else runs yet, and a second thread for the workflows cost more to start and wake
    // than it saved. The yield lets the one-thread runtime start the facts task (and git) first.
    let facts = tokio::spawn(git::repo::repo_facts(root.to_path_buf(), args.worktree));
    tokio::task::yield_now().await;
    let loaded = workflows::load_all(root);
    let data_dir = args.data.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let max_parallel = args.parallel.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    // One slot more than can run at once: a job that ended hands its slot on before its folders
    // are emptied, so the next one starts in a spare.
    let mut prepared = PreparedRunDir::new(&data_dir, if args.keep { 0 } else { max_parallel + 1 })?;
    let loaded = loaded?;
    let repo = facts.await.context("the git task failed")?.map_err(anyhow::Error::msg)?;
    let selected = select(&loaded, &args, &repo)?;
    let broken: Vec<&LoadedWorkflow> = selected.iter().map(|(w, _)| *w).filter(|w| w.n_errors() > 0).collect();
    if !broken.is_empty() {
        for workflow in &broken {
            eprintln!("{}", workflow.render_diagnostics());
        }
        bail!("{} workflow(s) have errors and cannot run; fix them (see `tandem validate`)", broken.len());
    }
    let config = EngineConfig {
        data_dir: data_dir.clone(),
        max_parallel,
        cache_limit: exec::cache::DEFAULT_LIMIT,
        keep_workspaces: args.keep,
        actions: args.actions.options(),
        executor: std::sync::Arc::new(exec::LocalExecutor),
    };
    let secrets = parse_secrets(&args.secrets)?;
    let vars = parse_pairs(&args.vars, "--var")?;
    let platforms = parse_pairs(&args.platforms, "--platform")?;
    let groups = ProcessGroups::default();
    let (cancel_source, cancel) = CancelSource::new();
    let interrupt = tokio::spawn(watch_interrupts(cancel_source, groups.clone()));

    let mut reports: Vec<RunReport> = Vec::new();
    for (loaded, event_name) in selected {
        let Some(workflow) = loaded.workflow.clone() else { continue };
        let inputs =
            if event_name == "workflow_dispatch" { dispatch_inputs(&workflow, &args.inputs)? } else { BTreeMap::new() };
        let event = match &args.event_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                let json: serde_json::Value =
                    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
                Value::from_json(&json)
            }
            None => synthesize_event(&event_name, &repo, &inputs, &workflow),
        };
        let (run_id, run_dir) = match prepared.take() {
            Some(made) => made,
            None => new_run_dir(&data_dir)?,
        };
        let request = RunRequest {
            workflow,
            workflow_path: loaded.path.clone(),
            jobs: if args.jobs.is_empty() { None } else { Some(args.jobs.clone()) },
            repo: repo.clone(),
            worktree: args.worktree,
            event_name: event_name.clone(),
            event,
            inputs,
            secrets: secrets.clone(),
            vars: vars.clone(),
            run_id,
            run_number: next_run_number(&data_dir),
            run_attempt: 1,
            run_dir: run_dir.clone(),
            platforms: platforms.clone(),
            token: exec::engine::run_token(),
            call_depth: 0,
            environment_secrets: BTreeMap::new(),
            environment_gate: None,
        };
        let (tx, rx) = mpsc::channel(exec::engine::EVENT_BUFFER);
        let mut renderer = Renderer::new(args.format, &loaded.display_name(), &event_name, &run_dir.join("run.log"));
        let (run_ended, ended) = std::sync::mpsc::channel::<()>();
        let render = tokio::task::spawn_blocking(move || {
            renderer.consume(rx, ended);
            renderer
        });
        let engine = tokio::spawn(engine::run(request, config.clone(), tx, cancel.clone(), groups.clone()));
        let report = engine.await.context("the engine task failed")?;
        drop(run_ended);
        let renderer = render.await.context("the output task failed")?;
        renderer.finish(&report);
        reports.push(report);
        if cancel.is_cancelled() {
            break;
        }
    }
    interrupt.abort();
    groups.kill_all();
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "runs": reports }))?);
    }
    let ok = reports.iter().all(|r| r.status == Status::Success);
    Ok(if cancel.is_cancelled() {
        130
    } else if ok {
        0
    } else {
        1
    })
}

/// A new run's id (the time in milliseconds) and its directory, made.
fn new_run_dir(data_dir: &Path) -> Result<(u64, PathBuf)> {
    let run_id =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let run_dir = data_dir.join("runs").join(format!("local-{run_id}"));
    std::fs::create_dir_all(&run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    Ok((run_id, run_dir))
}

/// The first run's directory, with its job slots, made while git answers. Removed again when the
/// run does not start (no such workflow, a workflow with errors, not a git repository).
struct PreparedRunDir(Option<(u64, PathBuf)>);

impl PreparedRunDir {
    fn new(data_dir: &Path, slots: usize) -> Result<Self> {
        let prepared = PreparedRunDir(Some(new_run_dir(data_dir)?));
        if let Some((_, run_dir)) = &prepared.0 {
            exec::engine::prepare_slots(data_dir, run_dir, slots)
                .with_context(|| format!("cannot create the job folders in {}", run_dir.display()))?;
        }
        Ok(prepared)
    }

    fn take(&mut self) -> Option<(u64, PathBuf)> {
        self.0.take()
    }
}

impl Drop for PreparedRunDir {
    fn drop(&mut self) {
        if let Some((_, run_dir)) = self.0.take()
            && let Err(error) = std::fs::remove_dir_all(&run_dir)
        {
            tracing::warn!("cannot remove the unused run directory {}: {error}", run_dir.display());
        }
    }
}

/// First Ctrl-C cancels (steps are killed, `always()` steps still run); the second kills
/// everything at once and exits.
async fn watch_interrupts(source: CancelSource, groups: ProcessGroups) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    eprintln!("\ncancelling the run… (press Ctrl-C again to stop at once)");
    source.cancel();
    if tokio::signal::ctrl_c().await.is_ok() {
        groups.kill_all();
        eprintln!("stopped");
        std::process::exit(130);
    }
}

/// Which workflows run, each with the event it runs for.
fn select<'a>(
    loaded: &'a [LoadedWorkflow],
    args: &RunArgs,
    repo: &RepoFacts,
) -> Result<Vec<(&'a LoadedWorkflow, String)>> {
    if let Some(name) = &args.workflow {
        let found = loaded.iter().find(|w| {
            w.stem() == name
                || w.path == *name
                || w.workflow.as_ref().and_then(|wf| wf.name.as_deref()) == Some(name.as_str())
        });
        let Some(found) = found else {
            let names: Vec<&str> = loaded.iter().map(LoadedWorkflow::stem).collect();
            let hint = spec::diag::did_you_mean(name, names.iter().copied())
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            bail!("no workflow named `{name}`\n  hint: {hint}workflows here: {}", names.join(", "));
        };
        let event = match (&args.event, &found.workflow) {
            (Some(event), _) => event.clone(),
            (None, Some(workflow)) => ["push", "pull_request", "workflow_dispatch", "schedule"]
                .iter()
                .find(|e| workflow.trigger(e).is_some())
                .map_or("push".to_string(), |e| e.to_string()),
            (None, None) => "push".to_string(),
        };
        if let Some(workflow) = &found.workflow {
            if workflow.trigger(&event).is_none() {
                let events: Vec<&str> = workflow.triggers.iter().map(|t| t.event.as_str()).collect();
                bail!(
                    "workflow `{name}` does not run on `{event}`\n  hint: it runs on {}; pass --event with one of them",
                    if events.is_empty() { "no event Tandem produces".to_string() } else { events.join(", ") }
                );
            }
            check_jobs(workflow, &args.jobs, name)?;
        }
        // A workflow named on the command line runs even where branch or path filters would skip it.
        return Ok(vec![(found, event)]);
    }
    let event = args.event.clone().unwrap_or_else(|| "push".to_string());
    let mut out = Vec::new();
    for workflow in loaded {
        match &workflow.workflow {
            None => out.push((workflow, event.clone())),
            Some(wf) => {
                let Some(trigger) = wf.trigger(&event) else { continue };
                let facts = EventFacts {
                    event: &event,
                    git_ref: if event == "push" { Some(repo.git_ref.as_str()) } else { None },
                    changed_paths: if event == "push" || event == "pull_request" {
                        Some(&repo.changed_paths)
                    } else {
                        None
                    },
                    action: if event.starts_with("pull_request") { Some("opened") } else { None },
                };
                match fires(trigger, &facts) {
                    Ok(()) => out.push((workflow, event.clone())),
                    Err(skip) => eprintln!("skipping {}: {skip}", workflow.path),
                }
            }
        }
    }
    if out.is_empty() {
        bail!(
            "no workflow runs on `{event}` for {}\n  hint: name one (`tandem run NAME`) or pick another --event",
            repo.git_ref
        );
    }
    if !args.jobs.is_empty() {
        out.retain(|(w, _)| w.workflow.as_ref().is_some_and(|wf| args.jobs.iter().all(|j| wf.job(j).is_some())));
        if out.is_empty() {
            bail!(
                "no workflow has the job(s) {}\n  hint: `tandem validate` lists the workflows; name one with `tandem run NAME --job JOB`",
                args.jobs.join(", ")
            );
        }
    }
    Ok(out)
}

fn check_jobs(workflow: &Workflow, jobs: &[String], name: &str) -> Result<()> {
    for job in jobs {
        if workflow.job(job).is_none() {
            let ids: Vec<&str> = workflow.jobs.iter().map(|j| j.id.as_str()).collect();
            let hint = spec::diag::did_you_mean(job, ids.iter().copied())
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            bail!("workflow `{name}` has no job `{job}`\n  hint: {hint}jobs: {}", ids.join(", "));
        }
    }
    Ok(())
}

fn parse_pairs(pairs: &[String], flag: &str) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("{flag} `{pair}` must be NAME=VALUE"),
        })
        .collect()
}

fn parse_secrets(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            Some(_) => bail!("--secret `{pair}` must be NAME=VALUE or NAME"),
            None => match std::env::var(pair) {
                Ok(value) => Ok((pair.clone(), value)),
                Err(_) => bail!("--secret {pair}: the environment has no variable `{pair}`\n  hint: export it, or pass --secret {pair}=VALUE"),
            },
        })
        .collect()
}

/// Typed workflow_dispatch inputs: defaults, required ones, booleans, numbers and choices checked.
fn dispatch_inputs(workflow: &Workflow, given: &[String]) -> Result<BTreeMap<String, Value>> {
    let given = parse_pairs(given, "--input")?;
    let declared = workflow.trigger("workflow_dispatch").map(|t| t.inputs.clone()).unwrap_or_default();
    for name in given.keys() {
        if !declared.iter().any(|i| &i.name == name) {
            let names: Vec<&str> = declared.iter().map(|i| i.name.as_str()).collect();
            bail!(
                "the workflow has no input `{name}`\n  hint: inputs: {}",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            );
        }
    }
    let mut out = BTreeMap::new();
    for input in &declared {
        let raw = given.get(&input.name).cloned().or_else(|| input.default.as_ref().map(Value::to_text));
        let Some(raw) = raw else {
            if input.required {
                bail!("input `{}` is required\n  hint: pass --input {}=VALUE", input.name, input.name);
            }
            continue;
        };
        let value = match &input.kind {
            InputKind::Boolean => match raw.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                other => bail!("input `{}` is a boolean; `{other}` is neither true nor false", input.name),
            },
            InputKind::Number => match raw.parse::<f64>() {
                Ok(n) => Value::Number(n),
                Err(_) => bail!("input `{}` is a number; `{raw}` is not", input.name),
            },
            InputKind::Choice(options) => {
                if !options.contains(&raw) {
                    bail!("input `{}` must be one of {}; `{raw}` is not", input.name, options.join(", "));
                }
                Value::String(raw)
            }
            InputKind::String | InputKind::Environment => Value::String(raw),
        };
        out.insert(input.name.clone(), value);
    }
    Ok(out)
}

/// A payload shaped like the forge's, so that `github.event.*` expressions find what they expect.
fn synthesize_event(event: &str, repo: &RepoFacts, inputs: &BTreeMap<String, Value>, workflow: &Workflow) -> Value {
    let name = repo.repository.rsplit('/').next().unwrap_or_default();
    let owner = repo.repository.split('/').next().unwrap_or_default();
    let repository = serde_json::json!({"name": name, "full_name": repo.repository, "owner": {"login": owner, "name": owner}, "default_branch": repo.branch.clone().unwrap_or_else(|| "main".into())});
    let head_commit = serde_json::json!({"id": repo.sha, "message": repo.commit_message, "author": {"name": repo.author_name, "email": repo.author_email}, "committer": {"name": repo.author_name, "email": repo.author_email}});
    let json = match event {
        "push" => serde_json::json!({
            "ref": repo.git_ref, "before": repo.before, "after": repo.sha, "created": false, "deleted": false, "forced": false,
            "repository": repository, "head_commit": head_commit, "commits": [head_commit], "pusher": {"name": repo.actor}, "sender": {"login": repo.actor},
        }),
        "pull_request" | "pull_request_target" => {
            let branch = repo.branch.clone().unwrap_or_else(|| "HEAD".into());
            serde_json::json!({
                "action": "opened", "number": 1, "repository": repository, "sender": {"login": repo.actor},
                "pull_request": {"number": 1, "title": repo.commit_message.lines().next().unwrap_or_default(), "body": "", "draft": false,
                    "head": {"ref": branch, "sha": repo.sha}, "base": {"ref": "main", "sha": repo.before}, "user": {"login": repo.actor}},
            })
        }
        "workflow_dispatch" => {
            serde_json::json!({"inputs": Value::Object(inputs.clone()).to_json(), "ref": repo.git_ref, "repository": repository, "sender": {"login": repo.actor}})
        }
        "schedule" => {
            serde_json::json!({"schedule": workflow.trigger("schedule").and_then(|t| t.crons.first().cloned()).unwrap_or_default()})
        }
        _ => serde_json::json!({"repository": repository}),
    };
    Value::from_json(&json)
}

fn next_run_number(data_dir: &Path) -> u64 {
    let path = data_dir.join("run-number");
    let current: u64 = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    let next = current + 1;
    let _ = exec::paths::overwrite(&path, next.to_string().as_bytes());
    next
}
