//! Fuzz target: any bytes as a commit object and as a tree object.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = git::objects::parse_commit(data);
    let _ = git::objects::parse_tree(data);
});
