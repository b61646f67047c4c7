//! One running copy of a release — a supervised process, a container or a Swarm service, each a
//! [`Target`] — with its readiness check before traffic and its liveness check after.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{CreateContainerOptions, ListContainersOptions, RemoveContainerOptions};

use crate::TargetError;
use crate::process::{self, ProcessTarget, Supervised};

/// Label on every container Tandem deploys: `<service>/<environment>`.
pub const DEPLOY_LABEL: &str = "dev.tandem.deploy";

/// How an instance is checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// GET this path answers 2xx.
    Http(String),
    /// The port accepts a connection.
    Tcp,
    /// This shell command exits 0 (`$PORT` and `$HOST` name the instance).
    Command(String),
}

/// Readiness and liveness settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub check: Check,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failed checks before a live instance counts as down.
    pub threshold: u32,
    /// How long a new instance has to become ready.
    pub ready_within: Duration,
}

impl Health {
    /// The liveness settings: the `liveness` block where there is one, else the same check.
    pub fn liveness_from_spec(health: &spec::service::Health) -> Health {
        Health::from_spec(health.liveness.as_deref().unwrap_or(health))
    }

    /// The readiness settings.
    pub fn from_spec(health: &spec::service::Health) -> Health {
        let check = match &health.probe {
            spec::service::Probe::Http => Check::Http(health.path.clone()),
            spec::service::Probe::Tcp => Check::Tcp,
            spec::service::Probe::Command(command) => Check::Command(command.clone()),
        };
        Health {
            check,
            interval: Duration::from_millis(health.interval_ms.max(50)),
            timeout: Duration::from_millis(health.timeout_ms.max(50)),
            threshold: health.threshold.max(1),
            ready_within: Duration::from_millis(health.ready_within_ms),
        }
    }
}

/// Checks one instance once.
pub async fn check(addr: SocketAddr, check: &Check, timeout: Duration) -> bool {
    let attempt = async {
        match check {
            Check::Http(path) => process::probe(addr, path).await,
            Check::Tcp => tokio::net::TcpStream::connect(addr).await.is_ok(),
            Check::Command(command) => tokio::process::Command::new("sh")
                .arg("-c")
                .arg(command)
                .env("PORT", addr.port().to_string())
                .env("HOST", addr.ip().to_string())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .is_ok_and(|s| s.success()),
        }
    };
    tokio::time::timeout(timeout, attempt).await.unwrap_or(false)
}

/// How to start an instance of a release.
#[derive(Debug, Clone)]
pub enum Launch {
    /// A shell command in the release's directory, on a port Tandem assigns (`$PORT`).
    Process { command: String, dir: PathBuf, env: Vec<(String, String)>, journal: Option<PathBuf> },
    /// A container of `image`, its `port` published on a loopback port.
    Docker { docker: Docker, image: String, port: u16, env: Vec<(String, String)>, labels: HashMap<String, String> },
    /// A Docker Swarm service of `image`, one task, its `port` published in host mode on a
    /// loopback port Tandem picks (so that a task Swarm restarts answers where it did). Each
    /// instance is a service named `name-<n>`.
    Swarm {
        docker: Docker,
        name: String,
        image: String,
        port: u16,
        env: Vec<(String, String)>,
        labels: HashMap<String, String>,
    },
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// An instance of a release on one kind of target: a supervised process, a container, a one-task
/// Swarm service (a Kubernetes pod would be one more).
///
/// The lifecycle every target keeps:
/// - it exists once [`Instance::start`] returns, with the address it answers on; it is not ready
///   yet: [`Instance::wait_ready`] probes that address, and asks the target `running` (does the
///   platform agree it runs?) and `exited` (is it gone for good, and why?), so that readiness
///   fails fast with the reason instead of waiting out its time;
/// - `restart` follows a failed liveness check; a target whose platform replaces what stops may
///   do nothing;
/// - `stop` is idempotent and may be called from any task, also while `restart` runs; once it
///   returns, nothing of the instance runs (its process group killed, its container or service
///   removed);
/// - nothing is adopted after a crash: processes are ended from their journal and containers and
///   services by their owner label (`reap_*`), then the release starts again. Every target
///   records what that needs when it starts.
pub trait Target: Send + Sync {
    /// The platform agrees the instance runs (Swarm: a task of the service is running).
    fn running(&self) -> BoxFuture<'_, Result<bool, String>>;
    /// Why the instance is gone for good, if it is (a container that exited).
    fn exited(&self) -> BoxFuture<'_, Option<String>>;
    fn restart(&self) -> BoxFuture<'_, ()>;
    fn stop(&self) -> BoxFuture<'_, ()>;
}

/// A supervised process (restarted with backoff by its supervisor).
struct ProcessInstance(tokio::sync::Mutex<Option<Supervised>>);

impl Target for ProcessInstance {
    fn running(&self) -> BoxFuture<'_, Result<bool, String>> {
        Box::pin(async { Ok(true) })
    }

