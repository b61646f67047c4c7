//! Change request pages of hosted repositories: the changes and the merge queue, and one change
//! with its revisions, runs, reviews, what it lacks and what it collides with — with forms to
//! approve it and to put it in the queue. They show what the API's handlers answer.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};

use super::actions::{csrf_ok, refused};
use super::pages::{Flash, missing};
use super::render::escape;
use super::session::{Viewer, urlencode};
use super::{Chrome, page};
use crate::App;
use crate::api::Caller;
use crate::api::changes as handlers;

#[derive(askama::Template)]
#[template(path = "changes.html")]
struct ChangesPage {
    chrome: Chrome,
    name: String,
    changes: Vec<api::ChangeSummary>,
    queues: Vec<api::QueueInfo>,
}

pub(super) async fn changes(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    Path(name): Path<String>,
    Query(flash): Query<Flash>,
) -> Response {
    let caller = || Caller(viewer.actor.clone());
    let listed = handlers::list_changes(State(app.clone()), caller(), Path(name.clone())).await;
    let queues = handlers::show_queue(State(app.clone()), caller(), Path(name.clone())).await;
    match (listed, queues) {
        (Ok(Json(changes)), Ok(Json(queues))) => page(ChangesPage {
            chrome: Chrome::new(&viewer, format!("Changes of {name}"), "repositories", flash.flash),
            name,
            changes,
            queues,
        }),
        (Err(error), _) | (_, Err(error)) => missing(&viewer, escape(&error.message)),
    }
}

#[derive(askama::Template)]
#[template(path = "change.html")]
struct ChangePage {
    chrome: Chrome,
    name: String,
    detail: api::ChangeDetail,
}

pub(super) async fn change(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    Path((name, number)): Path<(String, String)>,
    Query(flash): Query<Flash>,
) -> Response {
    let shown =
        handlers::show_change(State(app), Caller(viewer.actor.clone()), Path((name.clone(), number.clone()))).await;
    match shown {
        Ok(Json(detail)) => page(ChangePage {
            chrome: Chrome::new(
                &viewer,
                format!("Change {number} of {name}: {}", detail.change.title),
                "repositories",
                flash.flash,
            ),
            name,
            detail,
        }),
        Err(error) => missing(&viewer, escape(&error.message)),
    }
}

#[derive(serde::Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    csrf: String,
}

/// The forms of a change's page: `approve` or `merge`.
pub(super) async fn act(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    Path((name, number, action)): Path<(String, String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    if !csrf_ok(&viewer, &form.csrf) {
        return refused();
    }
    let caller = Caller(viewer.actor.clone());
    let path = Path((name.clone(), number.clone()));
    let answer = match action.as_str() {
        "approve" => {
            handlers::approve_change(State(app), caller, path).await.map(|_| format!("Change {number} approved."))
        }
        "merge" => handlers::merge_change(State(app), caller, path, None)
            .await
            .map(|_| format!("Change {number} is in the merge queue.")),
        _ => return missing(&viewer, format!("There is no action {}.", escape(&action))),
    };
    let message = match answer {
        Ok(message) => message,
        Err(error) => format!("Refused: {}", error.message),
    };
    Redirect::to(&format!("/repositories/{name}/changes/{number}?flash={}", urlencode(&message))).into_response()
}
