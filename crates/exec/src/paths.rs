//! Resolving the path patterns of `actions/cache`, `upload-artifact` and `hashFiles` on disk,
//! rewriting small files in place, and telling whether a directory's entries changed.

use std::os::fd::BorrowedFd;
use std::path::{Component, Path, PathBuf};

use ci::filter::Pattern;
use sha2::{Digest, Sha256};

/// Files and directories matching the patterns (one per line or item; `!` excludes; `~` is
/// `home`; relative patterns are relative to `base`). Sorted, without duplicates.
pub fn resolve(base: &Path, home: &Path, patterns: &[String]) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    for line in patterns.iter().flat_map(|p| p.lines()).map(str::trim).filter(|l| !l.is_empty()) {
        let (negated, text) = match line.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let absolute = absolutize(base, home, text);
        let has_glob = text.contains(['*', '?', '[']);
        let matches: Vec<PathBuf> = if has_glob {
            let root = literal_prefix(&absolute);
            let pattern = Pattern::new(&absolute.to_string_lossy());
            let mut out = Vec::new();
            walk(&root, &mut |path| {
                if pattern.matches(&path.to_string_lossy()) {
                    out.push(path.to_path_buf());
                }
            });
            out
        } else if absolute.exists() || absolute.symlink_metadata().is_ok() {
            vec![absolute]
        } else {
            Vec::new()
        };
        if negated {
            found.retain(|f| !matches.iter().any(|m| f.starts_with(m)));
        } else {
            found.extend(matches);
        }
    }
    found.sort();
    found.dedup();
    // A directory already covers what lies inside it.
    let mut out: Vec<PathBuf> = Vec::new();
    for path in found {
        if !out.iter().any(|kept| path.starts_with(kept) && path != *kept) {
            out.push(path);
        }
    }
    out
}

fn absolutize(base: &Path, home: &Path, text: &str) -> PathBuf {
    let path = if let Some(rest) = text.strip_prefix("~/") {
        home.join(rest)
    } else if text == "~" {
        home.to_path_buf()
    } else {
        base.join(text)
    };
    normalize(&path)
}

/// Removes `.` and `..` components without touching the disk.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn literal_prefix(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        if component.as_os_str().to_string_lossy().contains(['*', '?', '[']) {
            break;
        }
        out.push(component);
    }
    out
}

/// Visits every file, directory and symlink below `root` (not following symlinks).
pub fn walk(root: &Path, visit: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        visit(&path);
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&path, visit);
        }
    }
}

/// Every regular file at or below the given paths.
pub fn files_below(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for path in paths {
        match path.symlink_metadata() {
            Ok(meta) if meta.is_dir() => walk(path, &mut |p| {
                if p.symlink_metadata().is_ok_and(|m| m.is_file()) {
                    out.push(p.to_path_buf());
                }
            }),
            Ok(meta) if meta.is_file() => out.push(path.clone()),
            _ => {}
        }
    }
    out
}

/// `hashFiles()`: SHA-256 over the SHA-256 of each matching file in the workspace, in path order;
/// empty when nothing matches.
pub fn hash_files(workspace: &Path, patterns: &[String]) -> Result<String, String> {
    let matched = resolve(workspace, workspace, patterns);
    let mut files: Vec<PathBuf> = files_below(&matched).into_iter().filter(|f| f.starts_with(workspace)).collect();
    files.sort();
    if files.is_empty() {
        return Ok(String::new());
    }
    let mut outer = Sha256::new();
    for file in files {
        let bytes = std::fs::read(&file).map_err(|e| format!("hashFiles: cannot read {}: {e}", file.display()))?;
        outer.update(Sha256::digest(&bytes));
    }
    Ok(hex::encode(outer.finalize()))
}

/// Replaces a file's contents without truncating it to zero first: on ext4, closing a file that
/// was truncated to zero forces a flush to disk (`auto_da_alloc`), which costs more than a short
/// step. The file is cut only where the old contents were longer. Its old length comes from a
/// seek, which costs less than a `stat` of the open file.
pub fn overwrite(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Seek;
    use std::os::unix::fs::FileExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path)?;
    let old_len = file.seek(std::io::SeekFrom::End(0))?;
    file.write_all_at(bytes, 0)?;
    if old_len > bytes.len() as u64 { file.set_len(bytes.len() as u64) } else { Ok(()) }
}

/// A directory's change time, taken to tell later, with one `stat`, that no entry was added to it
/// or removed from it since (which listing it would take four system calls to tell).
///
/// Adding, removing or renaming an entry, like any change to the directory's own metadata, sets
/// its change time to the present, and nothing lets a program set it back. File systems take that
/// time from a clock that may run a tick (up to ten milliseconds) behind, so a stamp is trusted
/// only once its time is [`DirStamp::SETTLED`] in the past, when any later change would carry a
/// later time; and never on file systems that keep whole seconds (a zero nanosecond part).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirStamp {
    seconds: i64,
    nanoseconds: i64,
}

