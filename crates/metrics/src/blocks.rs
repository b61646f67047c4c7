//! Sealed chunks kept on disk: at a checkpoint, once they are old enough or many enough, every
//! series' sealed chunks leave memory for a new block file, and the series keeps only where its
//! run of chunks lies there ([`Run`], 32 bytes for what was a few hundred). Queries read runs back
//! with positioned reads (the page cache keeps the hot ones); the snapshot names runs instead of
//! holding their bytes. A block is never changed once written; it is deleted once retention has
//! passed its newest sample.
//!
//! A block file (`blocks/NNNNNNNN`): `TBLK1\n`, then runs, one a series: each chunk's head
//! ([`Chunk::encode_head`], first timestamps as differences within the run) and its bits, and
//! after the last chunk an FNV-1a checksum of the run's bytes, so damage is found, not read as
//! samples.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::chunk::{Chunk, Heads};
use crate::db::{Inner, checksum};

const MAGIC: &[u8] = b"TBLK1\n";

/// Where a series' run of sealed chunks lies in a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) offset: u64,
    pub(crate) first_t: i64,
    pub(crate) last_t: i64,
    /// Bytes, the checksum included.
    pub(crate) len: u32,
    pub(crate) block: u32,
    pub(crate) samples: u32,
}

/// The store's blocks: their numbers and each one's newest sample.
#[derive(Debug, Default)]
pub(crate) struct Blocks {
    pub(crate) newest: BTreeMap<u32, i64>,
}

impl Blocks {
    pub(crate) fn dir(store: &Path) -> PathBuf {
        store.join("blocks")
    }

    pub(crate) fn path(store: &Path, block: u32) -> PathBuf {
        Blocks::dir(store).join(format!("{block:08}"))
    }

    /// The number the next block takes.
    pub(crate) fn next(&self) -> u32 {
        self.newest.last_key_value().map_or(1, |(n, _)| n + 1)
    }

    /// The blocks whose every sample is older than `cutoff`, forgotten here.
    pub(crate) fn expire(&mut self, cutoff: i64) -> Vec<u32> {
        let dead: Vec<u32> = self.newest.iter().filter(|(_, t)| **t < cutoff).map(|(n, _)| *n).collect();
        for n in &dead {
            self.newest.remove(n);
        }
        dead
    }
}

/// Writes every series' sealed chunks to block `number` (synced before it returns); the runs by
/// series id, and the block's newest sample. A series without sealed chunks has no run.
pub(crate) fn write(store: &Path, number: u32, inner: &Inner) -> std::io::Result<(Vec<(u32, Run)>, i64)> {
    std::fs::create_dir_all(Blocks::dir(store))?;
    let path = Blocks::path(store, number);
    let file = File::create(&path)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, file);
    out.write_all(MAGIC)?;
    let mut offset = MAGIC.len() as u64;
    let (mut runs, mut newest) = (Vec::new(), i64::MIN);
    let mut bytes = Vec::new();
    for (id, series) in inner.series.iter().enumerate() {
        let (Some(first), Some(last)) = (series.sealed.first(), series.sealed.last()) else { continue };
        bytes.clear();
        let mut previous = Heads::default();
        for chunk in &series.sealed {
            chunk.encode_head(&mut previous, &mut bytes);
            bytes.extend_from_slice(chunk.bytes());
        }
        bytes.extend_from_slice(&checksum(&bytes).to_le_bytes());
        let len = u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("a series' run passes 4 GiB"))?;
        out.write_all(&bytes)?;
        let samples = series.sealed.iter().map(|c| c.len() as u32).sum();
        let (first_t, last_t) = (first.first_t(), last.last_t());
        runs.push((id as u32, Run { offset, first_t, last_t, len, block: number, samples }));
        newest = newest.max(last.last_t());
        offset += len as u64;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok((runs, newest))
}

/// Open block files for the reads of one query.
pub(crate) struct Reader<'a> {
    store: &'a Path,
    files: HashMap<u32, File>,
    buffer: Vec<u8>,
}

impl Reader<'_> {
    pub(crate) fn new(store: &Path) -> Reader<'_> {
        Reader { store, files: HashMap::new(), buffer: Vec::new() }
    }

    /// The run's chunks, oldest first, for reading (they take no more samples).
    pub(crate) fn chunks(&mut self, run: &Run) -> Result<Vec<Chunk>, String> {
        let path = Blocks::path(self.store, run.block);
        let file = match self.files.entry(run.block) {
            std::collections::hash_map::Entry::Occupied(open) => open.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?)
            }
        };
        self.buffer.resize(run.len as usize, 0);
        file.read_exact_at(&mut self.buffer, run.offset).map_err(|e| format!("{}: {e}", path.display()))?;
        decode(&self.buffer).ok_or_else(|| format!("{} is damaged at byte {}", path.display(), run.offset))
    }
}

/// A run's chunks from its bytes; `None` when its checksum or a chunk's head does not hold.
fn decode(run: &[u8]) -> Option<Vec<Chunk>> {
    let (body, sum) = run.split_at_checked(run.len().checked_sub(4)?)?;
    if checksum(body) != u32::from_le_bytes(sum.try_into().ok()?) {
        return None;
    }
    let mut input = body;
    let mut previous = Heads::default();
    let mut chunks = Vec::new();
    while !input.is_empty() {
        let head = Chunk::decode_head(&mut previous, &mut input)?;
        let bits = crate::codes::take(&mut input, head.bytes_len())?;
        chunks.push(head.for_reading(bits.to_vec())?);
    }
    Some(chunks)
}
