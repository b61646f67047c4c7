//! Tandem's HTTP API as types: every request and response body under `/api/v1`, shared by the
//! server (which writes them) and the CLI (which reads them), each with its OpenAPI schema.
//!
//! The server's OpenAPI document (`/api/v1/openapi.json`) is derived from these types and the
//! handlers' annotations, so a generated client reads the same shapes the CLI does. Field names
//! are the wire names; renaming one is a breaking change of the API.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

mod code;
mod incidents;
mod secrets;

pub use code::*;
pub use incidents::*;
pub use secrets::*;
pub use store::{DeploymentKind, DeploymentStatus, Event, LogLine, RunStatus};

/// Every error answer: a stable code for scripts and a message for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, e.g. `not_found`, `unauthorized`, `conflict`, `bad_request`.
    pub code: String,
    pub message: String,
}

/// A repository Tandem builds. Its webhook secret and status token are never shown again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Repository {
    pub id: i64,
    pub name: String,
    /// A local path or a git URL the server fetches from.
    pub source: String,
    /// Polled every so many seconds; `null` when only webhooks trigger it.
    pub poll_seconds: Option<i64>,
    pub created: String,
    /// Where commit statuses go: `github`, `gitea`, `forgejo` or `gitlab`.
    pub forge: Option<String>,
    pub api_url: Option<String>,
    /// When it was archived: read-only, no new runs. `null` while active.
    #[serde(default)]
    pub archived: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RepositoryList {
    pub repos: Vec<Repository>,
}

/// `POST /api/v1/repos`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AddRepository {
    /// A git URL, or an absolute path on the server's machine.
    pub source: String,
    /// Defaults to the last segment of the source.
    pub name: Option<String>,
    pub poll_seconds: Option<i64>,
    /// Where to post commit statuses; needs `api_url` and `status_token` too.
    pub forge: Option<String>,
    pub api_url: Option<String>,
    pub status_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AddedRepository {
    pub repo: Repository,
    /// Shown once: configure it in the forge's webhook.
    pub webhook_secret: String,
    /// Set when the first fetch failed (the repository is added all the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// `POST /api/v1/repos/{name}/runs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TriggerRequest {
    /// A branch, tag or commit; `HEAD` when absent.
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Triggered {
    /// The runs queued (empty when this push was seen before).
    pub runs: Vec<i64>,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
}

/// Filters of `GET /api/v1/runs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// A repository's name.
    pub repo: Option<String>,
    /// A full ref, e.g. `refs/heads/main`.
    #[serde(rename = "ref")]
    #[param(rename = "ref")]
    pub git_ref: Option<String>,
    /// A branch name (short for `ref=refs/heads/NAME`).
    pub branch: Option<String>,
    pub status: Option<RunStatus>,
    /// At most this many runs (default 50).
    pub limit: Option<i64>,
}

/// A run as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunSummary {
    pub id: i64,
    pub repo_id: i64,
    /// Counts per repository, from 1.
    pub number: i64,
    /// The workflow file, relative to the repository root.
    pub workflow: String,
    pub event: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    pub status: RunStatus,
    pub reason: Option<String>,
    /// How many times the server started this run (a crash restarts it).
    pub attempt: i64,
    /// `github.run_attempt`: 1 plus the re-runs that led to this run.
    pub run_attempt: i64,
    pub rerun_of: Option<i64>,
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunSummary>,
}

/// One run with what it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunSummary,
    pub before_sha: String,
    pub change_request: Option<i64>,
    /// Only these jobs (and what they need) ran; `null` for all.
    pub jobs: Option<Vec<String>>,
    pub cancel_requested: bool,
    /// The event payload the workflow saw as `github.event`.
    pub payload: serde_json::Value,
    /// Jobs and steps with their outcomes, once the run has finished.
    pub report: Option<RunReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunReport {
    /// `success`, `failure` or `cancelled`.
    pub status: String,
    /// Seconds.
    pub duration: f64,
    pub jobs: Vec<JobReport>,
    #[serde(default)]
    pub artifacts: Vec<String>,
}

