//! Workflow files in GitHub Actions syntax: the typed model and the checker that builds it while
//! collecting every problem of the file as a [`Diagnostic`].

use crate::diag::{Diagnostic, Span, did_you_mean};
use crate::expr::{self, Expr, ExprError, Host, Template, Value};
use crate::yaml::{self, Node, NodeKind};

mod action;
mod check;
mod jobs;

pub use action::{Action, ActionInput, NODE_VERSIONS, Runs, check_call, parse_action};

/// Where a repository's workflows live, in order of precedence: the first of these folders that
/// holds a workflow file is the one read (locally and on the server alike).
pub const WORKFLOW_DIRS: [&str; 2] = [".tandem/workflows", ".github/workflows"];

/// Whether a file name is a workflow file's.
pub fn is_workflow_file(name: &str) -> bool {
    name.ends_with(".yml") || name.ends_with(".yaml")
}

/// A string from the file that may hold `${{ }}` expressions, parsed once.
#[derive(Debug, Clone, PartialEq)]
pub struct Text {
    pub raw: String,
    pub template: Template,
    pub span: Span,
}

impl Text {
    pub fn literal(raw: &str) -> Text {
        Text {
            raw: raw.to_string(),
            template: Template { segments: vec![expr::Segment::Text(raw.to_string())] },
            span: Span::default(),
        }
    }

    pub fn render(&self, host: &dyn Host) -> Result<String, ExprError> {
        self.template.render(host)
    }

    /// The value of a typed field (`fail-fast`, `continue-on-error`, `timeout-minutes`, …): one
    /// expression gives its own type; a literal is read as YAML reads it, so `false` is the
    /// boolean false (falsy), not the string "false" (truthy).
    pub fn evaluate(&self, host: &dyn Host) -> Result<Value, ExprError> {
        if self.template.is_literal() {
            let raw = self.raw.trim();
            return Ok(match raw {
                "true" | "True" | "TRUE" => Value::Bool(true),
                "false" | "False" | "FALSE" => Value::Bool(false),
                _ => match raw.parse::<f64>() {
                    Ok(n) if !raw.is_empty() => Value::Number(n),
                    _ => Value::String(self.raw.clone()),
                },
            });
        }
        self.template.evaluate(host)
    }
}

/// An `if:` condition, already given GitHub's implicit `success() &&` where it applies.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub raw: String,
    pub expr: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Workflow {
    pub name: Option<String>,
    pub run_name: Option<Text>,
    pub triggers: Vec<Trigger>,
    pub env: Vec<(String, Text)>,
    pub defaults: RunDefaults,
    pub concurrency: Option<Concurrency>,
    pub jobs: Vec<Job>,
}

impl Workflow {
    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == id)
    }

    pub fn trigger(&self, event: &str) -> Option<&Trigger> {
        self.triggers.iter().find(|t| t.event == event)
    }
}

