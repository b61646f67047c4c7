//! Code management: hosted repositories over smart HTTP, change requests and their review, and
//! the merge queue that keeps each target branch green.

pub mod changes;
pub mod hosting;
pub mod queue;
