//! Runs: list with filters, show, logs (stored and followed live over Server-Sent Events), cancel, re-run; the event log.

#[allow(unused_imports)]
use super::*;

#[derive(Debug, Deserialize)]
pub(super) struct RunsQuery {
    pub(super) repo: Option<String>,
    #[serde(rename = "ref")]
    pub(super) git_ref: Option<String>,
    pub(super) branch: Option<String>,
    pub(super) status: Option<String>,
    pub(super) limit: Option<i64>,
}

pub(super) async fn list_runs(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Query(query): Query<RunsQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let repo_id = match &query.repo {
        Some(name) => Some(app.store.repo(name).await?.id),
        None => None,
    };
    let status = match &query.status {
        Some(text) => Some(RunStatus::parse(text).ok_or_else(|| {
            AppError::new(StatusCode::BAD_REQUEST, "bad_request", format!("unknown status `{text}`"))
        })?),
        None => None,
    };
    let git_ref = query.git_ref.clone().or(query.branch.as_ref().map(|b| format!("refs/heads/{b}")));
    let runs = app.store.runs(RunFilter { repo_id, git_ref, status, limit: query.limit.unwrap_or(50) }).await?;
    let runs: Vec<serde_json::Value> = runs.into_iter().map(|r| serde_json::json!({"id": r.id, "repo_id": r.repo_id, "number": r.number, "workflow": r.workflow, "event": r.event, "ref": r.git_ref, "sha": r.sha, "status": r.status, "reason": r.reason, "attempt": r.attempt, "run_attempt": r.run_attempt, "rerun_of": r.rerun_of, "created": r.created, "started": r.started, "finished": r.finished})).collect();
    Ok(Json(serde_json::json!({"runs": runs})))
}

pub(super) async fn show_run(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let run = app.store.run(parse_id(&id)?).await?;
    Ok(Json(serde_json::to_value(run).unwrap_or_default()))
}

#[derive(Debug, Deserialize)]
pub(super) struct LogQuery {
    pub(super) after: Option<i64>,
    pub(super) follow: Option<bool>,
}

/// Chunks (of up to 500 lines each) in one page of a log or one live event.
const LOG_PAGE_CHUNKS: i64 = 50;

pub(super) async fn logs(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<LogQuery>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let run = app.store.run(id).await?;
    let after = query.after.unwrap_or(0);
    if !query.follow.unwrap_or(false) {
        // One page at a time: `complete` is false while chunks after `next` remain.
        let chunks = app.store.log(id, after, LOG_PAGE_CHUNKS + 1).await?;
        let complete = chunks.len() as i64 <= LOG_PAGE_CHUNKS;
        let chunks = &chunks[..chunks.len().min(LOG_PAGE_CHUNKS as usize)];
        let next = chunks.last().map_or(after, |(seq, _)| *seq);
        let lines: Vec<&store::LogLine> = chunks.iter().flat_map(|(_, lines)| lines).collect();
        let body =
            serde_json::json!({"run": id, "status": run.status, "lines": lines, "next": next, "complete": complete});
        return Ok(Json(body).into_response());
    }
    // Live: poll the store (the durable source of truth) and stream new chunks as events.
    let stream = futures_util::stream::unfold((app, after, false), move |(app, mut after, done)| async move {
        if done {
            return None;
        }
        loop {
            let finished = app.store.run(id).await.map(|r| r.status.is_finished()).unwrap_or(true);
            let chunks = app.store.log(id, after, LOG_PAGE_CHUNKS).await.unwrap_or_default();
            if let Some((seq, _)) = chunks.last() {
                after = *seq;
                let lines: Vec<_> = chunks.into_iter().flat_map(|(_, lines)| lines).collect();
                let event =
                    SseEvent::default().event("lines").id(after.to_string()).json_data(&lines).unwrap_or_default();
                return Some((Ok::<_, Infallible>(event), (app, after, false)));
            }
            if finished {
                let status = app.store.run(id).await.map(|r| r.status.as_str()).unwrap_or("unknown");
                let event = SseEvent::default().event("end").data(status);
                return Some((Ok(event), (app, after, true)));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

pub(super) async fn cancel(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_id(&id)?;
    let run = app.store.request_cancel(id, &caller.0).await?;
    if let Some(source) = app.running.lock().ok().and_then(|r| r.get(&id).cloned()) {
        source.cancel();
    }
    Ok(Json(serde_json::json!({"id": id, "status": run.status, "cancel_requested": true})))
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct Rerun {
    #[serde(default)]
    pub(super) failed: bool,
}

pub(super) async fn rerun(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Option<Json<Rerun>>,
) -> ApiResult<Response> {
    let run = app.store.run(parse_id(&id)?).await?;
    if !run.status.is_finished() {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("run {} is still {}", run.id, run.status.as_str()),
        ));
    }
    let failed_only = body.map(|b| b.0.failed).unwrap_or(false);
    let jobs = if failed_only {
        let failed: Vec<String> = run
            .report
            .as_ref()
            .and_then(|r| r.get("jobs"))
            .and_then(|j| j.as_array())
            .into_iter()
            .flatten()
            .filter(|j| matches!(j.get("status").and_then(|s| s.as_str()), Some("failure" | "cancelled")))
            .filter_map(|j| j.get("id").and_then(|i| i.as_str()).map(str::to_string))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if failed.is_empty() {
            return Err(AppError::new(
                StatusCode::CONFLICT,
                "nothing_failed",
                format!("run {} has no failed jobs to re-run", run.id),
            ));
        }
        Some(failed)
    } else {
        run.jobs.clone()
    };
    let new = NewRun {
        repo_id: run.repo_id,
        workflow: run.workflow,
        event: run.event,
        git_ref: run.git_ref,
        sha: run.sha,
        before_sha: run.before_sha,
        change_request: run.change_request,
        jobs,
        payload: run.payload,
        rerun_of: Some(run.id),
    };
    let queued = app.store.enqueue(new, &caller.0).await?;
    app.wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({"id": queued.id, "number": queued.number, "jobs": queued.jobs})))
        .into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct EventsQuery {
    pub(super) after: Option<i64>,
    pub(super) limit: Option<i64>,
}

pub(super) async fn events(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Query(query): Query<EventsQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let events = app.store.events(query.after.unwrap_or(0), query.limit.unwrap_or(100)).await?;
    Ok(Json(serde_json::json!({"events": events})))
}
