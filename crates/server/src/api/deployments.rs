//! Deployments and environments: request, list, show, approve, roll back, promote.

#[allow(unused_imports)]
use super::*;

#[derive(Debug, Deserialize)]
pub(super) struct DeployRequest {
    /// The service, or the repository that holds its service file.
    #[serde(alias = "service")]
    pub(super) repo: String,
    pub(super) environment: String,
    #[serde(rename = "ref")]
    pub(super) git_ref: Option<String>,
}

pub(super) async fn request_deployment(
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Result<Json<DeployRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let Json(body) = body.map_err(|e| AppError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let repo = deploy::repository_for(&app, &body.repo)
        .await
        .map_err(|e| AppError::new(StatusCode::NOT_FOUND, "not_found", e))?;
    let git_ref = body.git_ref.unwrap_or_else(|| "HEAD".into());
    let new = deploy::plan(&app, &repo, &git_ref, &body.environment, store::DeploymentKind::Deploy, None)
        .await
        .map_err(|e| AppError::new(StatusCode::UNPROCESSABLE_ENTITY, "cannot_deploy", e))?;
    let deployment = app.store.request_deployment(new, &caller.0).await?;
    app.deployer.wake.notify_waiters();
    Ok((StatusCode::CREATED, Json(deployment)).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct DeploymentQuery {
    pub(super) service: Option<String>,
    pub(super) environment: Option<String>,
    pub(super) limit: Option<i64>,
}

pub(super) async fn list_deployments(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Query(query): Query<DeploymentQuery>,
) -> ApiResult<Json<Vec<store::Deployment>>> {
    let filter = DeploymentFilter {
        service: query.service,
        environment: query.environment,
        active_only: false,
        limit: query.limit.unwrap_or(50).clamp(1, 1000),
    };
    Ok(Json(app.store.deployments(filter).await?))
}

pub(super) async fn show_deployment(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_id(&id)?;
    let deployment = app.store.deployment(id).await?;
    let events = app.store.events_about(&format!("deployment/{id}")).await?;
    let events: Vec<serde_json::Value> = events
        .into_iter()
        .map(|e| serde_json::json!({"seq": e.seq, "time": e.time, "kind": e.kind, "actor": e.actor, "payload": e.payload}))
        .collect();
    let mut value = serde_json::to_value(deployment).unwrap_or_default();
    value["events"] = serde_json::Value::Array(events);
    Ok(Json(value))
}

pub(super) async fn approve(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<store::Deployment>> {
    let deployment = app.store.approve_deployment(parse_id(&id)?, &caller.0).await?;
    app.deployer.wake.notify_waiters();
    Ok(Json(deployment))
}

pub(super) async fn list_environments(
    State(app): State<Arc<App>>,
    _caller: Caller,
) -> ApiResult<Json<Vec<serde_json::Value>>> {
    let mut list = Vec::new();
    for env in app.store.environments().await? {
        let release = |id: Option<i64>| {
            let app = app.clone();
            async move {
                match id {
                    Some(id) => app
                        .store
                        .deployment(id)
                        .await
                        .ok()
                        .map(|d| serde_json::json!({"deployment": d.id, "release": d.release, "sha": d.sha})),
                    None => None,
                }
            }
        };
        list.push(serde_json::json!({
            "service": env.service,
            "environment": env.environment,
            "listen": env.listen,
            "stable": release(env.stable).await,
            "previous": release(env.previous).await,
        }));
    }
    Ok(Json(list))
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct RollbackRequest {
    #[serde(default)]
    pub(super) emergency: bool,
}

pub(super) async fn rollback(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((service, environment)): Path<(String, String)>,
    body: Option<Json<RollbackRequest>>,
) -> ApiResult<Response> {
    let emergency = body.is_some_and(|b| b.0.emergency);
    let active = app
        .store
        .deployments(DeploymentFilter {
            service: Some(service.clone()),
            environment: Some(environment.clone()),
            active_only: true,
            limit: 1000,
        })
        .await?;
    // A rollout in progress (the oldest unfinished one is the one being carried out) stops now.
    if let Some(current) = active.last() {
        let deployment = app.store.abort_deployment(current.id, &caller.0).await?;
        app.deployer.abort(current.id);
        return Ok((StatusCode::ACCEPTED, Json(deployment)).into_response());
    }
    let Some(state) = app.store.environment(&service, &environment).await? else {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{service}/{environment} has never been deployed"),
        ));
    };
    let Some(previous) = state.previous else {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("{service}/{environment} has no previous release to go back to"),
        ));
    };
    let previous = app.store.deployment(previous).await?;
    let new = store::NewDeployment {
        repo_id: previous.repo_id,
        service: previous.service,
        environment: previous.environment,
        sha: previous.sha,
        release: previous.release,
        run_id: None,
        kind: if emergency { store::DeploymentKind::Emergency } else { store::DeploymentKind::Rollback },
        spec: previous.spec,
    };
    let deployment = app.store.request_deployment(new, &caller.0).await?;
    app.deployer.wake.notify_waiters();
    Ok((StatusCode::CREATED, Json(deployment)).into_response())
}

pub(super) async fn promote(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<store::Deployment>> {
    let id = parse_id(&id)?;
    let deployment = app.store.deployment(id).await?;
    if deployment.status != store::DeploymentStatus::Running {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("deployment {id} is {}: only a running deployment can be promoted", deployment.status.as_str()),
        ));
    }
    let payload = serde_json::json!({"service": deployment.service, "environment": deployment.environment, "sha": deployment.sha, "release": deployment.release});
    app.store.record_event("deployment.promote_requested", &format!("deployment/{id}"), &caller.0, payload).await?;
    app.deployer.promote(id);
    Ok(Json(deployment))
}
