//! The web pages at `/`: server-rendered HTML (askama templates, checked at compile time), a
//! little plain JavaScript for live logs and refreshing pages, assets embedded in the binary.
//! Every page reads without JavaScript; every form carries a CSRF token; actions go through the
//! same handlers as the API, as the signed-in person.

mod actions;
mod code;
mod delivery;
pub(crate) mod oidc;
mod pages;
pub mod render;
mod response;
mod review;
pub mod session;
mod vault;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::App;
use session::Viewer;

const CSS: &str = include_str!("../../../assets/app.css");
const JS: &str = include_str!("../../../assets/app.js");

/// The pages and their forms (and git's smart HTTP), built once into the router and once into
/// the table that the access test walks (so a page cannot be routed without being tested).
struct Pages {
    router: Router<Arc<App>>,
    table: Vec<(&'static str, &'static str)>,
}

impl Pages {
    fn get<H: axum::handler::Handler<T, Arc<App>>, T: 'static>(mut self, path: &'static str, handler: H) -> Pages {
        self.table.push(("GET", path));
        self.router = self.router.route(path, get(handler));
        self
    }

    fn post<H: axum::handler::Handler<T, Arc<App>>, T: 'static>(mut self, path: &'static str, handler: H) -> Pages {
        self.table.push(("POST", path));
        let route = post(handler);
        // A push carries a pack of any size (up to 2 GiB); forms stay under the API's limit.
        let route =
            if path.starts_with("/git/") { route.layer(axum::extract::DefaultBodyLimit::max(2 << 30)) } else { route };
        self.router = self.router.route(path, route);
        self
    }
}

fn pages() -> Pages {
    Pages { router: Router::new(), table: Vec::new() }
        .get("/", pages::overview)
        .get("/runs", pages::runs)
        .get("/runs/{id}", pages::run)
        .get("/repositories", code::repositories)
        .post("/repositories", code::add)
        .get("/repositories/{name}", code::repository)
        .post("/repositories/{name}/run", code::run)
        .get("/repositories/{name}/commits/{rev}", code::commit)
        .get("/repositories/{name}/changes", review::changes)
        .get("/repositories/{name}/changes/{number}", review::change)
        .post("/repositories/{name}/changes/{number}/{action}", review::act)
        .get("/deployments", delivery::deployments)
        .get("/deployments/{id}", delivery::deployment)
        .get("/incidents", response::incidents)
        .get("/incidents/{id}", response::incident)
        .get("/incidents/{id}/postmortem", response::postmortem)
        .get("/audit", response::audit)
        .get("/secrets", vault::secrets)
        .post("/secrets/{action}", vault::change)
        .get("/monitoring", response::monitoring)
        .get("/services/{name}", response::service)
        .post("/runs/{id}/approve", actions::approve_job)
        .post("/runs/{id}/{action}", actions::run)
        .post("/deployments/{id}/{action}", actions::deployment)
        .post("/environments/{service}/{environment}/rollback", actions::rollback)
        .post("/incidents/{id}/{action}", actions::incident)
        .get("/signin", signin_page)
        .post("/signin", signin)
        .get("/signin/link/{secret}", signin_link)
        .get("/signin/oidc", oidc::begin)
        .get("/signin/oidc/callback", oidc::callback)
        .post("/signout", signout)
        .get("/account", account)
        .post("/account/password", change_password)
        .get("/git/{*rest}", crate::code::hosting::serve)
        .post("/git/{*rest}", crate::code::hosting::serve)
        .get("/assets/app.css", || async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS) })
        .get("/assets/app.js", || async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], JS) })
}

pub fn routes() -> Router<Arc<App>> {
    pages().router
}

/// Every page and form: (method, route).
pub fn table() -> Vec<(&'static str, &'static str)> {
    pages().table
}

/// Renders a template into a page (a template error is the server's fault, said plainly).
fn page(template: impl askama::Template) -> Response {
    match template.render() {
        Ok(html) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], html)
            .into_response(),
        Err(error) => {
            tracing::error!("a page could not be rendered: {error}");
            (StatusCode::INTERNAL_SERVER_ERROR, "this page could not be rendered; see the server's log").into_response()
        }
    }
}

