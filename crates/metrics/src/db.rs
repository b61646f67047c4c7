//! The embedded time-series store: series in memory as compressed chunks, every accepted batch
//! written ahead to a log before it is acknowledged, and a snapshot that replaces the log when it
//! grows (`checkpoint`). Sealed chunks old or many enough leave memory for blocks on disk
//! ([`crate::blocks`]); a series then keeps where they lie, and queries read them back.
//!
//! On disk (in the store's directory): `snapshot` (every series' labels, its runs in blocks and
//! the chunks still in memory, see [`crate::snapshot`]; written to a temporary file and renamed,
//! so it is whole or absent), `blocks/` (immutable files of sealed chunks, each written whole
//! before a snapshot names it) and `wal` (records appended since the snapshot, each with its
//! length and a checksum; a torn record at the end, as `kill -9` leaves it, ends the replay).
//! Retention counts back from the newest sample, not from the clock, so imported history stays.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use crate::blocks::{self, Blocks, Run};
use crate::chunk::Chunk;
use crate::labels::Labels;
use crate::snapshot;

/// Prometheus's staleness marker: a NaN with this payload ends a series at its timestamp.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error(
        "{path} is damaged at byte {offset}: {what}\n  hint: move it aside to start from the write-ahead log alone (its blocks are then set aside too, not deleted)"
    )]
    Corrupt { path: PathBuf, offset: usize, what: String },
    #[error(
        "the store holds {limit} series, its limit; {labels} was refused\n  hint: drop high-cardinality labels, or raise the limit"
    )]
    TooManySeries { limit: usize, labels: String },
    #[error("{labels}: sample at {t} ms is not after the series' last one at {last} ms")]
    OutOfOrder { labels: String, t: i64, last: i64 },
    #[error(
        "{path} is missing, and the snapshot keeps sealed chunks there\n  hint: restore it from a backup of the store's directory, or move the directory aside to start empty"
    )]
    MissingBlock { path: PathBuf },
}

/// Where and how long the store keeps samples.
#[derive(Debug, Clone)]
pub struct Options {
    pub retention_ms: i64,
    pub max_series: usize,
    /// A checkpoint is due when the log grows past this.
    pub wal_bytes_before_checkpoint: u64,
    /// A checkpoint moves the sealed chunks to a block on disk once the oldest of them ended
    /// this long before the newest sample…
    pub cold_after_ms: i64,
    /// …or once they take this many bytes, whichever comes first.
    pub warm_bytes_before_cold: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            retention_ms: 30 * 24 * 3600 * 1000,
            max_series: 1_000_000,
            wal_bytes_before_checkpoint: 64 << 20,
            cold_after_ms: 2 * 3600 * 1000,
            warm_bytes_before_cold: 64 << 20,
        }
    }
}

pub(crate) struct Series {
    pub(crate) labels: Labels,
    /// Runs of sealed chunks in blocks on disk, oldest first; all older than `sealed`.
    pub(crate) cold: Vec<Run>,
    pub(crate) sealed: Vec<Chunk>,
    pub(crate) head: Chunk,
}

impl Series {
    fn last_t(&self) -> Option<i64> {
        if !self.head.is_empty() {
            return Some(self.head.last_t());
        }
        self.sealed.last().map(Chunk::last_t).or_else(|| self.cold.last().map(|run| run.last_t))
    }
}

#[derive(Default)]
pub(crate) struct Inner {
    pub(crate) series: Vec<Series>,
    /// Series ids by a hash of their labels: the labels themselves are kept once, in `series`
    /// (a second copy as a map key was about a fifth of the store's memory).
    by_hash: HashMap<u64, u32>,
    /// The rare series whose labels hash as an earlier series' do: hash → their ids.
    collided: HashMap<u64, Vec<u32>>,
    hasher: std::hash::RandomState,
    /// label name → value → series ids.
    postings: HashMap<String, HashMap<String, Vec<u32>>>,
    pub(crate) newest: Option<i64>,
    pub(crate) samples: u64,
    pub(crate) blocks: Blocks,
}

