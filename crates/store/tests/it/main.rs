//! The store conformance suite: every adapter must pass these. Run here against SQLite; a
//! PostgreSQL adapter calls each `conformance::*` function the same way, one test each.

mod conformance;

use store::SqliteStore;

async fn sqlite() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("tandem.db")).await.unwrap();
    (store, dir)
}

#[tokio::test]
async fn sqlite_repos() {
    let (store, _dir) = sqlite().await;
    conformance::repos(&store).await;
}

#[tokio::test]
async fn sqlite_deliveries_are_idempotent() {
    let (store, _dir) = sqlite().await;
    conformance::deliveries_are_idempotent(&store).await;
}

#[tokio::test]
async fn sqlite_run_lifecycle() {
    let (store, _dir) = sqlite().await;
    // Through the port, as the server holds it.
    let port: &dyn store::Store = &store;
    conformance::run_lifecycle(port).await;
}

#[tokio::test]
async fn sqlite_interrupted_runs_are_recovered() {
    let (store, _dir) = sqlite().await;
    conformance::interrupted_runs_are_recovered(&store).await;
}

#[tokio::test]
async fn sqlite_logs_round_trip() {
    let (store, _dir) = sqlite().await;
    conformance::logs_round_trip(&store).await;
}

#[tokio::test]
async fn sqlite_concurrent_writers_keep_the_chain() {
    let (store, _dir) = sqlite().await;
    conformance::concurrent_writers_keep_the_chain(std::sync::Arc::new(store)).await;
}

#[tokio::test]
async fn sqlite_tampering_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tandem.db");
    let store = SqliteStore::open(&path).await.unwrap();
    conformance::repos(&store).await;
    assert!(store::Store::verify_chain(&store).await.unwrap().first_broken.is_none());
    drop(store);
    // Alter an event behind Tandem's back, as an attacker with the file would.
    let mut conn =
        <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    sqlx::query("UPDATE events SET actor = 'mallory' WHERE seq = 2").execute(&mut conn).await.unwrap();
    drop(conn);
    let store = SqliteStore::open(&path).await.unwrap();
    let report = store::Store::verify_chain(&store).await.unwrap();
    assert_eq!(report.first_broken.as_ref().map(|(seq, _)| *seq), Some(2), "{report:?}");
    assert!(report.first_broken.unwrap().1.contains("altered"));
}

#[tokio::test]
async fn sqlite_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tandem.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let repo = store::Store::add_repo(&store, "app", "/src/app", "s3cret", None, "admin").await.unwrap();
    drop(store);
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store::Store::repo(&store, "app").await.unwrap(), repo);
}

#[tokio::test]
async fn sqlite_deployments_move_and_promote() {
    let (store, _dir) = sqlite().await;
    conformance::deployments_move_and_promote(&store).await;
}
