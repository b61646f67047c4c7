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
        lines: &mpsc::Sender<(Stream, String)>,
        cancel: &Cancel,
    ) -> Exit {
        let config = ExecConfig {
            cmd: Some(spec.argv.clone()),
            env: Some(spec.vars().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: Some(spec.cwd.to_string_lossy().into_owned()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = match self.docker.create_exec(&self.container, config).await {
            Ok(exec) => exec,
            Err(error) => {
                let _ = lines.send((Stream::Stderr, format!("cannot start the step in its container: {error}"))).await;
                return Exit::NotStarted;
            }
        };
        let mut output = match self.docker.start_exec(&exec.id, None).await {
            Ok(bollard::exec::StartExecResults::Attached { output, .. }) => output,
            Ok(bollard::exec::StartExecResults::Detached) => return Exit::NotStarted,
            Err(error) => {
                let _ = lines.send((Stream::Stderr, format!("cannot start the step in its container: {error}"))).await;
                return Exit::NotStarted;
            }
        };
        let timeout = crate::sleep_for(spec.timeout);
        let mut cancel_watch = cancel.clone();
        let mut splitter = LineSplitter::default();
        let pump = async {
            while let Some(Ok(chunk)) = output.next().await {
                splitter.push(chunk, lines).await;
            }
        };
        let interrupted = tokio::select! {
            () = pump => None,
            () = timeout => Some(Exit::TimedOut),
            () = cancel_watch.cancelled() => Some(Exit::Cancelled),
        };
        splitter.finish(lines).await;
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
                        .send((Stream::Stderr, "the step was killed: the container ran out of memory".to_string()))
                        .await;
                }
                Exit::Signal(9)
            }
            Some(code) => Exit::Code(code as i32),
            None => Exit::Code(-1),
        }
    }
}

/// Turns Docker's output frames (stdout and stderr interleaved, lines split anywhere) into lines,
/// each at most [`MAX_LINE_BYTES`](crate::process::MAX_LINE_BYTES) long.
#[derive(Debug, Default)]
pub(super) struct LineSplitter {
    /// What is not yet a whole line: stdout, stderr.
    pub(super) partial: [String; 2],
    /// The line at hand was cut: its rest, up to its newline, is dropped.
    pub(super) cut: [bool; 2],
}

impl LineSplitter {
    pub(super) async fn push(&mut self, chunk: bollard::container::LogOutput, lines: &mpsc::Sender<(Stream, String)>) {
        use crate::process::{CUT_NOTE, MAX_LINE_BYTES};
        let (slot, stream) = match chunk {
            bollard::container::LogOutput::StdErr { .. } => (1, Stream::Stderr),
            _ => (0, Stream::Stdout),
        };
        let buffer = &mut self.partial[slot];
        buffer.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            if std::mem::take(&mut self.cut[slot]) {
                continue;
            }
            let _ = lines.send((stream, line.trim_end_matches(['\n', '\r']).to_string())).await;
        }
        if self.cut[slot] {
            buffer.clear();
        } else if buffer.len() > MAX_LINE_BYTES {
            let mut end = MAX_LINE_BYTES;
            while !buffer.is_char_boundary(end) {
                end -= 1;
            }
            let head = format!("{}{CUT_NOTE}", &buffer[..end]);
            buffer.clear();
            self.cut[slot] = true;
            let _ = lines.send((stream, head)).await;
        }
    }

    /// Sends what is left without a final newline.
    pub(super) async fn finish(self, lines: &mpsc::Sender<(Stream, String)>) {
        for (rest, stream) in self.partial.into_iter().zip([Stream::Stdout, Stream::Stderr]) {
            if !rest.is_empty() {
                let _ = lines.send((stream, rest)).await;
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
        lines: &'a mpsc::Sender<(Stream, String)>,
        cancel: &'a Cancel,
        _groups: &'a ProcessGroups,
    ) -> Pin<Box<dyn Future<Output = (Exit, Option<i32>)> + Send + 'a>> {
        Box::pin(async move { (self.run_inner(spec, lines, cancel).await, None) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_become_lines_and_an_endless_line_is_cut() {
        use bollard::container::LogOutput;
        let (tx, mut rx) = mpsc::channel(16);
        let mut splitter = LineSplitter::default();
        splitter.push(LogOutput::StdOut { message: "one\ntw".into() }, &tx).await;
        splitter.push(LogOutput::StdErr { message: "err\r\n".into() }, &tx).await;
        splitter.push(LogOutput::StdOut { message: "o\n".into() }, &tx).await;
        let long = "x".repeat(crate::process::MAX_LINE_BYTES + 10);
        splitter.push(LogOutput::StdOut { message: long.clone().into() }, &tx).await;
        splitter.push(LogOutput::StdOut { message: "still the long line\nafter\n".into() }, &tx).await;
        splitter.push(LogOutput::StdOut { message: "rest".into() }, &tx).await;
        splitter.finish(&tx).await;
        drop(tx);
        let mut got = Vec::new();
        while let Some(line) = rx.recv().await {
            got.push(line);
        }
        assert_eq!(
            got[..3],
            [(Stream::Stdout, "one".into()), (Stream::Stderr, "err".into()), (Stream::Stdout, "two".into())]
        );
        assert_eq!(got[3].1.len(), crate::process::MAX_LINE_BYTES + crate::process::CUT_NOTE.len());
        assert!(got[3].1.ends_with(crate::process::CUT_NOTE));
        assert_eq!(got[4..], [(Stream::Stdout, "after".into()), (Stream::Stdout, "rest".into())]);
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
        lines: &mpsc::Sender<(Stream, String)>,
        cancel: &Cancel,
    ) -> Exit {
        if let Err(error) = self.engine.ensure_image(&self.image, None).await {
            let _ = lines.send((Stream::Stderr, error.to_string())).await;
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
            env: Some(spec.vars().map(|(k, v)| format!("{k}={v}")).collect()),
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
                let _ = lines.send((Stream::Stderr, format!("cannot create the step's container: {error}"))).await;
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
            let _ = lines.send((Stream::Stderr, format!("cannot start the step's container: {error}"))).await;
            remove().await;
            return Exit::NotStarted;
        }
        let mut logs =
            docker.logs(&id, Some(LogsOptions { follow: true, stdout: true, stderr: true, ..Default::default() }));
        let pump = async {
            let mut splitter = LineSplitter::default();
            while let Some(Ok(chunk)) = logs.next().await {
                splitter.push(chunk, lines).await;
            }
            splitter.finish(lines).await;
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
                    let message = "the step's container ran out of memory and was killed".to_string();
                    let _ = lines.send((Stream::Stderr, message)).await;
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
        lines: &'a mpsc::Sender<(Stream, String)>,
        cancel: &'a Cancel,
        _groups: &'a ProcessGroups,
    ) -> Pin<Box<dyn Future<Output = (Exit, Option<i32>)> + Send + 'a>> {
        Box::pin(async move { (self.run_inner(spec, lines, cancel).await, None) })
    }
}
