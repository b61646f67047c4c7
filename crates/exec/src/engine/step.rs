//! One step: its environment, the script or image it launches, and what it writes back through
//! the `$GITHUB_*` files and workflow commands.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use spec::expr::Value;
use spec::workflow::{Job, Step, StepAction};
use tokio::sync::mpsc;

use super::contexts::*;
use super::leg::*;
use super::slots::*;
use super::*;
use crate::commands::{self, WorkflowCommand};
use crate::process::{Exit, ProcessSpec, Stream};
use crate::{Cancel, Executor};

#[allow(clippy::too_many_arguments)]
pub(super) async fn run_step(
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
        StepAction::Uses { builtin, target, reference, with } => {
            super::action::run_uses(
                shared, job, step, index, leg, *builtin, target, reference, with, contexts, state, dirs, cancel,
                timeout, env, 0,
            )
            .await
        }
    }
}

/// The default shell of container steps: bash when the image has it, else sh (as on GitHub).
/// Words are separated by `${IFS}` because the template is split on whitespace.
pub(super) const CONTAINER_DEFAULT_SHELL: &str = "sh -c command${IFS}-v${IFS}bash>/dev/null&&exec${IFS}bash${IFS}-e${IFS}\"$0\"||exec${IFS}sh${IFS}-e${IFS}\"$0\" {0}";

/// What a step starts: a script in a shell, a program on this machine (a JavaScript action's
/// `node`, also for jobs in a container, whose folders are mounted at the same paths), or a
/// container of an image.
pub(super) enum Launch {
    Script { script: String, shell: Option<String> },
    Program { argv: Vec<String> },
    Image { image: String, args: Vec<String>, entrypoint: Option<String> },
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn run_script(
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
    let on_host = matches!(launch, Launch::Program { .. });
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
            crate::paths::overwrite(&script_path, script.as_bytes())
                .map_err(|e| format!("cannot write the step's script: {e}"))?;
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
        Launch::Program { argv } => (argv, None),
        Launch::Image { image, args, entrypoint } => {
            let engine = docker_engine(shared).await?;
            let mounts =
                vec![dirs.files.clone(), shared.config.data_dir.join("toolcache"), request.run_dir.join("event.json")];
            let step = crate::docker::ImageStep { engine, image, entrypoint, mounts, network: state.network.clone() };
            (args, Some(step))
        }
    };
    // The job's workspace exists (a step that removes it gets a clear error when the next starts).
    if cwd != dirs.workspace && !cwd.is_dir() {
        return Err(format!(
            "working directory `{}` does not exist in the workspace",
            cwd.strip_prefix(&dirs.workspace).unwrap_or(cwd).display()
        ));
    }

    // Files the step writes to talk back, fresh for each step.
    let file = |name: &str| dirs.files.join(format!("{name}-{index}"));
    // Steps append to these with `>>`, which creates them; a missing file means nothing written.
    let (output_file, env_file, path_file, summary_file) = (file("output"), file("env"), file("path"), file("summary"));
    let state_file = file("state");
    // The actions toolkit refuses files that do not exist; shell steps create them with `>>`.
    if on_host {
        for path in [&output_file, &env_file, &path_file, &summary_file, &state_file] {
            std::fs::File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        }
    }
    // Whether the step wrote any of them shows in its folder's change time (one `stat`, where
    // looking for each file takes five opens). That holds because none of them exists when a
    // script step starts (appending to a file already there would not touch the folder): each is
    // removed once read, and a step is never abandoned midway (a cancelled step's process is
    // stopped and what it wrote is read as usual).
    let talk_back = super::slots::stamp(dirs, "");

