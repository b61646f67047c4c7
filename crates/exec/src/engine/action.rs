//! Actions that run as themselves: a local (`./path`) or remote (`owner/repo@ref`) action's
//! metadata is read, its inputs given, and its `pre`, `main` and `post` run as Node.js programs,
//! composite steps or a container, as GitHub's runner runs them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use spec::expr::Value;
use spec::workflow::{Action, ActionRef, Condition, Job, Runs, Step, StepAction, Text};

use super::contexts::*;
use super::leg::*;
use super::slots::*;
use super::step::*;
use super::*;
use crate::Cancel;

/// How deep composite actions may call composite actions, as on GitHub.
const MAX_DEPTH: usize = 10;

/// An action found and read, ready to run.
#[derive(Debug, Clone)]
pub(super) struct LoadedAction {
    /// The action's folder: where `action.yml` is, `GITHUB_ACTION_PATH`.
    pub(super) dir: PathBuf,
    pub(super) spec: Arc<Action>,
    /// `owner/repo` for a remote action, empty for a local one.
    pub(super) repository: String,
    pub(super) git_ref: String,
}

/// Work an action leaves for the end of the job: its `post` (or the built-in cache's save).
pub(super) enum Post {
    Cache(PostAction),
    Action {
        step: usize,
        name: String,
        action: LoadedAction,
        condition: Option<Condition>,
        env: BTreeMap<String, String>,
    },
}

/// Finds the action a step names and reads its metadata: a local one in the workspace, a remote
/// one from the action sources (once per run for each `owner/repo@ref`).
pub(super) async fn load(
    shared: &Arc<Shared>,
    target: &ActionRef,
    workspace: &Path,
) -> Result<(LoadedAction, Option<String>), String> {
    let (dir, repository, git_ref, warning) = match target {
        ActionRef::Local { path } => {
            let dir = workspace.join(path);
            if !dir.is_dir() {
                return Err(format!(
                    "the local action `./{path}` is not in the workspace; check the repository out first (`uses: actions/checkout@v4`)"
                ));
            }
            (dir, String::new(), String::new(), None)
        }
        ActionRef::Remote { owner, repo, path, git_ref } => {
            let key = format!("{owner}/{repo}@{git_ref}");
            let known = shared.fetched.lock().map(|m| m.get(&key).cloned()).unwrap_or_default();
            let fetched = match known {
                Some(fetched) => fetched,
                None => {
                    let sources = shared.action_sources().await;
                    let (o, r, g) = (owner.clone(), repo.clone(), git_ref.clone());
                    let fetched = tokio::task::spawn_blocking(move || sources.fetch(&o, &r, &g))
                        .await
                        .map_err(|e| format!("fetching {key}: {e}"))??;
                    if let Ok(mut memo) = shared.fetched.lock() {
                        memo.insert(key.clone(), fetched.clone());
                    }
                    fetched
                }
            };
            let dir = if path.is_empty() { fetched.root.clone() } else { fetched.root.join(path) };
            (dir, format!("{owner}/{repo}"), git_ref.clone(), fetched.warning)
        }
        ActionRef::Docker { image } => return Err(format!("`docker://{image}` is not an action with metadata")),
    };
    let file = ["action.yml", "action.yaml"].iter().map(|f| dir.join(f)).find(|p| p.is_file()).ok_or_else(|| {
        format!(
            "{} has no action.yml or action.yaml",
            if repository.is_empty() { dir.display().to_string() } else { format!("{repository}@{git_ref}") }
        )
    })?;
    let source = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let (action, diagnostics) = spec::workflow::parse_action(&source);
    let errors: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.severity == spec::diag::Severity::Error)
        .map(|d| format!("{}:{}:{}: {}", file.display(), d.span.line, d.span.col, d.message))
        .collect();
    match action {
        Some(action) if errors.is_empty() => {
            Ok((LoadedAction { dir, spec: Arc::new(action), repository, git_ref }, warning))
        }
        _ => Err(format!("the action's metadata is not valid:\n{}", errors.join("\n"))),
    }
}

