//! Sign-in with OpenID Connect: the authorization code flow with PKCE (S256). `/signin/oidc`
//! sends the browser to the provider with a fresh state, nonce and code challenge (kept by the
//! server for ten minutes, and tied to the browser by a cookie); `/signin/oidc/callback` trades
//! the code (with its verifier) for an ID token, checks its signature against the provider's keys
//! (RS256 or ES256), issuer, audience, expiry and nonce, and signs the person in — as the user
//! named by `preferred_username` (else the e-mail address, else `sub`), made on first sign-in
//! with the configured default role.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::Digest;

use super::session;
use crate::App;

const STATE_COOKIE: &str = "tandem_oidc";
const LIFETIME: Duration = Duration::from_secs(600);

/// The flows begun and not finished: state → (code verifier, nonce, where to go, when begun).
#[derive(Debug, Default)]
pub struct Pending {
    flows: Mutex<HashMap<String, (String, String, String, Instant)>>,
}

/// A JSON answer from the provider: over TLS (verified against the system's authorities) for
/// `https://`, as is for `http://` (a provider on this machine).
async fn json(url: &str, headers: &[(String, String)], form: Option<String>) -> Result<serde_json::Value, String> {
    let method = if form.is_some() { "POST" } else { "GET" };
    let (status, text) = if url.starts_with("https://") {
        let mut headers = headers.to_vec();
        if form.is_some() {
            headers.push(("content-type".into(), "application/x-www-form-urlencoded".into()));
        }
        let body = form.unwrap_or_default().into_bytes();
        let answer = crate::monitor::tls::send(url, method, &headers, body, &Default::default()).await?;
        (answer.status, answer.body)
    } else {
        let mut request = reqwest::Client::new()
            .request(reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?, url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(form) = form {
            request = request.header("content-type", "application/x-www-form-urlencoded").body(form);
        }
        let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = response.status().as_u16();
        (status, response.text().await.map_err(|e| format!("{url}: {e}"))?)
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{url} answered {status}, not JSON: {e}"))?;
    if !(200..300).contains(&status) {
        return Err(format!(
            "{url} answered {status}: {}",
            value["error_description"].as_str().or(value["error"].as_str()).unwrap_or("")
        ));
    }
    Ok(value)
}

/// The provider's endpoints, from its discovery document.
async fn discover(issuer: &str) -> Result<serde_json::Value, String> {
    let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    let document = json(&url, &[], None)
        .await
        .map_err(|e| format!("cannot read the identity provider's discovery document: {e}"))?;
    if document["issuer"].as_str().map(|i| i.trim_end_matches('/')) != Some(issuer.trim_end_matches('/')) {
        return Err(format!("{url} names another issuer: {}", document["issuer"]));
    }
    Ok(document)
}

fn refuse(message: &str) -> Response {
    let to = format!("/signin?error={}", session::urlencode(message));
    Redirect::to(&to).into_response()
}

#[derive(serde::Deserialize)]
pub(super) struct Begin {
    next: Option<String>,
}

/// `/signin/oidc`: to the provider.
pub(super) async fn begin(State(app): State<Arc<App>>, Query(query): Query<Begin>) -> Response {
    let Some(config) = app.config.oidc.clone() else {
        return refuse("Sign-in with OpenID Connect is not set up on this server (tandem server --oidc-issuer).");
    };
    let document = match discover(&config.issuer).await {
        Ok(document) => document,
        Err(error) => {
            tracing::error!("OpenID Connect: {error}");
            return refuse("The identity provider cannot be reached; try again, or sign in with a password.");
        }
    };
    let Some(endpoint) = document["authorization_endpoint"].as_str() else {
        return refuse("The identity provider names no authorization endpoint.");
    };
    let random = || crate::random_secret().unwrap_or_default();
    let (state, nonce, verifier) = (random(), random(), format!("{}{}", random(), random()));
    if state.is_empty() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no randomness").into_response();
    }
    let challenge = crate::encoding::base64url(&sha2::Sha256::digest(verifier.as_bytes()));
    let next = super::local(query.next.as_deref());
    if let Ok(mut flows) = app.oidc.flows.lock() {
        flows.retain(|_, flow| flow.3.elapsed() < LIFETIME);
        flows.insert(state.clone(), (verifier, nonce.clone(), next, Instant::now()));
    }
    let redirect = callback_url(&app);
    let url = format!(
        "{endpoint}?response_type=code&client_id={}&redirect_uri={}&scope={}&state={state}&nonce={nonce}&code_challenge={challenge}&code_challenge_method=S256",
        session::urlencode(&config.client_id),
        session::urlencode(&redirect),
        session::urlencode("openid email profile"),
    );
    let cookie = format!("{STATE_COOKIE}={state}; Path=/signin/oidc; HttpOnly; SameSite=Lax; Max-Age=600");
    ([(header::SET_COOKIE, cookie)], Redirect::to(&url)).into_response()
}

fn callback_url(app: &App) -> String {
    match &app.config.oidc {
        Some(config) if !config.redirect_url.is_empty() => config.redirect_url.clone(),
        _ => format!("http://{}/signin/oidc/callback", app.config.listen),
    }
}

#[derive(serde::Deserialize)]
pub(super) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `/signin/oidc/callback`: the code for an ID token, checked, then a session.
pub(super) async fn callback(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<Callback>,
) -> Response {
    if let Some(error) = query.error {
        let detail = query.error_description.unwrap_or_default();
        super::record(&app, "session.refused", "oidc", serde_json::json!({"error": error, "detail": detail})).await;
        return refuse(&format!("The identity provider refused: {error} {detail}"));
    }
    let (Some(code), Some(state)) = (query.code, query.state) else {
        return refuse("The sign-in came back incomplete.");
    };
    let cookie_state = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(&format!("{STATE_COOKIE}=")).map(str::to_string));
    if cookie_state.as_deref() != Some(state.as_str()) {
        return refuse("This sign-in was begun in another browser (or too long ago); begin it again.");
    }
    let flow = app.oidc.flows.lock().ok().and_then(|mut flows| flows.remove(&state));
    let Some((verifier, nonce, next, begun)) = flow.filter(|f| f.3.elapsed() < LIFETIME) else {
        return refuse("This sign-in expired; begin it again.");
    };
    let _ = begun;
    match finish(&app, &code, &verifier, &nonce).await {
        Ok(name) => {
            super::record(&app, "session.signed_in", &name, serde_json::json!({"with": "oidc"})).await;
            let mut response = super::signed_in(&app, &name, &next, &headers);
            let clear = format!("{STATE_COOKIE}=; Path=/signin/oidc; HttpOnly; SameSite=Lax; Max-Age=0");
            if let Ok(value) = clear.parse() {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            response
        }
        Err(error) => {
            tracing::warn!("OpenID Connect sign-in refused: {error}");
            super::record(&app, "session.refused", "oidc", serde_json::json!({"error": error})).await;
            refuse(&format!("Sign-in refused: {error}"))
        }
    }
}

/// Trades the code, checks the ID token, and finds or makes the user; their name.
async fn finish(app: &App, code: &str, verifier: &str, nonce: &str) -> Result<String, String> {
    let config = app.config.oidc.clone().ok_or("not set up")?;
    let document = discover(&config.issuer).await?;
    let token_endpoint = document["token_endpoint"].as_str().ok_or("no token endpoint")?;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", &callback_url(app)),
        ("code_verifier", verifier),
    ];
    let body: String = form.iter().map(|(k, v)| format!("{k}={}", session::urlencode(v))).collect::<Vec<_>>().join("&");
    let credentials = crate::encoding::base64(
        format!("{}:{}", session::urlencode(&config.client_id), session::urlencode(&config.client_secret)).as_bytes(),
    );
    let answer = json(token_endpoint, &[("authorization".into(), format!("Basic {credentials}"))], Some(body))
        .await
        .map_err(|e| format!("the token endpoint: {e}"))?;
    let id_token = answer["id_token"].as_str().ok_or_else(|| format!("no ID token: {}", answer["error"]))?;
    let jwks_uri = document["jwks_uri"].as_str().ok_or("no jwks_uri")?;
    let keys = json(jwks_uri, &[], None).await.map_err(|e| format!("the provider's keys: {e}"))?;
    let claims = verify(id_token, &keys)?;
    let now = jiff::Timestamp::now().as_second();
    if claims["iss"].as_str().map(|i| i.trim_end_matches('/')) != Some(config.issuer.trim_end_matches('/')) {
        return Err(format!("the ID token is from another issuer ({})", claims["iss"]));
    }
    let audience_ok = match &claims["aud"] {
        serde_json::Value::String(aud) => *aud == config.client_id,
        serde_json::Value::Array(auds) => auds.iter().any(|a| a.as_str() == Some(&config.client_id)),
        _ => false,
    };
    if !audience_ok {
        return Err("the ID token is for another client".into());
    }
    if claims["exp"].as_i64().is_none_or(|exp| exp + 60 < now) {
        return Err("the ID token has expired".into());
    }
    if claims["nonce"].as_str() != Some(nonce) {
        return Err("the ID token's nonce is not this sign-in's".into());
    }
    let name = ["preferred_username", "email", "sub"]
        .iter()
        .find_map(|k| claims[*k].as_str().filter(|v| !v.is_empty()))
        .ok_or("the ID token names nobody")?;
    let name: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.@".contains(*c)).take(100).collect();
    if name.is_empty() {
        return Err("the ID token's user name has no usable character".into());
    }
    if app.store.user_password(&name).await.map_err(|e| e.to_string())?.is_none() {
        // A user of the provider: no password here.
        app.store.add_user(&name, "!oidc", "oidc").await.map_err(|e| e.to_string())?;
        app.store.grant(&format!("user:{name}"), &config.default_role, "*", "oidc").await.map_err(|e| e.to_string())?;
    }
    Ok(name)
}