/// A job, or one leg of a matrix job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobReport {
    /// The job's key in the workflow (legs of a matrix share it).
    pub id: String,
    pub name: String,
    /// `success`, `failure`, `cancelled` or `skipped`.
    pub status: String,
    /// Milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// Seconds.
    pub duration: f64,
    pub steps: Vec<StepReport>,
    /// What steps wrote to `$GITHUB_STEP_SUMMARY`.
    #[serde(default)]
    pub summary: String,
    pub error: Option<String>,
    #[serde(default)]
    pub outputs: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepReport {
    pub name: String,
    /// The conclusion, after `continue-on-error`.
    pub status: String,
    /// The outcome, before `continue-on-error`.
    pub outcome: String,
    pub started_at_ms: u64,
    /// Seconds.
    pub duration: f64,
}

/// Paging and following of `GET /api/v1/runs/{id}/logs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Chunks after this sequence number (the previous page's `next`).
    pub after: Option<i64>,
    /// A live Server-Sent Events stream (`lines` events, then one `end` with the status).
    pub follow: Option<bool>,
}

/// One page of a run's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogPage {
    pub run: i64,
    pub status: RunStatus,
    pub lines: Vec<LogLine>,
    /// Pass as `after` for the next page.
    pub next: i64,
    /// False while more pages follow.
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CancelResponse {
    pub id: i64,
    pub status: RunStatus,
    pub cancel_requested: bool,
}

/// `POST /api/v1/runs/{id}/approve`: let a job held at its environment's gates start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApproveJob {
    /// The job's id in the workflow.
    pub job: String,
    /// Why it may go although the commit has security findings (kept in the audit log).
    #[serde(default)]
    pub reason: Option<String>,
}

/// What `POST /api/v1/runs/{id}/approve` recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobApproval {
    pub run: i64,
    pub job: String,
    pub environment: String,
    pub approved_by: String,
}

/// `POST /api/v1/runs/{id}/rerun`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RerunRequest {
    /// Only the jobs that failed or were cancelled (and what they need).
    #[serde(default)]
    pub failed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RerunResponse {
    pub id: i64,
    pub number: i64,
    pub jobs: Option<Vec<String>>,
}

/// `GET /api/v1/events`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Events after this sequence number.
    pub after: Option<i64>,
    /// At most this many (default 100).
    pub limit: Option<i64>,
}

/// A signed statement that event `seq` of the log has hash `hash` (Ed25519 over
/// "tandem audit checkpoint v1\nseq S\nhash H\ntime T\n"). Kept elsewhere, it proves later that
/// the log was not rewritten up to there (`tandem audit verify --checkpoint FILE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    /// When the event was recorded.
    pub time: String,
    /// The signer's Ed25519 public key, hex.
    pub public_key: String,
    /// The signature, hex.
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    pub events: Vec<Event>,
}

/// `POST /api/v1/deployments/{id}/approve`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApproveRequest {
    /// Why the deployment may go although the commit has security findings (kept in the audit log).
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /api/v1/deployments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeployRequest {
    /// The service, or the repository that holds its service file.
    #[serde(alias = "repo")]
    pub service: String,
    pub environment: String,
    /// A branch, tag or commit; `HEAD` when absent.
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
}

/// Filters of `GET /api/v1/deployments`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeploymentsQuery {
    pub service: Option<String>,
    pub environment: Option<String>,
    /// At most this many (default 50, at most 1000).
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Deployment {
    pub id: i64,
    pub repo_id: i64,
    pub service: String,
    pub environment: String,
    pub sha: String,
    /// What is deployed, e.g. the commit's short sha or an image reference.
    pub release: String,
    /// The run whose job asked for it, if one did.
    pub run_id: Option<i64>,
    pub kind: DeploymentKind,
    pub status: DeploymentStatus,
    /// The strategy step reached (canary weight or rolling batch).
    pub step: i64,
    /// The new release's share of traffic now, 0 to 1.
    pub weight: f64,
    pub reason: Option<String>,
    pub approved_by: Option<String>,
    /// A rollback of this rollout was requested.
    pub abort_requested: bool,
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
}

/// A deployment with what happened to it, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeploymentDetail {
    #[serde(flatten)]
    pub deployment: Deployment,
    pub events: Vec<DeploymentEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeploymentEvent {
    pub seq: i64,
    pub time: String,
    /// `deployment.requested`, `.started`, `.step`, `.verdict`, `.promoted`, `.rolled_back`, …
    pub kind: String,
    pub actor: String,
    pub payload: DeploymentEventPayload,
}

