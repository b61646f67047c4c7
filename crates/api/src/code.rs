//! Hosted repositories, change requests and the merge queue: the bodies of `/api/v1/hosted` and
//! `/api/v1/repos/{name}/changes…`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/v1/hosted`: a repository the server hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreateHosted {
    pub name: String,
    /// Branches that move only through the merge queue; `["main"]` when absent.
    #[serde(default)]
    pub protected: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostedRepository {
    pub name: String,
    /// What `git clone` takes (a token as the password).
    pub clone_url: String,
    pub protected: Vec<String>,
}

/// A change request as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChangeSummary {
    pub number: i64,
    pub title: String,
    pub author: String,
    pub target: String,
    /// `open`, `queued`, `ejected`, `merged` or `abandoned`.
    pub status: String,
    pub reason: Option<String>,
    /// Its latest revision and commit.
    pub revision: i64,
    pub sha: String,
    pub updated: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevisionInfo {
    pub number: i64,
    pub sha: String,
    pub base: String,
    pub pushed_by: String,
    pub created: String,
}

/// An approval or a comment (on a line when `path` and `line` are given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReviewInfo {
    pub id: i64,
    pub revision: i64,
    pub kind: String,
    pub author: String,
    pub path: Option<String>,
    pub line: Option<i64>,
    pub body: String,
    pub resolved: bool,
    pub created: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChangeRun {
    pub id: i64,
    pub workflow: String,
    pub status: String,
    pub sha: String,
}

/// Another open change that touches the same lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConflictWarning {
    pub with: i64,
    pub files: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChangeDetail {
    pub change: ChangeSummary,
    pub revisions: Vec<RevisionInfo>,
    pub reviews: Vec<ReviewInfo>,
    pub runs: Vec<ChangeRun>,
    /// Who approved the current code (the author's own approval does not count).
    pub approvers: Vec<String>,
    /// What it still lacks before it may enter the merge queue; empty: it may.
    pub missing: Vec<String>,
    pub conflicts: Vec<ConflictWarning>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CommentRequest {
    pub body: String,
    pub path: Option<String>,
    pub line: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MergeRequest {
    /// Higher goes first among the changes waiting; 0 when absent.
    #[serde(default)]
    pub priority: Option<i32>,
}

/// One merge queue: changes waiting (by number, in order) and batches under test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueueInfo {
    pub target: String,
    pub waiting: Vec<i64>,
    pub batches: Vec<BatchInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchInfo {
    pub id: u64,
    pub changes: Vec<i64>,
    pub commit: Option<String>,
}

/// `GET /api/v1/repos/{name}/commits/{sha}`: one commit, what ran on it, what its scans found and
/// where it was deployed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CommitDetail {
    pub repo: String,
    pub sha: String,
    pub author: String,
    /// RFC 3339.
    pub date: String,
    pub message: String,
    pub runs: Vec<crate::RunSummary>,
    pub findings: Vec<CommitFinding>,
    pub deployments: Vec<crate::Deployment>,
}

/// A security finding of a commit's run: a secret (`rule`, `file`, `line`, `fingerprint`) or a
/// vulnerable dependency (`package`, `version`, `advisory`, `severity`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CommitFinding {
    /// `secret` or `vulnerability`.
    pub kind: String,
    /// The run whose scan found it.
    pub run: i64,
    /// One line for people: what, where.
    pub summary: String,
    /// `critical`, `high`, …; secrets are `critical`.
    pub severity: String,
    /// The scan's own record (without the secret).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}
