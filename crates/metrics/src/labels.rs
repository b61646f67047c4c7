//! Label sets: sorted by name, `__name__` included, compared and hashed as a whole.

use std::fmt;

/// The label that holds a series' metric name.
pub const NAME: &str = "__name__";

/// A series' identity: label pairs sorted by name, without empty values (an empty value is the
/// same as no label, as in Prometheus).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    pub fn new(mut pairs: Vec<(String, String)>) -> Labels {
        pairs.retain(|(_, v)| !v.is_empty());
        pairs.sort();
        pairs.dedup_by(|a, b| a.0 == b.0);
        Labels(pairs)
    }

    pub fn get(&self, name: &str) -> &str {
        self.0.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v.as_str())
    }

    pub fn name(&self) -> &str {
        self.get(NAME)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// These labels with `name` set to `value` (removed when `value` is empty).
    pub fn with(&self, name: &str, value: &str) -> Labels {
        let mut pairs: Vec<(String, String)> = self.0.iter().filter(|(n, _)| n != name).cloned().collect();
        if !value.is_empty() {
            pairs.push((name.to_string(), value.to_string()));
        }
        Labels::new(pairs)
    }

    /// These labels with `overrides` laid over them (an override's empty value removes the
    /// label): one pass over two sorted lists.
    pub fn merged(&self, overrides: &Labels) -> Labels {
        let (a, b) = (&self.0, &overrides.0);
        let mut out = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) if x.0 == y.0 => {
                    out.push(y.clone());
                    i += 1;
                    j += 1;
                }
                (Some(x), Some(y)) if x.0 < y.0 => {
                    out.push(x.clone());
                    i += 1;
                }
                (Some(_), Some(y)) | (None, Some(y)) => {
                    out.push(y.clone());
                    j += 1;
                }
                (Some(x), None) => {
                    out.push(x.clone());
                    i += 1;
                }
                (None, None) => break,
            }
        }
        out.retain(|(_, v)| !v.is_empty());
        Labels(out)
    }

    pub fn without_name(&self) -> Labels {
        self.retain(|n| n != NAME)
    }

    /// Only the labels `keep` says yes to.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> Labels {
        Labels(self.0.iter().filter(|(n, _)| keep(n)).cloned().collect())
    }
}

impl fmt::Display for Labels {
    /// `name{a="1", b="2"}`, as Prometheus prints a series.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{{", self.name())?;
        let mut first = true;
        for (n, v) in self.iter().filter(|(n, _)| *n != NAME) {
            if !first {
                write!(f, ", ")?;
            }
            first = false;
            write!(f, "{n}={v:?}")?;
        }
        write!(f, "}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_lays_overrides_over_and_keeps_the_order() {
        let base = Labels::new(vec![("a".into(), "1".into()), ("job".into(), "x".into()), ("z".into(), "9".into())]);
        let over = Labels::new(vec![("job".into(), "y".into()), ("m".into(), "5".into())]);
        let merged = base.merged(&over);
        let expected = Labels::new(vec![
            ("a".into(), "1".into()),
            ("job".into(), "y".into()),
            ("m".into(), "5".into()),
            ("z".into(), "9".into()),
        ]);
        assert_eq!(merged, expected);
    }
}