/// The action's inputs: what `with` gives, else each input's default (expressions evaluated);
/// warnings for inputs the action does not declare and for deprecated ones.
fn inputs(
    action: &Action,
    with: &[(String, Text)],
    contexts: &Contexts,
) -> Result<(BTreeMap<String, String>, Vec<String>), String> {
    let mut values = BTreeMap::new();
    let mut warnings = Vec::new();
    for (key, text) in with {
        let declared = action.inputs.iter().find(|i| i.name.eq_ignore_ascii_case(key));
        match declared {
            Some(input) => {
                if let Some(message) = &input.deprecation {
                    warnings.push(format!("input `{key}` is deprecated: {}", message.trim()));
                }
            }
            None => warnings.push(format!(
                "the action has no input `{key}` (its inputs: {}); it is passed on anyway",
                action.inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
            )),
        }
        values.insert(key.clone(), contexts.render(text)?);
    }
    for input in &action.inputs {
        if values.keys().any(|k| k.eq_ignore_ascii_case(&input.name)) {
            continue;
        }
        let value = match &input.default {
            Some(text) => contexts.render(text)?,
            None => String::new(),
        };
        values.insert(input.name.clone(), value);
    }
    Ok((values, warnings))
}

/// `INPUT_<NAME>`: upper case, spaces as `_`, as GitHub's toolkit reads it.
fn input_env(inputs: &BTreeMap<String, String>) -> impl Iterator<Item = (String, String)> + '_ {
    inputs.iter().map(|(k, v)| (format!("INPUT_{}", k.replace(' ', "_").to_ascii_uppercase()), v.clone()))
}

/// The `node` that runs JavaScript actions: the configured one, or the first on `PATH`; its
/// major version, asked once per run.
async fn node(shared: &Shared) -> Result<(String, u32), String> {
    let program = shared.config.actions.node.clone().unwrap_or_else(|| "node".to_string());
    let found = shared
        .node
        .get_or_init(|| async {
            let output = tokio::process::Command::new(&program).arg("--version").output().await;
            match output {
                Ok(o) if o.status.success() => {
                    let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
                    let major = text.trim_start_matches('v').split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
                    Ok((resolve_program(&program).unwrap_or(program.clone()), major))
                }
                _ => Err(format!(
                    "JavaScript actions need Node.js: `{program}` is not on PATH here; install it (`apt-get install nodejs`) or name one with `--node PATH`"
                )),
            }
        })
        .await;
    found.clone()
}

/// Lines said before the step's own output: the action and where it came from, warnings.
async fn say(shared: &Shared, leg: &str, index: usize, masks: &crate::commands::Masker, text: &str) {
    emit_line(shared, leg, index, crate::process::Stream::Stdout, text, masks).await;
}

type StepFuture<'a> =
    Pin<Box<dyn std::future::Future<Output = Result<(Status, BTreeMap<String, String>), String>> + Send + 'a>>;