    // On this machine a step inherits Tandem's environment; in a container, the image's.
    let in_container = (state.container_shell.is_some() && !on_host) || image_step.is_some();
    // On this machine, `env` holds what the step adds to Tandem's own environment.
    let inherit = !in_container;
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    // What is the same for every step of the run is in the run's base environment.
    let fixed = [
        ("GITHUB_WORKSPACE", dirs.workspace.to_string_lossy().into_owned()),
        ("GITHUB_JOB", state.job_id.clone()),
        ("GITHUB_ACTION", step.id.clone().unwrap_or_else(|| format!("__run_{index}"))),
        ("GITHUB_OUTPUT", output_file.to_string_lossy().into_owned()),
        ("GITHUB_ENV", env_file.to_string_lossy().into_owned()),
        ("GITHUB_PATH", path_file.to_string_lossy().into_owned()),
        ("GITHUB_STEP_SUMMARY", summary_file.to_string_lossy().into_owned()),
        ("GITHUB_STATE", state_file.to_string_lossy().into_owned()),
        ("RUNNER_TEMP", dirs.temp.to_string_lossy().into_owned()),
        ("RUNNER_WORKSPACE", dirs.workspace.parent().unwrap_or(&dirs.workspace).to_string_lossy().into_owned()),
    ];
    for (key, value) in fixed {
        env.insert(key.to_string(), value);
    }
    env.extend(step_env);
    if !state.path_prepend.is_empty() {
        let inherited = || crate::process::own_environment().vars.get("PATH").filter(|_| inherit);
        let base = env
            .get("PATH")
            .or_else(inherited)
            .cloned()
            .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string());
        let mut parts = state.path_prepend.clone();
        parts.reverse();
        parts.push(base);
        env.insert("PATH".to_string(), parts.join(":"));
    }

    let base = shared.base_env.clone();
    let spec = ProcessSpec { argv, env, inherit, base, cwd: cwd.to_path_buf(), timeout: Some(timeout) };
    let (tx, mut rx) = mpsc::channel(crate::process::LINE_BUFFER);
    let executor: Arc<dyn Executor> = match image_step {
        Some(step) => Arc::new(step),
        None if on_host => shared.config.executor.clone(),
        None => state.executor.clone(),
    };
    let groups = shared.groups.clone();
    let process = async move {
        let result = executor.run(&spec, &tx, cancel, &groups).await;
        drop(tx);
        result
    };
    let mut step_outputs = BTreeMap::new();
    let mut saved_state = Vec::new();
    let mut stopped: Option<String> = None;
    let consume = async {
        while let Some((stream, line)) = rx.recv().await {
            // After `::stop-commands::TOKEN`, lines are output until `::TOKEN::`.
            if let Some(token) = &stopped {
                if line.trim() == format!("::{token}::") {
                    stopped = None;
                } else {
                    emit_owned_line(shared, leg, index, stream, line, &state.masks).await;
                }
                continue;
            }
            match commands::parse_command(&line) {
                Some(WorkflowCommand::StopCommands(token)) => stopped = Some(token),
                Some(WorkflowCommand::SaveState { name, value }) => saved_state.push((name, value)),
                Some(WorkflowCommand::AddMask(value)) => {
                    state.masks.add(value);
                }
                Some(WorkflowCommand::Group(title)) => {
                    emit_line(shared, leg, index, stream, &format!("▸ {title}"), &state.masks).await
                }
                Some(WorkflowCommand::EndGroup) => {}
                // Debug messages show only when step debugging is on, as on GitHub.
                Some(WorkflowCommand::Annotation { level, .. }) if level == "debug" && !step_debug(request) => {}
                Some(WorkflowCommand::Annotation { level, message }) => {
                    emit_line(shared, leg, index, stream, &format!("{level}: {message}"), &state.masks).await
                }
                Some(WorkflowCommand::SetOutput { name, value }) => {
                    step_outputs.insert(name, value);
                }
                None => emit_owned_line(shared, leg, index, stream, line, &state.masks).await,
            }
        }
    };
    let ((exit, pgid), ()) = tokio::join!(process, consume);
    if let Some(pgid) = pgid {
        state.pgids.push(pgid);
    }

    // What the step wrote back. Each file is removed once read, so that the next step of the same
    // index (inside a composite action) starts with fresh files; most steps write none.
    let wrote_none = talk_back.is_some_and(|stamp| super::slots::unchanged(dirs, "", &stamp));
    let read = |path: &Path| {
        if wrote_none {
            return String::new();
        }
        match std::fs::read_to_string(path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            read => {
                let _ = std::fs::remove_file(path);
                read.unwrap_or_default()
            }
        }
    };
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
    if !saved_state.is_empty() {
        state.saved.entry(index).or_default().extend(saved_state);
    }
    match commands::parse_key_values(&read(&state_file)) {
        Ok(pairs) if !pairs.is_empty() => state.saved.entry(index).or_default().extend(pairs),
        Ok(_) => {}
        Err(error) => problems.push(format!("$GITHUB_STATE: {error}")),
    }
    let summary = read(&summary_file);
    if !summary.trim().is_empty() {
        state.summary.push_str(&state.masks.mask(&summary));
        if !summary.ends_with('\n') {
            state.summary.push('\n');
        }
    }
    for problem in &problems {
        emit_line(shared, leg, index, Stream::Stderr, &format!("error: {problem}"), &state.masks).await;
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
            )
            .await;
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
            )
            .await;
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
            )
            .await;
            Status::Failure
        }
        Exit::Cancelled => {
            emit_line(shared, leg, index, Stream::Stderr, "the step was cancelled", &state.masks).await;
            Status::Cancelled
        }
        Exit::NotStarted => Status::Failure,
    };
    Ok((status, step_outputs))
}

