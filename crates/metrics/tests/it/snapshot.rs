//! The snapshot on disk: its size over a store's first minutes, snapshots of the earlier layout,
//! and damaged ones.

use std::io::Read;

use metrics::chunk::{Chunk, Format};
use metrics::{Db, Labels, Match, Options};
use proptest::prelude::*;

use crate::{Noise, labels};

/// Six minutes of `targets` targets of 100 series each, as exporters print them: counters of
/// requests by handler and code, `%.3f` gauges on a random walk and histogram buckets.
fn six_minutes(targets: usize) -> Vec<(Labels, i64, f64)> {
    let mut noise = Noise(0x5eed);
    let mut batch = Vec::new();
    for target in 0..targets {
        let job = format!("t{target}");
        let start = 1_700_000_000_000 + (target as i64 * 73) % 15_000;
        let mut series: Vec<(Labels, f64, f64)> = Vec::new();
        for handler in 0..10 {
            for (code, rate) in [("200", 40.0), ("404", 2.0), ("500", 0.4), ("503", 0.2)] {
                let name = labels(&[
                    ("__name__", "x_total"),
                    ("handler", &format!("/api/{handler}")),
                    ("code", code),
                    ("job", &job),
                ]);
                series.push((name, (noise.uniform() * 1e5).round(), rate));
            }
        }
        for gauge in 0..36 {
            let name = labels(&[("__name__", "g"), ("k", &gauge.to_string()), ("job", &job)]);
            series.push((name, (noise.uniform() * 1e5).round() / 1000.0, -1.0));
        }
        for bucket in 0..24 {
            let name = labels(&[("__name__", "h_bucket"), ("le", &bucket.to_string()), ("job", &job)]);
            series.push((name, 0.0, 10.0 * (bucket % 12) as f64));
        }
        for scrape in 0..24 {
            for (name, value, rate) in &mut series {
                batch.push((name.clone(), start + scrape * 15_000, *value));
                *value = if *rate < 0.0 {
                    (((*value + 2.0 * noise.normal()) * 1000.0).round() / 1000.0).max(0.0)
                } else {
                    *value + (*rate * (0.5 + noise.uniform()) + noise.uniform()).floor()
                };
            }
        }
    }
    batch
}

#[test]
fn a_store_s_first_minutes_take_under_two_bytes_a_sample_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    let batch = six_minutes(50);
    db.append(&batch).unwrap();
    db.checkpoint().unwrap();
    let bytes = std::fs::metadata(dir.path().join("snapshot")).unwrap().len() as f64;
    let per_sample = bytes / batch.len() as f64;
    eprintln!("{per_sample:.3} bytes a sample after six minutes");
    // Each series' first sample and its labels are paid over 24 samples only.
    assert!(per_sample < 2.0, "{per_sample:.3} bytes a sample");
    drop(db);
    let db = Db::open(dir.path(), Options::default()).unwrap();
    let back = db.select(&[Match::Equal("job".into(), "t7".into())], 0, i64::MAX);
    assert_eq!(back.len(), 100);
    let want: Vec<(i64, f64)> = batch.iter().filter(|(l, ..)| *l == back[3].labels).map(|(_, t, v)| (*t, *v)).collect();
    assert_eq!(back[3].samples, want);
}

