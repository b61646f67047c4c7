//! Incidents (open, list, show with timeline and suspect commits, acknowledge, resolve, note,
//! commander, roll back the suspect, postmortem and its action items) and DORA's measures.

#[allow(unused_imports)]
use super::*;
use crate::incidents::{self, Command, IncidentError};

impl From<IncidentError> for AppError {
    fn from(error: IncidentError) -> AppError {
        match error {
            IncidentError::NotFound(_) | IncidentError::NoActionItem(..) => {
                AppError::new(StatusCode::NOT_FOUND, "not_found", error.to_string())
            }
            IncidentError::Invalid(message) => AppError::new(StatusCode::BAD_REQUEST, "bad_request", message),
            IncidentError::Conflict(message) => AppError::new(StatusCode::CONFLICT, "conflict", message),
            IncidentError::Store(error) => error.into(),
        }
    }
}

#[utoipa::path(get, path = "/api/v1/incidents", tag = "incidents", summary = "Incidents, newest first",
    params(api::IncidentQuery), security(("token" = [])),
    responses((status = 200, body = Vec<api::Incident>), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn list_incidents(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Params(query): Params<api::IncidentQuery>,
) -> ApiResult<Json<Vec<api::Incident>>> {
    let mut list = incidents::list(&app).await?;
    if let Some(state) = query.state.as_deref() {
        let known = ["open", "triggered", "acknowledged", "resolved", "postmortem_done"];
        if !known.contains(&state) {
            return Err(AppError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("`{state}` is not a state; expected one of {}", known.join(", ")),
            ));
        }
        list.retain(|i| if state == "open" { i.state.is_open() } else { i.state.as_str() == state });
    }
    if let Some(service) = &query.service {
        list.retain(|i| i.service.as_ref() == Some(service));
    }
    Ok(Json(list))
}

#[utoipa::path(post, path = "/api/v1/incidents", tag = "incidents",
    summary = "Open an incident by hand; the deployments of its service within the look-back window are its suspects",
    request_body = api::OpenIncident, security(("token" = [])),
    responses((status = 201, body = api::Incident), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn open_incident(
    State(app): State<Arc<App>>,
    caller: Caller,
    request: Result<Json<api::OpenIncident>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let request = body(request)?;
    if request.title.trim().is_empty() {
        return Err(AppError::new(StatusCode::BAD_REQUEST, "bad_request", "an incident needs a title"));
    }
    let incident = incidents::open(&app, request, &caller.0).await?;
    Ok((StatusCode::CREATED, Json(incident)).into_response())
}

#[utoipa::path(get, path = "/api/v1/incidents/{id}", tag = "incidents",
    summary = "An incident with its timeline (from the event log) and the commits of its suspect release",
    params(("id" = i64, Path)), security(("token" = [])),
    responses((status = 200, body = api::IncidentDetail), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn show_incident(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::IncidentDetail>> {
    let incident = incidents::get(&app, parse_id(&id)?).await?;
    let timeline = incidents::timeline(&app, &incident).await?;
    let commits = incidents::commits(&app, &incident).await;
    Ok(Json(api::IncidentDetail { incident, timeline, commits }))
}

/// `acknowledge`, `resolve`, `notes`, `commander`, `postmortem-done`.
#[utoipa::path(post, path = "/api/v1/incidents/{id}/{action}", tag = "incidents",
    summary = "A responder's command: acknowledge, resolve, notes (add one), commander (name one), postmortem-done",
    params(("id" = i64, Path), ("action" = String, Path, description = "acknowledge | resolve | notes | commander | postmortem-done")),
    request_body(content = Option<api::IncidentUpdate>), security(("token" = [])),
    responses((status = 200, body = api::Incident), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn incident_command(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, action)): Path<(String, String)>,
    update: Option<Json<api::IncidentUpdate>>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let text = update.and_then(|u| u.0.text);
    let command = match action.as_str() {
        "acknowledge" | "ack" => Command::Acknowledge,
        "resolve" => Command::Resolve,
        "notes" => Command::Note,
        "commander" => Command::Commander,
        "postmortem-done" => Command::PostmortemDone,
        "rollback" => return rollback_suspect(&app, id, &caller.0).await,
        other => {
            return Err(AppError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "`{other}` is not an incident command; expected acknowledge, resolve, notes, commander, rollback or postmortem-done"
                ),
            ));
        }
    };
    Ok(Json(incidents::command(&app, id, command, text, &caller.0).await?).into_response())
}

