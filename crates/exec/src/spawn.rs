//! Starting a step's process with `posix_spawn` directly, where std's `Command` would copy the
//! whole environment into maps of its own for every process (a third of what a trivial step cost
//! Tandem). Tandem's own variables are turned into `NAME=value` strings once; a process gets those
//! it does not override and its own. Its working directory is set on the calling thread, which has
//! a working directory of its own for that (`unshare(CLONE_FS)`, once per thread), and set back
//! right after the start. Only a program named by an absolute path starts here, on a kernel with
//! pidfds and where a thread may have its own working directory; [`start`] says `None` otherwise,
//! and the caller uses `Command`.

use std::cell::RefCell;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::OnceLock;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawn};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe::Receiver;

use crate::process::{ProcessSpec, own_environment};

/// A process started by [`start`]: its output pipes and a handle to wait for it. Dropped before it
/// was waited for, it is killed (as `kill_on_drop` does for `Command`) and reaped on a thread.
pub struct Child {
    pid: Pid,
    exit: Option<ExitStatus>,
    pidfd: AsyncFd<OwnedFd>,
    /// The output pipes, not yet watched by the runtime (see [`Child::take_output`]).
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
}

impl Child {
    pub fn id(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// The output pipes, from now on watched by the runtime. Until they are taken, output only
    /// fills the pipes (64 KiB each before the process waits): a short step that is waited for
    /// first wakes Tandem once, when it ends, instead of once more for each write.
    pub fn take_output(&mut self) -> io::Result<(Option<Receiver>, Option<Receiver>)> {
        let receiver = |fd: OwnedFd| Receiver::from_owned_fd_unchecked(fd);
        Ok((self.stdout.take().map(receiver).transpose()?, self.stderr.take().map(receiver).transpose()?))
    }

    /// Waits for the process to end, and reaps it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(exit) = self.exit {
            return Ok(exit);
        }
        loop {
            let mut ready = self.pidfd.readable().await?;
            match waitid(Id::PIDFd(self.pidfd.get_ref().as_fd()), WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG) {
                Ok(WaitStatus::StillAlive) => ready.clear_ready(),
                Ok(status) => {
                    let exit = match status {
                        WaitStatus::Exited(_, code) => ExitStatus::from_raw((code & 0xff) << 8),
                        WaitStatus::Signaled(_, signal, _) => ExitStatus::from_raw(signal as i32),
                        _ => {
                            ready.clear_ready();
                            continue;
                        }
                    };
                    self.exit = Some(exit);
                    return Ok(exit);
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.exit.is_some() {
            return;
        }
        let _ = kill(self.pid, Signal::SIGKILL);
        let pid = self.pid;
        // Reaped on a thread of its own: a process in the middle of dying may take a moment, and a
        // drop must not wait. Without a thread, the process stays a zombie until Tandem exits.
        let reaper = std::thread::Builder::new().name("reaper".into()).spawn(move || {
            let _ = nix::sys::wait::waitpid(pid, None);
        });
        if let Err(error) = reaper {
            tracing::warn!("process {pid} was killed but cannot be reaped: {error}");
        }
    }
}

/// Tandem's own variables as `NAME=value`, with their names (those that are not UTF-8 are left
/// out, as expressions cannot see them).
fn own_entries() -> &'static [(String, CString)] {
    static ENTRIES: OnceLock<Vec<(String, CString)>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        own_environment()
            .vars
            .iter()
            .filter_map(|(key, value)| Some((key.clone(), CString::new(format!("{key}={value}")).ok()?)))
            .collect()
    })
}

/// Where a thread goes back to after starting a process in another directory.
enum Home {
    /// Not asked yet.
    Unknown,
    /// The thread has a working directory of its own; this is where it was.
    Own(OwnedFd),
    /// The thread cannot have one of its own (a sandbox that refuses `unshare`): processes start
    /// through `Command`.
    Shared,
}

thread_local! {
    static HOME: RefCell<Home> = const { RefCell::new(Home::Unknown) };
}

/// Whether processes can start here: the kernel has pidfds (5.3 and later), and this thread can
/// have a working directory of its own.
fn available() -> bool {
    static PIDFDS: OnceLock<bool> = OnceLock::new();
    let pidfds = *PIDFDS.get_or_init(|| {
        rustix::process::pidfd_open(rustix::process::getpid(), rustix::process::PidfdFlags::empty()).is_ok()
    });
    pidfds
        && HOME.with(|home| {
            let mut home = home.borrow_mut();
            if matches!(*home, Home::Unknown) {
                let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
                *home = match nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS) {
                    Ok(()) => match nix::fcntl::open(".", flags, nix::sys::stat::Mode::empty()) {
                        Ok(here) => Home::Own(here),
                        Err(_) => Home::Shared,
                    },
                    Err(_) => Home::Shared,
                };
            }
            matches!(*home, Home::Own(_))
        })
}