impl Inner {
    /// The id of the series with exactly these labels.
    fn find(&self, labels: &Labels) -> Option<u32> {
        let hash = std::hash::BuildHasher::hash_one(&self.hasher, labels);
        let first = *self.by_hash.get(&hash)?;
        if self.series[first as usize].labels == *labels {
            return Some(first);
        }
        self.collided.get(&hash)?.iter().copied().find(|id| self.series[*id as usize].labels == *labels)
    }

    pub(crate) fn id_of(&mut self, labels: &Labels) -> (u32, bool) {
        if let Some(id) = self.find(labels) {
            return (id, false);
        }
        let id = self.series.len() as u32;
        for (name, value) in labels.iter() {
            self.postings.entry(name.to_string()).or_default().entry(value.to_string()).or_default().push(id);
        }
        let hash = std::hash::BuildHasher::hash_one(&self.hasher, labels);
        match self.by_hash.entry(hash) {
            std::collections::hash_map::Entry::Occupied(_) => self.collided.entry(hash).or_default().push(id),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(id);
            }
        }
        self.series.push(Series { labels: labels.clone(), cold: Vec::new(), sealed: Vec::new(), head: Chunk::new() });
        (id, true)
    }

    fn push(&mut self, id: u32, t: i64, v: f64) {
        let series = &mut self.series[id as usize];
        if series.head.is_full() {
            let mut full = std::mem::take(&mut series.head);
            full.seal();
            series.sealed.push(full);
        }
        series.head.push(t, v);
        self.newest = Some(self.newest.map_or(t, |n| n.max(t)));
        self.samples += 1;
    }
}

/// A label matcher of a selection.
#[derive(Debug, Clone)]
pub enum Match {
    Equal(String, String),
    NotEqual(String, String),
    Regex(String, regex::Regex),
    NotRegex(String, regex::Regex),
}

impl Match {
    fn name(&self) -> &str {
        match self {
            Match::Equal(n, _) | Match::NotEqual(n, _) | Match::Regex(n, _) | Match::NotRegex(n, _) => n,
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Match::Equal(_, v) => value == v,
            Match::NotEqual(_, v) => value != v,
            Match::Regex(_, r) => r.is_match(value),
            Match::NotRegex(_, r) => !r.is_match(value),
        }
    }
}

/// A series and its samples within the asked range, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesData {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
}

/// Figures about the store, for `/metrics` and the benchmarks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub series: usize,
    pub samples: u64,
    pub chunk_bytes: usize,
    pub newest: Option<i64>,
}

pub struct Db {
    dir: PathBuf,
    options: Options,
    inner: RwLock<Inner>,
    wal: Mutex<Wal>,
    failed_appends: std::sync::atomic::AtomicU64,
    failed_reads: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("dir", &self.dir).field("stats", &self.stats()).finish()
    }
}

struct Wal {
    file: File,
    bytes: u64,
}

const RECORD_SERIES: u8 = 1;
const RECORD_SAMPLES: u8 = 2;

