//! The inbox: each message's effect once, across redeliveries and crashes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use msg_core::{HandlerError, Message, Metadata, Publisher, Received, Router, State, Subscription};
use msg_memory::{MemoryBroker, MemoryConfig};
use msg_outbox::{Inbox, Outbox};
use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};

async fn pool(path: &Path) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    SqlitePool::connect_with(options).await.unwrap()
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("msg-inbox-{}", msg_core::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("app.db")
}

/// The application's database: its effects table, an inbox and an outbox.
async fn app(path: &Path) -> (SqlitePool, Inbox<Sqlite>, Outbox<Sqlite>) {
    let pool = pool(path).await;
    sqlx::query("CREATE TABLE IF NOT EXISTS invoices (order_id TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let inbox = Inbox::sqlite(pool.clone(), "billing");
    inbox.migrate().await.unwrap();
    let outbox = Outbox::sqlite(pool.clone());
    outbox.migrate().await.unwrap();
    (pool, inbox, outbox)
}

async fn invoices(pool: &SqlitePool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM invoices")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The billing work: an invoice row, and its message in the outbox;
/// `None` when skipped.
async fn bill(
    inbox: &Inbox<Sqlite>,
    outbox: &Outbox<Sqlite>,
    received: &Received,
) -> Result<Option<()>, HandlerError> {
    let Some(mut tx) = inbox.begin(received).await? else {
        return Ok(None);
    };
    let order = String::from_utf8(received.payload().to_vec()).unwrap();
    sqlx::query("INSERT INTO invoices (order_id) VALUES (?)")
        .bind(&order)
        .execute(&mut *tx)
        .await?;
    outbox
        .enqueue(&mut tx, "invoices", Message::new(order))
        .await?;
    tx.commit().await?;
    Ok(Some(()))
}

fn received(message: &Message) -> Received {
    Received {
        message: message.clone(),
        metadata: Metadata::new("orders"),
    }
}

#[derive(Clone)]
struct Billing {
    inbox: Inbox<Sqlite>,
    outbox: Outbox<Sqlite>,
    calls: Arc<AtomicU32>,
}

/// Three deliveries of one message through the router: the producer sent
/// it twice, and the first handling failed after its commit (the ack was
/// lost, as when a process dies there). One invoice, one invoice message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_delivered_three_times_has_its_effect_once() {
    let path = scratch();
    let (pool, inbox, outbox) = app(&path).await;
    let broker = MemoryBroker::with_config(MemoryConfig::default().retention(10)).unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let router = Router::new(broker.clone(), broker.clone())
        .with_state(Billing {
            inbox: inbox.clone(),
            outbox: outbox.clone(),
            calls: calls.clone(),
        })
        .handle(
            Subscription::new("orders").group("billing"),
            |State(app): State<Billing>, received: Received| async move {
                bill(&app.inbox, &app.outbox, &received).await?;
                if app.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    // Committed, and then the ack is lost.
                    return Err(HandlerError::retry("crashed before the ack"));
                }
                Ok(())
            },
        )
        .start()
        .await
        .unwrap();
    let order = Message::new("order-7");
    broker.publish("orders", order.clone()).await.unwrap();
    broker.publish("orders", order.clone()).await.unwrap();
    broker
        .wait_for("orders", |s| s.acked == 2, Duration::from_secs(10))
        .await
        .unwrap();
    router.shutdown().await;
    assert_eq!(calls.load(Ordering::SeqCst), 3, "three deliveries");
    assert_eq!(invoices(&pool).await, 1, "one effect");
    assert_eq!(outbox.stats().await.unwrap().pending, 1, "one message out");
}

/// Work that fails rolls back its writes, its outbox rows and the inbox
/// record: the retry runs it again.
#[tokio::test]
async fn failed_work_leaves_no_trace_and_runs_again() {
    let (pool, inbox, outbox) = app(&scratch()).await;
    let order = Message::new("order-8");
    let failed: Result<(), HandlerError> = async {
        let mut tx = inbox.begin(&received(&order)).await?.expect("not seen");
        sqlx::query("INSERT INTO invoices (order_id) VALUES ('order-8')")
            .execute(&mut *tx)
            .await?;
        outbox
            .enqueue(&mut tx, "invoices", Message::new("x"))
            .await?;
        // The payment service is down: the handler returns early, and
        // the transaction is dropped without a commit.
        Err(HandlerError::retry("payment service down"))
    }
    .await;
    assert!(failed.is_err());
    assert_eq!(invoices(&pool).await, 0);
    assert_eq!(outbox.stats().await.unwrap().pending, 0);
    assert_eq!(
        bill(&inbox, &outbox, &received(&order)).await.unwrap(),
        Some(())
    );
    assert_eq!(invoices(&pool).await, 1);
}

