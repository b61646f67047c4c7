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
use spec::service::{self, Strategy, Target};
use store::{Deployment, DeploymentFilter, DeploymentStatus, NewDeployment, Store, Transition};
use targets::canary::{StepEnd, judge_step};
use targets::instance::{self, DEPLOY_LABEL, Health, Instance, Launch, Owner};
use targets::proxy::{self, Outcome, Proxy, Routing};
use tokio::sync::mpsc;

use crate::{App, repos};

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
            .get_or_init(|| async { exec::docker::DockerEngine::connect().await.map(|e| e.client().clone()) })
            .await
            .clone()
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
}

/// One environment: its proxy, its stable instances, and its recent traffic.
struct Env {
    proxy: Arc<Proxy>,
    listen: SocketAddr,
    /// Where proxied outcomes go besides the window: the analysis of the step in progress.
    tap: Mutex<Option<mpsc::UnboundedSender<Outcome>>>,
    /// Requests and errors per second, for the error-budget gate.
    window: Mutex<std::collections::VecDeque<(u64, u64, u64)>>,
    /// Per version: answers by status class and latency histogram, for `/metrics`.
    stats: Mutex<Stats>,
    state: tokio::sync::Mutex<Serving>,
}

/// Upper bounds (seconds) of the proxy latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// One environment's proxied requests, per version (0 stable, 1 canary).
#[derive(Default)]
struct Stats {
    classes: [[u64; 6]; 2],
    buckets: [[u64; 10]; 2],
    count: [u64; 2],
    sum_seconds: [f64; 2],
}

#[derive(Default)]
struct Serving {
    stable: Vec<Instance>,
    stable_deployment: Option<i64>,
    /// Blue-green: the previous release (its deployment) kept warm after a switch.
    warm: Option<(i64, Vec<Instance>)>,
}

impl Env {
    fn routing(&self, stable: &[Instance], canary: &[Instance], weight: f64) {
        let current = self.proxy.routing();
        self.proxy.set_routing(Routing {
            stable: stable.iter().map(|i| i.addr).collect(),
            canary: canary.iter().map(|i| i.addr).collect(),
            canary_weight: weight,
            ..current
        });
    }

    fn record(&self, outcome: &Outcome) {
        if let Ok(mut stats) = self.stats.lock() {
            let arm = usize::from(outcome.arm == rollout::analysis::Arm::Canary);
            let class = usize::from(outcome.status / 100).min(5);
            stats.classes[arm][class] += 1;
            let seconds = outcome.latency_ms / 1000.0;
            for (bucket, bound) in LATENCY_BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    stats.buckets[arm][bucket] += 1;
                }
            }
            stats.count[arm] += 1;
            stats.sum_seconds[arm] += seconds;
        }
        let second = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if let Ok(mut window) = self.window.lock() {
            match window.back_mut() {
                Some((s, n, e)) if *s == second => {
                    *n += 1;
                    *e += u64::from(outcome.error);
                }
                _ => window.push_back((second, 1, u64::from(outcome.error))),
            }
            while window.front().is_some_and(|(s, ..)| *s + BUDGET_WINDOW.as_secs() < second) {
                window.pop_front();
            }
        }
    }

    /// Requests and errors over the budget window.
    fn traffic(&self) -> (u64, u64) {
        self.window.lock().map(|w| w.iter().fold((0, 0), |(n, e), (_, dn, de)| (n + dn, e + de))).unwrap_or((0, 0))
    }

    fn listen_to_step(&self) -> mpsc::UnboundedReceiver<Outcome> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut tap) = self.tap.lock() {
            *tap = Some(tx);
        }
        rx
    }

    fn stop_listening(&self) {
        if let Ok(mut tap) = self.tap.lock() {
            *tap = None;
        }
    }
}

