//! Expression contexts of a job: `github`, `env`, `matrix`, `steps` and the rest, as the `Host` of `spec::expr`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use spec::expr::{self, Host, Value};
use spec::workflow::{Condition, Text};

use super::*;

pub(super) fn github_context(request: &RunRequest) -> Value {
    let repo = &request.repo;
    let (ref_name, ref_type) = match repo.git_ref.strip_prefix("refs/tags/") {
        Some(tag) => (tag.to_string(), "tag"),
        None => (repo.git_ref.strip_prefix("refs/heads/").unwrap_or(&repo.git_ref).to_string(), "branch"),
    };
    let owner = repo.repository.split('/').next().unwrap_or_default().to_string();
    let event = &request.event;
    let pr = event.get("pull_request");
    let head_ref = pr.and_then(|p| p.get("head")).and_then(|h| h.get("ref")).map(Value::to_text).unwrap_or_default();
    let base_ref = pr.and_then(|p| p.get("base")).and_then(|h| h.get("ref")).map(Value::to_text).unwrap_or_default();
    let map = [
        ("action", Value::str("__run")),
        ("actor", Value::str(&repo.actor)),
        ("triggering_actor", Value::str(&repo.actor)),
        ("api_url", Value::str("")),
        ("server_url", Value::str("")),
        ("base_ref", Value::str(base_ref)),
        ("head_ref", Value::str(head_ref)),
        ("event", event.clone()),
        ("event_name", Value::str(&request.event_name)),
        ("event_path", Value::str(request.run_dir.join("event.json").to_string_lossy())),
        ("ref", Value::str(&repo.git_ref)),
        ("ref_name", Value::str(ref_name)),
        ("ref_type", Value::str(ref_type)),
        ("ref_protected", Value::Bool(false)),
        ("repository", Value::str(&repo.repository)),
        ("repository_owner", Value::str(owner)),
        ("retention_days", Value::str("90")),
        ("run_attempt", Value::str(request.run_attempt.max(1).to_string())),
        ("run_id", Value::str(request.run_id.to_string())),
        ("run_number", Value::str(request.run_number.to_string())),
        ("sha", Value::str(&repo.sha)),
        ("token", Value::str(&request.token)),
        ("workflow", Value::str(request.workflow.name.clone().unwrap_or_else(|| request.workflow_path.clone()))),
        ("workflow_ref", Value::str(format!("{}/{}@{}", repo.repository, request.workflow_path, repo.git_ref))),
        ("workflow_sha", Value::str(&repo.sha)),
    ];
    Value::Object(map.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// Contexts for expression evaluation inside a job. Each context is shared until changed: a job
/// and each of its legs start from a copy, and copying `github` (which holds the event) for every
/// job was the largest cost of starting a short one.
#[derive(Debug, Clone, Default)]
pub(super) struct Contexts {
    values: BTreeMap<String, Arc<Value>>,
    /// What this job adds to the shared `github` context (`job`, `workspace`, `action_path`…),
    /// merged into a copy only when an expression reads `github`.
    github_extra: BTreeMap<String, Value>,
    github_merged: std::sync::OnceLock<Value>,
    pub(super) status: expr::Status,
    pub(super) workspace: PathBuf,
}

impl Host for Contexts {
    fn context(&self, name: &str) -> Option<&Value> {
        if name == "github" && !self.github_extra.is_empty() {
            let base = self.values.get(name)?;
            return Some(self.github_merged.get_or_init(|| {
                let mut merged = (**base).clone();
                if let Value::Object(map) = &mut merged {
                    map.extend(self.github_extra.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                merged
            }));
        }
        self.values.get(name).map(|value| &**value)
    }

    fn status(&self) -> expr::Status {
        self.status
    }

    fn hash_files(&self, patterns: &[String]) -> Result<String, String> {
        crate::paths::hash_files(&self.workspace, patterns)
    }
}

impl Contexts {
    pub(super) fn set(&mut self, name: &str, value: Value) {
        self.set_shared(name, Arc::new(value));
    }

    /// Sets a context shared with other jobs (copied only if one of them changes it).
    pub(super) fn set_shared(&mut self, name: &str, value: Arc<Value>) {
        if name == "github" {
            self.github_merged.take();
        }
        self.values.insert(name.to_string(), value);
    }

    /// Sets `github.KEY` for this job only.
    pub(super) fn set_github(&mut self, key: &str, value: Value) {
        self.github_extra.insert(key.to_string(), value);
        self.github_merged.take();
    }

    /// The context `name`, to change in this job only.
    pub(super) fn get_mut(&mut self, name: &str) -> Option<&mut Value> {
        self.values.get_mut(name).map(Arc::make_mut)
    }

    pub(super) fn insert_step(&mut self, id: &str, value: Value) {
        match self.get_mut("steps") {
            Some(Value::Object(steps)) => {
                steps.insert(id.to_string(), value);
            }
            _ => self.set("steps", Value::Object([(id.to_string(), value)].into_iter().collect())),
        }
    }

    pub(super) fn render(&self, text: &Text) -> Result<String, String> {
        text.render(self).map_err(|e| format!("expression in `{}`: {e}", text.raw.trim()))
    }

    pub(super) fn evaluate(&self, text: &Text) -> Result<Value, String> {
        text.evaluate(self).map_err(|e| format!("expression in `{}`: {e}", text.raw.trim()))
    }

    pub(super) fn condition(&self, condition: Option<&Condition>) -> Result<bool, String> {
        match condition {
            Some(c) => {
                expr::evaluate(&c.expr, self).map(|v| v.is_truthy()).map_err(|e| format!("condition `{}`: {e}", c.raw))
            }
            None => Ok(!self.status.failed && !self.status.cancelled && !self.status.blocked),
        }
    }
}

pub(super) fn string_map(map: &BTreeMap<String, String>) -> Value {
    Value::Object(map.iter().map(|(k, v)| (k.clone(), Value::str(v))).collect())
}
