//! The outbox on PostgreSQL: the server `cargo xtask brokers up postgres`
//! starts (or `MSG_TEST_POSTGRES_URL`).
#![cfg(feature = "postgres")]

mod support;

use std::time::Duration;

use msg_core::{Message, PublishOptions, Result};
use msg_outbox::Outbox;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Executor, Postgres};
use support::{Db, Recorder, keyed};

struct PgDb;

async fn pool() -> PgPool {
    let url = msg_testkit::BrokerEnv::get("postgres").url().to_owned();
    PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL at {url}: {e} (start it: cargo xtask brokers up postgres)")
        })
}

fn table_of(outbox: &Outbox<Postgres>) -> String {
    format!("{outbox:?}").split('"').nth(1).unwrap().to_owned()
}

/// Waits until every committed row is one the relay may take: older than
/// every transaction still running anywhere on the server (the relay's
/// guard against late commits). Other tests of this binary hold
/// transactions open on purpose; a test that ran its relay at once could
/// find nothing to claim. Once settled, a row stays settled: only a
/// transaction older than it can hold it back.
async fn settled(outbox: &Outbox<Postgres>) {
    let pool = pool().await;
    let unsettled = format!(
        "SELECT count(*) FROM {} WHERE state = 'pending'
           AND NOT txid < pg_snapshot_xmin(pg_current_snapshot())",
        table_of(outbox)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = sqlx::query_scalar(&unsettled)
            .fetch_one(&pool)
            .await
            .unwrap();
        if n == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} rows still behind a running transaction after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Db for PgDb {
    type DB = Postgres;
    const LEASED: bool = false;

    async fn outbox() -> Outbox<Postgres> {
        let table = format!("outbox_{}", msg_core::Uuid::new_v4().simple());
        let outbox = Outbox::postgres(pool().await).with_table(&table).unwrap();
        outbox.migrate().await.unwrap();
        outbox
    }

    async fn other(outbox: &Outbox<Postgres>) -> Outbox<Postgres> {
        Outbox::postgres(pool().await)
            .with_table(&table_of(outbox))
            .unwrap()
    }

    async fn enqueue(
        outbox: &Outbox<Postgres>,
        messages: Vec<(&'static str, Message)>,
        commit: bool,
    ) -> Result<()> {
        let pool = pool().await;
        let mut tx = pool.begin().await.unwrap();
        tx.execute("CREATE TEMP TABLE IF NOT EXISTS business (n int)")
            .await
            .unwrap();
        for (topic, message) in messages {
            outbox.enqueue(&mut tx, topic, message).await?;
        }
        if commit {
            tx.commit().await.unwrap();
            settled(outbox).await;
        } else {
            tx.rollback().await.unwrap();
        }
        Ok(())
    }

    async fn enqueue_with(
        outbox: &Outbox<Postgres>,
        topic: &'static str,
        message: Message,
        options: PublishOptions,
    ) -> Result<()> {
        let pool = pool().await;
        let mut tx = pool.begin().await.unwrap();
        outbox
            .enqueue_with(&mut tx, topic, message, options)
            .await?;
        tx.commit().await.unwrap();
        settled(outbox).await;
        Ok(())
    }

    async fn rows(outbox: &Outbox<Postgres>) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {}", table_of(outbox)))
            .fetch_one(&pool().await)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn rollback_publishes_nothing_and_commit_publishes_once() {
    support::rollback_publishes_nothing_and_commit_publishes_once::<PgDb>().await;
}

#[tokio::test]
async fn bad_input_is_an_error_and_writes_nothing() {
    support::bad_input_is_an_error_and_writes_nothing::<PgDb>().await;
}

#[tokio::test]
async fn options_are_carried_to_the_publish() {
    support::options_are_carried_to_the_publish::<PgDb>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_publish_rows_without_a_key_once() {
    support::two_relays_publish_rows_without_a_key_once::<PgDb>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_keep_each_keys_order() {
    support::two_relays_keep_each_keys_order::<PgDb>().await;
}

#[tokio::test]
async fn a_failing_row_holds_back_only_its_key() {
    support::a_failing_row_holds_back_only_its_key::<PgDb>().await;
}

#[tokio::test]
async fn a_row_that_cannot_be_published_is_kept_as_failed() {
    support::a_row_that_cannot_be_published_is_kept_as_failed::<PgDb>().await;
}

#[tokio::test]
async fn an_unreachable_broker_fails_no_row() {
    support::an_unreachable_broker_fails_no_row::<PgDb>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_does_not_spin_while_the_broker_is_away() {
    support::a_relay_does_not_spin_while_the_broker_is_away::<PgDb>().await;
}

#[tokio::test]
async fn a_pass_stops_at_an_unreachable_broker() {
    support::a_pass_stops_at_an_unreachable_broker::<PgDb>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_relay_publishes_as_soon_as_the_broker_is_back() {
    support::a_running_relay_publishes_as_soon_as_the_broker_is_back::<PgDb>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_rows_are_kept_for_the_retention_then_deleted() {
    support::sent_rows_are_kept_for_the_retention_then_deleted::<PgDb>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_in_another_process_wakes_the_relay_through_notify() {
    let outbox = PgDb::outbox().await;
    // Another Outbox: no in-process wake-up reaches the relay.
    let elsewhere = PgDb::other(&outbox).await;
    support::an_enqueue_wakes_the_relay::<PgDb>(outbox, elsewhere).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_relays_rows_go_to_the_next_at_once() {
    support::a_dead_relays_rows_go_to_the_next::<PgDb>().await;
}

/// A BIGSERIAL is taken at insert: the row of the transaction that
/// committed second can have the smaller number. The relay must not
/// publish a key's later row before its earlier one that is not visible
/// yet.
#[tokio::test]
async fn a_row_committed_late_is_still_published_before_the_later_row_of_its_key() {
    let outbox = PgDb::outbox().await;
    let pool = pool().await;
    let recorder = Recorder::accepting();
    let relay = outbox.relay(recorder.clone());

    let mut first = pool.begin().await.unwrap();
    outbox
        .enqueue(&mut first, "orders", keyed("k", 0))
        .await
        .unwrap();
    let mut second = pool.begin().await.unwrap();
    outbox
        .enqueue(&mut second, "orders", keyed("k", 1))
        .await
        .unwrap();
    // Unrelated work, committed in the meantime (not through
    // `PgDb::enqueue`, which would wait for `first`).
    let mut other = pool.begin().await.unwrap();
    outbox
        .enqueue(&mut other, "orders", Message::new("other"))
        .await
        .unwrap();
    other.commit().await.unwrap();
    second.commit().await.unwrap();

    let report = relay.run_once().await.unwrap();
    assert_eq!(
        report.claimed, 0,
        "k:1 and everything after the first transaction wait for it: {report:?}"
    );
    first.commit().await.unwrap();
    settled(&outbox).await;
    let report = relay.run_once().await.unwrap();
    assert_eq!(report.published, 3, "{report:?}");
    assert_eq!(recorder.payloads("orders"), ["k:0", "k:1", "other"]);
}

/// The relay's claim holds no row lock that blocks the application: an
/// enqueue while a relay publishes goes through at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_does_not_wait_for_a_relay_in_flight() {
    let outbox = PgDb::outbox().await;
    PgDb::enqueue(&outbox, vec![("orders", keyed("k", 0))], true)
        .await
        .unwrap();
    let hanging = Recorder::with_rule(|_, _| support::Act::Hang);
    let relay = outbox.relay(hanging);
    let pass = tokio::spawn(async move { relay.run_once().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(
        Duration::from_secs(2),
        PgDb::enqueue(&outbox, vec![("orders", keyed("k", 1))], true),
    )
    .await
    .expect("the enqueue did not wait")
    .unwrap();
    pass.abort();
}

/// The SQL block of docs/outbox.md that follows `heading`, as statements.
fn documented_sql(heading: &str) -> String {
    let doc = include_str!("../../../docs/outbox.md");
    let after = &doc[doc.find(heading).expect("the heading")..];
    after
        .split("```sql\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("an sql block")
        .to_owned()
}

async fn columns(pool: &PgPool, schema: &str) -> Vec<String> {
    let rows: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text, is_nullable::text, column_default::text
         FROM information_schema.columns
         WHERE table_schema = $1 AND table_name = 'msg_outbox' ORDER BY ordinal_position",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out: Vec<String> = rows
        .into_iter()
        // A serial's default names its sequence, which names the schema.
        .map(|(n, t, null, d)| format!("{n} {t} {null} {:?}", d.map(|d| d.replace(schema, "_"))))
        .collect();
    let indexes: Vec<(String,)> = sqlx::query_as(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = $1 AND tablename = 'msg_outbox'
         ORDER BY indexname",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap();
    out.extend(indexes.into_iter().map(|i| i.0));
    out
}

/// Two fresh schemas: one made with the documented SQL, one by migrate().
#[tokio::test]
async fn the_documented_sql_makes_the_table_migrate_makes() {
    let suffix = msg_core::Uuid::new_v4().simple().to_string();
    let (by_hand, migrated) = (format!("doc_{suffix}"), format!("mig_{suffix}"));
    let connect = |schema: String| async move {
        let url = msg_testkit::BrokerEnv::get("postgres").url().to_owned();
        let admin = PgPool::connect(&url).await.unwrap();
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .unwrap();
        PgPoolOptions::new()
            .max_connections(2)
            .after_connect(move |conn, _| {
                let schema = schema.clone();
                Box::pin(async move {
                    conn.execute(format!("SET search_path TO {schema}").as_str())
                        .await
                        .map(drop)
                })
            })
            .connect(&url)
            .await
            .unwrap()
    };
    let hand = connect(by_hand.clone()).await;
    sqlx::raw_sql(&documented_sql("\nPostgreSQL (14"))
        .execute(&hand)
        .await
        .unwrap();
    let mig = connect(migrated.clone()).await;
    Outbox::postgres(mig.clone()).migrate().await.unwrap();
    let documented = columns(&hand, &by_hand).await;
    assert!(documented.len() > 16, "{documented:?}");
    assert_eq!(documented, columns(&mig, &migrated).await);
    Outbox::postgres(hand.clone()).migrate().await.unwrap();
}

/// A row another program inserted with plain SQL is published, and its
/// insert woke the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_written_by_another_program_is_published() {
    let outbox = PgDb::outbox().await;
    let recorder = Recorder::accepting();
    let relay = outbox
        .relay(recorder.clone())
        .poll_interval(Duration::from_secs(60))
        .start();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = msg_core::Uuid::new_v4();
    sqlx::query(&format!(
        "INSERT INTO {} (id, topic, msg_key, headers, payload, enqueued_at)
         VALUES ($1, 'orders', 'k', '[[\"content-type\",\"text/plain\"]]', 'hi'::bytea, 0)",
        table_of(&outbox)
    ))
    .bind(id.to_string())
    .execute(&pool().await)
    .await
    .unwrap();
    recorder.wait_for(1, Duration::from_secs(5)).await;
    relay.shutdown().await;
    let (topic, message, _) = recorder.accepted().remove(0);
    assert_eq!(topic, "orders");
    assert_eq!(message.id(), id);
    assert_eq!(message.key(), Some("k"));
    assert_eq!(message.header("content-type"), Some("text/plain"));
    assert_eq!(&message.payload()[..], b"hi");
}

/// Two deliveries of one message handled at once: the second waits for the
/// first's transaction, then skips if it committed and runs if it rolled
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_holds_a_second_delivery_until_the_first_ends() {
    use msg_core::{Metadata, Received};
    use msg_outbox::Inbox;
    let table = format!("inbox_{}", msg_core::Uuid::new_v4().simple());
    let inbox = Inbox::postgres(pool().await, "billing")
        .with_table(&table)
        .unwrap();
    inbox.migrate().await.unwrap();
    let received = Received {
        message: Message::new("order"),
        metadata: Metadata::new("orders"),
    };
    for commit in [false, true] {
        let first = inbox.begin(&received).await.unwrap().expect("first");
        let (i, r) = (inbox.clone(), received.clone());
        let mut second = tokio::spawn(async move { i.begin(&r).await.map(|tx| tx.is_some()) });
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut second)
                .await
                .is_err(),
            "the second delivery waits"
        );
        if commit {
            first.commit().await.unwrap();
        } else {
            first.rollback().await.unwrap();
        }
        let ran = second.await.unwrap().unwrap();
        assert_eq!(ran, !commit, "commit {commit}");
        // After a rollback the second delivery holds the record: end it.
        if !commit {
            assert!(
                inbox.begin(&received).await.unwrap().is_some(),
                "its transaction was dropped"
            );
        }
    }
}

/// Forgetting on PostgreSQL: every chunk, only the consumer's own records.
#[tokio::test]
async fn the_inbox_forgets_its_own_old_records_in_chunks() {
    use msg_outbox::Inbox;
    let pool = pool().await;
    let table = format!("inbox_{}", msg_core::Uuid::new_v4().simple());
    let billing = Inbox::postgres(pool.clone(), "billing")
        .with_table(&table)
        .unwrap();
    billing.migrate().await.unwrap();
    sqlx::query(&format!(
        "INSERT INTO {table} (consumer, message_id, processed_at)
         SELECT c, 'm' || n, 0 FROM generate_series(1, 2500) AS g(n),
             (VALUES ('billing'), ('shipping')) AS v(c)"
    ))
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(
        billing
            .forget_older_than(Duration::from_secs(60))
            .await
            .unwrap(),
        2_500
    );
    let left: Vec<(String, i64)> = sqlx::query_as(&format!(
        "SELECT consumer, count(*) FROM {table} GROUP BY consumer"
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(left, [("shipping".to_owned(), 2_500)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_on_a_broker_that_never_answers() {
    support::shutdown_gives_up_on_a_broker_that_never_answers::<PgDb>().await;
}

/// Over TLS (`sslmode=verify-full`, the harness's CA): the connection is
/// encrypted, and a row enqueued on it is published by a relay on it
/// (`LISTEN` included). A server certificate from another CA is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_works_over_tls_and_refuses_another_ca() {
    let url = msg_testkit::BrokerEnv::tls("postgres").url().to_owned();
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL over TLS at {url}: {e}"));
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(encrypted, "the connection is not encrypted");

    let table = format!("outbox_{}", msg_core::Uuid::new_v4().simple());
    let outbox = Outbox::postgres(pool.clone()).with_table(&table).unwrap();
    outbox.migrate().await.unwrap();
    let recorder = Recorder::accepting();
    let relay = outbox.relay(recorder.clone()).start();
    let mut tx = pool.begin().await.unwrap();
    outbox
        .enqueue(&mut tx, "orders", Message::new("over TLS"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    recorder.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(recorder.payloads("orders"), ["over TLS"]);
    relay.shutdown().await;

    let ca = msg_testkit::tls_ca().display().to_string();
    let other = msg_testkit::other_ca().display().to_string();
    let refused = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url.replace(&ca, &other))
        .await
        .expect_err("connected trusting another CA");
    assert!(
        refused.to_string().to_lowercase().contains("certificate"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_in_flight_are_bounded_across_workers() {
    support::publishes_in_flight_are_bounded_across_workers::<PgDb>().await;
}

/// `migrate()` records the schema version it made beside the table (in
/// the table's schema), runs again without change, and refuses a table a
/// newer release has migrated.
#[tokio::test]
async fn migrate_records_its_version_and_refuses_a_newer_schema() {
    let pool = pool().await;
    let schema = format!("s_{}", msg_core::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&pool)
        .await
        .unwrap();
    let table = format!("{schema}.outbox");
    let outbox = Outbox::postgres(pool.clone()).with_table(&table).unwrap();
    let inbox = msg_outbox::Inbox::postgres(pool.clone(), "c")
        .with_table(&format!("{schema}.inbox"))
        .unwrap();
    // Twice, and two processes at once.
    for _ in 0..2 {
        let (a, b, c) = tokio::join!(outbox.migrate(), outbox.migrate(), inbox.migrate());
        a.unwrap();
        b.unwrap();
        c.unwrap();
    }
    for table in ["outbox", "inbox"] {
        let versions: Vec<i64> =
            sqlx::query_scalar(&format!("SELECT version FROM {schema}.{table}_schema"))
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(versions, [1], "{table}");
        sqlx::query(&format!(
            "INSERT INTO {schema}.{table}_schema (version, applied_at) VALUES (2, 0)"
        ))
        .execute(&pool)
        .await
        .unwrap();
    }
    let error = outbox.migrate().await.unwrap_err().to_string();
    assert!(
        error.contains(&format!("{table} is at schema version 2, newer than the 1")),
        "{error}"
    );
    let error = inbox.migrate().await.unwrap_err().to_string();
    assert!(error.contains("inbox is at schema version 2"), "{error}");
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
}

/// With `notify(false)`, `migrate()` drops the insert trigger and a commit
/// that enqueued NOTIFYs nobody (PostgreSQL serialises such commits
/// cluster-wide); by default it NOTIFYs the table's channel.
#[tokio::test]
async fn notify_can_be_turned_off() {
    let pool = pool().await;
    let table = format!("outbox_{}", msg_core::Uuid::new_v4().simple());
    let notifying = Outbox::postgres(pool.clone()).with_table(&table).unwrap();
    notifying.migrate().await.unwrap();
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    listener.listen(&format!("{table}_enqueued")).await.unwrap();
    let enqueue = |outbox: Outbox<Postgres>| {
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            outbox
                .enqueue(&mut tx, "orders", Message::new("x"))
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    };
    enqueue(notifying.clone()).await;
    tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("a commit that enqueued notifies")
        .unwrap();

    // The setting survives `with_table`, whichever comes first.
    let quiet = Outbox::postgres(pool.clone())
        .notify(false)
        .with_table(&table)
        .unwrap();
    quiet.migrate().await.unwrap();
    enqueue(quiet).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), listener.recv())
            .await
            .is_err(),
        "no NOTIFY once turned off"
    );
    // Turned on again by the next migrate that says so.
    notifying.migrate().await.unwrap();
    enqueue(notifying).await;
    tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("notifies again")
        .unwrap();
}