impl Db {
    /// Opens (or creates) the store in `dir`: the snapshot, then the log replayed over it.
    pub fn open(dir: &Path, options: Options) -> Result<Db, DbError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| DbError::Io { path, error }
        };
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut inner = Inner::default();
        let snapshot = dir.join("snapshot");
        if snapshot.exists() {
            let file = File::open(&snapshot).map_err(io(&snapshot))?;
            snapshot::read(file, &mut inner).map_err(|(offset, what)| DbError::Corrupt {
                path: snapshot.clone(),
                offset,
                what,
            })?;
        }
        settle_blocks(dir, &mut inner, snapshot.exists())?;
        let wal_path = dir.join("wal");
        let mut valid = 0u64;
        if wal_path.exists() {
            let mut bytes = Vec::new();
            File::open(&wal_path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(io(&wal_path))?;
            valid = replay(&bytes, &mut inner) as u64;
        }
        let file =
            OpenOptions::new().create(true).truncate(false).write(true).open(&wal_path).map_err(io(&wal_path))?;
        // A torn record at the end (a crash mid-write) is cut off, so new records follow whole ones.
        file.set_len(valid).map_err(io(&wal_path))?;
        let mut file = file;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(valid)).map_err(io(&wal_path))?;
        Ok(Db {
            dir: dir.to_path_buf(),
            options,
            inner: RwLock::new(inner),
            wal: Mutex::new(Wal { file, bytes: valid }),
            failed_appends: std::sync::atomic::AtomicU64::new(0),
            failed_reads: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Appends samples; when this returns `Ok`, they are in the log, and only then can a query
    /// see them. A sample that is not after its series' last one is refused (named in the error)
    /// and the rest of the batch is kept. When the log cannot be written (a full disk), nothing
    /// of the batch is kept and the log is cut back to its last whole record.
    pub fn append(&self, batch: &[(Labels, i64, f64)]) -> Result<usize, DbError> {
        // The log's lock first, then the series' (as `checkpoint` takes them).
        let wal = self.wal.lock().unwrap_or_else(|e| e.into_inner());
        let inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let mut new_series: Vec<Labels> = Vec::new();
        // The batch's new series by their labels: a batch that brings many (an import) must not
        // search them one by one for each of its samples.
        let mut new_ids: HashMap<&Labels, u32> = HashMap::new();
        let mut last: HashMap<u32, i64> = HashMap::new();
        let mut accepted = Vec::with_capacity(batch.len());
        let mut first_error = None;
        for (labels, t, v) in batch {
            let id = match inner.find(labels) {
                Some(id) => id,
                None => match new_ids.get(labels) {
                    Some(id) => *id,
                    None => {
                        if inner.series.len() + new_series.len() >= self.options.max_series {
                            first_error.get_or_insert(DbError::TooManySeries {
                                limit: self.options.max_series,
                                labels: labels.to_string(),
                            });
                            continue;
                        }
                        new_series.push(labels.clone());
                        let id = (inner.series.len() + new_series.len() - 1) as u32;
                        new_ids.insert(labels, id);
                        id
                    }
                },
            };
            let previous = last.get(&id).copied().or_else(|| inner.series.get(id as usize).and_then(Series::last_t));
            if let Some(previous) = previous.filter(|previous| t <= previous) {
                first_error.get_or_insert(DbError::OutOfOrder { labels: labels.to_string(), t: *t, last: previous });
                continue;
            }
            last.insert(id, *t);
            accepted.push((id, *t, v.to_bits()));
        }
        self.commit(wal, inner, &new_series, &accepted)?;
        match first_error {
            Some(error) if accepted.is_empty() => Err(error),
            _ => Ok(accepted.len()),
        }
    }

    /// Appends samples of series known by id (from [`Db::id`]), as a scrape cache does: no labels
    /// are looked up. Ids this store did not give are refused like out-of-order samples.
    pub fn append_ids(&self, batch: &[(u32, i64, f64)]) -> Result<usize, DbError> {
        let wal = self.wal.lock().unwrap_or_else(|e| e.into_inner());
        let inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let mut last: HashMap<u32, i64> = HashMap::new();
        let mut accepted = Vec::with_capacity(batch.len());
        let mut first_error = None;
        for &(id, t, v) in batch {
            let Some(series) = inner.series.get(id as usize) else {
                first_error.get_or_insert(DbError::OutOfOrder { labels: format!("series #{id}"), t, last: 0 });
                continue;
            };
            let previous = last.get(&id).copied().or_else(|| series.last_t());
            if let Some(previous) = previous.filter(|previous| t <= *previous) {
                first_error.get_or_insert(DbError::OutOfOrder { labels: series.labels.to_string(), t, last: previous });
                continue;
            }
            last.insert(id, t);
            accepted.push((id, t, v.to_bits()));
        }
        self.commit(wal, inner, &[], &accepted)?;
        match first_error {
            Some(error) if accepted.is_empty() => Err(error),
            _ => Ok(accepted.len()),
        }
    }

    /// The id of the series with exactly these labels, once it has a sample.
    pub fn id(&self, labels: &Labels) -> Option<u32> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).find(labels)
    }

    /// Writes new series and accepted samples to the log, then to memory; checkpoints when due.
    fn commit(
        &self,
        mut wal: std::sync::MutexGuard<'_, Wal>,
        mut inner: std::sync::RwLockWriteGuard<'_, Inner>,
        new_series: &[Labels],
        accepted: &[(u32, i64, u64)],
    ) -> Result<(), DbError> {
        let mut record = Vec::new();
        for (i, labels) in new_series.iter().enumerate() {
            let mut payload = vec![RECORD_SERIES];
            payload.extend_from_slice(&((inner.series.len() + i) as u32).to_le_bytes());
            encode_labels(labels, &mut payload);
            frame(&payload, &mut record);
        }
        if !accepted.is_empty() {
            let mut payload = Vec::with_capacity(5 + accepted.len() * 20);
            payload.push(RECORD_SAMPLES);
            payload.extend_from_slice(&(accepted.len() as u32).to_le_bytes());
            for (id, t, v) in accepted {
                payload.extend_from_slice(&id.to_le_bytes());
                payload.extend_from_slice(&t.to_le_bytes());
                payload.extend_from_slice(&v.to_le_bytes());
            }
            frame(&payload, &mut record);
        }
        if !record.is_empty() {
            let before = wal.bytes;
            if let Err(error) = wal.file.write_all(&record) {
                // Cut a half-written record off, so that what follows lands after whole ones.
                let _ = wal.file.set_len(before);
                let _ = std::io::Seek::seek(&mut wal.file, std::io::SeekFrom::Start(before));
                self.failed_appends.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(DbError::Io { path: self.dir.join("wal"), error });
            }
            wal.bytes += record.len() as u64;
        }
        for labels in new_series {
            inner.id_of(labels);
        }
        for (id, t, v) in accepted {
            inner.push(*id, *t, f64::from_bits(*v));
        }
        drop(inner);
        let due = wal.bytes > self.options.wal_bytes_before_checkpoint;
        drop(wal);
        if due {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Appends that failed because the log could not be written.
    pub fn failed_appends(&self) -> u64 {
        self.failed_appends.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Drops chunks older than the retention (from the newest sample), moves sealed chunks to a
    /// block on disk when they are old or many enough ([`Options::cold_after_ms`]), writes a
    /// snapshot of every series and empties the log. Each file is whole before the next names
    /// it: the block before the snapshot that refers to it, the snapshot before the log is
    /// emptied and expired blocks deleted.
    pub fn checkpoint(&self) -> Result<(), DbError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| DbError::Io { path, error }
        };
        let mut wal = self.wal.lock().unwrap_or_else(|e| e.into_inner());
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let mut expired = Vec::new();
        if let Some(newest) = inner.newest {
            let cutoff = newest - self.options.retention_ms;
            for series in &mut inner.series {
                series.sealed.retain(|c| c.last_t() >= cutoff);
                series.cold.retain(|run| run.last_t >= cutoff);
            }
            expired = inner.blocks.expire(cutoff);
        }
        drop(inner);
        // Appends wait for the log's lock; queries go on while the block and the snapshot stream
        // to their files.
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        if self.cold_due(&inner) {
            let number = inner.blocks.next();
            let path = Blocks::path(&self.dir, number);
            let (runs, newest) = blocks::write(&self.dir, number, &inner).map_err(io(&path))?;
            drop(inner);
            let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
            for (id, run) in runs {
                let series = &mut inner.series[id as usize];
                series.sealed = Vec::new();
                series.cold.push(run);
            }
            inner.blocks.newest.insert(number, newest);
        } else {
            drop(inner);
        }
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let temporary = self.dir.join("snapshot.tmp");
        let file = File::create(&temporary).map_err(io(&temporary))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 16, file);
        snapshot::write(&inner, &mut out).map_err(io(&temporary))?;
        drop(inner);
        let file = out.into_inner().map_err(|e| e.into_error()).map_err(io(&temporary))?;
        file.sync_all().map_err(io(&temporary))?;
        fs::rename(&temporary, self.dir.join("snapshot")).map_err(io(&temporary))?;
        let wal_path = self.dir.join("wal");
        wal.file.set_len(0).map_err(io(&wal_path))?;
        std::io::Seek::seek(&mut wal.file, std::io::SeekFrom::Start(0)).map_err(io(&wal_path))?;
        wal.bytes = 0;
        for number in expired {
            let path = Blocks::path(&self.dir, number);
            fs::remove_file(&path).map_err(io(&path))?;
        }
        Ok(())
    }

    /// Whether the sealed chunks in memory are old or many enough to move to a block.
    fn cold_due(&self, inner: &Inner) -> bool {
        let Some(newest) = inner.newest else { return false };
        let (mut oldest, mut bytes) = (None::<i64>, 0usize);
        for series in &inner.series {
            if let Some(first) = series.sealed.first() {
                oldest = Some(oldest.map_or(first.last_t(), |o| o.min(first.last_t())));
                bytes += series.sealed.iter().map(Chunk::size).sum::<usize>();
            }
        }
        oldest.is_some_and(|oldest| {
            newest.saturating_sub(oldest) >= self.options.cold_after_ms || bytes >= self.options.warm_bytes_before_cold
        })
    }

    /// Reads that failed because a block could not be read or was damaged (each also logged).
    pub fn failed_reads(&self) -> u64 {
        self.failed_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The series every matcher accepts, with their samples in `[mint, maxt]`. A label a series
    /// lacks matches as the empty string, as in Prometheus.
    pub fn select(&self, matchers: &[Match], mint: i64, maxt: i64) -> Vec<SeriesData> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let candidates: Vec<u32> = match matchers.iter().find_map(|m| match m {
            Match::Equal(n, v) if !v.is_empty() => Some((n, v)),
            _ => None,
        }) {
            Some((name, value)) => {
                inner.postings.get(name).and_then(|values| values.get(value)).cloned().unwrap_or_default()
            }
            None => (0..inner.series.len() as u32).collect(),
        };
        let mut out = Vec::new();
        let mut reader = blocks::Reader::new(&self.dir);
        for id in candidates {
            let series = &inner.series[id as usize];
            if !matchers.iter().all(|m| m.matches(series.labels.get(m.name()))) {
                continue;
            }
            let mut samples = Vec::new();
            for run in series.cold.iter().filter(|run| run.last_t >= mint && run.first_t <= maxt) {
                match reader.chunks(run) {
                    Ok(chunks) => {
                        for chunk in chunks {
                            samples.extend(chunk.iter().filter(|(t, _)| *t >= mint && *t <= maxt));
                        }
                    }
                    Err(error) => {
                        self.failed_reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::error!("samples of {} are left out of a query: {error}", series.labels);
                    }
                }
            }
            for chunk in series.sealed.iter().chain([&series.head]) {
                if chunk.is_empty() || chunk.last_t() < mint || chunk.first_t() > maxt {
                    continue;
                }
                samples.extend(chunk.iter().filter(|(t, _)| *t >= mint && *t <= maxt));
            }
            out.push(SeriesData { labels: series.labels.clone(), samples });
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    /// Every label name, sorted.
    pub fn label_names(&self) -> Vec<String> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.postings.keys().cloned().collect::<BTreeSet<_>>().into_iter().collect()
    }

    /// Every value of a label, sorted.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .postings
            .get(name)
            .map(|values| values.keys().cloned().collect::<BTreeSet<_>>().into_iter().collect())
            .unwrap_or_default()
    }

    pub fn stats(&self) -> Stats {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let warm = inner.series.iter().flat_map(|s| s.sealed.iter().chain([&s.head])).map(Chunk::size);
        let cold = inner.series.iter().flat_map(|s| s.cold.iter()).map(|run| run.len as usize);
        let chunk_bytes = warm.sum::<usize>() + cold.sum::<usize>();
        Stats { series: inner.series.len(), samples: inner.samples, chunk_bytes, newest: inner.newest }
    }
}