/// The claims of a JWT whose signature one of `keys` (a JWKS) verifies.
pub fn verify(token: &str, keys: &serde_json::Value) -> Result<serde_json::Value, String> {
    let mut parts = token.split('.');
    let (Some(head), Some(body), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the ID token is not a JWT".into());
    };
    let json = |part: &str| -> Result<serde_json::Value, String> {
        let bytes = crate::encoding::decode(part).ok_or("the ID token is not base64url")?;
        serde_json::from_slice(&bytes).map_err(|e| format!("the ID token: {e}"))
    };
    let header = json(head)?;
    let signature = crate::encoding::decode(signature).ok_or("the ID token's signature is not base64url")?;
    let message = format!("{head}.{body}");
    let alg = header["alg"].as_str().unwrap_or("");
    let kid = header["kid"].as_str();
    let candidates = keys["keys"].as_array().ok_or("the provider's keys are not a JWKS")?.iter().filter(|k| {
        kid.is_none_or(|kid| k["kid"].as_str() == Some(kid)) && k["use"].as_str().is_none_or(|u| u == "sig")
    });
    for key in candidates {
        let b = |name: &str| key[name].as_str().and_then(crate::encoding::decode);
        let verified = match (alg, key["kty"].as_str()) {
            ("RS256", Some("RSA")) => match (b("n"), b("e")) {
                (Some(n), Some(e)) => ring::signature::RsaPublicKeyComponents { n, e }
                    .verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, message.as_bytes(), &signature)
                    .is_ok(),
                _ => false,
            },
            ("ES256", Some("EC")) => match (b("x"), b("y")) {
                (Some(x), Some(y)) => {
                    let point = [&[4u8][..], &x, &y].concat();
                    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
                        .verify(message.as_bytes(), &signature)
                        .is_ok()
                }
                _ => false,
            },
            _ => false,
        };
        if verified {
            return json(body);
        }
    }
    Err(format!("no key of the provider verifies the ID token (alg {alg})"))
}
