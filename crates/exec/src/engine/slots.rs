//! Job slots: the directories a job works in, reused from one job to the next, and the stamps
//! that tell with one `stat` whether a job left them empty.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::paths::DirStamp;

/// Job directories, reused from one job to the next as a runner reuses its work folder:
/// creating and deleting directories for every job is the largest cost of short jobs.
#[derive(Debug, Default)]
pub(super) struct WorkspacePool {
    pub(super) free: std::sync::Mutex<Vec<(PathBuf, Option<Handle>)>>,
    pub(super) n_made: std::sync::atomic::AtomicUsize,
}

impl WorkspacePool {
    /// A clean directory for one job, and whether it was used before (its folders exist then);
    /// `keep` gives each job its own, named after it, to inspect later.
    pub(super) fn take(&self, run_dir: &Path, name: &str, keep: bool) -> (PathBuf, Option<Handle>, bool) {
        if keep {
            let slug: String =
                name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
            let n = self.n_made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return (run_dir.join("jobs").join(format!("{slug}-{n}")), None, false);
        }
        if let Some((slot, handle)) = self.free.lock().ok().and_then(|mut free| free.pop()) {
            return (slot, handle, true);
        }
        let n = self.n_made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (slot_dir(run_dir, n), None, false)
    }

    /// Empties a job's directories and makes them available to the next job.
    pub(super) fn give_back(&self, slot: PathBuf, handle: Option<Handle>) {
        for dir in ["workspace", "temp"] {
            let dir = slot.join(dir);
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                    if removed.is_err() {
                        // Something the job left cannot be removed; do not hand it to another job.
                        return;
                    }
                }
            }
        }
        if let Ok(mut free) = self.free.lock() {
            free.push((slot, handle));
        }
    }
}

/// A job slot's directory, open, so that its folders are looked at without walking the long path
/// to them each time.
pub(super) type Handle = Arc<std::os::fd::OwnedFd>;

/// The slot directory `slot`, opened for [`DirStamp::take_in`]; `None` when it cannot be (the
/// stamps then walk the path).
pub(super) fn open_handle(slot: &Path) -> Option<Handle> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    nix::fcntl::open(slot, flags, nix::sys::stat::Mode::empty()).ok().map(Arc::new)
}

/// The stamp of `name` in the slot (`""`: the slot itself), through its handle when it has one.
pub(super) fn stamp(dirs: &LegDirs, name: &str) -> Option<DirStamp> {
    use std::os::fd::AsFd;
    match &dirs.handle {
        Some(handle) => DirStamp::take_in(handle.as_fd(), name),
        None => DirStamp::take(&dirs.files.join(name)),
    }
}

/// Whether `name` in the slot still has the entries `stamp` saw.
pub(super) fn unchanged(dirs: &LegDirs, name: &str, stamp: &DirStamp) -> bool {
    use std::os::fd::AsFd;
    match &dirs.handle {
        Some(handle) => stamp.unchanged_in(handle.as_fd(), name),
        None => stamp.unchanged(&dirs.files.join(name)),
    }
}

/// Where the `n`th job slot of a run lives.
fn slot_dir(run_dir: &Path, n: usize) -> PathBuf {
    run_dir.join("slots").join(n.to_string())
}

/// Where a run that ended with every job slot emptied leaves them for the next run to take.
fn spare_slots(data_dir: &Path) -> PathBuf {
    data_dir.join("spare-slots")
}

/// Makes the folders of the first `n` job slots under `run_dir` ahead of the run. A caller that
/// has to wait anyway (for git, say) spares the first jobs these directory creations, which cost
/// an ext4 file system more than a short job's process; the jobs find them made. The slots the
/// last run left in `data_dir` (see [`park_slots`]) are taken with one rename instead; slots
/// beyond those are made by the jobs that need them.
pub fn prepare_slots(data_dir: &Path, run_dir: &Path, n: usize) -> std::io::Result<()> {
    // Two runs that start together race for the spare slots; the rename gives them to one.
    if std::fs::rename(spare_slots(data_dir), run_dir.join("slots")).is_ok() {
        return Ok(());
    }
    for n in 0..n {
        let slot = slot_dir(run_dir, n);
        for dir in ["workspace", "temp"] {
            std::fs::create_dir_all(slot.join(dir))?;
        }
    }
    Ok(())
}

/// Leaves the run's job slots in `data_dir` for the next run, when every slot came back emptied
/// (a slot whose files could not be removed stays where it is, with the run). Another run's
/// parked slots are not replaced: the rename refuses a folder that is not empty.
pub(super) fn park_slots(pool: &WorkspacePool, data_dir: &Path, run_dir: &Path) {
    let made = pool.n_made.load(std::sync::atomic::Ordering::Relaxed);
    let all_back = pool.free.lock().is_ok_and(|free| free.len() == made);
    if made > 0 && all_back {
        // Failing only costs the next run its folder creations.
        let _ = std::fs::rename(run_dir.join("slots"), spare_slots(data_dir));
    }
}

/// Empties a job's directories off the async threads (a workspace may hold gigabytes) and hands
/// them to the next job. Directories left empty, as by most short jobs, go back at once: a hop
/// to another thread costs more than looking. `stamps`, taken when the job got the directories
/// (which were empty then), spare the look when they show that nothing was added.
pub(super) async fn release(pool: &Arc<WorkspacePool>, dirs: &LegDirs, stamps: [Option<DirStamp>; 2]) {
    let is_empty = |dir: &str, stamp: Option<DirStamp>| {
        stamp.is_some_and(|stamp| unchanged(dirs, dir, &stamp))
            || std::fs::read_dir(dirs.files.join(dir)).is_ok_and(|mut entries| entries.next().is_none())
    };
    let [workspace, temp] = stamps;
    let (slot, handle) = (dirs.files.clone(), dirs.handle.clone());
    if is_empty("workspace", workspace) && is_empty("temp", temp) {
        if let Ok(mut free) = pool.free.lock() {
            free.push((slot, handle));
        }
        return;
    }
    let pool = pool.clone();
    if let Err(error) = tokio::task::spawn_blocking(move || pool.give_back(slot, handle)).await {
        tracing::warn!("cannot empty a job's directory: {error}");
    }
}

pub(super) struct LegDirs {
    pub(super) workspace: PathBuf,
    pub(super) temp: PathBuf,
    /// Where a step's script and its talk-back files live (not `RUNNER_TEMP`, which is the user's):
    /// the slot, which holds the other two.
    pub(super) files: PathBuf,
    /// The slot, open (see [`Handle`]).
    pub(super) handle: Option<Handle>,
}
