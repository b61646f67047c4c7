//! Forges: what their webhooks say (GitHub, Gitea/Forgejo, GitLab) and how to trust it.
//!
//! Pure: payload bytes and header values in, a normalized [`webhook::Change`] out.

pub mod webhook;