/// What every page's frame shows.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub title: String,
    pub section: &'static str,
    pub actor: String,
    pub csrf: String,
    pub flash: String,
    /// The page refreshes itself while something moves.
    pub live: bool,
}

impl Chrome {
    fn new(viewer: &Viewer, title: impl Into<String>, section: &'static str, flash: Option<String>) -> Chrome {
        Chrome {
            title: title.into(),
            section,
            actor: viewer.actor.clone(),
            csrf: viewer.csrf.clone(),
            flash: flash.unwrap_or_default(),
            live: false,
        }
    }
}

#[derive(askama::Template)]
#[template(path = "signin.html")]
struct SignInPage {
    next: String,
    error: String,
    /// An OpenID Connect provider is set up.
    oidc: bool,
}

#[derive(serde::Deserialize, Default)]
struct SignInQuery {
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// Only paths of this site: a sign-in never sends the browser elsewhere.
fn local(next: Option<&str>) -> String {
    next.filter(|n| n.starts_with('/') && !n.starts_with("//")).unwrap_or("/").to_string()
}

async fn signin_page(
    State(app): State<Arc<App>>,
    axum::extract::Query(query): axum::extract::Query<SignInQuery>,
) -> Response {
    page(SignInPage {
        next: local(query.next.as_deref()),
        error: query.error.unwrap_or_default(),
        oidc: app.config.oidc.is_some(),
    })
}

#[derive(serde::Deserialize)]
struct SignInForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: Option<String>,
}

/// Who the form names, if its password or token is right.
async fn check(app: &App, form: &SignInForm) -> Result<Option<(String, &'static str)>, store::StoreError> {
    if !form.user.is_empty() {
        let Some(hash) = app.store.user_password(&form.user).await? else { return Ok(None) };
        // Argon2 is slow on purpose: off the async workers.
        let password = form.password.clone();
        let ok = tokio::task::spawn_blocking(move || crate::verify_password(&password, &hash)).await.unwrap_or(false);
        return Ok(ok.then(|| (form.user.clone(), "password")));
    }
    Ok(app.store.token_name(&crate::token_hash(form.token.trim())).await?.map(|name| (name, "token")))
}

fn signed_in(app: &App, actor: &str, next: &str, headers: &HeaderMap) -> Response {
    let secure = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) == Some("https");
    let cookie = session::set_cookie(&session::new_session(app, actor), secure);
    ([(header::SET_COOKIE, cookie)], Redirect::to(next)).into_response()
}

async fn signin(State(app): State<Arc<App>>, headers: HeaderMap, Form(form): Form<SignInForm>) -> Response {
    let next = local(form.next.as_deref());
    let key = if form.user.is_empty() { "token".to_string() } else { form.user.clone() };
    if let Some(minutes) = app.signin_failures.blocked(&key) {
        record(&app, "session.throttled", &key, serde_json::json!({"minutes": minutes})).await;
        let summary = format!("sign-in for `{key}` refused for {minutes} minute(s) after repeated wrong passwords");
        crate::alerting::security(&app, "SignInThrottled", "warning", &[("user", key.clone())], summary).await;
        let what = format!("Too many failed sign-ins for {key}; try again in {minutes} minute(s).");
        let to = format!("/signin?next={}&error={}", session::urlencode(&next), session::urlencode(&what));
        return Redirect::to(&to).into_response();
    }
    match check(&app, &form).await {
        Ok(Some((name, with))) => {
            app.signin_failures.succeeded(&key);
            record(&app, "session.signed_in", &name, serde_json::json!({"with": with})).await;
            signed_in(&app, &name, &next, &headers)
        }
        Ok(None) => {
            app.signin_failures.failed(&key);
            let what = if form.user.is_empty() {
                "That token is not valid."
            } else {
                "The user name or the password is wrong."
            };
            record(
                &app,
                "session.refused",
                if form.user.is_empty() { "token" } else { &form.user },
                serde_json::json!({}),
            )
            .await;
            let to = format!("/signin?next={}&error={}", session::urlencode(&next), session::urlencode(what));
            Redirect::to(&to).into_response()
        }
        Err(error) => {
            tracing::error!("sign-in: {error}");
            (StatusCode::SERVICE_UNAVAILABLE, "the store cannot be read; try again").into_response()
        }
    }
}

