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
