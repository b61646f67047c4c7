//! Access in SQLite: tokens with their owner, scopes, expiry and last use; roles granted to users
//! and teams per scope; team membership. Every change is an event.

use super::*;
use crate::{Access, Grant, NewToken, TokenRow};

impl Access for SqliteStore {
    fn create_token<'a>(&'a self, token: NewToken<'a>, actor: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            sqlx::query(
                "INSERT INTO tokens (name, hash, created, owner, scopes, expires) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(token.name)
            .bind(token.hash)
            .bind(now())
            .bind(token.owner)
            .bind(token.scopes.join(","))
            .bind(token.expires)
            .execute(&mut *tx)
            .await?;
            let payload = serde_json::json!({
                "name": token.name, "owner": token.owner, "scopes": token.scopes, "expires": token.expires,
            });
            append_event(&mut tx, "token.created", &format!("token/{}", token.name), actor, payload).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn token<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<Option<TokenRow>>> {
        Box::pin(async move {
            Ok(sqlx::query_as("SELECT name, owner, scopes, expires, last_used, created FROM tokens WHERE hash = $1")
                .bind(hash)
                .fetch_optional(&self.reader)
                .await?)
        })
    }

    fn touch_token<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // At most once a minute: a busy client does not turn every read into a write.
            let now = now();
            let minute_ago = crate::time::rfc3339(jiff::Timestamp::now().as_millisecond() - 60_000);
            sqlx::query("UPDATE tokens SET last_used = $1 WHERE hash = $2 AND (last_used IS NULL OR last_used < $3)")
                .bind(&now)
                .bind(hash)
                .bind(minute_ago)
                .execute(&self.writer)
                .await?;
            Ok(())
        })
    }

    fn tokens<'a>(&'a self) -> BoxFuture<'a, Result<Vec<TokenRow>>> {
        Box::pin(async move {
            Ok(sqlx::query_as(
                "SELECT name, owner, scopes, expires, last_used, created FROM tokens ORDER BY name, created",
            )
            .fetch_all(&self.reader)
            .await?)
        })
    }

    fn revoke_token<'a>(&'a self, name: &'a str, actor: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            let deleted = sqlx::query("DELETE FROM tokens WHERE name = $1").bind(name).execute(&mut *tx).await?;
            if deleted.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("token `{name}`")));
            }
            let payload = serde_json::json!({"name": name, "count": deleted.rows_affected()});
            append_event(&mut tx, "token.revoked", &format!("token/{name}"), actor, payload).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn grant<'a>(
        &'a self,
        subject: &'a str,
        role: &'a str,
        scope: &'a str,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            sqlx::query(
                "INSERT INTO grants (subject, role, scope, created) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (subject, scope) DO UPDATE SET role = excluded.role",
            )
            .bind(subject)
            .bind(role)
            .bind(scope)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            let payload = serde_json::json!({"subject": subject, "role": role, "scope": scope});
            append_event(&mut tx, "access.granted", &format!("access/{subject}"), actor, payload).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn revoke<'a>(&'a self, subject: &'a str, scope: &'a str, actor: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            let deleted = sqlx::query("DELETE FROM grants WHERE subject = $1 AND scope = $2")
                .bind(subject)
                .bind(scope)
                .execute(&mut *tx)
                .await?;
            if deleted.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("a grant to `{subject}` on `{scope}`")));
            }
            let payload = serde_json::json!({"subject": subject, "scope": scope});
            append_event(&mut tx, "access.revoked", &format!("access/{subject}"), actor, payload).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn grants<'a>(&'a self) -> BoxFuture<'a, Result<Vec<Grant>>> {
        Box::pin(async move {
            Ok(sqlx::query_as("SELECT subject, role, scope, created FROM grants ORDER BY subject, scope")
                .fetch_all(&self.reader)
                .await?)
        })
    }

    fn add_member<'a>(&'a self, team: &'a str, member: &'a str, actor: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            sqlx::query(
                "INSERT INTO team_members (team, member, created) VALUES ($1, $2, $3) ON CONFLICT (team, member) DO NOTHING",
            )
            .bind(team)
            .bind(member)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            let payload = serde_json::json!({"team": team, "member": member});
            append_event(&mut tx, "team.member_added", &format!("team/{team}"), actor, payload).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn remove_member<'a>(&'a self, team: &'a str, member: &'a str, actor: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut tx = self.writer.begin().await?;
            let deleted = sqlx::query("DELETE FROM team_members WHERE team = $1 AND member = $2")
                .bind(team)
                .bind(member)
                .execute(&mut *tx)
                .await?;
            if deleted.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("`{member}` in team `{team}`")));
            }
            let payload = serde_json::json!({"team": team, "member": member});
            append_event(&mut tx, "team.member_removed", &format!("team/{team}"), actor, payload).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn members<'a>(&'a self) -> BoxFuture<'a, Result<Vec<(String, String)>>> {
        Box::pin(async move {
            Ok(sqlx::query_as("SELECT team, member FROM team_members ORDER BY team, member")
                .fetch_all(&self.reader)
                .await?)
        })
    }

    fn set_webhook_secret<'a>(&'a self, repo_id: i64, value: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.set_repo_column("UPDATE repos SET webhook_secret = $1 WHERE id = $2", repo_id, value))
    }

    fn set_repo_source<'a>(&'a self, repo_id: i64, source: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.set_repo_column("UPDATE repos SET source = $1 WHERE id = $2", repo_id, source))
    }
}

impl SqliteStore {
    /// Runs `sql` (an `UPDATE repos SET … = $1 WHERE id = $2`) for one repository.
    async fn set_repo_column(&self, sql: &'static str, repo_id: i64, value: &str) -> Result<()> {
        let updated = sqlx::query(sql).bind(value).bind(repo_id).execute(&self.writer).await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("repository {repo_id}")));
        }
        Ok(())
    }
}
