//! Running one command as a local process in its own process group, streaming its output line by
//! line, and killing the whole group on timeout or cancel.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::Cancel;

/// The longest output line kept whole; a longer one is cut there, with [`CUT_NOTE`], so that a
/// process writing without newlines cannot exhaust memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
pub const CUT_NOTE: &str = " … [line cut at 64 KiB]";
/// Output lines in flight between a process and whoever logs them: a slow reader slows the
/// process (its pipe fills), instead of lines piling up in memory.
pub const LINE_BUFFER: usize = 1024;
/// How much of a process's output is read at a time: a little at first, as most steps write a
/// few lines (and a request of a kilobyte or more makes the allocator tidy up its free lists), then
/// more once a read fills what it had.
const FIRST_READ: usize = 512;
const READ_CHUNK: usize = 8 * 1024;

/// Time a process group gets between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(3);
/// How long a started step's output is left in its pipes, unread, unless it ends sooner.
const QUIET_START: Duration = Duration::from_millis(10);

/// A command to run: argv, environment, working directory.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    /// The process's variables: the whole of its environment, or with `inherit`, what it adds to
    /// Tandem's own (a step on this machine gets Tandem's environment and a few dozen variables
    /// more; copying the rest for every step was the largest cost of a trivial one).
    pub env: BTreeMap<String, String>,
    /// Whether the process starts from Tandem's own environment. Only a process on this machine
    /// can: an executor that runs elsewhere (a container) gives it `env` alone.
    pub inherit: bool,
    /// Variables every step of a run gets, made once for the run; `env` has the last word.
    pub base: Arc<BaseEnvironment>,
    pub cwd: PathBuf,
    pub timeout: Option<Duration>,
}

impl ProcessSpec {
    /// Every variable the spec names: those of `base` that `env` does not override, then `env`.
    pub fn vars(&self) -> impl Iterator<Item = (&String, &String)> {
        self.base.vars.iter().filter(|(key, _)| !self.env.contains_key(*key)).chain(&self.env)
    }
}

/// Variables shared by every step of a run (`GITHUB_SHA`, `RUNNER_OS`…), each also as the
/// `NAME=value` string a process is given: made once, where each step made its own copies.
#[derive(Debug, Default)]
pub struct BaseEnvironment {
    vars: BTreeMap<String, String>,
    /// `NAME=value` for each of `vars`, in its order; `None` where a NUL byte makes that impossible.
    entries: Vec<Option<std::ffi::CString>>,
}

impl BaseEnvironment {
    pub fn new(vars: BTreeMap<String, String>) -> BaseEnvironment {
        let entries = vars.iter().map(|(key, value)| std::ffi::CString::new(format!("{key}={value}")).ok()).collect();
        BaseEnvironment { vars, entries }
    }

    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.vars
    }

    /// Each variable with its `NAME=value` string (`None`: it holds a NUL byte).
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&String, Option<&std::ffi::CStr>)> {
        self.vars.keys().zip(self.entries.iter().map(Option::as_deref))
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    TimedOut,
    Cancelled,
    /// It could not be started (the message went to the output).
    NotStarted,
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

/// Whether a process runs (a zombie does not count): the one liveness test for owners of
/// containers, services, journals and servers.
pub fn pid_alive(pid: i32) -> bool {
    pid > 0
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"))
}

/// The owning Tandem's pid, from the owner label of a container, network or service.
pub fn owner_pid(labels: Option<&std::collections::HashMap<String, String>>) -> Option<i32> {
    labels.and_then(|l| l.get(crate::docker::OWNER_LABEL)).and_then(|p| p.parse::<i32>().ok())
}

/// Who a process is, beyond its id: this boot's id and the process's start time (clock ticks
/// after boot). A journal line names a process by both, so that after a reboot — or once the id
/// was given to another process — nothing but the journaled process is killed.
pub fn process_identity(pid: i32) -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) end at its last `)`: state is field 3,
    // start time field 22.
    let start = stat.rsplit(')').next()?.split_whitespace().nth(19)?;
    Some(format!("{}:{start}", boot.trim()))
}