/// The variables every step of a run gets, whatever its job: the run's facts from the `github`
/// context, the runner's, and the cache service's address when it runs.
pub(super) fn base_environment(
    request: &RunRequest,
    config: &EngineConfig,
    github: &Value,
    cache_service: Option<&crate::cache_service::CacheService>,
) -> crate::process::BaseEnvironment {
    let g = |key: &str| github.get(key).map(Value::to_text).unwrap_or_default();
    let mut vars: BTreeMap<String, String> = [
        ("CI", "true".to_string()),
        ("TANDEM", "true".to_string()),
        ("GITHUB_ACTIONS", "true".to_string()),
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
        ("GITHUB_RUN_ATTEMPT", g("run_attempt")),
        ("GITHUB_WORKFLOW", g("workflow")),
        ("GITHUB_WORKFLOW_REF", g("workflow_ref")),
        ("GITHUB_EVENT_NAME", g("event_name")),
        ("GITHUB_EVENT_PATH", request.run_dir.join("event.json").to_string_lossy().into_owned()),
        ("GITHUB_ACTOR", g("actor")),
        ("RUNNER_OS", "Linux".to_string()),
        ("RUNNER_ARCH", if cfg!(target_arch = "aarch64") { "ARM64".to_string() } else { "X64".to_string() }),
        ("RUNNER_NAME", "tandem-local".to_string()),
        ("RUNNER_ENVIRONMENT", "self-hosted".to_string()),
        ("RUNNER_TOOL_CACHE", config.data_dir.join("toolcache").to_string_lossy().into_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value))
    .collect();
    if step_debug(request) {
        vars.insert("RUNNER_DEBUG".into(), "1".into());
    }
    if let Some(service) = cache_service {
        vars.insert("ACTIONS_CACHE_URL".into(), service.url.clone());
        vars.insert("ACTIONS_RESULTS_URL".into(), service.url.clone());
        vars.insert("ACTIONS_RUNTIME_TOKEN".into(), service.token.clone());
    }
    crate::process::BaseEnvironment::new(vars)
}

/// Whether `ACTIONS_STEP_DEBUG` is `true` as a secret or a variable (GitHub's switch for
/// `::debug::` lines and `RUNNER_DEBUG`).
pub(super) fn step_debug(request: &RunRequest) -> bool {
    [request.secrets.get("ACTIONS_STEP_DEBUG"), request.vars.get("ACTIONS_STEP_DEBUG")]
        .iter()
        .any(|v| v.is_some_and(|v| v.eq_ignore_ascii_case("true")))
}

pub(super) fn which(program: &str) -> bool {
    resolve_program(program).is_some()
}

/// The absolute path of a program on Tandem's own PATH, remembered for the process's lifetime.
pub(super) fn resolve_program(program: &str) -> Option<String> {
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
