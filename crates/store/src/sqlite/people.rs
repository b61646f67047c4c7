//! People and tokens in SQLite: API tokens (hashed), web users (password hashes), with their events.

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