/// A journal line for process group `pgid`: its id and its leader's identity.
pub fn journal_line(pgid: i32) -> String {
    match process_identity(pgid) {
        Some(identity) => format!("{pgid} {identity}\n"),
        None => format!("{pgid}\n"),
    }
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Process groups that are alive, so that an interrupted `tandem` can kill them all. With a
/// journal file, every group is also written down before it can outlive us, so that the next
/// start can kill what a crashed process left (`kill_journaled`).
#[derive(Debug, Clone, Default)]
pub struct ProcessGroups {
    pgids: Arc<Mutex<Vec<i32>>>,
    journal: Option<PathBuf>,
}

impl ProcessGroups {
    pub fn with_journal(path: PathBuf) -> ProcessGroups {
        ProcessGroups { pgids: Arc::default(), journal: Some(path) }
    }

    fn add(&self, pgid: i32) {
        if let Ok(mut pgids) = self.pgids.lock() {
            pgids.push(pgid);
        }
        if let Some(journal) = &self.journal {
            use std::io::Write;
            // One write per line: appends from concurrent steps never interleave.
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(journal)
                .and_then(|mut file| file.write_all(journal_line(pgid).as_bytes()).and_then(|()| file.sync_data()));
            if let Err(error) = written {
                tracing::error!(
                    "cannot journal process group {pgid} in {}: it would outlive a crash of Tandem: {error}",
                    journal.display()
                );
            }
        }
    }

    /// Kills every process group named in the journal files of `dir` and deletes the files.
    /// Returns how many groups were still alive.
    pub fn kill_journaled(dir: &std::path::Path) -> usize {
        let mut n_alive = 0;
        let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for line in text.lines() {
                let mut words = line.split_whitespace();
                let Some(pgid) = words.next().and_then(|p| p.parse::<i32>().ok()).filter(|p| *p > 1) else { continue };
                // A group whose leader is not the journaled process (a reboot, a reused id) is
                // someone else's: left alone. Lines of older versions name no identity.
                if let Some(identity) = words.next()
                    && process_identity(pgid).as_deref() != Some(identity)
                {
                    continue;
                }
                if killpg(Pid::from_raw(pgid), Signal::SIGKILL).is_ok() {
                    n_alive += 1;
                }
            }
            let _ = std::fs::remove_file(entry.path());
        }
        n_alive
    }

    /// Forgets the journal (after a run ended and its groups were killed).
    pub fn close_journal(&self) {
        if let Some(journal) = &self.journal {
            let _ = std::fs::remove_file(journal);
        }
    }

    /// Kills every group registered so far with SIGKILL. Safe to call twice.
    pub fn kill_all(&self) {
        let pgids = match self.pgids.lock() {
            Ok(mut pgids) => std::mem::take(&mut *pgids),
            Err(_) => return,
        };
        for pgid in pgids {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }

    /// Kills the given groups (a job's leftovers) and forgets them.
    pub fn kill(&self, groups: &[i32]) {
        if let Ok(mut pgids) = self.pgids.lock() {
            pgids.retain(|p| !groups.contains(p));
        }
        for &pgid in groups {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

/// Tandem's own environment, read once, as nothing in Tandem changes it: the variables steps on
/// this machine inherit, and the names of those that are not UTF-8 (which expressions cannot see,
/// and which a step's environment therefore never holds).
pub struct OwnEnvironment {
    pub vars: BTreeMap<String, String>,
    pub not_utf8: Vec<std::ffi::OsString>,
}

pub fn own_environment() -> &'static OwnEnvironment {
    static ENVIRONMENT: std::sync::OnceLock<OwnEnvironment> = std::sync::OnceLock::new();
    ENVIRONMENT.get_or_init(|| {
        let mut own = OwnEnvironment { vars: BTreeMap::new(), not_utf8: Vec::new() };
        for (key, value) in std::env::vars_os() {
            match (key.into_string(), value.into_string()) {
                (Ok(key), Ok(value)) => {
                    own.vars.insert(key, value);
                }
                (Ok(key), Err(_)) => own.not_utf8.push(key.into()),
                (Err(key), _) => own.not_utf8.push(key),
            }
        }
        own
    })
}

/// Gives `command` the environment `spec` describes. Inheriting, only what differs from Tandem's
/// own environment (which a child gets unasked) is named: std copies every variable it is given
/// into maps of its own at each spawn.
fn set_environment(command: &mut Command, spec: &ProcessSpec) {
    let own = own_environment();
    if !spec.inherit {
        command.env_clear();
        command.envs(spec.vars());
        return;
    }
    for (key, value) in spec.vars() {
        if own.vars.get(key) != Some(value) {
            command.env(key, value);
        }
    }
    // What expressions cannot see, a step does not get either.
    for key in &own.not_utf8 {
        command.env_remove(key);
    }
}

/// `/dev/null` for a step's input: a copy of a handle opened once, which spares the file system a
/// lookup per step.
fn null_input() -> Stdio {
    static DEV_NULL: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    let opened = DEV_NULL.get_or_init(|| std::fs::File::open("/dev/null").ok());
    opened.as_ref().and_then(|file| file.try_clone().ok()).map_or_else(Stdio::null, Stdio::from)
}

/// Runs `spec` to completion. Every output line goes to `lines`. Returns the exit and the process
/// group id (which may still hold background children the caller decides to kill later).
pub async fn run(
    spec: &ProcessSpec,
    lines: &mpsc::Sender<(Stream, String)>,
    cancel: &Cancel,
    groups: &ProcessGroups,
) -> (Exit, Option<i32>) {
    let Some((program, args)) = spec.argv.split_first() else {
        let _ = lines.send((Stream::Stderr, "empty command line".to_string())).await;
        return (Exit::NotStarted, None);
    };
    let started = match crate::spawn::start(spec) {
        Some(started) => started.map(Running::Direct),
        None => {
            let mut command = Command::new(program);
            command.args(args);
            set_environment(&mut command, spec);
            command
                .current_dir(&spec.cwd)
                .stdin(null_input())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .kill_on_drop(true);
            command.spawn().map(Running::Tokio)
        }
    };
    let mut child = match started {
        Ok(child) => child,
        Err(error) => {
            let hint = if error.kind() == std::io::ErrorKind::NotFound {
                if spec.cwd.is_dir() {
                    format!("`{program}` was not found on PATH; install it or pick another `shell`")
                } else {
                    format!("working directory {} does not exist", spec.cwd.display())
                }
            } else {
                String::new()
            };
            let _ = lines.send((Stream::Stderr, format!("cannot start `{program}`: {error}. {hint}"))).await;
            return (Exit::NotStarted, None);
        }
    };
    let pgid = child.id().map(|id| id as i32);
    if let Some(pgid) = pgid {
        groups.add(pgid);
    }
    // Most steps end within moments: their output waits in the pipes until they have, and is
    // read then, so that Tandem wakes once for such a step rather than for each of its writes
    // as well. A step that runs longer has its output read as it comes after `QUIET_START`
    // (a live log that late is not noticed; a step that fills a pipe before waits that long).
    if matches!(child, Running::Direct(_)) {
        tokio::select! {
            _ = child.wait() => {}
            () = tokio::time::sleep(QUIET_START) => {}
        }
    }
    // The two readers run inside this task, beside the wait: a step's output and its exit arrive
    // on the same thread, without a task of their own to start and wake for each stream.
    let (stdout, stderr) = match child.take_output() {
        Ok(output) => output,
        Err(error) => {
            let _ = lines.send((Stream::Stderr, format!("cannot read the step's output: {error}"))).await;
            (None, None)
        }
    };
    let stdout = stdout.map(|s| forward(s, Stream::Stdout, lines.clone()));
    let stderr = stderr.map(|s| forward(s, Stream::Stderr, lines.clone()));
    let mut readers = Box::pin(async move {
        tokio::join!(
            async {
                if let Some(reader) = stdout {
                    reader.await;
                }
            },
            async {
                if let Some(reader) = stderr {
                    reader.await;
                }
            }
        );
    });
    let mut readers_done = false;
    let timeout = crate::sleep_for(spec.timeout);
    tokio::pin!(timeout);
    let mut cancel_watch = cancel.clone();
    let exit = loop {
        tokio::select! {
            () = &mut readers, if !readers_done => readers_done = true,
            status = child.wait() => break match status {
                Ok(status) => match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
                    (Some(code), _) => Exit::Code(code),
                    (None, Some(signal)) => Exit::Signal(signal),
                    (None, None) => Exit::Code(-1),
                },
                Err(_) => Exit::Code(-1),
            },
            () = &mut timeout => break Exit::TimedOut,
            () = cancel_watch.cancelled() => break Exit::Cancelled,
        }
    };
    if matches!(exit, Exit::TimedOut | Exit::Cancelled)
        && let Some(pgid) = pgid
    {
        terminate_group(pgid, &mut child).await;
    }
    // Output still buffered in the pipes arrives shortly after exit; a background child that keeps
    // the pipe open must not hold this call, so the readers get a short grace period here and then
    // go on in a task of their own (which ends when the group is killed or closes the pipe).
    if !readers_done && tokio::time::timeout(Duration::from_millis(500), &mut readers).await.is_err() {
        tokio::spawn(readers);
    }
    (exit, pgid)
}

/// A started process, by `posix_spawn` or by `Command`.
enum Running {
    Direct(crate::spawn::Child),
    Tokio(tokio::process::Child),
}

type Output = Box<dyn AsyncRead + Unpin + Send>;

impl Running {
    fn id(&self) -> Option<u32> {
        match self {
            Running::Direct(child) => Some(child.id()),
            Running::Tokio(child) => child.id(),
        }
    }

    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Running::Direct(child) => child.wait().await,
            Running::Tokio(child) => child.wait().await,
        }
    }

    fn take_output(&mut self) -> std::io::Result<(Option<Output>, Option<Output>)> {
        Ok(match self {
            Running::Direct(child) => {
                let (stdout, stderr) = child.take_output()?;
                (stdout.map(|s| Box::new(s) as Output), stderr.map(|s| Box::new(s) as Output))
            }
            Running::Tokio(child) => {
                (child.stdout.take().map(|s| Box::new(s) as Output), child.stderr.take().map(|s| Box::new(s) as Output))
            }
        })
    }
}

