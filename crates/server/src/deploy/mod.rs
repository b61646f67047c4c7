//! The rollout controller: takes requested deployments from the store, holds them at their gates,
//! starts the new release beside the stable one, moves traffic through each environment's proxy
//! by the strategy, judges it, and promotes or rolls back — recording every move as an event.
//!
//! Crash safety: the store is the only truth. On start the controller ends whatever instances a
//! previous process left, starts each environment's stable release again, and resumes every
//! unfinished deployment from the step it had reached. Routing only ever names instances this
//! process started and saw ready.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rollout::analysis::Config;
use rollout::reconcile::{self, Action, Gate, Judgement, Kind, Observed};
use spec::service::{self, Strategy, Target};
use store::{Deployment, DeploymentFilter, DeploymentKind, DeploymentStatus, NewDeployment, Transition};
use targets::canary::{StepEnd, judge_step};
use targets::instance::{self, DEPLOY_LABEL, Health, Instance, Launch, Owner};
use targets::proxy::{self, Outcome, Proxy, Routing};
use tokio::sync::mpsc;

use crate::{App, repos};

mod driver;
pub(crate) mod gates;
mod instances;
pub mod job_gate;
mod traffic;
#[allow(unused_imports)]
use driver::*;
#[allow(unused_imports)]
use gates::*;
#[allow(unused_imports)]
use instances::*;
#[allow(unused_imports)]
use traffic::*;

/// How long the error-budget gate looks back over the proxy's traffic.
const BUDGET_WINDOW: Duration = Duration::from_secs(600);

/// The controller's in-memory side: environments' proxies and instances, and what it drives.
#[derive(Default)]
pub struct Deployer {
    envs: tokio::sync::Mutex<HashMap<(String, String), Arc<Env>>>,
    /// Deployments being driven, with their (service, environment): never two of one environment.
    driving: Mutex<HashMap<i64, (String, String)>>,
    /// Deployments asked to roll back now (also kept in the store for after a crash).
    aborts: Mutex<HashSet<i64>>,
    /// Deployments asked to skip their remaining steps (an event records it for after a crash).
    promotions: Mutex<HashSet<i64>>,
    /// Deployments not started yet that a newer one of their environment replaces: id → newer id.
    superseded: Mutex<HashMap<i64, i64>>,
    pub wake: tokio::sync::Notify,
    docker: tokio::sync::OnceCell<Result<bollard::Docker, String>>,
}

impl std::fmt::Debug for Deployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployer").finish_non_exhaustive()
    }
}

impl Deployer {
    /// Marks a deployment to be rolled back at once by whoever drives it.
    pub fn abort(&self, id: i64) {
        if let Ok(mut aborts) = self.aborts.lock() {
            aborts.insert(id);
        }
        self.wake.notify_waiters();
    }

    /// Marks a deployment to skip its remaining steps and be promoted.
    pub fn promote(&self, id: i64) {
        if let Ok(mut promotions) = self.promotions.lock() {
            promotions.insert(id);
        }
        self.wake.notify_waiters();
    }

    fn promoting(&self, id: i64) -> bool {
        self.promotions.lock().map(|p| p.contains(&id)).unwrap_or(false)
    }

    fn superseded_by(&self, id: i64) -> Option<i64> {
        self.superseded.lock().ok().and_then(|s| s.get(&id).copied())
    }

    fn aborted(&self, id: i64) -> bool {
        self.aborts.lock().map(|a| a.contains(&id)).unwrap_or(false)
    }

    async fn docker(&self) -> Result<bollard::Docker, String> {
        self.docker
            .get_or_init(|| async {
                exec::docker::DockerEngine::connect().await.map(|e| e.client().clone()).map_err(String::from)
            })
            .await
            .clone()
    }

    /// Every instance the proxies route to: (service, environment, `stable` or `canary`, address).
    pub async fn instances(&self) -> Vec<(String, String, &'static str, std::net::SocketAddr)> {
        let envs = self.envs.lock().await;
        let mut out = Vec::new();
        for ((service, environment), env) in envs.iter() {
            let routing = env.proxy.routing();
            for (version, addrs) in [("stable", &routing.stable), ("canary", &routing.canary)] {
                out.extend(addrs.iter().map(|a| (service.clone(), environment.clone(), version, *a)));
            }
        }
        out.sort();
        out
    }

