//! Memory per retained sample: 2,000 series (a third `%.3f` gauges on a random walk, the rest
//! counters) appended every 15 s for two days, and the process's resident memory before and after.
//!
//! `cargo run --release -p metrics --example retained` (add `--days N` for another span than two
//! days, `--no-checkpoint` to leave out the checkpoints the store makes as its log grows: then no
//! snapshot is written and no sealed chunk leaves memory for a block).

fn resident_bytes() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next());
    kib.and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) * 1024.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let checkpoints = !std::env::args().any(|a| a == "--no-checkpoint");
    let args: Vec<String> = std::env::args().collect();
    let days = args.iter().position(|a| a == "--days").and_then(|i| args.get(i + 1)?.parse::<i64>().ok()).unwrap_or(2);
    let (series, scrapes) = (2000, days * 5760);
    let dir = tempfile::tempdir()?;
    let options = metrics::Options {
        wal_bytes_before_checkpoint: if checkpoints { 64 << 20 } else { u64::MAX },
        ..metrics::Options::default()
    };
    let db = metrics::Db::open(dir.path(), options)?;
    let mut seed = 7u64;
    let mut uniform = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let first: Vec<_> = (0..series)
        .map(|i| (metrics::Labels::new(vec![("__name__".into(), "x".into()), ("i".into(), i.to_string())]), 0, 0.0))
        .collect();
    db.append(&first)?;
    let ids: Vec<u32> = first.iter().filter_map(|(labels, ..)| db.id(labels)).collect();
    let mut values: Vec<f64> = (0..series).map(|_| (uniform() * 1e5).round()).collect();
    let before = resident_bytes();
    for scrape in 1..scrapes {
        let batch: Vec<(u32, i64, f64)> = ids
            .iter()
            .zip(values.iter_mut())
            .enumerate()
            .map(|(i, (id, value))| {
                *value = if i % 3 == 0 {
                    ((*value + (uniform() - 0.5) * 4.0) * 1000.0).round() / 1000.0
                } else {
                    *value + (uniform() * 20.0).floor()
                };
                (*id, scrape * 15_000, *value)
            })
            .collect();
        db.append_ids(&batch)?;
    }
    let grown = resident_bytes() - before;
    let blocks = std::fs::read_dir(dir.path().join("blocks")).map_or(0, |entries| entries.count());
    let stats = db.stats();
    let samples = stats.samples as f64;
    println!(
        "{samples} samples: {:.2} B a sample of chunk bytes, {:.2} B a sample of resident memory ({:.0} MiB); {blocks} blocks on disk",
        stats.chunk_bytes as f64 / samples,
        grown / samples,
        grown / 1048576.0
    );
    Ok(())
}
