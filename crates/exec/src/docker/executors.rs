//! Steps in containers: `ContainerExecutor` (by exec in the job container) and `ImageStep` (`docker://` steps, one container each).

#[allow(unused_imports)]
use super::*;

/// Runs steps inside a job container with `docker exec`.
#[derive(Debug, Clone)]
pub struct ContainerExecutor {
    pub(super) docker: Docker,
    pub(super) container: String,
}

impl ContainerExecutor {
    pub(super) async fn run_inner(
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
pub(super) struct LineSplitter {
    /// What is not yet a whole line: stdout, stderr.
    pub(super) partial: [String; 2],
}

impl LineSplitter {
    pub(super) fn push(
        &mut self,
        chunk: bollard::container::LogOutput,
        lines: &mpsc::UnboundedSender<(Stream, String)>,
    ) {
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
    pub(super) fn finish(self, lines: &mpsc::UnboundedSender<(Stream, String)>) {
        for (rest, stream) in self.partial.into_iter().zip([Stream::Stdout, Stream::Stderr]) {
            if !rest.is_empty() {
                let _ = lines.send((stream, rest));
            }
        }
    }
}

/// Kills a process and its descendants (found through /proc), from the host.
pub(super) fn kill_tree(root: i32) {
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
    pub(super) fn options_split_like_a_shell() {
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
    pub(super) async fn run_inner(
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