async fn terminate_group(pgid: i32, child: &mut Running) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
    if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_err() {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        let _ = child.wait().await;
    }
    // Whatever else lives in the group goes too.
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
}

async fn forward(mut stream: impl AsyncRead + Unpin, which: Stream, lines: mpsc::Sender<(Stream, String)>) {
    // Read into spare capacity: a buffer that is zeroed first (as `BufReader`'s is) costs a
    // trivial step more than its output.
    let mut buffer: Vec<u8> = Vec::with_capacity(FIRST_READ);
    let mut line: Vec<u8> = Vec::new();
    // The line at hand was cut at its limit: the rest of it, up to its newline, is dropped.
    let mut cut = false;
    loop {
        buffer.clear();
        match stream.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) if n == buffer.capacity() && n < READ_CHUNK => buffer.reserve_exact(READ_CHUNK),
            Ok(_) => {}
        }
        let mut available = &buffer[..];
        while !available.is_empty() {
            let newline = available.iter().position(|b| *b == b'\n');
            let taken = newline.map_or(available.len(), |at| at + 1);
            let mut done = None;
            if cut {
                // The rest of a line already sent cut: dropped up to its newline.
                cut = newline.is_none();
            } else {
                let part = &available[..newline.unwrap_or(available.len())];
                let room = MAX_LINE_BYTES - line.len();
                if part.len() > room {
                    line.extend_from_slice(&part[..room]);
                    done = Some(finish_line(&mut line, true));
                    cut = newline.is_none();
                } else {
                    line.extend_from_slice(part);
                    if newline.is_some() {
                        done = Some(finish_line(&mut line, false));
                    }
                }
            }
            available = &available[taken..];
            if let Some(text) = done
                && lines.send((which, text)).await.is_err()
            {
                return;
            }
        }
    }
    if !line.is_empty() {
        let _ = lines.send((which, finish_line(&mut line, false))).await;
    }
}

