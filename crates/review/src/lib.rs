//! Code review without IO: the merge queue as a state machine and its simulation, code owners
//! (GitHub's `CODEOWNERS`), and whether a change meets its requirements.

pub mod owners;
pub mod queue;
pub mod simulate;