/// Runs `start` with this thread in `dir`, and puts it back where it was (see [`available`]).
fn in_directory<T>(dir: &Path, start: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    HOME.with(|home| {
        let home = home.borrow();
        let Home::Own(here) = &*home else {
            return Err(io::Error::other("this thread has no working directory of its own"));
        };
        nix::unistd::chdir(dir)?;
        let started = start();
        if let Err(error) = nix::unistd::fchdir(here) {
            // Only relative paths used on this thread could notice; nothing here uses them.
            tracing::error!("cannot go back to the working directory after starting a process: {error}");
        }
        started
    })
}

/// `/dev/null`, opened once, for every process's input.
fn null_input() -> io::Result<&'static std::fs::File> {
    static NULL: OnceLock<std::fs::File> = OnceLock::new();
    if let Some(file) = NULL.get() {
        return Ok(file);
    }
    let file = std::fs::File::open("/dev/null")?;
    Ok(NULL.get_or_init(|| file))
}

/// Starts `spec` with its output piped, in a process group of its own, or `None` when it names its
/// program by a relative name (which `Command` looks for on the right `PATH`) or processes cannot
/// start here (see [`available`]).
pub fn start(spec: &ProcessSpec) -> Option<io::Result<Child>> {
    let program = spec.argv.first()?;
    if !program.starts_with('/') || !available() {
        return None;
    }
    Some(start_absolute(spec))
}

/// The error for an argument or a variable that holds a NUL byte, which no process can be given.
fn nul_inside() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "an argument or variable holds a NUL byte")
}

