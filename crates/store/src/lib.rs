//! Durable state: the hash-chained event log and the tables it projects (repositories, webhook
//! deliveries, runs, logs, tokens), behind the [`Store`] trait; SQLite is the embedded adapter.
//!
//! Every mutation appends its event in the same transaction as the rows it changes, so the log
//! and the tables never disagree, and `verify_chain` can prove the log was not altered.

mod sqlite;
mod time;

use serde::{Deserialize, Serialize};

pub use sqlite::SqliteStore;

tokio::task_local! {
    /// The network address a request came from, while it is handled: every event it causes
    /// records it as `source` (events of background work have none).
    pub static SOURCE: String;
}

/// `payload` with the current request's `source` address, when there is one (and it has none).
fn with_source(mut payload: serde_json::Value) -> serde_json::Value {
    if let (Ok(source), Some(object)) = (SOURCE.try_with(String::clone), payload.as_object_mut()) {
        object.entry("source").or_insert(serde_json::Value::String(source));
    }
    payload
}
pub use time::rfc3339;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Event {
    pub seq: i64,
    pub time: String,
    pub kind: String,
    pub subject: String,
    pub actor: String,
    #[sqlx(json)]
    pub payload: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// An event to append: kind, subject, actor, payload.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub kind: String,
    pub subject: String,
    pub actor: String,
    pub payload: serde_json::Value,
}

/// The first link of the chain points at this.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of an event: SHA-256 over the previous hash and every field, length-prefixed so that
/// no two different events hash alike.
pub fn event_hash(
    prev_hash: &str,
    seq: i64,
    time: &str,
    kind: &str,
    subject: &str,
    actor: &str,
    payload: &str,
) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for field in [prev_hash, &seq.to_string(), time, kind, subject, actor, payload] {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Where the chain breaks, if it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub n_events: i64,
    /// The first event whose stored hash or link does not match, with why.
    pub first_broken: Option<(i64, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Repo {
    pub id: i64,
    pub name: String,
    /// A local path or a git URL the server fetches from.
    pub source: String,
    #[serde(skip_serializing)]
    pub webhook_secret: String,
    pub poll_seconds: Option<i64>,
    pub created: String,
    /// Where commit statuses go: `github`, `gitea` or `gitlab`, with the forge's API base URL.
    pub forge: Option<String>,
    pub api_url: Option<String>,
    #[serde(skip_serializing)]
    pub status_token: Option<String>,
    /// When it was archived (read-only: no pushes, no new runs); `None` while active.
    #[sqlx(default)]
    pub archived: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Queued,
    Running,
    Success,
    Failure,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Success => "success",
            RunStatus::Failure => "failure",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<RunStatus> {
        Some(match text {
            "queued" => RunStatus::Queued,
            "running" => RunStatus::Running,
            "success" => RunStatus::Success,
            "failure" => RunStatus::Failure,
            "cancelled" => RunStatus::Cancelled,
            _ => return None,
        })
    }

    pub fn is_finished(self) -> bool {
        matches!(self, RunStatus::Success | RunStatus::Failure | RunStatus::Cancelled)
    }
}

/// A run to queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRun {
    pub repo_id: i64,
    /// The workflow file, relative to the repository root.
    pub workflow: String,
    pub event: String,
    pub git_ref: String,
    pub sha: String,
    pub before_sha: String,
    pub change_request: Option<i64>,
    /// Only these jobs (and what they need); `None` for all.
    pub jobs: Option<Vec<String>>,
    /// The event payload the workflow sees as `github.event`.
    pub payload: serde_json::Value,
    /// The run this one repeats (`tandem runs rerun`); its `run_attempt` is that run's plus one.
    pub rerun_of: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Run {
    pub id: i64,
    pub repo_id: i64,
    /// Counts per repository, from 1.
    pub number: i64,
    pub workflow: String,
    pub event: String,
    pub git_ref: String,
    pub sha: String,
    pub before_sha: String,
    pub change_request: Option<i64>,
    #[sqlx(try_from = "String")]
    pub status: RunStatus,
    pub reason: Option<String>,
    #[sqlx(json(nullable))]
    pub jobs: Option<Vec<String>>,
    #[sqlx(json)]
    pub payload: serde_json::Value,
    /// How many times the server started this row (a run interrupted by a crash is retried).
    pub attempt: i64,
    /// `github.run_attempt`: 1, plus one for each re-run in the chain that led to this run.
    pub run_attempt: i64,
    pub rerun_of: Option<i64>,
    pub cancel_requested: bool,
    /// The engine's final report (jobs, steps, durations), once finished.
    #[sqlx(json(nullable))]
    pub report: Option<serde_json::Value>,
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
}

/// One line of a run's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogLine {
    pub job: String,
    pub step: Option<usize>,
    pub text: String,
}

/// What a webhook delivery led to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Delivery {
    /// Stored now; the ids of the runs it queued.
    Stored(Vec<i64>),
    /// This delivery id was stored before; nothing new was queued.
    Duplicate,
}

