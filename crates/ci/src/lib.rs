//! Pure CI logic: matrix expansion, the job graph, trigger filters, cache-key selection and the
//! checks that need the whole workflow. No IO, no async, no clock.

pub mod cache;
pub mod check;
pub mod filter;
pub mod matrix;
pub mod plan;
