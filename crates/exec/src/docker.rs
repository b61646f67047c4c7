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

/// Splits an `options:` line like a shell would (quotes group words).
pub fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut has_word = false;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => current.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                has_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if has_word || !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                    has_word = false;
                }
            }
            (None, c) => current.push(c),
        }
    }
    if has_word || !current.is_empty() {
        words.push(current);
    }
    words
}

/// `1s`, `500ms`, `2m` → nanoseconds, as the Engine API wants durations.
fn nanos(text: &str) -> Result<i64, String> {
    let (number, unit) = text.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration such as 5s or 500ms"))?;
    let scale = match unit {
        "ns" => 1.0,
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return Err(format!("`{text}` has an unknown unit; use ms, s, m or h")),
    };
    Ok((value * scale) as i64)
}

/// `512m`, `1g`, `1048576` → bytes.
fn bytes(text: &str) -> Result<i64, String> {
    let lower = text.to_ascii_lowercase();
    let (number, scale) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1i64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        Some('b') => (&lower[..lower.len() - 1], 1),
        _ => (lower.as_str(), 1),
    };
    number.parse::<f64>().map(|n| (n * scale as f64) as i64).map_err(|_| format!("`{text}` is not a size such as 512m"))
}

/// Applies `options:` (the `docker create` flags Tandem understands) to a container body.
fn apply_options(options: &str, body: &mut ContainerCreateBody, host: &mut HostConfig) -> Result<(), String> {
    let words = split_words(options);
    let mut health = HealthConfig::default();
    let mut has_health = false;
    let mut i = 0;
    while i < words.len() {
        let (flag, inline) = match words[i].split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_string(), Some(value.to_string())),
            _ => (words[i].clone(), None),
        };
        let mut value = || -> Result<String, String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            i += 1;
            words.get(i).cloned().ok_or_else(|| format!("option `{flag}` needs a value"))
        };
        match flag.as_str() {
            "--cpus" => {
                host.nano_cpus =
                    Some((value()?.parse::<f64>().map_err(|_| "`--cpus` needs a number".to_string())? * 1e9) as i64)
            }
            "-m" | "--memory" => host.memory = Some(bytes(&value()?)?),
            "-u" | "--user" => body.user = Some(value()?),
            "-e" | "--env" => body.env.get_or_insert_with(Vec::new).push(value()?),
            "-w" | "--workdir" => body.working_dir = Some(value()?),
            "--hostname" => body.hostname = Some(value()?),
            "--entrypoint" => body.entrypoint = Some(vec![value()?]),
            "--privileged" => host.privileged = Some(true),
            "--init" => host.init = Some(true),
            "--health-cmd" => {
                health.test = Some(vec!["CMD-SHELL".to_string(), value()?]);
                has_health = true;
            }
            "--health-interval" => health.interval = Some(nanos(&value()?)?),
            "--health-timeout" => health.timeout = Some(nanos(&value()?)?),
            "--health-start-period" => health.start_period = Some(nanos(&value()?)?),
            "--health-retries" => {
                health.retries = Some(value()?.parse().map_err(|_| "`--health-retries` needs a number".to_string())?)
            }
            "--no-healthcheck" => {
                health.test = Some(vec!["NONE".to_string()]);
                has_health = true;
            }
            other => {
                return Err(format!(
                    "container option `{other}` is not supported; supported: --cpus, --memory, --user, --env, --workdir, --hostname, --entrypoint, --privileged, --init, --health-*"
                ));
            }
        }
        i += 1;
    }
    if has_health {
        body.healthcheck = Some(health);
    }
    Ok(())
}

