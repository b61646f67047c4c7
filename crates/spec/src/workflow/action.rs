//! Action metadata files (`action.yml` / `action.yaml`): the inputs, outputs and the way an
//! action runs (a Node.js program, composite steps, or a Docker container), checked with the
//! same diagnostics as workflows.

use super::*;

/// An action, as its metadata file declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub name: String,
    pub inputs: Vec<ActionInput>,
    /// Outputs, each with its `value` expression (composite actions only; other kinds set their
    /// outputs through `$GITHUB_OUTPUT`).
    pub outputs: Vec<(String, Option<Text>)>,
    pub runs: Runs,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActionInput {
    pub name: String,
    pub required: bool,
    /// May hold expressions (`${{ github.token }}`), evaluated when the step runs.
    pub default: Option<Text>,
    pub deprecation: Option<String>,
}

/// How an action runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Runs {
    /// `using: node12|node16|node20|node24`: JavaScript files of the action, run with `node`.
    Node {
        version: u32,
        main: String,
        pre: Option<String>,
        pre_if: Option<Condition>,
        post: Option<String>,
        post_if: Option<Condition>,
    },
    /// `using: composite`: steps, run as part of the calling step.
    Composite { steps: Vec<Step> },
    /// `using: docker`: a container of `image` (`Dockerfile` or another file of the action, built
    /// first; or `docker://name`).
    Docker {
        image: String,
        entrypoint: Option<String>,
        pre_entrypoint: Option<String>,
        post_entrypoint: Option<String>,
        pre_if: Option<Condition>,
        post_if: Option<Condition>,
        args: Vec<Text>,
        env: Vec<(String, Text)>,
    },
}

const ACTION_KEYS: &[&str] = &["name", "author", "description", "inputs", "outputs", "runs", "branding"];
const RUNS_KEYS: &[&str] = &[
    "using",
    "main",
    "pre",
    "pre-if",
    "post",
    "post-if",
    "steps",
    "image",
    "entrypoint",
    "pre-entrypoint",
    "post-entrypoint",
    "args",
    "env",
];

/// The Node.js versions actions may ask for.
pub const NODE_VERSIONS: &[u32] = &[12, 16, 20, 24];

/// Parses and checks an action's metadata file. An action with error diagnostics must not run.
pub fn parse_action(source: &str) -> (Option<Action>, Vec<Diagnostic>) {
    let root = match yaml::parse(source) {
        Ok(Some(root)) => root,
        Ok(None) => {
            let empty = Diagnostic::error("empty-file", Span::at(1, 1, 1), "the action's metadata file is empty")
                .hint("an action needs at least `name:` and `runs:`");
            return (None, vec![empty]);
        }
        Err(diagnostic) => return (None, vec![diagnostic]),
    };
    let mut checker = Checker { diagnostics: Vec::new() };
    let action = checker.action(&root);
    checker.diagnostics.sort_by_key(|d| (d.span.line, d.span.col));
    (action, checker.diagnostics)
}

impl Checker {
    fn action(&mut self, root: &Node) -> Option<Action> {
        let entries = self.map(root, "the action", ACTION_KEYS);
        root.as_map()?;
        let field = |key: &str| entries.iter().find(|(k, ..)| *k == key).map(|(_, v, _)| *v);
        let name = field("name").and_then(|v| self.plain_string(v, "`name`")).unwrap_or_default();
        let mut inputs = Vec::new();
        if let Some(node) = field("inputs").filter(|n| !n.is_null()) {
            for (input, value, _) in self.map(node, "`inputs`", &[]) {
                let what = format!("input `{input}`");
                let mut declared =
                    ActionInput { name: input.to_string(), required: false, default: None, deprecation: None };
                if !value.is_null() {
                    for (key, v, _) in
                        self.map(value, &what, &["description", "required", "default", "deprecationMessage"])
                    {
                        match key {
                            "required" => declared.required = matches!(v.as_scalar(), Some("true" | "True" | "TRUE")),
                            "default" if !v.is_null() => {
                                declared.default = self.text(v, &format!("`default` of {what}"))
                            }
                            "deprecationMessage" => declared.deprecation = v.as_scalar().map(str::to_string),
                            _ => {}
                        }
                    }
                }
                inputs.push(declared);
            }
        }
        let mut outputs = Vec::new();
        if let Some(node) = field("outputs").filter(|n| !n.is_null()) {
            for (output, value, _) in self.map(node, "`outputs`", &[]) {
                let mut text = None;
                if !value.is_null() {
                    for (key, v, _) in self.map(value, &format!("output `{output}`"), &["description", "value"]) {
                        if key == "value" {
                            text = self.text(v, &format!("`value` of output `{output}`"));
                        }
                    }
                }
                outputs.push((output.to_string(), text));
            }
        }
        let Some(runs) = field("runs") else {
            self.error("missing-key", root.span, "the action has no `runs`").hint =
                Some("add `runs: { using: node20, main: index.js }` or `using: composite` with `steps`".to_string());
            return None;
        };
        let runs = self.runs(runs, &outputs)?;
        Some(Action { name, inputs, outputs, runs })
    }