/// Filter for listing runs.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub repo_id: Option<i64>,
    pub git_ref: Option<String>,
    pub status: Option<RunStatus>,
    /// Only runs with a smaller id (the next page of a newest-first list).
    pub before: Option<i64>,
    pub limit: i64,
}

/// Why a deployment exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentKind {
    /// A new release, through the gates and the strategy.
    Deploy,
    /// Back to an earlier release: no gates.
    Rollback,
    /// Back to an earlier release at once: no gates, no analysis.
    Emergency,
}

impl DeploymentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentKind::Deploy => "deploy",
            DeploymentKind::Rollback => "rollback",
            DeploymentKind::Emergency => "emergency",
        }
    }

    pub fn parse(text: &str) -> Option<DeploymentKind> {
        [DeploymentKind::Deploy, DeploymentKind::Rollback, DeploymentKind::Emergency]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

/// Enums stored as text: a value the code does not know is a corrupt row, named.
macro_rules! stored_as_text {
    ($($kind:ty => $what:literal),*) => {$(
        impl TryFrom<String> for $kind {
            type Error = String;

            fn try_from(text: String) -> std::result::Result<$kind, String> {
                <$kind>::parse(&text).ok_or_else(|| format!("{} `{text}` is not one Tandem knows", $what))
            }
        }
    )*};
}

stored_as_text!(RunStatus => "run status", DeploymentStatus => "deployment status", DeploymentKind => "deployment kind");

/// Where a deployment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStatus {
    /// Requested; the controller has not looked at it yet.
    Pending,
    /// Held by a gate (freeze window, error budget) that is checked again.
    Gated,
    /// Waits for `tandem approve`.
    AwaitingApproval,
    /// New instances are starting or taking traffic.
    Running,
    Promoted,
    RolledBack,
    /// Could not be carried out (e.g. no valid service file at that commit).
    Failed,
    /// Never started: a newer deployment of the same environment was requested meanwhile.
    Skipped,
}

impl DeploymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Pending => "pending",
            DeploymentStatus::Gated => "gated",
            DeploymentStatus::AwaitingApproval => "awaiting_approval",
            DeploymentStatus::Running => "running",
            DeploymentStatus::Promoted => "promoted",
            DeploymentStatus::RolledBack => "rolled_back",
            DeploymentStatus::Failed => "failed",
            DeploymentStatus::Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<DeploymentStatus> {
        [
            DeploymentStatus::Pending,
            DeploymentStatus::Gated,
            DeploymentStatus::AwaitingApproval,
            DeploymentStatus::Running,
            DeploymentStatus::Promoted,
            DeploymentStatus::RolledBack,
            DeploymentStatus::Failed,
            DeploymentStatus::Skipped,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            DeploymentStatus::Promoted
                | DeploymentStatus::RolledBack
                | DeploymentStatus::Failed
                | DeploymentStatus::Skipped
        )
    }
}

/// A deployment to request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDeployment {
    pub repo_id: i64,
    pub service: String,
    pub environment: String,
    pub sha: String,
    /// What is deployed, e.g. the commit's short sha or an image reference.
    pub release: String,
    /// The run whose job asked for it, if one did.
    pub run_id: Option<i64>,
    pub kind: DeploymentKind,
    /// The service file at `sha`, as written.
    pub spec: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Deployment {
    pub id: i64,
    pub repo_id: i64,
    pub service: String,
    pub environment: String,
    pub sha: String,
    pub release: String,
    pub run_id: Option<i64>,
    #[sqlx(try_from = "String")]
    pub kind: DeploymentKind,
    #[sqlx(try_from = "String")]
    pub status: DeploymentStatus,
    /// Index of the strategy step reached (canary weight or rolling batch).
    pub step: i64,
    /// The new version's share of traffic now.
    pub weight: f64,
    pub reason: Option<String>,
    pub approved_by: Option<String>,
    pub abort_requested: bool,
    #[serde(skip_serializing)]
    pub spec: String,
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
}

