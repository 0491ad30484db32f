//! The transactional outbox against a transport (feature `outbox`): a
//! transport crate adds `msg_testkit::outbox_case!(harness());` to its
//! conformance tests.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use msg_core::{Message, MessageOrder, StartPosition, Subscriber, Subscription, Uuid};
use msg_outbox::Outbox;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};

use crate::harness::{Harness, collect};

/// Rows enqueued in an SQLite outbox (some in a transaction that rolls
/// back) and published by a relay through the transport: every committed
/// row arrives once, with its id, key and headers, each key's rows in
/// order where the transport keeps order; no rolled-back row arrives.
pub async fn outbox_relay_publishes_what_committed(h: &Harness) {
    let topic = h.topic("outbox");
    let conn = h.connect().await;
    let mut stream = conn
        .subscribe(Subscription::new(&topic).start(StartPosition::Earliest))
        .await
        .expect("subscribe");

    let (outbox, pool, dir) = scratch_outbox().await;

    let mut committed = Vec::new();
    for (batch, commit) in [(0, true), (1, false), (2, true), (3, true)] {
        let mut tx = pool.begin().await.expect("begin");
        for i in 0..40 {
            let n = batch * 40 + i;
            let message = Message::new(format!("row {n}"))
                .with_key(format!("k{}", n % 8))
                .with_header("seq", n.to_string());
            outbox
                .enqueue(&mut tx, &topic, message.clone())
                .await
                .expect("enqueue");
            if commit {
                committed.push(message);
            }
        }
        if commit {
            tx.commit().await.expect("commit");
        } else {
            tx.rollback().await.expect("rollback");
        }
    }

    let relay = outbox.relay(conn.clone()).batch_size(64);
    let deadline = tokio::time::Instant::now() + h.timeout();
    while outbox.stats().await.expect("stats").pending > 0 {
        let pass = relay.run_once().await.expect("a relay pass");
        assert_eq!(pass.failed, 0, "{}: {pass:?}", h.name());
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay did not finish"
        );
        if pass.claimed == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let got = collect(&mut stream, committed.len(), h.timeout()).await;
    let by_id: HashMap<Uuid, &Message> = committed.iter().map(|m| (m.id(), m)).collect();
    let got_ids: HashSet<Uuid> = got.iter().map(|d| d.message().id()).collect();
    assert_eq!(
        got_ids,
        by_id.keys().copied().collect::<HashSet<_>>(),
        "what committed, with the ids it was enqueued with; nothing rolled back"
    );
    for d in &got {
        let original = by_id[&d.message().id()];
        assert_eq!(d.message().payload(), original.payload());
        assert_eq!(d.message().key(), original.key());
        assert_eq!(d.message().header("seq"), original.header("seq"));
    }
    if h.capabilities().ordering != MessageOrder::None {
        let mut last: HashMap<String, usize> = HashMap::new();
        for d in &got {
            let key = d.message().key().unwrap_or_default().to_owned();
            let seq: usize = d
                .message()
                .header("seq")
                .and_then(|s| s.parse().ok())
                .expect("seq");
            if let Some(prev) = last.insert(key.clone(), seq) {
                assert!(prev < seq, "key {key}: {seq} arrived after {prev}");
            }
        }
    }
    pool.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A migrated outbox in a new SQLite file (WAL), its pool, and the
/// scratch directory that holds the file, for the caller to remove.
pub(crate) async fn scratch_outbox() -> (Outbox<sqlx::Sqlite>, SqlitePool, PathBuf) {
    let dir = std::env::temp_dir().join(format!("msg-testkit-outbox-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let pool = SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(dir.join("outbox.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal),
    )
    .await
    .expect("an SQLite file");
    let outbox = Outbox::sqlite(pool.clone());
    outbox.migrate().await.expect("migrate");
    (outbox, pool, dir)
}

/// Expands to the outbox case as a `#[tokio::test]`, with the harness the
/// expression builds.
#[macro_export]
macro_rules! outbox_case {
    ($harness:expr) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn outbox_relay_publishes_what_committed() {
            let _shared = $crate::broker_lock("outbox_relay_publishes_what_committed").await;
            let harness = $harness;
            $crate::outbox::outbox_relay_publishes_what_committed(&harness).await;
        }
    };
}
