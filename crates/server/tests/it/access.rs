//! Access control, generated from the route table: every route of the API (from the OpenAPI
//! document) and of the pages (from their table) × every role → allowed or refused as the policy
//! says; a route without a policy fails here. Then token scopes, expiry, teams and scoped grants.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use server::access::{Need, Role, SCOPES};
use store::NewToken;
use tower::ServiceExt;

use super::Api;

/// A user with `role` on `scope`, and a token of theirs with `scopes`.
async fn person(api: &Api, name: &str, role: &str, scope: &str, scopes: &[&str], expires: Option<&str>) -> String {
    let store = &api.app.store;
    store.add_user(name, "not-a-real-hash", "test").await.unwrap();
    store.grant(&format!("user:{name}"), role, scope, "test").await.unwrap();
    let value = format!("tdm_{name}_token");
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    let hash = server::token_hash(&value);
    let token = NewToken { name, hash: &hash, owner: Some(name), scopes: &scopes, expires };
    store.create_token(token, "test").await.unwrap();
    value
}

/// The status and error code of one request; the body is read only when it is an error (some
/// routes stream).
async fn status(api: &Api, method: &str, path: &str, token: &str, body: &str) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = server::router(api.app.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    if status != StatusCode::FORBIDDEN {
        return (status, String::new());
    }
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn every_route() -> Vec<(String, String)> {
    let mut routes = Vec::new();
    for (path, item) in &server::openapi().paths.paths {
        let methods = [
            ("GET", item.get.is_some()),
            ("POST", item.post.is_some()),
            ("PUT", item.put.is_some()),
            ("DELETE", item.delete.is_some()),
            ("PATCH", item.patch.is_some()),
        ];
        for (method, present) in methods {
            if present {
                routes.push((method.to_string(), path.clone()));
            }
        }
    }
    routes.extend(server::page_routes().into_iter().map(|(m, p)| (m.to_string(), p.to_string())));
    routes
}

/// A route template with its parameters filled in.
fn concrete(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').unwrap() + open;
        out.push_str(match &rest[open + 1..close] {
            "id" | "number" => "1",
            _ => "x",
        });
        rest = &rest[close + 1..];
    }
    out + rest
}

#[tokio::test]
async fn every_route_allows_exactly_the_roles_its_policy_names() {
    let api = Api::new().await;
    let mut tokens = Vec::new();
    for role in Role::ALL {
        tokens.push((role, person(&api, role.as_str(), role.as_str(), "*", &SCOPES, None).await));
    }
    let routes = every_route();
    let mut unguarded = Vec::new();
    let mut checked = 0;
    for (method, template) in &routes {
        let Some(need) = server::access::policy(&method.parse::<Method>().unwrap(), template) else {
            unguarded.push(format!("{method} {template}"));
            continue;
        };
        for (role, token) in &tokens {
            let (status, body) = status(&api, method, &concrete(template), token, "{}").await;
            let allowed = match need {
                Need::Public | Need::Signed => true,
                Need::Allow(permission, _) => role.allows(permission),
            };
            if allowed {
                assert_ne!(status, StatusCode::FORBIDDEN, "{} may {method} {template}: {body}", role.as_str());
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{} may not {method} {template}", role.as_str());
                assert!(body.contains("needs"), "a refusal says what is needed: {body}");
            }
            checked += 1;
        }
    }
    assert!(unguarded.is_empty(), "routes without an access policy: {unguarded:#?}");
    assert!(routes.len() >= 114, "the route table has {} routes", routes.len());
    assert_eq!(checked, routes.len() * Role::ALL.len());
}