/// An API token as stored: never its value, only who it acts for and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct TokenRow {
    pub name: String,
    /// The user it acts for; `None`: an administrator's token (the first token is one).
    pub owner: Option<String>,
    /// Comma-separated: `read`, `run`, `deploy`, `admin`.
    pub scopes: String,
    /// RFC 3339; `None`: it does not expire.
    pub expires: Option<String>,
    pub last_used: Option<String>,
    pub created: String,
}

/// A token to create (its value hashed by the caller).
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    pub name: &'a str,
    pub hash: &'a str,
    pub owner: Option<&'a str>,
    pub scopes: &'a [String],
    pub expires: Option<&'a str>,
}

/// A role granted to `user:<name>` or `team:<name>` on a scope.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct Grant {
    pub subject: String,
    pub role: String,
    /// `*`, `repository:<name>`, `service:<name>` or `environment:<service>/<name>`.
    pub scope: String,
    pub created: String,
}

/// Who may do what: tokens, grants and teams, and where credentials are. Part of every [`Store`].
pub trait Access: Send + Sync {
    /// Adds a token (event `token.created` with its owner, scopes and expiry).
    fn create_token<'a>(&'a self, token: NewToken<'a>, actor: &'a str) -> BoxFuture<'a, Result<()>>;
    fn token<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<Option<TokenRow>>>;
    /// Records a token's use (at most once a minute).
    fn touch_token<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<()>>;
    fn tokens<'a>(&'a self) -> BoxFuture<'a, Result<Vec<TokenRow>>>;
    /// Removes every token of that name (event `token.revoked`); `NotFound` when none.
    fn revoke_token<'a>(&'a self, name: &'a str, actor: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Grants `role` to `subject` on `scope`, replacing the role it had there (event `access.granted`).
    fn grant<'a>(
        &'a self,
        subject: &'a str,
        role: &'a str,
        scope: &'a str,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<()>>;
    /// Removes the grant (event `access.revoked`); `NotFound` when there is none.
    fn revoke<'a>(&'a self, subject: &'a str, scope: &'a str, actor: &'a str) -> BoxFuture<'a, Result<()>>;
    fn grants<'a>(&'a self) -> BoxFuture<'a, Result<Vec<Grant>>>;
    fn add_member<'a>(&'a self, team: &'a str, member: &'a str, actor: &'a str) -> BoxFuture<'a, Result<()>>;
    fn remove_member<'a>(&'a self, team: &'a str, member: &'a str, actor: &'a str) -> BoxFuture<'a, Result<()>>;
    /// (team, member) pairs.
    fn members<'a>(&'a self) -> BoxFuture<'a, Result<Vec<(String, String)>>>;
    /// Replaces what a repository's row holds as its webhook secret (the server keeps the secret
    /// itself in the vault).
    fn set_webhook_secret<'a>(&'a self, repo_id: i64, value: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Replaces a repository's source (the server moves credentials out of URLs into the vault
    /// and keeps the URL with `***` in their place).
    fn set_repo_source<'a>(&'a self, repo_id: i64, source: &'a str) -> BoxFuture<'a, Result<()>>;
}

/// A change request of a hosted repository.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct ChangeRow {
    pub id: i64,
    pub repo_id: i64,
    pub number: i64,
    /// The branch it is to be merged into.
    pub target: String,
    /// Its `Change-Id` (or the branch it was pushed from): what ties its revisions together.
    pub change_key: String,
    pub title: String,
    pub author: String,
    /// `open`, `queued` (in the merge queue), `merged` or `abandoned`.
    pub status: String,
    /// Why it left the queue, or why it was abandoned.
    pub reason: Option<String>,
    pub created: String,
    pub updated: String,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct RevisionRow {
    pub change_id: i64,
    pub number: i64,
    pub sha: String,
    /// The target branch's commit when it was pushed.
    pub base: String,
    pub pushed_by: String,
    pub created: String,
}

