//! User-facing file formats turned into typed specs plus diagnostics with spans. Pure: no IO.
//!
//! Today: workflow files in GitHub Actions syntax ([`workflow`]), the `${{ }}` expression
//! language ([`expr`]) and the service file ([`service`]), on top of a span-carrying YAML tree
//! ([`yaml`]).

pub mod alertmanager;
pub mod deps;
pub mod diag;
pub mod expr;
pub mod gitleaks;
pub mod monitors;
pub mod oncall;
pub mod openslo;
pub mod review;
pub mod rules;
pub mod service;
pub mod workflow;
pub mod yaml;

pub use diag::{Diagnostic, Severity, Span};
