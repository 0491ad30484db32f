//! The outbox on SQLite files.

mod support;

use msg_core::{Message, PublishOptions, Result};
use msg_outbox::Outbox;
use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};
use support::Db;

struct SqliteDb;

async fn pool(path: &std::path::Path) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    SqlitePool::connect_with(options).await.unwrap()
}

/// Where each outbox's file is, by table name.
fn file_of(outbox: &Outbox<Sqlite>) -> std::path::PathBuf {
    let name = format!("{outbox:?}");
    let table = name
        .split('"')
        .nth(1)
        .expect("the Debug output names the table");
    std::env::temp_dir().join(format!("msg-outbox-test-{table}.db"))
}

impl Db for SqliteDb {
    type DB = Sqlite;
    const LEASED: bool = true;

    async fn outbox() -> Outbox<Sqlite> {
        // A table name unique to the test names its file too.
        let table = format!("outbox_{}", msg_core::Uuid::new_v4().simple());
        let path = std::env::temp_dir().join(format!("msg-outbox-test-{table}.db"));
        let outbox = Outbox::sqlite(pool(&path).await)
            .with_table(&table)
            .unwrap();
        outbox.migrate().await.unwrap();
        outbox
    }

    async fn other(outbox: &Outbox<Sqlite>) -> Outbox<Sqlite> {
        let name = format!("{outbox:?}");
        let table = name.split('"').nth(1).unwrap().to_owned();
        Outbox::sqlite(pool(&file_of(outbox)).await)
            .with_table(&table)
            .unwrap()
    }

