//! Fuzz target: any text as a scrape or an import (Prometheus text and OpenMetrics), and as a
//! PromQL query evaluated over what it stored.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = metrics::exposition::parse(text);
    if let Ok(dir) = tempfile::tempdir()
        && let Ok(db) = metrics::Db::open(dir.path(), metrics::Options::default())
    {
        let _ = db.append(&[(metrics::Labels::new(vec![("__name__".into(), "up".into())]), 0, 1.0)]);
        let _ = metrics::promql::Engine::instant(&db, text, 60_000);
    }
});
