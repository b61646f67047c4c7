//! The Actions cache service for one run: the REST protocol `@actions/cache` speaks (through
//! `ACTIONS_CACHE_URL`, with `ACTIONS_RUNTIME_TOKEN`) — what `actions/cache`,
//! `Swatinem/rust-cache` and `setup-*`'s `cache:` reach — served on loopback and backed by the
//! same store as the built-in cache. Entries are scoped as GitHub scopes them: a run reads its
//! own branch's entries, then its base branch's and the default branch's; it writes its own.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::Deserialize;

use crate::cache::{CacheStore, Saved};

/// The runner's services for one run (the cache, and the artifacts of
/// [`crate::artifact_service`]), running until dropped.
pub struct CacheService {
    /// `ACTIONS_CACHE_URL` and `ACTIONS_RESULTS_URL`: ends with `/`, as clients append `_apis/…`.
    pub url: String,
    /// `ACTIONS_RUNTIME_TOKEN`: shaped as the JWT the artifact client reads its run from.
    pub token: String,
    task: tokio::task::JoinHandle<()>,
}

/// A runtime token for run `run`: a JWT whose `scp` claim names the run (`Actions.Results:…`,
/// which `@actions/artifact` reads) and whose last part is random, so it cannot be guessed. Only
/// Tandem's services read it, and they compare it whole.
pub fn runtime_token(run: u64) -> String {
    let encode = |bytes: &[u8]| base64url(bytes);
    let header = encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = format!(r#"{{"iss":"tandem","scp":"Actions.GenericRead:{run} Actions.Results:{run}:{run}"}}"#);
    let secret = crate::engine::run_token();
    format!("{header}.{}.{}", encode(claims.as_bytes()), encode(secret.as_bytes()))
}

/// Base64url without padding (RFC 4648 §5).
fn base64url(bytes: &[u8]) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    crate::commands::base64(bytes, alphabet).trim_end_matches('=').to_string()
}

impl Drop for CacheService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Upload {
    key: String,
    version: String,
    path: PathBuf,
    file: std::fs::File,
}

struct Service {
    store: CacheStore,
    token: String,
    /// Where this run writes, then where else it may read, in order.
    scopes: Vec<String>,
    base: String,
    uploads: Mutex<HashMap<u64, Upload>>,
    next_id: std::sync::atomic::AtomicU64,
    /// Download names (random, as the URL is the only credential) → archive files.
    downloads: Mutex<HashMap<String, PathBuf>>,
}

/// Starts the services on a loopback port. `scopes`: the run's own first; `artifacts`: where
/// the run's uploaded artifacts go.
pub async fn start(
    store: CacheStore,
    token: String,
    scopes: Vec<String>,
    artifacts: std::path::PathBuf,
) -> std::io::Result<CacheService> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/", listener.local_addr()?);
    std::fs::create_dir_all(&artifacts)?;
    let results = Arc::new(crate::artifact_service::Artifacts::new(token.clone(), base.clone(), artifacts));
    let service = Arc::new(Service {
        store,
        token: token.clone(),
        scopes,
        base: base.clone(),
        uploads: Mutex::default(),
        next_id: std::sync::atomic::AtomicU64::new(1),
        downloads: Mutex::default(),
    });
    let app = Router::new()
        .route("/_apis/artifactcache/cache", get(lookup))
        .route("/_apis/artifactcache/caches", post(reserve))
        .route("/_apis/artifactcache/caches/{id}", post(commit).patch(upload))
        .route("/_apis/artifactcache/archives/{name}", get(download))
        .with_state(service)
        .merge(crate::artifact_service::router(results));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(CacheService { url: base, token, task })
}

fn authorized(service: &Service, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| !service.token.is_empty() && token == service.token)
}

fn message(status: StatusCode, text: impl Into<String>) -> Response {
    (status, axum::Json(serde_json::json!({ "message": text.into() }))).into_response()
}

#[derive(Deserialize)]
struct LookupQuery {
    keys: String,
    version: String,
}

