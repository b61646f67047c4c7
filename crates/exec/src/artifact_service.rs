//! The artifact half of the runner's results service, as `actions/upload-artifact@v4` and
//! `download-artifact@v4` (the `@actions/artifact` client) call it through `ACTIONS_RESULTS_URL`:
//! Twirp JSON calls (`CreateArtifact`, `FinalizeArtifact`, `ListArtifacts`,
//! `GetSignedArtifactURL`, `DeleteArtifact`), the zip uploaded to a signed URL as Azure block
//! blobs are (blocks, then the block list), and downloaded from another. Artifacts are the run's:
//! kept as `<run>/artifacts-v4/<name>.zip`, listed by every job of the run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

/// What the service keeps for a run.
pub struct Artifacts {
    pub(crate) token: String,
    pub(crate) base: String,
    dir: PathBuf,
    /// Upload names (random) → (artifact name, folder of its blocks).
    uploads: Mutex<HashMap<String, (String, PathBuf)>>,
    /// Download names (random) → artifact name.
    downloads: Mutex<HashMap<String, String>>,
    /// Artifact name → (id, size, created).
    finalized: Mutex<HashMap<String, (i64, u64, String)>>,
    next_id: std::sync::atomic::AtomicI64,
}

impl Artifacts {
    pub fn new(token: String, base: String, dir: PathBuf) -> Artifacts {
        Artifacts {
            token,
            base,
            dir,
            uploads: Mutex::default(),
            downloads: Mutex::default(),
            finalized: Mutex::default(),
            next_id: std::sync::atomic::AtomicI64::new(1),
        }
    }
}

/// The routes, to merge into the run's service.
pub fn router(state: Arc<Artifacts>) -> Router {
    Router::new()
        .route("/twirp/github.actions.results.api.v1.ArtifactService/{method}", post(twirp))
        .route("/_apis/results/upload/{name}", put(upload))
        .route("/_apis/results/download/{name}", get(download))
        .with_state(state)
}

fn twirp_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "code": code, "msg": message.into() }))).into_response()
}

fn random_name() -> String {
    crate::engine::run_token().trim_start_matches("tdm_run_").to_string()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.contains(['/', '\\', '"', ':', '<', '>', '|', '*', '?', '\0', '\r', '\n'])
        && name != "."
        && name != ".."
}

async fn twirp(
    State(state): State<Arc<Artifacts>>,
    headers: HeaderMap,
    Path(method): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == state.token);
    if !authorized {
        return twirp_error(StatusCode::UNAUTHORIZED, "unauthenticated", "a valid ACTIONS_RUNTIME_TOKEN is required");
    }
    let name = body["name"].as_str().unwrap_or_default().to_string();
    let finalized = |name: &str| state.finalized.lock().ok().and_then(|f| f.get(name).cloned());
    match method.as_str() {
        "CreateArtifact" => {
            if !valid_name(&name) {
                return twirp_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_argument",
                    format!("`{name}` is not a valid artifact name"),
                );
            }
            if finalized(&name).is_some() {
                return twirp_error(
                    StatusCode::CONFLICT,
                    "already_exists",
                    format!("an artifact named `{name}` exists in this run"),
                );
            }
            let upload = random_name();
            let blocks = state.dir.join(".uploads").join(&upload);
            if let Err(error) = std::fs::create_dir_all(&blocks) {
                return twirp_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", error.to_string());
            }
            if let Ok(mut uploads) = state.uploads.lock() {
                uploads.insert(upload.clone(), (name, blocks));
            }
            axum::Json(
                json!({ "ok": true, "signed_upload_url": format!("{}_apis/results/upload/{upload}", state.base) }),
            )
            .into_response()
        }
        "FinalizeArtifact" => {
            let path = state.dir.join(format!("{name}.zip"));
            let Ok(size) = std::fs::metadata(&path).map(|m| m.len()) else {
                return twirp_error(StatusCode::NOT_FOUND, "not_found", format!("nothing was uploaded for `{name}`"));
            };
            let id = state.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let created = jiff_now();
            if let Ok(mut all) = state.finalized.lock() {
                all.insert(name, (id, size, created));
            }
            axum::Json(json!({ "ok": true, "artifact_id": id.to_string() })).into_response()
        }
        "ListArtifacts" => {
            let name_filter = body["name_filter"].as_str().map(str::to_string);
            let id_filter =
                body["id_filter"].as_str().and_then(|s| s.parse::<i64>().ok()).or(body["id_filter"].as_i64());
            let all = state.finalized.lock().map(|f| f.clone()).unwrap_or_default();
            let mut listed: Vec<Value> = all
                .into_iter()
                .filter(|(n, (id, ..))| {
                    name_filter.as_ref().is_none_or(|f| f == n) && id_filter.is_none_or(|f| f == *id)
                })
                .map(|(n, (id, size, created))| {
                    json!({
                        "workflow_run_backend_id": body["workflow_run_backend_id"],
                        "workflow_job_run_backend_id": body["workflow_job_run_backend_id"],
                        "database_id": id.to_string(),
                        "name": n,
                        "size": size.to_string(),
                        "created_at": created,
                    })
                })
                .collect();
            listed.sort_by_key(|a| a["database_id"].as_str().and_then(|s| s.parse::<i64>().ok()));
            axum::Json(json!({ "artifacts": listed })).into_response()
        }
        "GetSignedArtifactURL" => {
            if finalized(&name).is_none() {
                return twirp_error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no artifact named `{name}` in this run"),
                );
            }
            let download = random_name();
            if let Ok(mut downloads) = state.downloads.lock() {
                downloads.insert(download.clone(), name);
            }
            axum::Json(json!({ "signed_url": format!("{}_apis/results/download/{download}", state.base) }))
                .into_response()
        }
        "DeleteArtifact" => {
            let Some((id, ..)) = state.finalized.lock().ok().and_then(|mut f| f.remove(&name)) else {
                return twirp_error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no artifact named `{name}` in this run"),
                );
            };
            let _ = std::fs::remove_file(state.dir.join(format!("{name}.zip")));
            axum::Json(json!({ "ok": true, "artifact_id": id.to_string() })).into_response()
        }
        other => twirp_error(StatusCode::NOT_FOUND, "bad_route", format!("no method {other}")),
    }
}

