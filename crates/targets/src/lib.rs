//! Deploy targets and traffic: supervised processes, the weighted, version-aware reverse proxy
//! in front of an environment, and the canary controller that moves traffic by the verdicts.

pub mod canary;
pub mod instance;
pub mod process;
pub mod proxy;

/// Why an instance could not be started or did not become ready, with what to do.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("a process target needs at least one instance")]
    NoInstances,
    #[error("cannot find a free port: {0}")]
    Port(#[source] std::io::Error),
    #[error("the instance on {addr} did not {what} within {within:?}")]
    NotReady { addr: std::net::SocketAddr, what: String, within: std::time::Duration },
    /// The instance ended while it was awaited: its exit and last lines.
    #[error("{0}")]
    Exited(String),
    #[error("the image `{0}` is not on this Docker engine; build or pull it first")]
    ImageMissing(String),
    /// The Docker engine refused a call: which and why.
    #[error("{0}")]
    Engine(String),
}

/// For callers whose errors are messages for people.
impl From<TargetError> for String {
    fn from(error: TargetError) -> String {
        error.to_string()
    }
}