/// Parses a service file and fails with every error diagnostic, rendered, when it has any.
fn checked_service(text: &str, sha: &str) -> Result<service::Service, String> {
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
    kind: &str,
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
        kind: kind.to_string(),
        spec,
    })
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
                        tokio::spawn(async move {
                            let id = deployment.id;
                            if let Err(error) = drive(&app, deployment).await {
                                tracing::warn!("deployment {id}: {error}");
                                let failed = Transition {
                                    event: "failed".into(),
                                    status: DeploymentStatus::Failed,
                                    step: 0,
                                    weight: 0.0,
                                    reason: Some(error),
                                    detail: serde_json::json!({}),
                                };
                                let _ = app.store.transition_deployment(id, failed, "tandem").await;
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
            () = app.deployer.wake.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Deployments that have not started are replaced by the newest one of their environment, as
/// a team shipping often wants: the ones in between would only be rolled over. A deployment
/// being driven (held at a gate) learns it from the deployer; the others end here.
async fn supersede(app: &App, active: &[Deployment]) {
    let mut newest: HashMap<(&str, &str), &Deployment> = HashMap::new();
    for deployment in active.iter().filter(|d| d.kind == "deploy") {
        newest.insert((&deployment.service, &deployment.environment), deployment);
    }
    for deployment in active {
        let Some(newer) = newest.get(&(deployment.service.as_str(), deployment.environment.as_str())) else { continue };
        let waiting = matches!(
            deployment.status,
            DeploymentStatus::Pending | DeploymentStatus::Gated | DeploymentStatus::AwaitingApproval
        );
        if newer.id <= deployment.id || !waiting || deployment.kind != "deploy" {
            continue;
        }
        let first_time =
            app.deployer.superseded.lock().map(|mut s| s.insert(deployment.id, newer.id).is_none()).unwrap_or(false);
        let driven = app.deployer.driving.lock().map(|d| d.contains_key(&deployment.id)).unwrap_or(false);
        if first_time && !driven {
            let _ = skip(app, deployment, newer.id).await;
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
    let router = proxy::router(proxy);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let pump = Arc::downgrade(&env);
    tokio::spawn(async move {
        while let Some(outcome) = outcomes.recv().await {
            let Some(env) = pump.upgrade() else { return };
            env.record(&outcome);
            if let Ok(tap) = env.tap.lock()
                && let Some(tx) = tap.as_ref()
            {
                let _ = tx.send(outcome);
            }
        }
    });
    envs.insert(key, env.clone());
    Ok(env)
}

/// The directory a process release runs in: the commit's files, extracted once.
async fn release_dir(app: &App, deployment: &Deployment) -> Result<PathBuf, String> {
    let dir = app.config.data_dir.join("releases").join(&deployment.service).join(&deployment.sha);
    if dir.exists() {
        return Ok(dir);
    }
    let repo = app.store.repo_by_id(deployment.repo_id).await.map_err(|e| e.to_string())?;
    let mirror = repos::sync(app, &repo, Some(&deployment.sha)).await?;
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|e| e.to_string())?;
    let output = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("git -C \"$1\" archive --format=tar \"$2\" | tar -x -C \"$3\"")
        .args(["sh", &mirror.display().to_string(), &deployment.sha, &partial.display().to_string()])
        .output()
        .await
        .map_err(|e| format!("cannot extract the release: {e}"))?;
    if !output.status.success() {
        return Err(format!("cannot extract the release: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    std::fs::rename(&partial, &dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

fn substitute(text: &str, deployment: &Deployment) -> String {
    text.replace("${{ sha }}", &deployment.sha)
        .replace("${{ release }}", &deployment.release)
        .replace("${{ environment }}", &deployment.environment)
}

/// How to start instances of a deployment's release.
async fn launch(app: &Arc<App>, deployment: &Deployment, spec: &service::Environment) -> Result<Launch, String> {
    let env = vec![
        ("TANDEM_SERVICE".to_string(), deployment.service.clone()),
        ("TANDEM_ENVIRONMENT".to_string(), deployment.environment.clone()),
        ("TANDEM_RELEASE".to_string(), deployment.release.clone()),
        ("TANDEM_SHA".to_string(), deployment.sha.clone()),
    ];
    match &spec.target {
        Target::Process { command } => Ok(Launch::Process {
            command: substitute(command, deployment),
            dir: release_dir(app, deployment).await?,
            env,
            journal: Some(app.config.data_dir.join("instances").join(format!("{}.pgids", deployment.id))),
        }),
        Target::Docker { image } => {
            let labels = HashMap::from([
                (DEPLOY_LABEL.to_string(), format!("{}/{}", deployment.service, deployment.environment)),
                ("dev.tandem.deployment".to_string(), deployment.id.to_string()),
            ]);
            Ok(Launch::Docker {
                docker: app.deployer.docker().await?,
                image: substitute(image, deployment),
                port: spec.port,
                env,
                labels,
            })
        }
        Target::Swarm { image } => {
            let labels = HashMap::from([
                (DEPLOY_LABEL.to_string(), format!("{}/{}", deployment.service, deployment.environment)),
                ("dev.tandem.deployment".to_string(), deployment.id.to_string()),
            ]);
            Ok(Launch::Swarm {
                docker: app.deployer.docker().await?,
                name: format!("tandem-{}-{}-{}", deployment.service, deployment.environment, deployment.id),
                image: substitute(image, deployment),
                port: spec.port,
                env,
                labels,
            })
        }
    }
}

/// Readiness and liveness settings of an environment.
#[derive(Debug, Clone)]
struct Checks {
    ready: Health,
    live: Health,
}

impl Checks {
    fn from_spec(health: &service::Health) -> Checks {
        Checks { ready: Health::from_spec(health), live: Health::liveness_from_spec(health) }
    }
}

/// Starts `n` instances and waits until all are ready, watching their liveness from then on.
/// On failure nothing is left running.
async fn start_instances(launch: &Launch, n: usize, checks: &Checks) -> Result<Vec<Instance>, String> {
    let mut started = Vec::new();
    for _ in 0..n {
        match Instance::start(launch).await {
            Ok(instance) => started.push(instance),
            Err(error) => {
                stop_all(started).await;
                return Err(error);
            }
        }
    }
    let ready = futures_util::future::join_all(started.iter().map(|i| i.wait_ready(&checks.ready))).await;
    if let Some(error) = ready.into_iter().find_map(Result::err) {
        stop_all(started).await;
        return Err(error);
    }
    for instance in &mut started {
        instance.watch(checks.live.clone());
    }
    Ok(started)
}

/// How long instances taken out of traffic keep running, so that requests in flight finish.
const DRAIN: Duration = Duration::from_secs(1);

/// Stops instances that no longer get traffic once the requests they still serve are done;
/// returns at once.
fn retire(instances: Vec<Instance>) {
    if instances.is_empty() {
        return;
    }
    tokio::spawn(async move {
        tokio::time::sleep(DRAIN).await;
        stop_all(instances).await;
    });
}

async fn stop_all(instances: Vec<Instance>) {
    futures_util::future::join_all(instances.into_iter().map(Instance::stop)).await;
}

/// After a restart: the stable release serves again before anything else happens.
async fn restore_stable(app: &Arc<App>, deployment: &Deployment) -> Result<(), String> {
    let spec = environment_spec(deployment)?;
    let env = environment(app, deployment, &spec).await?;
    let mut serving = env.state.lock().await;
    if serving.stable_deployment == Some(deployment.id) {
        return Ok(());
    }
    let launch = launch(app, deployment, &spec).await?;
    let instances = start_instances(&launch, spec.instances as usize, &Checks::from_spec(&spec.health)).await?;
    env.routing(&instances, &[], 0.0);
    let old = std::mem::replace(&mut serving.stable, instances);
    serving.stable_deployment = Some(deployment.id);
    retire(old);
    Ok(())
}

/// Records one move of a deployment.
#[allow(clippy::too_many_arguments)]
async fn transition(
    app: &App,
    deployment: &Deployment,
    event: &str,
    status: DeploymentStatus,
    step: i64,
    weight: f64,
    reason: Option<String>,
    detail: serde_json::Value,
) -> Result<Deployment, String> {
    let transition = Transition { event: event.into(), status, step, weight, reason, detail };
    app.store.transition_deployment(deployment.id, transition, "tandem").await.map_err(|e| e.to_string())
}

/// A step reached: the new release's share of traffic now.
async fn stepped(
    app: &App,
    deployment: &Deployment,
    step: i64,
    weight: f64,
    reason: Option<String>,
    detail: serde_json::Value,
) -> Result<Deployment, String> {
    transition(app, deployment, "step", DeploymentStatus::Running, step, weight, reason, detail).await
}

/// The end of a deployment that lost: traffic is back on stable before this is recorded.
async fn rolled_back(
    app: &App,
    deployment: &Deployment,
    step: i64,
    weight: f64,
    reason: Option<String>,
    detail: serde_json::Value,
) -> Result<Deployment, String> {
    transition(app, deployment, "rolled_back", DeploymentStatus::RolledBack, step, weight, reason, detail).await
}

/// What holds a deployment back now, if anything: the gate (`freeze`, `error-budget` or
/// `approval`) and why.
async fn gate(
    app: &App,
    deployment: &Deployment,
    spec: &service::Environment,
    env: &Env,
) -> Option<(&'static str, String)> {
    let now = jiff::Timestamp::now();
    for freeze in &spec.gates.freezes {
        match freeze.active_at(now) {
            Ok(Some(end)) => {
                return Some(("freeze", format!("freeze window `{}` ({}) until {end}", freeze.cron, freeze.timezone)));
            }
            Ok(None) => {}
            Err(error) => return Some(("freeze", format!("freeze window cannot be read: {error}"))),
        }
    }
    if let Some(floor) = spec.gates.min_error_budget {
        let (requests, errors) = env.traffic();
        if requests > 0 {
            let allowed = 1.0 - spec.gates.objective;
            let rate = errors as f64 / requests as f64;
            let left = 1.0 - rate / allowed;
            if left < floor {
                return Some((
                    "error-budget",
                    format!(
                        "error budget {:.0}% left, below the {:.0}% floor ({:.2}% of {requests} requests failed in the last {} min against a {:.2}% objective)",
                        left.max(0.0) * 100.0,
                        floor * 100.0,
                        rate * 100.0,
                        BUDGET_WINDOW.as_secs() / 60,
                        spec.gates.objective * 100.0
                    ),
                ));
            }
        }
    }
    if spec.gates.approval {
        let current = app.store.deployment(deployment.id).await.ok()?;
        if current.approved_by.is_none() {
            return Some(("approval", format!("waits for approval: `tandem approve {}`", deployment.id)));
        }
    }
    None
}

/// Carries one deployment from wherever the store says it is to its end.
async fn drive(app: &Arc<App>, mut deployment: Deployment) -> Result<(), String> {
    let spec = environment_spec(&deployment)?;
    let env = environment(app, &deployment, &spec).await?;
    if deployment.abort_requested {
        app.deployer.abort(deployment.id);
    }
    let subject = format!("deployment/{}", deployment.id);
    if app.store.events_about(&subject).await.is_ok_and(|e| e.iter().any(|e| e.kind == "deployment.promote_requested"))
    {
        app.deployer.promote(deployment.id);
    }
    // Gates hold a deployment before anything starts; rollbacks pass them.
    if deployment.kind == "deploy" {
        // One event per gate that holds it, not one per check.
        let mut last_gate = (deployment.status == DeploymentStatus::AwaitingApproval).then_some("approval");
        loop {
            if let Some(newer) = app.deployer.superseded_by(deployment.id) {
                skip(app, &deployment, newer).await?;
                return Ok(());
            }
            if app.deployer.aborted(deployment.id) {
                let reason = Some("rolled back before it started".to_string());
                rolled_back(app, &deployment, 0, 0.0, reason, serde_json::json!({})).await?;
                return Ok(());
            }
            let Some((held_by, reason)) = gate(app, &deployment, &spec, &env).await else { break };
            if last_gate != Some(held_by) {
                let status =
                    if held_by == "approval" { DeploymentStatus::AwaitingApproval } else { DeploymentStatus::Gated };
                let detail = serde_json::json!({"gate": held_by});
                deployment = transition(app, &deployment, "gated", status, 0, 0.0, Some(reason), detail).await?;
                last_gate = Some(held_by);
            }
            tokio::select! {
                () = app.deployer.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
    if deployment.status != DeploymentStatus::Running {
        deployment = transition(
            app,
            &deployment,
            "started",
            DeploymentStatus::Running,
            deployment.step,
            0.0,
            None,
            serde_json::json!({"strategy": strategy_name(&spec.strategy)}),
        )
        .await?;
    }
    let mut serving = env.state.lock().await;

    // Blue-green rollbacks to the release still kept warm switch back at once.
    if deployment.kind != "deploy"
        && let Some((warm_id, _)) = &serving.warm
        && app.store.deployment(*warm_id).await.is_ok_and(|w| w.sha == deployment.sha)
        && let Some((_, warm)) = serving.warm.take()
    {
        env.routing(&warm, &[], 0.0);
        let old = std::mem::replace(&mut serving.stable, warm);
        serving.stable_deployment = Some(deployment.id);
        drop(serving);
        retire(old);
        let reason = Some("switched back to the release kept warm".to_string());
        transition(app, &deployment, "promoted", DeploymentStatus::Promoted, 0, 1.0, reason, serde_json::json!({}))
            .await?;
        return Ok(());
    }

    let health = Checks::from_spec(&spec.health);
    let launch = launch(app, &deployment, &spec).await?;
    let n = spec.instances as usize;
    if matches!(spec.strategy, Strategy::Rolling { .. }) && !serving.stable.is_empty() && deployment.kind != "emergency"
    {
        return rolling(app, &env, serving, deployment, &spec, &launch, &health).await;
    }

    let new = match start_instances(&launch, n, &health).await {
        Ok(new) => new,
        Err(error) => {
            let reason = Some(format!("failed health check: {error}"));
            rolled_back(app, &deployment, deployment.step, 0.0, reason, serde_json::json!({})).await?;
            return Ok(());
        }
    };

    // The first release has nothing to be compared with; an emergency skips the analysis.
    if serving.stable.is_empty() || deployment.kind == "emergency" {
        let reason = if serving.stable.is_empty() {
            "first release of the environment: nothing to compare it with"
        } else {
            "emergency: switched at once, without analysis"
        };
        return promote(app, &env, serving, deployment, new, Some(reason.into()), None).await;
    }

    match &spec.strategy {
        Strategy::Canary { steps, pause_ms } => {
            let judged = steps.iter().filter(|s| **s < 100.0).count();
            let config = analysis_config(&spec, *pause_ms, judged);
            let first = (deployment.step.max(0) as usize).min(steps.len().saturating_sub(1));
            for (index, percent) in steps.iter().enumerate().skip(first) {
                let weight = percent / 100.0;
                if weight >= 1.0 || app.deployer.promoting(deployment.id) {
                    // All traffic on the canary leaves nothing to compare it with: it has passed.
                    break;
                }
                env.routing(&serving.stable, &new, weight);
                deployment =
                    stepped(app, &deployment, index as i64, weight, None, serde_json::json!({"percent": percent}))
                        .await?;
                let mut outcomes = env.listen_to_step();
                let timeout = Duration::from_millis((*pause_ms).max(1_000) * 20).max(Duration::from_secs(300));
                let end = judge_step(&mut outcomes, &config, timeout, || step_stop(app, deployment.id, &new)).await;
                env.stop_listening();
                if let StepEnd::RolledBack { evidence, reason } = end {
                    env.routing(&serving.stable, &[], 0.0);
                    drop(serving);
                    retire(new);
                    let detail = serde_json::json!({"evidence": evidence});
                    rolled_back(app, &deployment, index as i64, weight, Some(reason), detail).await?;
                    return Ok(());
                }
            }
            promote(app, &env, serving, deployment, new, None, None).await
        }
        Strategy::BlueGreen { preview_ms, keep_old_ms } => {
            // Preview: the new release answers requests carrying the preview header only.
            env.routing(&serving.stable, &new, 0.0);
            deployment = stepped(
                app,
                &deployment,
                0,
                0.0,
                Some("preview".into()),
                serde_json::json!({"preview_header": proxy::PREVIEW_HEADER}),
            )
            .await?;
            let until = Instant::now() + Duration::from_millis(*preview_ms);
            while Instant::now() < until && !app.deployer.promoting(deployment.id) {
                if let Some(reason) = stop_reason(app, deployment.id, &new) {
                    env.routing(&serving.stable, &[], 0.0);
                    drop(serving);
                    retire(new);
                    rolled_back(app, &deployment, 0, 0.0, Some(reason), serde_json::json!({})).await?;
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let keep = Duration::from_millis(*keep_old_ms);
            promote(app, &env, serving, deployment, new, None, Some(keep)).await
        }
        Strategy::Rolling { .. } => promote(app, &env, serving, deployment, new, None, None).await,
    }
}

fn strategy_name(strategy: &Strategy) -> &'static str {
    match strategy {
        Strategy::Canary { .. } => "canary",
        Strategy::Rolling { .. } => "rolling",
        Strategy::BlueGreen { .. } => "blue-green",
    }
}

/// The analysis of each judged step. α is the whole rollout's bound on a false rollback, so it
/// is shared between the steps that are judged.
fn analysis_config(spec: &service::Environment, pause_ms: u64, judged_steps: usize) -> Config {
    Config {
        alpha: spec.analysis.alpha / judged_steps.max(1) as f64,
        min_canary_requests: spec.analysis.min_requests,
        min_seconds: pause_ms as f64 / 1000.0,
        ..Config::default()
    }
}

/// Why a step must end now: a manual rollback, or a new instance that failed its liveness check.
fn stop_reason(app: &App, id: i64, new: &[Instance]) -> Option<String> {
    if app.deployer.aborted(id) {
        return Some("rollback requested".into());
    }
    new.iter().find_map(Instance::failure).map(|failure| format!("failed health check: {failure}"))
}

/// How a step ends from outside: rolled back (see `stop_reason`) or promoted by hand.
fn step_stop(app: &App, id: i64, new: &[Instance]) -> Option<StepEnd> {
    if let Some(reason) = stop_reason(app, id, new) {
        return Some(StepEnd::RolledBack { evidence: None, reason });
    }
    app.deployer.promoting(id).then_some(StepEnd::Healthy)
}

/// The new release takes all traffic and becomes stable; the old one stops (or stays warm).
async fn promote(
    app: &Arc<App>,
    env: &Arc<Env>,
    mut serving: tokio::sync::MutexGuard<'_, Serving>,
    deployment: Deployment,
    new: Vec<Instance>,
    reason: Option<String>,
    keep_old: Option<Duration>,
) -> Result<(), String> {
    env.routing(&new, &[], 0.0);
    let old = std::mem::replace(&mut serving.stable, new);
    let old_deployment = serving.stable_deployment.replace(deployment.id);
    let detail = serde_json::json!({"replaced": old_deployment});
    let step = deployment.step;
    let recorded =
        transition(app, &deployment, "promoted", DeploymentStatus::Promoted, step, 1.0, reason, detail).await;
    match (keep_old, old_deployment) {
        (Some(keep), Some(old_id)) if !old.is_empty() && !keep.is_zero() => {
            let previous = serving.warm.replace((old_id, old));
            drop(serving);
            if let Some((_, instances)) = previous {
                stop_all(instances).await;
            }
            let env = env.clone();
            tokio::spawn(async move {
                tokio::time::sleep(keep).await;
                let mut serving = env.state.lock().await;
                if serving.warm.as_ref().is_some_and(|(id, ..)| *id == old_id)
                    && let Some((_, instances)) = serving.warm.take()
                {
                    drop(serving);
                    stop_all(instances).await;
                }
            });
        }
        _ => {
            drop(serving);
            retire(old);
        }
    }
    recorded.map(|_| ())
}

/// Rolling: batches of new instances replace old ones; each batch takes its share of traffic
/// and is judged against the old ones still serving before the next.
async fn rolling(
    app: &Arc<App>,
    env: &Arc<Env>,
    mut serving: tokio::sync::MutexGuard<'_, Serving>,
    mut deployment: Deployment,
    spec: &service::Environment,
    launch: &Launch,
    health: &Checks,
) -> Result<(), String> {
    let Strategy::Rolling { max_surge, max_unavailable } = spec.strategy else { return Ok(()) };
    let n = spec.instances as usize;
    let batch = (if max_surge > 0 { max_surge } else { max_unavailable }).max(1) as usize;
    let batches = n.div_ceil(batch);
    let config = analysis_config(spec, 5_000, batches.saturating_sub(1));
    let mut new: Vec<Instance> = Vec::new();
    let mut retired: Vec<Instance> = Vec::new();
    let first = (deployment.step.max(0) as usize).min(batches - 1);
    for index in first..batches {
        let wanted = ((index + 1) * batch).min(n);
        if max_surge == 0 {
            // No room above the count: take old instances out of service first.
            let out = (wanted - new.len()).min(serving.stable.len());
            let keep = serving.stable.len() - out;
            retired.extend(serving.stable.drain(keep..));
            env.routing(&serving.stable, &new, share(&serving.stable, &new));
        }
        match start_instances(launch, wanted - new.len(), health).await {
            Ok(started) => new.extend(started),
            Err(error) => {
                return rolling_back(
                    app,
                    env,
                    serving,
                    deployment,
                    n,
                    new,
                    retired,
                    index,
                    format!("failed health check: {error}"),
                )
                .await;
            }
        }
        let keep = n.saturating_sub(wanted).min(serving.stable.len());
        retired.extend(serving.stable.drain(keep..));
        let weight = share(&serving.stable, &new);
        env.routing(&serving.stable, &new, weight);
        deployment = stepped(
            app,
            &deployment,
            index as i64,
            weight,
            None,
            serde_json::json!({"new_instances": new.len(), "old_instances": serving.stable.len()}),
        )
        .await?;
        // Old instances out of service stop once traffic no longer reaches them.
        retire(std::mem::take(&mut retired));
        if serving.stable.is_empty() {
            break;
        }
        if app.deployer.promoting(deployment.id) {
            // Promoted by hand: the remaining batches replace the old instances unjudged.
            continue;
        }
        let mut outcomes = env.listen_to_step();
        let end =
            judge_step(&mut outcomes, &config, Duration::from_secs(300), || step_stop(app, deployment.id, &new)).await;
        env.stop_listening();
        if let StepEnd::RolledBack { reason, .. } = end {
            return rolling_back(app, env, serving, deployment, n, new, retired, index, reason).await;
        }
    }
    promote(app, env, serving, deployment, new, None, None).await
}

fn share(old: &[Instance], new: &[Instance]) -> f64 {
    new.len() as f64 / (old.len() + new.len()).max(1) as f64
}

/// A rolling update that failed: the old release is brought back to its full count first.
#[allow(clippy::too_many_arguments)]
async fn rolling_back(
    app: &Arc<App>,
    env: &Arc<Env>,
    mut serving: tokio::sync::MutexGuard<'_, Serving>,
    deployment: Deployment,
    instances: usize,
    new: Vec<Instance>,
    retired: Vec<Instance>,
    index: usize,
    reason: String,
) -> Result<(), String> {
    retire(retired);
    // Old instances already retired come back first, so the environment keeps its count.
    let missing = instances.saturating_sub(serving.stable.len());
    if missing > 0
        && let Some(stable_id) = serving.stable_deployment
        && let Ok(stable) = app.store.deployment(stable_id).await
        && let Ok(stable_spec) = environment_spec(&stable)
        && let Ok(stable_launch) = launch(app, &stable, &stable_spec).await
        && let Ok(back) = start_instances(&stable_launch, missing, &Checks::from_spec(&stable_spec.health)).await
    {
        serving.stable.extend(back);
    }
    env.routing(&serving.stable, &[], 0.0);
    drop(serving);
    retire(new);
    rolled_back(app, &deployment, index as i64, 0.0, Some(reason), serde_json::json!({})).await?;
    Ok(())
}
