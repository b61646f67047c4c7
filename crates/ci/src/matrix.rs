//! `strategy.matrix` expansion with GitHub's `include` / `exclude` rules.

use spec::expr::Value;

/// Most jobs one matrix may expand to.
pub const MAX_COMBINATIONS: usize = 256;

/// One leg of a matrix: variables in the order the file lists them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Combination(pub Vec<(String, Value)>);

impl Combination {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn set(&mut self, key: &str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    pub fn to_value(&self) -> Value {
        Value::Object(self.0.iter().cloned().collect())
    }

    /// The suffix GitHub shows after a matrix job's name: `(ubuntu, 1.70)`.
    pub fn label(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|(_, v)| describe(v)).collect();
        format!("({})", parts.join(", "))
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Object(map) => map.values().map(describe).collect::<Vec<_>>().join(", "),
        Value::Array(items) => items.iter().map(describe).collect::<Vec<_>>().join(", "),
        other => other.to_text(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatrixError {
    NotAMapping,
    NotAList(String),
    EntryNotAMapping(&'static str),
    TooLarge(usize),
}

impl std::fmt::Display for MatrixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MatrixError::NotAMapping => f.write_str("the matrix must be a mapping of variables to lists"),
            MatrixError::NotAList(key) => write!(f, "matrix variable `{key}` must be a list"),
            MatrixError::EntryNotAMapping(which) => write!(f, "every entry of `{which}` must be a mapping"),
            MatrixError::TooLarge(n) => {
                write!(f, "the matrix expands to {n} jobs, more than the limit of {MAX_COMBINATIONS}")
            }
        }
    }
}

impl std::error::Error for MatrixError {}

/// Expands a matrix. `key_order` is the order of the variables in the file (objects sort their
/// keys); variables missing from it come after, sorted.
pub fn expand(matrix: &Value, key_order: &[String]) -> Result<Vec<Combination>, MatrixError> {
    let Value::Object(map) = matrix else { return Err(MatrixError::NotAMapping) };
    let mut keys: Vec<&String> = key_order.iter().filter(|k| map.contains_key(*k)).collect();
    for key in map.keys() {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let base_keys: Vec<&String> = keys.into_iter().filter(|k| *k != "include" && *k != "exclude").collect();
    let mut combinations: Vec<Combination> = Vec::new();
    if !base_keys.is_empty() {
        combinations.push(Combination::default());
        for key in &base_keys {
            let Value::Array(values) = &map[*key] else { return Err(MatrixError::NotAList((*key).clone())) };
            let size = combinations.len().saturating_mul(values.len());
            if size > MAX_COMBINATIONS * 16 {
                return Err(MatrixError::TooLarge(size));
            }
            combinations = combinations
                .iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.0.push(((*key).clone(), v.clone()));
                        c
                    })
                })
                .collect();
        }
    }
    if let Some(exclude) = map.get("exclude") {
        let entries = entries(exclude, "exclude")?;
        combinations.retain(|c| {
            !entries.iter().any(|e| e.iter().all(|(k, v)| c.get(k).is_some_and(|cv| partial_match(cv, v))))
        });
    }
    if let Some(include) = map.get("include") {
        let n_base = combinations.len();
        for entry in entries(include, "include")? {
            let mut matched = false;
            for combination in combinations.iter_mut().take(n_base) {
                let fits = entry.iter().all(|(k, v)| !base_keys.contains(k) || combination.get(k) == Some(v));
                if fits {
                    matched = true;
                    for (k, v) in entry.iter().filter(|(k, _)| !base_keys.contains(k)) {
                        combination.set(k, (*v).clone());
                    }
                }
            }
            if !matched {
                let mut fresh: Vec<(String, Value)> = entry.iter().map(|(k, v)| ((*k).clone(), (*v).clone())).collect();
                fresh.sort_by_key(|(k, _)| base_keys.iter().position(|b| *b == k).unwrap_or(usize::MAX));
                combinations.push(Combination(fresh));
            }
        }
    }
    if combinations.len() > MAX_COMBINATIONS {
        return Err(MatrixError::TooLarge(combinations.len()));
    }
    Ok(combinations)
}

fn entries<'v>(value: &'v Value, which: &'static str) -> Result<Vec<Vec<(&'v String, &'v Value)>>, MatrixError> {
    let Value::Array(items) = value else { return Err(MatrixError::EntryNotAMapping(which)) };
    items
        .iter()
        .map(|item| match item {
            Value::Object(map) => Ok(map.iter().collect()),
            _ => Err(MatrixError::EntryNotAMapping(which)),
        })
        .collect()
}

/// `exclude` entries match partially: an object in the entry matches when its keys match.
fn partial_match(actual: &Value, wanted: &Value) -> bool {
    match (actual, wanted) {
        (Value::Object(a), Value::Object(w)) => w.iter().all(|(k, v)| a.get(k).is_some_and(|av| partial_match(av, v))),
        _ => actual == wanted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(json: serde_json::Value) -> Value {
        Value::from_json(&json)
    }

    fn labels(matrix: serde_json::Value, order: &[&str]) -> Vec<String> {
        let order: Vec<String> = order.iter().map(|s| s.to_string()).collect();
        expand(&value(matrix), &order)
            .unwrap()
            .iter()
            .map(|c| c.0.iter().map(|(k, v)| format!("{k}={}", v.to_text())).collect::<Vec<_>>().join(","))
            .collect()
    }

    #[test]
    fn product_in_file_order() {
        let got = labels(serde_json::json!({"os": ["linux", "mac"], "v": [1, 2]}), &["v", "os"]);
        assert_eq!(got, ["v=1,os=linux", "v=1,os=mac", "v=2,os=linux", "v=2,os=mac"]);
    }

    #[test]
    fn github_documented_include_example() {
        // The example from GitHub's documentation of `include`.
        let matrix = serde_json::json!({
            "fruit": ["apple", "pear"],
            "animal": ["cat", "dog"],
            "include": [
                {"color": "green"},
                {"color": "pink", "animal": "cat"},
                {"fruit": "apple", "shape": "circle"},
                {"fruit": "banana"},
                {"fruit": "banana", "animal": "cat"}
            ]
        });
        let got = labels(matrix, &["fruit", "animal", "include"]);
        assert_eq!(
            got,
            [
                "fruit=apple,animal=cat,color=pink,shape=circle",
                "fruit=apple,animal=dog,color=green,shape=circle",
                "fruit=pear,animal=cat,color=pink",
                "fruit=pear,animal=dog,color=green",
                "fruit=banana",
                "fruit=banana,animal=cat",
            ]
        );
    }

    #[test]
    fn exclude_matches_partially() {
        let matrix = serde_json::json!({
            "os": ["macos", "windows"], "version": [12, 14, 16], "environment": ["staging", "production"],
            "exclude": [{"os": "macos", "version": 12, "environment": "production"}, {"os": "windows", "version": 16}]
        });
        assert_eq!(expand(&value(matrix), &[]).unwrap().len(), 12 - 1 - 2);
    }

    #[test]
    fn include_only_and_limits() {
        let got = labels(serde_json::json!({"include": [{"a": 1}, {"b": 2}]}), &[]);
        assert_eq!(got, ["a=1", "b=2"]);
        let big = serde_json::json!({"a": (0..20).collect::<Vec<_>>(), "b": (0..20).collect::<Vec<_>>()});
        assert_eq!(expand(&value(big), &[]).unwrap_err(), MatrixError::TooLarge(400));
        assert_eq!(expand(&value(serde_json::json!({"a": 1})), &[]).unwrap_err(), MatrixError::NotAList("a".into()));
    }
}
