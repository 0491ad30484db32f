//! The relay's Prometheus metrics.

mod support;

use std::time::Duration;

use msg_core::{Error, Message};
use msg_outbox::{Outbox, OutboxMetrics};
use prometheus::Registry;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use support::{Act, Recorder};

fn value(registry: &Registry, name: &str) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| m.get_label().iter().any(|l| l.value() == "msg_outbox"))
        .map(|m| {
            if m.get_histogram().get_sample_count() != 0 {
                m.get_histogram().get_sample_count() as f64
            } else if m.get_counter().get_value() != 0.0 {
                m.get_counter().get_value()
            } else {
                m.get_gauge().get_value()
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_counts_what_it_does_and_what_waits() {
    let path = std::env::temp_dir().join(format!(
        "msg-outbox-metrics-{}.db",
        msg_core::Uuid::new_v4()
    ));
    let pool = SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true),
    )
    .await
    .unwrap();
    let outbox = Outbox::sqlite(pool.clone());
    outbox.migrate().await.unwrap();
    let registry = Registry::new();
    let metrics = OutboxMetrics::new(&registry).unwrap();
    assert!(OutboxMetrics::new(&registry).is_err(), "registered twice");

    let mut tx = pool.begin().await.unwrap();
    for payload in ["ok 1", "ok 2", "too big", "later"] {
        outbox
            .enqueue(&mut tx, "orders", Message::new(payload))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let recorder = Recorder::with_rule(|_, m| match m.payload().as_ref() {
        b"too big" => Act::Refuse(Error::MessageTooLarge { size: 7, max: 1 }),
        b"later" => Act::Refuse(Error::broker_retryable("refused for now")),
        _ => Act::Accept,
    });
    let relay = outbox
        .relay(recorder.clone())
        .metrics(&metrics)
        .stats_interval(Duration::from_millis(10))
        .backoff(Duration::from_secs(60), Duration::from_secs(60))
        .start();
    recorder.wait_for(2, Duration::from_secs(5)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while value(&registry, "msg_outbox_failed_rows") < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the counts were not read"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    relay.shutdown().await;
    let v = |name| value(&registry, name);
    assert_eq!(v("msg_outbox_published_total"), 2.0);
    assert_eq!(v("msg_outbox_failed_total"), 1.0);
    assert_eq!(v("msg_outbox_retried_total"), 1.0);
    assert_eq!(
        v("msg_outbox_lag_seconds"),
        2.0,
        "one lag per published row"
    );
    assert_eq!(
        v("msg_outbox_pending_rows"),
        1.0,
        "\"later\" waits out its backoff"
    );
    assert_eq!(v("msg_outbox_failed_rows"), 1.0);
}