/// What a deployment event carries; every field is present only where it applies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeploymentEventPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// The new release's share of traffic after this event, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The analysis behind a verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// Whatever else the event recorded.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// A canary judged against stable: the rates compared and the evidence against the threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Evidence {
    /// `errors` or `latency`.
    pub metric: String,
    pub canary_rate: f64,
    pub stable_rate: f64,
    pub canary_requests: u64,
    pub stable_requests: u64,
    /// The log-likelihood ratio reached; the verdict falls when it crosses `threshold`.
    pub evidence: f64,
    pub threshold: f64,
    #[serde(default)]
    pub seconds: f64,
}

/// An environment of a service as its deployments left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Environment {
    pub service: String,
    pub environment: String,
    /// Where its proxy listens.
    pub listen: Option<String>,
    /// The release serving all traffic.
    pub stable: Option<ReleaseRef>,
    /// The one before: where a rollback goes back to.
    pub previous: Option<ReleaseRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReleaseRef {
    pub deployment: i64,
    pub release: String,
    pub sha: String,
}

/// `POST /api/v1/environments/{service}/{environment}/rollback`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RollbackRequest {
    /// Skip gates and analysis: all traffic goes back at once.
    #[serde(default)]
    pub emergency: bool,
}

impl From<store::Repo> for Repository {
    fn from(repo: store::Repo) -> Repository {
        Repository {
            id: repo.id,
            name: repo.name,
            // Credentials in a source URL stay on the server.
            source: git::redact_credentials(&repo.source),
            poll_seconds: repo.poll_seconds,
            created: repo.created,
            forge: repo.forge,
            api_url: repo.api_url,
            archived: repo.archived,
        }
    }
}

impl From<&store::Run> for RunSummary {
    fn from(r: &store::Run) -> RunSummary {
        RunSummary {
            id: r.id,
            repo_id: r.repo_id,
            number: r.number,
            workflow: r.workflow.clone(),
            event: r.event.clone(),
            git_ref: r.git_ref.clone(),
            sha: r.sha.clone(),
            status: r.status,
            reason: r.reason.clone(),
            attempt: r.attempt,
            run_attempt: r.run_attempt,
            rerun_of: r.rerun_of,
            created: r.created.clone(),
            started: r.started.clone(),
            finished: r.finished.clone(),
        }
    }
}

impl From<store::Run> for RunDetail {
    /// A stored report that no longer reads as a [`RunReport`] (written by another version) is
    /// left out rather than failing the whole answer.
    fn from(run: store::Run) -> RunDetail {
        RunDetail {
            run: RunSummary::from(&run),
            before_sha: run.before_sha,
            change_request: run.change_request,
            jobs: run.jobs,
            cancel_requested: run.cancel_requested,
            payload: run.payload,
            report: run.report.and_then(|r| serde_json::from_value(r).ok()),
        }
    }
}

impl From<store::Deployment> for Deployment {
    fn from(d: store::Deployment) -> Deployment {
        Deployment {
            id: d.id,
            repo_id: d.repo_id,
            service: d.service,
            environment: d.environment,
            sha: d.sha,
            release: d.release,
            run_id: d.run_id,
            kind: d.kind,
            status: d.status,
            step: d.step,
            weight: d.weight,
            reason: d.reason,
            approved_by: d.approved_by,
            abort_requested: d.abort_requested,
            created: d.created,
            started: d.started,
            finished: d.finished,
        }
    }
}

impl From<store::Event> for DeploymentEvent {
    fn from(e: store::Event) -> DeploymentEvent {
        // Every field of the payload type is optional and the rest is kept, so this only fails
        // for a payload that is not an object; its content then stays under `other.value`.
        let payload = serde_json::from_value(e.payload.clone()).unwrap_or_else(|_| DeploymentEventPayload {
            other: [("value".to_string(), e.payload)].into_iter().collect(),
            ..DeploymentEventPayload::default()
        });
        DeploymentEvent { seq: e.seq, time: e.time, kind: e.kind, actor: e.actor, payload }
    }
}

