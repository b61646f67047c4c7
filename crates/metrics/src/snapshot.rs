//! The store's snapshot on disk: every series' labels and chunks, deflated. Since `TSNAP2` the
//! parts are laid out by kind rather than series after series — each label name and value once,
//! then every series' labels as numbers into that list, then every chunk's head (as differences
//! from the previous chunk's, which the series of one target share), then every chunk's bits —
//! so each part is deflated among bytes that look alike: at six minutes of 20,000 series, 1.8
//! bytes a sample against 2.3 for `TSNAP1`'s series after series (`crate::chunk` has the rest).
//!
//! Since `TSNAP3` each series' runs of sealed chunks in blocks on disk (`crate::blocks`) follow
//! its labels: their count, then each run's block, offset, length and sample count, its first
//! timestamp as a difference from the previous run's last, and its span, all varints.
//!
//! Layout (inflated): `TSNAP3`, the series count and the name-and-value count as varints, then
//! four parts, each its length as a varint and its bytes: the names and values (each a varint
//! length and UTF-8), the series (each a varint label count, varint numbers of each label's name
//! and value, and a varint chunk count, the head chunk last), the chunks' heads and the chunks'
//! bits ([`Chunk::encode_head`], [`Chunk::bytes`]). A file that starts with `TSNAPZ` is that
//! deflated; `TSNAP1` snapshots, deflated or not, still read.
//!
//! Both ways stream: the chunks' bits go from the series to the file and from the file to the
//! series without a copy of them all in between (a copy the allocator then kept: 1.6 B of resident
//! memory a retained sample).

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};

use crate::blocks::Run;
use crate::chunk::{Chunk, Head, Heads};
use crate::codes::{read_varint, unzigzag, write_varint, zigzag};
use crate::db::{Inner, decode_labels, take};
use crate::labels::Labels;

/// The magic of a deflated snapshot; what follows inflates to a `TSNAP1` or `TSNAP2` one.
const DEFLATED: &[u8] = b"TSNAPZ";
const SERIES_AFTER_SERIES: &[u8] = b"TSNAP1";
const BY_KIND: &[u8] = b"TSNAP2";
/// As `TSNAP2`, each series' runs in blocks after its labels.
const WITH_RUNS: &[u8] = b"TSNAP3";

/// Writes the snapshot of every series to `out`, deflated, as [`read`] reads it: the small parts
/// built first, the chunks' bits then streamed from the series.
pub(crate) fn write(inner: &Inner, mut out: impl Write) -> std::io::Result<()> {
    let mut numbers: HashMap<&str, u64> = HashMap::new();
    let (mut texts, mut series, mut heads) = (Vec::new(), Vec::new(), Vec::new());
    let mut previous = Heads::default();
    let mut bits = 0u64;
    for one in &inner.series {
        write_varint(one.labels.len() as u64, &mut series);
        for (name, value) in one.labels.iter() {
            for text in [name, value] {
                let next = numbers.len() as u64;
                let number = *numbers.entry(text).or_insert_with(|| {
                    write_varint(text.len() as u64, &mut texts);
                    texts.extend_from_slice(text.as_bytes());
                    next
                });
                write_varint(number, &mut series);
            }
        }
        write_varint(one.cold.len() as u64, &mut series);
        let mut previous_last = 0i64;
        for run in &one.cold {
            for n in [run.block as u64, run.offset, run.len as u64, run.samples as u64] {
                write_varint(n, &mut series);
            }
            write_varint(zigzag(run.first_t.wrapping_sub(previous_last)), &mut series);
            write_varint(zigzag(run.last_t.wrapping_sub(run.first_t)), &mut series);
            previous_last = run.last_t;
        }
        write_varint(one.sealed.len() as u64 + 1, &mut series);
        for chunk in one.sealed.iter().chain([&one.head]) {
            chunk.encode_head(&mut previous, &mut heads);
            bits += chunk.size() as u64;
        }
    }
    out.write_all(DEFLATED)?;
    let mut encoder = flate2::write::DeflateEncoder::new(out, flate2::Compression::fast());
    let mut start = WITH_RUNS.to_vec();
    write_varint(inner.series.len() as u64, &mut start);
    write_varint(numbers.len() as u64, &mut start);
    encoder.write_all(&start)?;
    // Each part after its length, in deflate blocks of its own (its bytes look alike, and unlike
    // the others').
    for part in [&texts, &series, &heads] {
        let mut length = Vec::new();
        write_varint(part.len() as u64, &mut length);
        encoder.write_all(&length)?;
        encoder.write_all(part)?;
        encoder.flush()?;
    }
    let mut length = Vec::new();
    write_varint(bits, &mut length);
    encoder.write_all(&length)?;
    for one in &inner.series {
        for chunk in one.sealed.iter().chain([&one.head]) {
            encoder.write_all(chunk.bytes())?;
        }
    }
    encoder.finish()?.flush()
}

