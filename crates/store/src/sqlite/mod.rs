//! The SQLite adapter: one file in the data directory, WAL journal, full fsync on commit.
//!
//! Writes go through a single-connection pool, so transactions (and the event chain) are
//! serialised; reads use a pool of their own. The SQL is kept to what PostgreSQL also accepts.

use std::io::{Read, Write};
use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};

use crate::time::now;
use crate::{
    BoxFuture, ChainReport, Delivery, Deployment, DeploymentFilter, DeploymentStatus, EnvironmentState, Event,
    GENESIS_HASH, LogChunk, LogLine, NewDeployment, NewEvent, NewRun, Repo, Result, Run, RunFilter, RunStatus,
    SecretRow, Store, StoreError, Transition, event_hash,
};

mod access;
mod code;
mod people;
mod rows;
#[allow(unused_imports)]
use rows::*;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

const DEPLOYMENT_COLUMNS: &str = "id, repo_id, service, environment, sha, release, run_id, kind, status, step, weight, reason, approved_by, abort_requested, spec, created, started, finished";

const RUN_COLUMNS: &str = "id, repo_id, number, workflow, event, git_ref, sha, before_sha, change_request, status, reason, jobs, payload, attempt, run_attempt, rerun_of, cancel_requested, report, created, started, finished";

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let url = format!("sqlite://{}", path.display());
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new().max_connections(4).connect_with(options.read_only(true)).await?;
        Ok(SqliteStore { writer, reader })
    }
}

