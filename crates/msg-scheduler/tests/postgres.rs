//! The PostgreSQL store: the server `cargo xtask brokers up postgres`
//! starts (or `MSG_TEST_POSTGRES_URL`). Each case works in a schema of its
//! own, through the pool's `search_path`.
#![cfg(feature = "postgres")]

mod support;

use std::str::FromStr;
use std::sync::Arc;

use msg_scheduler::Scheduler;
use msg_scheduler::store::Store;
use msg_scheduler::store::postgres::PgStore;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

async fn connect(url: &str, options: PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL at {url}: {e} (start it: cargo xtask brokers up postgres)")
        })
}

/// A pool whose tables live in a new schema.
async fn pool() -> PgPool {
    let url = msg_testkit::BrokerEnv::get("postgres").url().to_owned();
    let schema = format!("sched_{}", msg_core::Uuid::new_v4().simple());
    let options = PgConnectOptions::from_str(&url).unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&connect(&url, options.clone()).await)
        .await
        .unwrap();
    connect(&url, options.options([("search_path", schema.as_str())])).await
}

async fn postgres() -> (Scheduler, Arc<dyn Store>) {
    let pool = pool().await;
    let scheduler = Scheduler::postgres(pool.clone());
    scheduler.migrate().await.unwrap();
    scheduler.migrate().await.expect("migrate runs again");
    (scheduler, Arc::new(PgStore::new(pool)))
}

store_cases!(postgres);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_early_each_once_with_two_runners() {
    let pool = pool().await;
    let a = Scheduler::postgres(pool.clone());
    a.migrate().await.unwrap();
    let b = Scheduler::postgres(pool);
    support::never_early_each_once_with_two_runners(a, b, 10_000).await;
}

/// A runner hears through `LISTEN` of a schedule another process made:
/// it fires on time although it sleeps up to its 10 s poll interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_hears_of_another_processs_schedule() {
    use std::time::{Duration, SystemTime};
    let pool = pool().await;
    let maker = Scheduler::postgres(pool.clone());
    maker.migrate().await.unwrap();
    let recorder = support::Recorder::new();
    // Its own scheduler: it learns nothing from `maker` in this process.
    let runner = Scheduler::postgres(pool).runner(recorder.clone()).start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let due = SystemTime::now() + Duration::from_millis(200);
    maker
        .schedule(
            "t",
            msg_core::Message::new("x"),
            msg_scheduler::When::at(due),
        )
        .await
        .unwrap();
    let fired = recorder.wait_for(1, Duration::from_secs(5)).await;
    runner.shutdown().await;
    assert_eq!(fired.len(), 1);
    let late = fired[0].at.duration_since(due).unwrap();
    assert!(
        late < Duration::from_secs(2),
        "fired {late:?} late: the runner did not hear"
    );
}

/// The columns and indexes of `msg_schedules` in `schema`.
async fn table_shape(pool: &PgPool, schema: &str) -> Vec<String> {
    let columns: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text, is_nullable::text, column_default::text
         FROM information_schema.columns
         WHERE table_schema = $1 AND table_name = 'msg_schedules' ORDER BY ordinal_position",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap();
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname::text, replace(indexdef, $1, '_')
         FROM pg_indexes WHERE schemaname = $1 AND tablename = 'msg_schedules'
         ORDER BY indexname",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap();
    columns
        .into_iter()
        .map(|(n, t, null, d)| format!("{n} {t} {null} {d:?}"))
        .chain(indexes.into_iter().map(|(n, d)| format!("{n}: {d}")))
        .collect()
}

/// The table docs/scheduler.md shows is the table `migrate` makes.
#[tokio::test]
async fn the_documented_sql_makes_the_table_migrate_makes() {
    let doc = include_str!("../../../docs/scheduler.md");
    let sql = doc
        .split("```sql\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("an sql block in docs/scheduler.md");
    let by_hand = pool().await;
    for statement in sql.split(';').filter(|s| !s.trim().is_empty()) {
        sqlx::query(statement).execute(&by_hand).await.unwrap();
    }
    let migrated = pool().await;
    Scheduler::postgres(migrated.clone())
        .migrate()
        .await
        .unwrap();
    let schema_of = |pool: PgPool| async move {
        sqlx::query_scalar::<_, String>("SELECT current_schema()::text")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let (a, b) = (
        schema_of(by_hand.clone()).await,
        schema_of(migrated.clone()).await,
    );
    let shape = table_shape(&by_hand, &a).await;
    assert!(!shape.is_empty());
    assert_eq!(shape, table_shape(&migrated, &b).await);
}