/// Runs the `main` of the action a step names (composite steps in turn, to `MAX_DEPTH`).
/// `step_env` is the step's whole environment; `own_env` what its `env:` added.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_action<'a>(
    shared: &'a Arc<Shared>,
    job: &'a Job,
    step: &'a Step,
    index: usize,
    leg: &'a str,
    target: &'a ActionRef,
    reference: &'a str,
    with: &'a [(String, Text)],
    contexts: &'a Contexts,
    state: &'a mut LegState,
    dirs: &'a LegDirs,
    cancel: &'a Cancel,
    timeout: Duration,
    step_env: BTreeMap<String, String>,
    depth: usize,
) -> StepFuture<'a> {
    Box::pin(async move {
        if depth > MAX_DEPTH {
            return Err(format!("composite actions nest deeper than {MAX_DEPTH} levels at `{reference}`"));
        }
        let (action, warning) = load(shared, target, &dirs.workspace).await?;
        if let Some(warning) = warning {
            say(shared, leg, index, &state.masks, &format!("warning: {warning}")).await;
        }
        let (values, warnings) = inputs(&action.spec, with, contexts)?;
        for warning in warnings {
            say(shared, leg, index, &state.masks, &format!("warning: {reference}: {warning}")).await;
        }
        let mut env = step_env.clone();
        env.insert("GITHUB_ACTION_PATH".into(), action.dir.to_string_lossy().into_owned());
        env.insert("GITHUB_ACTION_REPOSITORY".into(), action.repository.clone());
        env.insert("GITHUB_ACTION_REF".into(), action.git_ref.clone());
        // A JavaScript or Docker action: one program, and perhaps a `post` for the job's end.
        let (launch, post, post_if) = match &action.spec.runs {
            Runs::Composite { steps } => {
                return run_composite(
                    shared, job, index, leg, &action, steps, values, contexts, state, dirs, cancel, timeout, step_env,
                    depth,
                )
                .await;
            }
            Runs::Node { version, main, post, post_if, .. } => {
                let (program, major) = node(shared).await?;
                if major < *version {
                    let text = format!("warning: {reference} asks for node{version}; Node.js {major} runs it");
                    say(shared, leg, index, &state.masks, &text).await;
                }
                env.extend(input_env(&values));
                env.extend(state_env(state, index));
                let launch =
                    Launch::Program { argv: vec![program, action.dir.join(main).to_string_lossy().into_owned()] };
                let post = post.as_ref().map(|post| Runs::Node {
                    version: *version,
                    main: post.clone(),
                    pre: None,
                    pre_if: None,
                    post: None,
                    post_if: None,
                });
                (launch, post, post_if)
            }
            Runs::Docker { image, entrypoint, args, env: image_env, post_entrypoint, post_if, .. } => {
                let image = docker_image(shared, &action, image, leg, index, &state.masks).await?;
                let mut inner = contexts.clone();
                inner.set("inputs", Value::Object(values.iter().map(|(k, v)| (k.clone(), Value::str(v))).collect()));
                env.extend(input_env(&values));
                for (key, text) in image_env {
                    env.insert(key.clone(), inner.render(text)?);
                }
                let args = match values.get("args").filter(|_| args.is_empty()) {
                    Some(given) => crate::docker::split_words(given),
                    None => args.iter().map(|a| inner.render(a)).collect::<Result<Vec<_>, _>>()?,
                };
                let post = post_entrypoint.as_ref().map(|post| Runs::Docker {
                    image: format!("docker://{image}"),
                    entrypoint: Some(post.clone()),
                    pre_entrypoint: None,
                    post_entrypoint: None,
                    pre_if: None,
                    post_if: None,
                    args: Vec::new(),
                    env: Vec::new(),
                });
                (Launch::Image { image, args, entrypoint: entrypoint.clone() }, post, post_if)
            }
        };
        let result =
            run_script(shared, step, index, leg, launch, &dirs.workspace, env.clone(), state, dirs, cancel, timeout)
                .await;
        if let Some(runs) = post {
            // The post sees what `pre` and `main` saved through `$GITHUB_STATE`.
            env.extend(state_env(state, index));
            let name = format!("Post {}", step_name(step, index, contexts));
            let mut action = action.clone();
            action.spec = Arc::new(Action { runs, ..(*action.spec).clone() });
            state.post.push(Post::Action { step: index, name, action, condition: post_if.clone(), env });
        }
        result
    })
}