impl DockerEngine {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket) and checks it answers.
    pub async fn connect() -> Result<DockerEngine, String> {
        let docker =
            Docker::connect_with_local_defaults().map_err(|e| format!("cannot reach the Docker engine: {e}"))?;
        match tokio::time::timeout(Duration::from_secs(3), docker.ping()).await {
            Ok(Ok(_)) => Ok(DockerEngine { docker }),
            Ok(Err(e)) => Err(format!(
                "the Docker engine does not answer ({e}); start it (e.g. `dockerd`) or set DOCKER_HOST. Jobs without `container:` or `services:` still run on this machine"
            )),
            Err(_) => {
                Err("the Docker engine did not answer within 3 s; start it (e.g. `dockerd`) or set DOCKER_HOST"
                    .to_string())
            }
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
            let owner = container.labels.as_ref().and_then(|l| l.get(OWNER_LABEL)).and_then(|p| p.parse::<i32>().ok());
            if owner.is_some_and(|pid| !process_alive(pid))
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
            let owner = network.labels.as_ref().and_then(|l| l.get(OWNER_LABEL)).and_then(|p| p.parse::<i32>().ok());
            if owner.is_some_and(|pid| !process_alive(pid))
                && let Some(name) = network.name
                && self.docker.remove_network(&name).await.is_ok()
            {
                n += 1;
            }
        }
        n
    }

    /// Makes sure an image is present, pulling it if not; the error says what to do.
    pub async fn ensure_image(&self, image: &str, credentials: Option<&(String, String)>) -> Result<(), String> {
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
                return Err(format!(
                    "image `{image}` is not present and cannot be pulled ({error}); build or import it on this machine (`docker build`, `docker import`), or push it to a registry this machine reaches"
                ));
            }
        }
        Ok(())
    }

    /// Creates the job's network, starts its services and waits for them to be healthy, then
    /// starts the job container. On failure everything created so far is removed.
    pub async fn start_job(&self, job: &JobContainers) -> Result<JobEnvironment, String> {
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
            self.docker.create_network(request).await.map_err(|e| format!("cannot create the job's network: {e}"))?;
        }
        let mut environment =
            JobEnvironment { docker: self.docker.clone(), network, job_container: None, services: Vec::new() };
        match self.start_containers(job, &mut environment).await {
            Ok(()) => Ok(environment),
            Err(error) => {
                environment.teardown().await;
                Err(error)
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
            let _ = self
                .docker
                .remove_container(id, Some(RemoveContainerOptions { force: true, v: true, ..Default::default() }))
                .await;
        }
        if let Some(network) = &self.network {
            let _ = self.docker.remove_network(network).await;
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

fn process_alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Runs steps inside a job container with `docker exec`.
#[derive(Debug, Clone)]
pub struct ContainerExecutor {
    docker: Docker,
    container: String,
}

impl ContainerExecutor {
    async fn run_inner(
        &self,
        spec: &ProcessSpec,
        lines: &mpsc::UnboundedSender<(Stream, String)>,
        cancel: &Cancel,
    ) -> Exit {
        let config = ExecConfig {
            cmd: Some(spec.argv.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: Some(spec.cwd.to_string_lossy().into_owned()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = match self.docker.create_exec(&self.container, config).await {
            Ok(exec) => exec,
            Err(error) => {
                let _ = lines.send((Stream::Stderr, format!("cannot start the step in its container: {error}")));
                return Exit::NotStarted;
            }
        };
        let mut output = match self.docker.start_exec(&exec.id, None).await {
            Ok(bollard::exec::StartExecResults::Attached { output, .. }) => output,
            Ok(bollard::exec::StartExecResults::Detached) => return Exit::NotStarted,
            Err(error) => {
                let _ = lines.send((Stream::Stderr, format!("cannot start the step in its container: {error}")));
                return Exit::NotStarted;
            }
        };
        let timeout = crate::sleep_for(spec.timeout);
        let mut cancel_watch = cancel.clone();
        let mut splitter = LineSplitter::default();
        let pump = async {
            while let Some(Ok(chunk)) = output.next().await {
                splitter.push(chunk, lines);
            }
        };
        let interrupted = tokio::select! {
            () = pump => None,
            () = timeout => Some(Exit::TimedOut),
            () = cancel_watch.cancelled() => Some(Exit::Cancelled),
        };
        splitter.finish(lines);
        if let Some(exit) = interrupted {
            // Docker cannot signal an exec; kill its process tree from the host.
            if let Ok(Some(pid)) = self.docker.inspect_exec(&exec.id).await.map(|i| i.pid) {
                kill_tree(pid as i32);
            }
            return exit;
        }
        match self.docker.inspect_exec(&exec.id).await.ok().and_then(|i| i.exit_code) {
            Some(137) => {
                let oom = self
                    .docker
                    .inspect_container(&self.container, None)
                    .await
                    .ok()
                    .and_then(|c| c.state)
                    .and_then(|s| s.oom_killed)
                    .unwrap_or(false);
                if oom {
                    let _ = lines
                        .send((Stream::Stderr, "the step was killed: the container ran out of memory".to_string()));
                }
                Exit::Signal(9)
            }
            Some(code) => Exit::Code(code as i32),
            None => Exit::Code(-1),
        }
    }
}

/// Turns Docker's output frames (stdout and stderr interleaved, lines split anywhere) into lines.
#[derive(Debug, Default)]
struct LineSplitter {
    /// What is not yet a whole line: stdout, stderr.
    partial: [String; 2],
}

impl LineSplitter {
    fn push(&mut self, chunk: bollard::container::LogOutput, lines: &mpsc::UnboundedSender<(Stream, String)>) {
        let (slot, stream) = match chunk {
            bollard::container::LogOutput::StdErr { .. } => (1, Stream::Stderr),
            _ => (0, Stream::Stdout),
        };
        let buffer = &mut self.partial[slot];
        buffer.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            let _ = lines.send((stream, line.trim_end_matches(['\n', '\r']).to_string()));
        }
    }

    /// Sends what is left without a final newline.
    fn finish(self, lines: &mpsc::UnboundedSender<(Stream, String)>) {
        for (rest, stream) in self.partial.into_iter().zip([Stream::Stdout, Stream::Stderr]) {
            if !rest.is_empty() {
                let _ = lines.send((stream, rest));
            }
        }
    }
}

/// Kills a process and its descendants (found through /proc), from the host.
fn kill_tree(root: i32) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let mut victims = vec![root];
    let mut i = 0;
    while i < victims.len() {
        let parent = victims[i];
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")) {
            victims.extend(children.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
        i += 1;
    }
    for pid in victims {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

impl Executor for ContainerExecutor {
    fn run<'a>(
        &'a self,
        spec: &'a ProcessSpec,
        lines: &'a mpsc::UnboundedSender<(Stream, String)>,
        cancel: &'a Cancel,
        _groups: &'a ProcessGroups,
    ) -> Pin<Box<dyn Future<Output = (Exit, Option<i32>)> + Send + 'a>> {
        Box::pin(async move { (self.run_inner(spec, lines, cancel).await, None) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_like_a_shell() {
        assert_eq!(
            split_words(r#"--health-cmd "pg_isready -U x" --health-interval=2s -e 'A=b c'"#),
            ["--health-cmd", "pg_isready -U x", "--health-interval=2s", "-e", "A=b c"]
        );
        assert_eq!(split_words("  "), Vec::<String>::new());
        assert_eq!(nanos("500ms"), Ok(500_000_000));
        assert_eq!(bytes("512m"), Ok(512 << 20));
        let (mut body, mut host) = (ContainerCreateBody::default(), HostConfig::default());
        apply_options(
            "--cpus 1.5 --memory 64m --user 1000 --health-cmd 'true' --health-retries 3",
            &mut body,
            &mut host,
        )
        .unwrap();
        assert_eq!(
            (host.nano_cpus, host.memory, body.user.as_deref()),
            (Some(1_500_000_000), Some(64 << 20), Some("1000"))
        );
        assert_eq!(body.healthcheck.as_ref().and_then(|h| h.retries), Some(3));
        assert!(apply_options("--network host", &mut body, &mut host).unwrap_err().contains("not supported"));
    }
}

/// A `uses: docker://IMAGE` step: one container per step, the workspace mounted at the same
/// path, removed when the step ends.
#[derive(Debug, Clone)]
pub struct ImageStep {
    pub engine: DockerEngine,
    pub image: String,
    pub entrypoint: Option<String>,
    pub mounts: Vec<PathBuf>,
    /// The job's network when it has services, so that they are reachable by name.
    pub network: Option<String>,
}

impl ImageStep {
    async fn run_inner(
        &self,
        spec: &ProcessSpec,
        lines: &mpsc::UnboundedSender<(Stream, String)>,
        cancel: &Cancel,
    ) -> Exit {
        if let Err(error) = self.engine.ensure_image(&self.image, None).await {
            let _ = lines.send((Stream::Stderr, error));
            return Exit::NotStarted;
        }
        let docker = &self.engine.docker;
        let binds = self
            .mounts
            .iter()
            .map(|m| if m.is_file() { format!("{0}:{0}:ro", m.display()) } else { format!("{0}:{0}", m.display()) })
            .collect();
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: if spec.argv.is_empty() { None } else { Some(spec.argv.clone()) },
            entrypoint: self.entrypoint.as_ref().map(|e| vec![e.clone()]),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: Some(spec.cwd.to_string_lossy().into_owned()),
            labels: Some(labels(0, "step")),
            host_config: Some(HostConfig {
                binds: Some(binds),
                network_mode: self.network.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = match docker.create_container(None::<CreateContainerOptions>, body).await {
            Ok(created) => created,
            Err(error) => {
                let _ = lines.send((Stream::Stderr, format!("cannot create the step's container: {error}")));
                return Exit::NotStarted;
            }
        };
        let id = created.id;
        let remove = || async {
            let _ = docker
                .remove_container(&id, Some(RemoveContainerOptions { force: true, v: true, ..Default::default() }))
                .await;
        };
        if let Err(error) = docker.start_container(&id, None).await {
            let _ = lines.send((Stream::Stderr, format!("cannot start the step's container: {error}")));
            remove().await;
            return Exit::NotStarted;
        }
        let mut logs =
            docker.logs(&id, Some(LogsOptions { follow: true, stdout: true, stderr: true, ..Default::default() }));
        let pump = async {
            let mut splitter = LineSplitter::default();
            while let Some(Ok(chunk)) = logs.next().await {
                splitter.push(chunk, lines);
            }
            splitter.finish(lines);
        };
        let timeout = crate::sleep_for(spec.timeout);
        let mut cancel_watch = cancel.clone();
        let interrupted = tokio::select! {
            () = pump => None,
            () = timeout => Some(Exit::TimedOut),
            () = cancel_watch.cancelled() => Some(Exit::Cancelled),
        };
        let exit = match interrupted {
            Some(exit) => exit,
            None => {
                let state = docker.inspect_container(&id, None).await.ok().and_then(|c| c.state).unwrap_or_default();
                if state.oom_killed == Some(true) {
                    let _ =
                        lines.send((Stream::Stderr, "the step's container ran out of memory and was killed".into()));
                }
                Exit::Code(state.exit_code.unwrap_or(-1) as i32)
            }
        };
        remove().await;
        exit
    }
}

impl Executor for ImageStep {
    fn run<'a>(
        &'a self,
        spec: &'a ProcessSpec,
        lines: &'a mpsc::UnboundedSender<(Stream, String)>,
        cancel: &'a Cancel,
        _groups: &'a ProcessGroups,
    ) -> Pin<Box<dyn Future<Output = (Exit, Option<i32>)> + Send + 'a>> {
        Box::pin(async move { (self.run_inner(spec, lines, cancel).await, None) })
    }
}

/// An image to build: the context archive, the Dockerfile's path in it, tags (the first names
/// the image), build arguments, labels, and whether to push every tag.
#[derive(Debug, Clone, Default)]
pub struct ImageBuild {
    pub context: Vec<u8>,
    pub dockerfile: String,
    pub tags: Vec<String>,
    pub build_args: HashMap<String, String>,
    pub labels: HashMap<String, String>,
    pub push: bool,
}

/// What an image build produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BuiltImage {
    /// The image's content id (`sha256:…`).
    pub id: String,
    pub tags: Vec<String>,
    /// The registry's manifest digest, once pushed.
    pub digest: Option<String>,
}

/// A build context as a tar archive: every file below `dir` except `.git` and what
/// `.dockerignore` lists (its patterns, `!` exceptions included).
pub fn context_tar(dir: &std::path::Path) -> Result<Vec<u8>, String> {
    let ignore: Vec<String> = std::fs::read_to_string(dir.join(".dockerignore"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .collect();
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let mut failure = None;
    crate::paths::walk(dir, &mut |path| {
        if failure.is_some() {
            return;
        }
        let Ok(relative) = path.strip_prefix(dir) else { return };
        let text = relative.to_string_lossy();
        if text == ".git" || text.starts_with(".git/") {
            return;
        }
        // A directory's pattern also covers what lies below it.
        let ignored = text
            .split('/')
            .scan(String::new(), |prefix, part| {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(part);
                Some(prefix.clone())
            })
            .any(|prefix| ci::filter::list_matches(&ignore, &prefix));
        if ignored || path.is_dir() {
            return;
        }
        if let Err(error) = builder.append_path_with_name(path, relative) {
            failure = Some(format!("cannot add {text} to the build context: {error}"));
        }
    });
    if let Some(error) = failure {
        return Err(error);
    }
    builder.into_inner().map_err(|e| e.to_string())
}

impl DockerEngine {
    /// Builds an image from a context archive, tags it, and pushes the tags when asked. Progress
    /// goes to `log`.
    pub async fn build_and_push(&self, build: ImageBuild, log: &(dyn Fn(&str) + Sync)) -> Result<BuiltImage, String> {
        use bollard::query_parameters::{BuildImageOptions, PushImageOptions, TagImageOptions};
        let ImageBuild { context, dockerfile, tags, build_args, labels, push } = build;
        let mut tags = tags;
        let dockerfile = dockerfile.as_str();
        let options = BuildImageOptions {
            dockerfile: dockerfile.to_string(),
            t: tags.first().cloned(),
            rm: true,
            buildargs: Some(build_args),
            labels: Some(labels),
            ..Default::default()
        };
        let mut stream = self.docker.build_image(options, None, Some(bollard::body_full(context.into())));
        let mut id = None;
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| format!("image build failed: {e}"))?;
            if let Some(error) = info.error_detail.and_then(|d| d.message) {
                return Err(format!("image build failed: {error}"));
            }
            if let Some(text) = info.stream {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    log(line);
                }
            }
            if let Some(image) = info.aux {
                id = image.id.or(id);
            }
        }
        let id = match id {
            Some(id) => id,
            None => self
                .docker
                .inspect_image(tags.first().map(String::as_str).unwrap_or_default())
                .await
                .ok()
                .and_then(|i| i.id)
                .ok_or("the build produced no image")?,
        };
        // Also tagged by content: `repo:sha256-<12 hex of the image id>`.
        if let Some(first) = tags.first() {
            let (repo, _) = split_tag(first);
            let content = id.trim_start_matches("sha256:");
            tags.push(format!("{repo}:sha256-{}", &content[..content.len().min(12)]));
        }
        let tags = tags.as_slice();
        for tag in tags.iter().skip(1) {
            let (repo, version) = split_tag(tag);
            self.docker
                .tag_image(&id, Some(TagImageOptions { repo: Some(repo), tag: Some(version) }))
                .await
                .map_err(|e| format!("cannot tag {tag}: {e}"))?;
        }
        let mut digest = None;
        if push {
            for tag in tags {
                let (repo, version) = split_tag(tag);
                let mut pushing = self.docker.push_image(
                    &repo,
                    Some(PushImageOptions { tag: Some(version.clone()), ..Default::default() }),
                    None,
                );
                while let Some(item) = pushing.next().await {
                    let info = item.map_err(|e| format!("cannot push {tag}: {e}"))?;
                    if let Some(error) = info.error_detail.and_then(|d| d.message) {
                        return Err(format!("cannot push {tag}: {error}"));
                    }
                    if let Some(status) = info.status {
                        // "<tag>: digest: sha256:… size: N"
                        if let Some(found) = status.split_whitespace().skip_while(|w| *w != "digest:").nth(1) {
                            digest = Some(found.to_string());
                            log(&format!("pushed {tag} ({found})"));
                        }
                    }
                }
            }
        }
        Ok(BuiltImage { id, tags: tags.to_vec(), digest })
    }
}

/// `host:5000/team/app:1.2` → (`host:5000/team/app`, `1.2`); no tag means `latest`.
pub fn split_tag(reference: &str) -> (String, String) {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
        _ => (reference.to_string(), "latest".to_string()),
    }
}
