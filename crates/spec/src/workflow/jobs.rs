//! The checker for jobs: strategy and matrix, containers and services, steps and the actions they use.

#[allow(unused_imports)]
use super::*;

impl Checker {
    pub(super) fn jobs(&mut self, node: &Node) -> Vec<Job> {
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

    pub(super) fn job(&mut self, id: &str, node: &Node, span: Span) -> Option<Job> {
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
            call: None,
        };
        let what = format!("job `{id}`");
        let entries = self.map(node, &what, JOB_KEYS);
        if let Some((_, uses, _)) = entries.iter().find(|(k, ..)| *k == "uses") {
            job.call = self.call(id, uses, &entries);
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
                    };
                    for label in job.runs_on.iter().filter(|l| l.template.is_literal()) {
                        let lower = label.raw.to_ascii_lowercase();
                        if lower.starts_with("windows") || lower.starts_with("macos") {
                            let diagnostic = Diagnostic::warning(
                                "unsupported-runner",
                                label.span,
                                format!("job `{id}` needs a {} runner (`{}`); Tandem runs jobs on Linux, so this job will fail", if lower.starts_with("windows") { "Windows" } else { "macOS" }, label.raw),
                            )
                            .hint("run it on `ubuntu-latest`, or keep it for GitHub's runners");
                            self.diagnostics.push(diagnostic);
                        }
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
                "with" | "secrets" if job.call.is_none() => {
                    self.error(
                        "unknown-key",
                        *key_span,
                        format!("`{key}` only applies to jobs that call a reusable workflow with `uses`"),
                    );
                }
                _ => {}
            }
        }
        if job.call.is_some() {
            const CALL_KEYS: &[&str] =
                &["name", "needs", "if", "uses", "with", "secrets", "strategy", "permissions", "concurrency"];
            for (key, _, key_span) in &entries {
                if !CALL_KEYS.contains(key) {
                    self.error(
                        "unknown-key",
                        *key_span,
                        format!("`{key}` does not apply to a job that calls a reusable workflow"),
                    )
                    .hint = Some("the called workflow's jobs say where and how they run".to_string());
                }
            }
            return Some(job);
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

    /// `jobs.<id>.uses` with its `with` and `secrets`.
    fn call(&mut self, id: &str, uses: &Node, entries: &[(&str, &Node, Span)]) -> Option<WorkflowCall> {
        let reference = self.plain_string(uses, "`uses`")?;
        let target = match ActionRef::parse(&reference) {
            Ok(target @ (ActionRef::Local { .. } | ActionRef::Remote { .. })) => target,
            Ok(ActionRef::Docker { .. }) | Err(_) => {
                let diagnostic = Diagnostic::error(
                    "invalid-workflow-ref",
                    uses.span,
                    format!("job `{id}`: `{reference}` is not a workflow"),
                )
                .expected("`./.github/workflows/FILE.yml` or `owner/repo/.github/workflows/FILE.yml@ref`".to_string());
                self.diagnostics.push(diagnostic);
                return None;
            }
        };
        let path = match &target {
            ActionRef::Local { path } | ActionRef::Remote { path, .. } => path.clone(),
            ActionRef::Docker { .. } => String::new(),
        };
        if !path.starts_with(".github/workflows/") || !is_workflow_file(&path) {
            let diagnostic = Diagnostic::error(
                "invalid-workflow-ref",
                uses.span,
                format!("job `{id}`: `{reference}` does not name a file in .github/workflows"),
            )
            .hint("a reusable workflow is a `.yml` file in `.github/workflows`".to_string());
            self.diagnostics.push(diagnostic);
            return None;
        }
        let field = |key: &str| entries.iter().find(|(k, ..)| *k == key).map(|(_, v, _)| *v);
        let mut with = Vec::new();
        if let Some(node) = field("with") {
            for (key, value, _) in self.map(node, "`with`", &[]) {
                let text =
                    if value.is_null() { Some(Text::literal("")) } else { self.text(value, &format!("`with.{key}`")) };
                if let Some(text) = text {
                    with.push((key.to_string(), text));
                }
            }
        }
        let secrets = match field("secrets") {
            Some(node) if node.as_scalar() == Some("inherit") => None,
            Some(node) if node.as_map().is_some() => Some(self.env(node, "`secrets`")),
            Some(node) => {
                self.type_error(node, "`secrets`", "`inherit` or a map of secrets");
                Some(Vec::new())
            }
            None => Some(Vec::new()),
        };
        Some(WorkflowCall { uses: reference, target, with, secrets, span: uses.span })
    }

    pub(super) fn strategy(&mut self, node: &Node, what: &str) -> Option<Strategy> {
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

    pub(super) fn check_matrix(&mut self, node: &Node, what: &str) {
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
    pub(super) fn check_expressions(&mut self, node: &Node, what: &str) {
        match &node.kind {
            NodeKind::Scalar { text, .. } if text.contains("${{") => {
                self.text(node, what);
            }
            NodeKind::Scalar { .. } => {}
            NodeKind::Seq(items) => items.iter().for_each(|i| self.check_expressions(i, what)),
            NodeKind::Map(entries) => entries.iter().for_each(|(_, v)| self.check_expressions(v, what)),
        }
    }

    pub(super) fn container(&mut self, node: &Node, what: &str) -> Option<Container> {
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

    pub(super) fn steps(&mut self, node: &Node, what: &str) -> Vec<Step> {
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

    pub(super) fn step(&mut self, node: &Node, index: usize) -> Option<Step> {
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
                let target = match ActionRef::parse(&reference) {
                    Ok(target) => target,
                    Err(message) => {
                        let code = if message.ends_with("names no version") { "missing-ref" } else { "invalid-action" };
                        let diagnostic = Diagnostic::error(code, uses.span, message)
                            .expected(
                                "`owner/repo@ref`, `owner/repo/path@ref`, `./path` or `docker://image`".to_string(),
                            )
                            .hint(format!("add a tag, branch or commit: `{}@v4`", reference.trim_end_matches('@')));
                        self.diagnostics.push(diagnostic);
                        return None;
                    }
                };
                let mut builtin = BuiltinAction::from_uses(&reference);
                // A near miss of a built-in's name is most likely a typo: said before any fetch.
                if let (None, ActionRef::Remote { owner, repo, path, .. }) = (builtin, &target) {
                    let name =
                        if path.is_empty() { format!("{owner}/{repo}") } else { format!("{owner}/{repo}/{path}") };
                    if let Some(near) = crate::diag::near_miss(&name, BuiltinAction::NAMES.iter().copied()) {
                        let diagnostic = Diagnostic::warning(
                            "unknown-action",
                            uses.span,
                            format!("`{name}` is not a built-in action; it will be fetched from the action sources"),
                        )
                        .hint(format!("did you mean `{near}`?"));
                        self.diagnostics.push(diagnostic);
                    }
                }
                let mut with = Vec::new();
                if let Some(v) = field("with") {
                    for (key, value, key_span) in self.map(v, "`with`", &[]) {
                        if let Some(action) = builtin
                            && !action.inputs().contains(&key)
                        {
                            // A near miss of a known input is a typo; another input is one
                            // Tandem's own version lacks, so the action itself runs.
                            let expected = format!("one of {}", action.inputs().join(", "));
                            if let Some(near) = did_you_mean(key, action.inputs().iter().copied()) {
                                let diagnostic = Diagnostic::error(
                                    "unknown-input",
                                    key_span,
                                    format!("`{reference}` has no input `{key}`"),
                                )
                                .expected(expected)
                                .hint(format!("did you mean `{near}`?"));
                                self.diagnostics.push(diagnostic);
                                continue;
                            }
                            let diagnostic = Diagnostic::warning(
                                "unknown-input",
                                key_span,
                                format!(
                                    "Tandem's built-in `{reference}` has no input `{key}`, so the action itself will be fetched and run"
                                ),
                            )
                            .expected(expected);
                            self.diagnostics.push(diagnostic);
                            builtin = None;
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
                if let Some(action) = builtin {
                    for required in action.required_inputs() {
                        if !with.iter().any(|(k, _)| k == required) {
                            self.error(
                                "missing-input",
                                uses.span,
                                format!("`{reference}` needs the input `{required}`"),
                            )
                            .hint = Some(format!("add `with: {{ {required}: ... }}`"));
                        }
                    }
                }
                step.action = StepAction::Uses { builtin, target, reference, with };
                Some(step)
            }
        }
    }
}