impl Store for SqliteStore {
    fn add_repo<'a>(
        &'a self,
        name: &'a str,
        source: &'a str,
        webhook_secret: &'a str,
        poll_seconds: Option<i64>,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<Repo>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            let exists: Option<(i64,)> =
                sqlx::query_as("SELECT id FROM repos WHERE name = $1").bind(name).fetch_optional(&mut *tx).await?;
            if exists.is_some() {
                return Err(StoreError::Conflict(format!("a repository named `{name}` exists already")));
            }
            let row = sqlx::query("INSERT INTO repos (name, source, webhook_secret, poll_seconds, created) VALUES ($1, $2, $3, $4, $5) RETURNING *")
                .bind(name)
                .bind(source)
                .bind(webhook_secret)
                .bind(poll_seconds)
                .bind(now())
                .fetch_one(&mut *tx)
                .await?;
            let repo = decode::<Repo>(&row)?;
            append_event(
                &mut tx,
                "repo.added",
                &format!("repo/{}", repo.id),
                actor,
                serde_json::json!({"name": name, "source": git::redact_credentials(source), "poll_seconds": poll_seconds}),
            )
            .await?;
            tx.commit().await?;
            Ok(repo)
        })
    }

    fn set_forge<'a>(
        &'a self,
        repo_id: i64,
        forge: &'a str,
        api_url: &'a str,
        status_token: &'a str,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<Repo>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            let row =
                sqlx::query("UPDATE repos SET forge = $1, api_url = $2, status_token = $3 WHERE id = $4 RETURNING *")
                    .bind(forge)
                    .bind(api_url)
                    .bind(status_token)
                    .bind(repo_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("repository {repo_id}")))?;
            let repo = decode::<Repo>(&row)?;
            append_event(
                &mut tx,
                "repo.forge_set",
                &format!("repo/{repo_id}"),
                actor,
                serde_json::json!({"forge": forge, "api_url": api_url}),
            )
            .await?;
            tx.commit().await?;
            Ok(repo)
        })
    }

    fn record_event<'a>(
        &'a self,
        kind: &'a str,
        subject: &'a str,
        actor: &'a str,
        payload: serde_json::Value,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            append_event(&mut tx, kind, subject, actor, payload).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn record_events<'a>(&'a self, events: Vec<NewEvent>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            for event in events {
                append_event(&mut tx, &event.kind, &event.subject, &event.actor, event.payload).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn repos<'a>(&'a self) -> BoxFuture<'a, Result<Vec<Repo>>> {
        Box::pin(async move {
            sqlx::query("SELECT * FROM repos ORDER BY name")
                .fetch_all(&self.reader)
                .await?
                .iter()
                .map(decode::<Repo>)
                .collect()
        })
    }

    fn repo<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Repo>> {
        Box::pin(async move {
            let row =
                sqlx::query("SELECT * FROM repos WHERE name = $1").bind(name).fetch_optional(&self.reader).await?;
            row.as_ref()
                .map(decode::<Repo>)
                .transpose()?
                .ok_or_else(|| StoreError::NotFound(format!("repository `{name}`")))
        })
    }

    fn repo_by_id<'a>(&'a self, id: i64) -> BoxFuture<'a, Result<Repo>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT * FROM repos WHERE id = $1").bind(id).fetch_optional(&self.reader).await?;
            row.as_ref()
                .map(decode::<Repo>)
                .transpose()?
                .ok_or_else(|| StoreError::NotFound(format!("repository {id}")))
        })
    }

    fn record_delivery<'a>(
        &'a self,
        forge: &'a str,
        delivery_id: &'a str,
        repo_id: i64,
        event: &'a str,
        runs: Vec<NewRun>,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<Delivery>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            let seen: Option<(i64,)> =
                sqlx::query_as("SELECT n_runs FROM deliveries WHERE forge = $1 AND delivery_id = $2")
                    .bind(forge)
                    .bind(delivery_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if seen.is_some() {
                return Ok(Delivery::Duplicate);
            }
            sqlx::query("INSERT INTO deliveries (forge, delivery_id, repo_id, event, received, n_runs) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(forge)
                .bind(delivery_id)
                .bind(repo_id)
                .bind(event)
                .bind(now())
                .bind(runs.len() as i64)
                .execute(&mut *tx)
                .await?;
            append_event(
                &mut tx,
                "webhook.received",
                &format!("repo/{repo_id}"),
                actor,
                serde_json::json!({"forge": forge, "delivery": delivery_id, "event": event, "n_runs": runs.len()}),
            )
            .await?;
            let mut ids = Vec::new();
            for run in &runs {
                ids.push(insert_run(&mut tx, run, actor).await?);
            }
            tx.commit().await?;
            Ok(Delivery::Stored(ids))
        })
    }

    fn enqueue<'a>(&'a self, run: NewRun, actor: &'a str) -> BoxFuture<'a, Result<Run>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            let id = insert_run(&mut tx, &run, actor).await?;
            tx.commit().await?;
            self.run_on_writer(id).await
        })
    }

    fn claim_next<'a>(&'a self) -> BoxFuture<'a, Result<Option<Run>>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            let next: Option<(i64,)> =
                sqlx::query_as("SELECT id FROM runs WHERE status = 'queued' ORDER BY id LIMIT 1")
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some((id,)) = next else { return Ok(None) };
            sqlx::query("UPDATE runs SET status = 'running', started = $1 WHERE id = $2")
                .bind(now())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            append_event(&mut tx, "run.started", &format!("run/{id}"), "tandem", serde_json::json!({})).await?;
            tx.commit().await?;
            self.run_on_writer(id).await.map(Some)
        })
    }

    fn finish<'a>(
        &'a self,
        run_id: i64,
        status: RunStatus,
        reason: Option<String>,
        report: Option<serde_json::Value>,
    ) -> BoxFuture<'a, Result<Run>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            let updated =
                sqlx::query("UPDATE runs SET status = $1, reason = $2, report = $3, finished = $4 WHERE id = $5")
                    .bind(status.as_str())
                    .bind(&reason)
                    .bind(report.as_ref().map(|r| r.to_string()))
                    .bind(now())
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await?;
            if updated.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("run {run_id}")));
            }
            append_event(
                &mut tx,
                &format!("run.{}", status.as_str()),
                &format!("run/{run_id}"),
                "tandem",
                serde_json::json!({"reason": reason}),
            )
            .await?;
            tx.commit().await?;
            self.run_on_writer(run_id).await
        })
    }

    fn request_cancel<'a>(&'a self, run_id: i64, actor: &'a str) -> BoxFuture<'a, Result<Run>> {
        Box::pin(async move {
            let run = self.run_on_writer(run_id).await?;
            if run.status.is_finished() {
                return Err(StoreError::Conflict(format!(
                    "run {run_id} has already finished ({})",
                    run.status.as_str()
                )));
            }
            let mut tx = self.writer.begin().await?;
            if run.status == RunStatus::Queued {
                sqlx::query("UPDATE runs SET status = 'cancelled', cancel_requested = 1, reason = 'cancelled before it started', finished = $1 WHERE id = $2").bind(now()).bind(run_id).execute(&mut *tx).await?;
                append_event(
                    &mut tx,
                    "run.cancelled",
                    &format!("run/{run_id}"),
                    actor,
                    serde_json::json!({"reason": "cancelled before it started"}),
                )
                .await?;
            } else {
                sqlx::query("UPDATE runs SET cancel_requested = 1 WHERE id = $1")
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await?;
                append_event(&mut tx, "run.cancel_requested", &format!("run/{run_id}"), actor, serde_json::json!({}))
                    .await?;
            }
            tx.commit().await?;
            self.run_on_writer(run_id).await
        })
    }

    fn recover_interrupted<'a>(&'a self, max_attempts: i64) -> BoxFuture<'a, Result<Vec<Run>>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            let stuck: Vec<(i64, i64, i64)> =
                sqlx::query_as("SELECT id, attempt, cancel_requested FROM runs WHERE status = 'running' ORDER BY id")
                    .fetch_all(&mut *tx)
                    .await?;
            for &(id, attempt, cancel_requested) in &stuck {
                let subject = format!("run/{id}");
                if cancel_requested != 0 {
                    let reason = "cancelled; the server stopped while the run was being cancelled";
                    sqlx::query("UPDATE runs SET status = 'cancelled', reason = $1, finished = $2 WHERE id = $3")
                        .bind(reason)
                        .bind(now())
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    append_event(&mut tx, "run.cancelled", &subject, "tandem", serde_json::json!({"reason": reason}))
                        .await?;
                } else if attempt < max_attempts {
                    sqlx::query(
                        "UPDATE runs SET status = 'queued', attempt = attempt + 1, started = NULL WHERE id = $1",
                    )
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    append_event(
                        &mut tx,
                        "run.requeued",
                        &subject,
                        "tandem",
                        serde_json::json!({"reason": "the server stopped during the run", "attempt": attempt + 1}),
                    )
                    .await?;
                } else {
                    let reason = format!("the server stopped during the run {attempt} time(s); not retried again");
                    sqlx::query("UPDATE runs SET status = 'failure', reason = $1, finished = $2 WHERE id = $3")
                        .bind(&reason)
                        .bind(now())
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    append_event(&mut tx, "run.failure", &subject, "tandem", serde_json::json!({"reason": reason}))
                        .await?;
                }
            }
            tx.commit().await?;
            let mut out = Vec::new();
            for (id, ..) in stuck {
                out.push(self.run_on_writer(id).await?);
            }
            Ok(out)
        })
    }

    fn run<'a>(&'a self, run_id: i64) -> BoxFuture<'a, Result<Run>> {
        Box::pin(async move {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1")))
                .bind(run_id)
                .fetch_optional(&self.reader)
                .await?;
            row.as_ref().map(decode::<Run>).transpose()?.ok_or_else(|| StoreError::NotFound(format!("run {run_id}")))
        })
    }

    fn runs<'a>(&'a self, filter: RunFilter) -> BoxFuture<'a, Result<Vec<Run>>> {
        Box::pin(async move {
            let limit = if filter.limit <= 0 { 50 } else { filter.limit.min(10_000) };
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE ($1 IS NULL OR repo_id = $1) AND ($2 IS NULL OR git_ref = $2) AND ($3 IS NULL OR status = $3) AND ($5 IS NULL OR id < $5) ORDER BY id DESC LIMIT $4"
            )))
            .bind(filter.repo_id)
            .bind(filter.git_ref)
            .bind(filter.status.map(RunStatus::as_str))
            .bind(limit)
            .bind(filter.before)
            .fetch_all(&self.reader)
            .await?;
            rows.iter().map(decode::<Run>).collect()
        })
    }

    fn queue_depth<'a>(&'a self) -> BoxFuture<'a, Result<i64>> {
        Box::pin(async move {
            let (n,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM runs WHERE status = 'queued'").fetch_one(&self.reader).await?;
            Ok(n)
        })
    }

    fn append_log<'a>(&'a self, run_id: i64, lines: &'a [LogLine]) -> BoxFuture<'a, Result<i64>> {
        Box::pin(async move {
            let data = compress(lines)?;
            let mut tx = self.writer.begin().await?;
            let (seq,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(seq), 0) + 1 FROM log_chunks WHERE run_id = $1")
                .bind(run_id)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO log_chunks (run_id, seq, n_lines, data) VALUES ($1, $2, $3, $4)")
                .bind(run_id)
                .bind(seq)
                .bind(lines.len() as i64)
                .bind(data)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(seq)
        })
    }

    fn log<'a>(&'a self, run_id: i64, after_seq: i64, max_chunks: i64) -> BoxFuture<'a, Result<Vec<LogChunk>>> {
        Box::pin(async move {
            let rows: Vec<(i64, Vec<u8>)> =
                sqlx::query_as("SELECT seq, data FROM log_chunks WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3")
                    .bind(run_id)
                    .bind(after_seq)
                    .bind(max_chunks.max(1))
                    .fetch_all(&self.reader)
                    .await?;
            rows.into_iter().map(|(seq, data)| Ok((seq, decompress(&data)?))).collect()
        })
    }

    fn add_token<'a>(&'a self, name: &'a str, hash: &'a str, actor: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(people::add_token(self, name, hash, actor))
    }

    fn token_name<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(people::token_name(self, hash))
    }

    fn n_tokens<'a>(&'a self) -> BoxFuture<'a, Result<i64>> {
        Box::pin(people::n_tokens(self))
    }

    fn add_user<'a>(&'a self, name: &'a str, password_hash: &'a str, actor: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(people::add_user(self, name, password_hash, actor))
    }

    fn user_password<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(people::user_password(self, name))
    }

    fn n_users<'a>(&'a self) -> BoxFuture<'a, Result<i64>> {
        Box::pin(people::n_users(self))
    }

    fn set_secret<'a>(
        &'a self,
        kind: &'a str,
        scope: &'a str,
        name: &'a str,
        value: &'a [u8],
        actor: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(people::set_secret(self, kind, scope, name, value, actor))
    }

    fn delete_secret<'a>(
        &'a self,
        kind: &'a str,
        scope: &'a str,
        name: &'a str,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(people::delete_secret(self, kind, scope, name, actor))
    }

    fn secrets<'a>(&'a self, kind: &'a str, scopes: &'a [String]) -> BoxFuture<'a, Result<Vec<SecretRow>>> {
        Box::pin(people::secrets(self, kind, scopes))
    }

    fn all_secrets<'a>(&'a self) -> BoxFuture<'a, Result<Vec<SecretRow>>> {
        Box::pin(async move {
            Ok(sqlx::query_as(
                "SELECT scope, name, value, updated FROM secrets WHERE kind = 'secret' ORDER BY scope, name",
            )
            .fetch_all(&self.writer)
            .await?)
        })
    }

    fn reseal_secrets<'a>(&'a self, rows: &'a [SecretRow], actor: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(people::reseal_secrets(self, rows, actor))
    }

    fn set_user_password<'a>(
        &'a self,
        name: &'a str,
        password_hash: &'a str,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(people::set_user_password(self, name, password_hash, actor))
    }

    fn refs<'a>(&'a self, repo_id: i64) -> BoxFuture<'a, Result<Vec<(String, String)>>> {
        Box::pin(async move {
            Ok(sqlx::query_as("SELECT name, sha FROM refs WHERE repo_id = $1 ORDER BY name")
                .bind(repo_id)
                .fetch_all(&self.reader)
                .await?)
        })
    }

    fn set_ref<'a>(&'a self, repo_id: i64, name: &'a str, sha: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            sqlx::query("INSERT INTO refs (repo_id, name, sha) VALUES ($1, $2, $3) ON CONFLICT (repo_id, name) DO UPDATE SET sha = excluded.sha").bind(repo_id).bind(name).bind(sha).execute(&self.writer).await?;
            Ok(())
        })
    }

    fn last_event<'a>(&'a self) -> BoxFuture<'a, Result<Option<Event>>> {
        Box::pin(async move {
            let row =
                sqlx::query("SELECT * FROM events ORDER BY seq DESC LIMIT 1").fetch_optional(&self.reader).await?;
            row.map(|r| decode::<Event>(&r)).transpose()
        })
    }

    fn events<'a>(&'a self, after_seq: i64, limit: i64) -> BoxFuture<'a, Result<Vec<Event>>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT seq, time, kind, subject, actor, payload, prev_hash, hash FROM events WHERE seq > $1 ORDER BY seq LIMIT $2").bind(after_seq).bind(limit.clamp(1, 10_000)).fetch_all(&self.reader).await?;
            rows.iter().map(decode::<Event>).collect()
        })
    }

    fn events_about<'a>(&'a self, subject: &'a str) -> BoxFuture<'a, Result<Vec<Event>>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT seq, time, kind, subject, actor, payload, prev_hash, hash FROM events WHERE subject = $1 ORDER BY seq").bind(subject).fetch_all(&self.reader).await?;
            rows.iter().map(decode::<Event>).collect()
        })
    }

    fn request_deployment<'a>(&'a self, new: NewDeployment, actor: &'a str) -> BoxFuture<'a, Result<Deployment>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO deployments (repo_id, service, environment, sha, release, run_id, kind, status, step, weight, abort_requested, spec, created) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, 0, 0, $8, $9) RETURNING id",
            )
            .bind(new.repo_id)
            .bind(&new.service)
            .bind(&new.environment)
            .bind(&new.sha)
            .bind(&new.release)
            .bind(new.run_id)
            .bind(new.kind.as_str())
            .bind(&new.spec)
            .bind(now())
            .fetch_one(&mut *tx)
            .await?;
            let deployment = deployment_in(&mut tx, id).await?;
            let payload = deployment_payload(&deployment, serde_json::json!({}));
            append_event(&mut tx, "deployment.requested", &format!("deployment/{id}"), actor, payload).await?;
            tx.commit().await?;
            Ok(deployment)
        })
    }

    fn deployment<'a>(&'a self, id: i64) -> BoxFuture<'a, Result<Deployment>> {
        Box::pin(async move {
            let mut conn = self.writer.acquire().await?;
            deployment_in(&mut conn, id).await
        })
    }

    fn deployments<'a>(&'a self, filter: DeploymentFilter) -> BoxFuture<'a, Result<Vec<Deployment>>> {
        Box::pin(async move {
            let active = if filter.active_only {
                " AND status IN ('pending', 'gated', 'awaiting_approval', 'running')"
            } else {
                ""
            };
            let sql = format!(
                "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE ($1 IS NULL OR service = $1) AND ($2 IS NULL OR environment = $2){active} ORDER BY id DESC LIMIT $3"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&filter.service)
                .bind(&filter.environment)
                .bind(if filter.limit > 0 { filter.limit } else { 100 })
                .fetch_all(&self.writer)
                .await?;
            rows.iter().map(decode::<Deployment>).collect()
        })
    }

    fn transition_deployment<'a>(
        &'a self,
        id: i64,
        transition: Transition,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<Deployment>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            let before = deployment_in(&mut tx, id).await?;
            if before.status.is_finished() {
                return Err(StoreError::Conflict(format!(
                    "deployment {id} has already finished ({})",
                    before.status.as_str()
                )));
            }
            let time = now();
            let started = if transition.status == DeploymentStatus::Running {
                before.started.clone().or(Some(time.clone()))
            } else {
                before.started.clone()
            };
            let finished = transition.status.is_finished().then_some(time);
            sqlx::query("UPDATE deployments SET status = $1, step = $2, weight = $3, reason = $4, started = $5, finished = $6 WHERE id = $7")
                .bind(transition.status.as_str())
                .bind(transition.step)
                .bind(transition.weight)
                .bind(&transition.reason)
                .bind(&started)
                .bind(&finished)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            if transition.status == DeploymentStatus::Promoted {
                sqlx::query(
                    "UPDATE environments SET previous_deployment = CASE WHEN stable_deployment = $1 THEN previous_deployment ELSE stable_deployment END, stable_deployment = $1 \
                     WHERE service = $2 AND environment = $3",
                )
                .bind(id)
                .bind(&before.service)
                .bind(&before.environment)
                .execute(&mut *tx)
                .await?;
            }
            let after = deployment_in(&mut tx, id).await?;
            let payload = deployment_payload(&after, transition.detail);
            append_event(
                &mut tx,
                &format!("deployment.{}", transition.event),
                &format!("deployment/{id}"),
                actor,
                payload,
            )
            .await?;
            tx.commit().await?;
            Ok(after)
        })
    }

    fn deployment_counts<'a>(&'a self) -> BoxFuture<'a, Result<Vec<(DeploymentStatus, i64)>>> {
        Box::pin(async move {
            let rows: Vec<(String, i64)> =
                sqlx::query_as("SELECT status, COUNT(*) FROM deployments GROUP BY status ORDER BY status")
                    .fetch_all(&self.reader)
                    .await?;
            rows.into_iter()
                .map(|(status, n)| {
                    let parsed = DeploymentStatus::parse(&status)
                        .ok_or_else(|| StoreError::Corrupt(format!("deployment status `{status}`")))?;
                    Ok((parsed, n))
                })
                .collect()
        })
    }

    fn approve_deployment<'a>(&'a self, id: i64, actor: &'a str) -> BoxFuture<'a, Result<Deployment>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            let before = deployment_in(&mut tx, id).await?;
            if before.status.is_finished() || before.status == DeploymentStatus::Running {
                return Err(StoreError::Conflict(format!(
                    "deployment {id} is {}: there is nothing to approve",
                    before.status.as_str()
                )));
            }
            sqlx::query("UPDATE deployments SET approved_by = $1 WHERE id = $2")
                .bind(actor)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let after = deployment_in(&mut tx, id).await?;
            let payload = deployment_payload(&after, serde_json::json!({}));
            append_event(&mut tx, "deployment.approved", &format!("deployment/{id}"), actor, payload).await?;
            tx.commit().await?;
            Ok(after)
        })
    }

    fn abort_deployment<'a>(&'a self, id: i64, actor: &'a str) -> BoxFuture<'a, Result<Deployment>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            let before = deployment_in(&mut tx, id).await?;
            if before.status.is_finished() {
                return Err(StoreError::Conflict(format!(
                    "deployment {id} has already finished ({})",
                    before.status.as_str()
                )));
            }
            sqlx::query("UPDATE deployments SET abort_requested = 1 WHERE id = $1").bind(id).execute(&mut *tx).await?;
            let after = deployment_in(&mut tx, id).await?;
            let payload = deployment_payload(&after, serde_json::json!({}));
            append_event(&mut tx, "deployment.rollback_requested", &format!("deployment/{id}"), actor, payload).await?;
            tx.commit().await?;
            Ok(after)
        })
    }

    fn environment<'a>(
        &'a self,
        service: &'a str,
        environment: &'a str,
    ) -> BoxFuture<'a, Result<Option<EnvironmentState>>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT * FROM environments WHERE service = $1 AND environment = $2")
                .bind(service)
                .bind(environment)
                .fetch_optional(&self.writer)
                .await?;
            row.as_ref().map(decode::<EnvironmentState>).transpose()
        })
    }

    fn environments<'a>(&'a self) -> BoxFuture<'a, Result<Vec<EnvironmentState>>> {
        Box::pin(async move {
            let rows =
                sqlx::query("SELECT * FROM environments ORDER BY service, environment").fetch_all(&self.writer).await?;
            rows.iter().map(decode::<EnvironmentState>).collect()
        })
    }

    fn ensure_environment<'a>(
        &'a self,
        service: &'a str,
        environment: &'a str,
        repo_id: i64,
        listen: &'a str,
    ) -> BoxFuture<'a, Result<EnvironmentState>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            let inserted = sqlx::query("INSERT INTO environments (service, environment, repo_id, listen) VALUES ($1, $2, $3, $4) ON CONFLICT (service, environment) DO NOTHING")
                .bind(service)
                .bind(environment)
                .bind(repo_id)
                .bind(listen)
                .execute(&mut *tx)
                .await?;
            if inserted.rows_affected() > 0 {
                append_event(
                    &mut tx,
                    "environment.created",
                    &format!("environment/{service}/{environment}"),
                    "tandem",
                    serde_json::json!({"repo_id": repo_id, "listen": listen}),
                )
                .await?;
            }
            let row = sqlx::query("SELECT * FROM environments WHERE service = $1 AND environment = $2")
                .bind(service)
                .bind(environment)
                .fetch_one(&mut *tx)
                .await?;
            let state = decode::<EnvironmentState>(&row)?;
            tx.commit().await?;
            Ok(state)
        })
    }

    fn verify_chain<'a>(&'a self) -> BoxFuture<'a, Result<ChainReport>> {
        Box::pin(people::verify_chain(self))
    }
}

impl SqliteStore {
    /// Reads a run through the writer, so that it sees what was just committed.
    async fn run_on_writer(&self, run_id: i64) -> Result<Run> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1")))
            .bind(run_id)
            .fetch_optional(&self.writer)
            .await?;
        row.as_ref().map(decode::<Run>).transpose()?.ok_or_else(|| StoreError::NotFound(format!("run {run_id}")))
    }
}
