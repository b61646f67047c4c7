//! Integration tests of the `exec` crate against the real file system and real processes.

mod cache;
mod engine;
mod process;