    fn exited(&self) -> BoxFuture<'_, Option<String>> {
        // The supervisor starts it again; readiness waits for the new one.
        Box::pin(async { None })
    }

    fn restart(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            if let Some(supervised) = self.0.lock().await.as_ref() {
                supervised.restart(0);
            }
        })
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            let supervised = self.0.lock().await.take();
            if let Some(supervised) = supervised {
                supervised.stop().await;
            }
        })
    }
}

/// A container with its port published on loopback.
struct ContainerInstance {
    docker: Docker,
    id: String,
    addr: SocketAddr,
}

impl Target for ContainerInstance {
    fn running(&self) -> BoxFuture<'_, Result<bool, String>> {
        Box::pin(async { Ok(true) })
    }

    fn exited(&self) -> BoxFuture<'_, Option<String>> {
        Box::pin(async {
            let inspect = self.docker.inspect_container(&self.id, None).await.ok()?;
            let state = inspect.state?;
            (state.running == Some(false)).then(|| {
                let code = state.exit_code.unwrap_or_default();
                format!("the container on {} exited with code {code} before it was ready", self.addr)
            })
        })
    }

    fn restart(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            if let Err(error) = self.docker.restart_container(&self.id, None).await {
                tracing::warn!("cannot restart the container on {}: {error}", self.addr);
            }
        })
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(remove(&self.docker, &self.id))
    }
}

/// A one-task Swarm service, published in host mode.
struct ServiceInstance {
    docker: Docker,
    id: String,
}

impl Target for ServiceInstance {
    fn running(&self) -> BoxFuture<'_, Result<bool, String>> {
        // Its task must run (not just a previous one linger) before it counts as ready.
        Box::pin(async { running_tasks(&self.docker, &self.id).await.map(|n| n >= 1) })
    }

    fn exited(&self) -> BoxFuture<'_, Option<String>> {
        Box::pin(async { None })
    }

    fn restart(&self) -> BoxFuture<'_, ()> {
        // Swarm replaces tasks that stop by itself; the failure is what counts here.
        Box::pin(async {})
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            // Deleting a service that is gone already is fine: stop is idempotent.
            let _ = self.docker.delete_service(&self.id).await;
        })
    }
}

