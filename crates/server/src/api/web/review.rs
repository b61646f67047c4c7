//! Change request pages of hosted repositories: the changes and the merge queue, and one change
//! with its revisions, runs, reviews, what it lacks and what it collides with — with forms to
//! approve it, comment on it, and put it in the queue or take it out. They show what the API's
//! handlers answer.

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
    /// A comment's text, and where it applies (a line of a file, or the change).
    #[serde(default)]
    body: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    line: String,
    /// The comment to resolve.
    #[serde(default)]
    comment: String,
}

/// The forms of a change's page: `approve`, `merge`, `dequeue`, `comment` or `resolve`.
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
        "dequeue" => handlers::dequeue_change(State(app), caller, path)
            .await
            .map(|_| format!("Change {number} is out of the merge queue.")),
        "comment" => {
            let place = (!form.path.trim().is_empty()).then(|| form.path.trim().to_string());
            let line = form.line.trim().parse::<i64>().ok();
            let request = api::CommentRequest { body: form.body.clone(), path: place, line };
            handlers::comment_change(State(app), caller, path, Ok(Json(request)))
                .await
                .map(|_| "Comment added.".to_string())
        }
        "resolve" => {
            let id = form.comment.trim().to_string();
            handlers::resolve_comment(State(app), caller, Path((name.clone(), number.clone(), id.clone())))
                .await
                .map(|_| format!("Comment {id} resolved."))
        }
        _ => return missing(&viewer, format!("There is no action {}.", escape(&action))),
    };
    let message = match answer {
        Ok(message) => message,
        Err(error) => format!("Refused: {}", error.message),
    };
    Redirect::to(&format!("/repositories/{name}/changes/{number}?flash={}", urlencode(&message))).into_response()
}