/// Runs a composite action's steps as part of the calling step, with the action's inputs and
/// its own `steps` context; its outputs are its `outputs.*.value` evaluated at the end.
#[allow(clippy::too_many_arguments)]
async fn run_composite(
    shared: &Arc<Shared>,
    job: &Job,
    index: usize,
    leg: &str,
    action: &LoadedAction,
    steps: &[Step],
    values: BTreeMap<String, String>,
    contexts: &Contexts,
    state: &mut LegState,
    dirs: &LegDirs,
    cancel: &Cancel,
    timeout: Duration,
    step_env: BTreeMap<String, String>,
    depth: usize,
) -> Result<(Status, BTreeMap<String, String>), String> {
    let mut inner = contexts.clone();
    inner.set("inputs", Value::Object(values.iter().map(|(k, v)| (k.clone(), Value::str(v))).collect()));
    inner.set("steps", Value::Object(BTreeMap::new()));
    inner.set_github("action_path", Value::str(action.dir.to_string_lossy()));
    inner.set_github("action_repository", Value::str(&action.repository));
    inner.set_github("action_ref", Value::str(&action.git_ref));
    // What the calling step's `env:` set, on top of the job's environment as it is
    // when each inner step starts (an inner step may change it through `$GITHUB_ENV`).
    let own_env: BTreeMap<String, String> =
        step_env.iter().filter(|(k, v)| state.env.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut failed = false;
    for nested in steps {
        let mut env = state.env.clone();
        env.extend(own_env.clone());
        env.insert("GITHUB_ACTION_PATH".into(), action.dir.to_string_lossy().into_owned());
        inner.status = spec::expr::Status { failed, cancelled: cancel.is_cancelled(), blocked: false };
        inner.set("env", string_map(&env));
        let run = inner.condition(nested.condition.as_ref())?;
        let (outcome, outputs) = if !run {
            (Status::Skipped, BTreeMap::new())
        } else {
            for (key, text) in &nested.env {
                inner.set("env", string_map(&env));
                env.insert(key.clone(), inner.render(text)?);
            }
            inner.set("env", string_map(&env));
            let result = match &nested.action {
                StepAction::Run { script, shell, working_directory } => {
                    let script = inner.render(script)?;
                    let cwd = match working_directory {
                        Some(dir) => dirs.workspace.join(inner.render(dir)?),
                        None => dirs.workspace.clone(),
                    };
                    let launch = Launch::Script { script, shell: shell.clone() };
                    run_script(shared, nested, index, leg, launch, &cwd, env, state, dirs, cancel, timeout).await
                }
                StepAction::Uses { builtin, target, reference, with } => {
                    run_uses(
                        shared,
                        job,
                        nested,
                        index,
                        leg,
                        *builtin,
                        target,
                        reference,
                        with,
                        &inner,
                        state,
                        dirs,
                        cancel,
                        timeout,
                        env,
                        depth + 1,
                    )
                    .await
                }
            };
            match result {
                Ok(result) => result,
                Err(error) => {
                    say(shared, leg, index, &state.masks, &format!("error: {error}")).await;
                    (Status::Failure, BTreeMap::new())
                }
            }
        };
        let continue_on_error = match &nested.continue_on_error {
            Some(text) => inner.evaluate(text).map(|v| v.is_truthy()).unwrap_or(false),
            None => false,
        };
        let conclusion = if outcome == Status::Failure && continue_on_error { Status::Success } else { outcome };
        if conclusion == Status::Failure || conclusion == Status::Cancelled {
            failed = true;
        }
        if let Some(id) = &nested.id {
            let entry: BTreeMap<String, Value> = [
                (
                    "outputs".to_string(),
                    Value::Object(outputs.into_iter().map(|(k, v)| (k, Value::String(v))).collect()),
                ),
                ("outcome".to_string(), Value::str(outcome.as_str())),
                ("conclusion".to_string(), Value::str(conclusion.as_str())),
            ]
            .into_iter()
            .collect();
            inner.insert_step(id, Value::Object(entry));
        }
    }
    let mut outputs = BTreeMap::new();
    for (name, value) in &action.spec.outputs {
        if let Some(text) = value {
            outputs.insert(name.clone(), inner.render(text)?);
        }
    }
    let status = if cancel.is_cancelled() {
        Status::Cancelled
    } else if failed {
        Status::Failure
    } else {
        Status::Success
    };
    Ok((status, outputs))
}

/// A `uses:` step, inside a composite action or at the top of a job: Tandem's built-in when it
/// has one and built-ins are on, a `docker://` image, or the action itself.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_uses(
    shared: &Arc<Shared>,
    job: &Job,
    step: &Step,
    index: usize,
    leg: &str,
    builtin: Option<spec::workflow::BuiltinAction>,
    target: &ActionRef,
    reference: &str,
    with: &[(String, Text)],
    contexts: &Contexts,
    state: &mut LegState,
    dirs: &LegDirs,
    cancel: &Cancel,
    timeout: Duration,
    env: BTreeMap<String, String>,
    depth: usize,
) -> Result<(Status, BTreeMap<String, String>), String> {
    use spec::workflow::BuiltinAction;
    let mut given = BTreeMap::new();
    let builtin = builtin.filter(|b| *b == BuiltinAction::DockerImage || shared.config.actions.builtin);
    match (builtin, target) {
        (Some(BuiltinAction::DockerImage), _) | (_, ActionRef::Docker { .. }) => {
            for (key, text) in with {
                given.insert(key.clone(), contexts.render(text)?);
            }
            let launch = Launch::Image {
                image: reference.trim().trim_start_matches("docker://").to_string(),
                args: given.get("args").map(|a| crate::docker::split_words(a)).unwrap_or_default(),
                entrypoint: given.get("entrypoint").filter(|e| !e.is_empty()).cloned(),
            };
            run_script(shared, step, index, leg, launch, &dirs.workspace, env, state, dirs, cancel, timeout).await
        }
        (Some(action), _) => {
            for (key, text) in with {
                given.insert(key.clone(), contexts.render(text)?);
            }
            let log = StepLog { shared, leg, index, masks: &state.masks };
            let (status, outputs, post) =
                super::builtin::run_builtin(shared, action, &given, index, dirs, &log).await?;
            if let Some(post) = post {
                state.post.push(Post::Cache(post));
            }
            Ok((status, outputs))
        }
        (None, _) => {
            run_action(
                shared, job, step, index, leg, target, reference, with, contexts, state, dirs, cancel, timeout, env,
                depth,
            )
            .await
        }
    }
}

