//! Deployments and environments: request, list, show, approve, roll back, promote.

#[allow(unused_imports)]
use super::*;

#[utoipa::path(post, path = "/api/v1/deployments", tag = "deployments",
    summary = "Deploy a repository's commit to an environment of its service file",
    request_body = api::DeployRequest, security(("token" = [])),
    responses((status = 201, body = api::Deployment), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn request_deployment(
    State(app): State<Arc<App>>,
    caller: Caller,
    request: Result<Json<api::DeployRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let request = body(request)?;
    let repo = deploy::repository_for(&app, &request.service)
        .await
        .map_err(|e| AppError::new(StatusCode::NOT_FOUND, "not_found", e))?;
    let git_ref = request.git_ref.unwrap_or_else(|| "HEAD".into());
    let new = deploy::plan(&app, &repo, &git_ref, &request.environment, store::DeploymentKind::Deploy, None)
        .await
        .map_err(|e| AppError::new(StatusCode::UNPROCESSABLE_ENTITY, "cannot_deploy", e))?;
    let deployment = app.store.request_deployment(new, &caller.0).await?;
    attest(&app, &repo, &deployment).await;
    app.deployer.wake.notify_waiters();
    Ok((StatusCode::CREATED, Json(api::Deployment::from(deployment))).into_response())
}

#[utoipa::path(get, path = "/api/v1/deployments", tag = "deployments", summary = "List deployments, newest first",
    params(api::DeploymentsQuery), security(("token" = [])),
    responses((status = 200, body = Vec<api::Deployment>), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn list_deployments(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Params(query): Params<api::DeploymentsQuery>,
) -> ApiResult<Json<Vec<api::Deployment>>> {
    let filter = DeploymentFilter {
        service: query.service,
        environment: query.environment,
        active_only: false,
        limit: query.limit.unwrap_or(50).clamp(1, 1000),
    };
    Ok(Json(app.store.deployments(filter).await?.into_iter().map(api::Deployment::from).collect()))
}

#[utoipa::path(get, path = "/api/v1/deployments/{id}", tag = "deployments",
    summary = "One deployment with its events: gates, steps, verdicts, the end",
    params(("id" = i64, Path, description = "The deployment's id")), security(("token" = [])),
    responses((status = 200, body = api::DeploymentDetail), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn show_deployment(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::DeploymentDetail>> {
    let id = parse_id(&id)?;
    let deployment = app.store.deployment(id).await?;
    let events = app.store.events_about(&format!("deployment/{id}")).await?;
    let events = events.into_iter().map(api::DeploymentEvent::from).collect();
    Ok(Json(api::DeploymentDetail { deployment: deployment.into(), events }))
}

#[utoipa::path(post, path = "/api/v1/deployments/{id}/approve", tag = "deployments",
    summary = "Approve a deployment held for approval (by someone other than who asked for it); with a reason, also override a hold on security findings",
    params(("id" = i64, Path, description = "The deployment's id")), request_body(content = Option<api::ApproveRequest>), security(("token" = [])),
    responses((status = 200, body = api::Deployment), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn approve(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    request: Option<Json<api::ApproveRequest>>,
) -> ApiResult<Json<api::Deployment>> {
    let id = parse_id(&id)?;
    let reason = request.and_then(|r| r.0.reason).map(|r| r.trim().to_string()).filter(|r| !r.is_empty());
    // Four eyes: whoever asked for a deployment does not approve it.
    let events = app.store.events_about(&format!("deployment/{id}")).await?;
    if let Some(requested) = events.iter().find(|e| e.kind == "deployment.requested")
        && requested.actor == caller.0
    {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "same_person",
            format!(
                "`{}` requested deployment {id}; another maintainer must approve it (someone with the maintainer role on its environment)",
                caller.0
            ),
        ));
    }
    let deployment = app.store.approve_deployment(id, &caller.0).await?;
    if let Some(reason) = reason {
        // An approval with a reason overrides a hold on security findings; the reason is kept.
        let payload = serde_json::json!({"reason": reason, "sha": deployment.sha});
        app.store.record_event("deployment.override", &format!("deployment/{id}"), &caller.0, payload).await?;
    }
    app.deployer.wake.notify_waiters();
    Ok(Json(deployment.into()))
}

#[utoipa::path(get, path = "/api/v1/environments", tag = "deployments",
    summary = "Environments: their stable release, the previous one and the proxy address",
    security(("token" = [])),
    responses((status = 200, body = Vec<api::Environment>), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn list_environments(
    State(app): State<Arc<App>>,
    _caller: Caller,
) -> ApiResult<Json<Vec<api::Environment>>> {
    let mut list = Vec::new();
    for env in app.store.environments().await? {
        let release = |id: Option<i64>| {
            let app = app.clone();
            async move {
                match id {
                    Some(id) => app.store.deployment(id).await.ok().map(|d| api::ReleaseRef {
                        deployment: d.id,
                        release: d.release,
                        sha: d.sha,
                    }),
                    None => None,
                }
            }
        };
        list.push(api::Environment {
            stable: release(env.stable).await,
            previous: release(env.previous).await,
            service: env.service,
            environment: env.environment,
            listen: env.listen,
        });
    }
    Ok(Json(list))
}

#[utoipa::path(post, path = "/api/v1/environments/{service}/{environment}/rollback", tag = "deployments",
    summary = "Roll back the rollout in progress, else go back to the previous release (emergency=true skips gates and analysis)",
    params(("service" = String, Path), ("environment" = String, Path)),
    request_body(content = Option<api::RollbackRequest>), security(("token" = [])),
    responses(
        (status = 202, body = api::Deployment, description = "The rollout in progress, now being rolled back"),
        (status = 201, body = api::Deployment, description = "A deployment of the previous release"),
        (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn rollback(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((service, environment)): Path<(String, String)>,
    body: Option<Json<api::RollbackRequest>>,
) -> ApiResult<Response> {
    let emergency = body.is_some_and(|b| b.0.emergency);
    let (status, deployment) = roll_back(&app, &service, &environment, emergency, &caller.0).await?;
    Ok((status, Json(api::Deployment::from(deployment))).into_response())
}

/// Stops the rollout in progress (202), else deploys the previous release again (201).
pub(super) async fn roll_back(
    app: &App,
    service: &str,
    environment: &str,
    emergency: bool,
    actor: &str,
) -> ApiResult<(StatusCode, store::Deployment)> {
    let active = app
        .store
        .deployments(DeploymentFilter {
            service: Some(service.to_string()),
            environment: Some(environment.to_string()),
            active_only: true,
            limit: 1000,
        })
        .await?;
    // A rollout in progress (the oldest unfinished one is the one being carried out) stops now.
    if let Some(current) = active.last() {
        let deployment = app.store.abort_deployment(current.id, actor).await?;
        app.deployer.abort(current.id);
        return Ok((StatusCode::ACCEPTED, deployment));
    }
    let Some(state) = app.store.environment(service, environment).await? else {
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
    let deployment = app.store.request_deployment(new, actor).await?;
    if let Ok(repo) = app.store.repo_by_id(deployment.repo_id).await {
        attest(app, &repo, &deployment).await;
    }
    app.deployer.wake.notify_waiters();
    Ok((StatusCode::CREATED, deployment))
}

#[utoipa::path(post, path = "/api/v1/deployments/{id}/promote", tag = "deployments",
    summary = "Promote a running deployment now: its remaining steps are skipped",
    params(("id" = i64, Path, description = "The deployment's id")), security(("token" = [])),
    responses((status = 200, body = api::Deployment), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn promote(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::Deployment>> {
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
    Ok(Json(deployment.into()))
}

/// Makes the release's SBOM and signed provenance (a failure is logged: the release may still go
/// where provenance is not required).
pub(crate) async fn attest(app: &App, repo: &Repo, deployment: &store::Deployment) {
    let result = match repos::sync(app, repo, Some(&deployment.sha)).await {
        Ok(mirror) => crate::attest::attest(app, deployment, &mirror).await,
        Err(error) => Err(error),
    };
    if let Err(error) = result {
        tracing::error!("cannot attest deployment {}: {error}", deployment.id);
    }
}

#[utoipa::path(get, path = "/api/v1/deployments/{id}/sbom", tag = "deployments",
    summary = "The release's CycloneDX 1.5 SBOM (the commit's locked packages)",
    params(("id" = i64, Path)), security(("token" = [])),
    responses((status = 200, body = serde_json::Value), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn sbom(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    attestation(&app, &id, 0).await
}

#[utoipa::path(get, path = "/api/v1/deployments/{id}/provenance", tag = "deployments",
    summary = "The release's provenance: an in-toto statement with an SLSA v1 predicate, in a DSSE envelope signed with the server's Ed25519 key",
    params(("id" = i64, Path)), security(("token" = [])),
    responses((status = 200, body = serde_json::Value), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn provenance(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    attestation(&app, &id, 1).await
}

async fn attestation(app: &App, id: &str, which: usize) -> ApiResult<Json<serde_json::Value>> {
    let deployment = app.store.deployment(parse_id(id)?).await?;
    let (sbom, provenance) = crate::attest::files(app, deployment.id);
    let path = if which == 0 { sbom } else { provenance };
    let text = tokio::fs::read_to_string(&path).await.map_err(|_| {
        AppError::new(StatusCode::NOT_FOUND, "not_found", format!("deployment {} has no attestation", deployment.id))
    })?;
    serde_json::from_str(&text)
        .map(Json)
        .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}