    fn runs(&mut self, node: &Node, outputs: &[(String, Option<Text>)]) -> Option<Runs> {
        let entries = self.map(node, "`runs`", RUNS_KEYS);
        node.as_map()?;
        let field = |key: &str| entries.iter().find(|(k, ..)| *k == key).map(|(_, v, _)| *v);
        let Some(using_node) = field("using") else {
            self.error("missing-key", node.span, "`runs` has no `using`").hint =
                Some("one of node20, node24, composite, docker".to_string());
            return None;
        };
        let using = self.plain_string(using_node, "`using`")?.to_ascii_lowercase();
        let file =
            |checker: &mut Checker, key: &str| field(key).and_then(|v| checker.plain_string(v, &format!("`{key}`")));
        let condition =
            |checker: &mut Checker, key: &str| field(key).and_then(|v| checker.condition(v, &format!("`{key}`")));
        if let Some(version) = using.strip_prefix("node") {
            let Some(version) = version.parse::<u32>().ok().filter(|v| NODE_VERSIONS.contains(v)) else {
                self.error(
                    "unknown-value",
                    using_node.span,
                    format!("`using: {using}` is not a Node.js version actions run on"),
                )
                .expected = Some("node12, node16, node20 or node24".to_string());
                return None;
            };
            let Some(main) = file(self, "main") else {
                self.error("missing-key", node.span, format!("a `{using}` action needs `main`")).hint =
                    Some("name the script that runs, e.g. `main: dist/index.js`".to_string());
                return None;
            };
            let (pre, post) = (file(self, "pre"), file(self, "post"));
            let (pre_if, post_if) = (condition(self, "pre-if"), condition(self, "post-if"));
            return Some(Runs::Node { version, main, pre, pre_if, post, post_if });
        }
        match using.as_str() {
            "composite" => {
                let Some(steps_node) = field("steps") else {
                    self.error("missing-key", node.span, "a composite action needs `steps`");
                    return None;
                };
                let steps = self.steps(steps_node, "`runs.steps`");
                for (step, item) in steps.iter().zip(steps_node.as_seq().unwrap_or_default()) {
                    if let StepAction::Run { shell: None, .. } = step.action {
                        self.error("missing-key", item.span, "a `run` step of a composite action needs `shell`").hint =
                            Some("add `shell: bash` (or sh, python, pwsh)".to_string());
                    }
                }
                for (name, value) in outputs {
                    if value.is_none() {
                        self.error(
                            "missing-key",
                            node.span,
                            format!("output `{name}` of a composite action has no `value`"),
                        )
                        .hint = Some("e.g. `value: ${{ steps.<id>.outputs.<name> }}`".to_string());
                    }
                }
                Some(Runs::Composite { steps })
            }
            "docker" => {
                let Some(image) = file(self, "image") else {
                    self.error("missing-key", node.span, "a docker action needs `image`").hint =
                        Some("`image: Dockerfile` or `image: docker://alpine:3.20`".to_string());
                    return None;
                };
                let args = field("args").map(|v| self.texts(v, "`args`")).unwrap_or_default();
                let env = field("env").map(|v| self.env(v, "`runs.env`")).unwrap_or_default();
                Some(Runs::Docker {
                    image,
                    entrypoint: file(self, "entrypoint"),
                    pre_entrypoint: file(self, "pre-entrypoint"),
                    post_entrypoint: file(self, "post-entrypoint"),
                    pre_if: condition(self, "pre-if"),
                    post_if: condition(self, "post-if"),
                    args,
                    env,
                })
            }
            _ => {
                self.error("unknown-value", using_node.span, format!("`using: {using}` is not a kind of action"))
                    .expected = Some("node20, node24 (or node12, node16), composite or docker".to_string());
                None
            }
        }
    }
}

/// Checks a call of a reusable workflow (`jobs.<id>.uses`) against the called workflow: it must
/// be callable, take every input given (of its type, when the value is literal), and get every
/// required input and secret.
pub fn check_call(call: &WorkflowCall, called: &Workflow) -> Vec<Diagnostic> {
    let mut found = Vec::new();
    let Some(trigger) = called.trigger("workflow_call") else {
        found.push(
            Diagnostic::error(
                "not-callable",
                call.span,
                format!("`{}` cannot be called: it has no `on: workflow_call`", call.uses),
            )
            .hint("add `on: workflow_call:` to the called workflow"),
        );
        return found;
    };
    let names: Vec<&str> = trigger.inputs.iter().map(|i| i.name.as_str()).collect();
    for (key, text) in &call.with {
        let Some(input) = trigger.inputs.iter().find(|i| i.name == *key) else {
            let declared = if names.is_empty() { "none".to_string() } else { names.join(", ") };
            found.push(
                Diagnostic::error(
                    "unknown-input",
                    text.span,
                    format!("`{}` has no input `{key}`; it declares {declared}", call.uses),
                )
                .maybe_hint(did_you_mean(key, names.iter().copied()).map(|s| format!("did you mean `{s}`?"))),
            );
            continue;
        };
        if text.template.is_literal() {
            let raw = text.raw.trim();
            let wrong = match input.kind {
                InputKind::Number => raw.parse::<f64>().is_err(),
                InputKind::Boolean => !matches!(raw, "true" | "false"),
                _ => false,
            };
            if wrong {
                let kind = if input.kind == InputKind::Number { "a number" } else { "a boolean" };
                found.push(Diagnostic::error(
                    "wrong-type",
                    text.span,
                    format!("input `{key}` must be {kind}, found `{raw}`"),
                ));
            }
        }
    }
    for input in &trigger.inputs {
        if input.required && input.default.is_none() && !call.with.iter().any(|(k, _)| *k == input.name) {
            found.push(Diagnostic::error(
                "missing-input",
                call.span,
                format!("`{}` needs the input `{}`", call.uses, input.name),
            ));
        }
    }
    if let Some(given) = &call.secrets {
        for (name, required) in &trigger.secrets {
            if *required && !given.iter().any(|(k, _)| k == name) {
                found.push(Diagnostic::error(
                    "missing-secret",
                    call.span,
                    format!(
                        "`{}` needs the secret `{name}`; pass it under `secrets:` (or `secrets: inherit`)",
                        call.uses
                    ),
                ));
            }
        }
    }
    found
}
