//! Secrets (sealed in the vault; set, listed by name, removed, the key rotated) and variables
//! (in clear), per scope: `org`, `repo/<name>`, `env/<repo>/<environment>`.

#[allow(unused_imports)]
use super::*;

/// Checks a scope and a name: the scope's repository must exist; names are what an environment
/// variable may be called, and `GITHUB_` is GitHub's.
async fn check(app: &App, scope: &str, name: Option<&str>) -> ApiResult<()> {
    let bad = |code: &'static str, message: String| AppError::new(StatusCode::BAD_REQUEST, code, message);
    let repo = match scope.split('/').collect::<Vec<_>>().as_slice() {
        ["org"] => None,
        ["repo", repo] => Some(*repo),
        ["env", repo, environment] => {
            let valid =
                !environment.is_empty() && environment.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !valid {
                return Err(bad("bad_scope", format!("`{environment}` is not an environment name")));
            }
            Some(*repo)
        }
        _ => {
            return Err(bad(
                "bad_scope",
                format!("`{scope}` is not a scope: use `org`, `repo/<name>` or `env/<repo>/<environment>`"),
            ));
        }
    };
    if let Some(repo) = repo
        && !app.store.repos().await?.iter().any(|r| r.name == repo)
    {
        return Err(AppError::new(StatusCode::NOT_FOUND, "not_found", format!("no repository `{repo}`")));
    }
    if let Some(name) = name {
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && name.len() <= 100;
        if !valid {
            return Err(bad(
                "bad_name",
                format!("`{name}` is not a name: letters, digits and `_`, not starting with a digit"),
            ));
        }
        if name.to_ascii_uppercase().starts_with("GITHUB_") {
            return Err(bad("bad_name", format!("`{name}`: names starting with GITHUB_ are reserved")));
        }
    }
    Ok(())
}

fn vault(app: &App) -> ApiResult<&crate::vault::Vault> {
    app.vault().map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "vault", e))
}