/// Reads a snapshot's series into `inner`; on damage, the offset (in the inflated bytes) and
/// what is wrong there.
pub(crate) fn read(file: impl Read, inner: &mut Inner) -> Result<(), (usize, String)> {
    let mut file = std::io::BufReader::new(file);
    let mut magic = [0u8; 6];
    file.read_exact(&mut magic).map_err(|_| (0, "not a snapshot of this store".to_string()))?;
    if magic == DEFLATED {
        let decoder = std::io::BufReader::new(flate2::bufread::DeflateDecoder::new(file));
        let mut plain = Counted { inner: decoder, at: 0 };
        let mut magic = [0u8; 6];
        plain.read_exact(&mut magic).map_err(|e| (0, format!("the deflated snapshot does not inflate: {e}")))?;
        read_plain(magic, plain, inner)
    } else {
        read_plain(magic, Counted { inner: file, at: 6 }, inner)
    }
}

/// A reader that counts the bytes it gave (and the magic before them), for the offsets of errors.
struct Counted<R> {
    inner: R,
    at: usize,
}

impl<R: BufRead> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.at += n;
        Ok(n)
    }
}

fn read_plain<R: BufRead>(magic: [u8; 6], mut input: Counted<R>, inner: &mut Inner) -> Result<(), (usize, String)> {
    if magic == BY_KIND || magic == WITH_RUNS {
        return read_by_kind(&mut input, inner, magic == WITH_RUNS);
    }
    if magic != SERIES_AFTER_SERIES {
        return Err((0, "not a snapshot of this store".into()));
    }
    let mut bytes = magic.to_vec();
    input.read_to_end(&mut bytes).map_err(|e| (input.at, format!("the snapshot does not read: {e}")))?;
    read_series_after_series(&bytes, inner)
}

/// A varint from the stream.
fn varint<R: BufRead>(input: &mut Counted<R>, what: &str) -> Result<u64, (usize, String)> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8];
        input.read_exact(&mut byte).map_err(|_| (input.at, format!("{what} cut short")))?;
        n |= ((byte[0] & 0x7f) as u64).checked_shl(shift).unwrap_or(0);
        if byte[0] & 0x80 == 0 {
            return Ok(n);
        }
    }
    Err((input.at, format!("{what} is no number")))
}

