//! Who may do what. Roles (viewer, developer, maintainer, admin) are granted to users and teams on
//! a scope (`*`, a repository, a service or one environment); a token acts for its owner within
//! its scopes (read, run, deploy, admin) until it expires. Every route has a policy in [`policy`]:
//! the permission it needs and where the resource it touches is named; a route without one is
//! refused, and a test walks the route table to prove each is covered.

use std::sync::Arc;

use axum::http::Method;

use crate::App;

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    /// See runs, deployments, monitoring, incidents.
    Read,
    /// Start and cancel runs; respond to incidents and alerts (acknowledge, silence, ping).
    Run,
    /// Deploy, promote and roll back.
    Deploy,
    /// Approve a deployment held by its gate (someone other than who asked for it).
    Approve,
    /// Repositories, secrets and variables, the audit log, access itself.
    Admin,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Run => "run",
            Permission::Deploy => "deploy",
            Permission::Approve => "approve",
            Permission::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Developer,
    Maintainer,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Developer, Role::Maintainer, Role::Admin];

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Maintainer => "maintainer",
            Role::Admin => "admin",
        }
    }

    pub fn allows(self, permission: Permission) -> bool {
        match permission {
            Permission::Read => true,
            Permission::Run => self >= Role::Developer,
            Permission::Deploy | Permission::Approve => self >= Role::Maintainer,
            Permission::Admin => self == Role::Admin,
        }
    }

    /// The least role that has `permission`.
    pub fn least_for(permission: Permission) -> Role {
        Role::ALL.into_iter().find(|r| r.allows(permission)).unwrap_or(Role::Admin)
    }
}

/// Token scopes, each a set of permissions; every scope may read.
pub const SCOPES: [&str; 4] = ["read", "run", "deploy", "admin"];

fn scope_allows(scope: &str, permission: Permission) -> bool {
    match scope {
        "admin" => true,
        "deploy" => matches!(permission, Permission::Read | Permission::Deploy | Permission::Approve),
        "run" => matches!(permission, Permission::Read | Permission::Run),
        "read" => permission == Permission::Read,
        _ => false,
    }
}

/// What a request touches, as grants name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Global,
    Repository(String),
    Service(String),
    Environment(String, String),
}

impl Resource {
    fn describe(&self) -> String {
        match self {
            Resource::Global => "the whole server (`*`)".to_string(),
            Resource::Repository(name) => format!("repository:{name}"),
            Resource::Service(name) => format!("service:{name}"),
            Resource::Environment(service, environment) => format!("environment:{service}/{environment}"),
        }
    }
}

/// Whether a grant on `scope` covers `resource`: `*` everything; a service its environments.
pub fn covers(scope: &str, resource: &Resource) -> bool {
    if scope == "*" {
        return true;
    }
    match resource {
        Resource::Global => false,
        Resource::Repository(name) => scope.strip_prefix("repository:") == Some(name),
        Resource::Service(name) => scope.strip_prefix("service:") == Some(name),
        Resource::Environment(service, environment) => {
            scope.strip_prefix("service:") == Some(service)
                || scope.strip_prefix("environment:") == Some(&format!("{service}/{environment}"))
        }
    }
}

