//! Finding and loading a repository's workflow files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use spec::Diagnostic;
use spec::workflow::Workflow;

/// A workflow file read from disk, checked.
pub struct LoadedWorkflow {
    /// Path relative to the repository root, as users see it in messages.
    pub path: String,
    pub source: String,
    /// Shared with the runs it starts, which hold it as long as they last.
    pub workflow: Option<std::sync::Arc<Workflow>>,
    pub diagnostics: Vec<Diagnostic>,
}

impl LoadedWorkflow {
    /// The name used to select it on the command line: the file name without extension.
    pub fn stem(&self) -> &str {
        let file = self.path.rsplit('/').next().unwrap_or(&self.path);
        file.trim_end_matches(".yml").trim_end_matches(".yaml")
    }

    pub fn display_name(&self) -> String {
        self.workflow.as_ref().and_then(|w| w.name.clone()).unwrap_or_else(|| self.path.clone())
    }

    pub fn n_errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn render_diagnostics(&self) -> String {
        self.diagnostics.iter().map(|d| d.render(&self.path, &self.source)).collect::<Vec<_>>().join("\n")
    }
}

/// The workflow directory of a repository: the first of [`spec::workflow::WORKFLOW_DIRS`] that holds
/// a workflow file, as on the server.
pub fn workflow_dir(root: &Path) -> Option<PathBuf> {
    spec::workflow::WORKFLOW_DIRS.iter().map(|d| root.join(d)).find(|d| list_files(d).is_ok_and(|f| !f.is_empty()))
}

/// Lists the workflow files of a directory, sorted by name.
pub fn list_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && p.file_name().is_some_and(|n| spec::workflow::is_workflow_file(&n.to_string_lossy()))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Reads and checks one file; `display` is the path shown in diagnostics.
pub fn load_file(path: &Path, display: String) -> Result<LoadedWorkflow> {
    let metadata = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if metadata.len() > spec::yaml::MAX_FILE_BYTES as u64 {
        let diagnostic = Diagnostic::error(
            "file-too-large",
            spec::Span::at(1, 1, 1),
            format!("file is {} bytes, more than the limit of {} bytes", metadata.len(), spec::yaml::MAX_FILE_BYTES),
        )
        .hint("workflow files are small; is this the right file?");
        return Ok(LoadedWorkflow {
            path: display,
            source: String::new(),
            workflow: None,
            diagnostics: vec![diagnostic],
        });
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let source = match String::from_utf8(bytes) {
        Ok(source) => source,
        Err(error) => {
            let diagnostic = Diagnostic::error(
                "not-utf8",
                spec::Span::at(1, 1, 1),
                format!("file is not UTF-8 (invalid byte at offset {})", error.utf8_error().valid_up_to()),
            )
            .hint("save the file as UTF-8");
            return Ok(LoadedWorkflow {
                path: display,
                source: String::new(),
                workflow: None,
                diagnostics: vec![diagnostic],
            });
        }
    };
    // The service file shares the workflows' diagnostics but not their format.
    let is_service = path.file_name().is_some_and(|n| n == "service.yml" || n == "service.yaml");
    if is_service {
        let (_, diagnostics) = spec::service::parse(&source);
        return Ok(LoadedWorkflow { path: display, source, workflow: None, diagnostics });
    }
    let (workflow, diagnostics) = ci::check::validate(&source);
    Ok(LoadedWorkflow { path: display, source, workflow: workflow.map(std::sync::Arc::new), diagnostics })
}

/// The repository's service file, `.tandem/service.yml` (or `.yaml`), if it has one.
pub fn service_file(root: &Path) -> Option<PathBuf> {
    [".tandem/service.yml", ".tandem/service.yaml"].iter().map(|f| root.join(f)).find(|p| p.is_file())
}

/// Loads every workflow of the repository at `root`.
pub fn load_all(root: &Path) -> Result<Vec<LoadedWorkflow>> {
    let Some(dir) = workflow_dir(root) else {
        anyhow::bail!(
            "no workflows found in {}\n  hint: put workflow files in .tandem/workflows/ or .github/workflows/",
            root.display()
        );
    };
    let mut loaded: Vec<LoadedWorkflow> = list_files(&dir)?
        .iter()
        .map(|path| {
            let display = path.strip_prefix(root).unwrap_or(path).display().to_string();
            load_file(path, display)
        })
        .collect::<Result<_>>()?;
    for workflow in &mut loaded {
        let found = check_calls(root, workflow);
        workflow.diagnostics.extend(found);
    }
    Ok(loaded)
}

/// Checks each call of a local reusable workflow against the file it calls (inputs, secrets,
/// `on: workflow_call`), and follows calls to find cycles. Remote ones are checked when they run.
fn check_calls(root: &Path, workflow: &LoadedWorkflow) -> Vec<Diagnostic> {
    use spec::workflow::ActionRef;
    let mut found = Vec::new();
    let Some(parsed) = &workflow.workflow else { return found };
    for job in &parsed.jobs {
        let Some(call) = &job.call else { continue };
        let ActionRef::Local { path } = &call.target else { continue };
        let Some((called, _)) = read_called(root, path) else {
            found.push(
                Diagnostic::error("missing-workflow", call.span, format!("job `{}` calls {path}, which does not exist", job.id))
                    .hint("a local reusable workflow is a path from the repository root, e.g. `./.github/workflows/build.yml`"),
            );
            continue;
        };
        found.extend(spec::workflow::check_call(call, &called));
        // Follow the calls from there: coming back to this file is a cycle.
        let mut chain = vec![workflow.path.clone(), path.clone()];
        if let Some(cycle) = find_cycle(root, &called, &mut chain) {
            found.push(Diagnostic::error(
                "workflow-cycle",
                call.span,
                format!("reusable workflows call each other in a cycle: {}", cycle.join(" → ")),
            ));
        }
    }
    found
}

fn read_called(root: &Path, path: &str) -> Option<(spec::workflow::Workflow, String)> {
    let source = std::fs::read_to_string(root.join(path)).ok()?;
    let (workflow, _) = ci::check::validate(&source);
    workflow.map(|w| (w, source))
}

fn find_cycle(root: &Path, workflow: &spec::workflow::Workflow, chain: &mut Vec<String>) -> Option<Vec<String>> {
    if chain.len() > spec::workflow::MAX_WORKFLOW_DEPTH {
        return None;
    }
    for job in &workflow.jobs {
        let Some(spec::workflow::ActionRef::Local { path }) = job.call.as_ref().map(|c| &c.target) else { continue };
        if chain.iter().any(|p| p == path) {
            let mut cycle = chain.clone();
            cycle.push(path.clone());
            return Some(cycle);
        }
        let Some((called, _)) = read_called(root, path) else { continue };
        chain.push(path.clone());
        let found = find_cycle(root, &called, chain);
        chain.pop();
        if found.is_some() {
            return found;
        }
    }
    None
}
