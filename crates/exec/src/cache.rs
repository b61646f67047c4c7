//! The cache behind `actions/cache`: a content-addressed store under the data directory.
//!
//! Layout: `blobs/<2 hex>/<sha256>` holds file contents once however many entries use them;
//! `entries/<id>.json` lists an entry's files. Writers build files under a temporary name and
//! rename them into place, so a reader never sees half a file. A lock file serialises saves and
//! evictions (exclusive) against restores (shared), so concurrent jobs are safe.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::paths::walk;

/// Default size limit of the whole cache: 10 GiB, as on GitHub.
pub const DEFAULT_LIMIT: u64 = 10 * 1024 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct CacheStore {
    root: PathBuf,
    limit: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    scope: String,
    version: String,
    key: String,
    created: u64,
    last_used: u64,
    size: u64,
    files: Vec<FileRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileRecord {
    /// Relative to the workspace, or absolute when it starts with `/`.
    path: String,
    kind: FileKind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
enum FileKind {
    File { blob: String, size: u64, mode: u32 },
    Dir,
    Symlink { target: String },
}

/// What a restore found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub key: String,
    pub exact: bool,
    pub n_files: usize,
}

/// What a save did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    Stored {
        n_files: usize,
        size: u64,
        n_evicted: usize,
    },
    /// An entry with this key exists already; entries are immutable.
    Exists,
    NothingToSave,
}

impl CacheStore {
    pub fn open(root: &Path, limit: u64) -> io::Result<CacheStore> {
        fs::create_dir_all(root.join("blobs"))?;
        fs::create_dir_all(root.join("entries"))?;
        fs::create_dir_all(root.join("tmp"))?;
        Ok(CacheStore { root: root.to_path_buf(), limit })
    }

    fn lock(&self) -> io::Result<File> {
        File::options().create(true).truncate(false).write(true).open(self.root.join("lock"))
    }

    fn entry_path(&self, scope: &str, version: &str, key: &str) -> PathBuf {
        let id = hex::encode(Sha256::digest(format!("{scope}\0{version}\0{key}").as_bytes()));
        self.root.join("entries").join(format!("{id}.json"))
    }

