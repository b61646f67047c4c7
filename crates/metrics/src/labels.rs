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
