//! The `process` target: Tandem runs N instances of a command on ports it assigns (`$PORT`),
//! restarts crashed instances with exponential backoff, and checks readiness over HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcessTarget {
    /// A shell command line; `$PORT` is the instance's port.
    pub command: String,
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
    pub instances: usize,
    /// HTTP path that answers 2xx when an instance is ready, e.g. `/health`.
    pub health_path: String,
    /// A file each started process group id is appended to, so that the next start of a crashed
    /// Tandem can end what it left (`exec`'s journal format: one id a line).
    pub journal: Option<PathBuf>,
}

/// Running instances under supervision. Dropping it does not stop them: call `stop`.
#[derive(Debug)]
pub struct Supervised {
    pub addrs: Vec<SocketAddr>,
    pids: Vec<Arc<AtomicU64>>,
    restarts: Arc<AtomicU64>,
    stopping: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Set when the whole process stops: no supervisor starts anything again.
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// Tells every supervisor in this process to stop restarting (the process is stopping; the
/// caller then ends the instances, e.g. from their journal).
pub fn shutting_down() {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
}

/// A loopback port nothing listens on now.
pub(crate) fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts the instances and keeps them running until `stop`.
pub fn start(target: &ProcessTarget) -> Result<Supervised, crate::TargetError> {
    if target.instances == 0 {
        return Err(crate::TargetError::NoInstances);
    }
    let restarts = Arc::new(AtomicU64::new(0));
    let stopping = Arc::new(AtomicBool::new(false));
    let mut supervised = Supervised {
        addrs: Vec::new(),
        pids: Vec::new(),
        restarts: restarts.clone(),
        stopping: stopping.clone(),
        tasks: Vec::new(),
    };
    for _ in 0..target.instances {
        let port = free_port().map_err(crate::TargetError::Port)?;
        let pid = Arc::new(AtomicU64::new(0));
        supervised.addrs.push(SocketAddr::from(([127, 0, 0, 1], port)));
        supervised.pids.push(pid.clone());
        let (target, restarts, stopping) = (target.clone(), restarts.clone(), stopping.clone());
        supervised.tasks.push(tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                // A stop may come while this waits to restart: then nothing starts again.
                if stopping.load(Ordering::SeqCst) || SHUTTING_DOWN.load(Ordering::SeqCst) {
                    return;
                }
                let started = Instant::now();
                let child = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(&target.command)
                    .current_dir(&target.dir)
                    .envs(target.env.iter().cloned())
                    .env("PORT", port.to_string())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .process_group(0)
                    .kill_on_drop(true)
                    .spawn();
                if let Ok(mut child) = child {
                    pid.store(u64::from(child.id().unwrap_or(0)), Ordering::SeqCst);
                    if let (Some(journal), Some(id)) = (&target.journal, child.id()) {
                        journal_pgid(journal, id);
                    }
                    // A stop that read the pids just before this one was stored missed it.
                    if (stopping.load(Ordering::SeqCst) || SHUTTING_DOWN.load(Ordering::SeqCst))
                        && let Some(id) = child.id()
                    {
                        let _ = nix_killpg(id as i32);
                    }
                    let _ = child.wait().await;
                }
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                // It ended on its own: restart, waiting longer each time it crashes quickly.
                restarts.fetch_add(1, Ordering::SeqCst);
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(100);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }));
    }
    Ok(supervised)
}

fn journal_pgid(journal: &std::path::Path, pgid: u32) {
    use std::io::Write;
    // One write per line: appends from concurrent supervisors never interleave.
    let written = journal
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::OpenOptions::new().create(true).append(true).open(journal))
        .and_then(|mut file| {
            file.write_all(exec::process::journal_line(pgid as i32).as_bytes()).and_then(|()| file.sync_data())
        });
    if let Err(error) = written {
        tracing::error!(
            "cannot journal instance process group {pgid} in {}: it would outlive a crash of the server: {error}",
            journal.display()
        );
    }
}

/// One HTTP GET on loopback; true for a 2xx answer.
pub async fn probe(addr: SocketAddr, path: &str) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.") && head[9] == b'2')
    };
    tokio::time::timeout(Duration::from_secs(2), attempt).await.ok().flatten().unwrap_or(false)
}

impl Supervised {
    /// Waits until every instance answers its health path, or fails after `timeout`.
    pub async fn wait_ready(&self, health_path: &str, timeout: Duration) -> Result<(), crate::TargetError> {
        let deadline = Instant::now() + timeout;
        for addr in &self.addrs {
            while !probe(*addr, health_path).await {
                if Instant::now() > deadline {
                    return Err(crate::TargetError::NotReady {
                        addr: *addr,
                        what: format!("answer {health_path}"),
                        within: timeout,
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// How many times instances were restarted after ending on their own.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::SeqCst)
    }

    /// The process ids of the instances now.
    pub fn pids(&self) -> Vec<u32> {
        self.pids.iter().map(|p| p.load(Ordering::SeqCst) as u32).collect()
    }

    /// Kills instance `index` (its whole process group); the supervisor starts it again.
    pub fn restart(&self, index: usize) {
        if let Some(pid) = self.pids.get(index).map(|p| p.load(Ordering::SeqCst) as i32)
            && pid > 1
        {
            let _ = nix_killpg(pid);
        }
    }

    /// Stops every instance and its children without waiting for the supervisors to end.
    pub fn halt(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.kill_current();
    }

    /// Kills the process group of every instance as it is now.
    fn kill_current(&self) {
        for pid in self.pids().into_iter().filter(|p| *p > 1) {
            let _ = nix_killpg(pid as i32);
        }
    }

    /// Stops every instance and its children; waits until they are gone.
    pub async fn stop(mut self) {
        self.halt();
        for mut task in std::mem::take(&mut self.tasks) {
            // Kill again while waiting: a supervisor may have started its process meanwhile.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match tokio::time::timeout(Duration::from_millis(100), &mut task).await {
                    Ok(_) => break,
                    Err(_) if Instant::now() > deadline => {
                        task.abort();
                        break;
                    }
                    Err(_) => self.kill_current(),
                }
            }
        }
    }
}

fn nix_killpg(pgid: i32) -> nix::Result<()> {
    // Each instance leads its own process group; SIGKILL to the group ends its children too.
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL)
}
