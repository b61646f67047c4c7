//! Rows to domain types and back: the mappers, run insertion, log chunk compression.

#[allow(unused_imports)]
use super::*;

pub(super) fn repo_from(row: &SqliteRow) -> Result<Repo> {
    Ok(Repo {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        source: row.try_get("source")?,
        webhook_secret: row.try_get("webhook_secret")?,
        poll_seconds: row.try_get("poll_seconds")?,
        created: row.try_get("created")?,
        forge: row.try_get("forge")?,
        api_url: row.try_get("api_url")?,
        status_token: row.try_get("status_token")?,
    })
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(super) fn run_from(row: &SqliteRow) -> Result<Run> {
    let status: String = row.try_get("status")?;
    let jobs: Option<String> = row.try_get("jobs")?;
    let payload: String = row.try_get("payload")?;
    let report: Option<String> = row.try_get("report")?;
    Ok(Run {
        id: row.try_get("id")?,
        repo_id: row.try_get("repo_id")?,
        number: row.try_get("number")?,
        workflow: row.try_get("workflow")?,
        event: row.try_get("event")?,
        git_ref: row.try_get("git_ref")?,
        sha: row.try_get("sha")?,
        before_sha: row.try_get("before_sha")?,
        change_request: row.try_get("change_request")?,
        status: RunStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("run status `{status}`")))?,
        reason: row.try_get("reason")?,
        jobs: jobs.map(|j| parse(&j, "run jobs")).transpose()?,
        payload: parse(&payload, "run payload")?,
        attempt: row.try_get("attempt")?,
        run_attempt: row.try_get("run_attempt")?,
        rerun_of: row.try_get("rerun_of")?,
        cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
        report: report.map(|r| parse(&r, "run report")).transpose()?,
        created: row.try_get("created")?,
        started: row.try_get("started")?,
        finished: row.try_get("finished")?,
    })
}

pub(super) fn deployment_from(row: &SqliteRow) -> Result<Deployment> {
    let status: String = row.try_get("status")?;
    Ok(Deployment {
        id: row.try_get("id")?,
        repo_id: row.try_get("repo_id")?,
        service: row.try_get("service")?,
        environment: row.try_get("environment")?,
        sha: row.try_get("sha")?,
        release: row.try_get("release")?,
        run_id: row.try_get("run_id")?,
        kind: {
            let kind: String = row.try_get("kind")?;
            DeploymentKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("deployment kind `{kind}`")))?
        },
        status: DeploymentStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("deployment status `{status}`")))?,
        step: row.try_get("step")?,
        weight: row.try_get("weight")?,
        reason: row.try_get("reason")?,
        approved_by: row.try_get("approved_by")?,
        abort_requested: row.try_get::<i64, _>("abort_requested")? != 0,
        spec: row.try_get("spec")?,
        created: row.try_get("created")?,
        started: row.try_get("started")?,
        finished: row.try_get("finished")?,
    })
}

pub(super) fn environment_from(row: &SqliteRow) -> Result<EnvironmentState> {
    Ok(EnvironmentState {
        service: row.try_get("service")?,
        environment: row.try_get("environment")?,
        repo_id: row.try_get("repo_id")?,
        stable: row.try_get("stable_deployment")?,
        previous: row.try_get("previous_deployment")?,
        listen: row.try_get("listen")?,
    })
}

pub(super) fn event_from(row: &SqliteRow) -> Result<Event> {
    let payload: String = row.try_get("payload")?;
    Ok(Event {
        seq: row.try_get("seq")?,
        time: row.try_get("time")?,
        kind: row.try_get("kind")?,
        subject: row.try_get("subject")?,
        actor: row.try_get("actor")?,
        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// What every deployment event says about its deployment.
pub(super) fn deployment_payload(d: &Deployment, detail: serde_json::Value) -> serde_json::Value {
    let mut payload = serde_json::json!({
        "service": d.service,
        "environment": d.environment,
        "sha": d.sha,
        "release": d.release,
        "kind": d.kind,
        "run_id": d.run_id,
        "status": d.status.as_str(),
        "step": d.step,
        "weight": d.weight,
        "reason": d.reason,
    });
    if let (Some(map), serde_json::Value::Object(extra)) = (payload.as_object_mut(), detail) {
        map.extend(extra);
    }
    payload
}

pub(super) async fn deployment_in(tx: &mut SqliteConnection, id: i64) -> Result<Deployment> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = $1")))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    row.as_ref().map(deployment_from).transpose()?.ok_or_else(|| StoreError::NotFound(format!("deployment {id}")))
}

pub(super) async fn insert_run(tx: &mut SqliteConnection, run: &NewRun, actor: &str) -> Result<i64> {
    let (number,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(number), 0) + 1 FROM runs WHERE repo_id = $1")
        .bind(run.repo_id)
        .fetch_one(&mut *tx)
        .await?;
    let jobs = run.jobs.as_ref().map(|j| serde_json::to_string(j).unwrap_or_default());
    let run_attempt = match run.rerun_of {
        Some(parent) => {
            let row: Option<(i64,)> = sqlx::query_as("SELECT run_attempt FROM runs WHERE id = $1")
                .bind(parent)
                .fetch_optional(&mut *tx)
                .await?;
            row.ok_or_else(|| StoreError::NotFound(format!("run {parent}")))?.0 + 1
        }
        None => 1,
    };
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO runs (repo_id, number, workflow, event, git_ref, sha, before_sha, change_request, status, jobs, payload, attempt, cancel_requested, created, rerun_of, run_attempt) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9, $10, 1, 0, $11, $12, $13) RETURNING id",
    )
    .bind(run.repo_id)
    .bind(number)
    .bind(&run.workflow)
    .bind(&run.event)
    .bind(&run.git_ref)
    .bind(&run.sha)
    .bind(&run.before_sha)
    .bind(run.change_request)
    .bind(jobs)
    .bind(run.payload.to_string())
    .bind(now())
    .bind(run.rerun_of)
    .bind(run_attempt)
    .fetch_one(&mut *tx)
    .await?;
    let payload = serde_json::json!({"repo_id": run.repo_id, "number": number, "workflow": run.workflow, "event": run.event, "ref": run.git_ref, "sha": run.sha, "jobs": run.jobs, "rerun_of": run.rerun_of, "run_attempt": run_attempt});
    append_event(tx, "run.queued", &format!("run/{id}"), actor, payload).await?;
    Ok(id)
}

pub(super) fn compress(lines: &[LogLine]) -> Result<Vec<u8>> {
    let mut text = String::new();
    for line in lines {
        text.push_str(&serde_json::to_string(line).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        text.push('\n');
    }
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(text.as_bytes()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    encoder.finish().map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn decompress(data: &[u8]) -> Result<Vec<LogLine>> {
    let mut text = String::new();
    flate2::read::DeflateDecoder::new(data)
        .read_to_string(&mut text)
        .map_err(|e| StoreError::Corrupt(format!("log chunk: {e}")))?;
    text.lines().map(|l| serde_json::from_str(l).map_err(|e| StoreError::Corrupt(format!("log line: {e}")))).collect()
}
