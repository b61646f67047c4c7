//! Hosted repositories, change requests (list, show, diff, comment, approve, merge) and the merge
//! queue.

#[allow(unused_imports)]
use super::*;
use crate::code;

fn summary(change: &store::ChangeRow, latest: Option<&store::RevisionRow>) -> api::ChangeSummary {
    api::ChangeSummary {
        number: change.number,
        title: change.title.clone(),
        author: change.author.clone(),
        target: change.target.clone(),
        status: change.status.clone(),
        reason: change.reason.clone(),
        revision: latest.map_or(0, |r| r.number),
        sha: latest.map_or_else(String::new, |r| r.sha.clone()),
        updated: change.updated.clone(),
    }
}

async fn hosted_repo(app: &App, name: &str) -> ApiResult<Repo> {
    let repo = app.store.repos().await?.into_iter().find(|r| r.name == name);
    match repo {
        Some(repo) if code::reviews_changes(app, &repo) => Ok(repo),
        Some(_) => Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "not_hosted",
            format!(
                "`{name}` has no change requests here: host it (`tandem repo create`) or add it with its forge (`--forge`) so that its pull requests arrive"
            ),
        )),
        None => Err(AppError::new(StatusCode::NOT_FOUND, "not_found", format!("no repository `{name}`"))),
    }
}

async fn change(app: &App, repo: &Repo, number: &str) -> ApiResult<store::ChangeRow> {
    Ok(app.store.change(repo.id, parse_id(number)?).await?)
}

#[utoipa::path(post, path = "/api/v1/hosted", tag = "code", summary = "Host a new repository (served at /git/NAME.git)",
    request_body = api::CreateHosted, security(("token" = [])),
    responses((status = 201, body = api::HostedRepository), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn create_hosted(
    State(app): State<Arc<App>>,
    caller: Caller,
    request: Result<Json<api::CreateHosted>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let request = body(request)?;
    let name = request.name.trim().to_string();
    if !code::hosting::valid_name(&name) {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "bad_name",
            format!("`{name}` is not a repository name: letters, digits, `-`, `_` and `.`"),
        ));
    }
    if app.store.repos().await?.iter().any(|r| r.name == name) {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("a repository named `{name}` exists already"),
        ));
    }
    let protected = request.protected.unwrap_or_else(|| vec!["main".to_string()]);
    if let Some(bad) = protected.iter().find(|b| b.is_empty() || b.contains(|c: char| c.is_whitespace() || c == '*')) {
        return Err(AppError::new(StatusCode::BAD_REQUEST, "bad_branch", format!("`{bad}` is not a branch name")));
    }
    let dir = code::hosting::create(&app, &name, &protected)
        .await
        .map_err(|e| AppError::new(StatusCode::CONFLICT, "cannot_create", e))?;
    let secret = crate::random_secret()
        .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    crate::credentials::keep(&app, &name, "webhook_secret", &secret, &caller.0)
        .await
        .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "vault", e))?;
    app.store.add_repo(&name, &dir.to_string_lossy(), crate::credentials::IN_VAULT, None, &caller.0).await?;
    let clone_url = format!("http://{}/git/{name}.git", app.config.listen);
    Ok((StatusCode::CREATED, Json(api::HostedRepository { name, clone_url, protected })).into_response())
}