/// Matches the blocks on disk with the runs the snapshot names: each named block must be there;
/// a block no run names (written by a checkpoint that did not finish, or expired) is deleted.
/// Without a snapshot (one moved aside as damaged) no block can be read, and none is deleted:
/// the folder is set aside whole, beside the store, for whoever mends the snapshot.
fn settle_blocks(dir: &Path, inner: &mut Inner, snapshot: bool) -> Result<(), DbError> {
    let blocks = Blocks::dir(dir);
    if !snapshot && blocks.is_dir() {
        let aside = dir.join(format!("blocks.without-snapshot.{}", jiff::Timestamp::now().as_second()));
        fs::rename(&blocks, &aside).map_err(|error| DbError::Io { path: blocks.clone(), error })?;
        tracing::warn!("the store has blocks but no snapshot that names them; they were moved to {}", aside.display());
        return Ok(());
    }
    for series in &inner.series {
        for run in &series.cold {
            let newest = inner.blocks.newest.entry(run.block).or_insert(run.last_t);
            *newest = (*newest).max(run.last_t);
        }
    }
    for number in inner.blocks.newest.keys() {
        let path = Blocks::path(dir, *number);
        if !path.exists() {
            return Err(DbError::MissingBlock { path });
        }
    }
    let Ok(entries) = fs::read_dir(&blocks) else { return Ok(()) };
    for entry in entries {
        let entry = entry.map_err(|error| DbError::Io { path: blocks.clone(), error })?;
        let named = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok());
        if named.is_none_or(|n| !inner.blocks.newest.contains_key(&n)) {
            fs::remove_file(entry.path()).map_err(|error| DbError::Io { path: entry.path(), error })?;
        }
    }
    Ok(())
}