/// Checks a grant's scope as `tandem access grant --on` takes it.
pub fn check_scope(scope: &str) -> Result<(), String> {
    let named = |prefix: &str| scope.strip_prefix(prefix).filter(|n| !n.is_empty() && !n.contains(char::is_whitespace));
    let ok = scope == "*"
        || named("repository:").is_some()
        || named("service:").is_some()
        || named("environment:").and_then(|n| n.split_once('/')).is_some_and(|(s, e)| !s.is_empty() && !e.is_empty());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{scope}` is not a scope: use `*`, `repository:NAME`, `service:NAME` or `environment:SERVICE/NAME`"
        ))
    }
}

/// How a caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// An API token, with its scopes.
    Token(Vec<String>),
    /// A signed-in person's session cookie.
    Session,
    /// A run's own `github.token`: it reads, while its run lasts.
    Run,
}

/// The authenticated caller: its name in the audit log, and whose grants apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub actor: String,
    /// The person whose grants apply; `None`: an administrator's token (no grants needed).
    pub user: Option<String>,
    pub via: Via,
}

/// The best role `user` holds on `resource`, through its own grants or its teams'.
pub async fn role_of(app: &App, user: &str, resource: &Resource) -> Result<Option<Role>, store::StoreError> {
    let teams: Vec<String> = app
        .store
        .members()
        .await?
        .into_iter()
        .filter(|(_, member)| member == user)
        .map(|(team, _)| format!("team:{team}"))
        .collect();
    let own = format!("user:{user}");
    Ok(app
        .store
        .grants()
        .await?
        .iter()
        .filter(|g| g.subject == own || teams.contains(&g.subject))
        .filter(|g| covers(&g.scope, resource))
        .filter_map(|g| Role::parse(&g.role))
        .max())
}

/// Why `principal` may not do `permission` on `resource`, or `None` when it may.
pub async fn refusal(
    app: &Arc<App>,
    principal: &Principal,
    permission: Permission,
    resource: &Resource,
) -> Result<Option<String>, store::StoreError> {
    match &principal.via {
        Via::Run if permission != Permission::Read => {
            return Ok(Some(format!(
                "{}'s token (github.token) may only read; use an API token to change anything",
                principal.actor.replace("run:", "run ")
            )));
        }
        Via::Token(scopes) if !scopes.iter().any(|s| scope_allows(s, permission)) => {
            return Ok(Some(format!(
                "the token's scopes ({}) do not allow `{}`; create a token with the scope it needs (`tandem token create NAME --scope …`)",
                scopes.join(", "),
                permission.as_str()
            )));
        }
        _ => {}
    }
    let Some(user) = &principal.user else { return Ok(None) };
    let role = role_of(app, user, resource).await?;
    if role.is_some_and(|r| r.allows(permission)) {
        return Ok(None);
    }
    let needed = Role::least_for(permission).as_str();
    Ok(Some(match role {
        Some(role) => format!(
            "`{user}` is a {} on {}; `{}` needs {needed} (ask an admin: `tandem access grant user:{user} {needed} --on SCOPE`)",
            role.as_str(),
            resource.describe(),
            permission.as_str()
        ),
        None => format!(
            "`{user}` has no role on {}; `{}` needs {needed} (ask an admin: `tandem access grant user:{user} {needed} --on SCOPE`)",
            resource.describe(),
            permission.as_str()
        ),
    }))
}

/// Where a route names the resource it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Global,
    /// A path parameter holding a repository's name.
    Repository(&'static str),
    /// A path parameter holding a service's name.
    Service(&'static str),
    /// Path parameters holding a service and an environment.
    Environment(&'static str, &'static str),
    /// A run's id: its repository.
    RunOf(&'static str),
    /// A deployment's id: its environment.
    Deployment(&'static str),
    /// A run's id and the job the body names: the environment the job waits for.
    HeldJob(&'static str),
    /// The JSON body's `service` and `environment` (a deploy request).
    DeployBody,
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// No credentials (health, metrics, the document, sign-in) or its own (signed webhooks and
    /// acknowledgement links).
    Public,
    /// Any signed-in caller (their own account).
    Signed,
    Allow(Permission, Target),
}

/// The policy of every route, by method and route template; `None` for a route nobody wrote one
/// for (refused).
pub fn policy(method: &Method, route: &str) -> Option<Need> {
    use Need::*;
    use Permission::*;
    use Target::*;
    let get = *method == Method::GET;
    Some(match route {
        "/healthz" | "/metrics" | "/api/v1/openapi.json" | "/api/v1/webhooks/{forge}" | "/ack/{id}" => Public,
        "/signin"
        | "/signin/link/{secret}"
        | "/signin/oidc"
        | "/signin/oidc/callback"
        | "/signout"
        | "/assets/app.css"
        | "/assets/app.js" => Public,
        "/account" | "/account/password" => Signed,
        // git's smart HTTP answers git's own way (a Basic challenge): the handler checks `read`
        // to fetch and `run` to push, on the repository.
        "/git/{*rest}" => Public,
        "/api/v1/hosted" => Allow(Admin, Global),
        "/api/v1/repos/{name}/changes"
        | "/api/v1/repos/{name}/changes/{number}"
        | "/api/v1/repos/{name}/changes/{number}/diff"
        | "/api/v1/repos/{name}/queue"
        | "/api/v1/repos/{name}/commits/{rev}"
        | "/repositories/{name}/commits/{rev}" => Allow(Read, Repository("name")),
        "/api/v1/repos/{name}/changes/{number}/comments"
        | "/api/v1/repos/{name}/changes/{number}/comments/{id}/resolve"
        | "/api/v1/repos/{name}/changes/{number}/approve"
        | "/api/v1/repos/{name}/changes/{number}/merge" => Allow(Run, Repository("name")),
        "/api/v1/repos" | "/repositories" => Allow(if get { Read } else { Admin }, Global),
        "/api/v1/repos/{name}/runs" | "/repositories/{name}/run" => Allow(Run, Repository("name")),
        "/api/v1/repos/{name}/archive" | "/api/v1/repos/{name}/unarchive" | "/api/v1/repos/{name}/scan" => {
            Allow(Admin, Repository("name"))
        }
        "/repositories/{name}" | "/repositories/{name}/changes" | "/repositories/{name}/changes/{number}" => {
            Allow(Read, Repository("name"))
        }
        "/repositories/{name}/changes/{number}/{action}" => Allow(Run, Repository("name")),
        "/api/v1/runs/{id}" | "/api/v1/runs/{id}/logs" | "/runs/{id}" => Allow(Read, RunOf("id")),
        "/api/v1/runs/{id}/cancel" | "/api/v1/runs/{id}/rerun" | "/runs/{id}/{action}" => Allow(Run, RunOf("id")),
        "/api/v1/runs/{id}/approve" | "/runs/{id}/approve" => Allow(Deploy, HeldJob("id")),
        "/api/v1/deployments" if get => Allow(Read, Global),
        "/api/v1/deployments" => Allow(Deploy, DeployBody),
        "/api/v1/deployments/{id}"
        | "/deployments/{id}"
        | "/api/v1/deployments/{id}/sbom"
        | "/api/v1/deployments/{id}/provenance" => Allow(Read, Deployment("id")),
        "/api/v1/deployments/{id}/approve" => Allow(Approve, Deployment("id")),
        "/api/v1/deployments/{id}/promote" => Allow(Deploy, Deployment("id")),
        // The page's forms: approve, promote, rollback; the handler names the action.
        "/deployments/{id}/{action}" => Allow(Deploy, Deployment("id")),
        "/api/v1/environments/{service}/{environment}/rollback" | "/environments/{service}/{environment}/rollback" => {
            Allow(Deploy, Environment("service", "environment"))
        }
        "/api/v1/services/{name}/overview" | "/services/{name}" => Allow(Read, Service("name")),
        "/api/v1/secrets" | "/api/v1/secrets/{name}" | "/api/v1/variables" | "/api/v1/variables/{name}" => {
            Allow(Admin, Global)
        }
        "/api/v1/secrets/rotate" | "/api/v1/audit/checkpoint" | "/api/v1/events" | "/api/v1/access" => {
            Allow(Admin, Global)
        }
        "/secrets" | "/secrets/{action}" | "/audit" => Allow(Admin, Global),
        "/api/v1/heartbeats/{name}" | "/api/v1/incidents/{id}/{action}" | "/incidents/{id}/{action}" => {
            Allow(Run, Global)
        }
        "/api/v1/incidents/{id}/action-items" | "/api/v1/incidents/{id}/action-items/{number}/done" => {
            Allow(Run, Global)
        }
        "/api/v1/oncall/{schedule}/overrides" | "/api/v2/silence/{id}" => Allow(Run, Global),
        "/api/v1/incidents" | "/api/v2/alerts" | "/api/v2/silences" => Allow(if get { Read } else { Run }, Global),
        "/"
        | "/runs"
        | "/deployments"
        | "/incidents"
        | "/incidents/{id}"
        | "/incidents/{id}/postmortem"
        | "/monitoring" => Allow(Read, Global),
        "/api/v1/alerts"
        | "/api/v1/dora"
        | "/api/v1/environments"
        | "/api/v1/incidents/{id}"
        | "/api/v1/incidents/{id}/postmortem"
        | "/api/v1/insights"
        | "/api/v1/label/{name}/values"
        | "/api/v1/labels"
        | "/api/v1/notifications"
        | "/api/v1/oncall"
        | "/api/v1/probes"
        | "/api/v1/query"
        | "/api/v1/query_range"
        | "/api/v1/rules"
        | "/api/v1/runs"
        | "/api/v1/series"
        | "/api/v1/slos" => Allow(Read, Global),
        _ => return None,
    })
}