/// A running instance. Call `stop`; dropping it leaves the instance running.
pub struct Instance {
    pub addr: SocketAddr,
    target: Arc<dyn Target>,
    /// Why the liveness check gave up on it, once it did.
    failure: Arc<Mutex<Option<String>>>,
    monitor: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Instance {
    pub async fn start(launch: &Launch) -> Result<Instance, TargetError> {
        let (addr, target): (SocketAddr, Arc<dyn Target>) = match launch {
            Launch::Process { command, dir, env, journal } => {
                let target = ProcessTarget {
                    command: command.clone(),
                    dir: dir.clone(),
                    env: env.clone(),
                    instances: 1,
                    health_path: "/".into(),
                    journal: journal.clone(),
                };
                let supervised = process::start(&target)?;
                (supervised.addrs[0], Arc::new(ProcessInstance(tokio::sync::Mutex::new(Some(supervised)))))
            }
            Launch::Docker { docker, image, port, env, labels } => {
                let (addr, id) = start_container(docker, image, *port, env, labels).await?;
                (addr, Arc::new(ContainerInstance { docker: docker.clone(), id, addr }))
            }
            Launch::Swarm { docker, name, image, port, env, labels } => {
                let (addr, id) = start_service(docker, name, image, *port, env, labels).await?;
                (addr, Arc::new(ServiceInstance { docker: docker.clone(), id }))
            }
        };
        Ok(Instance { addr, target, failure: Arc::default(), monitor: None })
    }

    /// Waits until the instance passes its check, or fails after `health.ready_within`.
    pub async fn wait_ready(&self, health: &Health) -> Result<(), TargetError> {
        let deadline = Instant::now() + health.ready_within;
        let pause = (health.interval / 4).clamp(Duration::from_millis(50), Duration::from_millis(500));
        loop {
            if check(self.addr, &health.check, health.timeout).await
                && self.target.running().await.map_err(TargetError::Engine)?
            {
                return Ok(());
            }
            if let Some(reason) = self.target.exited().await {
                return Err(TargetError::Exited(reason));
            }
            if Instant::now() > deadline {
                return Err(TargetError::NotReady {
                    addr: self.addr,
                    what: format!("pass its check ({})", describe(&health.check)),
                    within: health.ready_within,
                });
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Starts the liveness check: after `threshold` failed checks in a row the instance is
    /// recorded as failed and restarted.
    pub fn watch(&mut self, health: Health) {
        let (addr, target, failure) = (self.addr, self.target.clone(), self.failure.clone());
        self.monitor = Some(tokio::spawn(async move {
            let mut failed = 0;
            loop {
                tokio::time::sleep(health.interval).await;
                if check(addr, &health.check, health.timeout).await {
                    failed = 0;
                    continue;
                }
                failed += 1;
                if failed < health.threshold {
                    continue;
                }
                let reason = format!(
                    "the instance on {addr} failed its liveness check ({}) {failed} times in a row",
                    describe(&health.check)
                );
                if let Ok(mut slot) = failure.lock() {
                    slot.get_or_insert(reason);
                }
                failed = 0;
                target.restart().await;
                // Give the restarted instance its time to come up before counting again.
                tokio::time::sleep(health.ready_within.min(Duration::from_secs(30))).await;
            }
        }));
    }

    /// Why the liveness check gave up on this instance, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    pub async fn stop(mut self) {
        if let Some(monitor) = self.monitor.take() {
            monitor.abort();
            let _ = monitor.await;
        }
        self.target.stop().await;
    }
}

fn describe(check: &Check) -> String {
    match check {
        Check::Http(path) => format!("GET {path}"),
        Check::Tcp => "TCP connect".into(),
        Check::Command(command) => format!("`{command}`"),
    }
}

async fn remove(docker: &Docker, id: &str) {
    let _ =
        docker.remove_container(id, Some(RemoveContainerOptions { force: true, v: true, ..Default::default() })).await;
}

async fn start_container(
    docker: &Docker,
    image: &str,
    port: u16,
    env: &[(String, String)],
    labels: &HashMap<String, String>,
) -> Result<(SocketAddr, String), TargetError> {
    if docker.inspect_image(image).await.is_err() {
        return Err(TargetError::ImageMissing(image.to_string()));
    }
    let key = format!("{port}/tcp");
    let mut labels = labels.clone();
    labels.insert(exec::docker::OWNER_LABEL.into(), std::process::id().to_string());
    let mut env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.push(format!("PORT={port}"));
    let host = HostConfig {
        port_bindings: Some(HashMap::from([(
            key.clone(),
            Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: None }]),
        )])),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        env: Some(env),
        labels: Some(labels),
        exposed_ports: Some(vec![key.clone()]),
        host_config: Some(host),
        ..Default::default()
    };
    let created = docker
        .create_container(None::<CreateContainerOptions>, body)
        .await
        .map_err(|e| TargetError::Engine(format!("cannot create a container of `{image}`: {e}")))?;
    let id = created.id;
    if let Err(error) = docker.start_container(&id, None).await {
        remove(docker, &id).await;
        return Err(TargetError::Engine(format!("cannot start a container of `{image}`: {error}")));
    }
    let inspect = docker
        .inspect_container(&id, None)
        .await
        .map_err(|e| TargetError::Engine(format!("cannot inspect the container of `{image}`: {e}")))?;
    if let Some(state) = &inspect.state
        && state.running == Some(false)
    {
        let code = state.exit_code.unwrap_or_default();
        remove(docker, &id).await;
        return Err(TargetError::Exited(format!(
            "the container of `{image}` exited with code {code} right after it started"
        )));
    }
    let host_port = inspect
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|ports| ports.get(&key).cloned().flatten())
        .and_then(|bindings| bindings.into_iter().find_map(|b| b.host_port))
        .and_then(|p| p.parse::<u16>().ok());
    match host_port {
        Some(host_port) => Ok((SocketAddr::from(([127, 0, 0, 1], host_port)), id)),
        None => {
            remove(docker, &id).await;
            Err(TargetError::Engine(format!("the container of `{image}` has no published port for {key}")))
        }
    }
}

