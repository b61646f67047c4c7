//! `tandem validate`: check workflow files and print every diagnostic.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::Format;
use crate::workflows::{self, LoadedWorkflow};

/// Runs the command; returns the process exit code (0: no errors, 1: errors found).
pub fn run(root: &Path, paths: &[PathBuf], format: Format) -> Result<i32> {
    let loaded = load(root, paths)?;
    let n_errors: usize = loaded.iter().map(LoadedWorkflow::n_errors).sum();
    let n_warnings: usize = loaded.iter().map(|w| w.diagnostics.len() - w.n_errors()).sum();
    match format {
        Format::Json => {
            let files: Vec<serde_json::Value> = loaded
                .iter()
                .map(|w| {
                    serde_json::json!({
                        "path": w.path,
                        "name": w.workflow.as_ref().and_then(|wf| wf.name.clone()),
                        "valid": w.n_errors() == 0,
                        "jobs": w.workflow.as_ref().map(|wf| wf.jobs.len()).unwrap_or(0),
                        "diagnostics": w.diagnostics,
                    })
                })
                .collect();
            let report = serde_json::json!({"files": files, "errors": n_errors, "warnings": n_warnings});
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Format::Text => {
            for workflow in &loaded {
                if !workflow.diagnostics.is_empty() {
                    println!("{}", workflow.render_diagnostics());
                }
            }
            for workflow in &loaded {
                let status = if workflow.n_errors() > 0 { "invalid" } else { "ok" };
                let jobs = workflow.workflow.as_ref().map(|w| w.jobs.len()).unwrap_or(0);
                println!("{status:>7}  {}  ({jobs} jobs, {} diagnostics)", workflow.path, workflow.diagnostics.len());
            }
            println!("\n{} file(s), {n_errors} error(s), {n_warnings} warning(s)", loaded.len());
        }
    }
    Ok(if n_errors > 0 { 1 } else { 0 })
}

fn load(root: &Path, paths: &[PathBuf]) -> Result<Vec<LoadedWorkflow>> {
    if paths.is_empty() {
        // A repository may have a service file and no workflows (deployments requested by hand),
        // or workflows and no service file; with neither there is nothing to check.
        let service = workflows::service_file(root);
        let mut loaded = match (workflows::workflow_dir(root), &service) {
            (None, Some(_)) => Vec::new(),
            _ => workflows::load_all(root)?,
        };
        if let Some(service) = service {
            let display = service.strip_prefix(root).unwrap_or(&service).display().to_string();
            loaded.push(workflows::load_file(&service, display)?);
        }
        return Ok(loaded);
    }
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            for file in workflows::list_files(path)? {
                out.push(workflows::load_file(&file, file.display().to_string())?);
            }
        } else if path.exists() {
            out.push(workflows::load_file(path, path.display().to_string())?);
        } else {
            anyhow::bail!("{} does not exist\n  hint: give a workflow file or a directory of them", path.display());
        }
    }
    Ok(out)
}