impl DirStamp {
    /// How old a change time must be to tell apart from a change that follows it: twice the
    /// longest tick (10 ms, at 100 Hz; 4 ms at the usual 250 Hz).
    pub const SETTLED: std::time::Duration = std::time::Duration::from_millis(20);

    /// The stamp of `dir`, or `None` when it cannot be read or cannot be trusted (see above).
    pub fn take(dir: &Path) -> Option<DirStamp> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(dir).ok()?;
        Self::settled(DirStamp { seconds: metadata.ctime(), nanoseconds: metadata.ctime_nsec() })
    }

    /// [`DirStamp::take`] of `name` in the open directory `parent` (`""`: `parent` itself), which
    /// spares the file system the walk of a long path.
    pub fn take_in(parent: BorrowedFd<'_>, name: &str) -> Option<DirStamp> {
        Self::settled(Self::read_in(parent, name)?)
    }

    /// [`DirStamp::unchanged`] of `name` in the open directory `parent`.
    pub fn unchanged_in(&self, parent: BorrowedFd<'_>, name: &str) -> bool {
        Self::read_in(parent, name).is_some_and(|now| now == *self)
    }

    fn read_in(parent: BorrowedFd<'_>, name: &str) -> Option<DirStamp> {
        use nix::fcntl::AtFlags;
        let flags = if name.is_empty() { AtFlags::AT_EMPTY_PATH } else { AtFlags::empty() };
        let stat = nix::sys::stat::fstatat(parent, name, flags).ok()?;
        Some(DirStamp { seconds: stat.st_ctime, nanoseconds: stat.st_ctime_nsec })
    }

    fn settled(stamp: DirStamp) -> Option<DirStamp> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
        let then = std::time::Duration::new(u64::try_from(stamp.seconds).ok()?, u32::try_from(stamp.nanoseconds).ok()?);
        let settled = now.checked_sub(then).is_some_and(|age| age >= Self::SETTLED);
        (settled && stamp.nanoseconds != 0).then_some(stamp)
    }

    /// Whether `dir` has the same entries as when this stamp was taken. `false` when unsure.
    pub fn unchanged(&self, dir: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(dir).is_ok_and(|m| m.ctime() == self.seconds && m.ctime_nsec() == self.nanoseconds)
    }
}

#[cfg(test)]
mod stamps {
    use super::DirStamp;

    /// A settled stamp sees any entry added or removed afterwards, however soon.
    #[test]
    fn a_settled_stamp_notices_every_entry_added_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        // Just made: too recent to be trusted.
        assert_eq!(DirStamp::take(path), None);
        std::thread::sleep(DirStamp::SETTLED + std::time::Duration::from_millis(5));
        let stamp = DirStamp::take(path).expect("a settled stamp on a file system with nanoseconds");
        assert!(stamp.unchanged(path));
        std::fs::write(path.join("output"), "x=1").unwrap();
        assert!(!stamp.unchanged(path), "a new file");
        std::thread::sleep(DirStamp::SETTLED + std::time::Duration::from_millis(5));
        let stamp = DirStamp::take(path).unwrap();
        std::fs::remove_file(path.join("output")).unwrap();
        assert!(!stamp.unchanged(path), "a removed file");
        std::thread::sleep(DirStamp::SETTLED + std::time::Duration::from_millis(5));
        let stamp = DirStamp::take(path).unwrap();
        std::fs::create_dir(path.join("sub")).unwrap();
        assert!(!stamp.unchanged(path), "a new directory");
        assert!(!stamp.unchanged(&path.join("missing")), "a directory that is gone");
    }

    /// Through an open parent, a stamp is the same as through the path, for the parent itself
    /// (`""`) and for a folder in it.
    #[test]
    fn a_stamp_taken_through_an_open_parent_is_the_same() {
        use std::os::fd::AsFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        std::fs::create_dir(path.join("workspace")).unwrap();
        let parent = std::fs::File::open(path).unwrap();
        assert_eq!(DirStamp::take_in(parent.as_fd(), "workspace"), None, "too recent");
        std::thread::sleep(DirStamp::SETTLED + std::time::Duration::from_millis(5));
        for name in ["", "workspace"] {
            let stamp = DirStamp::take_in(parent.as_fd(), name).expect("settled");
            assert_eq!(Some(stamp), DirStamp::take(&path.join(name)));
            assert!(stamp.unchanged_in(parent.as_fd(), name));
            assert!(!stamp.unchanged_in(parent.as_fd(), "missing"));
            std::fs::write(path.join(name).join(format!("new-{}", name.len())), "x").unwrap();
            assert!(!stamp.unchanged_in(parent.as_fd(), name), "{name:?}: a new file");
        }
    }
}

#[cfg(test)]
mod rewriting {
    /// New contents replace the old whole, whether they are longer or shorter.
    #[test]
    fn overwrite_leaves_nothing_of_the_previous_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("step.sh");
        for script in ["echo a rather long first script", "echo short", "echo longer than the short one"] {
            super::overwrite(&path, script.as_bytes()).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), script);
        }
    }
}