/// `STATE_<name>` for what the step's earlier phases saved through `$GITHUB_STATE`.
fn state_env(state: &LegState, index: usize) -> Vec<(String, String)> {
    state
        .saved
        .get(&index)
        .map(|m| m.iter().map(|(k, v)| (format!("STATE_{k}"), v.clone())).collect())
        .unwrap_or_default()
}

/// The image a Docker action runs: `docker://name` as it is, or its Dockerfile built once per
/// content (tagged `tandem-action/<repo>:<hash of the folder>`).
async fn docker_image(
    shared: &Arc<Shared>,
    action: &LoadedAction,
    image: &str,
    leg: &str,
    index: usize,
    masks: &crate::commands::Masker,
) -> Result<String, String> {
    if let Some(name) = image.strip_prefix("docker://") {
        return Ok(name.to_string());
    }
    let engine = docker_engine(shared).await?;
    let dir = action.dir.clone();
    let hash = tokio::task::spawn_blocking(move || crate::paths::hash_files(&dir, &["**".to_string()]))
        .await
        .map_err(|e| e.to_string())??;
    let name: String = action
        .repository
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let tag = format!(
        "tandem-action/{}:{}",
        if name.is_empty() { "local".to_string() } else { name },
        &hash[..hash.len().min(16)]
    );
    if engine.client().inspect_image(&tag).await.is_ok() {
        return Ok(tag);
    }
    let context = shared.request.run_dir.join(format!("action-context-{index}-{}.tar", std::process::id()));
    let (dir, out) = (action.dir.clone(), context.clone());
    tokio::task::spawn_blocking(move || crate::docker::context_tar(&dir, &out)).await.map_err(|e| e.to_string())??;
    let build = crate::docker::ImageBuild {
        context: context.clone(),
        dockerfile: image.to_string(),
        tags: vec![tag.clone()],
        ..Default::default()
    };
    let log = StepLog { shared, leg, index, masks };
    let built = engine.build_and_push(build, &log).await;
    let _ = std::fs::remove_file(&context);
    built.map(|_| tag)
}

