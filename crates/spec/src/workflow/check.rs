//! The checker's helpers and the workflow's top level: triggers, inputs, defaults, shells, concurrency.

#[allow(unused_imports)]
use super::*;

impl Checker {
    pub(super) fn error(&mut self, code: &'static str, span: Span, message: impl Into<String>) -> &mut Diagnostic {
        self.diagnostics.push(Diagnostic::error(code, span, message));
        let last = self.diagnostics.len() - 1;
        &mut self.diagnostics[last]
    }

    pub(super) fn type_error(&mut self, node: &Node, what: &str, expected: &str) {
        let message = format!("{what} must be {expected}, found {}", node.type_name());
        self.error("wrong-type", node.span, message).expected = Some(expected.to_string());
    }

    /// The mapping entries of `node`, reporting unknown and duplicate keys.
    pub(super) fn map<'n>(&mut self, node: &'n Node, what: &str, known: &[&str]) -> Vec<(&'n str, &'n Node, Span)> {
        yaml::entries(node, what, known, true, &mut self.diagnostics)
    }

    /// A scalar as text with its expressions parsed; reports expression errors at their place.
    pub(super) fn text(&mut self, node: &Node, what: &str) -> Option<Text> {
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

    pub(super) fn expr_error(&mut self, node: &Node, raw: &str, error: &ExprError, what: &str) {
        let span = locate(node, raw, error.offset, error.len);
        let diagnostic =
            Diagnostic::error("expression", span, format!("invalid expression in {what}: {}", error.message))
                .maybe_hint(error.hint.clone());
        self.diagnostics.push(diagnostic);
    }

    pub(super) fn plain_string(&mut self, node: &Node, what: &str) -> Option<String> {
        match node.as_scalar() {
            Some(s) => Some(s.to_string()),
            None => {
                self.type_error(node, what, "a string");
                None
            }
        }
    }

    pub(super) fn strings(&mut self, node: &Node, what: &str) -> Vec<String> {
        match &node.kind {
            NodeKind::Scalar { text, .. } => vec![text.clone()],
            NodeKind::Seq(items) => items.iter().filter_map(|item| self.plain_string(item, what)).collect(),
            NodeKind::Map(_) => {
                self.type_error(node, what, "a string or a list of strings");
                Vec::new()
            }
        }
    }

    pub(super) fn texts(&mut self, node: &Node, what: &str) -> Vec<Text> {
        match &node.kind {
            NodeKind::Seq(items) => items.iter().filter_map(|item| self.text(item, what)).collect(),
            _ => self.text(node, what).into_iter().collect(),
        }
    }

    /// A scalar that must be a number or a boolean once expressions are evaluated.
    pub(super) fn typed(&mut self, node: &Node, what: &str, expected: &str) -> Option<Text> {
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

    pub(super) fn env(&mut self, node: &Node, what: &str) -> Vec<(String, Text)> {
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

    pub(super) fn condition(&mut self, node: &Node, what: &str) -> Option<Condition> {
        let raw = match &node.kind {
            NodeKind::Scalar { text, .. } => text.clone(),
            _ => {
                self.type_error(node, what, "an expression");
                return None;
            }
        };
        let trimmed = raw.trim();
        let whole = trimmed.starts_with("${{") && trimmed.ends_with("}}") && trimmed.matches("${{").count() == 1;
        if trimmed.contains("${{") && !whole {
            let diagnostic = Diagnostic::warning(
                "condition-is-text",
                node.span,
                format!(
                    "{what} is text with `${{{{ }}}}` inside: a non-empty string, so it is always true (as on GitHub)"
                ),
            )
            .hint("write the whole condition as one expression, without `${{ }}`");
            self.diagnostics.push(diagnostic);
        }
        match expr::parse_condition(&raw) {
            Ok(expr) => Some(Condition { raw, expr, span: node.span }),
            Err(error) => {
                self.expr_error(node, &raw, &error, what);
                None
            }
        }
    }

    pub(super) fn workflow(&mut self, root: &Node) -> Workflow {
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

    pub(super) fn triggers(&mut self, node: &Node) -> Vec<Trigger> {
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

    pub(super) fn event(&mut self, name: &str, span: Span, config: Option<&Node>) -> Option<Trigger> {
        if name == "workflow_call" {
            return Some(self.workflow_call(span, config));
        }
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

    /// `on.workflow_call`: the inputs, outputs and secrets a reusable workflow declares.
    fn workflow_call(&mut self, span: Span, config: Option<&Node>) -> Trigger {
        let mut trigger = Trigger { event: "workflow_call".to_string(), span, ..Trigger::default() };
        let Some(config) = config.filter(|c| !c.is_null()) else { return trigger };
        for (key, value, _) in self.map(config, "`on.workflow_call`", &["inputs", "outputs", "secrets"]) {
            if value.is_null() {
                continue;
            }
            match key {
                "inputs" => trigger.inputs = self.inputs(value),
                "outputs" => {
                    for (name, output, output_span) in self.map(value, "`on.workflow_call.outputs`", &[]) {
                        let entries = self.map(output, &format!("output `{name}`"), &["description", "value"]);
                        match entries.iter().find(|(k, ..)| *k == "value") {
                            Some((_, v, _)) => {
                                if let Some(text) = self.text(v, &format!("`value` of output `{name}`")) {
                                    trigger.outputs.push((name.to_string(), text));
                                }
                            }
                            None => {
                                self.error("missing-key", output_span, format!("output `{name}` has no `value`"))
                                    .hint = Some("e.g. `value: ${{ jobs.build.outputs.version }}`".to_string());
                            }
                        }
                    }
                }
                "secrets" => {
                    for (name, secret, _) in self.map(value, "`on.workflow_call.secrets`", &[]) {
                        let required = !secret.is_null()
                            && self
                                .map(secret, &format!("secret `{name}`"), &["description", "required"])
                                .iter()
                                .any(|(k, v, _)| *k == "required" && v.to_value().is_truthy());
                        trigger.secrets.push((name.to_string(), required));
                    }
                }
                _ => {}
            }
        }
        trigger
    }

    pub(super) fn inputs(&mut self, node: &Node) -> Vec<Input> {
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

    pub(super) fn defaults(&mut self, node: &Node, what: &str) -> RunDefaults {
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

    pub(super) fn shell(&mut self, node: &Node) -> Option<String> {
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

    pub(super) fn concurrency(&mut self, node: &Node, what: &str) -> Option<Concurrency> {
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
}
