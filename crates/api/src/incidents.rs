//! Incidents, their postmortems and the team's delivery figures (DORA): the bodies of
//! `/api/v1/incidents…` and `/api/v1/dora`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Where an incident stands: triggered → acknowledged → resolved → postmortem done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    Triggered,
    Acknowledged,
    Resolved,
    PostmortemDone,
}

impl IncidentState {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Triggered => "triggered",
            IncidentState::Acknowledged => "acknowledged",
            IncidentState::Resolved => "resolved",
            IncidentState::PostmortemDone => "postmortem_done",
        }
    }

    /// Triggered or acknowledged: someone should be working on it.
    pub fn is_open(self) -> bool {
        matches!(self, IncidentState::Triggered | IncidentState::Acknowledged)
    }
}

/// An alert an incident was opened by or has gathered since.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IncidentAlert {
    pub fingerprint: String,
    pub labels: BTreeMap<String, String>,
    pub firing: bool,
    /// When it joined the incident (RFC 3339).
    pub since: String,
}

/// A deployment that started within the incident's look-back window: the suspect change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Suspect {
    pub deployment: i64,
    pub service: String,
    pub environment: String,
    pub release: String,
    pub sha: String,
    /// The deployment's status when the incident opened.
    pub status: String,
    /// When the deployment was requested (RFC 3339).
    pub created: String,
}

/// A follow-up of a postmortem, tracked until done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ActionItem {
    /// 1, 2, … within its incident.
    pub number: i64,
    pub title: String,
    pub owner: String,
    /// A date (YYYY-MM-DD).
    pub due: Option<String>,
    pub done: bool,
}

/// An incident as the event log tells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Incident {
    pub id: i64,
    pub title: String,
    /// `page`, `critical`, `warning`, … as the opening alert or person said.
    pub severity: String,
    pub service: Option<String>,
    pub environment: Option<String>,
    pub state: IncidentState,
    /// `alert`, `manual` or `rollback`.
    pub source: String,
    pub commander: Option<String>,
    pub opened_at: String,
    pub opened_by: String,
    pub acknowledged_at: Option<String>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<String>,
    pub resolved_by: Option<String>,
    /// How it ended, e.g. "deployment 3 rolled back".
    pub resolution: Option<String>,
    /// Seconds from opening to the first acknowledgement (mean time to acknowledge, per incident).
    pub mtta_seconds: Option<f64>,
    /// Seconds from opening to resolution (mean time to restore, per incident).
    pub mttr_seconds: Option<f64>,
    pub alerts: Vec<IncidentAlert>,
    /// Newest first; the first is the one `tandem incident rollback` undoes.
    pub suspects: Vec<Suspect>,
    pub action_items: Vec<ActionItem>,
    /// Whether a postmortem draft has been written.
    pub postmortem: bool,
}

/// One line of an incident's timeline: an event of the log, said in a sentence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TimelineEntry {
    pub seq: i64,
    pub time: String,
    pub kind: String,
    pub actor: String,
    pub text: String,
}

/// `GET /api/v1/incidents/{id}`: the incident, its timeline and the commits of its suspect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IncidentDetail {
    pub incident: Incident,
    pub timeline: Vec<TimelineEntry>,
    /// `sha subject` of each commit the first suspect shipped (since the release before it).
    pub commits: Vec<String>,
}

/// `POST /api/v1/incidents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenIncident {
    pub title: String,
    #[serde(default = "default_severity")]
    pub severity: String,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub commander: Option<String>,
}

fn default_severity() -> String {
    "page".into()
}

/// `POST /api/v1/incidents/{id}/{ack,resolve,notes,commander}`: what a responder says.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IncidentUpdate {
    /// A note for the timeline, the resolution, or the new commander's name.
    #[serde(default)]
    pub text: Option<String>,
}

/// `POST /api/v1/incidents/{id}/action-items`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NewActionItem {
    pub title: String,
    pub owner: String,
    #[serde(default)]
    pub due: Option<String>,
}

/// `GET /api/v1/incidents/{id}/postmortem`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Postmortem {
    pub incident: i64,
    /// The draft in Markdown, in the SRE Workbook's structure.
    pub markdown: String,
    pub done: bool,
}

/// `GET /api/v1/incidents?state=open`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
pub struct IncidentQuery {
    /// `open` (triggered or acknowledged), `resolved`, or a state's name.
    pub state: Option<String>,
    pub service: Option<String>,
}

/// `GET /api/v1/dora?days=30&service=NAME&environment=production`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
pub struct DoraQuery {
    /// The period, counted back from now (default 30).
    pub days: Option<u32>,
    pub service: Option<String>,
    /// A team of the on-call file: its services together.
    pub team: Option<String>,
    /// Which environment is production (default: every environment named `production` or
    /// `prod`, else every environment).
    pub environment: Option<String>,
}

/// One of DORA's measures, with the band it falls in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DoraMeasure {
    /// The value in the unit below; `None` when nothing happened to measure.
    pub value: Option<f64>,
    /// `deployments/day`, `hours`, `ratio`.
    pub unit: String,
    /// `elite`, `high`, `medium` or `low` (DORA's published bands); `None` without a value.
    pub band: Option<String>,
    /// How it was counted, in a sentence.
    pub basis: String,
}

/// `GET /api/v1/dora`: the four keys and rework rate over a period, per service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Dora {
    pub service: Option<String>,
    pub team: Option<String>,
    /// The services counted (empty: every service).
    pub services: Vec<String>,
    pub environments: Vec<String>,
    pub from: String,
    pub to: String,
    pub deployments: i64,
    pub deployment_frequency: DoraMeasure,
    pub lead_time_for_changes: DoraMeasure,
    pub change_failure_rate: DoraMeasure,
    pub time_to_restore: DoraMeasure,
    pub rework_rate: DoraMeasure,
}

/// `GET /api/v1/oncall`: one schedule now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OnCallNow {
    pub schedule: String,
    /// Who is on call now (`None`: nobody covers this moment).
    pub user: Option<String>,
    /// When that changes (within the next eight days).
    pub until: Option<String>,
    /// Who takes over then.
    pub next: Option<String>,
    /// Overrides now or to come.
    pub overrides: Vec<OnCallOverride>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OnCallOverride {
    pub user: String,
    pub from: String,
    pub until: String,
}

/// `POST /api/v1/oncall/{schedule}/overrides`: someone takes the schedule for a while.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NewOverride {
    pub user: String,
    /// RFC 3339; now when absent.
    #[serde(default)]
    pub from: Option<String>,
    /// RFC 3339.
    pub until: String,
}
