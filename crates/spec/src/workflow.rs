//! Workflow files in GitHub Actions syntax: the typed model and the checker that builds it while
//! collecting every problem of the file as a [`Diagnostic`].

use crate::diag::{Diagnostic, Span, did_you_mean};
use crate::expr::{self, Expr, ExprError, Host, Template, Value};
use crate::yaml::{self, Node, NodeKind};

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
    /// Typed inputs, for `workflow_dispatch`.
    pub inputs: Vec<Input>,
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
    Run { script: Text, shell: Option<String>, working_directory: Option<Text> },
    Uses { action: BuiltinAction, reference: String, with: Vec<(String, Text)> },
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
pub const SUPPORTED_EVENTS: &[&str] = &["push", "pull_request", "pull_request_target", "schedule", "workflow_dispatch"];
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
    "merge_group",
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

/// Diagnostic codes that name a feature Tandem does not support, as opposed to a mistake in the
/// file. Real-world workflows may carry these and nothing else.
pub const UNSUPPORTED_CODES: &[&str] =
    &["unsupported-action", "unsupported-reusable-workflow", "unsupported-event", "unsupported-shell"];

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

impl Checker {
    fn error(&mut self, code: &'static str, span: Span, message: impl Into<String>) -> &mut Diagnostic {
        self.diagnostics.push(Diagnostic::error(code, span, message));
        let last = self.diagnostics.len() - 1;
        &mut self.diagnostics[last]
    }

    fn type_error(&mut self, node: &Node, what: &str, expected: &str) {
        let message = format!("{what} must be {expected}, found {}", node.type_name());
        self.error("wrong-type", node.span, message).expected = Some(expected.to_string());
    }

