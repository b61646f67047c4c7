//! Hosted repositories: bare repositories under `<data>/git/`, served over git's smart HTTP by
//! `git http-backend` (a CGI program) behind the server's own authentication — HTTP Basic with a
//! token as the password, or a Bearer token. Fetching needs `read` on the repository, pushing
//! `run`. A `pre-receive` hook keeps protected branches for the merge queue; what a push moved is
//! handled after it (runs for branches, a revision for `refs/for/<branch>`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::io::AsyncWriteExt;

use crate::App;
use crate::access::{Permission, Resource};

/// Where hosted repositories live.
pub fn root(app: &App) -> PathBuf {
    app.config.data_dir.join("git")
}

/// The bare repository of hosted repository `name`.
pub fn path(app: &App, name: &str) -> PathBuf {
    root(app).join(format!("{name}.git"))
}

/// Whether `name` can be a hosted repository's name (and a directory's).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with(['.', '-'])
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.ends_with(".git")
}

/// The hook that refuses direct updates of protected branches (creating one, the first push of
/// a new repository, is allowed) and of Tandem's own refs.
fn pre_receive(protected: &[String]) -> String {
    let cases: String = protected.iter().map(|b| format!("    refs/heads/{b}) protected=1 ;;\n")).collect();
    format!(
        "#!/bin/sh\n# Written by Tandem: protected branches move only through the merge queue.\n\
         zero=0000000000000000000000000000000000000000\n\
         while read old new ref; do\n  protected=0\n  case \"$ref\" in\n{cases}\
             refs/changes/*|refs/queue/*) echo \"tandem: $ref is Tandem's own\" >&2; exit 1 ;;\n  esac\n\
           if [ \"$protected\" = 1 ] && [ \"$old\" != \"$zero\" ]; then\n\
             echo \"tandem: ${{ref#refs/heads/}} is protected: changes reach it through the merge queue\" >&2\n\
             echo \"tandem: push for review with: git push origin HEAD:refs/for/${{ref#refs/heads/}}\" >&2\n\
             exit 1\n  fi\ndone\nexit 0\n"
    )
}

/// Creates the bare repository of `name` with its hook; `protected` branches move only through
/// the merge queue.
pub async fn create(app: &App, name: &str, protected: &[String]) -> Result<PathBuf, String> {
    let dir = path(app, name);
    if dir.exists() {
        return Err(format!("a hosted repository named `{name}` exists already"));
    }
    tokio::fs::create_dir_all(root(app)).await.map_err(|e| format!("cannot create {}: {e}", root(app).display()))?;
    let dir_text = dir.to_string_lossy().into_owned();
    git::repo::run(None, &["init", "--quiet", "--bare", "--initial-branch=main", "--end-of-options", &dir_text])
        .await
        .map_err(|e| e.to_string())?;
    // Pushes of any size; fetches of the commits Tandem's refs hold.
    for (key, value) in [("http.receivepack", "true"), ("uploadpack.allowReachableSHA1InWant", "true")] {
        git::repo::git(&dir, &["config", key, value]).await.map_err(|e| e.to_string())?;
    }
    // What `provenance: required` counts as protected.
    tokio::fs::write(dir.join("tandem-protected"), protected.join("\n"))
        .await
        .map_err(|e| format!("cannot write {}: {e}", dir.display()))?;
    let hook = dir.join("hooks/pre-receive");
    tokio::fs::write(&hook, pre_receive(protected))
        .await
        .map_err(|e| format!("cannot write {}: {e}", hook.display()))?;
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
        .await
        .map_err(|e| format!("cannot make {} executable: {e}", hook.display()))?;
    Ok(dir)
}

/// Every ref of a bare repository and its commit.
pub async fn refs(dir: &Path) -> Result<std::collections::BTreeMap<String, String>, String> {
    let listing =
        git::repo::git(dir, &["for-each-ref", "--format=%(refname) %(objectname)"]).await.map_err(|e| e.to_string())?;
    Ok(listing.lines().filter_map(|l| l.split_once(' ')).map(|(r, s)| (r.to_string(), s.to_string())).collect())
}

fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [("www-authenticate", "Basic realm=\"Tandem\""), ("content-type", "text/plain")],
        format!("{message}\n"),
    )
        .into_response()
}

/// The token of a request: the password of HTTP Basic (any user name), or a Bearer token.
fn token(headers: &HeaderMap) -> Option<String> {
    let header = headers.get("authorization")?.to_str().ok()?;
    if let Some(token) = header.strip_prefix("Bearer ") {
        return Some(token.trim().to_string());
    }
    let decoded = crate::encoding::decode(header.strip_prefix("Basic ")?.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split_once(':').map_or(text.clone(), |(_, password)| password.to_string()))
}

