//! Sealed chunks on disk: blocks written at checkpoints read back as the samples they held, across
//! reopens; retention deletes them; a stray block is cleared, a missing or damaged one is named.

use std::path::Path;

use metrics::{Db, DbError, Labels, Match, Options};
use proptest::prelude::*;

use crate::{Noise, labels};

/// `hours` of `n` series scraped every 15 s from `from` (ms): counters and `%.3f` gauges.
fn hours(n: usize, from: i64, hours: i64, noise: &mut Noise) -> Vec<(Labels, i64, f64)> {
    let names: Vec<Labels> =
        (0..n).map(|i| labels(&[("__name__", if i % 2 == 0 { "c" } else { "g" }), ("i", &i.to_string())])).collect();
    let mut batch = Vec::new();
    for scrape in 0..hours * 240 {
        for (i, name) in names.iter().enumerate() {
            let t = from + scrape * 15_000;
            let v = if i % 2 == 0 { (t / 1000 * 3) as f64 } else { (noise.normal() * 1e5).round() / 1000.0 };
            batch.push((name.clone(), t, v));
        }
    }
    batch
}

fn all(db: &Db) -> Vec<metrics::SeriesData> {
    db.select(&[Match::NotEqual("i".into(), String::new())], i64::MIN, i64::MAX)
}

fn blocks(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("blocks"))
        .map(|entries| entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn sealed_chunks_move_to_blocks_and_read_back_the_same_after_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut noise = Noise(11);
    let db = Db::open(dir.path(), Options::default()).unwrap();
    db.append(&hours(40, 0, 8, &mut noise)).unwrap();
    let want = all(&db);
    let samples = db.stats().samples;
    db.checkpoint().unwrap();
    // Eight hours hold sealed chunks that ended more than two hours before the newest sample.
    assert_eq!(blocks(dir.path()), ["00000001"]);
    assert_eq!(all(&db), want, "the samples read back from the block are the ones appended");
    assert_eq!(db.stats().samples, samples);
    let block = std::fs::metadata(dir.path().join("blocks/00000001")).unwrap().len();
    let snapshot = std::fs::metadata(dir.path().join("snapshot")).unwrap().len();
    assert!(snapshot * 5 < block, "the snapshot names the runs ({snapshot} B) instead of holding them ({block} B)");
    drop(db);
    let db = Db::open(dir.path(), Options::default()).unwrap();
    assert_eq!(all(&db), want);
    assert_eq!(db.stats().samples, samples);
    // Three hours more: a second block, and a range within it reads only what it asks for.
    db.append(&hours(40, 8 * 3_600_000, 3, &mut noise)).unwrap();
    let want = all(&db);
    db.checkpoint().unwrap();
    drop(db);
    let db = Db::open(dir.path(), Options::default()).unwrap();
    assert_eq!(blocks(dir.path()), ["00000001", "00000002"]);
    assert_eq!(all(&db), want);
    let (from, to) = (7 * 3_600_000 + 7_000, 9 * 3_600_000);
    let range = db.select(&[Match::Equal("i".into(), "3".into())], from, to);
    assert_eq!(range[0].samples.len(), 480);
    assert!(range[0].samples.iter().all(|(t, _)| (from..=to).contains(t)));
    assert_eq!(db.failed_reads(), 0);
}

#[test]
fn retention_deletes_a_block_once_its_newest_sample_is_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options { retention_ms: 3 * 3_600_000, cold_after_ms: 0, ..Options::default() };
    let db = Db::open(dir.path(), options.clone()).unwrap();
    let mut noise = Noise(5);
    for hour in 0..10 {
        db.append(&hours(4, hour * 3_600_000, 1, &mut noise)).unwrap();
        db.checkpoint().unwrap();
    }
    // A block a checkpoint; those whose newest sample is over three hours old are gone.
    let left = blocks(dir.path());
    assert!((3..=5).contains(&left.len()), "{left:?}");
    assert_eq!(left.last().map(String::as_str), Some("00000010"));
    let newest = 10 * 3_600_000 - 15_000;
    let kept = &all(&db)[0].samples;
    assert!(kept.iter().all(|(t, _)| *t >= newest - 3 * 3_600_000 - 120 * 15_000), "{:?}", kept.first());
    assert_eq!(kept.iter().filter(|(t, _)| *t >= newest - 3 * 3_600_000).count(), 3 * 240 + 1);
    drop(db);
    let db = Db::open(dir.path(), options).unwrap();
    assert_eq!(&all(&db)[0].samples, kept);
}

#[test]
fn a_block_no_snapshot_names_is_cleared_and_a_missing_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    db.append(&hours(6, 0, 6, &mut Noise(3))).unwrap();
    db.checkpoint().unwrap();
    let want = all(&db);
    drop(db);
    // What a checkpoint that stopped before its snapshot leaves behind.
    std::fs::write(dir.path().join("blocks/00000002"), b"TBLK1\nhalf").unwrap();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    assert_eq!(blocks(dir.path()), ["00000001"]);
    assert_eq!(all(&db), want);
    drop(db);
    // A snapshot moved aside (as a damaged one's hint says): the blocks are set aside, not deleted.
    std::fs::rename(dir.path().join("snapshot"), dir.path().join("snapshot.damaged")).unwrap();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    drop(db);
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("blocks.without-snapshot."))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(dir.path().join(&aside[0]).join("00000001").exists());
    std::fs::remove_file(dir.path().join("snapshot")).ok();
    std::fs::rename(dir.path().join("snapshot.damaged"), dir.path().join("snapshot")).unwrap();
    std::fs::rename(dir.path().join(&aside[0]), dir.path().join("blocks")).unwrap();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    assert_eq!(all(&db), want, "the snapshot and its blocks put back read as before");
    drop(db);
    std::fs::remove_file(dir.path().join("blocks/00000001")).unwrap();
    match Db::open(dir.path(), Options::default()) {
        Err(error @ DbError::MissingBlock { .. }) => {
            let text = error.to_string();
            assert!(text.contains("blocks/00000001 is missing") && text.contains("hint:"), "{text}");
        }
        other => panic!("a store whose block is gone must not open as if whole: {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// A damaged block leaves the series it holds out of a query, counts the failed read and
    /// never panics; the other series read back whole.
    #[test]
    fn a_damaged_block_is_found_never_read_as_samples(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), Options::default()).unwrap();
        db.append(&hours(3, 0, 6, &mut Noise(9))).unwrap();
        db.checkpoint().unwrap();
        let want = all(&db);
        drop(db);
        let path = dir.path().join("blocks/00000001");
        let mut bytes = std::fs::read(&path).unwrap();
        let at = 6 + at.index(bytes.len() - 6);
        prop_assume!(bytes[at] != byte);
        bytes[at] = byte;
        std::fs::write(&path, &bytes).unwrap();
        let db = Db::open(dir.path(), Options::default()).unwrap();
        let got = all(&db);
        prop_assert_eq!(db.failed_reads(), 1);
        let whole = got.iter().zip(&want).filter(|(g, w)| g == w).count();
        prop_assert_eq!(whole, 2);
        for (g, w) in got.iter().zip(&want) {
            prop_assert!(w.samples.ends_with(&g.samples), "what is read is what was written");
        }
    }
}