/// One event under `on:`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trigger {
    pub event: String,
    pub span: Span,
    pub branches: Option<Vec<String>>,
    pub branches_ignore: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub tags_ignore: Option<Vec<String>>,
    pub paths: Option<Vec<String>>,
    pub paths_ignore: Option<Vec<String>>,
    pub types: Vec<String>,
    /// Cron lines, for `schedule`.
    pub crons: Vec<String>,
    /// Typed inputs, for `workflow_dispatch` and `workflow_call`.
    pub inputs: Vec<Input>,
    /// For `workflow_call`: the outputs the workflow gives its caller (`value` expressions over
    /// the `jobs` context).
    pub outputs: Vec<(String, Text)>,
    /// For `workflow_call`: the secrets it takes, and whether each is required.
    pub secrets: Vec<(String, bool)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub name: String,
    pub description: Option<String>,
    pub required: bool,
    pub default: Option<Value>,
    pub kind: InputKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum InputKind {
    String,
    Boolean,
    Number,
    Choice(Vec<String>),
    Environment,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunDefaults {
    pub shell: Option<String>,
    pub working_directory: Option<Text>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Concurrency {
    pub group: Text,
    pub cancel_in_progress: Option<Text>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub span: Span,
    pub name: Option<Text>,
    pub needs: Vec<(String, Span)>,
    pub condition: Option<Condition>,
    pub runs_on: Vec<Text>,
    pub timeout_minutes: Option<Text>,
    pub continue_on_error: Option<Text>,
    pub strategy: Option<Strategy>,
    pub outputs: Vec<(String, Text)>,
    pub env: Vec<(String, Text)>,
    pub defaults: RunDefaults,
    pub environment: Option<Environment>,
    pub container: Option<Container>,
    pub services: Vec<(String, Container)>,
    pub steps: Vec<Step>,
    pub concurrency: Option<Concurrency>,
    /// `uses:` a reusable workflow instead of `steps`.
    pub call: Option<WorkflowCall>,
}

/// A job that runs a reusable workflow (`jobs.<id>.uses`).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowCall {
    /// As written, for messages.
    pub uses: String,
    /// The workflow file: [`ActionRef::Local`] (a path in the repository) or
    /// [`ActionRef::Remote`] (`owner/repo/.github/workflows/x.yml@ref`).
    pub target: ActionRef,
    pub with: Vec<(String, Text)>,
    /// `None` for `secrets: inherit`: every secret of the caller.
    pub secrets: Option<Vec<(String, Text)>>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Strategy {
    /// The `matrix` node as written; expressions inside are evaluated when the job is ready.
    pub matrix: Option<Node>,
    pub fail_fast: Option<Text>,
    pub max_parallel: Option<Text>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub name: Text,
    pub url: Option<Text>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    pub image: Text,
    pub credentials: Option<(Text, Text)>,
    pub env: Vec<(String, Text)>,
    pub ports: Vec<Text>,
    pub volumes: Vec<Text>,
    pub options: Option<Text>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: Option<String>,
    pub name: Option<Text>,
    pub condition: Option<Condition>,
    pub action: StepAction,
    pub env: Vec<(String, Text)>,
    pub continue_on_error: Option<Text>,
    pub timeout_minutes: Option<Text>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepAction {
    Run {
        script: Text,
        shell: Option<String>,
        working_directory: Option<Text>,
    },
    /// `uses:` an action. `builtin` is Tandem's own action of that name when there is one and it
    /// knows every input given; otherwise (or when built-ins are turned off) `target` runs.
    Uses {
        builtin: Option<BuiltinAction>,
        target: ActionRef,
        reference: String,
        with: Vec<(String, Text)>,
    },
}

/// Where an action lives, from `uses:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionRef {
    /// `./path`: a folder of the workspace (the repository, once checked out).
    Local { path: String },
    /// `owner/repo[/path]@ref`: a folder of a repository at a tag, branch or commit, fetched from
    /// the action sources.
    Remote { owner: String, repo: String, path: String, git_ref: String },
    /// `docker://image`: a container of that image.
    Docker { image: String },
}

impl ActionRef {
    /// Reads a `uses:` value; the error says what was expected.
    pub fn parse(reference: &str) -> Result<ActionRef, String> {
        let reference = reference.trim();
        if let Some(image) = reference.strip_prefix("docker://") {
            if image.trim().is_empty() {
                return Err("`docker://` names no image".to_string());
            }
            return Ok(ActionRef::Docker { image: image.trim().to_string() });
        }
        if reference.starts_with("./") || reference == "." {
            return Ok(ActionRef::Local { path: reference.trim_start_matches("./").trim_end_matches('/').to_string() });
        }
        let Some((name, git_ref)) = reference.split_once('@') else {
            return Err(format!("action `{reference}` names no version"));
        };
        if git_ref.trim().is_empty() {
            return Err(format!("action `{reference}` names no version"));
        }
        if git_ref.trim().starts_with('-') || git_ref.contains(char::is_whitespace) {
            return Err(format!("`{reference}`: `{git_ref}` is not a tag, branch or commit"));
        }
        let mut parts = name.split('/');
        let (owner, repo) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path: Vec<&str> = parts.collect();
        let valid = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid(owner)
            || !valid(repo)
            || repo == "."
            || repo == ".."
            || path.iter().any(|p| p.is_empty() || *p == "..")
        {
            return Err(format!("`{reference}` is not an action reference"));
        }
        Ok(ActionRef::Remote {
            owner: owner.to_string(),
            repo: repo.to_string(),
            path: path.join("/"),
            git_ref: git_ref.trim().to_string(),
        })
    }
}

/// The actions Tandem provides itself, in place of the marketplace ones of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinAction {
    Checkout,
    Cache,
    CacheRestore,
    CacheSave,
    UploadArtifact,
    DownloadArtifact,
    /// `uses: docker://IMAGE`: the step is a container of that image (`with.args`, `with.entrypoint`).
    DockerImage,
    /// `docker/build-push-action`: build an image through the Docker engine, tag it, push it.
    BuildPush,
}

impl BuiltinAction {
    /// The names the built-ins answer to.
    pub const NAMES: &'static [&'static str] = &[
        "actions/checkout",
        "actions/cache",
        "actions/cache/restore",
        "actions/cache/save",
        "actions/upload-artifact",
        "actions/download-artifact",
        "docker/build-push-action",
    ];

    pub fn from_uses(uses: &str) -> Option<BuiltinAction> {
        if uses.strip_prefix("docker://").is_some_and(|image| !image.trim().is_empty()) {
            return Some(BuiltinAction::DockerImage);
        }
        let name = uses.split('@').next().unwrap_or(uses).to_ascii_lowercase();
        Some(match name.as_str() {
            "actions/checkout" => BuiltinAction::Checkout,
            "actions/cache" => BuiltinAction::Cache,
            "actions/cache/restore" => BuiltinAction::CacheRestore,
            "actions/cache/save" => BuiltinAction::CacheSave,
            "actions/upload-artifact" => BuiltinAction::UploadArtifact,
            "actions/download-artifact" => BuiltinAction::DownloadArtifact,
            "docker/build-push-action" => BuiltinAction::BuildPush,
            _ => return None,
        })
    }

    /// The inputs (`with:` keys) the built-in accepts.
    pub fn inputs(self) -> &'static [&'static str] {
        match self {
            BuiltinAction::BuildPush => &[
                "context",
                "file",
                "tags",
                "push",
                "build-args",
                "labels",
                "no-cache",
                "pull",
                "load",
                "platforms",
                "cache-from",
                "cache-to",
                "provenance",
                "sbom",
                "builder",
                "github-token",
            ],
            BuiltinAction::DockerImage => &["args", "entrypoint"],
            BuiltinAction::Checkout => &[
                "repository",
                "ref",
                "path",
                "fetch-depth",
                "clean",
                "submodules",
                "lfs",
                "token",
                "persist-credentials",
                "fetch-tags",
                "show-progress",
                "sparse-checkout",
                "sparse-checkout-cone-mode",
                "filter",
                "set-safe-directory",
                "ssh-key",
                "ssh-known-hosts",
                "ssh-strict",
                "ssh-user",
                "github-server-url",
            ],
            BuiltinAction::Cache | BuiltinAction::CacheRestore | BuiltinAction::CacheSave => &[
                "path",
                "key",
                "restore-keys",
                "enableCrossOsArchive",
                "fail-on-cache-miss",
                "lookup-only",
                "upload-chunk-size",
                "save-always",
            ],
            BuiltinAction::UploadArtifact => &[
                "name",
                "path",
                "if-no-files-found",
                "retention-days",
                "compression-level",
                "overwrite",
                "include-hidden-files",
            ],
            BuiltinAction::DownloadArtifact => {
                &["name", "artifact-ids", "path", "pattern", "merge-multiple", "github-token", "repository", "run-id"]
            }
        }
    }

    pub fn required_inputs(self) -> &'static [&'static str] {
        match self {
            BuiltinAction::Cache | BuiltinAction::CacheRestore | BuiltinAction::CacheSave => &["path", "key"],
            BuiltinAction::UploadArtifact => &["path"],
            _ => &[],
        }
    }
}

