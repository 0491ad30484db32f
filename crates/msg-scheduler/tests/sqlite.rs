//! The SQLite store: a fresh database file per case.
#![cfg(feature = "sqlite")]

mod support;

use std::sync::Arc;

use msg_scheduler::Scheduler;
use msg_scheduler::store::Store;
use msg_scheduler::store::sqlite::SqliteStore;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

/// A pool on a new database file.
async fn pool() -> SqlitePool {
    let dir = std::env::temp_dir().join("msg-scheduler-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.db", msg_core::Uuid::new_v4().simple()));
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap()
}

async fn sqlite() -> (Scheduler, Arc<dyn Store>) {
    let pool = pool().await;
    let scheduler = Scheduler::sqlite(pool.clone());
    scheduler.migrate().await.unwrap();
    scheduler.migrate().await.expect("migrate runs again");
    (scheduler, Arc::new(SqliteStore::new(pool)))
}

store_cases!(sqlite);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_early_each_once_with_two_runners() {
    let pool = pool().await;
    let a = Scheduler::sqlite(pool.clone());
    a.migrate().await.unwrap();
    // The second runner as another process would have it: its own pool,
    // so that it hears of the first's schedules only by polling.
    let b = Scheduler::sqlite(pool);
    support::never_early_each_once_with_two_runners(a, b, 10_000).await;
}
