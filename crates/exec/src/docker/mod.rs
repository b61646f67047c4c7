//! The Docker executor, through the Engine API: a job's service containers on a network of its
//! own, the job container its steps run in (via exec), and their removal — also of what a
//! crashed Tandem left behind (`reap`).

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, ExecConfig, HealthConfig, HostConfig, NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListNetworksOptions, LogsOptions,
    RemoveContainerOptions,
};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::process::{Exit, ProcessGroups, ProcessSpec, Stream};
use crate::{Cancel, Executor};

mod build;
mod catalog;
mod executors;
mod options;
#[allow(unused_imports)]
pub use build::*;
#[allow(unused_imports)]
pub use executors::*;
#[allow(unused_imports)]
pub use options::*;

/// Label on everything Tandem creates; its value is the owning Tandem process id.
pub const OWNER_LABEL: &str = "dev.tandem.owner";
pub const RUN_LABEL: &str = "dev.tandem.run";
pub const JOB_LABEL: &str = "dev.tandem.job";

/// A connection to the engine.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    docker: Docker,
}

/// A container to start, as a workflow describes it (expressions already evaluated).
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub image: String,
    pub env: Vec<(String, String)>,
    pub ports: Vec<String>,
    pub volumes: Vec<String>,
    pub options: String,
    pub credentials: Option<(String, String)>,
}

/// What a job needs from Docker.
#[derive(Debug, Clone)]
pub struct JobContainers {
    pub run_id: u64,
    /// Unique among the run's legs; names the network and containers.
    pub key: String,
    pub container: Option<ContainerSpec>,
    pub services: Vec<(String, ContainerSpec)>,
    /// Host paths mounted at the same path in the job container (workspace, temp, tool cache).
    pub mounts: Vec<PathBuf>,
    /// Longest wait for services to become healthy.
    pub health_timeout: Duration,
}

/// A job's containers while it runs. Call `teardown` when the job ends, whatever happened.
#[derive(Debug)]
pub struct JobEnvironment {
    docker: Docker,
    /// The job's own network, when it has services.
    pub network: Option<String>,
    pub job_container: Option<String>,
    pub services: Vec<(String, String)>,
}

fn labels(run_id: u64, key: &str) -> HashMap<String, String> {
    HashMap::from([
        (OWNER_LABEL.to_string(), std::process::id().to_string()),
        (RUN_LABEL.to_string(), run_id.to_string()),
        (JOB_LABEL.to_string(), key.to_string()),
    ])
}

/// Why the Docker engine could not do what a job or a deployment asked, with what to do.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach the Docker engine: {0}")]
    Connect(#[source] bollard::errors::Error),
    #[error(
        "the Docker engine does not answer ({0}); start it (e.g. `dockerd`) or set DOCKER_HOST. Jobs without `container:` or `services:` still run on this machine"
    )]
    NoAnswer(#[source] bollard::errors::Error),
    #[error("the Docker engine did not answer within 3 s; start it (e.g. `dockerd`) or set DOCKER_HOST")]
    Timeout,
    #[error(
        "image `{image}` is not present and cannot be pulled ({error}); build or import it on this machine (`docker build`, `docker import`), or push it to a registry this machine reaches"
    )]
    ImageUnavailable {
        image: String,
        #[source]
        error: bollard::errors::Error,
    },
    /// A job's network, services or container could not start; the message names which, and
    /// carries a failing service's last log lines.
    #[error("{0}")]
    Job(String),
}

/// For callers whose errors are messages for people.
impl From<EngineError> for String {
    fn from(error: EngineError) -> String {
        error.to_string()
    }
}