    fn entries(&self) -> Vec<(PathBuf, Entry)> {
        let Ok(dir) = fs::read_dir(self.root.join("entries")) else { return Vec::new() };
        dir.filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| {
                let entry: Entry = serde_json::from_slice(&fs::read(e.path()).ok()?).ok()?;
                Some((e.path(), entry))
            })
            .collect()
    }

    /// Restores the best entry for `key` / `restore_keys` into place.
    pub fn restore(
        &self,
        scope: &str,
        version: &str,
        key: &str,
        restore_keys: &[String],
        workspace: &Path,
    ) -> io::Result<Option<Restored>> {
        let lock = self.lock()?;
        lock.lock_shared()?;
        let entries: Vec<(PathBuf, Entry)> = self
            .entries()
            .into_iter()
            .filter(|(_, e)| e.scope == scope && e.version == version && !is_archive(e))
            .collect();
        let infos: Vec<ci::cache::EntryInfo> =
            entries.iter().map(|(_, e)| ci::cache::EntryInfo { key: e.key.clone(), created: e.created }).collect();
        let Some(selection) = ci::cache::select(&infos, key, restore_keys) else { return Ok(None) };
        let Some((path, mut entry)) = entries.into_iter().find(|(_, e)| e.key == selection.key) else {
            return Ok(None);
        };
        for record in &entry.files {
            let target =
                if record.path.starts_with('/') { PathBuf::from(&record.path) } else { workspace.join(&record.path) };
            match &record.kind {
                FileKind::Dir => fs::create_dir_all(&target)?,
                FileKind::File { blob, mode, .. } => {
                    if let Some(parent) = target.parent() {
                        fs::create_dir_all(parent)?;
                    }
                    let _ = fs::remove_file(&target);
                    fs::copy(self.blob_path(blob), &target)?;
                    fs::set_permissions(&target, fs::Permissions::from_mode(*mode))?;
                }
                FileKind::Symlink { target: link } => {
                    if let Some(parent) = target.parent() {
                        fs::create_dir_all(parent)?;
                    }
                    let _ = fs::remove_file(&target);
                    symlink(link, &target)?;
                }
            }
        }
        entry.last_used = now_micros();
        write_atomically(&self.root.join("tmp"), &path, &serde_json::to_vec(&entry)?)?;
        Ok(Some(Restored { key: entry.key, exact: selection.exact, n_files: entry.files.len() }))
    }

    fn blob_path(&self, blob: &str) -> PathBuf {
        self.root.join("blobs").join(&blob[..2.min(blob.len())]).join(blob)
    }

    /// Saves the given paths under `key`, then evicts least-recently-used entries over the limit.
    pub fn save(
        &self,
        scope: &str,
        version: &str,
        key: &str,
        paths: &[PathBuf],
        workspace: &Path,
    ) -> io::Result<Saved> {
        let entry_path = self.entry_path(scope, version, key);
        if entry_path.exists() {
            return Ok(Saved::Exists);
        }
        // Blobs are content-addressed, so writing them needs no lock: the same name always
        // holds the same bytes, and each appears by an atomic rename.
        let mut files = Vec::new();
        let mut size = 0;
        for path in paths {
            let mut add = |p: &Path| -> io::Result<()> {
                let record_path = match p.strip_prefix(workspace) {
                    Ok(rel) => rel.to_string_lossy().into_owned(),
                    Err(_) => p.to_string_lossy().into_owned(),
                };
                let meta = p.symlink_metadata()?;
                let kind = if meta.file_type().is_symlink() {
                    FileKind::Symlink { target: fs::read_link(p)?.to_string_lossy().into_owned() }
                } else if meta.is_dir() {
                    FileKind::Dir
                } else {
                    let bytes = fs::read(p)?;
                    let blob = hex::encode(Sha256::digest(&bytes));
                    let blob_path = self.blob_path(&blob);
                    if !blob_path.exists() {
                        if let Some(parent) = blob_path.parent() {
                            fs::create_dir_all(parent)?;
                        }
                        write_atomically(&self.root.join("tmp"), &blob_path, &bytes)?;
                    }
                    size += meta.len();
                    FileKind::File { blob, size: meta.len(), mode: meta.permissions().mode() & 0o7777 }
                };
                files.push(FileRecord { path: record_path, kind });
                Ok(())
            };
            add(path)?;
            if path.symlink_metadata()?.is_dir() {
                let mut failure = None;
                walk(path, &mut |p| {
                    if failure.is_none()
                        && let Err(e) = add(p)
                    {
                        failure = Some(e);
                    }
                });
                if let Some(error) = failure {
                    return Err(error);
                }
            }
        }
        if files.is_empty() {
            return Ok(Saved::NothingToSave);
        }
        let lock = self.lock()?;
        lock.lock()?;
        if entry_path.exists() {
            return Ok(Saved::Exists);
        }
        self.write_entry(&entry_path, scope, version, key, size, files)
    }

    /// Writes a new entry, then evicts what the limit requires. The caller holds the exclusive lock.
    fn write_entry(
        &self,
        entry_path: &Path,
        scope: &str,
        version: &str,
        key: &str,
        size: u64,
        files: Vec<FileRecord>,
    ) -> io::Result<Saved> {
        let now = now_micros();
        let n_files = files.len();
        let entry = Entry {
            scope: scope.to_string(),
            version: version.to_string(),
            key: key.to_string(),
            created: now,
            last_used: now,
            size,
            files,
        };
        write_atomically(&self.root.join("tmp"), entry_path, &serde_json::to_vec(&entry)?)?;
        let n_evicted = self.evict()?;
        Ok(Saved::Stored { n_files, size, n_evicted })
    }

    /// Deletes least-recently-used entries over the limit, then blobs no entry uses.
    /// The caller holds the exclusive lock.
    fn evict(&self) -> io::Result<usize> {
        let entries = self.entries();
        let sizes: Vec<(String, u64, u64)> =
            entries.iter().map(|(p, e)| (p.to_string_lossy().into_owned(), e.size, e.last_used)).collect();
        let evicted = ci::cache::evictions(&sizes, self.limit);
        for path in &evicted {
            fs::remove_file(path)?;
        }
        if evicted.is_empty() {
            return Ok(0);
        }
        let live: std::collections::HashSet<String> = entries
            .iter()
            .filter(|(p, _)| !evicted.contains(&p.to_string_lossy().into_owned()))
            .flat_map(|(_, e)| {
                e.files.iter().filter_map(|f| match &f.kind {
                    FileKind::File { blob, .. } => Some(blob.clone()),
                    _ => None,
                })
            })
            .collect();
        let mut stale = Vec::new();
        walk(&self.root.join("blobs"), &mut |p| {
            if p.is_file() && !p.file_name().is_some_and(|n| live.contains(&*n.to_string_lossy())) {
                stale.push(p.to_path_buf());
            }
        });
        for blob in stale {
            fs::remove_file(blob)?;
        }
        Ok(evicted.len())
    }

    /// The archive the cache service holds for `keys` (the primary key, then restore keys as
    /// prefixes) and `version`, searching `scopes` in order as GitHub searches the branch's
    /// scope before the default branch's: (key, scope, the archive's file).
    pub fn find_archive(
        &self,
        scopes: &[String],
        version: &str,
        keys: &[String],
    ) -> io::Result<Option<(String, String, PathBuf)>> {
        let Some((key, restore_keys)) = keys.split_first() else { return Ok(None) };
        let lock = self.lock()?;
        lock.lock_shared()?;
        let all = self.entries();
        for scope in scopes {
            let entries: Vec<&(PathBuf, Entry)> =
                all.iter().filter(|(_, e)| &e.scope == scope && e.version == version && is_archive(e)).collect();
            let infos: Vec<ci::cache::EntryInfo> =
                entries.iter().map(|(_, e)| ci::cache::EntryInfo { key: e.key.clone(), created: e.created }).collect();
            let Some(selection) = ci::cache::select(&infos, key, restore_keys) else { continue };
            let Some((path, entry)) = entries.into_iter().find(|(_, e)| e.key == selection.key) else { continue };
            let FileKind::File { blob, .. } = &entry.files[0].kind else { continue };
            let mut used = entry.clone();
            used.last_used = now_micros();
            write_atomically(&self.root.join("tmp"), path, &serde_json::to_vec(&used)?)?;
            return Ok(Some((entry.key.clone(), entry.scope.clone(), self.blob_path(blob))));
        }
        Ok(None)
    }

    /// Whether an archive entry exists for exactly this scope, version and key.
    pub fn has_archive(&self, scope: &str, version: &str, key: &str) -> bool {
        self.entry_path(scope, version, key).exists()
    }

    /// Keeps an uploaded archive (moved from `file`) under `scope`, `version` and `key`; entries
    /// never change once written.
    pub fn store_archive(&self, scope: &str, version: &str, key: &str, file: &Path) -> io::Result<Saved> {
        let entry_path = self.entry_path(scope, version, key);
        let size = fs::metadata(file)?.len();
        let mut hasher = Sha256::new();
        io::copy(&mut File::open(file)?, &mut hasher)?;
        let blob = hex::encode(hasher.finalize());
        let blob_path = self.blob_path(&blob);
        if let Some(parent) = blob_path.parent() {
            fs::create_dir_all(parent)?;
        }
        let lock = self.lock()?;
        lock.lock()?;
        if entry_path.exists() {
            return Ok(Saved::Exists);
        }
        fs::rename(file, &blob_path)?;
        let files = vec![FileRecord { path: ARCHIVE.to_string(), kind: FileKind::File { blob, size, mode: 0o644 } }];
        self.write_entry(&entry_path, scope, version, key, size, files)
    }

    /// Where uploads in progress are written, on the store's file system (so that keeping one is
    /// a rename).
    pub fn upload_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Total bytes of stored blobs.
    pub fn disk_usage(&self) -> u64 {
        let mut total = 0;
        walk(&self.root.join("blobs"), &mut |p| {
            total += p.metadata().map(|m| if m.is_file() { m.len() } else { 0 }).unwrap_or(0)
        });
        total
    }
}

/// The one file of an entry the cache service stored: the client's archive, opaque to Tandem.
const ARCHIVE: &str = "\0archive";

fn is_archive(entry: &Entry) -> bool {
    entry.files.len() == 1 && entry.files[0].path == ARCHIVE
}

fn write_atomically(tmp_dir: &Path, target: &Path, bytes: &[u8]) -> io::Result<()> {
    let unique = format!("{}-{}-{:?}", std::process::id(), now_micros(), std::thread::current().id());
    let tmp = tmp_dir.join(unique.replace(['(', ')'], ""));
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, target)
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}