fn encode_labels(labels: &Labels, out: &mut Vec<u8>) {
    out.extend_from_slice(&(labels.len() as u16).to_le_bytes());
    for (name, value) in labels.iter() {
        for text in [name, value] {
            out.extend_from_slice(&(text.len() as u32).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
    }
}

pub(crate) fn decode_labels(input: &mut &[u8]) -> Option<Labels> {
    let n = u16::from_le_bytes(take(input, 2)?.try_into().ok()?);
    let mut pairs = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let mut text = || -> Option<String> {
            let len = u32::from_le_bytes(take(input, 4)?.try_into().ok()?) as usize;
            String::from_utf8(take(input, len)?.to_vec()).ok()
        };
        let name = text()?;
        let value = text()?;
        pairs.push((name, value));
    }
    Some(Labels::new(pairs))
}

pub(crate) fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, tail) = input.split_at_checked(n)?;
    *input = tail;
    Some(head)
}

/// FNV-1a: enough to tell a torn or garbled record (or block run) from a whole one.
pub(crate) fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| (h ^ *b as u32).wrapping_mul(0x0100_0193))
}

fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Applies the log's whole records; returns how many bytes they span.
fn replay(bytes: &[u8], inner: &mut Inner) -> usize {
    let mut input = bytes;
    let mut valid = 0;
    loop {
        let Some(applied) = replay_record(&mut input, inner) else { return valid };
        if !applied {
            return valid;
        }
        valid = bytes.len() - input.len();
    }
}

