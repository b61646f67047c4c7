//! Rows to domain types and back: decoding through `sqlx::FromRow`, run insertion, log chunk compression.

#[allow(unused_imports)]
use super::*;

/// A row as its domain type (each derives `sqlx::FromRow`); a row that does not decode is the
/// store's error, naming the column.
pub(super) fn decode<T: for<'r> sqlx::FromRow<'r, SqliteRow>>(row: &SqliteRow) -> Result<T> {
    T::from_row(row).map_err(StoreError::from)
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
    row.as_ref().map(decode::<Deployment>).transpose()?.ok_or_else(|| StoreError::NotFound(format!("deployment {id}")))
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

/// Appends an event to the hash chain, inside the transaction that makes the change it explains.
pub(super) async fn append_event(
    tx: &mut SqliteConnection,
    kind: &str,
    subject: &str,
    actor: &str,
    payload: serde_json::Value,
) -> Result<()> {
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetch_optional(&mut *tx).await?;
    let (prev_seq, prev_hash) = last.unwrap_or((0, GENESIS_HASH.to_string()));
    let seq = prev_seq + 1;
    let time = now();
    let payload = crate::with_source(payload).to_string();
    let hash = event_hash(&prev_hash, seq, &time, kind, subject, actor, &payload);
    sqlx::query("INSERT INTO events (seq, time, kind, subject, actor, payload, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(seq)
        .bind(&time)
        .bind(kind)
        .bind(subject)
        .bind(actor)
        .bind(&payload)
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