const WORKFLOW_KEYS: &[&str] = &["name", "run-name", "on", "env", "defaults", "concurrency", "jobs", "permissions"];
const JOB_KEYS: &[&str] = &[
    "name",
    "needs",
    "if",
    "runs-on",
    "timeout-minutes",
    "continue-on-error",
    "strategy",
    "outputs",
    "env",
    "defaults",
    "environment",
    "container",
    "services",
    "steps",
    "concurrency",
    "permissions",
    "uses",
    "with",
    "secrets",
];
const STEP_KEYS: &[&str] = &[
    "id",
    "name",
    "if",
    "run",
    "uses",
    "shell",
    "working-directory",
    "env",
    "with",
    "continue-on-error",
    "timeout-minutes",
];
const FILTER_KEYS: &[&str] = &[
    "branches",
    "branches-ignore",
    "tags",
    "tags-ignore",
    "paths",
    "paths-ignore",
    "types",
    "inputs",
    "workflows",
    "secrets",
    "outputs",
];
const CONTAINER_KEYS: &[&str] = &["image", "credentials", "env", "ports", "volumes", "options"];
/// Events Tandem produces itself.
pub const SUPPORTED_EVENTS: &[&str] =
    &["push", "pull_request", "pull_request_target", "merge_group", "schedule", "workflow_dispatch"];
