//! Releases as instances: the release directory, the launch of each target, readiness checks, draining and stopping.

#[allow(unused_imports)]
use super::*;

/// The directory a process release runs in: the commit's files, extracted once.
pub(super) async fn release_dir(app: &App, deployment: &Deployment) -> Result<PathBuf, String> {
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

pub(super) fn substitute(text: &str, deployment: &Deployment) -> String {
    text.replace("${{ sha }}", &deployment.sha)
        .replace("${{ release }}", &deployment.release)
        .replace("${{ environment }}", &deployment.environment)
}

/// How to start instances of a deployment's release.
pub(super) async fn launch(
    app: &Arc<App>,
    deployment: &Deployment,
    spec: &service::Environment,
) -> Result<Launch, String> {
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
pub(super) struct Checks {
    pub(super) ready: Health,
    pub(super) live: Health,
}

impl Checks {
    pub(super) fn from_spec(health: &service::Health) -> Checks {
        Checks { ready: Health::from_spec(health), live: Health::liveness_from_spec(health) }
    }
}

/// Starts `n` instances and waits until all are ready, watching their liveness from then on.
/// On failure nothing is left running.
pub(super) async fn start_instances(launch: &Launch, n: usize, checks: &Checks) -> Result<Vec<Instance>, String> {
    let mut started = Vec::new();
    for _ in 0..n {
        match Instance::start(launch).await {
            Ok(instance) => started.push(instance),
            Err(error) => {
                stop_all(started).await;
                return Err(error.into());
            }
        }
    }
    let ready = futures_util::future::join_all(started.iter().map(|i| i.wait_ready(&checks.ready))).await;
    if let Some(error) = ready.into_iter().find_map(Result::err) {
        stop_all(started).await;
        return Err(error.into());
    }
    for instance in &mut started {
        instance.watch(checks.live.clone());
    }
    Ok(started)
}

/// How long instances taken out of traffic keep running, so that requests in flight finish.
pub(super) const DRAIN: Duration = Duration::from_secs(1);

/// Stops instances that no longer get traffic once the requests they still serve are done;
/// returns at once.
pub(super) fn retire(instances: Vec<Instance>) {
    if instances.is_empty() {
        return;
    }
    tokio::spawn(async move {
        tokio::time::sleep(DRAIN).await;
        stop_all(instances).await;
    });
}

pub(super) async fn stop_all(instances: Vec<Instance>) {
    futures_util::future::join_all(instances.into_iter().map(Instance::stop)).await;
}

/// After a restart: the stable release serves again before anything else happens.
pub(super) async fn restore_stable(app: &Arc<App>, deployment: &Deployment) -> Result<(), String> {
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
