//! The access layer in front of every route: who calls (a token, a session, a run's token), the
//! route's policy, the resource the request touches, and a refusal that says what is missing.

use axum::extract::{MatchedPath, RawPathParams, Request};
use axum::middleware::Next;

use super::*;
use crate::access::{self, Need, Principal, Resource, Target, Via};

/// The caller of a request, if it sent credentials: `Ok(None)` when it sent none, an error when
/// they are not valid (unknown or expired token, no `Bearer`).
pub(crate) async fn principal(parts: &Parts, app: &App) -> Result<Option<Principal>, AppError> {
    let header = parts.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    if header.is_empty() {
        return Ok(web::session::Viewer::from_parts(parts, app).map(|viewer| Principal {
            actor: viewer.actor.clone(),
            user: Some(viewer.actor),
            via: Via::Session,
        }));
    }
    let Some(token) = header.strip_prefix("Bearer ").map(str::trim).filter(|t| !t.is_empty()) else {
        return Err(AppError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this call needs `Authorization: Bearer <token>` (TANDEM_TOKEN for the CLI)",
        ));
    };
    if let Some(run) = app.run_tokens.run_of(token) {
        return Ok(Some(Principal { actor: format!("run:{run}"), user: None, via: Via::Run }));
    }
    let hash = token_hash(token);
    let Some(row) = app.store.token(&hash).await? else {
        return Err(AppError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the token is not valid"));
    };
    if let Some(expires) = &row.expires
        && expires.as_str() <= store::rfc3339(jiff::Timestamp::now().as_millisecond()).as_str()
    {
        return Err(AppError::new(
            StatusCode::UNAUTHORIZED,
            "token_expired",
            format!("the token `{}` expired at {expires}; create a new one (`tandem token create`)", row.name),
        ));
    }
    if let Err(error) = app.store.touch_token(&hash).await {
        tracing::warn!("cannot record the use of token `{}`: {error}", row.name);
    }
    let scopes = row.scopes.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    Ok(Some(Principal { actor: row.owner.clone().unwrap_or(row.name), user: row.owner, via: Via::Token(scopes) }))
}

/// Applies the route's policy: unknown routes are refused, public ones pass, the others need a
/// caller with the permission on the resource. Callers without credentials go on to the handler,
/// which asks for them (401, or the sign-in page).
pub(super) async fn enforce(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    // Every event this request causes records where it came from.
    match request.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>() {
        Some(info) => store::SOURCE.scope(info.0.ip().to_string(), check(app, request, next)).await,
        None => check(app, request, next).await,
    }
}

async fn check(app: Arc<App>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_default();
    let (mut parts, body) = request.into_parts();
    let Some(need) = access::policy(&parts.method, &route) else {
        return AppError::new(
            StatusCode::FORBIDDEN,
            "no_policy",
            format!("no access policy covers {} {route}; it is refused", parts.method),
        )
        .into_response();
    };
    if need == Need::Public {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let principal = match principal(&parts, &app).await {
        Ok(Some(principal)) => principal,
        Ok(None) => return next.run(Request::from_parts(parts, body)).await,
        Err(error) => return error.into_response(),
    };
    let mut body = body;
    if let Need::Allow(permission, from) = need {
        let resource = match resource(&app, &mut parts, &mut body, from).await {
            Ok(resource) => resource,
            Err(error) => return error.into_response(),
        };
        match access::refusal(&app, &principal, permission, &resource).await {
            Ok(None) => {}
            Ok(Some(message)) => {
                tracing::info!("refused {} {route} to {}: {message}", parts.method, principal.actor);
                return refused(&route, message);
            }
            Err(error) => return AppError::from(error).into_response(),
        }
    }
    parts.extensions.insert(principal);
    next.run(Request::from_parts(parts, body)).await
}

fn refused(route: &str, message: String) -> Response {
    if route.starts_with("/api/") {
        return AppError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response();
    }
    let escaped = message.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Not allowed · Tandem</title>\
         <link rel=\"stylesheet\" href=\"/assets/app.css\"></head><body><main><h1>Not allowed</h1><p>{escaped}</p>\
         <p><a href=\"/\">Back to the overview</a></p></main></body></html>"
    );
    (StatusCode::FORBIDDEN, [("content-type", "text/html; charset=utf-8")], page).into_response()
}

/// The resource a request touches, read from where its route names it.
async fn resource(app: &Arc<App>, parts: &mut Parts, body: &mut Body, from: Target) -> ApiResult<Resource> {
    let params = RawPathParams::from_request_parts(parts, app).await.ok();
    let param = |name: &str| -> String {
        params
            .as_ref()
            .and_then(|p| p.iter().find(|(key, _)| *key == name).map(|(_, value)| value.to_string()))
            .unwrap_or_default()
    };
    Ok(match from {
        Target::Global => Resource::Global,
        Target::Repository(name) => Resource::Repository(param(name)),
        Target::Service(name) => Resource::Service(param(name)),
        Target::Environment(service, environment) => Resource::Environment(param(service), param(environment)),
        Target::RunOf(id) => match param(id).parse::<i64>() {
            Ok(id) => match app.store.run(id).await {
                Ok(run) => {
                    let repos = app.store.repos().await?;
                    match repos.into_iter().find(|r| r.id == run.repo_id) {
                        Some(repo) => Resource::Repository(repo.name),
                        None => Resource::Global,
                    }
                }
                // The handler says it does not exist; only those with a global role learn it.
                Err(_) => Resource::Global,
            },
            Err(_) => Resource::Global,
        },
        Target::Deployment(id) => match param(id).parse::<i64>() {
            Ok(id) => match app.store.deployment(id).await {
                Ok(d) => Resource::Environment(d.service, d.environment),
                Err(_) => Resource::Global,
            },
            Err(_) => Resource::Global,
        },
        Target::HeldJob(id) => {
            let bytes = axum::body::to_bytes(std::mem::take(body), MAX_BODY_BYTES)
                .await
                .map_err(|e| AppError::new(StatusCode::BAD_REQUEST, "bad_request", format!("the body: {e}")))?;
            // The API's JSON body, or the page's form.
            let job = serde_json::from_slice::<api::ApproveJob>(&bytes).map(|r| r.job).ok().or_else(|| {
                String::from_utf8_lossy(&bytes)
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("job=").map(|v| crate::encoding::percent_decode(v, true)))
            });
            *body = Body::from(bytes);
            let events = match param(id).parse::<i64>() {
                Ok(run) => app.store.events_about(&format!("run/{run}")).await.unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            let waiting =
                events.iter().rev().find(|e| e.kind == "job.waiting" && job.as_deref() == e.payload["job"].as_str());
            match waiting {
                Some(event) => Resource::Environment(
                    event.payload["service"].as_str().unwrap_or_default().to_string(),
                    event.payload["environment"].as_str().unwrap_or_default().to_string(),
                ),
                // No such job waits: the handler says so to those who may approve anywhere.
                None => Resource::Global,
            }
        }
        Target::DeployBody => {
            let bytes = axum::body::to_bytes(std::mem::take(body), MAX_BODY_BYTES)
                .await
                .map_err(|e| AppError::new(StatusCode::BAD_REQUEST, "bad_request", format!("the body: {e}")))?;
            let named = serde_json::from_slice::<api::DeployRequest>(&bytes).ok();
            *body = Body::from(bytes);
            match named {
                Some(request) => Resource::Environment(request.service, request.environment),
                // Not a deploy request: the handler refuses it for that.
                None => Resource::Global,
            }
        }
    })
}
