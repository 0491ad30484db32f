//! Behaviour of the in-process broker beyond the shared conformance suite.

use std::time::Duration;

use futures::StreamExt;
use msg_core::{Error, Message, Publisher, StartPosition, Subscriber, Subscription, headers};
use msg_memory::{MemoryBroker, MemoryConfig, WhenFull};

const WAIT: Duration = Duration::from_secs(5);

async fn next(stream: &mut msg_core::DeliveryStream) -> msg_core::Delivery {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a delivery in time")
        .expect("stream open")
        .expect("no stream error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_makes_publish_wait_until_there_is_room() {
    let b = MemoryBroker::with_config(MemoryConfig::default().capacity(2)).unwrap();
    let mut stream = b
        .subscribe(Subscription::new("t").group("g").prefetch(1))
        .await
        .unwrap();
    b.publish("t", Message::new("1")).await.unwrap();
    // The subscriber takes "1" (prefetch 1), leaving room for two.
    let mut first = next(&mut stream).await;
    b.publish("t", Message::new("2")).await.unwrap();
    b.publish("t", Message::new("3")).await.unwrap();
    let publisher = b.clone();
    let blocked = tokio::spawn(async move { publisher.publish("t", Message::new("4")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!blocked.is_finished(), "publish into a full queue returned");
    first.ack().await.unwrap();
    // The ack frees a prefetch slot; the subscriber takes "2", making room.
    let mut second = next(&mut stream).await;
    tokio::time::timeout(WAIT, blocked)
        .await
        .expect("publish resumed")
        .unwrap()
        .unwrap();
    second.ack().await.unwrap();
    let mut rest = Vec::new();
    for _ in 0..2 {
        let mut d = next(&mut stream).await;
        rest.push(String::from_utf8(d.message().payload().to_vec()).unwrap());
        d.ack().await.unwrap();
    }
    assert_eq!(
        rest,
        ["3", "4"],
        "nothing was lost or reordered by the wait"
    );
}

#[tokio::test]
async fn a_full_queue_fails_fast_when_configured() {
    let b = MemoryBroker::with_config(
        MemoryConfig::default()
            .capacity(1)
            .when_full(WhenFull::Fail),
    )
    .unwrap();
    let _stream = b
        .subscribe(Subscription::new("t").group("g"))
        .await
        .unwrap();
    b.publish("t", Message::new("1")).await.unwrap();
    let err = b.publish("t", Message::new("2")).await.unwrap_err();
    assert!(matches!(err, Error::Backpressure), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(
        b.stats("t").published,
        1,
        "the refused message was not half-published"
    );
}

#[tokio::test]
async fn a_batch_larger_than_the_room_is_published_as_room_is_made() {
    let b = MemoryBroker::with_config(MemoryConfig::default().capacity(3)).unwrap();
    let mut stream = b
        .subscribe(Subscription::new("t").group("g"))
        .await
        .unwrap();
    let sent: Vec<Message> = (0..10).map(|i| Message::new(format!("{i}"))).collect();
    let publisher = b.clone();
    let batch = tokio::spawn(async move { publisher.publish_batch("t", sent).await });
    let mut got = Vec::new();
    while got.len() < 10 {
        let mut d = next(&mut stream).await;
        got.push(String::from_utf8(d.message().payload().to_vec()).unwrap());
        d.ack().await.unwrap();
    }
    batch.await.unwrap().unwrap();
    assert_eq!(got, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[tokio::test]
async fn nacks_past_max_deliveries_dead_letter_with_the_reason() {
    let b = MemoryBroker::with_config(
        MemoryConfig::default()
            .max_deliveries(Some(3))
            .retention(10),
    )
    .unwrap();
    let mut stream = b
        .subscribe(Subscription::new("jobs").group("g"))
        .await
        .unwrap();
    let m = Message::new("flaky");
    b.publish("jobs", m.clone()).await.unwrap();
    for attempt in 1..=3 {
        let mut d = next(&mut stream).await;
        assert_eq!(d.metadata().attempt, attempt);
        d.retry().await.unwrap();
    }
    let stats = b
        .wait_for("jobs", |s| s.dead_lettered == 1, WAIT)
        .await
        .unwrap();
    // The third nack reached the broker as a dead letter.
    assert_eq!(stats.nacked, 2);
    let dead = b.published("jobs.dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id(), m.id());
    assert_eq!(
        dead[0].header(headers::DEAD_LETTER_REASON),
        Some("max deliveries (3) reached")
    );
    assert_eq!(dead[0].header(headers::ATTEMPTS), Some("3"));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), stream.next())
            .await
            .is_err(),
        "a dead-lettered message came back"
    );
}

#[tokio::test]
async fn the_dead_letter_suffix_is_configurable() {
    let b = MemoryBroker::with_config(
        MemoryConfig::default()
            .dead_letter_suffix("-dead")
            .retention(10),
    )
    .unwrap();
    let mut stream = b
        .subscribe(Subscription::new("t").group("g"))
        .await
        .unwrap();
    b.publish("t", Message::new("x")).await.unwrap();
    next(&mut stream).await.dead_letter("nope").await.unwrap();
    assert_eq!(b.published("t-dead").len(), 1);
    assert!(MemoryBroker::with_config(MemoryConfig::default().dead_letter_suffix(" bad")).is_err());
}

#[tokio::test]
async fn deferred_messages_come_back_in_due_order_and_others_pass_them() {
    let b = MemoryBroker::new();
    let mut stream = b
        .subscribe(Subscription::new("t").group("g"))
        .await
        .unwrap();
    for p in ["late", "soon", "now"] {
        b.publish("t", Message::new(p)).await.unwrap();
    }
    next(&mut stream)
        .await
        .retry_after(Duration::from_millis(300))
        .await
        .unwrap();
    next(&mut stream)
        .await
        .retry_after(Duration::from_millis(100))
        .await
        .unwrap();
    let mut order = Vec::new();
    for _ in 0..3 {
        let mut d = next(&mut stream).await;
        order.push(String::from_utf8(d.message().payload().to_vec()).unwrap());
        d.ack().await.unwrap();
    }
    assert_eq!(order, ["now", "soon", "late"]);
}

#[tokio::test]
async fn retention_keeps_the_latest_messages_only() {
    let b = MemoryBroker::with_config(MemoryConfig::default().retention(3)).unwrap();
    for i in 0..5 {
        b.publish("t", Message::new(format!("{i}"))).await.unwrap();
    }
    let kept: Vec<_> = b
        .published("t")
        .iter()
        .map(|m| m.payload().clone())
        .collect();
    assert_eq!(kept, ["2", "3", "4"]);
    let mut late = b
        .subscribe(Subscription::new("t").start(StartPosition::Earliest))
        .await
        .unwrap();
    assert_eq!(&next(&mut late).await.message().payload()[..], b"2");
    let mut latest = b.subscribe(Subscription::new("t")).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(100), latest.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn deliveries_dropped_with_the_stream_go_back_to_the_group() {
    let b = MemoryBroker::new();
    let mut stream = b
        .subscribe(Subscription::new("t").group("g"))
        .await
        .unwrap();
    for i in 0..3 {
        b.publish("t", Message::new(format!("{i}"))).await.unwrap();
    }
    let held = next(&mut stream).await;
    drop(stream);
    drop(held);
    let mut again = b
        .subscribe(Subscription::new("t").group("g"))
        .await
        .unwrap();
    let mut payloads = Vec::new();
    for _ in 0..3 {
        let mut d = next(&mut again).await;
        payloads.push(String::from_utf8(d.message().payload().to_vec()).unwrap());
        d.ack().await.unwrap();
    }
    payloads.sort();
    assert_eq!(payloads, ["0", "1", "2"]);
}

#[tokio::test]
async fn patterns_bind_topics_created_later_and_wait_for_reports_timeouts() {
    let b = MemoryBroker::new();
    let mut stream = b
        .subscribe(Subscription::new("orders.>").group("g"))
        .await
        .unwrap();
    b.publish("orders.eu.created", Message::new("x"))
        .await
        .unwrap();
    assert_eq!(
        &*next(&mut stream).await.metadata().topic,
        "orders.eu.created"
    );
    let err = b
        .wait_for(
            "orders.eu.created",
            |s| s.acked == 99,
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_waiting_on_a_departed_broadcast_subscriber_goes_on() {
    let b = MemoryBroker::with_config(MemoryConfig::default().capacity(1)).unwrap();
    let stream = b.subscribe(Subscription::new("t")).await.unwrap();
    b.publish("t", Message::new("1")).await.unwrap();
    let publisher = b.clone();
    let blocked = tokio::spawn(async move { publisher.publish("t", Message::new("2")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!blocked.is_finished(), "publish into a full queue returned");
    drop(stream);
    tokio::time::timeout(WAIT, blocked)
        .await
        .expect("publish resumed")
        .unwrap()
        .unwrap();
    assert_eq!(b.stats("t").published, 2);
}
