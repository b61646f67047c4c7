//! Monitoring's data: the exposition formats targets serve, an embedded time-series store with a
//! write-ahead log and compressed chunks, and PromQL evaluated over it with Prometheus's
//! semantics (parsed by `promql-parser`, evaluated here).

mod blocks;
pub mod burn;
pub mod chunk;
mod codes;
pub mod db;
pub mod exposition;
pub mod import;
pub mod labels;
pub mod predict;
pub mod promql;
pub mod remote;
mod snapshot;

pub use db::{Db, DbError, Match, Options, SeriesData};
pub use labels::Labels;
