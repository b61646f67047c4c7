//! People, tokens and secrets in SQLite: API tokens (hashed), web users (password hashes),
//! secrets (sealed) and variables, with their events; and the event chain's verification.

use super::*;

pub(super) async fn add_token(store: &SqliteStore, name: &str, hash: &str, actor: &str) -> Result<()> {
    let mut tx = store.writer.begin().await?;
    sqlx::query("INSERT INTO tokens (name, hash, created) VALUES ($1, $2, $3)")
        .bind(name)
        .bind(hash)
        .bind(now())
        .execute(&mut *tx)
        .await?;
    append_event(&mut tx, "token.created", &format!("token/{name}"), actor, serde_json::json!({"name": name})).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn token_name(store: &SqliteStore, hash: &str) -> Result<Option<String>> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT name FROM tokens WHERE hash = $1").bind(hash).fetch_optional(&store.reader).await?;
    Ok(row.map(|(n,)| n))
}

pub(super) async fn n_tokens(store: &SqliteStore) -> Result<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tokens").fetch_one(&store.writer).await?;
    Ok(n)
}

pub(super) async fn add_user(store: &SqliteStore, name: &str, password_hash: &str, actor: &str) -> Result<()> {
    let mut tx = store.writer.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO users (name, password_hash, created) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(password_hash)
    .bind(now())
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(StoreError::Conflict(format!("a user named `{name}` exists already")));
    }
    append_event(&mut tx, "user.added", &format!("user/{name}"), actor, serde_json::json!({"name": name})).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn user_password(store: &SqliteStore, name: &str) -> Result<Option<String>> {
    let row: Option<(String,)> = sqlx::query_as("SELECT password_hash FROM users WHERE name = $1")
        .bind(name)
        .fetch_optional(&store.reader)
        .await?;
    Ok(row.map(|(h,)| h))
}

pub(super) async fn n_users(store: &SqliteStore) -> Result<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users").fetch_one(&store.writer).await?;
    Ok(n)
}

pub(super) async fn set_user_password(store: &SqliteStore, name: &str, password_hash: &str, actor: &str) -> Result<()> {
    let mut tx = store.writer.begin().await?;
    let updated = sqlx::query("UPDATE users SET password_hash = $1 WHERE name = $2")
        .bind(password_hash)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!("user `{name}`")));
    }
    append_event(&mut tx, "user.password_changed", &format!("user/{name}"), actor, serde_json::json!({"name": name}))
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn set_secret(
    store: &SqliteStore,
    kind: &str,
    scope: &str,
    name: &str,
    value: &[u8],
    actor: &str,
) -> Result<()> {
    let mut tx = store.writer.begin().await?;
    sqlx::query(
        "INSERT INTO secrets (kind, scope, name, value, updated) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (kind, scope, name) DO UPDATE SET value = excluded.value, updated = excluded.updated",
    )
    .bind(kind)
    .bind(scope)
    .bind(name)
    .bind(value)
    .bind(now())
    .execute(&mut *tx)
    .await?;
    let data = serde_json::json!({"scope": scope, "name": name});
    append_event(&mut tx, &format!("{kind}.set"), &format!("{kind}/{scope}/{name}"), actor, data).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn delete_secret(store: &SqliteStore, kind: &str, scope: &str, name: &str, actor: &str) -> Result<()> {
    let mut tx = store.writer.begin().await?;
    let deleted = sqlx::query("DELETE FROM secrets WHERE kind = $1 AND scope = $2 AND name = $3")
        .bind(kind)
        .bind(scope)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!("{kind} `{name}` in {scope}")));
    }
    let data = serde_json::json!({"scope": scope, "name": name});
    append_event(&mut tx, &format!("{kind}.deleted"), &format!("{kind}/{scope}/{name}"), actor, data).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn secrets(store: &SqliteStore, kind: &str, scopes: &[String]) -> Result<Vec<SecretRow>> {
    let mut rows = Vec::new();
    for scope in scopes {
        let found: Vec<SecretRow> = sqlx::query_as(
            "SELECT scope, name, value, updated FROM secrets WHERE kind = $1 AND scope = $2 ORDER BY name",
        )
        .bind(kind)
        .bind(scope)
        .fetch_all(&store.reader)
        .await?;
        rows.extend(found);
    }
    Ok(rows)
}

pub(super) async fn reseal_secrets(store: &SqliteStore, rows: &[SecretRow], actor: &str) -> Result<()> {
    let mut tx = store.writer.begin().await?;
    for row in rows {
        sqlx::query("UPDATE secrets SET value = $1 WHERE kind = 'secret' AND scope = $2 AND name = $3")
            .bind(&row.value)
            .bind(&row.scope)
            .bind(&row.name)
            .execute(&mut *tx)
            .await?;
    }
    let data = serde_json::json!({"count": rows.len()});
    append_event(&mut tx, "secret.key_rotated", "secrets", actor, data).await?;
    tx.commit().await?;
    Ok(())
}

/// Walks the event log in order, checking each link and hash; the first broken one.
pub(super) async fn verify_chain(store: &SqliteStore) -> Result<ChainReport> {
    use futures_util::TryStreamExt;
    let (n_events,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM events").fetch_one(&store.reader).await?;
    // Streamed row by row: a log of millions of events is checked in constant memory.
    let mut rows =
        sqlx::query("SELECT seq, time, kind, subject, actor, payload, prev_hash, hash FROM events ORDER BY seq")
            .fetch(&store.reader);
    let mut previous = GENESIS_HASH.to_string();
    let mut expected_seq = 0i64;
    while let Some(row) = rows.try_next().await? {
        expected_seq += 1;
        let row = &row;
        let field = |name: &str| row.try_get::<String, _>(name);
        let seq: i64 = row.try_get("seq")?;
        let (prev_hash, hash) = (field("prev_hash")?, field("hash")?);
        let problem = if seq != expected_seq {
            Some(format!("event {expected_seq} is missing"))
        } else if prev_hash != previous {
            Some("its link to the previous event does not match".to_string())
        } else if event_hash(
            &prev_hash,
            seq,
            &field("time")?,
            &field("kind")?,
            &field("subject")?,
            &field("actor")?,
            &field("payload")?,
        ) != hash
        {
            Some("its content does not match its hash (it was altered)".to_string())
        } else {
            None
        };
        if let Some(problem) = problem {
            return Ok(ChainReport { n_events, first_broken: Some((expected_seq.min(seq), problem)) });
        }
        previous = hash;
    }
    Ok(ChainReport { n_events, first_broken: None })
}