/// An approval or a comment (general, or on `path`:`line`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct ReviewRow {
    pub id: i64,
    pub change_id: i64,
    pub revision: i64,
    /// `approval`, `comment`, or `dismissal` (its author's approvals withdrawn, on a forge).
    pub kind: String,
    pub author: String,
    pub path: Option<String>,
    pub line: Option<i64>,
    pub body: String,
    pub resolved: bool,
    pub created: String,
}

/// A revision pushed for review.
#[derive(Debug, Clone)]
pub struct NewRevision<'a> {
    pub repo_id: i64,
    /// The change's number when the forge numbered it (a pull request); else the next one.
    pub number: Option<i64>,
    pub target: &'a str,
    pub change_key: &'a str,
    pub title: &'a str,
    pub sha: &'a str,
    pub base: &'a str,
}

/// Change requests, their revisions and reviews. Part of every [`Store`].
pub trait Code: Send + Sync {
    /// Adds a revision to the open change with this key, or opens a change (events
    /// `change.opened` / `change.revised`); the change and the revision's number.
    fn push_revision<'a>(
        &'a self,
        revision: NewRevision<'a>,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<(ChangeRow, i64)>>;
    /// The repository's changes, newest first; only those in `status` when given.
    fn changes<'a>(&'a self, repo_id: i64, status: Option<&'a str>) -> BoxFuture<'a, Result<Vec<ChangeRow>>>;
    fn change<'a>(&'a self, repo_id: i64, number: i64) -> BoxFuture<'a, Result<ChangeRow>>;
    fn revisions<'a>(&'a self, change_id: i64) -> BoxFuture<'a, Result<Vec<RevisionRow>>>;
    fn reviews<'a>(&'a self, change_id: i64) -> BoxFuture<'a, Result<Vec<ReviewRow>>>;
    /// Adds an approval, a dismissal or a comment (event `change.approved` /
    /// `change.approval_dismissed` / `change.commented`).
    fn add_review<'a>(&'a self, review: ReviewRow, actor: &'a str) -> BoxFuture<'a, Result<ReviewRow>>;
    /// Marks a comment resolved (event `change.comment_resolved`).
    fn resolve_comment<'a>(&'a self, change_id: i64, review_id: i64, actor: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Moves a change to `status` with an optional reason (event `change.<status>`).
    fn set_change_status<'a>(
        &'a self,
        change_id: i64,
        status: &'a str,
        reason: Option<&'a str>,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<ChangeRow>>;
    /// Archives a repository (`archived`) or makes it active again (events `repo.archived` /
    /// `repo.unarchived`).
    fn set_archived<'a>(&'a self, repo_id: i64, archived: bool, actor: &'a str) -> BoxFuture<'a, Result<Repo>>;
}

/// A secret (its value sealed) or a variable (in clear).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SecretRow {
    pub scope: String,
    pub name: String,
    pub value: Vec<u8>,
    pub updated: String,
}

/// A change of a deployment's state, recorded as event `deployment.<event>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub event: String,
    pub status: DeploymentStatus,
    pub step: i64,
    pub weight: f64,
    pub reason: Option<String>,
    /// More for the event (e.g. the analysis evidence).
    pub detail: serde_json::Value,
}

/// An environment of a service, as deployments left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct EnvironmentState {
    pub service: String,
    pub environment: String,
    pub repo_id: i64,
    /// The deployment serving all traffic.
    #[sqlx(rename = "stable_deployment")]
    pub stable: Option<i64>,
    /// The one it replaced: where `tandem rollback` goes back to.
    #[sqlx(rename = "previous_deployment")]
    pub previous: Option<i64>,
    /// Where the environment's proxy listens.
    pub listen: Option<String>,
}

/// Filter for listing deployments.
#[derive(Debug, Clone, Default)]
pub struct DeploymentFilter {
    pub service: Option<String>,
    pub environment: Option<String>,
    pub active_only: bool,
    pub limit: i64,
}

/// The state Tandem keeps. Implementations must append each mutation's event in the same
/// transaction as the mutation, keep the chain linked (`prev_hash` = previous event's `hash`),
/// and be safe to share between tasks. The conformance suite in `tests/` holds every adapter to
/// the same behaviour.
/// A stored chunk of a run's log: its sequence number and its lines.
pub type LogChunk = (i64, Vec<LogLine>);