fn read_by_kind<R: BufRead>(input: &mut Counted<R>, inner: &mut Inner, runs: bool) -> Result<(), (usize, String)> {
    let n_series = varint(input, "the series count is")?;
    let n_texts = varint(input, "the label count is")?;
    // The small parts whole, then the chunks' bits as each chunk needs them.
    let mut parts: [(usize, Vec<u8>); 3] = Default::default();
    for (part, what) in
        parts.iter_mut().zip(["the label names and values are", "the series are", "the chunks' heads are"])
    {
        let length = varint(input, what)?;
        part.0 = input.at;
        input
            .by_ref()
            .take(length)
            .read_to_end(&mut part.1)
            .map_err(|e| (input.at, format!("{what} unreadable: {e}")))?;
        if (part.1.len() as u64) < length {
            return Err((input.at, format!("{what} cut short")));
        }
    }
    let bits_length = varint(input, "the chunks' bits are")?;
    let [(texts_at, texts), (series_at, series), (heads_at, heads)] = &parts;
    // Where `rest` starts in the inflated snapshot: it is a tail of `part`, which began at `at`.
    let offset = |at: &usize, part: &[u8], rest: &[u8]| at + part.len() - rest.len();
    let (mut texts_rest, mut series_rest, mut heads_rest) = (&texts[..], &series[..], &heads[..]);
    let mut names = Vec::new();
    for _ in 0..n_texts {
        let here = offset(texts_at, texts, texts_rest);
        let text = read_varint(&mut texts_rest)
            .and_then(|n| usize::try_from(n).ok())
            .and_then(|n| take(&mut texts_rest, n))
            .ok_or_else(|| (here, "a label name or value is cut short".to_string()))?;
        names.push(std::str::from_utf8(text).map_err(|_| (here, "a label name or value is not UTF-8".to_string()))?);
    }
    let mut previous = Heads::default();
    let mut bits_read = 0u64;
    for _ in 0..n_series {
        let here = offset(series_at, series, series_rest);
        let damaged = || (here, "a series does not read back".to_string());
        let n_labels = read_varint(&mut series_rest).ok_or_else(damaged)?;
        let mut pairs = Vec::new();
        for _ in 0..n_labels {
            let mut text = || -> Option<String> {
                let number = usize::try_from(read_varint(&mut series_rest)?).ok()?;
                names.get(number).map(|s| s.to_string())
            };
            pairs.push(text().zip(text()).ok_or_else(damaged)?);
        }
        let labels = Labels::new(pairs);
        let mut cold = Vec::new();
        if runs {
            let n_runs = read_varint(&mut series_rest).ok_or_else(damaged)?;
            let mut previous_last = 0i64;
            for _ in 0..n_runs {
                let mut numbers = [0u64; 6];
                for n in &mut numbers {
                    *n = read_varint(&mut series_rest).ok_or_else(damaged)?;
                }
                let [block, offset, len, samples, first, span] = numbers;
                let first_t = previous_last.wrapping_add(unzigzag(first));
                let last_t = first_t.wrapping_add(unzigzag(span));
                let narrow = |n: u64| u32::try_from(n).map_err(|_| damaged());
                let (block, len, samples) = (narrow(block)?, narrow(len)?, narrow(samples)?);
                cold.push(Run { offset, first_t, last_t, len, block, samples });
                previous_last = last_t;
            }
        }
        let n_chunks = read_varint(&mut series_rest).ok_or_else(damaged)?;
        let mut chunks = Vec::new();
        for _ in 0..n_chunks {
            let head_at = offset(heads_at, heads, heads_rest);
            let refused = || (head_at, format!("a chunk of {labels} does not read back"));
            let head: Head = Chunk::decode_head(&mut previous, &mut heads_rest).ok_or_else(refused)?;
            bits_read += head.bytes_len() as u64;
            if bits_read > bits_length {
                return Err(refused());
            }
            let mut bytes = Vec::new();
            input.by_ref().take(head.bytes_len() as u64).read_to_end(&mut bytes).map_err(|_| refused())?;
            chunks.push(head.chunk(bytes).ok_or_else(refused)?);
        }
        add(inner, &labels, cold, chunks);
    }
    let left = [texts_rest, series_rest, heads_rest].iter().any(|rest| !rest.is_empty());
    let mut more = [0u8];
    if left || bits_read != bits_length || input.read(&mut more).map_or(true, |n| n > 0) {
        return Err((input.at, "bytes are left over after the last series".into()));
    }
    Ok(())
}

fn read_series_after_series(bytes: &[u8], inner: &mut Inner) -> Result<(), (usize, String)> {
    let mut input = &bytes[SERIES_AFTER_SERIES.len()..];
    let at = |input: &[u8]| bytes.len() - input.len();
    let n = take(&mut input, 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or((6, "cut short".to_string()))?;
    for _ in 0..n {
        let labels =
            decode_labels(&mut input).ok_or_else(|| (at(input), "a series' labels are cut short".to_string()))?;
        let chunks = take(&mut input, 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| (at(input), "cut short".to_string()))?;
        let mut all = Vec::new();
        for _ in 0..chunks {
            all.push(
                Chunk::decode(&mut input)
                    .ok_or_else(|| (at(input), format!("a chunk of {labels} does not read back")))?,
            );
        }
        add(inner, &labels, Vec::new(), all);
    }
    Ok(())
}

/// A series read back: its runs in blocks and its chunks, the head last.
fn add(inner: &mut Inner, labels: &Labels, cold: Vec<Run>, mut chunks: Vec<Chunk>) {
    let (id, _) = inner.id_of(labels);
    let head = chunks.pop().unwrap_or_default();
    inner.samples += chunks.iter().chain([&head]).map(|c| c.len() as u64).sum::<u64>();
    inner.samples += cold.iter().map(|run| run.samples as u64).sum::<u64>();
    let last = if !head.is_empty() { Some(head.last_t()) } else { chunks.last().map(Chunk::last_t) };
    let last = last.or_else(|| cold.last().map(|run| run.last_t));
    if let Some(t) = last {
        inner.newest = Some(inner.newest.map_or(t, |n| n.max(t)));
    }
    let series = &mut inner.series[id as usize];
    series.cold = cold;
    series.sealed = chunks;
    series.head = head;
}