#[utoipa::path(get, path = "/api/v1/repos/{name}/changes", tag = "code", summary = "A hosted repository's change requests, newest first",
    params(("name" = String, Path)), security(("token" = [])),
    responses((status = 200, body = Vec<api::ChangeSummary>), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn list_changes(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<api::ChangeSummary>>> {
    let repo = hosted_repo(&app, &name).await?;
    let mut list = Vec::new();
    for change in app.store.changes(repo.id, None).await? {
        let latest = app.store.revisions(change.id).await?.pop();
        list.push(summary(&change, latest.as_ref()));
    }
    Ok(Json(list))
}

#[utoipa::path(get, path = "/api/v1/repos/{name}/changes/{number}", tag = "code",
    summary = "A change: revisions, reviews, runs, what it lacks before it may merge, and the changes it collides with",
    params(("name" = String, Path), ("number" = i64, Path)), security(("token" = [])),
    responses((status = 200, body = api::ChangeDetail), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn show_change(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path((name, number)): Path<(String, String)>,
) -> ApiResult<Json<api::ChangeDetail>> {
    let repo = hosted_repo(&app, &name).await?;
    let change = change(&app, &repo, &number).await?;
    let revisions = app.store.revisions(change.id).await?;
    let reviews = app.store.reviews(change.id).await?;
    let shas: Vec<&String> = revisions.iter().map(|r| &r.sha).collect();
    let runs = app.store.runs(RunFilter { repo_id: Some(repo.id), limit: 500, ..Default::default() }).await?;
    let runs = runs
        .into_iter()
        .filter(|r| r.event == "pull_request" && shas.contains(&&r.sha))
        .map(|r| api::ChangeRun { id: r.id, workflow: r.workflow, status: r.status.as_str().to_string(), sha: r.sha })
        .collect();
    let (standing, missing) = code::changes::standing(&app, &repo, &change)
        .await
        .map_err(|e| AppError::new(StatusCode::UNPROCESSABLE_ENTITY, "cannot_review", e))?;
    let mut conflicts: Vec<api::ConflictWarning> = Vec::new();
    for event in app.store.events_about(&format!("change/{}", change.id)).await? {
        if event.kind != "change.conflict_warning" {
            continue;
        }
        let with = event.payload["with"].as_i64().unwrap_or(0);
        let files = event.payload["files"]
            .as_array()
            .map(|f| f.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        conflicts.retain(|c| c.with != with);
        conflicts.push(api::ConflictWarning { with, files });
    }
    // Only the changes still open can still collide.
    let open: Vec<i64> = app
        .store
        .changes(repo.id, None)
        .await?
        .into_iter()
        .filter(|c| matches!(c.status.as_str(), "open" | "queued" | "ejected"))
        .map(|c| c.number)
        .collect();
    conflicts.retain(|c| open.contains(&c.with));
    Ok(Json(api::ChangeDetail {
        change: summary(&change, revisions.last()),
        revisions: revisions
            .iter()
            .map(|r| api::RevisionInfo {
                number: r.number,
                sha: r.sha.clone(),
                base: r.base.clone(),
                pushed_by: r.pushed_by.clone(),
                created: r.created.clone(),
            })
            .collect(),
        reviews: reviews
            .into_iter()
            .map(|r| api::ReviewInfo {
                id: r.id,
                revision: r.revision,
                kind: r.kind,
                author: r.author,
                path: r.path,
                line: r.line,
                body: r.body,
                resolved: r.resolved,
                created: r.created,
            })
            .collect(),
        runs,
        approvers: standing.approvers.into_iter().filter(|a| *a != change.author).collect(),
        missing,
        conflicts,
    }))
}

#[utoipa::path(get, path = "/api/v1/repos/{name}/changes/{number}/diff", tag = "code", summary = "The latest revision's diff against its base",
    params(("name" = String, Path), ("number" = i64, Path)), security(("token" = [])),
    responses((status = 200, content_type = "text/plain", body = String), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn diff_change(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path((name, number)): Path<(String, String)>,
) -> ApiResult<Response> {
    let repo = hosted_repo(&app, &name).await?;
    let change = change(&app, &repo, &number).await?;
    let latest = code::changes::latest(&app, &change)
        .await
        .ok_or_else(|| AppError::new(StatusCode::NOT_FOUND, "not_found", "no revision"))?;
    let range = format!("{}...{}", latest.base, latest.sha);
    let diff = git::repo::git(&code::git_dir(&app, &repo), &["diff", "--no-color", &range])
        .await
        .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "git", e.to_string()))?;
    Ok(([("content-type", "text/plain; charset=utf-8")], diff + "\n").into_response())
}

#[utoipa::path(post, path = "/api/v1/repos/{name}/changes/{number}/comments", tag = "code",
    summary = "Comment on a change, in general or on a line of a file (a line comment must be resolved before it merges)",
    params(("name" = String, Path), ("number" = i64, Path)), request_body = api::CommentRequest, security(("token" = [])),
    responses((status = 201, body = api::ReviewInfo), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn comment_change(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((name, number)): Path<(String, String)>,
    request: Result<Json<api::CommentRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let request = body(request)?;
    if request.body.trim().is_empty() || request.line.is_some() != request.path.is_some() {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "bad_comment",
            "a comment needs a body; a line comment both `path` and `line`",
        ));
    }
    let repo = hosted_repo(&app, &name).await?;
    let change = change(&app, &repo, &number).await?;
    review(&app, &change, "comment", &caller.0, request.path, request.line, request.body)
        .await
        .map(|r| (StatusCode::CREATED, Json(r)).into_response())
}

async fn review(
    app: &App,
    change: &store::ChangeRow,
    kind: &str,
    author: &str,
    path: Option<String>,
    line: Option<i64>,
    body: String,
) -> ApiResult<api::ReviewInfo> {
    let revision = code::changes::latest(app, change).await.map_or(0, |r| r.number);
    let row = store::ReviewRow {
        id: 0,
        change_id: change.id,
        revision,
        kind: kind.to_string(),
        author: author.to_string(),
        path,
        line,
        body,
        resolved: false,
        created: String::new(),
    };
    let r = app.store.add_review(row, author).await?;
    Ok(api::ReviewInfo {
        id: r.id,
        revision: r.revision,
        kind: r.kind,
        author: r.author,
        path: r.path,
        line: r.line,
        body: r.body,
        resolved: r.resolved,
        created: r.created,
    })
}

#[utoipa::path(post, path = "/api/v1/repos/{name}/changes/{number}/comments/{id}/resolve", tag = "code", summary = "Mark a comment resolved",
    params(("name" = String, Path), ("number" = i64, Path), ("id" = i64, Path)), security(("token" = [])),
    responses((status = 204), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn resolve_comment(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((name, number, id)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let repo = hosted_repo(&app, &name).await?;
    let change = change(&app, &repo, &number).await?;
    app.store.resolve_comment(change.id, parse_id(&id)?, &caller.0).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/repos/{name}/changes/{number}/approve", tag = "code",
    summary = "Approve the change's current code (a later revision with other code needs a new approval)",
    params(("name" = String, Path), ("number" = i64, Path)), security(("token" = [])),
    responses((status = 201, body = api::ReviewInfo), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn approve_change(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((name, number)): Path<(String, String)>,
) -> ApiResult<Response> {
    let repo = hosted_repo(&app, &name).await?;
    let change = change(&app, &repo, &number).await?;
    if change.author == caller.0 {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "same_person",
            format!("`{}` wrote change {}; someone else approves it", caller.0, change.number),
        ));
    }
    review(&app, &change, "approval", &caller.0, None, None, "approved".into())
        .await
        .map(|r| (StatusCode::CREATED, Json(r)).into_response())
}

#[utoipa::path(post, path = "/api/v1/repos/{name}/changes/{number}/merge", tag = "code",
    summary = "Put the change in the merge queue, once it has what its repository requires (else 409 with what it lacks)",
    params(("name" = String, Path), ("number" = i64, Path)), request_body(content = Option<api::MergeRequest>), security(("token" = [])),
    responses((status = 202, body = api::ChangeSummary), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn merge_change(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((name, number)): Path<(String, String)>,
    request: Option<Json<api::MergeRequest>>,
) -> ApiResult<Response> {
    let repo = hosted_repo(&app, &name).await?;
    if repo.archived.is_some() {
        return Err(AppError::new(StatusCode::CONFLICT, "archived", format!("{name} is archived and read-only")));
    }
    let change = change(&app, &repo, &number).await?;
    if !matches!(change.status.as_str(), "open" | "ejected") {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "not_open",
            format!("change {} is {}", change.number, change.status),
        ));
    }
    let (_, missing) = code::changes::standing(&app, &repo, &change)
        .await
        .map_err(|e| AppError::new(StatusCode::UNPROCESSABLE_ENTITY, "cannot_review", e))?;
    if !missing.is_empty() {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "requirements",
            format!("change {} still needs: {}", change.number, missing.join("; ")),
        ));
    }
    let priority = request.and_then(|r| r.0.priority).unwrap_or(0);
    code::queue::enqueue(&app, &repo, &change, priority, &caller.0)
        .await
        .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "queue", e))?;
    let change = app.store.change(repo.id, change.number).await?;
    let latest = code::changes::latest(&app, &change).await;
    Ok((StatusCode::ACCEPTED, Json(summary(&change, latest.as_ref()))).into_response())
}