/// A boxed future that borrows the store: what every `Store` method returns, so that the trait is
/// usable as `dyn Store` (the server holds `Arc<dyn Store>`; any adapter can stand behind it).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Store: Access + Code + Send + Sync {
    fn add_repo<'a>(
        &'a self,
        name: &'a str,
        source: &'a str,
        webhook_secret: &'a str,
        poll_seconds: Option<i64>,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<Repo>>;
    /// Sets where commit statuses are posted. The token is stored, never put in an event.
    fn set_forge<'a>(
        &'a self,
        repo_id: i64,
        forge: &'a str,
        api_url: &'a str,
        status_token: &'a str,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<Repo>>;
    fn repos<'a>(&'a self) -> BoxFuture<'a, Result<Vec<Repo>>>;
    fn repo<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Repo>>;
    fn repo_by_id<'a>(&'a self, id: i64) -> BoxFuture<'a, Result<Repo>>;

    /// Stores a webhook delivery and the runs it queues, atomically; a delivery id seen before
    /// changes nothing.
    fn record_delivery<'a>(
        &'a self,
        forge: &'a str,
        delivery_id: &'a str,
        repo_id: i64,
        event: &'a str,
        runs: Vec<NewRun>,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<Delivery>>;
    fn enqueue<'a>(&'a self, run: NewRun, actor: &'a str) -> BoxFuture<'a, Result<Run>>;
    /// Takes the oldest queued run and marks it running.
    fn claim_next<'a>(&'a self) -> BoxFuture<'a, Result<Option<Run>>>;
    fn finish<'a>(
        &'a self,
        run_id: i64,
        status: RunStatus,
        reason: Option<String>,
        report: Option<serde_json::Value>,
    ) -> BoxFuture<'a, Result<Run>>;
    fn request_cancel<'a>(&'a self, run_id: i64, actor: &'a str) -> BoxFuture<'a, Result<Run>>;
    /// Runs left `running` by a process that died: queued again while `attempt < max_attempts`,
    /// else failed with a reason. Returns the runs it touched.
    fn recover_interrupted<'a>(&'a self, max_attempts: i64) -> BoxFuture<'a, Result<Vec<Run>>>;
    fn run<'a>(&'a self, run_id: i64) -> BoxFuture<'a, Result<Run>>;
    fn runs<'a>(&'a self, filter: RunFilter) -> BoxFuture<'a, Result<Vec<Run>>>;
    fn queue_depth<'a>(&'a self) -> BoxFuture<'a, Result<i64>>;

    /// Appends log lines as one compressed chunk; returns the chunk's sequence number.
    fn append_log<'a>(&'a self, run_id: i64, lines: &'a [LogLine]) -> BoxFuture<'a, Result<i64>>;
    /// At most `max_chunks` chunks after `after_seq`, decompressed, with their sequence numbers:
    /// a reader pages through a long log instead of loading it whole.
    fn log<'a>(&'a self, run_id: i64, after_seq: i64, max_chunks: i64) -> BoxFuture<'a, Result<Vec<LogChunk>>>;

    fn add_token<'a>(&'a self, name: &'a str, hash: &'a str, actor: &'a str) -> BoxFuture<'a, Result<()>>;
    fn token_name<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<Option<String>>>;
    fn n_tokens<'a>(&'a self) -> BoxFuture<'a, Result<i64>>;
    /// Adds a person who signs in with a password (event `user.added`; the hash never enters the log).
    fn add_user<'a>(&'a self, name: &'a str, password_hash: &'a str, actor: &'a str) -> BoxFuture<'a, Result<()>>;
    /// The stored password hash of a user, if there is one by that name.
    fn user_password<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<String>>>;
    fn n_users<'a>(&'a self) -> BoxFuture<'a, Result<i64>>;
    /// Replaces a user's password hash (event `user.password_changed`); `NotFound` without such a user.
    /// Sets a secret (`kind` "secret": `value` sealed by the caller) or a variable ("variable":
    /// in clear) of `scope`; event `secret.set` / `variable.set` names it, never its value.
    fn set_secret<'a>(
        &'a self,
        kind: &'a str,
        scope: &'a str,
        name: &'a str,
        value: &'a [u8],
        actor: &'a str,
    ) -> BoxFuture<'a, Result<()>>;
    /// Removes one (event `secret.deleted` / `variable.deleted`); `NotFound` when absent.
    fn delete_secret<'a>(
        &'a self,
        kind: &'a str,
        scope: &'a str,
        name: &'a str,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<()>>;
    /// The secrets or variables of these scopes.
    fn secrets<'a>(&'a self, kind: &'a str, scopes: &'a [String]) -> BoxFuture<'a, Result<Vec<SecretRow>>>;
    /// Every sealed secret, for a key rotation.
    fn all_secrets<'a>(&'a self) -> BoxFuture<'a, Result<Vec<SecretRow>>>;
    /// Replaces the values of these secrets in one transaction (a key rotation; event
    /// `secret.key_rotated` with their count).
    fn reseal_secrets<'a>(&'a self, rows: &'a [SecretRow], actor: &'a str) -> BoxFuture<'a, Result<()>>;
    fn set_user_password<'a>(
        &'a self,
        name: &'a str,
        password_hash: &'a str,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<()>>;

    /// The last known sha of each ref, for polling.
    fn refs<'a>(&'a self, repo_id: i64) -> BoxFuture<'a, Result<Vec<(String, String)>>>;
    fn set_ref<'a>(&'a self, repo_id: i64, name: &'a str, sha: &'a str) -> BoxFuture<'a, Result<()>>;

    /// Records a deployment request (event `deployment.requested`).
    fn request_deployment<'a>(&'a self, deployment: NewDeployment, actor: &'a str)
    -> BoxFuture<'a, Result<Deployment>>;
    fn deployment<'a>(&'a self, id: i64) -> BoxFuture<'a, Result<Deployment>>;
    /// Newest first.
    fn deployments<'a>(&'a self, filter: DeploymentFilter) -> BoxFuture<'a, Result<Vec<Deployment>>>;
    /// Moves a deployment on, with its event; a promotion also makes it the environment's stable
    /// release, in the same transaction. A finished deployment cannot move.
    fn transition_deployment<'a>(
        &'a self,
        id: i64,
        transition: Transition,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<Deployment>>;
    /// How many deployments there are in each status.
    fn deployment_counts<'a>(&'a self) -> BoxFuture<'a, Result<Vec<(DeploymentStatus, i64)>>>;
    /// Approves a deployment that waits for approval.
    fn approve_deployment<'a>(&'a self, id: i64, actor: &'a str) -> BoxFuture<'a, Result<Deployment>>;
    /// Asks the controller to roll an unfinished deployment back.
    fn abort_deployment<'a>(&'a self, id: i64, actor: &'a str) -> BoxFuture<'a, Result<Deployment>>;
    fn environment<'a>(
        &'a self,
        service: &'a str,
        environment: &'a str,
    ) -> BoxFuture<'a, Result<Option<EnvironmentState>>>;
    fn environments<'a>(&'a self) -> BoxFuture<'a, Result<Vec<EnvironmentState>>>;
    /// Creates the environment if it is new and fixes its proxy address.
    fn ensure_environment<'a>(
        &'a self,
        service: &'a str,
        environment: &'a str,
        repo_id: i64,
        listen: &'a str,
    ) -> BoxFuture<'a, Result<EnvironmentState>>;
    /// Every event about one subject, e.g. `deployment/7`, oldest first.
    fn events_about<'a>(&'a self, subject: &'a str) -> BoxFuture<'a, Result<Vec<Event>>>;

    /// Appends an event that changes no table (e.g. a commit status posted to a forge).
    fn record_event<'a>(
        &'a self,
        kind: &'a str,
        subject: &'a str,
        actor: &'a str,
        payload: serde_json::Value,
    ) -> BoxFuture<'a, Result<()>>;
    /// Appends several such events in one transaction, in order: all or none.
    fn record_events<'a>(&'a self, events: Vec<NewEvent>) -> BoxFuture<'a, Result<()>>;
    fn events<'a>(&'a self, after_seq: i64, limit: i64) -> BoxFuture<'a, Result<Vec<Event>>>;
    /// The newest event, if any (the head of the chain a checkpoint signs).
    fn last_event<'a>(&'a self) -> BoxFuture<'a, Result<Option<Event>>>;
    fn verify_chain<'a>(&'a self) -> BoxFuture<'a, Result<ChainReport>>;
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn Store")
    }
}