/// Which deployed containers and services `reap_*` removes, by their owner's pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Those whose Tandem is gone (after a crash).
    Dead,
    /// Those of this process (when it stops).
    This,
}

impl Owner {
    fn matches(self, owner: Option<i32>) -> bool {
        let alive = owner.is_some_and(exec::process::pid_alive);
        match self {
            Owner::Dead => !alive,
            Owner::This => owner == Some(std::process::id() as i32),
        }
    }
}

/// Removes deployed containers of `owner`. Returns how many.
pub async fn reap_containers(docker: &Docker, owner: Owner) -> usize {
    let filters = HashMap::from([("label".to_string(), vec![DEPLOY_LABEL.to_string()])]);
    let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
    let mut n = 0;
    for container in docker.list_containers(Some(options)).await.unwrap_or_default() {
        let pid = exec::process::owner_pid(container.labels.as_ref());
        if owner.matches(pid)
            && let Some(id) = container.id
        {
            remove(docker, &id).await;
            n += 1;
        }
    }
    n
}

/// Tasks of a service that run now; a task that failed is named.
async fn running_tasks(docker: &Docker, service: &str) -> Result<usize, String> {
    use bollard::models::TaskState;
    let filters = HashMap::from([("service".to_string(), vec![service.to_string()])]);
    let tasks = docker
        .list_tasks(Some(bollard::query_parameters::ListTasksOptions { filters: Some(filters) }))
        .await
        .map_err(|e| format!("cannot list the tasks of service {service}: {e}"))?;
    let mut running = 0;
    for task in &tasks {
        let state = task.status.as_ref().and_then(|s| s.state);
        if state == Some(TaskState::RUNNING) && task.desired_state == Some(TaskState::RUNNING) {
            running += 1;
        }
    }
    Ok(running)
}

static SERVICES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn start_service(
    docker: &Docker,
    name: &str,
    image: &str,
    port: u16,
    env: &[(String, String)],
    labels: &HashMap<String, String>,
) -> Result<(SocketAddr, String), TargetError> {
    use bollard::models::{
        EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum, EndpointSpec,
        ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec,
    };
    match docker.inspect_swarm().await {
        Ok(_) => {}
        Err(_) => {
            return Err(TargetError::Engine(
                "this Docker engine is not part of a swarm; run `docker swarm init` (or use `target: docker`)".into(),
            ));
        }
    }
    if docker.inspect_image(image).await.is_err() {
        return Err(TargetError::ImageMissing(image.to_string()));
    }
    let mut labels = labels.clone();
    labels.insert(exec::docker::OWNER_LABEL.into(), std::process::id().to_string());
    let mut env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.push(format!("PORT={port}"));
    let host_port = process::free_port().map_err(TargetError::Port)?;
    let name = format!("{name}-{}", SERVICES.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let spec = ServiceSpec {
        name: Some(name.clone()),
        labels: Some(labels),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image.to_string()),
                env: Some(env),
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            ports: Some(vec![EndpointPortConfig {
                protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                target_port: Some(i64::from(port)),
                published_port: Some(i64::from(host_port)),
                // The routing mesh needs kernel support many hosts lack; host mode does not.
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_service(spec, None)
        .await
        .map_err(|e| TargetError::Engine(format!("cannot create swarm service {name}: {e}")))?;
    let id = created.id.ok_or_else(|| TargetError::Engine("the engine created a service without an id".into()))?;
    Ok((SocketAddr::from(([127, 0, 0, 1], host_port)), id))
}

/// Removes deployed swarm services of `owner`. Returns how many.
pub async fn reap_services(docker: &Docker, owner: Owner) -> usize {
    let filters = HashMap::from([("label".to_string(), vec![DEPLOY_LABEL.to_string()])]);
    let options = bollard::query_parameters::ListServicesOptions { filters: Some(filters), ..Default::default() };
    let mut n = 0;
    for service in docker.list_services(Some(options)).await.unwrap_or_default() {
        let labels = service.spec.as_ref().and_then(|s| s.labels.as_ref());
        let pid = exec::process::owner_pid(labels);
        if owner.matches(pid)
            && let Some(id) = service.id
        {
            let _ = docker.delete_service(&id).await;
            n += 1;
        }
    }
    n
}