    /// The environments' proxy figures in Prometheus text format.
    pub async fn metrics(&self) -> String {
        use std::fmt::Write;
        let envs = self.envs.lock().await;
        let mut keys: Vec<_> = envs.keys().cloned().collect();
        keys.sort();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP tandem_proxy_requests_total Requests through an environment's proxy, by version and status class.\n# TYPE tandem_proxy_requests_total counter"
        );
        let mut histograms = String::new();
        let _ = writeln!(
            histograms,
            "# HELP tandem_proxy_request_duration_seconds Upstream answer time through an environment's proxy.\n# TYPE tandem_proxy_request_duration_seconds histogram"
        );
        for key in keys {
            let Some(stats) = envs
                .get(&key)
                .and_then(|env| env.stats.lock().ok().map(|s| (s.classes, s.buckets, s.count, s.sum_seconds)))
            else {
                continue;
            };
            let (classes, buckets, count, sum) = stats;
            for (arm, version) in ["stable", "canary"].iter().enumerate() {
                let labels = format!("service=\"{}\",environment=\"{}\",version=\"{version}\"", key.0, key.1);
                for (class, name) in CLASSES.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "tandem_proxy_requests_total{{{labels},class=\"{name}\"}} {}",
                        classes[arm][class]
                    );
                }
                for (bucket, bound) in LATENCY_BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        histograms,
                        "tandem_proxy_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                        buckets[arm][bucket]
                    );
                }
                let _ = writeln!(
                    histograms,
                    "tandem_proxy_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    count[arm]
                );
                let _ = writeln!(histograms, "tandem_proxy_request_duration_seconds_sum{{{labels}}} {}", sum[arm]);
                let _ = writeln!(histograms, "tandem_proxy_request_duration_seconds_count{{{labels}}} {}", count[arm]);
            }
        }
        out + &histograms
    }

    /// Stops every deployed instance this server runs (the server is stopping): process groups
    /// from their journal, containers and services by owner. The store keeps what was stable, so
    /// the next start brings it back.
    pub async fn shutdown(&self, data_dir: &std::path::Path) {
        targets::process::shutting_down();
        exec::process::ProcessGroups::kill_journaled(&data_dir.join("instances"));
        if let Some(Ok(docker)) = self.docker.get() {
            instance::reap_containers(docker, Owner::This).await;
            instance::reap_services(docker, Owner::This).await;
        }
    }

    /// Where each environment's proxy listens now: (service, environment, address).
    pub async fn proxies(&self) -> Vec<(String, String, SocketAddr)> {
        let envs = self.envs.lock().await;
        let mut list: Vec<_> = envs.iter().map(|((s, e), env)| (s.clone(), e.clone(), env.listen)).collect();
        list.sort();
        list
    }

    /// An environment's proxied traffic per second, for the seconds after `after` that have
    /// ended: (Unix second, requests, errors). Seconds without requests are left out.
    pub async fn seconds_after(&self, service: &str, environment: &str, after: u64) -> Vec<(u64, u64, u64)> {
        let env = self.envs.lock().await.get(&(service.to_string(), environment.to_string())).cloned();
        let Some(env) = env else { return Vec::new() };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        env.window
            .lock()
            .map(|w| w.iter().copied().filter(|(second, ..)| *second > after && *second < now).collect())
            .unwrap_or_default()
    }
}

/// Parses a service file and fails with every error diagnostic, rendered, when it has any.
pub(crate) fn checked_service(text: &str, sha: &str) -> Result<service::Service, String> {
    let (parsed, diagnostics) = service::parse(text);
    let errors: Vec<String> =
        diagnostics.iter().filter(|d| d.is_error()).map(|d| d.render(".tandem/service.yml", text)).collect();
    parsed
        .filter(|_| errors.is_empty())
        .ok_or_else(|| format!("the service file at {} has errors:\n{}", short(sha), errors.join("\n")))
}