fn jiff_now() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    // RFC 3339 in UTC, as protobuf's JSON Timestamp.
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[derive(Deserialize)]
struct BlobQuery {
    comp: Option<String>,
    blockid: Option<String>,
}

/// The signed upload URL, as Azure's block blob API: `comp=block` stages a block,
/// `comp=blocklist` writes the blob from the listed blocks; a plain PUT is the whole blob.
async fn upload(
    State(state): State<Arc<Artifacts>>,
    Path(upload): Path<String>,
    Query(query): Query<BlobQuery>,
    body: Body,
) -> Response {
    let Some((name, blocks)) = state.uploads.lock().ok().and_then(|u| u.get(&upload).cloned()) else {
        return (StatusCode::NOT_FOUND, "no such upload").into_response();
    };
    let created =
        || (StatusCode::CREATED, [("x-ms-request-id", "tandem"), ("x-ms-version", "2023-11-03")]).into_response();
    match (query.comp.as_deref(), query.blockid) {
        (Some("block"), Some(id)) => {
            let file = blocks.join(hex::encode(id.as_bytes()));
            match write_body(&file, body).await {
                Ok(()) => created(),
                Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error).into_response(),
            }
        }
        (Some("blocklist"), _) => {
            let list = match axum::body::to_bytes(body, 1 << 20).await {
                Ok(list) => String::from_utf8_lossy(&list).into_owned(),
                Err(error) => return (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
            };
            let target = state.dir.join(format!("{name}.zip"));
            match assemble(&blocks, &list, &target) {
                Ok(()) => created(),
                Err(error) => (StatusCode::BAD_REQUEST, error).into_response(),
            }
        }
        (None, _) => match write_body(&state.dir.join(format!("{name}.zip")), body).await {
            Ok(()) => created(),
            Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error).into_response(),
        },
        _ => (StatusCode::BAD_REQUEST, "unknown blob operation").into_response(),
    }
}

async fn write_body(path: &std::path::Path, body: Body) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::File::create(path).await.map_err(|e| e.to_string())?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        file.write_all(&chunk.map_err(|e| e.to_string())?).await.map_err(|e| e.to_string())?;
    }
    file.flush().await.map_err(|e| e.to_string())
}

/// The blob from its block list (`<Latest>`/`<Uncommitted>`/`<Committed>` ids, in order).
fn assemble(blocks: &std::path::Path, list: &str, target: &std::path::Path) -> Result<(), String> {
    use std::io::Write;
    let mut ids = Vec::new();
    let mut rest = list;
    while let Some(start) = rest.find('>') {
        rest = &rest[start + 1..];
        let Some(end) = rest.find('<') else { break };
        let text = rest[..end].trim();
        if !text.is_empty() {
            ids.push(text.to_string());
        }
        rest = &rest[end..];
    }
    let partial = target.with_extension("zip.partial");
    let mut out = std::fs::File::create(&partial).map_err(|e| e.to_string())?;
    for id in &ids {
        let mut block = std::fs::File::open(blocks.join(hex::encode(id.as_bytes())))
            .map_err(|_| format!("block {id} was not staged"))?;
        std::io::copy(&mut block, &mut out).map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())?;
    std::fs::rename(&partial, target).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(blocks);
    Ok(())
}

async fn download(State(state): State<Arc<Artifacts>>, Path(download): Path<String>) -> Response {
    let Some(name) = state.downloads.lock().ok().and_then(|d| d.get(&download).cloned()) else {
        return (StatusCode::NOT_FOUND, "no such download").into_response();
    };
    match tokio::fs::read(state.dir.join(format!("{name}.zip"))).await {
        Ok(bytes) => ([("content-type", "application/zip")], bytes).into_response(),
        Err(error) => (StatusCode::NOT_FOUND, error.to_string()).into_response(),
    }
}
