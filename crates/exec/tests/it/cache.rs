//! The content-addressed cache: round trips, restore keys, concurrency and eviction.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use exec::cache::{CacheStore, Saved};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn round_trip_keeps_contents_modes_and_links() {
    let dir = tempfile::tempdir().unwrap();
    let store = CacheStore::open(&dir.path().join("cache"), 1 << 30).unwrap();
    let ws = dir.path().join("ws");
    write(&ws.join("target/bin/tool"), "#!/bin/sh\necho hi\n");
    std::fs::set_permissions(ws.join("target/bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    write(&ws.join("target/data.txt"), "data");
    std::os::unix::fs::symlink("data.txt", ws.join("target/link")).unwrap();
    let saved = store.save("repo", "v1", "key-1", &[ws.join("target")], &ws).unwrap();
    assert!(matches!(saved, Saved::Stored { size: 22, .. }), "{saved:?}");
    assert_eq!(store.save("repo", "v1", "key-1", &[ws.join("target")], &ws).unwrap(), Saved::Exists);

    let other = dir.path().join("other");
    let restored = store.restore("repo", "v1", "key-1", &[], &other).unwrap().unwrap();
    assert!(restored.exact);
    assert_eq!(std::fs::read_to_string(other.join("target/data.txt")).unwrap(), "data");
    assert_eq!(std::fs::metadata(other.join("target/bin/tool")).unwrap().permissions().mode() & 0o777, 0o755);
    assert_eq!(std::fs::read_link(other.join("target/link")).unwrap(), Path::new("data.txt"));
    // Another scope or version sees nothing.
    assert!(store.restore("other-repo", "v1", "key-1", &[], &other).unwrap().is_none());
    assert!(store.restore("repo", "v2", "key-1", &[], &other).unwrap().is_none());
}

#[test]
fn restore_keys_take_the_newest_prefix_match() {
    let dir = tempfile::tempdir().unwrap();
    let store = CacheStore::open(&dir.path().join("cache"), 1 << 30).unwrap();
    let ws = dir.path().join("ws");
    for (key, text) in [("deps-aaa", "old"), ("deps-bbb", "new")] {
        write(&ws.join("f.txt"), text);
        store.save("repo", "v", key, &[ws.join("f.txt")], &ws).unwrap();
    }
    std::fs::remove_file(ws.join("f.txt")).unwrap();
    let restored = store.restore("repo", "v", "deps-ccc", &["deps-".to_string()], &ws).unwrap().unwrap();
    assert_eq!((restored.key.as_str(), restored.exact), ("deps-bbb", false));
    assert_eq!(std::fs::read_to_string(ws.join("f.txt")).unwrap(), "new");
}

#[test]
fn concurrent_saves_and_restores_stay_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let root = root.clone();
            let base = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let store = CacheStore::open(&root, 1 << 30).unwrap();
                let ws = base.join(format!("ws{i}"));
                // Half the entries share content, so blobs are written concurrently too.
                write(&ws.join("shared.txt"), "same bytes in every job");
                write(&ws.join("own.txt"), &format!("job {i}"));
                store.save("repo", "v", &format!("k{i}"), &[ws.join("shared.txt"), ws.join("own.txt")], &ws).unwrap();
                store.save("repo", "v", "contended", &[ws.join("own.txt")], &ws).unwrap();
                let out = base.join(format!("out{i}"));
                let restored = store.restore("repo", "v", &format!("k{i}"), &[], &out).unwrap().unwrap();
                assert!(restored.exact);
                assert_eq!(std::fs::read_to_string(out.join("own.txt")).unwrap(), format!("job {i}"));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let store = CacheStore::open(&root, 1 << 30).unwrap();
    let out = dir.path().join("final");
    let restored = store.restore("repo", "v", "contended", &[], &out).unwrap().unwrap();
    assert!(restored.exact);
    assert!(std::fs::read_to_string(out.join("own.txt")).unwrap().starts_with("job "));
}

#[test]
fn least_recently_used_entries_are_evicted_and_their_blobs_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = CacheStore::open(&dir.path().join("cache"), 2500).unwrap();
    let ws = dir.path().join("ws");
    for key in ["a", "b"] {
        write(&ws.join("f"), &key.repeat(1000));
        store.save("repo", "v", key, &[ws.join("f")], &ws).unwrap();
    }
    // Using `a` makes `b` the least recently used.
    store.restore("repo", "v", "a", &[], &dir.path().join("r")).unwrap().unwrap();
    write(&ws.join("f"), &"c".repeat(1000));
    let saved = store.save("repo", "v", "c", &[ws.join("f")], &ws).unwrap();
    assert!(matches!(saved, Saved::Stored { n_evicted: 1, .. }), "{saved:?}");
    assert!(store.restore("repo", "v", "b", &[], &dir.path().join("r")).unwrap().is_none());
    assert!(store.restore("repo", "v", "a", &[], &dir.path().join("r")).unwrap().is_some());
    assert_eq!(store.disk_usage(), 2000);
}
