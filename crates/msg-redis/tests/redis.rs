//! Redis-specific behaviour, against a real Redis started by
//! `cargo xtask brokers up redis`.

use std::time::Duration;

use fred::prelude::{ClientLike, StreamsInterface};
use futures::StreamExt;
use msg_core::{Message, Publisher, StartPosition, Subscriber, Subscription, Uuid, headers};
use msg_redis::{RedisBroker, RedisConfig};
use msg_testkit::BrokerEnv;

const WAIT: Duration = Duration::from_secs(10);

fn topic(name: &str) -> String {
    format!("rt.{name}.{}", &Uuid::new_v4().simple().to_string()[..12])
}

async fn broker(config: impl FnOnce(RedisConfig) -> RedisConfig) -> RedisBroker {
    let url = BrokerEnv::get("redis").url().to_owned();
    RedisBroker::connect(config(RedisConfig::from_url(&url).unwrap()))
        .await
        .unwrap()
}

async fn raw_client() -> fred::prelude::Client {
    let url = BrokerEnv::get("redis").url().to_owned();
    let client =
        fred::prelude::Builder::from_config(fred::types::config::Config::from_url(&url).unwrap())
            .build()
            .unwrap();
    client.init().await.unwrap();
    client
}

async fn next(stream: &mut msg_core::DeliveryStream) -> msg_core::Delivery {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("no error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacks_past_max_deliveries_dead_letter_with_the_reason() {
    let b = broker(|c| c.max_deliveries(Some(2))).await;
    let t = topic("max");
    let mut stream = b
        .subscribe(
            Subscription::new(&t)
                .group("g")
                .start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let mut dead = b
        .subscribe(Subscription::new(format!("{t}.dlq")).start(StartPosition::Earliest))
        .await
        .unwrap();
    let m = Message::new("flaky");
    b.publish(&t, m.clone()).await.unwrap();
    for attempt in 1..=2 {
        let mut d = next(&mut stream).await;
        assert_eq!(d.metadata().attempt, attempt);
        d.retry().await.unwrap();
    }
    let dl = next(&mut dead).await;
    assert_eq!(dl.message().id(), m.id());
    assert_eq!(
        dl.message().header(headers::DEAD_LETTER_REASON),
        Some("max deliveries (2) reached")
    );
    assert_eq!(dl.message().header(headers::ATTEMPTS), Some("2"));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), stream.next())
            .await
            .is_err(),
        "redelivered after dead-lettering"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_follow_the_documented_layout() {
    let b = broker(|c| c).await;
    let t = topic("layout");
    let m = Message::new("body")
        .with_key("k1")
        .with_header("a", "1")
        .with_header("b", "2");
    b.publish(&t, m.clone()).await.unwrap();
    let raw = raw_client().await;
    let entries: fred::types::Value = raw.xrange(t.as_str(), "-", "+", None).await.unwrap();
    let text = format!("{entries:?}");
    let positions: Vec<usize> = ["msg-id", "msg-key", "h:a", "h:b", "payload"]
        .iter()
        .map(|f| {
            text.find(f)
                .unwrap_or_else(|| panic!("field {f} missing in {text}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "fields out of order: {text}"
    );
    assert!(text.contains(&m.id().to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_other_clients_are_read_with_a_stable_id() {
    let b = broker(|c| c).await;
    let t = topic("foreign");
    let raw = raw_client().await;
    let _: String = raw
        .xadd(t.as_str(), false, None::<()>, "*", vec![("sensor", "7")])
        .await
        .unwrap();
    let mut stream = b
        .subscribe(
            Subscription::new(&t)
                .group("g")
                .start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let mut first = next(&mut stream).await;
    assert!(first.message().payload().is_empty());
    let id = first.message().id();
    first.retry().await.unwrap();
    let mut again = next(&mut stream).await;
    assert_eq!(
        again.message().id(),
        id,
        "the derived id changed across redeliveries"
    );
    again.ack().await.unwrap();
}

/// The same entry id in two streams is two messages: their derived ids
/// differ (an id derived from the entry id alone made dedup drop one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_entry_id_in_two_streams_gets_two_ids() {
    let b = broker(|c| c).await;
    let raw = raw_client().await;
    let (t1, t2) = (topic("foreign-1"), topic("foreign-2"));
    let mut ids = Vec::new();
    for t in [&t1, &t2] {
        let _: String = raw
            .xadd(
                t.as_str(),
                false,
                None::<()>,
                "1-7",
                vec![("payload", "same")],
            )
            .await
            .unwrap();
        let mut stream = b
            .subscribe(Subscription::new(t).start(StartPosition::Earliest))
            .await
            .unwrap();
        let mut d = next(&mut stream).await;
        assert_eq!(&d.message().payload()[..], b"same");
        ids.push(d.message().id());
        d.ack().await.unwrap();
    }
    assert_ne!(ids[0], ids[1], "entry 1-7 of two streams got one id");
}

#[tokio::test]
async fn patterns_are_a_clear_error() {
    let b = broker(|c| c).await;
    match b.subscribe(Subscription::new("orders.*")).await {
        Err(msg_core::Error::Unsupported { .. }) => {}
        Err(other) => panic!("expected Unsupported, got {other:?}"),
        Ok(_) => panic!("a pattern subscription was accepted"),
    }
}

#[tokio::test]
async fn connecting_to_nothing_fails_with_a_connection_error() {
    let config = RedisConfig::from_url("redis://127.0.0.1:1")
        .unwrap()
        .command_timeout(Duration::from_secs(2));
    let err = tokio::time::timeout(WAIT, RedisBroker::connect(config))
        .await
        .expect("fails in time")
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_published_in_order_in_one_round_trip() {
    let b = broker(|c| c).await;
    let t = topic("batch");
    let sent: Vec<Message> = (0..100)
        .map(|i| Message::new(format!("{i}")).with_header("seq", i.to_string()))
        .collect();
    b.publish_batch(&t, sent.clone()).await.unwrap();
    let mut stream = b
        .subscribe(
            Subscription::new(&t)
                .group("g")
                .start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    for expected in &sent {
        let mut d = next(&mut stream).await;
        assert_eq!(d.message().id(), expected.id());
        assert_eq!(d.message().header("seq"), expected.header("seq"));
        d.ack().await.unwrap();
    }
    assert!(
        b.publish_batch(&t, vec![Message::new("x").with_header("bad name", "v")])
            .await
            .is_err()
    );
    b.publish_batch(&t, Vec::new()).await.unwrap();
}

/// 10,000 requests over one connection use one reply stream, which is
/// gone after close; a reply that comes after that does not bring it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_use_one_reply_stream_removed_on_close() {
    use fred::prelude::KeysInterface;

    let t = topic("request");
    let conn = msg_core::Connection::new(broker(|c| c).await);
    let router = msg_testkit::echo_responder(
        &conn,
        Subscription::new(&t)
            .group("answer")
            .start(StartPosition::Earliest),
    )
    .await;
    let requester = conn.requester().await.unwrap().clone();
    let inbox = requester.address().to_owned();
    msg_testkit::request_echoes(&requester, &t, 10, WAIT).await;
    let client = raw_client().await;
    let groups: Vec<fred::types::Value> = client.xinfo_groups(&t).await.unwrap();
    assert_eq!(groups.len(), 1, "the responder's group, and no other");
    let inbox_groups: Vec<fred::types::Value> = client.xinfo_groups(&inbox).await.unwrap();
    assert_eq!(inbox_groups.len(), 1, "one reader of the reply stream");
    router.shutdown().await;
    conn.close().await.unwrap();
    let exists: i64 = client.exists(&inbox).await.unwrap();
    assert_eq!(exists, 0, "the reply stream is deleted on close");
    // A responder answering after the requester left: dropped, no stream.
    let late = broker(|c| c).await;
    late.publish(&inbox, Message::new("late")).await.unwrap();
    let exists: i64 = client.exists(&inbox).await.unwrap();
    assert_eq!(exists, 0, "a late reply does not recreate the stream");
}

/// A group that disappears (a Redis that keeps nothing restarted, or the
/// stream deleted) is created again by its subscriber, at the stream's
/// start: a message published after the loss is delivered. Before, the
/// subscriber read `NOGROUP` errors forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_disappears_is_created_again() {
    use fred::prelude::KeysInterface;
    let b = broker(|c| c).await;
    let t = topic("gone");
    let mut stream = b
        .subscribe(
            Subscription::new(&t)
                .group("g")
                .start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    b.publish(&t, Message::new("before")).await.unwrap();
    let mut first = next(&mut stream).await;
    assert_eq!(first.message().payload(), "before");
    first.ack().await.unwrap();
    // The stream goes, and its group with it, as in a restart of a Redis
    // without persistence.
    let raw = raw_client().await;
    let deleted: i64 = raw.del(t.as_str()).await.unwrap();
    assert_eq!(deleted, 1);
    let after = Message::new("after");
    b.publish(&t, after.clone()).await.unwrap();
    let mut again = next(&mut stream).await;
    assert_eq!(again.message().id(), after.id());
    again.ack().await.unwrap();
    raw.quit().await.unwrap();
}