async fn signin_link(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    axum::extract::Path(secret): axum::extract::Path<String>,
) -> Response {
    match app.signin_links.redeem(&secret) {
        Some(actor) => {
            record(&app, "session.signed_in", &actor, serde_json::json!({"with": "one-time link"})).await;
            signed_in(&app, &actor, "/", &headers)
        }
        None => Redirect::to(&format!(
            "/signin?error={}",
            session::urlencode("That sign-in link was used already or has expired; sign in with a token.")
        ))
        .into_response(),
    }
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn signout(State(app): State<Arc<App>>, viewer: Viewer, Form(form): Form<CsrfForm>) -> Response {
    if !actions::csrf_ok(&viewer, &form.csrf) {
        return actions::refused();
    }
    record(&app, "session.signed_out", &viewer.actor, serde_json::json!({})).await;
    ([(header::SET_COOKIE, session::clear_cookie())], Redirect::to("/signin")).into_response()
}

async fn record(app: &App, kind: &str, actor: &str, payload: serde_json::Value) {
    if let Err(error) = app.store.record_event(kind, &format!("session/{actor}"), actor, payload).await {
        tracing::error!("cannot record {kind}: {error}");
    }
}

#[derive(askama::Template)]
#[template(path = "account.html")]
struct AccountPage {
    chrome: Chrome,
    has_password: bool,
    /// (role, scope, through): the user's own grants and their teams'.
    roles: Vec<(String, String, String)>,
}

#[derive(serde::Deserialize, Default)]
struct AccountQuery {
    #[serde(default)]
    flash: Option<String>,
}

async fn account(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    axum::extract::Query(query): axum::extract::Query<AccountQuery>,
) -> Response {
    let has_password = app.store.user_password(&viewer.actor).await.ok().flatten().is_some();
    let teams: Vec<String> = match app.store.members().await {
        Ok(members) => {
            members.into_iter().filter(|(_, m)| *m == viewer.actor).map(|(t, _)| format!("team:{t}")).collect()
        }
        Err(error) => {
            tracing::error!("cannot read the teams: {error}");
            Vec::new()
        }
    };
    let own = format!("user:{}", viewer.actor);
    let roles = match app.store.grants().await {
        Ok(grants) => grants
            .into_iter()
            .filter(|g| g.subject == own || teams.contains(&g.subject))
            .map(|g| {
                let through = if g.subject == own { "you".to_string() } else { g.subject.clone() };
                (g.role, g.scope, through)
            })
            .collect(),
        Err(error) => {
            tracing::error!("cannot read the grants: {error}");
            Vec::new()
        }
    };
    page(AccountPage { chrome: Chrome::new(&viewer, "Your account", "", query.flash), has_password, roles })
}

#[derive(serde::Deserialize)]
struct PasswordForm {
    #[serde(default)]
    csrf: String,
    current: String,
    new: String,
    again: String,
}

async fn change_password(State(app): State<Arc<App>>, viewer: Viewer, Form(form): Form<PasswordForm>) -> Response {
    if !actions::csrf_ok(&viewer, &form.csrf) {
        return actions::refused();
    }
    let back = |message: &str| Redirect::to(&format!("/account?flash={}", session::urlencode(message))).into_response();
    let Ok(Some(hash)) = app.store.user_password(&viewer.actor).await else {
        return back("Refused: this account has no password.");
    };
    if form.new != form.again {
        return back("Refused: the two new passwords differ.");
    }
    if form.new.chars().count() < 12 {
        return back("Refused: the new password is shorter than 12 characters.");
    }
    let current = form.current.clone();
    if !tokio::task::spawn_blocking(move || crate::verify_password(&current, &hash)).await.unwrap_or(false) {
        record(&app, "session.refused", &viewer.actor, serde_json::json!({"for": "password change"})).await;
        return back("Refused: the current password is wrong.");
    }
    let new = form.new.clone();
    let Ok(Ok(hash)) = tokio::task::spawn_blocking(move || crate::hash_password(&new)).await else {
        return back("Refused: the password could not be hashed; see the server's log.");
    };
    match app.store.set_user_password(&viewer.actor, &hash, &viewer.actor).await {
        Ok(()) => back("Your password is changed."),
        Err(error) => back(&format!("Refused: {error}")),
    }
}