#[utoipa::path(get, path = "/api/v1/secrets", tag = "secrets", summary = "The secrets of a scope, by name (never their values)",
    params(api::ScopeQuery), security(("token" = [])),
    responses((status = 200, body = api::SecretList), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn list_secrets(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Params(query): Params<api::ScopeQuery>,
) -> ApiResult<Json<api::SecretList>> {
    check(&app, &query.scope, None).await?;
    let rows = app.store.secrets("secret", std::slice::from_ref(&query.scope)).await?;
    let secrets =
        rows.into_iter().map(|r| api::SecretInfo { scope: r.scope, name: r.name, updated: r.updated }).collect();
    Ok(Json(api::SecretList { secrets }))
}

#[utoipa::path(put, path = "/api/v1/secrets/{name}", tag = "secrets", summary = "Set a secret: sealed before it is stored",
    params(("name" = String, Path)), request_body = api::SetSecret, security(("token" = [])),
    responses((status = 204), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn set_secret(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
    request: Result<Json<api::SetSecret>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<StatusCode> {
    let body = body(request)?;
    if body.value.is_empty() {
        return Err(AppError::new(StatusCode::BAD_REQUEST, "bad_value", "a secret cannot be empty"));
    }
    let sealed = vault(&app)?
        .seal(&body.scope, &name, body.value.as_bytes())
        .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "vault", e))?;
    keep(&app, "secret", &name, &body.scope, &sealed, &caller.0).await
}

async fn keep(app: &App, kind: &str, name: &str, scope: &str, value: &[u8], actor: &str) -> ApiResult<StatusCode> {
    check(app, scope, Some(name)).await?;
    app.store.set_secret(kind, scope, name, value, actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/secrets/{name}", tag = "secrets", summary = "Remove a secret",
    params(("name" = String, Path), api::ScopeQuery), security(("token" = [])),
    responses((status = 204), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn delete_secret(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
    Params(query): Params<api::ScopeQuery>,
) -> ApiResult<StatusCode> {
    remove(&app, "secret", &name, &query.scope, &caller.0).await
}

async fn remove(app: &App, kind: &str, name: &str, scope: &str, actor: &str) -> ApiResult<StatusCode> {
    check(app, scope, Some(name)).await?;
    app.store.delete_secret(kind, scope, name, actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/secrets/rotate", tag = "secrets",
    summary = "Rotate the vault's key: every secret sealed again with a new one, in one transaction",
    security(("token" = [])),
    responses((status = 200, body = api::Rotated), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn rotate_key(State(app): State<Arc<App>>, caller: Caller) -> ApiResult<Json<api::Rotated>> {
    let rows = app.store.all_secrets().await?;
    let store = app.store.clone();
    let actor = caller.0.clone();
    let resealed = vault(&app)?
        .rotate(rows, |rows| async move { store.reseal_secrets(&rows, &actor).await.map_err(|e| e.to_string()) })
        .await
        .map_err(|e| AppError::new(StatusCode::CONFLICT, "rotation", e))?;
    Ok(Json(api::Rotated { resealed }))
}

#[utoipa::path(get, path = "/api/v1/variables", tag = "secrets", summary = "The variables of a scope, with their values",
    params(api::ScopeQuery), security(("token" = [])),
    responses((status = 200, body = api::VariableList), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn list_variables(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Params(query): Params<api::ScopeQuery>,
) -> ApiResult<Json<api::VariableList>> {
    check(&app, &query.scope, None).await?;
    let rows = app.store.secrets("variable", std::slice::from_ref(&query.scope)).await?;
    let variables = rows
        .into_iter()
        .map(|r| api::Variable {
            scope: r.scope,
            name: r.name,
            value: String::from_utf8_lossy(&r.value).into_owned(),
            updated: r.updated,
        })
        .collect();
    Ok(Json(api::VariableList { variables }))
}

#[utoipa::path(put, path = "/api/v1/variables/{name}", tag = "secrets", summary = "Set a variable (`vars.NAME`)",
    params(("name" = String, Path)), request_body = api::SetSecret, security(("token" = [])),
    responses((status = 204), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn set_variable(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
    request: Result<Json<api::SetSecret>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<StatusCode> {
    let body = body(request)?;
    keep(&app, "variable", &name, &body.scope, body.value.as_bytes(), &caller.0).await
}

#[utoipa::path(delete, path = "/api/v1/variables/{name}", tag = "secrets", summary = "Remove a variable",
    params(("name" = String, Path), api::ScopeQuery), security(("token" = [])),
    responses((status = 204), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn delete_variable(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
    Params(query): Params<api::ScopeQuery>,
) -> ApiResult<StatusCode> {
    remove(&app, "variable", &name, &query.scope, &caller.0).await
}

/// What a run of `repo` is given: org then repository secrets and variables (the narrower
/// wins), and per environment its own, for the jobs that deploy there.
pub(crate) async fn for_run(
    app: &App,
    repo: &str,
) -> Result<
    (std::collections::BTreeMap<String, String>, std::collections::BTreeMap<String, String>, EnvironmentSecrets),
    String,
> {
    let scopes = ["org".to_string(), format!("repo/{repo}")];
    let vault = app.vault()?;
    let mut secrets = std::collections::BTreeMap::new();
    for row in app.store.secrets("secret", &scopes).await.map_err(|e| e.to_string())? {
        let value = vault.open_value(&row.scope, &row.name, &row.value)?;
        secrets.insert(row.name, String::from_utf8_lossy(&value).into_owned());
    }
    let mut vars = std::collections::BTreeMap::new();
    for row in app.store.secrets("variable", &scopes).await.map_err(|e| e.to_string())? {
        vars.insert(row.name, String::from_utf8_lossy(&row.value).into_owned());
    }
    // Environment secrets: every scope `env/<repo>/…` of this repository.
    let mut environments = EnvironmentSecrets::new();
    let prefix = format!("env/{repo}/");
    let all = app.store.all_secrets().await.map_err(|e| e.to_string())?;
    for row in all.into_iter().filter(|r| r.scope.starts_with(&prefix)) {
        let value = vault.open_value(&row.scope, &row.name, &row.value)?;
        let environment = row.scope[prefix.len()..].to_string();
        environments.entry(environment).or_default().insert(row.name, String::from_utf8_lossy(&value).into_owned());
    }
    Ok((secrets, vars, environments))
}

/// Secrets per environment name.
pub(crate) type EnvironmentSecrets = std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>;

#[utoipa::path(get, path = "/api/v1/access", tag = "access",
    summary = "Who may do what: grants of roles to users and teams, team members, tokens (never their values)",
    security(("token" = [])),
    responses((status = 200, body = api::AccessReport), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn access_report(State(app): State<Arc<App>>, _caller: Caller) -> ApiResult<Json<api::AccessReport>> {
    let grants = app.store.grants().await?;
    let members = app.store.members().await?;
    let tokens = app.store.tokens().await?;
    Ok(Json(api::AccessReport {
        grants: grants
            .into_iter()
            .map(|g| api::GrantInfo { subject: g.subject, role: g.role, scope: g.scope })
            .collect(),
        teams: members.into_iter().map(|(team, member)| api::TeamMember { team, member }).collect(),
        tokens: tokens
            .into_iter()
            .map(|t| api::TokenInfo {
                scopes: t.scopes.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
                name: t.name,
                owner: t.owner,
                expires: t.expires,
                last_used: t.last_used,
                created: t.created,
            })
            .collect(),
    }))
}
