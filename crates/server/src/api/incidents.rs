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
    match crate::dora::report(&app, query).await {
        Ok(dora) => Ok(Json(dora)),
        Err(crate::dora::DoraError::UnknownTeam(team)) => Err(AppError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no team is named `{team}`; declare it under `teams:` in the on-call file"),
        )),
        Err(crate::dora::DoraError::Store(error)) => Err(error.into()),
    }
}

#[utoipa::path(get, path = "/api/v1/oncall", tag = "incidents",
    summary = "Each schedule: who is on call now, until when, who is next, and its overrides",
    security(("token" = [])), responses((status = 200, body = Vec<api::OnCallNow>), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn oncall(State(app): State<Arc<App>>, _caller: Caller) -> ApiResult<Json<Vec<api::OnCallNow>>> {
    let config = oncall_config(&app)?;
    let overrides = app.incidents.book.lock().await.overrides.clone();
    Ok(Json(crate::incidents::oncall::now_and_next(&config, &overrides, jiff::Timestamp::now().as_millisecond())))
}

fn oncall_config(app: &App) -> ApiResult<spec::oncall::OnCall> {
    app.oncall.config().ok_or_else(|| {
        AppError::new(
            StatusCode::NOT_FOUND,
            "no_oncall",
            "no on-call file is loaded; start the server with --oncall FILE",
        )
    })
}

#[utoipa::path(post, path = "/api/v1/oncall/{schedule}/overrides", tag = "incidents",
    summary = "Someone takes a schedule's place for a while (from now, or from `from`, until `until`)",
    params(("schedule" = String, Path)), request_body = api::NewOverride, security(("token" = [])),
    responses((status = 201, body = Vec<api::OnCallNow>), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn add_override(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(schedule): Path<String>,
    request: Result<Json<api::NewOverride>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let request = body(request)?;
    let config = oncall_config(&app)?;
    let bad = |message: String| AppError::new(StatusCode::BAD_REQUEST, "bad_request", message);
    if !config.schedules.contains_key(&schedule) {
        return Err(AppError::new(StatusCode::NOT_FOUND, "not_found", format!("no schedule is named `{schedule}`")));
    }
    if !config.users.contains_key(&request.user) {
        return Err(bad(format!("`{}` is not a user of the on-call file", request.user)));
    }
    let time = |text: &str, what: &str| {
        text.parse::<jiff::Timestamp>().map_err(|_| bad(format!("`{what}` is not an RFC 3339 time: `{text}`")))
    };
    let from = match &request.from {
        Some(text) => time(text, "from")?,
        None => jiff::Timestamp::now(),
    };
    let until = time(&request.until, "until")?;
    if until <= from {
        return Err(bad("`until` must come after `from`".into()));
    }
    let payload = serde_json::json!({"schedule": schedule, "user": request.user, "from": from.to_string(), "until": until.to_string()});
    app.store.record_event("oncall.override", &format!("schedule/{schedule}"), &caller.0, payload).await?;
    incidents::list(&app).await?;
    let overrides = app.incidents.book.lock().await.overrides.clone();
    let now = crate::incidents::oncall::now_and_next(&config, &overrides, jiff::Timestamp::now().as_millisecond());
    Ok((StatusCode::CREATED, Json(now)).into_response())
}

/// `?user=NAME&key=SIGNATURE` of an acknowledgement link; `&action=resolve` resolves instead.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub(super) struct AckQuery {
    user: String,
    key: String,
    #[serde(default)]
    action: Option<String>,
}

fn checked_ack(app: &App, id: &str, query: &AckQuery) -> ApiResult<i64> {
    let id = parse_id(id)?;
    if !crate::incidents::oncall::ack_valid(app, id, &query.user, &query.key) {
        return Err(AppError::new(StatusCode::FORBIDDEN, "forbidden", "this acknowledgement link is not valid"));
    }
    Ok(id)
}

fn page_html(title: &str, body: &str) -> axum::response::Html<String> {
    let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    axum::response::Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title></head><body><main><h1>{}</h1>{body}</main></body></html>",
        escape(title),
        escape(title)
    ))
}

#[utoipa::path(get, path = "/ack/{id}", tag = "incidents",
    summary = "The page behind the link in a page: the incident and a button to acknowledge it (no token: the link is signed)",
    params(("id" = i64, Path), AckQuery), responses((status = 200, description = "An HTML page"), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn ack_page(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Params(query): Params<AckQuery>,
) -> ApiResult<Response> {
    let id = checked_ack(&app, &id, &query)?;
    let incident = incidents::get(&app, id).await?;
    let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('"', "&quot;");
    let button = |action: &str, label: &str| {
        format!(
            "<form method=\"post\" action=\"/ack/{id}?user={}&amp;key={}&amp;action={action}\"><button type=\"submit\">{label} as {}</button></form>",
            escape(&query.user),
            escape(&query.key),
            escape(&query.user)
        )
    };
    let form = format!(
        "<p>{} — {}</p>{}{}",
        escape(&incident.title),
        incident.state.as_str(),
        button("acknowledge", "Acknowledge"),
        button("resolve", "Resolve")
    );
    Ok(page_html(&format!("Incident {id}"), &form).into_response())
}

#[utoipa::path(post, path = "/ack/{id}", tag = "incidents",
    summary = "Acknowledge (or, with action=resolve, resolve) an incident from the signed link in a page", params(("id" = i64, Path), AckQuery),
    responses((status = 200, description = "An HTML page"), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn ack_link(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Params(query): Params<AckQuery>,
) -> ApiResult<Response> {
    let id = checked_ack(&app, &id, &query)?;
    let incident = incidents::get(&app, id).await?;
    let (command, done) = match query.action.as_deref() {
        None | Some("acknowledge") => (Command::Acknowledge, "acknowledged"),
        Some("resolve") => (Command::Resolve, "resolved"),
        Some(other) => {
            let message = format!("`{other}` is not an action of a link; expected acknowledge or resolve");
            return Err(AppError::new(StatusCode::BAD_REQUEST, "bad_request", message));
        }
    };
    if command == Command::Acknowledge && incident.state != api::IncidentState::Triggered {
        let state = incident.state.as_str().replace('_', " ");
        return Ok(page_html(&format!("Incident {id} is {state}"), "<p>Nothing to acknowledge.</p>").into_response());
    }
    let text = match command {
        Command::Resolve => Some(format!("resolved by {} from the link in a page", query.user)),
        _ => Some("from the link in a page".to_string()),
    };
    incidents::command(&app, id, command, text, &query.user).await?;
    Ok(page_html(&format!("Incident {id} {done}"), &format!("<p>by {}</p>", query.user)).into_response())
}