#[utoipa::path(delete, path = "/api/v1/repos/{name}/changes/{number}/merge", tag = "code", summary = "Take the change out of the merge queue",
    params(("name" = String, Path), ("number" = i64, Path)), security(("token" = [])),
    responses((status = 200, body = api::ChangeSummary), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn dequeue_change(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((name, number)): Path<(String, String)>,
) -> ApiResult<Json<api::ChangeSummary>> {
    let repo = hosted_repo(&app, &name).await?;
    let change = change(&app, &repo, &number).await?;
    if change.status != "queued" {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "not_queued",
            format!("change {} is not in the queue", change.number),
        ));
    }
    code::queue::remove(&app, &repo, &change).await;
    let change =
        app.store.set_change_status(change.id, "open", Some("taken out of the merge queue"), &caller.0).await?;
    let latest = code::changes::latest(&app, &change).await;
    Ok(Json(summary(&change, latest.as_ref())))
}

#[utoipa::path(get, path = "/api/v1/repos/{name}/queue", tag = "code", summary = "The merge queues of a hosted repository: changes waiting and batches under test",
    params(("name" = String, Path)), security(("token" = [])),
    responses((status = 200, body = Vec<api::QueueInfo>), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn show_queue(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<api::QueueInfo>>> {
    let repo = hosted_repo(&app, &name).await?;
    let views = app.queues.views(repo.id, &app).await;
    Ok(Json(
        views
            .into_iter()
            .map(|v| api::QueueInfo {
                target: v.target,
                waiting: v.waiting,
                batches: v
                    .batches
                    .into_iter()
                    .map(|(id, changes, commit)| api::BatchInfo { id, changes, commit })
                    .collect(),
            })
            .collect(),
    ))
}