/// A probe and how it stands (`GET /api/v1/probes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Probe {
    /// `service/environment/name`, or `monitors/name` for the monitors file.
    pub key: String,
    pub name: String,
    pub service: Option<String>,
    pub environment: Option<String>,
    /// `http`, `tcp`, `tls`, `command` or `heartbeat`.
    pub kind: String,
    /// The URL, address or command checked.
    pub target: String,
    pub interval_seconds: f64,
    /// `unknown` (not checked yet), `up` or `failing`.
    pub state: String,
    pub checks: u64,
    pub failures: u64,
    pub last: Option<ProbeResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProbeResult {
    pub ok: bool,
    pub seconds: f64,
    pub status: Option<u16>,
    pub error: Option<String>,
    /// RFC 3339.
    pub at: String,
    /// TLS and https probes: when the earliest certificate the server sent expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_expires: Option<String>,
}

/// An SLO with its figures and alerts (`GET /api/v1/slos`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Slo {
    pub key: String,
    pub name: String,
    pub service: Option<String>,
    pub environment: Option<String>,
    /// 0 to 1, e.g. 0.999.
    pub objective: f64,
    /// e.g. `30d`.
    pub window: String,
    /// How good events are counted, e.g. `requests through the proxy`.
    pub sli: String,
    /// `None` until first evaluated.
    pub figures: Option<SloFigures>,
    pub alerts: Vec<SloAlert>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SloFigures {
    /// RFC 3339.
    pub at: String,
    /// Good ÷ all over the window; `None` without data.
    pub sli: Option<f64>,
    pub events: f64,
    /// 1 − error ratio ÷ (1 − objective); negative once overspent.
    pub budget_remaining: Option<f64>,
    pub burn: Vec<Burn>,
    /// At the last hour's burn.
    pub exhaustion_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Burn {
    pub window: String,
    pub rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SloAlert {
    /// `SLOBurnRate` or `SLODataAbsent`.
    pub name: String,
    /// `page` or `ticket`.
    pub severity: String,
    pub long_window: String,
    pub short_window: String,
    pub factor: f64,
    /// RFC 3339, while firing.
    pub firing_since: Option<String>,
    pub value: f64,
    pub summary: String,
}

/// An alert as Prometheus's `/api/v1/alerts` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    pub labels: std::collections::BTreeMap<String, String>,
    pub annotations: std::collections::BTreeMap<String, String>,
    /// `pending` or `firing`.
    pub state: String,
    #[serde(rename = "activeAt")]
    pub active_at: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertList {
    pub alerts: Vec<Alert>,
}

/// Prometheus's envelope: `{"status": "success", "data": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Answer<T> {
    pub status: String,
    pub data: T,
}

/// Rule groups as Prometheus's `/api/v1/rules` lists them (`data.groups`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RuleGroups {
    pub groups: Vec<RuleGroup>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RuleGroup {
    pub name: String,
    pub file: String,
    /// Seconds.
    pub interval: f64,
    pub rules: Vec<RuleView>,
    #[serde(rename = "lastEvaluation")]
    pub last_evaluation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RuleView {
    /// `alerting` or `recording`.
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub query: String,
    /// `ok` or `err`.
    pub health: String,
    #[serde(rename = "lastError", default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// For alerting rules: `inactive`, `pending` or `firing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default)]
    pub alerts: Vec<Alert>,
}

/// A forecast or an anomaly that holds now (`GET /api/v1/insights`): a warning with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Insight {
    /// `forecast` or `anomaly`.
    pub kind: String,
    pub key: String,
    pub name: String,
    pub service: Option<String>,
    pub environment: Option<String>,
    pub summary: String,
    /// The model and its figures.
    pub evidence: serde_json::Value,
    /// RFC 3339.
    pub since: String,
}

/// A service at a glance (`GET /api/v1/services/{name}/overview`): its SLOs, probes, and key
/// series with its deployments on the same time axis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceOverview {
    pub service: String,
    /// Unix seconds: the time axis every series and mark shares.
    pub start: f64,
    pub end: f64,
    pub step: f64,
    pub environments: Vec<Environment>,
    pub slos: Vec<Slo>,
    pub probes: Vec<Probe>,
    pub series: Vec<KeySeries>,
    /// Deployments and rollbacks that started or ended within the range.
    pub marks: Vec<DeploymentMark>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeySeries {
    /// e.g. `production: requests/s`, or a `key-series` name of the service file.
    pub name: String,
    pub query: String,
    /// (Unix seconds, value); a gap is a missing point.
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeploymentMark {
    pub deployment: i64,
    pub environment: String,
    pub release: String,
    pub kind: DeploymentKind,
    pub status: DeploymentStatus,
    /// Unix seconds.
    pub at: f64,
}
