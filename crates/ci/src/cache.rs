//! Which cache entry a restore takes: `actions/cache` key and `restore-keys` semantics.

/// What the selection needs to know about a stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    pub key: String,
    /// A monotonic creation stamp: larger is newer.
    pub created: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub key: String,
    /// True when the primary key matched exactly (`cache-hit` output).
    pub exact: bool,
}

/// An exact match on `key` first; then each restore key in order as a prefix, newest entry first.
pub fn select(entries: &[EntryInfo], key: &str, restore_keys: &[String]) -> Option<Selection> {
    if entries.iter().any(|e| e.key == key) {
        return Some(Selection { key: key.to_string(), exact: true });
    }
    for prefix in restore_keys.iter().filter(|p| !p.is_empty()) {
        let newest = entries.iter().filter(|e| e.key.starts_with(prefix.as_str())).max_by_key(|e| e.created);
        if let Some(entry) = newest {
            return Some(Selection { key: entry.key.clone(), exact: false });
        }
    }
    None
}

/// Entries to evict, least recently used first, until the total fits in `limit` bytes.
/// `entries` are `(key, size, last_used)`.
pub fn evictions(entries: &[(String, u64, u64)], limit: u64) -> Vec<String> {
    let mut total: u64 = entries.iter().map(|e| e.1).sum();
    let mut by_age: Vec<&(String, u64, u64)> = entries.iter().collect();
    by_age.sort_by_key(|e| e.2);
    let mut out = Vec::new();
    for (key, size, _) in by_age {
        if total <= limit {
            break;
        }
        total -= size;
        out.push(key.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<EntryInfo> {
        vec![
            EntryInfo { key: "linux-cargo-aaa".into(), created: 1 },
            EntryInfo { key: "linux-cargo-bbb".into(), created: 3 },
            EntryInfo { key: "linux-npm-ccc".into(), created: 2 },
        ]
    }

    #[test]
    fn exact_then_prefixes_newest_first() {
        let restore = vec!["linux-cargo-".to_string(), "linux-".to_string()];
        assert_eq!(
            select(&entries(), "linux-cargo-aaa", &restore),
            Some(Selection { key: "linux-cargo-aaa".into(), exact: true })
        );
        assert_eq!(
            select(&entries(), "linux-cargo-zzz", &restore),
            Some(Selection { key: "linux-cargo-bbb".into(), exact: false })
        );
        assert_eq!(select(&entries(), "mac-x", &["mac-".to_string()]), None);
        assert_eq!(select(&entries(), "linux-go", &["linux-n".to_string()]).unwrap().key, "linux-npm-ccc");
    }

    #[test]
    fn evicts_least_recently_used() {
        let entries = vec![("a".to_string(), 50, 10), ("b".to_string(), 50, 5), ("c".to_string(), 50, 20)];
        assert_eq!(evictions(&entries, 100), ["b"]);
        assert_eq!(evictions(&entries, 40), ["b", "a", "c"]);
        assert!(evictions(&entries, 150).is_empty());
    }
}