    async fn enqueue(
        outbox: &Outbox<Sqlite>,
        messages: Vec<(&'static str, Message)>,
        commit: bool,
    ) -> Result<()> {
        let pool = pool(&file_of(outbox)).await;
        // A transaction that writes takes the write lock up front, as
        // SQLite advises: a deferred one that read first fails with "database
        // is locked" when a relay wrote in between.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        sqlx::query("CREATE TABLE IF NOT EXISTS business (n INTEGER)")
            .execute(&mut *tx)
            .await
            .unwrap();
        for (topic, message) in messages {
            outbox.enqueue(&mut tx, topic, message).await?;
        }
        if commit {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
        }
        Ok(())
    }

    async fn enqueue_with(
        outbox: &Outbox<Sqlite>,
        topic: &'static str,
        message: Message,
        options: PublishOptions,
    ) -> Result<()> {
        let pool = pool(&file_of(outbox)).await;
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        outbox
            .enqueue_with(&mut tx, topic, message, options)
            .await?;
        tx.commit().await.unwrap();
        Ok(())
    }

    async fn rows(outbox: &Outbox<Sqlite>) -> i64 {
        let name = format!("{outbox:?}");
        let table = name.split('"').nth(1).unwrap();
        let pool = pool(&file_of(outbox)).await;
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&pool)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn rollback_publishes_nothing_and_commit_publishes_once() {
    support::rollback_publishes_nothing_and_commit_publishes_once::<SqliteDb>().await;
}

#[tokio::test]
async fn bad_input_is_an_error_and_writes_nothing() {
    support::bad_input_is_an_error_and_writes_nothing::<SqliteDb>().await;
}

#[tokio::test]
async fn options_are_carried_to_the_publish() {
    support::options_are_carried_to_the_publish::<SqliteDb>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_publish_rows_without_a_key_once() {
    support::two_relays_publish_rows_without_a_key_once::<SqliteDb>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_keep_each_keys_order() {
    support::two_relays_keep_each_keys_order::<SqliteDb>().await;
}

#[tokio::test]
async fn a_failing_row_holds_back_only_its_key() {
    support::a_failing_row_holds_back_only_its_key::<SqliteDb>().await;
}

#[tokio::test]
async fn a_row_that_cannot_be_published_is_kept_as_failed() {
    support::a_row_that_cannot_be_published_is_kept_as_failed::<SqliteDb>().await;
}

#[tokio::test]
async fn an_unreachable_broker_fails_no_row() {
    support::an_unreachable_broker_fails_no_row::<SqliteDb>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_does_not_spin_while_the_broker_is_away() {
    support::a_relay_does_not_spin_while_the_broker_is_away::<SqliteDb>().await;
}

#[tokio::test]
async fn a_pass_stops_at_an_unreachable_broker() {
    support::a_pass_stops_at_an_unreachable_broker::<SqliteDb>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_relay_publishes_as_soon_as_the_broker_is_back() {
    support::a_running_relay_publishes_as_soon_as_the_broker_is_back::<SqliteDb>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_rows_are_kept_for_the_retention_then_deleted() {
    support::sent_rows_are_kept_for_the_retention_then_deleted::<SqliteDb>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_in_this_process_wakes_the_relay() {
    let outbox = SqliteDb::outbox().await;
    support::an_enqueue_wakes_the_relay::<SqliteDb>(outbox.clone(), outbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_relays_rows_go_to_the_next_once_its_lease_expired() {
    support::a_dead_relays_rows_go_to_the_next::<SqliteDb>().await;
}

/// The SQL block of docs/outbox.md that follows `heading`.
fn documented_sql(heading: &str) -> Vec<String> {
    let doc = include_str!("../../../docs/outbox.md");
    let after = &doc[doc.find(heading).expect("the heading")..];
    let block = after
        .split("```sql\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("an sql block");
    // Statements end with `;` at the end of a line (a function body holds
    // `;` inside lines).
    block
        .split_inclusive(";\n")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn schema(pool: &SqlitePool, table: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let columns: Vec<(String, String, i64, Option<String>, i64)> = sqlx::query_as(&format!(
        "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info('{table}')"
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    out.extend(columns.iter().map(|c| format!("{c:?}")));
    let indexes: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? ORDER BY name",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap();
    out.extend(indexes.iter().map(|i| i.0.clone()));
    out
}

#[tokio::test]
async fn the_documented_sql_makes_the_table_migrate_makes() {
    let dir = std::env::temp_dir().join(format!("msg-outbox-doc-sql-{}", msg_core::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let by_hand = pool(&dir.join("by-hand.db")).await;
    for statement in documented_sql("\nSQLite:\n") {
        sqlx::query(&statement).execute(&by_hand).await.unwrap();
    }
    let migrated = pool(&dir.join("migrated.db")).await;
    Outbox::sqlite(migrated.clone()).migrate().await.unwrap();
    let documented = schema(&by_hand, "msg_outbox").await;
    assert!(documented.len() > 17, "{documented:?}");
    assert_eq!(documented, schema(&migrated, "msg_outbox").await);
    // And migrate() accepts the table made by hand.
    Outbox::sqlite(by_hand.clone()).migrate().await.unwrap();

    for statement in documented_sql("The inbox table") {
        sqlx::query(&statement).execute(&by_hand).await.unwrap();
    }
    msg_outbox::Inbox::sqlite(migrated.clone(), "c")
        .migrate()
        .await
        .unwrap();
    let documented = schema(&by_hand, "msg_inbox").await;
    assert!(documented.len() >= 4, "{documented:?}");
    assert_eq!(documented, schema(&migrated, "msg_inbox").await);
}

/// A row another program wrote with plain SQL, as the docs describe the
/// columns, is published like any other.
#[tokio::test]
async fn a_row_written_by_another_program_is_published() {
    let path = std::env::temp_dir().join(format!(
        "msg-outbox-foreign-{}.db",
        msg_core::Uuid::new_v4()
    ));
    let pool = pool(&path).await;
    let outbox = Outbox::sqlite(pool.clone());
    outbox.migrate().await.unwrap();
    let id = msg_core::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO msg_outbox (id, topic, msg_key, headers, payload, enqueued_at)
         VALUES (?, 'orders', 'k', '[[\"content-type\",\"text/plain\"]]', x'6869', 0)",
    )
    .bind(id.to_string())
    .execute(&pool)
    .await
    .unwrap();
    let recorder = support::Recorder::accepting();
    outbox.relay(recorder.clone()).run_once().await.unwrap();
    let (topic, message, _) = recorder.accepted().remove(0);
    assert_eq!(topic, "orders");
    assert_eq!(message.id(), id);
    assert_eq!(message.key(), Some("k"));
    assert_eq!(message.header("content-type"), Some("text/plain"));
    assert_eq!(&message.payload()[..], b"hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_on_a_broker_that_never_answers() {
    support::shutdown_gives_up_on_a_broker_that_never_answers::<SqliteDb>().await;
}

/// The store for tests: an in-memory SQLite database (one connection, as
/// each connection to `sqlite::memory:` is a database of its own) runs the
/// same code as a file, with a running relay and the in-process broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_database_serves_tests() {
    use futures::StreamExt;
    use msg_core::{Publisher, StartPosition, Subscriber, Subscription};

    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let outbox = Outbox::sqlite(pool.clone());
    outbox.migrate().await.unwrap();
    let broker = msg_memory::MemoryBroker::new();
    let client = broker.client();
    let mut orders = client
        .subscribe(Subscription::new("orders").start(StartPosition::Earliest))
        .await
        .unwrap();
    let relay = outbox.relay(client.clone()).start();

    let mut rolled_back = pool.begin().await.unwrap();
    outbox
        .enqueue(&mut rolled_back, "orders", Message::new("never"))
        .await
        .unwrap();
    rolled_back.rollback().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let placed = Message::new("placed");
    outbox
        .enqueue(&mut tx, "orders", placed.clone())
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let delivery = tokio::time::timeout(std::time::Duration::from_secs(10), orders.next())
        .await
        .expect("the relay published the committed row")
        .unwrap()
        .unwrap();
    assert_eq!(delivery.message().id(), placed.id());
    assert_eq!(delivery.message().payload(), placed.payload());
    relay.shutdown().await;
    assert_eq!(outbox.stats().await.unwrap().pending, 0);
    let nothing_else =
        tokio::time::timeout(std::time::Duration::from_millis(300), orders.next()).await;
    assert!(nothing_else.is_err(), "the rolled-back row was published");
    Publisher::close(&client).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_in_flight_are_bounded_across_workers() {
    support::publishes_in_flight_are_bounded_across_workers::<SqliteDb>().await;
}

/// `migrate()` records the schema version it made, runs again without
/// change, and refuses a table a newer release has migrated.
#[tokio::test]
async fn migrate_records_its_version_and_refuses_a_newer_schema() {
    let dir = std::env::temp_dir().join(format!("msg-outbox-schema-{}", msg_core::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let pool = pool(&dir.join("outbox.db")).await;
    let outbox = Outbox::sqlite(pool.clone());
    let inbox = msg_outbox::Inbox::sqlite(pool.clone(), "c");
    for _ in 0..2 {
        outbox.migrate().await.unwrap();
        inbox.migrate().await.unwrap();
    }
    for table in ["msg_outbox", "msg_inbox"] {
        let versions: Vec<i64> = sqlx::query_scalar(&format!("SELECT version FROM {table}_schema"))
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(versions, [1], "{table}");
        sqlx::query(&format!(
            "INSERT INTO {table}_schema (version, applied_at) VALUES (2, 0)"
        ))
        .execute(&pool)
        .await
        .unwrap();
    }
    let error = outbox.migrate().await.unwrap_err().to_string();
    assert!(
        error.contains("msg_outbox is at schema version 2, newer than the 1"),
        "{error}"
    );
    let error = inbox.migrate().await.unwrap_err().to_string();
    assert!(
        error.contains("msg_inbox is at schema version 2"),
        "{error}"
    );
}
