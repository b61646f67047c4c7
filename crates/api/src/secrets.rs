//! Secrets and variables: the bodies of `/api/v1/secrets…` and `/api/v1/variables…`. A secret's
//! value goes in and never comes out.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Which secrets or variables: `org` (every repository), `repo/<name>`, or
/// `env/<repo>/<environment>` (only jobs with that `environment:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
pub struct ScopeQuery {
    pub scope: String,
}

/// `PUT /api/v1/secrets/{name}` and `/api/v1/variables/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SetSecret {
    pub scope: String,
    pub value: String,
}

/// A secret as listed: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretInfo {
    pub scope: String,
    pub name: String,
    pub updated: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretList {
    pub secrets: Vec<SecretInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Variable {
    pub scope: String,
    pub name: String,
    pub value: String,
    pub updated: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VariableList {
    pub variables: Vec<Variable>,
}

/// `POST /api/v1/secrets/rotate`: how many secrets were sealed again with the new key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Rotated {
    pub resealed: usize,
}

/// `GET /api/v1/access`: who may do what — grants, teams, and tokens (never their values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccessReport {
    pub grants: Vec<GrantInfo>,
    pub teams: Vec<TeamMember>,
    pub tokens: Vec<TokenInfo>,
}

/// A role granted to `user:<name>` or `team:<name>` on a scope (`*`, `repository:<name>`,
/// `service:<name>`, `environment:<service>/<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GrantInfo {
    pub subject: String,
    pub role: String,
    pub scope: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TeamMember {
    pub team: String,
    pub member: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub name: String,
    /// The user it acts for; absent: an administrator's token.
    pub owner: Option<String>,
    pub scopes: Vec<String>,
    pub expires: Option<String>,
    pub last_used: Option<String>,
    pub created: String,
}

/// `POST /api/v1/repos/{name}/scan`: what the secret scan of a repository's whole history found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HistoryScan {
    pub repo: String,
    pub commits: usize,
    pub bytes: u64,
    pub rules: usize,
    pub findings: Vec<SecretFinding>,
}

/// A secret found in a commit (its first four characters, never more).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SecretFinding {
    pub rule: String,
    pub file: String,
    pub line: usize,
    /// The commit that added it.
    pub commit: String,
    /// `commit:file:rule:line`, as `.gitleaksignore` takes it.
    pub fingerprint: String,
    pub secret: String,
}
