//! Repository pages: every repository with its latest run, adding one (its webhook secret shown
//! once, on the page that answers the form), and one repository with its branches and tags — each
//! with a button that runs what a push of it would — and its latest runs.

use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use store::RunFilter;

use super::actions::{csrf_ok, refused};
use super::pages::{Flash, RunRow, missing, run_rows};
use super::render::escape;
use super::session::{Viewer, urlencode};
use super::{Chrome, page};
use crate::App;

pub(super) struct RepoRow {
    pub(super) name: String,
    pub(super) source: String,
    pub(super) poll: String,
    pub(super) forge: String,
    pub(super) latest: String,
    pub(super) archived: bool,
}

#[derive(askama::Template)]
#[template(path = "repositories.html")]
struct RepositoriesPage {
    chrome: Chrome,
    repos: Vec<RepoRow>,
    added_name: String,
    added_secret: String,
    added_warning: String,
    webhook_url: String,
}

fn poll(seconds: Option<i64>) -> String {
    seconds.map(|s| format!("every {s} s")).unwrap_or_else(|| "webhooks only".into())
}

async fn listing(app: &App, viewer: &Viewer, flash: Option<String>) -> RepositoriesPage {
    let mut repos = Vec::new();
    for repo in app.store.repos().await.unwrap_or_default() {
        let latest = app.store.runs(RunFilter { repo_id: Some(repo.id), limit: 1, ..Default::default() }).await;
        let latest = match latest.ok().and_then(|r| r.into_iter().next()) {
            Some(run) => format!(
                "<a href=\"/runs/{}\">#{}</a> <span class=\"badge {}\">{}</span>",
                run.id,
                run.id,
                run.status.as_str(),
                run.status.as_str()
            ),
            None => "—".into(),
        };
        repos.push(RepoRow {
            name: repo.name.clone(),
            source: git::redact_credentials(&repo.source),
            poll: poll(repo.poll_seconds),
            forge: repo.forge.clone().unwrap_or_else(|| "—".into()),
            latest,
            archived: repo.archived.is_some(),
        });
    }
    RepositoriesPage {
        chrome: Chrome::new(viewer, "Repositories", "repositories", flash),
        repos,
        added_name: String::new(),
        added_secret: String::new(),
        added_warning: String::new(),
        webhook_url: format!("http://{}/api/v1/webhooks/{{github|gitea|forgejo|gitlab}}", app.config.listen),
    }
}

pub(super) async fn repositories(State(app): State<Arc<App>>, viewer: Viewer, Query(flash): Query<Flash>) -> Response {
    page(listing(&app, &viewer, flash.flash).await)
}

#[derive(serde::Deserialize)]
pub(super) struct AddForm {
    #[serde(default)]
    csrf: String,
    source: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    poll: String,
}

pub(super) async fn add(State(app): State<Arc<App>>, viewer: Viewer, Form(form): Form<AddForm>) -> Response {
    if !csrf_ok(&viewer, &form.csrf) {
        return refused();
    }
    let poll_seconds = match form.poll.trim() {
        "" => None,
        text => match text.parse::<i64>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Redirect::to(&format!(
                    "/repositories?flash={}",
                    urlencode("Refused: poll must be a number of seconds.")
                ))
                .into_response();
            }
        },
    };
    let request = api::AddRepository {
        source: form.source,
        name: Some(form.name.trim().to_string()).filter(|n| !n.is_empty()),
        poll_seconds,
        forge: None,
        api_url: None,
        status_token: None,
    };
    match super::super::repositories::add_repository(&app, request, &viewer.actor).await {
        Ok(added) => {
            let mut listing = listing(&app, &viewer, None).await;
            listing.added_name = added.repo.name;
            listing.added_secret = added.webhook_secret;
            listing.added_warning = added.warning.unwrap_or_default();
            page(listing)
        }
        Err(error) => {
            Redirect::to(&format!("/repositories?flash={}", urlencode(&format!("Refused: {}", error.message))))
                .into_response()
        }
    }
}

#[derive(askama::Template)]
#[template(path = "repository.html")]
struct RepositoryPage {
    chrome: Chrome,
    name: String,
    /// Hosted here: it has change requests and a merge queue.
    hosted: bool,
    source: String,
    poll: String,
    forge: String,
    refs: Vec<(String, String, String)>,
    runs: Vec<RunRow>,
    /// When it was archived; empty while active.
    archived: String,
}

