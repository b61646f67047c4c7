//! Deploy targets and traffic: the weighted, version-aware reverse proxy in front of an
//! environment, and the canary controller that moves traffic by the analysis' verdicts.

pub mod canary;
pub mod proxy;