#[tokio::test]
async fn scopes_expiry_teams_and_scoped_grants_narrow_what_a_token_may_do() {
    let api = Api::new().await;
    // A maintainer's read-only token reads but does not start runs.
    let reader = person(&api, "ana", "maintainer", "*", &["read"], None).await;
    assert_eq!(status(&api, "GET", "/api/v1/runs", &reader, "").await.0, StatusCode::OK);
    let (code, body) = status(&api, "POST", "/api/v1/repos/x/runs", &reader, "{}").await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(body.contains("the token's scopes (read) do not allow `run`"), "{body}");

    // An expired token is refused as such, and says what to do.
    let old = person(&api, "bo", "admin", "*", &SCOPES, Some("2001-01-01T00:00:00.000Z")).await;
    let (code, _) = status(&api, "GET", "/api/v1/runs", &old, "").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (_, body) = api.call("GET", "/api/v1/runs", Some(&old), "").await;
    assert_eq!(body["error"]["code"], "token_expired", "{body}");

    // A role on one service covers its environments, not another service's, nor the whole server.
    let store = &api.app.store;
    let cy = person(&api, "cy", "viewer", "repository:docs", &SCOPES, None).await;
    store.add_member("payments", "cy", "test").await.unwrap();
    store.grant("team:payments", "maintainer", "service:checkout", "test").await.unwrap();
    let deploy = |service: &str| format!(r#"{{"service": "{service}", "environment": "production"}}"#);
    let (code, body) = status(&api, "POST", "/api/v1/deployments", &cy, &deploy("checkout")).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "allowed through the team; there is no such service: {body}");
    let (code, body) = status(&api, "POST", "/api/v1/deployments", &cy, &deploy("search")).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(body.contains("`cy` has no role on environment:search/production"), "{body}");
    assert_eq!(status(&api, "GET", "/api/v1/runs", &cy, "").await.0, StatusCode::FORBIDDEN);
    assert_eq!(status(&api, "GET", "/repositories/docs", &cy, "").await.0, StatusCode::SEE_OTHER);
    store.remove_member("payments", "cy", "test").await.unwrap();
    assert_eq!(status(&api, "POST", "/api/v1/deployments", &cy, &deploy("checkout")).await.0, StatusCode::FORBIDDEN);

    // Use is recorded; every change of access is in the audit log.
    let tokens = store.tokens().await.unwrap();
    assert!(tokens.iter().find(|t| t.name == "ana").unwrap().last_used.is_some());
    assert!(tokens.iter().find(|t| t.name == "bo").unwrap().last_used.is_none(), "an expired token was not used");
    let kinds: Vec<String> = store.events(0, 1000).await.unwrap().into_iter().map(|e| e.kind).collect();
    for kind in ["token.created", "access.granted", "team.member_added", "team.member_removed"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
}

#[test]
fn id_tokens_are_believed_only_with_a_signature_of_the_providers_keys() {
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let b64 = server::encoding::base64url;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = pair.public_key().as_ref();
    let keys = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "x": b64(&point[1..33]), "y": b64(&point[33..])}]});
    let sign = |claims: &serde_json::Value| {
        let message = format!("{}.{}", b64(br#"{"alg":"ES256","kid":"k1"}"#), b64(claims.to_string().as_bytes()));
        let signature = pair.sign(&rng, message.as_bytes()).unwrap();
        format!("{message}.{}", b64(signature.as_ref()))
    };
    let claims = serde_json::json!({"sub": "ana", "preferred_username": "ana"});
    let token = sign(&claims);
    assert_eq!(server::oidc_verify(&token, &keys).unwrap(), claims);
    // Another payload under the same signature, another key, or no signature: refused.
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = b64(br#"{"sub":"admin","preferred_username":"admin"}"#);
    parts[1] = &forged;
    assert!(server::oidc_verify(&parts.join("."), &keys).is_err());
    let other = serde_json::json!({"keys": [{"kty": "EC", "kid": "k1", "x": b64(&[1; 32]), "y": b64(&[2; 32])}]});
    assert!(server::oidc_verify(&token, &other).is_err());
    let unsigned = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(claims.to_string().as_bytes()));
    assert!(server::oidc_verify(&unsigned, &keys).is_err());
}
