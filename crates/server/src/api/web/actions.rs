//! What people do from the pages: cancel and re-run runs, let a held job go; approve, promote and roll back
//! deployments; acknowledge, resolve and annotate incidents. Each form carries the CSRF token of
//! its session; each action calls the API's own handler as the signed-in person, then sends the
//! browser back to the page with what happened.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::super::{AppError, Caller, deployments, runs};
use super::session::{Viewer, urlencode};
use crate::App;
use crate::incidents::Command;

#[derive(serde::Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    failed: Option<String>,
    #[serde(default)]
    emergency: Option<String>,
    #[serde(default)]
    confirm: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

pub(super) fn csrf_ok(viewer: &Viewer, token: &str) -> bool {
    git::webhook::constant_time_eq(viewer.csrf.as_bytes(), token.as_bytes())
}

pub(super) fn refused() -> Response {
    (
        StatusCode::FORBIDDEN,
        "This form is stale or was not sent by Tandem's pages (no valid CSRF token). Reload the page and try again.",
    )
        .into_response()
}

/// Back to `to`, with a message at the top of the page.
fn back(to: &str, outcome: Result<String, AppError>) -> Response {
    let message = match outcome {
        Ok(done) => done,
        Err(error) => format!("Refused: {}", error.message),
    };
    Redirect::to(&format!("{to}?flash={}", urlencode(&message))).into_response()
}

pub(super) async fn run(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    Path((id, action)): Path<(i64, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    if !csrf_ok(&viewer, &form.csrf) {
        return refused();
    }
    let caller = Caller(viewer.actor.clone());
    let path = axum::extract::Path(id.to_string());
    let outcome = match action.as_str() {
        "cancel" => {
            runs::cancel(State(app.clone()), caller, path).await.map(|_| format!("Run #{id} is being cancelled."))
        }
        "rerun" => {
            let failed = form.failed.as_deref() == Some("true");
            let body = Some(Json(api::RerunRequest { failed }));
            match runs::rerun(State(app.clone()), caller, path, body).await {
                Ok(_) => {
                    let newest = app.store.runs(store::RunFilter { limit: 1, ..Default::default() }).await;
                    let queued = newest.ok().and_then(|r| r.first().map(|r| r.id));
                    return match queued {
                        Some(new) => back(&format!("/runs/{new}"), Ok(format!("Run #{id} queued again as #{new}."))),
                        None => back("/runs", Ok("Queued again.".into())),
                    };
                }
                Err(error) => Err(error),
            }
        }
        other => Err(AppError::new(StatusCode::NOT_FOUND, "not_found", format!("`{other}` is not an action on a run"))),
    };
    back(&format!("/runs/{id}"), outcome)
}

#[derive(serde::Deserialize)]
pub(super) struct ApproveJobForm {
    #[serde(default)]
    csrf: String,
    job: String,
    #[serde(default)]
    reason: Option<String>,
}

/// Lets a job held at its environment's gates go (its own route: it needs a maintainer).
pub(super) async fn approve_job(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    Path(id): Path<i64>,
    Form(form): Form<ApproveJobForm>,
) -> Response {
    if !csrf_ok(&viewer, &form.csrf) {
        return refused();
    }
    let caller = Caller(viewer.actor.clone());
    let body = Ok(Json(api::ApproveJob { job: form.job.clone(), reason: form.reason }));
    let outcome = runs::approve_job(State(app), caller, axum::extract::Path(id.to_string()), body)
        .await
        .map(|a| format!("Job {} may use environment {} now.", a.job, a.environment));
    back(&format!("/runs/{id}"), outcome)
}

pub(super) async fn deployment(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    Path((id, action)): Path<(i64, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    if !csrf_ok(&viewer, &form.csrf) {
        return refused();
    }
    let caller = Caller(viewer.actor.clone());
    let path = axum::extract::Path(id.to_string());
    let outcome = match action.as_str() {
        "approve" => {
            deployments::approve(State(app), caller, path, None).await.map(|_| format!("Deployment {id} approved."))
        }
        "promote" => {
            deployments::promote(State(app), caller, path).await.map(|_| format!("Deployment {id} is being promoted."))
        }
        other => Err(AppError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("`{other}` is not an action on a deployment"),
        )),
    };
    back(&format!("/deployments/{id}"), outcome)
}

pub(super) async fn rollback(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    Path((service, environment)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    if !csrf_ok(&viewer, &form.csrf) {
        return refused();
    }
    if form.confirm.as_deref() != Some("yes") {
        return back("/deployments", Ok("Nothing was rolled back: tick “I mean it” to confirm.".into()));
    }
    let emergency = form.emergency.as_deref() == Some("true");
    match deployments::roll_back(&app, &service, &environment, emergency, &viewer.actor).await {
        Ok((_, d)) => {
            let what = if emergency { "Emergency rollback" } else { "Rollback" };
            back(&format!("/deployments/{}", d.id), Ok(format!("{what} of {service}/{environment} started.")))
        }
        Err(error) => back("/deployments", Err(error)),
    }
}

pub(super) async fn incident(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    Path((id, action)): Path<(i64, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    if !csrf_ok(&viewer, &form.csrf) {
        return refused();
    }
    let command = match action.as_str() {
        "acknowledge" => Command::Acknowledge,
        "resolve" => Command::Resolve,
        "notes" => Command::Note,
        _ => return back(&format!("/incidents/{id}"), Ok(format!("`{action}` is not an action on an incident."))),
    };
    let outcome = crate::incidents::command(&app, id, command, form.text, &viewer.actor)
        .await
        .map(|i| format!("Incident {id} is {}.", i.state.as_str().replace('_', " ")))
        .map_err(AppError::from);
    back(&format!("/incidents/{id}"), outcome)
}