/// Runs an action's `post` at the end of the job; its lines go to the step that ran the action.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_post(
    shared: &Arc<Shared>,
    step: &Step,
    index: usize,
    leg: &str,
    action: &LoadedAction,
    env: BTreeMap<String, String>,
    state: &mut LegState,
    dirs: &LegDirs,
    cancel: &Cancel,
    timeout: Duration,
) -> Status {
    let launch = match &action.spec.runs {
        Runs::Node { main, .. } => match node(shared).await {
            Ok((program, _)) => {
                Launch::Program { argv: vec![program, action.dir.join(main).to_string_lossy().into_owned()] }
            }
            Err(error) => {
                say(shared, leg, index, &state.masks, &format!("error: {error}")).await;
                return Status::Failure;
            }
        },
        Runs::Docker { image, entrypoint, .. } => Launch::Image {
            image: image.trim_start_matches("docker://").to_string(),
            args: Vec::new(),
            entrypoint: entrypoint.clone(),
        },
        Runs::Composite { .. } => return Status::Success,
    };
    match run_script(shared, step, index, leg, launch, &dirs.workspace, env, state, dirs, cancel, timeout).await {
        Ok((status, _)) => status,
        Err(error) => {
            say(shared, leg, index, &state.masks, &format!("error: {error}")).await;
            Status::Failure
        }
    }
}

/// "Set up job": fetches every remote action the job's steps use (a missing one fails the job
/// before any step runs, as on GitHub) and runs their `pre` in step order, by `pre-if`
/// (`always()` when unset).
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_pres(
    shared: &Arc<Shared>,
    job: &Job,
    leg: &str,
    contexts: &Contexts,
    state: &mut LegState,
    dirs: &LegDirs,
    cancel: &Cancel,
    timeout: Duration,
) -> Result<(), String> {
    for (index, step) in job.steps.iter().enumerate() {
        let StepAction::Uses { builtin, target: target @ ActionRef::Remote { .. }, reference, with } = &step.action
        else {
            continue;
        };
        if builtin.is_some() && shared.config.actions.builtin {
            continue;
        }
        let (action, warning) = load(shared, target, &dirs.workspace).await.map_err(|e| format!("{reference}: {e}"))?;
        if let Some(warning) = warning {
            say(shared, leg, index, &state.masks, &format!("warning: {warning}")).await;
        }
        let (launch, condition) = match &action.spec.runs {
            Runs::Node { pre: Some(pre), pre_if, .. } => {
                let (program, _) = node(shared).await?;
                (Launch::Program { argv: vec![program, action.dir.join(pre).to_string_lossy().into_owned()] }, pre_if)
            }
            Runs::Docker { pre_entrypoint: Some(entrypoint), pre_if, image, .. } => {
                let image = docker_image(shared, &action, image, leg, index, &state.masks).await?;
                (Launch::Image { image, args: Vec::new(), entrypoint: Some(entrypoint.clone()) }, pre_if)
            }
            _ => continue,
        };
        if let Some(condition) = condition
            && !contexts.condition(Some(condition))?
        {
            continue;
        }
        let (values, _) = inputs(&action.spec, with, contexts)?;
        let mut env = state.env.clone();
        env.extend(input_env(&values));
        env.insert("GITHUB_ACTION_PATH".into(), action.dir.to_string_lossy().into_owned());
        say(shared, leg, index, &state.masks, &format!("▸ Pre {reference}")).await;
        let (status, _) =
            run_script(shared, step, index, leg, launch, &dirs.workspace, env, state, dirs, cancel, timeout).await?;
        if status != Status::Success {
            return Err(format!("the pre step of {reference} failed"));
        }
    }
    Ok(())
}