fn replay_record(input: &mut &[u8], inner: &mut Inner) -> Option<bool> {
    let len = u32::from_le_bytes(take(input, 4)?.try_into().ok()?) as usize;
    let sum = u32::from_le_bytes(take(input, 4)?.try_into().ok()?);
    let mut payload = take(input, len)?;
    if checksum(payload) != sum {
        return Some(false);
    }
    match take(&mut payload, 1)?[0] {
        RECORD_SERIES => {
            let id = u32::from_le_bytes(take(&mut payload, 4)?.try_into().ok()?);
            let labels = decode_labels(&mut payload)?;
            let (got, _) = inner.id_of(&labels);
            (got == id).then_some(true)
        }
        RECORD_SAMPLES => {
            let n = u32::from_le_bytes(take(&mut payload, 4)?.try_into().ok()?);
            for _ in 0..n {
                let id = u32::from_le_bytes(take(&mut payload, 4)?.try_into().ok()?);
                let t = i64::from_le_bytes(take(&mut payload, 8)?.try_into().ok()?);
                let v = u64::from_le_bytes(take(&mut payload, 8)?.try_into().ok()?);
                let series = inner.series.get(id as usize)?;
                if series.last_t().is_some_and(|last| t <= last) {
                    continue;
                }
                inner.push(id, t, f64::from_bits(v));
            }
            Some(true)
        }
        _ => Some(false),
    }
}
