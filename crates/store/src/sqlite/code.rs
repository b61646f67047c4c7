//! Change requests in SQLite: changes numbered per repository, their revisions, approvals and
//! comments; every change of state is an event.

use super::*;
use crate::{ChangeRow, Code, NewRevision, Repo, ReviewRow, RevisionRow};

async fn change_by_id(tx: &mut SqliteConnection, id: i64) -> Result<ChangeRow> {
    sqlx::query_as("SELECT id, repo_id, number, target, change_key, title, author, status, reason, created, updated FROM changes WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("change {id}")))
}

impl Code for SqliteStore {
    fn push_revision<'a>(
        &'a self,
        revision: NewRevision<'a>,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<(ChangeRow, i64)>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            let now = now();
            let open: Option<(i64,)> = sqlx::query_as(
                "SELECT id FROM changes WHERE repo_id = $1 AND change_key = $2 AND status IN ('open', 'queued') \
                 ORDER BY id DESC LIMIT 1",
            )
            .bind(revision.repo_id)
            .bind(revision.change_key)
            .fetch_optional(&mut *tx)
            .await?;
            let (id, kind) = match open {
                Some((id,)) => {
                    sqlx::query(
                        "UPDATE changes SET title = $1, updated = $2, status = 'open', reason = NULL WHERE id = $3",
                    )
                    .bind(revision.title)
                    .bind(&now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    (id, "change.revised")
                }
                None => {
                    let (next,): (i64,) =
                        sqlx::query_as("SELECT COALESCE(MAX(number), 0) + 1 FROM changes WHERE repo_id = $1")
                            .bind(revision.repo_id)
                            .fetch_one(&mut *tx)
                            .await?;
                    let number = revision.number.unwrap_or(next);
                    let (id,): (i64,) = sqlx::query_as(
                        "INSERT INTO changes (repo_id, number, target, change_key, title, author, status, created, updated) \
                         VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $7) RETURNING id",
                    )
                    .bind(revision.repo_id)
                    .bind(number)
                    .bind(revision.target)
                    .bind(revision.change_key)
                    .bind(revision.title)
                    .bind(actor)
                    .bind(&now)
                    .fetch_one(&mut *tx)
                    .await?;
                    (id, "change.opened")
                }
            };
            let (number,): (i64,) =
                sqlx::query_as("SELECT COALESCE(MAX(number), 0) + 1 FROM revisions WHERE change_id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
            sqlx::query(
                "INSERT INTO revisions (change_id, number, sha, base, pushed_by, created) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(number)
            .bind(revision.sha)
            .bind(revision.base)
            .bind(actor)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            let change = change_by_id(&mut tx, id).await?;
            let payload = serde_json::json!({
                "repo_id": change.repo_id, "number": change.number, "revision": number, "sha": revision.sha,
                "target": change.target, "title": change.title,
            });
            append_event(&mut tx, kind, &format!("change/{id}"), actor, payload).await?;
            tx.commit().await?;
            Ok((change, number))
        })
    }

    fn changes<'a>(&'a self, repo_id: i64, status: Option<&'a str>) -> BoxFuture<'a, Result<Vec<ChangeRow>>> {
        Box::pin(async move {
            Ok(sqlx::query_as(
                "SELECT id, repo_id, number, target, change_key, title, author, status, reason, created, updated FROM changes \
                 WHERE repo_id = $1 AND ($2 IS NULL OR status = $2) ORDER BY number DESC",
            )
            .bind(repo_id)
            .bind(status)
            .fetch_all(&self.reader)
            .await?)
        })
    }

    fn change<'a>(&'a self, repo_id: i64, number: i64) -> BoxFuture<'a, Result<ChangeRow>> {
        Box::pin(async move {
            sqlx::query_as(
                "SELECT id, repo_id, number, target, change_key, title, author, status, reason, created, updated FROM changes WHERE repo_id = $1 AND number = $2",
            )
                .bind(repo_id)
                .bind(number)
                .fetch_optional(&self.reader)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("change {number}")))
        })
    }

    fn revisions<'a>(&'a self, change_id: i64) -> BoxFuture<'a, Result<Vec<RevisionRow>>> {
        Box::pin(async move {
            Ok(sqlx::query_as(
                "SELECT change_id, number, sha, base, pushed_by, created FROM revisions WHERE change_id = $1 ORDER BY number",
            )
            .bind(change_id)
            .fetch_all(&self.reader)
            .await?)
        })
    }

    fn reviews<'a>(&'a self, change_id: i64) -> BoxFuture<'a, Result<Vec<ReviewRow>>> {
        Box::pin(async move {
            Ok(sqlx::query_as(
                "SELECT id, change_id, revision, kind, author, path, line, body, resolved, created FROM reviews \
                 WHERE change_id = $1 ORDER BY id",
            )
            .bind(change_id)
            .fetch_all(&self.reader)
            .await?)
        })
    }

    fn add_review<'a>(&'a self, review: ReviewRow, actor: &'a str) -> BoxFuture<'a, Result<ReviewRow>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            let now = now();
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO reviews (change_id, revision, kind, author, path, line, body, resolved, created) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8) RETURNING id",
            )
            .bind(review.change_id)
            .bind(review.revision)
            .bind(&review.kind)
            .bind(&review.author)
            .bind(&review.path)
            .bind(review.line)
            .bind(&review.body)
            .bind(&now)
            .fetch_one(&mut *tx)
            .await?;
            let kind = match review.kind.as_str() {
                "approval" => "change.approved",
                "dismissal" => "change.approval_dismissed",
                _ => "change.commented",
            };
            let payload = serde_json::json!({
                "revision": review.revision, "path": review.path, "line": review.line, "review": id,
            });
            append_event(&mut tx, kind, &format!("change/{}", review.change_id), actor, payload).await?;
            tx.commit().await?;
            Ok(ReviewRow { id, created: now, resolved: false, ..review })
        })
    }

    fn resolve_comment<'a>(&'a self, change_id: i64, review_id: i64, actor: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            let updated =
                sqlx::query("UPDATE reviews SET resolved = 1 WHERE id = $1 AND change_id = $2 AND kind = 'comment'")
                    .bind(review_id)
                    .bind(change_id)
                    .execute(&mut *tx)
                    .await?;
            if updated.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("comment {review_id}")));
            }
            let payload = serde_json::json!({"review": review_id});
            append_event(&mut tx, "change.comment_resolved", &format!("change/{change_id}"), actor, payload).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn set_change_status<'a>(
        &'a self,
        change_id: i64,
        status: &'a str,
        reason: Option<&'a str>,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<ChangeRow>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            sqlx::query("UPDATE changes SET status = $1, reason = $2, updated = $3 WHERE id = $4")
                .bind(status)
                .bind(reason)
                .bind(now())
                .bind(change_id)
                .execute(&mut *tx)
                .await?;
            let change = change_by_id(&mut tx, change_id).await?;
            let payload = serde_json::json!({"number": change.number, "repo_id": change.repo_id, "reason": reason});
            append_event(&mut tx, &format!("change.{status}"), &format!("change/{change_id}"), actor, payload).await?;
            tx.commit().await?;
            Ok(change)
        })
    }

    fn set_archived<'a>(&'a self, repo_id: i64, archived: bool, actor: &'a str) -> BoxFuture<'a, Result<Repo>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            let when = archived.then(now);
            let updated = sqlx::query("UPDATE repos SET archived = $1 WHERE id = $2")
                .bind(&when)
                .bind(repo_id)
                .execute(&mut *tx)
                .await?;
            if updated.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("repository {repo_id}")));
            }
            let kind = if archived { "repo.archived" } else { "repo.unarchived" };
            append_event(&mut tx, kind, &format!("repo/{repo_id}"), actor, serde_json::json!({})).await?;
            let row = sqlx::query("SELECT * FROM repos WHERE id = $1").bind(repo_id).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            decode::<Repo>(&row)
        })
    }
}
