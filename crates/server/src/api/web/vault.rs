//! The secrets page: every scope's secrets (names only) and variables, and forms to set and
//! remove them; each goes through the API's own handlers as the signed-in person.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};

use super::actions::{csrf_ok, refused};
use super::pages::Flash;
use super::session::{Viewer, urlencode};
use super::{Chrome, page};
use crate::App;

pub(super) struct ScopeRow {
    title: String,
    scope: String,
    /// (name, updated)
    secrets: Vec<(String, String)>,
    /// (name, updated, value)
    variables: Vec<(String, String, String)>,
}

#[derive(askama::Template)]
#[template(path = "secrets.html")]
struct SecretsPage {
    chrome: Chrome,
    scopes: Vec<ScopeRow>,
    default_scope: String,
}

pub(super) async fn secrets(State(app): State<Arc<App>>, viewer: Viewer, Query(flash): Query<Flash>) -> Response {
    let mut scopes = vec![("Organisation".to_string(), "org".to_string())];
    let repos = app.store.repos().await.unwrap_or_default();
    for repo in &repos {
        scopes.push((format!("Repository {}", repo.name), format!("repo/{}", repo.name)));
    }
    // Environments that have something set.
    let all = app.store.all_secrets().await.unwrap_or_default();
    let mut environments: Vec<String> =
        all.iter().filter(|r| r.scope.starts_with("env/")).map(|r| r.scope.clone()).collect();
    environments.sort();
    environments.dedup();
    for scope in environments {
        scopes.push((format!("Environment {}", scope.trim_start_matches("env/")), scope));
    }
    let mut rows = Vec::new();
    for (title, scope) in scopes {
        let one = std::slice::from_ref(&scope);
        let secrets = app.store.secrets("secret", one).await.unwrap_or_default();
        let variables = app.store.secrets("variable", one).await.unwrap_or_default();
        rows.push(ScopeRow {
            title,
            scope,
            secrets: secrets.into_iter().map(|r| (r.name, super::render::time(&r.updated))).collect(),
            variables: variables
                .into_iter()
                .map(|r| (r.name, super::render::time(&r.updated), String::from_utf8_lossy(&r.value).into_owned()))
                .collect(),
        });
    }
    let default_scope = repos.first().map(|r| format!("repo/{}", r.name)).unwrap_or_else(|| "org".into());
    page(SecretsPage {
        chrome: Chrome::new(&viewer, "Secrets and variables", "secrets", flash.flash),
        scopes: rows,
        default_scope,
    })
}

#[derive(serde::Deserialize)]
pub(super) struct SecretForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: String,
}

pub(super) async fn change(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    Path(action): Path<String>,
    Form(form): Form<SecretForm>,
) -> Response {
    if !csrf_ok(&viewer, &form.csrf) {
        return refused();
    }
    use super::super::{Caller, Params, secrets as api_secrets};
    let caller = Caller(viewer.actor.clone());
    let state = State(app);
    let name = Path(form.name.clone());
    let scope = Params(api::ScopeQuery { scope: form.scope.clone() });
    let body = Ok(Json(api::SetSecret { scope: form.scope.clone(), value: form.value }));
    let outcome = match (action.as_str(), form.kind.as_str()) {
        ("set", "secret") => api_secrets::set_secret(state, caller, name, body).await,
        ("set", _) => api_secrets::set_variable(state, caller, name, body).await,
        ("remove", "secret") => api_secrets::delete_secret(state, caller, name, scope).await,
        ("remove", _) => api_secrets::delete_variable(state, caller, name, scope).await,
        _ => return (axum::http::StatusCode::NOT_FOUND, "no such action").into_response(),
    };
    let what = if form.kind == "secret" { "Secret" } else { "Variable" };
    let message = match outcome {
        Ok(_) if action == "set" => format!("{what} {} set in {}.", form.name, form.scope),
        Ok(_) => format!("{what} {} removed from {}.", form.name, form.scope),
        Err(error) => format!("Refused: {}", error.message),
    };
    Redirect::to(&format!("/secrets?flash={}", urlencode(&message))).into_response()
}
