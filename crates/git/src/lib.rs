//! Git and forges: what their webhooks say (GitHub, Gitea/Forgejo, GitLab) and how to trust it
//! (`webhook`, pure: payload bytes and header values in, a normalized [`webhook::Change`] out),
//! and every git command Tandem runs (`repo`: one runner with a timeout, repository facts,
//! clean and working-tree checkouts, mirrors).

pub mod repo;
pub mod webhook;