    /// The mapping entries of `node`, reporting unknown and duplicate keys.
    fn map<'n>(&mut self, node: &'n Node, what: &str, known: &[&str]) -> Vec<(&'n str, &'n Node, Span)> {
        yaml::entries(node, what, known, true, &mut self.diagnostics)
    }

    /// A scalar as text with its expressions parsed; reports expression errors at their place.
    fn text(&mut self, node: &Node, what: &str) -> Option<Text> {
        let Some(raw) = node.as_scalar() else {
            self.type_error(node, what, "a string");
            return None;
        };
        match Template::parse(raw) {
            Ok(template) => Some(Text { raw: raw.to_string(), template, span: node.span }),
            Err(error) => {
                self.expr_error(node, raw, &error, what);
                None
            }
        }
    }

    fn expr_error(&mut self, node: &Node, raw: &str, error: &ExprError, what: &str) {
        let span = locate(node, raw, error.offset, error.len);
        let diagnostic =
            Diagnostic::error("expression", span, format!("invalid expression in {what}: {}", error.message))
                .maybe_hint(error.hint.clone());
        self.diagnostics.push(diagnostic);
    }

    fn plain_string(&mut self, node: &Node, what: &str) -> Option<String> {
        match node.as_scalar() {
            Some(s) => Some(s.to_string()),
            None => {
                self.type_error(node, what, "a string");
                None
            }
        }
    }

    fn strings(&mut self, node: &Node, what: &str) -> Vec<String> {
        match &node.kind {
            NodeKind::Scalar { text, .. } => vec![text.clone()],
            NodeKind::Seq(items) => items.iter().filter_map(|item| self.plain_string(item, what)).collect(),
            NodeKind::Map(_) => {
                self.type_error(node, what, "a string or a list of strings");
                Vec::new()
            }
        }
    }

    fn texts(&mut self, node: &Node, what: &str) -> Vec<Text> {
        match &node.kind {
            NodeKind::Seq(items) => items.iter().filter_map(|item| self.text(item, what)).collect(),
            _ => self.text(node, what).into_iter().collect(),
        }
    }

    /// A scalar that must be a number or a boolean once expressions are evaluated.
    fn typed(&mut self, node: &Node, what: &str, expected: &str) -> Option<Text> {
        let text = self.text(node, what)?;
        if text.template.is_literal() {
            let ok = match (expected, node.to_value()) {
                ("a number", Value::Number(n)) => n >= 0.0,
                ("a boolean", Value::Bool(_)) => true,
                _ => false,
            };
            if !ok {
                self.error("wrong-type", node.span, format!("{what} must be {expected}, found `{}`", text.raw))
                    .expected = Some(expected.to_string());
                return None;
            }
        }
        Some(text)
    }

    fn env(&mut self, node: &Node, what: &str) -> Vec<(String, Text)> {
        if let Some(raw) = node.as_scalar()
            && raw.contains("${{")
        {
            // `env: ${{ fromJSON(...) }}` is legal but rare; the keys are unknown until run time.
            self.text(node, what);
            return Vec::new();
        }
        let mut out = Vec::new();
        for (name, value, _) in self.map(node, what, &[]) {
            let text = match &value.kind {
                NodeKind::Scalar { .. } if value.is_null() => Some(Text::literal("")),
                NodeKind::Scalar { .. } => self.text(value, &format!("{what}.{name}")),
                _ => {
                    self.type_error(value, &format!("{what}.{name}"), "a string, number or boolean");
                    None
                }
            };
            if let Some(text) = text {
                out.push((name.to_string(), text));
            }
        }
        out
    }

    fn condition(&mut self, node: &Node, what: &str) -> Option<Condition> {
        let raw = match &node.kind {
            NodeKind::Scalar { text, .. } => text.clone(),
            _ => {
                self.type_error(node, what, "an expression");
                return None;
            }
        };
        match expr::parse_condition(&raw) {
            Ok(expr) => Some(Condition { raw, expr, span: node.span }),
            Err(error) => {
                self.expr_error(node, &raw, &error, what);
                None
            }
        }
    }

    fn workflow(&mut self, root: &Node) -> Workflow {
        let mut workflow = Workflow::default();
        let entries = self.map(root, "the workflow", WORKFLOW_KEYS);
        for (key, value, _) in &entries {
            match *key {
                "name" => workflow.name = self.plain_string(value, "`name`"),
                "run-name" => workflow.run_name = self.text(value, "`run-name`"),
                "on" => workflow.triggers = self.triggers(value),
                "env" => workflow.env = self.env(value, "`env`"),
                "defaults" => workflow.defaults = self.defaults(value, "`defaults`"),
                "concurrency" => workflow.concurrency = self.concurrency(value, "`concurrency`"),
                "jobs" => workflow.jobs = self.jobs(value),
                _ => {}
            }
        }
        let whole = root.span;
        if !entries.iter().any(|(k, ..)| *k == "on") {
            self.error("missing-key", Span::at(whole.line, whole.col, 1), "the workflow has no `on:`").hint =
                Some("add the events that start it, e.g. `on: [push, pull_request]`".to_string());
        }
        if !entries.iter().any(|(k, ..)| *k == "jobs") {
            self.error("missing-key", Span::at(whole.line, whole.col, 1), "the workflow has no `jobs:`").hint =
                Some("add at least one job with `runs-on` and `steps`".to_string());
        }
        workflow
    }

    fn triggers(&mut self, node: &Node) -> Vec<Trigger> {
        let mut triggers = Vec::new();
        match &node.kind {
            NodeKind::Scalar { text, .. } => triggers.extend(self.event(text, node.span, None)),
            NodeKind::Seq(items) => {
                for item in items {
                    if let Some(name) = self.plain_string(item, "an event under `on`") {
                        triggers.extend(self.event(&name, item.span, None));
                    }
                }
            }
            NodeKind::Map(_) => {
                for (name, value, span) in self.map(node, "`on`", &[]) {
                    triggers.extend(self.event(name, span, Some(value)));
                }
            }
        }
        triggers
    }

    fn event(&mut self, name: &str, span: Span, config: Option<&Node>) -> Option<Trigger> {
        if !SUPPORTED_EVENTS.contains(&name) {
            if GITHUB_EVENTS.contains(&name) {
                let diagnostic = Diagnostic::warning(
                    "unsupported-event",
                    span,
                    format!("event `{name}` is not produced by Tandem; the workflow will not start on it"),
                )
                .hint(format!("Tandem starts workflows on {}", SUPPORTED_EVENTS.join(", ")));
                self.diagnostics.push(diagnostic);
            } else {
                let hint = did_you_mean(name, SUPPORTED_EVENTS.iter().chain(GITHUB_EVENTS).copied())
                    .map(|s| format!("did you mean `{s}`?"));
                let diagnostic = Diagnostic::error("unknown-event", span, format!("unknown event `{name}`"))
                    .expected(format!("one of {}", SUPPORTED_EVENTS.join(", ")))
                    .maybe_hint(hint);
                self.diagnostics.push(diagnostic);
            }
            return None;
        }
        let mut trigger = Trigger { event: name.to_string(), span, ..Trigger::default() };
        let Some(config) = config else { return Some(trigger) };
        if config.is_null() {
            return Some(trigger);
        }
        if name == "schedule" {
            for item in config.as_seq().unwrap_or_default() {
                match item.get("cron").and_then(Node::as_scalar) {
                    Some(cron) => {
                        let n_fields = cron.split_whitespace().count();
                        if n_fields != 5 {
                            self.error("invalid-cron", item.span, format!("cron `{cron}` has {n_fields} fields"))
                                .expected = Some("5 fields: minute hour day-of-month month day-of-week".to_string());
                        }
                        trigger.crons.push(cron.to_string());
                    }
                    None => {
                        self.error("missing-key", item.span, "a schedule entry needs `cron`").hint =
                            Some("write `- cron: '30 5 * * 1'`".to_string());
                    }
                }
            }
            if config.as_seq().is_none() {
                self.type_error(config, "`schedule`", "a list of `- cron: ...` entries");
            }
            return Some(trigger);
        }
        for (key, value, key_span) in self.map(config, &format!("`on.{name}`"), FILTER_KEYS) {
            let what = format!("`on.{name}.{key}`");
            match key {
                "branches" => trigger.branches = Some(self.strings(value, &what)),
                "branches-ignore" => trigger.branches_ignore = Some(self.strings(value, &what)),
                "tags" => trigger.tags = Some(self.strings(value, &what)),
                "tags-ignore" => trigger.tags_ignore = Some(self.strings(value, &what)),
                "paths" => trigger.paths = Some(self.strings(value, &what)),
                "paths-ignore" => trigger.paths_ignore = Some(self.strings(value, &what)),
                "types" => trigger.types = self.strings(value, &what),
                "inputs" if name == "workflow_dispatch" => trigger.inputs = self.inputs(value),
                _ => {
                    self.error("unknown-key", key_span, format!("`{key}` does not apply to `{name}`"));
                }
            }
        }
        for (a, b) in [("branches", "branches-ignore"), ("tags", "tags-ignore"), ("paths", "paths-ignore")] {
            let both = match a {
                "branches" => trigger.branches.is_some() && trigger.branches_ignore.is_some(),
                "tags" => trigger.tags.is_some() && trigger.tags_ignore.is_some(),
                _ => trigger.paths.is_some() && trigger.paths_ignore.is_some(),
            };
            if both {
                self.error("conflicting-filters", span, format!("`{a}` and `{b}` cannot both be set for `{name}`"))
                    .hint = Some(format!("use `{a}` with `!` patterns to exclude"));
            }
        }
        Some(trigger)
    }

    fn inputs(&mut self, node: &Node) -> Vec<Input> {
        let mut inputs = Vec::new();
        for (name, value, span) in self.map(node, "`workflow_dispatch.inputs`", &[]) {
            let mut input = Input {
                name: name.to_string(),
                description: None,
                required: false,
                default: None,
                kind: InputKind::String,
                span,
            };
            let mut options = Vec::new();
            let mut kind = "string".to_string();
            for (key, v, _) in
                self.map(value, &format!("input `{name}`"), &["description", "required", "default", "type", "options"])
            {
                match key {
                    "description" => input.description = v.as_scalar().map(str::to_string),
                    "required" => input.required = v.to_value().is_truthy(),
                    "default" => input.default = Some(v.to_value()),
                    "type" => kind = v.as_scalar().unwrap_or_default().to_string(),
                    "options" => options = self.strings(v, "`options`"),
                    _ => {}
                }
            }
            input.kind = match kind.as_str() {
                "string" => InputKind::String,
                "boolean" => InputKind::Boolean,
                "number" => InputKind::Number,
                "environment" => InputKind::Environment,
                "choice" => {
                    if options.is_empty() {
                        self.error("missing-key", span, format!("choice input `{name}` has no `options`"));
                    }
                    InputKind::Choice(options)
                }
                other => {
                    let diagnostic =
                        Diagnostic::error("wrong-type", span, format!("input `{name}` has unknown type `{other}`"))
                            .expected("string, boolean, number, choice or environment");
                    self.diagnostics.push(diagnostic);
                    InputKind::String
                }
            };
            inputs.push(input);
        }
        inputs
    }

    fn defaults(&mut self, node: &Node, what: &str) -> RunDefaults {
        let mut defaults = RunDefaults::default();
        for (key, value, _) in self.map(node, what, &["run"]) {
            if key == "run" {
                for (k, v, _) in self.map(value, &format!("{what}.run"), &["shell", "working-directory"]) {
                    match k {
                        "shell" => defaults.shell = self.shell(v),
                        _ => defaults.working_directory = self.text(v, "`working-directory`"),
                    }
                }
            }
        }
        defaults
    }

    fn shell(&mut self, node: &Node) -> Option<String> {
        let shell = self.plain_string(node, "`shell`")?;
        match shell.as_str() {
            "bash" | "sh" | "python" => Some(shell),
            "pwsh" | "powershell" | "cmd" => {
                let diagnostic =
                    Diagnostic::error("unsupported-shell", node.span, format!("shell `{shell}` is not available here"))
                        .expected("bash, sh, python, or a command line with `{0}`")
                        .hint("Tandem runs steps on Linux; rewrite the step for bash");
                self.diagnostics.push(diagnostic);
                None
            }
            custom if custom.contains("{0}") => Some(shell),
            other => {
                let diagnostic = Diagnostic::error("unknown-shell", node.span, format!("unknown shell `{other}`"))
                    .expected("bash, sh, python, or a command line with `{0}` for the script file")
                    .hint(format!("to run a custom command, write `{other} {{0}}`"));
                self.diagnostics.push(diagnostic);
                None
            }
        }
    }

    fn concurrency(&mut self, node: &Node, what: &str) -> Option<Concurrency> {
        if node.as_scalar().is_some() {
            return Some(Concurrency { group: self.text(node, what)?, cancel_in_progress: None });
        }
        let mut group = None;
        let mut cancel = None;
        for (key, value, _) in self.map(node, what, &["group", "cancel-in-progress"]) {
            match key {
                "group" => group = self.text(value, "`concurrency.group`"),
                _ => cancel = self.typed(value, "`cancel-in-progress`", "a boolean"),
            }
        }
        match group {
            Some(group) => Some(Concurrency { group, cancel_in_progress: cancel }),
            None => {
                self.error("missing-key", node.span, format!("{what} needs a `group`"));
                None
            }
        }
    }

    fn jobs(&mut self, node: &Node) -> Vec<Job> {
        let mut jobs = Vec::new();
        let entries = self.map(node, "`jobs`", &[]);
        if entries.is_empty() && node.as_map().is_some() {
            self.error("missing-key", node.span, "`jobs` is empty").hint = Some("add at least one job".to_string());
        }
        for (id, value, span) in entries {
            if !id.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                self.error("invalid-job-id", span, format!("job id `{id}` is not valid")).hint = Some(
                    "a job id starts with a letter or `_` and holds only letters, digits, `-` and `_`".to_string(),
                );
            }
            if let Some(job) = self.job(id, value, span) {
                jobs.push(job);
            }
        }
        jobs
    }

    fn job(&mut self, id: &str, node: &Node, span: Span) -> Option<Job> {
        let mut job = Job {
            id: id.to_string(),
            span,
            name: None,
            needs: Vec::new(),
            condition: None,
            runs_on: Vec::new(),
            timeout_minutes: None,
            continue_on_error: None,
            strategy: None,
            outputs: Vec::new(),
            env: Vec::new(),
            defaults: RunDefaults::default(),
            environment: None,
            container: None,
            services: Vec::new(),
            steps: Vec::new(),
            concurrency: None,
        };
        let what = format!("job `{id}`");
        let entries = self.map(node, &what, JOB_KEYS);
        if let Some((_, uses, _)) = entries.iter().find(|(k, ..)| *k == "uses") {
            let name = uses.as_scalar().unwrap_or_default();
            let diagnostic = Diagnostic::error(
                "unsupported-reusable-workflow",
                uses.span,
                format!("job `{id}` calls the reusable workflow `{name}`, which is not available here"),
            )
            .hint("copy the called workflow's jobs into this file");
            self.diagnostics.push(diagnostic);
            return None;
        }
        for (key, value, key_span) in &entries {
            let field = format!("`jobs.{id}.{key}`");
            match *key {
                "name" => job.name = self.text(value, &field),
                "needs" => {
                    job.needs = match &value.kind {
                        NodeKind::Scalar { text, .. } => vec![(text.clone(), value.span)],
                        NodeKind::Seq(items) => {
                            items.iter().filter_map(|i| self.plain_string(i, &field).map(|s| (s, i.span))).collect()
                        }
                        NodeKind::Map(_) => {
                            self.type_error(value, &field, "a job id or a list of job ids");
                            Vec::new()
                        }
                    }
                }
                "if" => job.condition = self.condition(value, &field),
                "runs-on" => {
                    job.runs_on = match &value.kind {
                        NodeKind::Map(_) => {
                            let mut labels = Vec::new();
                            for (k, v, _) in self.map(value, &field, &["group", "labels"]) {
                                if k == "labels" {
                                    labels = self.texts(v, &field);
                                }
                            }
                            labels
                        }
                        _ => self.texts(value, &field),
                    }
                }
                "timeout-minutes" => job.timeout_minutes = self.typed(value, &field, "a number"),
                "continue-on-error" => job.continue_on_error = self.typed(value, &field, "a boolean"),
                "strategy" => job.strategy = self.strategy(value, &field),
                "outputs" => job.outputs = self.env(value, &field),
                "env" => job.env = self.env(value, &field),
                "defaults" => job.defaults = self.defaults(value, &field),
                "environment" => {
                    job.environment = if value.as_scalar().is_some() {
                        self.text(value, &field).map(|name| Environment { name, url: None })
                    } else {
                        let mut name = None;
                        let mut url = None;
                        for (k, v, _) in self.map(value, &field, &["name", "url", "deployment"]) {
                            match k {
                                "name" => name = self.text(v, &field),
                                "url" => url = self.text(v, &field),
                                _ => {}
                            }
                        }
                        match name {
                            Some(name) => Some(Environment { name, url }),
                            None => {
                                self.error("missing-key", value.span, format!("{field} needs a `name`"));
                                None
                            }
                        }
                    }
                }
                "container" => job.container = self.container(value, &field),
                "services" => {
                    for (name, v, _) in self.map(value, &field, &[]) {
                        if let Some(container) = self.container(v, &format!("service `{name}`")) {
                            job.services.push((name.to_string(), container));
                        }
                    }
                }
                "steps" => job.steps = self.steps(value, &field),
                "concurrency" => job.concurrency = self.concurrency(value, &field),
                "with" | "secrets" => {
                    self.error(
                        "unknown-key",
                        *key_span,
                        format!("`{key}` only applies to jobs that call a reusable workflow with `uses`"),
                    );
                }
                _ => {}
            }
        }
        if !entries.iter().any(|(k, ..)| *k == "runs-on") {
            self.error("missing-key", span, format!("job `{id}` has no `runs-on`")).hint = Some(
                "add `runs-on: ubuntu-latest` to run on this machine, or `container:` to run in an image".to_string(),
            );
        }
        if !entries.iter().any(|(k, ..)| *k == "steps") {
            self.error("missing-key", span, format!("job `{id}` has no `steps`"));
        }
        Some(job)
    }

    fn strategy(&mut self, node: &Node, what: &str) -> Option<Strategy> {
        let mut strategy = Strategy { matrix: None, fail_fast: None, max_parallel: None };
        for (key, value, _) in self.map(node, what, &["matrix", "fail-fast", "max-parallel"]) {
            match key {
                "matrix" => {
                    self.check_matrix(value, what);
                    strategy.matrix = Some(value.clone());
                }
                "fail-fast" => strategy.fail_fast = self.typed(value, "`fail-fast`", "a boolean"),
                _ => strategy.max_parallel = self.typed(value, "`max-parallel`", "a number"),
            }
        }
        Some(strategy)
    }

    fn check_matrix(&mut self, node: &Node, what: &str) {
        match &node.kind {
            NodeKind::Scalar { .. } => {
                self.text(node, "`matrix`");
            }
            NodeKind::Seq(_) => self.type_error(node, &format!("{what}.matrix"), "a mapping of variables to lists"),
            NodeKind::Map(_) => {
                for (key, value, _) in self.map(node, "`matrix`", &[]) {
                    self.check_expressions(value, &format!("`matrix.{key}`"));
                    match key {
                        "include" | "exclude" => match &value.kind {
                            NodeKind::Seq(items) => {
                                for item in items {
                                    if item.as_map().is_none() && item.as_scalar().is_none_or(|s| !s.contains("${{")) {
                                        self.type_error(item, &format!("an entry of `matrix.{key}`"), "a mapping");
                                    }
                                }
                            }
                            NodeKind::Scalar { text, .. } if text.contains("${{") => {}
                            _ => self.type_error(value, &format!("`matrix.{key}`"), "a list of mappings"),
                        },
                        _ => match &value.kind {
                            NodeKind::Seq(items) if items.is_empty() => {
                                self.error(
                                    "empty-matrix",
                                    value.span,
                                    format!("matrix variable `{key}` has no values"),
                                )
                                .hint = Some("an empty list makes the matrix produce no jobs".to_string());
                            }
                            NodeKind::Seq(_) => {}
                            NodeKind::Scalar { text, .. } if text.contains("${{") => {}
                            _ => self.type_error(value, &format!("matrix variable `{key}`"), "a list of values"),
                        },
                    }
                }
            }
        }
    }

    /// Parses every expression inside a node, reporting errors.
    fn check_expressions(&mut self, node: &Node, what: &str) {
        match &node.kind {
            NodeKind::Scalar { text, .. } if text.contains("${{") => {
                self.text(node, what);
            }
            NodeKind::Scalar { .. } => {}
            NodeKind::Seq(items) => items.iter().for_each(|i| self.check_expressions(i, what)),
            NodeKind::Map(entries) => entries.iter().for_each(|(_, v)| self.check_expressions(v, what)),
        }
    }

    fn container(&mut self, node: &Node, what: &str) -> Option<Container> {
        if node.as_scalar().is_some() {
            let image = self.text(node, what)?;
            return Some(Container {
                image,
                credentials: None,
                env: Vec::new(),
                ports: Vec::new(),
                volumes: Vec::new(),
                options: None,
                span: node.span,
            });
        }
        let mut image = None;
        let mut container = Container {
            image: Text::literal(""),
            credentials: None,
            env: Vec::new(),
            ports: Vec::new(),
            volumes: Vec::new(),
            options: None,
            span: node.span,
        };
        for (key, value, _) in self.map(node, what, CONTAINER_KEYS) {
            match key {
                "image" => image = self.text(value, &format!("{what}.image")),
                "credentials" => {
                    let mut user = None;
                    let mut password = None;
                    for (k, v, _) in self.map(value, "`credentials`", &["username", "password"]) {
                        if k == "username" {
                            user = self.text(v, "`username`")
                        } else {
                            password = self.text(v, "`password`")
                        }
                    }
                    container.credentials = user.zip(password);
                }
                "env" => container.env = self.env(value, &format!("{what}.env")),
                "ports" => container.ports = self.texts(value, "`ports`"),
                "volumes" => container.volumes = self.texts(value, "`volumes`"),
                _ => container.options = self.text(value, "`options`"),
            }
        }
        match image {
            Some(image) => Some(Container { image, ..container }),
            None => {
                self.error("missing-key", node.span, format!("{what} needs an `image`"));
                None
            }
        }
    }

    fn steps(&mut self, node: &Node, what: &str) -> Vec<Step> {
        let Some(items) = node.as_seq() else {
            self.type_error(node, what, "a list of steps");
            return Vec::new();
        };
        if items.is_empty() {
            self.error("missing-key", node.span, format!("{what} is empty")).hint =
                Some("a job needs at least one step".to_string());
        }
        let mut ids: Vec<String> = Vec::new();
        let mut steps = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let Some(step) = self.step(item, index) else { continue };
            if let Some(id) = &step.id {
                if ids.contains(id) {
                    self.error("duplicate-step-id", step.span, format!("step id `{id}` is used twice in this job"));
                }
                ids.push(id.clone());
            }
            steps.push(step);
        }
        steps
    }

    fn step(&mut self, node: &Node, index: usize) -> Option<Step> {
        let what = format!("step {}", index + 1);
        let entries = self.map(node, &what, STEP_KEYS);
        node.as_map()?;
        let field = |key: &str| entries.iter().find(|(k, ..)| *k == key).map(|(_, v, _)| *v);
        let mut step = Step {
            id: None,
            name: None,
            condition: None,
            action: StepAction::Run { script: Text::literal(""), shell: None, working_directory: None },
            env: Vec::new(),
            continue_on_error: None,
            timeout_minutes: None,
            span: node.span,
        };
        if let Some(v) = field("id") {
            step.id = self.plain_string(v, "`id`");
            if let Some(id) = &step.id
                && (!id.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            {
                self.error("invalid-step-id", v.span, format!("step id `{id}` is not valid")).hint = Some(
                    "a step id starts with a letter or `_` and holds only letters, digits, `-` and `_`".to_string(),
                );
            }
        }
        if let Some(v) = field("name") {
            step.name = self.text(v, "`name`");
        }
        if let Some(v) = field("if") {
            step.condition = self.condition(v, &format!("`if` of {what}"));
        }
        if let Some(v) = field("env") {
            step.env = self.env(v, &format!("`env` of {what}"));
        }
        if let Some(v) = field("continue-on-error") {
            step.continue_on_error = self.typed(v, "`continue-on-error`", "a boolean");
        }
        if let Some(v) = field("timeout-minutes") {
            step.timeout_minutes = self.typed(v, "`timeout-minutes`", "a number");
        }
        match (field("run"), field("uses")) {
            (Some(_), Some(uses)) => {
                self.error("conflicting-keys", uses.span, format!("{what} has both `run` and `uses`")).hint =
                    Some("split it into two steps".to_string());
                None
            }
            (None, None) => {
                self.error("missing-key", node.span, format!("{what} has neither `run` nor `uses`")).hint =
                    Some("add `run: <command>`".to_string());
                None
            }
            (Some(run), None) => {
                for key in ["with"] {
                    if let Some(v) = field(key) {
                        self.error("unknown-key", v.span, format!("`{key}` applies only to steps with `uses`"));
                    }
                }
                let script = self.text(run, &format!("`run` of {what}"))?;
                let shell = field("shell").and_then(|v| self.shell(v));
                let working_directory = field("working-directory").and_then(|v| self.text(v, "`working-directory`"));
                step.action = StepAction::Run { script, shell, working_directory };
                Some(step)
            }
            (None, Some(uses)) => {
                for key in ["shell", "working-directory"] {
                    if let Some(v) = field(key) {
                        self.error("unknown-key", v.span, format!("`{key}` applies only to steps with `run`"));
                    }
                }
                let reference = self.plain_string(uses, "`uses`")?;
                let Some(action) = BuiltinAction::from_uses(&reference) else {
                    let hint = if reference.starts_with("docker://") {
                        "name an image after `docker://`, e.g. `docker://alpine:3.20`".to_string()
                    } else if reference.starts_with("./") {
                        "local actions are not supported yet; call the script with a `run:` step".to_string()
                    } else {
                        "built in are actions/checkout, actions/cache (and /restore, /save), actions/upload-artifact, actions/download-artifact, docker/build-push-action and docker:// images; replace the step with a `run:` step".to_string()
                    };
                    let diagnostic = Diagnostic::error(
                        "unsupported-action",
                        uses.span,
                        format!("action `{reference}` is not available here"),
                    )
                    .hint(hint);
                    self.diagnostics.push(diagnostic);
                    return None;
                };
                let mut with = Vec::new();
                if let Some(v) = field("with") {
                    for (key, value, key_span) in self.map(v, "`with`", &[]) {
                        if !action.inputs().contains(&key) {
                            let hint = did_you_mean(key, action.inputs().iter().copied())
                                .map(|s| format!("did you mean `{s}`?"));
                            let diagnostic = Diagnostic::error(
                                "unknown-input",
                                key_span,
                                format!("`{reference}` has no input `{key}`"),
                            )
                            .expected(format!("one of {}", action.inputs().join(", ")))
                            .maybe_hint(hint);
                            self.diagnostics.push(diagnostic);
                            continue;
                        }
                        let text = if value.is_null() {
                            Some(Text::literal(""))
                        } else {
                            self.text(value, &format!("`with.{key}`"))
                        };
                        if let Some(text) = text {
                            with.push((key.to_string(), text));
                        }
                    }
                }
                for required in action.required_inputs() {
                    if !with.iter().any(|(k, _)| k == required) {
                        self.error("missing-input", uses.span, format!("`{reference}` needs the input `{required}`"))
                            .hint = Some(format!("add `with: {{ {required}: ... }}`"));
                    }
                }
                step.action = StepAction::Uses { action, reference, with };
                Some(step)
            }
        }
    }
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
