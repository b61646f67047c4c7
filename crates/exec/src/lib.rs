//! Running workflows: the [`Executor`] port with its local-process adapter, and the engine that
//! drives jobs, steps, the cache and artifacts.

pub mod actions;
pub mod artifact_service;
pub mod artifacts;
pub mod cache;
pub mod cache_service;
mod cancel;
pub mod commands;
pub mod docker;
pub mod engine;
pub mod paths;
pub mod process;
mod spawn;

use std::future::Future;
use std::pin::Pin;

pub use cancel::{Cancel, CancelSource};
use process::{Exit, ProcessGroups, ProcessSpec, Stream};
use tokio::sync::mpsc;

/// Resolves after `limit`, or never without one: the timeout arm of a step's `select!`.
pub(crate) async fn sleep_for(limit: Option<std::time::Duration>) {
    match limit {
        Some(limit) => tokio::time::sleep(limit).await,
        None => std::future::pending().await,
    }
}

/// Where a step's command runs.
///
/// Contract: `run` starts the command, sends every output line to `lines` as it arrives, and
/// resolves when the command has ended — also when `cancel` fires or `spec.timeout` passes, in
/// which case the command and everything it started are killed first. It returns the process
/// group it created (if any) so that the caller can kill leftovers when the job ends. It never
/// panics on a command that fails to start: that is `Exit::NotStarted` with a line saying why.
/// Implementations are shared between concurrent jobs.
pub trait Executor: Send + Sync {
    fn run<'a>(
        &'a self,
        spec: &'a ProcessSpec,
        lines: &'a mpsc::Sender<(Stream, String)>,
        cancel: &'a Cancel,
        groups: &'a ProcessGroups,
    ) -> Pin<Box<dyn Future<Output = (Exit, Option<i32>)> + Send + 'a>>;
}

impl std::fmt::Debug for dyn Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn Executor")
    }
}

/// Where progress lines go, awaited: a slow reader slows the writer instead of lines piling up.
pub trait LineSink: Send + Sync {
    fn line<'a>(&'a self, text: String) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// Runs steps as processes on this machine, each in its own process group.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalExecutor;

impl Executor for LocalExecutor {
    fn run<'a>(
        &'a self,
        spec: &'a ProcessSpec,
        lines: &'a mpsc::Sender<(Stream, String)>,
        cancel: &'a Cancel,
        groups: &'a ProcessGroups,
    ) -> Pin<Box<dyn Future<Output = (Exit, Option<i32>)> + Send + 'a>> {
        Box::pin(process::run(spec, lines, cancel, groups))
    }
}
