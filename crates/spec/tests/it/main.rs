//! Integration tests of the `spec` crate: real-world workflows, diagnostics, robustness.

mod alertmanager;
mod corpus;
mod deps;
mod diagnostics;
mod gitleaks;
mod monitors;
mod openslo;
mod robustness;
mod rules;
mod service;

use std::path::PathBuf;

/// The shared real-world corpus, if it is present next to the project.
pub fn corpus_dir(kind: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus").join(kind);
    if dir.is_dir() {
        Some(dir)
    } else if std::env::var_os("TANDEM_REQUIRE_CORPUS").is_some() {
        panic!("the corpus folder {} is missing; CI lays it beside the clone", dir.display());
    } else {
        eprintln!("note: {} is missing; corpus cases skipped", dir.display());
        None
    }
}