/// Reads the environment's settings from the service file kept with the deployment.
pub fn environment_spec(deployment: &Deployment) -> Result<service::Environment, String> {
    let service = checked_service(&deployment.spec, &deployment.sha)?;
    service.environments.into_iter().find(|e| e.name == deployment.environment).ok_or_else(|| {
        format!("the service file at {} has no environment `{}`", short(&deployment.sha), deployment.environment)
    })
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// Reads and checks `.tandem/service.yml` at a commit and builds the deployment request.
pub async fn plan(
    app: &App,
    repo: &store::Repo,
    git_ref: &str,
    environment: &str,
    kind: DeploymentKind,
    run_id: Option<i64>,
) -> Result<NewDeployment, String> {
    let mirror = repos::sync(app, repo, None).await?;
    let sha = repos::git(&mirror, &["rev-parse", "--verify", &format!("{git_ref}^{{commit}}")])
        .await
        .map_err(|_| format!("`{git_ref}` is not a commit of {}", repo.name))?
        .trim()
        .to_string();
    let spec = repos::git(&mirror, &["show", &format!("{sha}:.tandem/service.yml")])
        .await
        .map_err(|_| format!("{} has no .tandem/service.yml at {}", repo.name, short(&sha)))?;
    let service = checked_service(&spec, &sha)?;
    if !service.environments.iter().any(|e| e.name == environment) {
        let names: Vec<&str> = service.environments.iter().map(|e| e.name.as_str()).collect();
        return Err(format!("{} has no environment `{environment}`; it has: {}", service.name, names.join(", ")));
    }
    Ok(NewDeployment {
        repo_id: repo.id,
        service: service.name,
        environment: environment.to_string(),
        release: short(&sha).to_string(),
        sha,
        run_id,
        kind,
        spec,
    })
}

/// The repository a deployment request names: the service (as its `.tandem/service.yml` names
/// it), or the repository itself. A service is found among the environments deployed before, else
/// in the service file at the head of each repository.
pub async fn repository_for(app: &App, name: &str) -> Result<store::Repo, String> {
    if let Ok(repo) = app.store.repo(name).await {
        return Ok(repo);
    }
    let environments = app.store.environments().await.map_err(|e| e.to_string())?;
    if let Some(known) = environments.iter().find(|e| e.service == name) {
        return app.store.repo_by_id(known.repo_id).await.map_err(|e| e.to_string());
    }
    for repo in app.store.repos().await.map_err(|e| e.to_string())? {
        let Ok(mirror) = repos::sync(app, &repo, None).await else { continue };
        let Ok(text) = repos::git(&mirror, &["show", "HEAD:.tandem/service.yml"]).await else { continue };
        if service::parse(&text).0.is_some_and(|s| s.name == name) {
            return Ok(repo);
        }
    }
    Err(format!("no service or repository is named `{name}`; `tandem repo list` shows the repositories"))
}

/// Ends what a crashed server left, brings every environment's stable release back, then drives
/// deployments as they come.
pub async fn run_forever(app: Arc<App>) {
    let journal_dir = app.config.data_dir.join("instances");
    let n = exec::process::ProcessGroups::kill_journaled(&journal_dir);
    if n > 0 {
        tracing::info!("ended {n} instance(s) left by a previous server");
    }
    if let Ok(docker) = app.deployer.docker().await {
        let n =
            instance::reap_containers(&docker, Owner::Dead).await + instance::reap_services(&docker, Owner::Dead).await;
        if n > 0 {
            tracing::info!("removed {n} deployed container(s) left by a previous server");
        }
    }
    if let Ok(environments) = app.store.environments().await {
        for state in environments {
            let Some(stable) = state.stable else { continue };
            match app.store.deployment(stable).await {
                Ok(deployment) => {
                    if let Err(error) = restore_stable(&app, &deployment).await {
                        tracing::error!(
                            "{}/{}: cannot start the stable release again: {error}",
                            state.service,
                            state.environment
                        );
                    }
                }
                Err(error) => tracing::warn!("{}/{}: {error}", state.service, state.environment),
            }
        }
    }
    loop {
        // Registered before the deployments are read, so that a request arriving while this
        // pass runs wakes the next one at once; the timer only catches what nobody announced.
        let wake = app.deployer.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let filter = DeploymentFilter { active_only: true, limit: 1000, ..Default::default() };
        match app.store.deployments(filter).await {
            Ok(mut active) => {
                // Oldest first; one deployment at a time per environment.
                active.reverse();
                supersede(&app, &active).await;
                let mut seen = HashSet::new();
                for deployment in active {
                    let key = (deployment.service.clone(), deployment.environment.clone());
                    if app.deployer.superseded_by(deployment.id).is_some() || !seen.insert(key.clone()) {
                        continue;
                    }
                    // One driver per environment: a superseded one still ending keeps its place.
                    let claimed = app
                        .deployer
                        .driving
                        .lock()
                        .map(|mut driving| {
                            let free = !driving.values().any(|k| *k == key);
                            if free {
                                driving.insert(deployment.id, key);
                            }
                            free
                        })
                        .unwrap_or(false);
                    if claimed {
                        let app = app.clone();
                        // Supervised: a panic while driving fails the deployment with the
                        // reason instead of leaving it running and its environment blocked.
                        tokio::spawn(async move {
                            let id = deployment.id;
                            let task = tokio::spawn({
                                let app = app.clone();
                                async move { drive(&app, deployment).await }
                            });
                            let failure = match task.await {
                                Ok(Ok(())) => None,
                                Ok(Err(error)) => Some(error),
                                Err(panic) => Some(format!("internal error while driving the deployment: {panic}")),
                            };
                            if let Some(error) = failure {
                                tracing::warn!("deployment {id}: {error}");
                                let failed = Transition {
                                    event: "failed".into(),
                                    status: DeploymentStatus::Failed,
                                    step: 0,
                                    weight: 0.0,
                                    reason: Some(error),
                                    detail: serde_json::json!({}),
                                };
                                if let Err(store_error) = app.store.transition_deployment(id, failed, "tandem").await {
                                    tracing::error!("deployment {id}: cannot record its failure: {store_error}");
                                }
                            }
                            app.deployer.driving.lock().map(|mut d| d.remove(&id)).ok();
                            app.deployer.wake.notify_waiters();
                        });
                    }
                }
            }
            Err(error) => tracing::error!("cannot read deployments: {error}"),
        }
        tokio::select! {
            () = wake => {}
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Deployments that have not started are replaced by the newest one of their environment, as
/// a team shipping often wants: the ones in between would only be rolled over. A deployment
/// being driven (held at a gate) learns it from the deployer; the others end here.
async fn supersede(app: &App, active: &[Deployment]) {
    let mut newest: HashMap<(&str, &str), &Deployment> = HashMap::new();
    for deployment in active.iter().filter(|d| d.kind == DeploymentKind::Deploy) {
        newest.insert((&deployment.service, &deployment.environment), deployment);
    }
    for deployment in active {
        let Some(newer) = newest.get(&(deployment.service.as_str(), deployment.environment.as_str())) else { continue };
        let waiting = matches!(
            deployment.status,
            DeploymentStatus::Pending | DeploymentStatus::Gated | DeploymentStatus::AwaitingApproval
        );
        if newer.id <= deployment.id || !waiting || deployment.kind != DeploymentKind::Deploy {
            continue;
        }
        let first_time =
            app.deployer.superseded.lock().map(|mut s| s.insert(deployment.id, newer.id).is_none()).unwrap_or(false);
        let driven = app.deployer.driving.lock().map(|d| d.contains_key(&deployment.id)).unwrap_or(false);
        if first_time
            && !driven
            && let Err(error) = skip(app, deployment, newer.id).await
        {
            tracing::error!("deployment {}: cannot record that {} supersedes it: {error}", deployment.id, newer.id);
        }
    }
}

async fn skip(app: &App, deployment: &Deployment, newer: i64) -> Result<Deployment, String> {
    let reason = Some(format!("superseded by deployment {newer}"));
    let detail = serde_json::json!({"superseded_by": newer});
    transition(app, deployment, "skipped", DeploymentStatus::Skipped, 0, 0.0, reason, detail).await
}

/// The environment's proxy, started on first use on its fixed address.
async fn environment(app: &Arc<App>, deployment: &Deployment, spec: &service::Environment) -> Result<Arc<Env>, String> {
    let key = (deployment.service.clone(), deployment.environment.clone());
    let mut envs = app.deployer.envs.lock().await;
    if let Some(env) = envs.get(&key) {
        return Ok(env.clone());
    }
    let known = app.store.environment(&key.0, &key.1).await.map_err(|e| e.to_string())?;
    let listen = spec
        .listen
        .clone()
        .or_else(|| known.and_then(|k| k.listen))
        // A port the system picks; the address actually bound is what the store keeps.
        .unwrap_or_else(|| "127.0.0.1:0".to_string());
    let addr: SocketAddr = listen.parse().map_err(|_| format!("`{listen}` is not an address"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("the proxy of {}/{} cannot listen on {addr}: {e}", key.0, key.1))?;
    let listen = listener.local_addr().map_err(|e| e.to_string())?;
    app.store
        .ensure_environment(&key.0, &key.1, deployment.repo_id, &listen.to_string())
        .await
        .map_err(|e| e.to_string())?;
    let routing = Routing {
        stable: Vec::new(),
        canary: Vec::new(),
        canary_weight: 0.0,
        sticky_header: spec.sticky.as_ref().and_then(|s| s.header.clone()),
        sticky_cookie: spec.sticky.as_ref().and_then(|s| s.cookie.clone()),
    };
    let (proxy, mut outcomes) = Proxy::new(routing);
    let env = Arc::new(Env {
        proxy: proxy.clone(),
        listen,
        tap: Mutex::new(None),
        window: Mutex::default(),
        stats: Mutex::default(),
        state: tokio::sync::Mutex::default(),
    });
    tokio::spawn(proxy::serve(listener, proxy));
    let pump = Arc::downgrade(&env);
    // Drained on a tick, not awaited per outcome (see `targets::proxy::Proxy`).
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            let Some(env) = pump.upgrade() else { return };
            loop {
                let outcome = match outcomes.try_recv() {
                    Ok(outcome) => outcome,
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                };
                env.record(&outcome);
                if let Ok(tap) = env.tap.lock()
                    && let Some(tx) = tap.as_ref()
                {
                    let _ = tx.send(outcome);
                }
            }
        }
    });
    envs.insert(key, env.clone());
    Ok(env)
}