/// Rolls back the incident's first suspect: stops it if it is still rolling out, else deploys
/// the release before it.
async fn rollback_suspect(app: &Arc<App>, id: i64, actor: &str) -> ApiResult<Response> {
    let incident = incidents::get(app, id).await?;
    let Some(suspect) = incident.suspects.first() else {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("incident {id} names no suspect deployment; roll back with `tandem rollback SERVICE ENVIRONMENT`"),
        ));
    };
    let deployment = app.store.deployment(suspect.deployment).await?;
    let stable = app.store.environment(&deployment.service, &deployment.environment).await?.and_then(|e| e.stable);
    let live = !deployment.status.is_finished() || stable == Some(deployment.id);
    if !live {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "deployment {} is {} and not live: nothing to roll back",
                deployment.id,
                deployment.status.as_str()
            ),
        ));
    }
    let payload = serde_json::json!({"id": id, "by": actor, "at": jiff::Timestamp::now().to_string(), "deployment": deployment.id});
    app.store.record_event("incident.rollback_requested", &format!("incident/{id}"), actor, payload).await?;
    let (status, rolled) =
        super::deployments::roll_back(app, &deployment.service, &deployment.environment, false, actor).await?;
    Ok((status, Json(api::Deployment::from(rolled))).into_response())
}

#[utoipa::path(get, path = "/api/v1/incidents/{id}/postmortem", tag = "incidents",
    summary = "The postmortem draft in Markdown (SRE Workbook structure), written from the event log",
    params(("id" = i64, Path)), security(("token" = [])),
    responses((status = 200, body = api::Postmortem), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn postmortem(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::Postmortem>> {
    Ok(Json(incidents::postmortem(&app, parse_id(&id)?).await?))
}

#[utoipa::path(post, path = "/api/v1/incidents/{id}/action-items", tag = "incidents",
    summary = "Add an action item (title, owner, due date) to an incident's postmortem",
    params(("id" = i64, Path)), request_body = api::NewActionItem, security(("token" = [])),
    responses((status = 200, body = api::Incident), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn add_action_item(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    request: Result<Json<api::NewActionItem>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<api::Incident>> {
    let item = body(request)?;
    if item.title.trim().is_empty() || item.owner.trim().is_empty() {
        return Err(AppError::new(StatusCode::BAD_REQUEST, "bad_request", "an action item needs a title and an owner"));
    }
    Ok(Json(incidents::action_item(&app, parse_id(&id)?, Ok(item), &caller.0).await?))
}

#[utoipa::path(post, path = "/api/v1/incidents/{id}/action-items/{number}/done", tag = "incidents",
    summary = "Mark an action item done", params(("id" = i64, Path), ("number" = i64, Path)), security(("token" = [])),
    responses((status = 200, body = api::Incident), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn finish_action_item(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, number)): Path<(String, String)>,
) -> ApiResult<Json<api::Incident>> {
    let number = parse_id(&number)?;
    Ok(Json(incidents::action_item(&app, parse_id(&id)?, Err(number), &caller.0).await?))
}

#[utoipa::path(get, path = "/api/v1/dora", tag = "incidents",
    summary = "DORA's measures over a period: deployment frequency, lead time, change failure rate, time to restore, rework rate",
    params(api::DoraQuery), security(("token" = [])),
    responses((status = 200, body = api::Dora), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn dora(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Params(query): Params<api::DoraQuery>,
) -> ApiResult<Json<api::Dora>> {
    if query.days == Some(0) {
        return Err(AppError::new(StatusCode::BAD_REQUEST, "bad_request", "`days` must be at least 1"));
    }
    Ok(Json(crate::dora::report(&app, query).await?))
}