impl DockerEngine {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket) and checks it answers.
    pub async fn connect() -> Result<DockerEngine, EngineError> {
        let docker = Docker::connect_with_local_defaults().map_err(EngineError::Connect)?;
        match tokio::time::timeout(Duration::from_secs(3), docker.ping()).await {
            Ok(Ok(_)) => Ok(DockerEngine { docker }),
            Ok(Err(e)) => Err(EngineError::NoAnswer(e)),
            Err(_) => Err(EngineError::Timeout),
        }
    }

    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Removes containers and networks whose owning Tandem process is gone. Returns how many.
    pub async fn reap(&self) -> usize {
        let filters = HashMap::from([("label".to_string(), vec![OWNER_LABEL.to_string()])]);
        let mut n = 0;
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters.clone()),
                ..Default::default()
            }))
            .await
            .unwrap_or_default();
        for container in containers {
            let owner = crate::process::owner_pid(container.labels.as_ref());
            if owner.is_some_and(|pid| !crate::process::pid_alive(pid))
                && let Some(id) = container.id
                && self
                    .docker
                    .remove_container(&id, Some(RemoveContainerOptions { force: true, v: true, ..Default::default() }))
                    .await
                    .is_ok()
            {
                n += 1;
            }
        }
        let networks =
            self.docker.list_networks(Some(ListNetworksOptions { filters: Some(filters) })).await.unwrap_or_default();
        for network in networks {
            let owner = crate::process::owner_pid(network.labels.as_ref());
            if owner.is_some_and(|pid| !crate::process::pid_alive(pid))
                && let Some(name) = network.name
                && self.docker.remove_network(&name).await.is_ok()
            {
                n += 1;
            }
        }
        n
    }

    /// Makes sure an image is present, pulling it if not; the error says what to do.
    pub async fn ensure_image(&self, image: &str, credentials: Option<&(String, String)>) -> Result<(), EngineError> {
        if self.docker.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        let credentials = credentials.map(|(user, password)| bollard::auth::DockerCredentials {
            username: Some(user.clone()),
            password: Some(password.clone()),
            ..Default::default()
        });
        let mut pull = self.docker.create_image(
            Some(CreateImageOptions { from_image: Some(image.to_string()), ..Default::default() }),
            None,
            credentials,
        );
        while let Some(progress) = pull.next().await {
            if let Err(error) = progress {
                return Err(EngineError::ImageUnavailable { image: image.to_string(), error });
            }
        }
        Ok(())
    }

    /// Creates the job's network, starts its services and waits for them to be healthy, then
    /// starts the job container. On failure everything created so far is removed.
    pub async fn start_job(&self, job: &JobContainers) -> Result<JobEnvironment, EngineError> {
        // A network of its own only where there are services to reach by name; a lone job
        // container uses the default bridge (creating a network costs more than a step).
        let network = if job.services.is_empty() { None } else { Some(format!("tandem-{}-{}", job.run_id, job.key)) };
        if let Some(network) = &network {
            let request = NetworkCreateRequest {
                name: network.clone(),
                driver: Some("bridge".into()),
                labels: Some(labels(job.run_id, &job.key)),
                ..Default::default()
            };
            self.docker
                .create_network(request)
                .await
                .map_err(|e| EngineError::Job(format!("cannot create the job's network: {e}")))?;
        }
        let mut environment =
            JobEnvironment { docker: self.docker.clone(), network, job_container: None, services: Vec::new() };
        match self.start_containers(job, &mut environment).await {
            Ok(()) => Ok(environment),
            Err(error) => {
                environment.teardown().await;
                Err(EngineError::Job(error))
            }
        }
    }

    async fn start_containers(&self, job: &JobContainers, environment: &mut JobEnvironment) -> Result<(), String> {
        // Services and the job container start together; only the first step waits for health.
        let services = futures_util::future::join_all(job.services.iter().map(|(name, service)| async move {
            self.ensure_image(&service.image, service.credentials.as_ref()).await?;
            let id =
                self.create(job, service, Some(name), false).await.map_err(|e| format!("service `{name}`: {e}"))?;
            Ok::<_, String>((name.clone(), id))
        }));
        let container = async {
            match &job.container {
                Some(container) => {
                    self.ensure_image(&container.image, container.credentials.as_ref()).await?;
                    self.create(job, container, None, true).await.map(Some).map_err(|e| format!("job container: {e}"))
                }
                None => Ok(None),
            }
        };
        let (services, container) = tokio::join!(services, container);
        let mut first_error = None;
        for service in services {
            match service {
                Ok(started) => environment.services.push(started),
                Err(error) => first_error = first_error.or(Some(error)),
            }
        }
        match container {
            Ok(id) => environment.job_container = id,
            Err(error) => first_error = first_error.or(Some(error)),
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        let deadline = Instant::now() + job.health_timeout;
        let checks = environment.services.iter().map(|(name, id)| self.await_healthy(name, id, deadline));
        futures_util::future::try_join_all(checks).await?;
        Ok(())
    }

    async fn create(
        &self,
        job: &JobContainers,
        spec: &ContainerSpec,
        alias: Option<&str>,
        is_job: bool,
    ) -> Result<String, String> {
        let network = (!job.services.is_empty()).then(|| format!("tandem-{}-{}", job.run_id, job.key));
        let mut host = HostConfig { network_mode: network.clone(), ..Default::default() };
        let mut body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels(job.run_id, &job.key)),
            ..Default::default()
        };
        let mut binds: Vec<String> = spec.volumes.clone();
        if is_job {
            body.entrypoint = Some(vec!["tail".into(), "-f".into(), "/dev/null".into()]);
            body.cmd = Some(Vec::new());
            binds.extend(job.mounts.iter().map(|m| {
                if m.is_file() { format!("{0}:{0}:ro", m.display()) } else { format!("{0}:{0}", m.display()) }
            }));
        }
        if !spec.ports.is_empty() {
            let mut bindings = HashMap::new();
            let mut exposed = Vec::new();
            for port in &spec.ports {
                let (host_port, container_port) =
                    port.split_once(':').map_or((None, port.as_str()), |(h, c)| (Some(h.to_string()), c));
                let key = if container_port.contains('/') {
                    container_port.to_string()
                } else {
                    format!("{container_port}/tcp")
                };
                exposed.push(key.clone());
                bindings.insert(
                    key,
                    Some(vec![bollard::models::PortBinding { host_ip: Some("127.0.0.1".into()), host_port }]),
                );
            }
            body.exposed_ports = Some(exposed);
            host.port_bindings = Some(bindings);
        }
        host.binds = Some(binds);
        apply_options(&spec.options, &mut body, &mut host)?;
        body.host_config = Some(host);
        if let (Some(alias), Some(network)) = (alias, network) {
            let endpoint = EndpointSettings { aliases: Some(vec![alias.to_string()]), ..Default::default() };
            body.networking_config =
                Some(NetworkingConfig { endpoints_config: Some(HashMap::from([(network, endpoint)])) });
        }
        let name = format!("tandem-{}-{}-{}", job.run_id, job.key, alias.unwrap_or("job"));
        let created = self
            .docker
            .create_container(Some(CreateContainerOptions { name: Some(name), ..Default::default() }), body)
            .await
            .map_err(|e| e.to_string())?;
        if let Err(error) = self.docker.start_container(&created.id, None).await {
            let _ = self
                .docker
                .remove_container(
                    &created.id,
                    Some(RemoveContainerOptions { force: true, v: true, ..Default::default() }),
                )
                .await;
            return Err(error.to_string());
        }
        Ok(created.id)
    }

    /// Waits until a container with a health check reports healthy (one without is ready once
    /// running). A service that never becomes healthy fails with its last log lines.
    async fn await_healthy(&self, name: &str, id: &str, deadline: Instant) -> Result<(), String> {
        loop {
            let inspect = self.docker.inspect_container(id, None).await.map_err(|e| e.to_string())?;
            let state = inspect.state.unwrap_or_default();
            let running = state.running.unwrap_or(false);
            let health = state.health.and_then(|h| h.status).map(|s| s.to_string());
            match health.as_deref() {
                Some("healthy") => return Ok(()),
                None | Some("none") | Some("") if running => return Ok(()),
                _ => {}
            }
            let unhealthy = health.as_deref() == Some("unhealthy");
            if !running || unhealthy || Instant::now() > deadline {
                let why = if !running {
                    "stopped"
                } else if unhealthy {
                    "is unhealthy (its health check kept failing)"
                } else {
                    "never became healthy"
                };
                let logs = last_logs(&self.docker, id, 20).await;
                return Err(format!(
                    "service `{name}` {why}; its last log lines:\n{}",
                    if logs.is_empty() { "(none)".into() } else { logs.join("\n") }
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl JobEnvironment {
    /// Removes the job's containers and network. Safe to call once per environment; errors are
    /// ignored (the reaper catches what is left).
    pub async fn teardown(self) -> Vec<(String, Vec<String>)> {
        let mut logs = Vec::new();
        for (name, id) in &self.services {
            logs.push((name.clone(), last_logs(&self.docker, id, 50).await));
        }
        let ids = self.job_container.iter().chain(self.services.iter().map(|(_, id)| id));
        for id in ids {
            let removed = self
                .docker
                .remove_container(id, Some(RemoveContainerOptions { force: true, v: true, ..Default::default() }))
                .await;
            if let Err(error) = removed {
                tracing::warn!("cannot remove container {id} (the next container job reaps it): {error}");
            }
        }
        if let Some(network) = &self.network
            && let Err(error) = self.docker.remove_network(network).await
        {
            tracing::warn!("cannot remove network {network} (the next container job reaps it): {error}");
        }
        logs
    }

    pub fn executor(&self) -> Option<ContainerExecutor> {
        self.job_container.as_ref().map(|id| ContainerExecutor { docker: self.docker.clone(), container: id.clone() })
    }
}

async fn last_logs(docker: &Docker, id: &str, n: usize) -> Vec<String> {
    let mut stream =
        docker.logs(id, Some(LogsOptions { stdout: true, stderr: true, tail: n.to_string(), ..Default::default() }));
    let mut lines = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        lines.extend(String::from_utf8_lossy(&chunk.into_bytes()).lines().map(str::to_string));
    }
    lines
}