/// A snapshot as the first layout wrote it: series after series, fixed-width lengths.
fn series_after_series(series: &[(Labels, Vec<Chunk>)]) -> Vec<u8> {
    let mut out = b"TSNAP1".to_vec();
    out.extend_from_slice(&(series.len() as u32).to_le_bytes());
    for (labels, chunks) in series {
        out.extend_from_slice(&(labels.len() as u16).to_le_bytes());
        for (name, value) in labels.iter() {
            for text in [name, value] {
                out.extend_from_slice(&(text.len() as u32).to_le_bytes());
                out.extend_from_slice(text.as_bytes());
            }
        }
        out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
        for chunk in chunks {
            chunk.encode(&mut out);
        }
    }
    out
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A snapshot as the second layout wrote it: by kind, no runs in blocks, not deflated.
fn by_kind(series: &[(Labels, Vec<Chunk>)]) -> Vec<u8> {
    let (mut texts, mut numbers, mut heads, mut bits) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut seen: Vec<String> = Vec::new();
    let mut previous = metrics::chunk::Heads::default();
    for (labels, chunks) in series {
        varint(labels.len() as u64, &mut numbers);
        for (name, value) in labels.iter() {
            for text in [name, value] {
                let number = seen.iter().position(|s| s == text).unwrap_or_else(|| {
                    varint(text.len() as u64, &mut texts);
                    texts.extend_from_slice(text.as_bytes());
                    seen.push(text.to_string());
                    seen.len() - 1
                });
                varint(number as u64, &mut numbers);
            }
        }
        varint(chunks.len() as u64, &mut numbers);
        for chunk in chunks {
            chunk.encode_head(&mut previous, &mut heads);
            bits.extend_from_slice(chunk.bytes());
        }
    }
    let mut out = b"TSNAP2".to_vec();
    varint(series.len() as u64, &mut out);
    varint(seen.len() as u64, &mut out);
    for part in [texts, numbers, heads, bits] {
        varint(part.len() as u64, &mut out);
        out.extend_from_slice(&part);
    }
    out
}

#[test]
fn a_snapshot_of_the_second_layout_opens() {
    let up = labels(&[("__name__", "up"), ("job", "api")]);
    let (mut sealed, mut head) = (Chunk::new(), Chunk::new());
    let mut want = Vec::new();
    for i in 0..150i64 {
        let v = 1000.0 + (i * i) as f64 / 4.0;
        if i < 120 { &mut sealed } else { &mut head }.push(i * 15_000, v);
        want.push((i * 15_000, v));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("snapshot"), by_kind(&[(up.clone(), vec![sealed, head])])).unwrap();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    assert_eq!(db.select(&[Match::Equal("job".into(), "api".into())], 0, i64::MAX)[0].samples, want);
    assert_eq!(db.stats().samples, 150);
}

#[test]
fn a_snapshot_of_the_first_layout_opens_and_its_head_chunks_take_more_samples() {
    let up = labels(&[("__name__", "up"), ("job", "api")]);
    let temperature = labels(&[("__name__", "temperature"), ("room", "b12")]);
    let (mut sealed, mut head, mut gauge) =
        (Chunk::with_format(Format::Xor), Chunk::with_format(Format::Scaled), Chunk::with_format(Format::Scaled));
    let mut want = Vec::new();
    for i in 0..130i64 {
        let chunk = if i < 120 { &mut sealed } else { &mut head };
        chunk.push(i * 15_000, (i % 2) as f64);
        want.push((i * 15_000, (i % 2) as f64));
        gauge.push(i * 10_000, 20.0 + i as f64 / 8.0);
    }
    let dir = tempfile::tempdir().unwrap();
    let old = series_after_series(&[(up.clone(), vec![sealed, head]), (temperature.clone(), vec![gauge])]);
    std::fs::write(dir.path().join("snapshot"), old).unwrap();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    assert_eq!(db.select(&[Match::Equal("job".into(), "api".into())], 0, i64::MAX)[0].samples, want);
    // Both heads go on, in their own format, then past a new chunk in the current one.
    let more: Vec<_> =
        (130..250i64).flat_map(|i| [(up.clone(), i * 15_000, 1.0), (temperature.clone(), i * 10_000, 0.5)]).collect();
    db.append(&more).unwrap();
    want.extend((130..250i64).map(|i| (i * 15_000, 1.0)));
    db.checkpoint().unwrap();
    drop(db);
    let bytes = std::fs::read(dir.path().join("snapshot")).unwrap();
    let mut plain = Vec::new();
    flate2::read::DeflateDecoder::new(&bytes[6..]).read_to_end(&mut plain).unwrap();
    assert!(plain.starts_with(b"TSNAP3"), "a checkpoint writes the current layout");
    let db = Db::open(dir.path(), Options::default()).unwrap();
    assert_eq!(db.select(&[Match::Equal("job".into(), "api".into())], 0, i64::MAX)[0].samples, want);
    let room = db.select(&[Match::Equal("room".into(), "b12".into())], 0, i64::MAX);
    assert_eq!(room[0].samples.len(), 250);
    assert_eq!(room[0].samples[129], (1_290_000, 20.0 + 129.0 / 8.0));
    assert_eq!(room[0].samples[249], (2_490_000, 0.5));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A damaged snapshot opens as what it says or is refused as damaged, never a panic.
    #[test]
    fn a_damaged_snapshot_is_refused_or_read_never_a_panic(
        damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), Options::default()).unwrap();
        db.append(&six_minutes(2)).unwrap();
        db.checkpoint().unwrap();
        drop(db);
        let path = dir.path().join("snapshot");
        let bytes = std::fs::read(&path).unwrap();
        // Damage the inflated layout (a snapshot need not be deflated to be read).
        let mut plain = Vec::new();
        flate2::read::DeflateDecoder::new(&bytes[6..]).read_to_end(&mut plain).unwrap();
        for (at, byte) in &damage {
            let at = at.index(plain.len());
            plain[at] = *byte;
        }
        plain.truncate(plain.len() - cut.index(plain.len() / 8 + 1));
        std::fs::write(&path, &plain).unwrap();
        match Db::open(dir.path(), Options::default()) {
            Ok(db) => prop_assert!(db.stats().series <= 200),
            // A damaged snapshot may also name a block that is not there.
            Err(error) => prop_assert!(
                error.to_string().contains("is damaged at byte") || error.to_string().contains("is missing"),
                "{}",
                error
            ),
        }
    }
}
