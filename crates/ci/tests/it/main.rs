//! Property tests of the pure CI logic: the job graph and matrix expansion.

mod graph;
mod matrix;