/// `/git/<name>.git/…`: git's smart HTTP, for fetches and pushes.
pub async fn serve(
    State(app): State<Arc<App>>,
    UrlPath(rest): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let (first, tail) = rest.split_once('/').unwrap_or((rest.as_str(), ""));
    let name = first.trim_end_matches(".git").to_string();
    let repo = match app.store.repos().await {
        Ok(repos) => repos.into_iter().find(|r| r.name == name),
        Err(error) => return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    };
    let dir = path(&app, &name);
    let Some(repo) = repo.filter(|_| valid_name(&name) && dir.is_dir()) else {
        return (StatusCode::NOT_FOUND, format!("no hosted repository `{name}`\n")).into_response();
    };
    let query = query.unwrap_or_default();
    let pushing = tail == "git-receive-pack" || query.contains("service=git-receive-pack");
    // Who it is, and whether they may.
    let Some(token) = token(&headers) else { return unauthorized("this repository needs a token as the password") };
    let principal = match app.store.token(&crate::token_hash(&token)).await {
        Ok(Some(row))
            if row
                .expires
                .as_deref()
                .is_none_or(|e| e > store::rfc3339(jiff::Timestamp::now().as_millisecond()).as_str()) =>
        {
            let scopes = row.scopes.split(',').map(str::to_string).collect();
            crate::access::Principal {
                actor: row.owner.clone().unwrap_or(row.name),
                user: row.owner,
                via: crate::access::Via::Token(scopes),
            }
        }
        Ok(_) => return unauthorized("the token is not valid (or expired)"),
        Err(error) => return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    };
    let permission = if pushing { Permission::Run } else { Permission::Read };
    match crate::access::refusal(&app, &principal, permission, &Resource::Repository(name.clone())).await {
        Ok(None) => {}
        Ok(Some(message)) => return (StatusCode::FORBIDDEN, format!("{message}\n")).into_response(),
        Err(error) => return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
    if pushing && repo.archived.is_some() {
        return archived(&name, &method);
    }
    // One push at a time per repository, with what it starts: `refs/for/…` is free again for
    // the next push only once this one's revision is taken from it.
    let lock = if pushing && method == Method::POST {
        Some(app.fetch_locks.lock().await.entry(-repo.id).or_default().clone())
    } else {
        None
    };
    let _guard = match &lock {
        Some(lock) => Some(lock.lock().await),
        None => None,
    };
    let before = if lock.is_some() { refs(&dir).await.ok() } else { None };
    let response = match cgi(&app, &name, tail, &method, &headers, &query, &principal.actor, body).await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!("git http-backend for {name}: {error}");
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response();
        }
    };
    if let Some(before) = before {
        match refs(&dir).await {
            Ok(after) => super::changes::pushed(&app, &repo, &before, &after, &principal.actor).await,
            Err(error) => tracing::error!("cannot read the refs of {} after a push: {error}", repo.name),
        }
    }
    response
}

/// The answer to a push to an archived repository: git's own `ERR` packet in the ref
/// advertisement, which git shows as `remote error: …`.
fn archived(name: &str, method: &Method) -> Response {
    let message =
        format!("ERR {name} is archived and read-only (`tandem repo unarchive {name}` makes it active again)\n");
    if method != Method::GET {
        return (StatusCode::FORBIDDEN, message).into_response();
    }
    let pkt = |line: &str| format!("{:04x}{line}", line.len() + 4);
    let body = format!("{}0000{}", pkt("# service=git-receive-pack\n"), pkt(&message));
    ([(axum::http::header::CONTENT_TYPE, "application/x-git-receive-pack-advertisement")], body).into_response()
}

/// Runs `git http-backend` for one request and turns its CGI answer into a response.
#[allow(clippy::too_many_arguments)]
async fn cgi(
    app: &App,
    name: &str,
    tail: &str,
    method: &Method,
    headers: &HeaderMap,
    query: &str,
    actor: &str,
    body: Bytes,
) -> Result<Response, String> {
    let header = |key: &str| headers.get(key).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root(app))
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", format!("/{name}.git/{tail}"))
        .env("REQUEST_METHOD", method.as_str())
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type"))
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", actor)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start git http-backend: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let output = child.wait_with_output().await.map_err(|e| e.to_string())?;
    writer.await.map_err(|e| e.to_string())?;
    let split = output.stdout.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    let split = split.or_else(|| output.stdout.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((at, gap)) = split else {
        return Err(format!("git http-backend answered no headers: {}", String::from_utf8_lossy(&output.stderr)));
    };
    let head = String::from_utf8_lossy(&output.stdout[..at]).into_owned();
    let mut response = Response::builder();
    let mut status = StatusCode::OK;
    for line in head.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        if key.eq_ignore_ascii_case("status") {
            let code = value.trim().split(' ').next().and_then(|c| c.parse::<u16>().ok()).unwrap_or(500);
            status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else {
            response = response.header(key.trim(), value.trim());
        }
    }
    let body = output.stdout[at + gap..].to_vec();
    response.status(status).body(Body::from(body)).map_err(|e| e.to_string())
}