pub(super) async fn repository(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    Path(name): Path<String>,
    Query(flash): Query<Flash>,
) -> Response {
    let Ok(repo) = app.store.repo(&name).await else {
        return missing(&viewer, format!("There is no repository named {}.", escape(&name)));
    };
    let refs = app
        .store
        .refs(repo.id)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(r, sha)| {
            let short = r.trim_start_matches("refs/heads/").trim_start_matches("refs/tags/").to_string();
            (r, sha.get(..10).unwrap_or(&sha).to_string(), short)
        })
        .collect();
    let runs =
        app.store.runs(RunFilter { repo_id: Some(repo.id), limit: 20, ..Default::default() }).await.unwrap_or_default();
    let names = std::collections::HashMap::from([(repo.id, repo.name.clone())]);
    page(RepositoryPage {
        chrome: Chrome::new(&viewer, format!("Repository {name}"), "repositories", flash.flash),
        source: git::redact_credentials(&repo.source),
        poll: poll(repo.poll_seconds),
        forge: repo.forge.clone().unwrap_or_else(|| "—".into()),
        refs,
        runs: run_rows(&runs, &names),
        hosted: crate::code::hosting::path(&app, &name).is_dir(),
        archived: repo.archived.clone().unwrap_or_default(),
        name,
    })
}

#[derive(serde::Deserialize)]
pub(super) struct RunForm {
    #[serde(default)]
    csrf: String,
    #[serde(rename = "ref")]
    git_ref: String,
}

pub(super) async fn run(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    Path(name): Path<String>,
    Form(form): Form<RunForm>,
) -> Response {
    if !csrf_ok(&viewer, &form.csrf) {
        return refused();
    }
    let body = Some(axum::Json(api::TriggerRequest { git_ref: Some(form.git_ref.clone()) }));
    let answer =
        super::super::repositories::trigger(State(app), super::super::Caller(viewer.actor), Path(name.clone()), body)
            .await;
    let message = match answer {
        Ok(_) => format!("Runs of {} queued.", form.git_ref),
        Err(error) => format!("Refused: {}", error.message),
    };
    Redirect::to(&format!("/repositories/{name}?flash={}", urlencode(&message))).into_response()
}

pub(super) struct DeploymentRow {
    id: i64,
    service: String,
    environment: String,
    status: String,
    approved_by: String,
}

#[derive(askama::Template)]
#[template(path = "commit.html")]
struct CommitPage {
    chrome: Chrome,
    repo: String,
    sha: String,
    author: String,
    date: String,
    message: String,
    findings: Vec<api::CommitFinding>,
    runs: Vec<RunRow>,
    deployments: Vec<DeploymentRow>,
}

/// One commit: what it says, its security findings, its runs and where it was deployed.
pub(super) async fn commit(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    Path((name, rev)): Path<(String, String)>,
    Query(flash): Query<Flash>,
) -> Response {
    let Ok(repo) = app.store.repo(&name).await else {
        return missing(&viewer, format!("There is no repository named {}.", escape(&name)));
    };
    let detail = match super::super::commits::detail(&app, &repo, &rev).await {
        Ok(detail) => detail,
        Err(error) => return missing(&viewer, escape(&error.message)),
    };
    let runs: Vec<store::Run> = app
        .store
        .runs(RunFilter { repo_id: Some(repo.id), limit: 1000, ..Default::default() })
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.sha == detail.sha)
        .collect();
    let names = std::collections::HashMap::from([(repo.id, repo.name.clone())]);
    let deployments = detail
        .deployments
        .iter()
        .map(|d| DeploymentRow {
            id: d.id,
            service: d.service.clone(),
            environment: d.environment.clone(),
            status: d.status.as_str().to_string(),
            approved_by: d.approved_by.clone().unwrap_or_else(|| "—".into()),
        })
        .collect();
    let short = detail.sha.get(..12).unwrap_or(&detail.sha).to_string();
    page(CommitPage {
        chrome: Chrome::new(&viewer, format!("Commit {short} of {name}"), "repositories", flash.flash),
        runs: run_rows(&runs, &names),
        repo: detail.repo,
        sha: detail.sha,
        author: detail.author,
        date: detail.date,
        message: detail.message,
        findings: detail.findings,
        deployments,
    })
}
