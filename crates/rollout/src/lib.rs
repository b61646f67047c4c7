//! Progressive delivery, pure: judging a canary against stable as requests arrive, and deciding a
//! rollout's next move. No IO, no clock: time, outcomes and observations are passed in.

pub mod analysis;
pub mod reconcile;
pub mod simulate;
