//! Deploy targets and traffic: supervised processes, the weighted, version-aware reverse proxy
//! in front of an environment, and the canary controller that moves traffic by the verdicts.

pub mod canary;
pub mod instance;
pub mod process;
pub mod proxy;
