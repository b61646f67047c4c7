//! User-facing file formats turned into typed specs plus diagnostics with spans. Pure: no IO.
//!
//! Today: workflow files in GitHub Actions syntax ([`workflow`]) and the `${{ }}` expression
//! language ([`expr`]), on top of a span-carrying YAML tree ([`yaml`]).

pub mod diag;
pub mod expr;
pub mod workflow;
pub mod yaml;

pub use diag::{Diagnostic, Severity, Span};
