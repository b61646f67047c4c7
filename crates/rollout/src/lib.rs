//! Progressive delivery, pure: judging a canary against stable as requests arrive. No IO, no
//! clock: time and outcomes are passed in.

pub mod analysis;
pub mod simulate;