/// The text of a line (without its `\r`), noting where it was cut; empties `line`.
fn finish_line(line: &mut Vec<u8>, cut: bool) -> String {
    while line.last() == Some(&b'\r') {
        line.pop();
    }
    let mut text = String::from_utf8_lossy(line).into_owned();
    line.clear();
    if cut {
        text.push_str(CUT_NOTE);
    }
    text
}

#[cfg(test)]
mod journal {
    /// A journaled group whose leader is gone and whose id now names another process is left
    /// alone; the journaled one itself is killed.
    #[test]
    fn only_the_journaled_process_is_killed() {
        let dir = std::env::temp_dir().join(format!("tandem-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let spawn = || {
            use std::os::unix::process::CommandExt;
            std::process::Command::new("sleep").arg("30").process_group(0).spawn().unwrap()
        };
        let (mut journaled, mut other) = (spawn(), spawn());
        let (a, b) = (journaled.id() as i32, other.id() as i32);
        // `b` stands for a process that took a journaled id: its line names an older identity.
        let stale = super::process_identity(b).unwrap().replace(':', ":1");
        std::fs::write(dir.join("run-1"), format!("{}{b} {stale}\n", super::journal_line(a))).unwrap();
        assert_eq!(super::ProcessGroups::kill_journaled(&dir), 1);
        assert!(journaled.wait().unwrap().code().is_none(), "the journaled process was killed");
        assert!(other.try_wait().unwrap().is_none(), "the other one lives");
        let _ = other.kill();
        let _ = other.wait();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
