//! The gates a workflow job naming an environment waits at before it starts — and so before it
//! gets that environment's secrets: the environment's freeze windows, its hold on security
//! findings and its approval, as for a deployment there. The first hold is an event
//! (`job.waiting`); approvals are events too (`job.approved`, `tandem runs approve`), and the
//! deployment the job then requests is approved by the same person.

use std::sync::Arc;

use spec::service;

use crate::App;

/// The gate of one run's jobs (given to the engine as its [`exec::engine::Gate`]).
pub struct JobGate {
    app: Arc<App>,
    run: store::Run,
    /// The service file at the run's commit, read once: `None` when it has none.
    service: tokio::sync::OnceCell<Result<Option<service::Service>, String>>,
    /// Jobs whose hold is recorded already.
    recorded: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl JobGate {
    pub fn new(app: Arc<App>, run: store::Run) -> JobGate {
        JobGate { app, run, service: Default::default(), recorded: Default::default() }
    }

    /// The environment `name` of the service file at the run's commit, with the service's name.
    async fn environment(&self, name: &str) -> Result<Option<(String, service::Environment)>, String> {
        let service = self
            .service
            .get_or_init(|| async {
                let repo = self.app.store.repo_by_id(self.run.repo_id).await.map_err(|e| e.to_string())?;
                let mirror = crate::repos::mirror_path(&self.app, &repo);
                let path = format!("{}:.tandem/service.yml", self.run.sha);
                match crate::repos::git(&mirror, &["show", "--end-of-options", &path]).await {
                    Ok(text) => super::checked_service(&text, &self.run.sha).map(Some),
                    Err(_) => Ok(None),
                }
            })
            .await
            .clone()?;
        Ok(service.and_then(|s| {
            let service = s.name.clone();
            s.environments.into_iter().find(|e| e.name == name).map(|e| (service, e))
        }))
    }

    /// What holds `job` now, and the service whose environment it is.
    async fn hold(&self, job: &str, environment: &str) -> Result<Option<(String, String)>, String> {
        let Some((service, spec)) = self.environment(environment).await? else { return Ok(None) };
        Ok(self.reason(job, environment, &spec).await?.map(|reason| (service, reason)))
    }

    async fn reason(
        &self,
        job: &str,
        environment: &str,
        spec: &service::Environment,
    ) -> Result<Option<String>, String> {
        if let Some(reason) = super::gates::frozen(spec) {
            return Ok(Some(reason));
        }
        let subject = format!("run/{}", self.run.id);
        let events = self.app.store.events_about(&subject).await.map_err(|e| e.to_string())?;
        let approvals: Vec<&store::Event> = events
            .iter()
            .filter(|e| e.kind == "job.approved" && e.payload["job"] == job && e.payload["environment"] == environment)
            .collect();
        let (id, short) = (self.run.id, &self.run.sha[..self.run.sha.len().min(12)]);
        if spec.gates.block_on_findings {
            let found = super::gates::findings(&self.app, self.run.repo_id, &self.run.sha).await?;
            if !found.is_empty() && !approvals.iter().any(|e| e.payload["reason"].is_string()) {
                return Ok(Some(format!(
                    "security findings on {short}: {}; a maintainer may let it go with a reason: `tandem runs approve {id} {job} --reason TEXT`",
                    found.join(", ")
                )));
            }
        }
        if spec.gates.approval && approvals.is_empty() {
            return Ok(Some(format!("the approval of a maintainer: `tandem runs approve {id} {job}`")));
        }
        Ok(None)
    }
}

impl exec::engine::Gate for JobGate {
    fn holds<'a>(
        &'a self,
        job: &'a str,
        environment: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<String>, String>> + Send + 'a>> {
        Box::pin(async move {
            let hold = self.hold(job, environment).await?;
            let first =
                hold.is_some() && self.recorded.lock().unwrap_or_else(|e| e.into_inner()).insert(job.to_string());
            if let (true, Some((service, reason))) = (first, &hold) {
                let payload =
                    serde_json::json!({"job": job, "service": service, "environment": environment, "reason": reason});
                let subject = format!("run/{}", self.run.id);
                self.app
                    .store
                    .record_event("job.waiting", &subject, "tandem", payload)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(hold.map(|(_, reason)| reason))
        })
    }
}

/// Who let `job` of run `run_id` use `environment`, and why (a reason overrides findings).
pub async fn approval(app: &App, run_id: i64, job: &str, environment: &str) -> Option<(String, Option<String>)> {
    let events = app.store.events_about(&format!("run/{run_id}")).await.ok()?;
    events
        .iter()
        .rev()
        .find(|e| e.kind == "job.approved" && e.payload["job"] == job && e.payload["environment"] == environment)
        .map(|e| (e.actor.clone(), e.payload["reason"].as_str().map(str::to_string)))
}