async fn lookup(State(service): State<Arc<Service>>, headers: HeaderMap, Query(query): Query<LookupQuery>) -> Response {
    if !authorized(&service, &headers) {
        return message(StatusCode::UNAUTHORIZED, "a valid ACTIONS_RUNTIME_TOKEN is required");
    }
    let keys: Vec<String> = query.keys.split(',').map(str::trim).filter(|k| !k.is_empty()).map(String::from).collect();
    let (store, scopes, version) = (service.store.clone(), service.scopes.clone(), query.version.clone());
    let found = tokio::task::spawn_blocking(move || store.find_archive(&scopes, &version, &keys)).await;
    match found {
        Ok(Ok(Some((key, scope, path)))) => {
            let name = crate::engine::run_token().trim_start_matches("tdm_run_").to_string();
            if let Ok(mut downloads) = service.downloads.lock() {
                downloads.insert(name.clone(), path);
            }
            let location = format!("{}_apis/artifactcache/archives/{name}", service.base);
            axum::Json(serde_json::json!({
                "cacheKey": key,
                "scope": scope,
                "cacheVersion": query.version,
                "archiveLocation": location,
            }))
            .into_response()
        }
        Ok(Ok(None)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(error)) => message(StatusCode::INTERNAL_SERVER_ERROR, format!("cache lookup failed: {error}")),
        Err(error) => message(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

#[derive(Deserialize)]
struct Reserve {
    key: String,
    version: String,
}

async fn reserve(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Reserve>,
) -> Response {
    if !authorized(&service, &headers) {
        return message(StatusCode::UNAUTHORIZED, "a valid ACTIONS_RUNTIME_TOKEN is required");
    }
    let scope = &service.scopes[0];
    if service.store.has_archive(scope, &body.version, &body.key) {
        return message(StatusCode::CONFLICT, format!("cache entry `{}` exists already in {scope}", body.key));
    }
    let id = service.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = service.store.upload_dir().join(format!("service-{}-{id}", std::process::id()));
    let file = match std::fs::File::create(&path) {
        Ok(file) => file,
        Err(error) => return message(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot start the upload: {error}")),
    };
    if let Ok(mut uploads) = service.uploads.lock() {
        uploads.insert(id, Upload { key: body.key, version: body.version, path, file });
    }
    (StatusCode::CREATED, axum::Json(serde_json::json!({ "cacheId": id }))).into_response()
}

/// `Content-Range: bytes START-END/*`: the chunk's first byte.
fn range_start(headers: &HeaderMap) -> Option<u64> {
    let text = headers.get("content-range")?.to_str().ok()?;
    text.strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

async fn upload(State(service): State<Arc<Service>>, headers: HeaderMap, Path(id): Path<u64>, body: Body) -> Response {
    if !authorized(&service, &headers) {
        return message(StatusCode::UNAUTHORIZED, "a valid ACTIONS_RUNTIME_TOKEN is required");
    }
    let Some(mut offset) = range_start(&headers) else {
        return message(StatusCode::BAD_REQUEST, "a chunk needs `Content-Range: bytes START-END/*`");
    };
    let file = match service.uploads.lock().ok().and_then(|u| u.get(&id).and_then(|u| u.file.try_clone().ok())) {
        Some(file) => file,
        None => return message(StatusCode::NOT_FOUND, format!("no upload {id} in progress")),
    };
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(error) => return message(StatusCode::BAD_REQUEST, format!("the chunk was cut short: {error}")),
        };
        if let Err(error) = file.write_all_at(&chunk, offset) {
            return message(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot write the chunk: {error}"));
        }
        offset += chunk.len() as u64;
    }
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct Commit {
    size: u64,
}

async fn commit(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    axum::Json(body): axum::Json<Commit>,
) -> Response {
    if !authorized(&service, &headers) {
        return message(StatusCode::UNAUTHORIZED, "a valid ACTIONS_RUNTIME_TOKEN is required");
    }
    let Some(upload) = service.uploads.lock().ok().and_then(|mut u| u.remove(&id)) else {
        return message(StatusCode::NOT_FOUND, format!("no upload {id} in progress"));
    };
    let written = upload.file.metadata().map(|m| m.len()).unwrap_or(0);
    drop(upload.file);
    if written != body.size {
        let _ = std::fs::remove_file(&upload.path);
        return message(StatusCode::BAD_REQUEST, format!("{written} bytes arrived, not the {} announced", body.size));
    }
    let (store, scope) = (service.store.clone(), service.scopes[0].clone());
    let path = upload.path.clone();
    let saved =
        tokio::task::spawn_blocking(move || store.store_archive(&scope, &upload.version, &upload.key, &path)).await;
    let _ = std::fs::remove_file(&upload.path);
    match saved {
        Ok(Ok(Saved::Stored { .. } | Saved::Exists | Saved::NothingToSave)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(error)) => message(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot keep the archive: {error}")),
        Err(error) => message(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

async fn download(State(service): State<Arc<Service>>, Path(name): Path<String>) -> Response {
    let Some(path) = service.downloads.lock().ok().and_then(|d| d.get(&name).cloned()) else {
        return message(StatusCode::NOT_FOUND, "no such archive");
    };
    match tokio::fs::File::open(&path).await {
        Ok(file) => {
            let length = file.metadata().await.map(|m| m.len()).unwrap_or(0);
            let stream = tokio_util_stream(file);
            Response::builder()
                .header("content-type", "application/octet-stream")
                .header("content-length", length)
                .body(Body::from_stream(stream))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Err(error) => message(StatusCode::NOT_FOUND, format!("the archive is gone: {error}")),
    }
}

/// A file as a stream of 256 KiB chunks.
fn tokio_util_stream(file: tokio::fs::File) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures_util::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buffer = vec![0u8; 256 * 1024];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok(bytes::Bytes::from(buffer)), file))
            }
            Err(error) => Some((Err(error), file)),
        }
    })
}
