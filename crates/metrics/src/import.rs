//! Backfill: a whole exposition with a timestamp on every sample (OpenMetrics, as `promtool tsdb
//! create-blocks-from openmetrics` reads it) appended to a store.
//!
//! Each series' labels are built once, at its first line; its other lines cost a value parse
//! (the scrape cache's reading). Samples are appended in time order: each series' first sample
//! with its labels, then the rest by series id.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::exposition::{ParseError, Scanned, parse_cached};
use crate::{Db, DbError, Labels};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("sample {number} ({labels}) has no timestamp\n  hint: imported history needs a timestamp on every sample")]
    NoTimestamp { number: usize, labels: String },
    #[error(transparent)]
    Store(#[from] DbError),
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    /// Samples the file holds.
    pub samples: usize,
    /// Samples the store took; the others were not after their series' newest sample (or their
    /// series was beyond the store's limit).
    pub accepted: usize,
    /// Series the file holds.
    pub series: usize,
}

/// Appends every sample of `text` to `db`. Nothing is appended when the text does not parse or
/// a sample lacks its timestamp.
pub fn import(db: &Db, text: &str) -> Result<Imported, ImportError> {
    // Series text → its index here; a key is known from its second line on.
    let index: RefCell<HashMap<Box<str>, u32>> = RefCell::new(HashMap::new());
    let scanned = parse_cached(text, |key| {
        let mut index = index.borrow_mut();
        if let Some(found) = index.get(key) {
            return Some(*found);
        }
        let next = index.len() as u32;
        index.insert(key.into(), next);
        None
    })?;
    let mut index = index.into_inner();
    let mut labels: Vec<Option<Labels>> = vec![None; index.len()];
    let mut samples: Vec<(u32, i64, f64)> = Vec::with_capacity(scanned.len());
    for (number, entry) in scanned.into_iter().enumerate() {
        let (series, t, value) = match entry {
            Scanned::Known { series, value, t } => (series, t, value),
            Scanned::New { key, sample } => {
                let series = match index.get(key) {
                    Some(series) => *series,
                    None => {
                        // A line whose series text could not be cut out: a series of its own.
                        let next = labels.len() as u32;
                        index.insert(key.into(), next);
                        labels.push(None);
                        next
                    }
                };
                labels[series as usize] = Some(sample.labels);
                (series, sample.t, sample.value)
            }
        };
        let Some(t) = t else {
            let labels = labels[series as usize].as_ref().map(ToString::to_string).unwrap_or_default();
            return Err(ImportError::NoTimestamp { number: number + 1, labels });
        };
        samples.push((series, t, value));
    }
    samples.sort_by_key(|(_, t, _)| *t);
    let total = samples.len();
    let labels: Vec<Labels> = labels.into_iter().map(Option::unwrap_or_default).collect();
    // Each series' first sample brings its labels; the store gives it an id.
    let mut seen = vec![false; labels.len()];
    let mut first = Vec::with_capacity(labels.len());
    let mut rest = Vec::with_capacity(total);
    for (series, t, value) in samples {
        if std::mem::replace(&mut seen[series as usize], true) {
            rest.push((series, t, value));
        } else {
            first.push((labels[series as usize].clone(), t, value));
        }
    }
    let refused_all = |result: Result<usize, DbError>| match result {
        Ok(n) => Ok(n),
        Err(DbError::OutOfOrder { .. } | DbError::TooManySeries { .. }) => Ok(0),
        Err(error) => Err(error),
    };
    let mut accepted = refused_all(db.append(&first))?;
    let ids: Vec<Option<u32>> = labels.iter().map(|l| db.id(l)).collect();
    let rest: Vec<(u32, i64, f64)> =
        rest.into_iter().filter_map(|(series, t, value)| Some((ids[series as usize]?, t, value))).collect();
    accepted += refused_all(db.append_ids(&rest))?;
    Ok(Imported { samples: total, accepted, series: labels.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_interleaved_series_is_stored_in_time_order_and_counts_what_was_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), crate::Options::default()).unwrap();
        let text = "# TYPE a counter\na_total{x=\"1\"} 1 10\na_total{x=\"2\"} 5 10\na_total{x=\"1\"} 2 20\n\
                    a_total{x=\"2\"} 6 20\na_total{x=\"1\"} 3 30\n# EOF\n";
        let imported = import(&db, text).unwrap();
        assert_eq!(imported, Imported { samples: 5, accepted: 5, series: 2 });
        let one = Labels::new(vec![("__name__".into(), "a_total".into()), ("x".into(), "1".into())]);
        let id = db.id(&one).expect("the series is stored");
        let data = db.select(&[crate::Match::Equal("x".into(), "1".into())], 0, i64::MAX);
        assert_eq!(data.len(), 1);
        assert_eq!(data[0].samples, [(10_000, 1.0), (20_000, 2.0), (30_000, 3.0)]);
        // The same file again: every sample is at or before its series' newest one.
        let again = import(&db, text).unwrap();
        assert_eq!(again, Imported { samples: 5, accepted: 0, series: 2 });
        assert_eq!(db.id(&one), Some(id));
    }

    #[test]
    fn a_sample_without_a_timestamp_stops_the_import_before_anything_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), crate::Options::default()).unwrap();
        let error = import(&db, "a{x=\"1\"} 1 10\na{x=\"1\"} 2\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "sample 2 (a{x=\"1\"}) has no timestamp\n  hint: imported history needs a timestamp on every sample"
        );
        assert_eq!(db.stats().samples, 0);
    }
}
