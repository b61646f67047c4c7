//! Runs: list with filters, show, logs (stored and followed live over Server-Sent Events), cancel, re-run; the event log.

#[allow(unused_imports)]
use super::*;

#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", summary = "List runs, newest first",
    params(api::RunsQuery), security(("token" = [])),
    responses((status = 200, body = api::RunList), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn list_runs(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Params(query): Params<api::RunsQuery>,
) -> ApiResult<Json<api::RunList>> {
    let repo_id = match &query.repo {
        Some(name) => Some(app.store.repo(name).await?.id),
        None => None,
    };
    let git_ref = query.git_ref.clone().or(query.branch.as_ref().map(|b| format!("refs/heads/{b}")));
    let filter = RunFilter { repo_id, git_ref, status: query.status, before: None, limit: query.limit.unwrap_or(50) };
    let runs = app.store.runs(filter).await?;
    Ok(Json(api::RunList { runs: runs.iter().map(api::RunSummary::from).collect() }))
}

#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs", summary = "One run with its report",
    params(("id" = i64, Path, description = "The run's id")), security(("token" = [])),
    responses((status = 200, body = api::RunDetail), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn show_run(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::RunDetail>> {
    let run = app.store.run(parse_id(&id)?).await?;
    Ok(Json(api::RunDetail::from(run)))
}

/// Chunks (of up to 500 lines each) in one page of a log or one live event.
const LOG_PAGE_CHUNKS: i64 = 50;

#[utoipa::path(get, path = "/api/v1/runs/{id}/logs", tag = "runs",
    summary = "A run's log, a page at a time; with follow=true a live Server-Sent Events stream",
    params(("id" = i64, Path, description = "The run's id"), api::LogQuery), security(("token" = [])),
    responses(
        (status = 200, body = api::LogPage, description = "A page (or, with follow=true, `text/event-stream` of `lines` events carrying arrays of LogLine, then `end` with the status)"),
        (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn logs(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(id): Path<String>,
    Params(query): Params<api::LogQuery>,
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
        let lines = chunks.iter().flat_map(|(_, lines)| lines.iter().cloned()).collect();
        return Ok(Json(api::LogPage { run: id, status: run.status, lines, next, complete }).into_response());
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

#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", tag = "runs", summary = "Cancel a queued or running run",
    params(("id" = i64, Path, description = "The run's id")), security(("token" = [])),
    responses((status = 200, body = api::CancelResponse), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn cancel(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::CancelResponse>> {
    let id = parse_id(&id)?;
    let run = app.store.request_cancel(id, &caller.0).await?;
    if let Some(source) = app.running.lock().ok().and_then(|r| r.get(&id).cloned()) {
        source.cancel();
    }
    Ok(Json(api::CancelResponse { id, status: run.status, cancel_requested: true }))
}

#[utoipa::path(post, path = "/api/v1/runs/{id}/approve", tag = "runs",
    summary = "Let a job held at its environment's gates start (by a maintainer other than who started the run); with a reason, also past a hold on security findings",
    params(("id" = i64, Path, description = "The run's id")), request_body = api::ApproveJob, security(("token" = [])),
    responses((status = 200, body = api::JobApproval), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn approve_job(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    request: Result<Json<api::ApproveJob>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<api::JobApproval>> {
    let request = body(request)?;
    let run = app.store.run(parse_id(&id)?).await?;
    let subject = format!("run/{}", run.id);
    let events = app.store.events_about(&subject).await?;
    let Some(waiting) = events.iter().find(|e| e.kind == "job.waiting" && e.payload["job"] == request.job.as_str())
    else {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "not_waiting",
            format!("job `{}` of run {} is not waiting at an environment's gates", request.job, run.id),
        ));
    };
    if run.status.is_finished() {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("run {} is {}", run.id, run.status.as_str()),
        ));
    }
    // Four eyes: whoever started the run does not let it into a gated environment.
    if events.iter().any(|e| e.kind == "run.queued" && e.actor == caller.0) {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "same_person",
            format!("`{}` started run {}; another maintainer must approve its job `{}`", caller.0, run.id, request.job),
        ));
    }
    let environment = waiting.payload["environment"].as_str().unwrap_or_default().to_string();
    let reason = request.reason.map(|r| r.trim().to_string()).filter(|r| !r.is_empty());
    let payload = serde_json::json!({"job": request.job, "environment": environment, "reason": reason});
    app.store.record_event("job.approved", &subject, &caller.0, payload).await?;
    Ok(Json(api::JobApproval { run: run.id, job: request.job, environment, approved_by: caller.0 }))
}

#[utoipa::path(post, path = "/api/v1/runs/{id}/rerun", tag = "runs",
    summary = "Queue the run again, all jobs or only the failed ones",
    params(("id" = i64, Path, description = "The run's id")), request_body(content = Option<api::RerunRequest>),
    security(("token" = [])),
    responses((status = 202, body = api::RerunResponse), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn rerun(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Option<Json<api::RerunRequest>>,
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
        let report = run.report.clone().and_then(|r| serde_json::from_value::<api::RunReport>(r).ok());
        let failed: Vec<String> = report
            .iter()
            .flat_map(|r| &r.jobs)
            .filter(|j| matches!(j.status.as_str(), "failure" | "cancelled"))
            .map(|j| j.id.clone())
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
    let answer = api::RerunResponse { id: queued.id, number: queued.number, jobs: queued.jobs };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

#[utoipa::path(get, path = "/api/v1/events", tag = "audit", summary = "The event log (audit trail), after a sequence number",
    params(api::EventsQuery), security(("token" = [])),
    responses((status = 200, body = api::EventList), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn events(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Params(query): Params<api::EventsQuery>,
) -> ApiResult<Json<api::EventList>> {
    let events = app.store.events(query.after.unwrap_or(0), query.limit.unwrap_or(100)).await?;
    Ok(Json(api::EventList { events }))
}

#[utoipa::path(post, path = "/api/v1/audit/checkpoint", tag = "audit",
    summary = "Sign the event log's newest event now (Ed25519); keep the answer elsewhere",
    security(("token" = [])),
    responses((status = 200, body = api::Checkpoint), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn checkpoint(State(app): State<Arc<App>>, _caller: Caller) -> ApiResult<Json<api::Checkpoint>> {
    match crate::checkpoint::make(&app).await {
        Ok(Some(checkpoint)) => Ok(Json(checkpoint)),
        Ok(None) => Err(AppError::new(StatusCode::CONFLICT, "empty_log", "the event log is empty: nothing to sign")),
        Err(error) => Err(AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "checkpoint", error)),
    }
}