/// Another consumer of the same message has its own record.
#[tokio::test]
async fn each_consumer_processes_a_message_once() {
    let path = scratch();
    let (pool, inbox, outbox) = app(&path).await;
    let shipping = Inbox::sqlite(pool.clone(), "shipping");
    let order = Message::new("order-9");
    assert_eq!(
        bill(&inbox, &outbox, &received(&order)).await.unwrap(),
        Some(())
    );
    assert_eq!(
        bill(&inbox, &outbox, &received(&order)).await.unwrap(),
        None
    );
    assert_eq!(
        bill(&shipping, &outbox, &received(&order)).await.unwrap(),
        Some(())
    );
    assert_eq!(invoices(&pool).await, 2);
}

#[tokio::test]
async fn ids_older_than_the_window_are_forgotten() {
    let (pool, inbox, outbox) = app(&scratch()).await;
    let order = Message::new("order-10");
    bill(&inbox, &outbox, &received(&order)).await.unwrap();
    assert_eq!(
        inbox
            .forget_older_than(Duration::from_secs(60))
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        inbox
            .forget_older_than(Duration::from_millis(10))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        bill(&inbox, &outbox, &received(&order)).await.unwrap(),
        Some(()),
        "forgotten: processed again"
    );
    assert_eq!(invoices(&pool).await, 2);
}

/// `n` records of `consumer`, processed at the epoch (long ago).
async fn old_records(pool: &SqlitePool, consumer: &str, n: u32) {
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2)
         INSERT INTO msg_inbox (consumer, message_id, processed_at)
         SELECT ?1, 'm' || i, 0 FROM n",
    )
    .bind(consumer)
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
}

async fn records(pool: &SqlitePool, consumer: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM msg_inbox WHERE consumer = ?")
        .bind(consumer)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Forgetting deletes chunk after chunk until none is left, and only the
/// consumer's own records: another consumer keeps its window.
#[tokio::test]
async fn forgetting_takes_every_chunk_of_the_consumers_own_records() {
    let (pool, inbox, _) = app(&scratch()).await;
    old_records(&pool, "billing", 2_500).await;
    old_records(&pool, "shipping", 3).await;
    assert_eq!(
        inbox
            .forget_older_than(Duration::from_secs(60))
            .await
            .unwrap(),
        2_500
    );
    assert_eq!(records(&pool, "billing").await, 0);
    assert_eq!(records(&pool, "shipping").await, 3);
}

/// The background cleanup forgets old records without being called, and
/// stops at shutdown.
#[tokio::test]
async fn the_cleanup_forgets_in_the_background() {
    let (pool, inbox, outbox) = app(&scratch()).await;
    old_records(&pool, "billing", 5).await;
    old_records(&pool, "shipping", 1).await;
    bill(&inbox, &outbox, &received(&Message::new("order-11")))
        .await
        .unwrap();
    let cleanup = inbox.start_cleanup(Duration::from_secs(60));
    tokio::time::timeout(Duration::from_secs(10), async {
        while records(&pool, "billing").await != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the cleanup did not forget the old records");
    cleanup.shutdown().await;
    assert_eq!(records(&pool, "shipping").await, 1, "not its consumer's");
}

const CHILD: &str = "MSG_INBOX_CRASH_CHILD";

/// The child: handles the message and dies, before or after its commit.
#[tokio::test]
async fn crash_child() {
    let Ok(when) = std::env::var(CHILD) else {
        return;
    };
    let path = PathBuf::from(std::env::var("MSG_INBOX_DB").unwrap());
    let (_, inbox, outbox) = app(&path).await;
    let id: msg_core::Uuid = std::env::var("MSG_INBOX_ID").unwrap().parse().unwrap();
    let order = received(&Message::with_id(id, "order-11"));
    let mut tx = inbox.begin(&order).await.unwrap().expect("not seen");
    sqlx::query("INSERT INTO invoices (order_id) VALUES ('order-11')")
        .execute(&mut *tx)
        .await
        .unwrap();
    outbox
        .enqueue(&mut tx, "invoices", Message::new("x"))
        .await
        .unwrap();
    if when == "before-commit" {
        std::process::abort();
    }
    tx.commit().await.unwrap();
    // Committed; the process dies before the handler returns and acks.
    std::process::abort();
}

async fn crash_then_redeliver(when: &str) {
    let path = scratch();
    let id = msg_core::Uuid::now_v7();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture"])
        .env(CHILD, when)
        .env("MSG_INBOX_DB", &path)
        .env("MSG_INBOX_ID", id.to_string())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child died");
    // The broker redelivers to another process.
    let (pool, inbox, outbox) = app(&path).await;
    let order = received(&Message::with_id(id, "order-11"));
    let ran = bill(&inbox, &outbox, &order).await.unwrap();
    assert_eq!(ran.is_some(), when == "before-commit", "{when}");
    assert_eq!(invoices(&pool).await, 1, "{when}: one effect");
    assert_eq!(
        outbox.stats().await.unwrap().pending,
        1,
        "{when}: one message out"
    );
}

#[tokio::test]
async fn a_crash_after_the_commit_does_not_run_the_work_again() {
    crash_then_redeliver("after-commit").await;
}

#[tokio::test]
async fn a_crash_before_the_commit_runs_the_work_again() {
    crash_then_redeliver("before-commit").await;
}