/// Events GitHub knows that Tandem does not produce: accepted with a warning.
const GITHUB_EVENTS: &[&str] = &[
    "branch_protection_rule",
    "check_run",
    "check_suite",
    "create",
    "delete",
    "deployment",
    "deployment_status",
    "discussion",
    "discussion_comment",
    "fork",
    "gollum",
    "issue_comment",
    "issues",
    "label",
    "milestone",
    "page_build",
    "project",
    "project_card",
    "project_column",
    "public",
    "pull_request_review",
    "pull_request_review_comment",
    "registry_package",
    "release",
    "repository_dispatch",
    "status",
    "watch",
    "workflow_call",
    "workflow_run",
];

/// How deep reusable workflows may call reusable workflows: the caller and nine levels, as on
/// GitHub.
pub const MAX_WORKFLOW_DEPTH: usize = 10;

/// Diagnostic codes that name a feature Tandem does not support, as opposed to a mistake in the
/// file. Real-world workflows may carry these and nothing else.
pub const UNSUPPORTED_CODES: &[&str] = &["unsupported-event", "unsupported-shell", "unsupported-runner"];

/// Parses and checks a workflow file. Returns the workflow (as much of it as could be read) and
/// every problem found. A workflow with error diagnostics must not be run.
pub fn parse(source: &str) -> (Option<Workflow>, Vec<Diagnostic>) {
    let root = match yaml::parse(source) {
        Ok(Some(root)) => root,
        Ok(None) => {
            return (
                None,
                vec![
                    Diagnostic::error("empty-file", Span::at(1, 1, 1), "the file is empty")
                        .hint("a workflow needs at least `on:` and `jobs:`"),
                ],
            );
        }
        Err(diagnostic) => return (None, vec![diagnostic]),
    };
    let mut checker = Checker { diagnostics: Vec::new() };
    let workflow = checker.workflow(&root);
    checker.diagnostics.sort_by_key(|d| (d.span.line, d.span.col));
    (Some(workflow), checker.diagnostics)
}

struct Checker {
    diagnostics: Vec<Diagnostic>,
}

/// The span of `len` bytes at byte `offset` inside a scalar node's value.
fn locate(node: &Node, raw: &str, offset: usize, len: usize) -> Span {
    let offset = offset.min(raw.len());
    let before = &raw[..offset];
    let n_lines = before.matches('\n').count() as u32;
    let len = raw[offset..].chars().take(len.max(1)).count() as u32;
    let quote =
        u32::from(matches!(&node.kind, NodeKind::Scalar { quoted: true, .. }) && node.span.line == node.span.end_line);
    if n_lines == 0 {
        let col = node.span.col + quote + before.chars().count() as u32;
        Span::at(node.span.line, col, len)
    } else {
        let last_line = before.rsplit('\n').next().unwrap_or("");
        let col = node.span.col + last_line.chars().count() as u32;
        Span::at(node.span.line + n_lines, col, len)
    }
}

/// Converts a node to a value, evaluating expressions in its scalars (used for `matrix`).
pub fn evaluate_node(node: &Node, host: &dyn Host) -> Result<Value, ExprError> {
    Ok(match &node.kind {
        NodeKind::Scalar { text, .. } if text.contains("${{") => Template::parse(text)?.evaluate(host)?,
        NodeKind::Scalar { .. } => node.to_value(),
        NodeKind::Seq(items) => {
            let mut out = Vec::new();
            for item in items {
                out.push(evaluate_node(item, host)?);
            }
            Value::Array(out)
        }
        NodeKind::Map(entries) => {
            let mut out = std::collections::BTreeMap::new();
            for (k, v) in entries {
                out.insert(k.as_scalar().unwrap_or_default().to_string(), evaluate_node(v, host)?);
            }
            Value::Object(out)
        }
    })
}

/// Matrix variables in the order the file lists them (the object form above sorts keys).
pub fn matrix_key_order(node: &Node) -> Vec<String> {
    node.as_map()
        .map(|entries| entries.iter().filter_map(|(k, _)| k.as_scalar().map(str::to_string)).collect())
        .unwrap_or_default()
}
