//! Sessions of the web pages: a signed cookie (`actor.expiry.signature`, HttpOnly, SameSite=Lax),
//! a CSRF token derived from it for every form, and one-time sign-in links (what `tandem up`
//! prints). Stateless: a restart keeps people signed in; the key lives in the data directory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};

use crate::App;

pub const COOKIE: &str = "tandem_session";

/// Sessions last a day.
const LIFETIME_MS: i64 = 24 * 3_600_000;

/// Failed sign-ins per name (a user, or `token`): after [`Throttle::LIMIT`] within the window,
/// that name is refused without a password check until the oldest failure ages out.
#[derive(Debug, Default)]
pub struct Throttle(Mutex<HashMap<String, Vec<i64>>>);

impl Throttle {
    pub const LIMIT: usize = 5;
    const WINDOW_MS: i64 = 15 * 60_000;

    /// Minutes until `name` may try again, when it may not now.
    pub fn blocked(&self, name: &str) -> Option<i64> {
        let now = jiff::Timestamp::now().as_millisecond();
        let mut failures = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let list = failures.entry(name.to_string()).or_default();
        list.retain(|at| now - at < Self::WINDOW_MS);
        (list.len() >= Self::LIMIT).then(|| ((list[0] + Self::WINDOW_MS - now) / 60_000).max(1))
    }

    pub fn failed(&self, name: &str) {
        let now = jiff::Timestamp::now().as_millisecond();
        self.0.lock().unwrap_or_else(|e| e.into_inner()).entry(name.to_string()).or_default().push(now);
    }

    pub fn succeeded(&self, name: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
    }
}

/// One-time sign-in links: secret → (actor, expiry).
#[derive(Debug, Default)]
pub struct Links(Mutex<HashMap<String, (String, i64)>>);

impl Links {
    /// A link secret for `actor`, valid fifteen minutes, usable once.
    pub fn issue(&self, actor: &str) -> String {
        let secret = crate::random_secret().unwrap_or_else(|_| format!("{:x}", jiff::Timestamp::now().as_nanosecond()));
        let expiry = jiff::Timestamp::now().as_millisecond() + 15 * 60_000;
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(secret.clone(), (actor.to_string(), expiry));
        secret
    }

    /// The actor of a valid link, which is spent.
    pub fn redeem(&self, secret: &str) -> Option<String> {
        let (actor, expiry) = self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(secret)?;
        (jiff::Timestamp::now().as_millisecond() < expiry).then_some(actor)
    }
}

fn sign(app: &App, purpose: &str, message: &str) -> String {
    git::webhook::sign(crate::secret_key(app), format!("{purpose}:{message}").as_bytes())[..32].to_string()
}

/// The cookie value of a new session.
pub fn new_session(app: &App, actor: &str) -> String {
    let expiry = jiff::Timestamp::now().as_millisecond() + LIFETIME_MS;
    let body = format!("{}.{expiry}", hex::encode(actor));
    format!("{body}.{}", sign(app, "session", &body))
}

pub fn set_cookie(value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}", LIFETIME_MS / 1000)
}

pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")
}

fn cookie(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE).and_then(|rest| rest.strip_prefix('=')).map(str::to_string))
}

/// The actor of a valid session cookie.
pub fn actor(app: &App, value: &str) -> Option<String> {
    let (body, signature) = value.rsplit_once('.')?;
    if !git::webhook::constant_time_eq(sign(app, "session", body).as_bytes(), signature.as_bytes()) {
        return None;
    }
    let (actor, expiry) = body.split_once('.')?;
    let expiry: i64 = expiry.parse().ok()?;
    if jiff::Timestamp::now().as_millisecond() >= expiry {
        return None;
    }
    String::from_utf8(hex::decode(actor).ok()?).ok()
}

/// Who is looking at a page, with the CSRF token their forms carry.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub actor: String,
    pub csrf: String,
}

impl Viewer {
    pub fn from_parts(parts: &Parts, app: &App) -> Option<Viewer> {
        let value = cookie(parts)?;
        let actor = actor(app, &value)?;
        Some(Viewer { actor, csrf: sign(app, "csrf", &value) })
    }
}

/// Pages need a session: without one, the browser goes to the sign-in page and comes back.
pub struct SignIn(String);

impl IntoResponse for SignIn {
    fn into_response(self) -> Response {
        Redirect::to(&format!("/signin?next={}", urlencode(&self.0))).into_response()
    }
}

pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl FromRequestParts<Arc<App>> for Viewer {
    type Rejection = SignIn;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Viewer, SignIn> {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        Viewer::from_parts(parts, app).ok_or(SignIn(path))
    }
}