fn start_absolute(spec: &ProcessSpec) -> io::Result<Child> {
    let argv: Vec<CString> =
        spec.argv.iter().map(|a| CString::new(a.as_bytes())).collect::<Result<_, _>>().map_err(|_| nul_inside())?;
    // The step's variables as `NAME=value` strings laid end to end in one buffer, each ended by
    // its NUL: one allocation for all of them, where a string each cost a step dozens.
    let size: usize = spec.env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut added: Vec<u8> = Vec::with_capacity(size);
    for (key, value) in &spec.env {
        added.extend_from_slice(key.as_bytes());
        added.push(b'=');
        added.extend_from_slice(value.as_bytes());
        added.push(0);
    }
    let base = &spec.base;
    let mut envp: Vec<&std::ffi::CStr> =
        Vec::with_capacity(spec.env.len() + base.vars().len() + if spec.inherit { own_entries().len() } else { 0 });
    let ours = |key: &String| spec.env.contains_key(key) || base.vars().contains_key(key);
    if spec.inherit {
        envp.extend(own_entries().iter().filter(|(key, _)| !ours(key)).map(|(_, kv)| kv.as_c_str()));
    }
    for (key, entry) in base.entries() {
        if !spec.env.contains_key(key) {
            envp.push(entry.ok_or_else(nul_inside)?);
        }
    }
    // Each entry is a string that ends at its own NUL; a NUL inside a name or a value is refused.
    let mut rest = added.as_slice();
    for (key, value) in &spec.env {
        let (entry, after) = rest.split_at_checked(key.len() + value.len() + 2).ok_or_else(nul_inside)?;
        envp.push(std::ffi::CStr::from_bytes_with_nul(entry).map_err(|_| nul_inside())?);
        rest = after;
    }

    let null = null_input()?;
    let (out_read, out_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (err_read, err_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let mut actions = PosixSpawnFileActions::init()?;
    actions.add_dup2(null.as_raw_fd(), 0)?;
    actions.add_dup2(out_write.as_raw_fd(), 1)?;
    actions.add_dup2(err_write.as_raw_fd(), 2)?;
    let mut attr = PosixSpawnAttr::init()?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETPGROUP
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )?;
    attr.set_pgroup(Pid::from_raw(0))?;
    attr.set_sigmask(&SigSet::empty())?;
    let mut default = SigSet::empty();
    default.add(Signal::SIGPIPE);
    attr.set_sigdefault(&default)?;
    let pid = in_directory(&spec.cwd, || Ok(posix_spawn(argv[0].as_c_str(), &actions, &attr, &argv, &envp)?))?;
    drop((out_write, err_write));
    let child_pid = rustix::process::Pid::from_raw(pid.as_raw())
        .ok_or_else(|| io::Error::other(format!("posix_spawn gave the process id {pid}")))?;
    let pidfd = rustix::process::pidfd_open(child_pid, rustix::process::PidfdFlags::NONBLOCK)?;
    let nonblocking = |fd: OwnedFd| -> io::Result<OwnedFd> {
        fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        Ok(fd)
    };
    // `AsyncFd::new` is deprecated because a borrowed descriptor could be closed while it is
    // registered; this one is owned by the `AsyncFd` and closed only when it is dropped.
    #[allow(deprecated)]
    let pidfd = AsyncFd::new(pidfd)?;
    Ok(Child { pid, exit: None, pidfd, stdout: Some(nonblocking(out_read)?), stderr: Some(nonblocking(err_read)?) })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use tokio::io::AsyncReadExt;

    use super::*;

    fn spec(script: &str, cwd: &Path, env: &[(&str, &str)], inherit: bool) -> ProcessSpec {
        ProcessSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            inherit,
            base: Default::default(),
            cwd: cwd.to_path_buf(),
            timeout: None,
        }
    }

    async fn output(child: &mut Child) -> (String, String, ExitStatus) {
        let (mut out, mut err) = (String::new(), String::new());
        let (stdout, stderr) = child.take_output().unwrap();
        stdout.unwrap().read_to_string(&mut out).await.unwrap();
        stderr.unwrap().read_to_string(&mut err).await.unwrap();
        (out, err, child.wait().await.unwrap())
    }

    #[tokio::test]
    async fn a_process_starts_in_its_folder_with_its_variables_and_the_caller_stays_where_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let before = std::env::current_dir().unwrap();
        let script =
            "pwd; echo \"$ADDED|$HOME|$PATH|$FROM_BASE|$LANG\"; echo oops >&2; read line || echo no-input; exit 3";
        let mut with_base = spec(script, dir.path(), &[("ADDED", "yes"), ("HOME", "/elsewhere")], true);
        // The run's base variables come over Tandem's own and under the step's.
        let base = [("FROM_BASE", "b"), ("ADDED", "the step's wins"), ("LANG", "base-lang")];
        with_base.base = std::sync::Arc::new(crate::process::BaseEnvironment::new(
            base.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ));
        let mut child = start(&with_base).unwrap().unwrap();
        let (out, err, status) = output(&mut child).await;
        let path = own_environment().vars.get("PATH").cloned().unwrap_or_default();
        let expected =
            format!("{}\nyes|/elsewhere|{path}|b|base-lang\nno-input\n", dir.path().canonicalize().unwrap().display());
        assert_eq!(out, expected);
        assert_eq!((err.as_str(), status.code()), ("oops\n", Some(3)));
        // The calling thread is back where it was, and so is every other thread.
        assert_eq!(std::env::current_dir().unwrap(), before);
        let elsewhere = std::thread::spawn(|| std::env::current_dir().unwrap()).join().unwrap();
        assert_eq!(elsewhere, before);

        // Without inheriting, a process has only what it is given.
        let mut alone = spec("", dir.path(), &[("ONLY", "1")], false);
        alone.argv = vec!["/usr/bin/env".into()];
        let mut child = start(&alone).unwrap().unwrap();
        assert_eq!(output(&mut child).await.0, "ONLY=1\n");
    }

    #[tokio::test]
    async fn a_process_leads_its_own_group_and_its_end_by_a_signal_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = start(&spec("ps -o pgid= -p $$; kill -TERM $$", dir.path(), &[], true)).unwrap().unwrap();
        let id = child.id();
        let (out, _, status) = output(&mut child).await;
        assert_eq!(out.trim(), id.to_string());
        assert_eq!((status.code(), status.signal()), (None, Some(15)));
    }

    #[tokio::test]
    async fn what_cannot_start_says_why_and_a_relative_program_is_left_to_command() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone");
        let error = start(&spec("true", &missing, &[], true)).unwrap().err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        let mut no_program = spec("", dir.path(), &[], true);
        no_program.argv = vec![dir.path().join("no-such-program").display().to_string()];
        assert_eq!(start(&no_program).unwrap().err().unwrap().kind(), io::ErrorKind::NotFound);
        no_program.argv = vec!["sh".into()];
        assert!(start(&no_program).is_none());
        // A NUL byte cannot be handed to a process, in a variable's value or in its name.
        for env in [[("GOOD", "1"), ("BAD", "a\0b")], [("GOOD", "1"), ("B\0AD", "x")]] {
            let error = start(&spec("true", dir.path(), &env, false)).unwrap().err().unwrap();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{env:?}");
        }
    }

    #[tokio::test]
    async fn a_process_dropped_before_its_end_is_killed_and_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let child = start(&spec("sleep 30", dir.path(), &[], true)).unwrap().unwrap();
        let proc_dir = PathBuf::from(format!("/proc/{}", child.id()));
        drop(child);
        // Killed, and reaped: its entry in /proc goes (a zombie's would stay).
        let mut gone = false;
        for _ in 0..200 {
            if !proc_dir.exists() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(gone, "{} is still there", proc_dir.display());
    }
}
