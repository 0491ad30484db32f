//! NATS-specific behaviour, against a real nats-server started by
//! `cargo xtask brokers up nats`.

use std::time::Duration;

use futures::StreamExt;
use msg_core::{
    DeliveryStream, Error, Message, Publisher, StartPosition, Subscriber, Subscription,
    dead_letter_topic, headers,
};
use msg_nats::{Mode, NatsBroker, NatsConfig, StreamSettings};
use msg_testkit::{BrokerEnv, broker_lock, recv};

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(700);

fn config(mode: Mode) -> NatsConfig {
    NatsConfig::from_url(BrokerEnv::get("nats").url())
        .expect("URL")
        .mode(mode)
}

async fn broker(config: NatsConfig) -> NatsBroker {
    NatsBroker::connect(config).await.expect("connect")
}

/// A root segment of its own per test, so that each test has its own stream.
fn topic(name: &str) -> String {
    let id = msg_core::Uuid::new_v4().simple().to_string();
    format!("nt{}.{name}", &id[..10])
}

fn earliest(topic: &str) -> Subscription {
    Subscription::new(topic).start(StartPosition::Earliest)
}

async fn next(stream: &mut DeliveryStream) -> msg_core::Delivery {
    recv(stream, WAIT).await.expect("a delivery")
}

#[tokio::test]
async fn jetstream_drops_a_republished_message() {
    let _shared = broker_lock("dedup").await;
    let b = broker(config(Mode::JetStream)).await;
    let t = topic("dedup");
    let m = Message::new("once");
    b.publish(&t, m.clone()).await.unwrap();
    b.publish(&t, m.clone()).await.unwrap();
    // The same message on another topic is another publish.
    let other = format!("{t}.copy");
    b.publish(&other, m.clone()).await.unwrap();
    let mut stream = b.subscribe(earliest(&t)).await.unwrap();
    let mut d = next(&mut stream).await;
    assert_eq!(d.message().id(), m.id());
    d.ack().await.unwrap();
    assert!(recv(&mut stream, QUIET).await.is_none(), "stored twice");
    let mut copy = b.subscribe(earliest(&other)).await.unwrap();
    assert_eq!(next(&mut copy).await.message().id(), m.id());
}

#[tokio::test]
async fn jetstream_dead_letters_the_last_failed_attempt() {
    let _shared = broker_lock("max-deliveries").await;
    let b = broker(config(Mode::JetStream).max_deliveries(Some(2))).await;
    let t = topic("max");
    let mut stream = b.subscribe(earliest(&t).group("g")).await.unwrap();
    let mut dead = b.subscribe(earliest(&dead_letter_topic(&t))).await.unwrap();
    b.publish(&t, Message::new("fails")).await.unwrap();
    let mut first = next(&mut stream).await;
    first.retry().await.unwrap();
    let mut second = next(&mut stream).await;
    assert_eq!(second.metadata().attempt, 2);
    second.retry_after(Duration::from_millis(10)).await.unwrap();
    let dl = next(&mut dead).await;
    assert_eq!(dl.message().id(), first.message().id());
    assert_eq!(
        dl.message().header(headers::DEAD_LETTER_REASON),
        Some("max deliveries (2) reached")
    );
    assert_eq!(dl.message().header(headers::ATTEMPTS), Some("2"));
    assert!(recv(&mut stream, QUIET).await.is_none(), "delivered again");
}

#[tokio::test]
async fn jetstream_long_handlers_are_not_redelivered() {
    let _shared = broker_lock("progress").await;
    let ack_wait = Duration::from_millis(600);
    let b = broker(config(Mode::JetStream).ack_wait(ack_wait)).await;
    let t = topic("slow");
    let mut one = b.subscribe(earliest(&t).group("g")).await.unwrap();
    let other = broker(config(Mode::JetStream).ack_wait(ack_wait)).await;
    let mut two = other.subscribe(earliest(&t).group("g")).await.unwrap();
    b.publish(&t, Message::new("slow")).await.unwrap();
    let mut held = tokio::select! {
        d = next(&mut one) => d,
        d = next(&mut two) => d,
    };
    // Four times ack_wait without a settle: progress signals keep it ours.
    let (a, b2) = tokio::join!(recv(&mut one, ack_wait * 4), recv(&mut two, ack_wait * 4));
    assert!(a.is_none() && b2.is_none(), "redelivered while in progress");
    held.ack().await.unwrap();
}

#[tokio::test]
async fn foreign_messages_get_a_stable_id() {
    let _shared = broker_lock("foreign").await;
    let b = broker(config(Mode::JetStream)).await;
    let t = topic("foreign");
    // Create the stream through msg, then publish with the raw client.
    b.publish(&t, Message::new("ours")).await.unwrap();
    let js = async_nats::jetstream::new(b.client().clone());
    js.publish(t.clone(), "theirs".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut stream = b.subscribe(earliest(&t).group("g")).await.unwrap();
    let mut ours = next(&mut stream).await;
    ours.ack().await.unwrap();
    let mut theirs = next(&mut stream).await;
    assert_eq!(theirs.message().payload().as_ref(), b"theirs");
    let id = theirs.message().id();
    theirs.retry().await.unwrap();
    let again = next(&mut stream).await;
    assert_eq!(again.message().id(), id);
    assert_eq!(again.metadata().attempt, 2);
}

#[tokio::test]
async fn wildcards_in_both_modes() {
    let _shared = broker_lock("wildcards").await;
    for mode in [Mode::Core, Mode::JetStream] {
        let b = broker(config(mode)).await;
        let root = topic("w");
        let mut one = b.subscribe(earliest(&format!("{root}.*"))).await.unwrap();
        let mut all = b.subscribe(earliest(&format!("{root}.>"))).await.unwrap();
        for leaf in ["a", "b", "c.deep"] {
            b.publish(&format!("{root}.{leaf}"), Message::new(leaf))
                .await
                .unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..2 {
            let mut d = next(&mut one).await;
            got.push(d.metadata().topic.to_string());
            d.ack().await.unwrap();
        }
        got.sort();
        assert_eq!(got, [format!("{root}.a"), format!("{root}.b")], "{mode:?}");
        assert!(
            recv(&mut one, QUIET).await.is_none(),
            "{mode:?}: * matched two segments"
        );
        for _ in 0..3 {
            next(&mut all).await.ack().await.unwrap();
        }
    }
}

#[tokio::test]
async fn jetstream_bound_stream() {
    let _shared = broker_lock("bind").await;
    let root = topic("bound");
    let root = root.split('.').next().unwrap().to_owned();
    let name = format!("BOUND_{root}");
    let b = broker(
        config(Mode::JetStream)
            .streams(StreamSettings::default().bind(&name, vec![format!("{root}.>")])),
    )
    .await;
    let t = format!("{root}.x");
    b.publish(&t, Message::new("in the bound stream"))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(b.client().clone());
    let mut stream = js.get_stream(&name).await.expect("the bound stream exists");
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    // A topic outside the bound stream's subjects cannot be stored.
    match b.publish(&topic("outside"), Message::new("x")).await {
        Err(e) => assert!(!e.is_retryable(), "{e:?}"),
        Ok(_) => panic!("published outside the bound stream"),
    }
}

#[tokio::test]
async fn core_reject_publishes_the_dead_letter() {
    let _shared = broker_lock("core-reject").await;
    let b = broker(config(Mode::Core)).await;
    let t = topic("reject");
    let mut stream = b.subscribe(Subscription::new(&t)).await.unwrap();
    let mut dead = b
        .subscribe(Subscription::new(dead_letter_topic(&t)))
        .await
        .unwrap();
    b.publish(&t, Message::new("bad")).await.unwrap();
    let mut d = next(&mut stream).await;
    d.dead_letter("cannot decode").await.unwrap();
    let dl = next(&mut dead).await;
    assert_eq!(dl.message().id(), d.message().id());
    assert_eq!(
        dl.message().header(headers::DEAD_LETTER_REASON),
        Some("cannot decode")
    );
}

#[tokio::test]
async fn core_subscription_survives_a_restart() {
    let _alone = broker_lock("reconnect_after_restart").await;
    let b = broker(config(Mode::Core)).await;
    let t = topic("restart");
    let mut stream = b.subscribe(Subscription::new(&t).group("g")).await.unwrap();
    BrokerEnv::get("nats").restart().await.expect("restart");
    // The client resubscribes once it is back; publish until one arrives.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing after the restart"
        );
        let _ = b.publish(&t, Message::new("after")).await;
        let _ = b.flush().await;
        if let Ok(Some(Ok(d))) =
            tokio::time::timeout(Duration::from_millis(200), stream.next()).await
        {
            assert_eq!(d.message().payload().as_ref(), b"after");
            break;
        }
    }
}

#[tokio::test]
async fn bad_input_is_a_clear_error() {
    let _shared = broker_lock("bad-input").await;
    // Nothing listens on port 1.
    let refused = NatsBroker::connect(
        NatsConfig::from_url("nats://127.0.0.1:1")
            .unwrap()
            .connect_timeout(Duration::from_secs(1)),
    )
    .await
    .expect_err("connected to nothing");
    assert!(refused.is_retryable(), "{refused:?}");
    let b = broker(config(Mode::JetStream)).await;
    let too_big = vec![0u8; b.client().server_info().max_payload + 1];
    assert!(matches!(
        b.publish(&topic("big"), Message::new(too_big)).await,
        Err(Error::MessageTooLarge { .. })
    ));
    match b.subscribe(earliest("*.x")).await {
        Err(Error::InvalidConfig { reason: text, .. }) => assert!(text.contains("bind"), "{text}"),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("subscribed to a pattern no stream holds"),
    }
}

/// A core subscription is on the server when `subscribe` returns: a
/// message published right after on another connection reaches it. The
/// race is narrowest on a connection the server has just accepted, so it
/// is run many times, each on a fresh connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_subscription_is_in_place_when_subscribe_returns() {
    let _shared = broker_lock("in-place").await;
    let publisher = broker(config(Mode::Core)).await;
    let mut missed = 0;
    for round in 0..300 {
        let subscriber = broker(config(Mode::Core)).await;
        let topic = topic("in-place");
        let mut stream = subscriber
            .subscribe(Subscription::new(&topic))
            .await
            .expect("subscribe");
        publisher
            .publish(&topic, Message::new(format!("round {round}")))
            .await
            .expect("publish");
        if recv(&mut stream, Duration::from_secs(2)).await.is_none() {
            missed += 1;
        }
    }
    assert_eq!(
        missed, 0,
        "messages published right after subscribing were missed"
    );
}

/// The CloudEvents NATS binding both ways, with async-nats as the other
/// side: what msg writes has `ce-datacontenttype` (no `content-type`) and
/// percent-encoded values; what another client writes (header names in
/// another case, encoded values, a structured event under `Content-Type`)
/// msg reads.
#[tokio::test]
async fn cloudevents_follow_the_nats_binding_both_ways() {
    use msg_core::{Event, JsonCodec, PublisherExt};
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Order {
        order: u32,
    }
    let _shared = broker_lock("cloudevents").await;
    let b = broker(config(Mode::Core)).await;
    let t = topic("ce");
    // msg writes; the raw client reads the headers as they are on the wire.
    let mut raw = b.client().subscribe(t.clone()).await.unwrap();
    b.client().flush().await.unwrap();
    let event = Event::new("/shop", "com.example.order", Order { order: 1 })
        .with_subject("order 1 \u{2713} 100%41");
    b.publish_event(&t, &event).await.unwrap();
    let wire = tokio::time::timeout(WAIT, raw.next())
        .await
        .unwrap()
        .unwrap();
    let h = wire.headers.expect("headers");
    assert_eq!(
        h.get("ce-datacontenttype").map(|v| v.as_str()),
        Some("application/json")
    );
    assert!(
        h.get("content-type").is_none(),
        "the binding has no content-type"
    );
    assert_eq!(
        h.get("ce-subject").map(|v| v.as_str()),
        Some("order%201%20%E2%9C%93%20100%2541")
    );
    // Another client writes; msg reads.
    let mut stream = b.subscribe(Subscription::new(&t)).await.unwrap();
    let mut binary = async_nats::HeaderMap::new();
    for (name, value) in [
        ("Ce-SpecVersion", "1.0"),
        ("Ce-Id", "go-1"),
        ("Ce-Source", "/go"),
        ("Ce-Type", "com.example.order"),
        ("Ce-DataContentType", "application/json"),
        ("Ce-Subject", "Euro%20%E2%82%AC"),
    ] {
        binary.insert(name, value);
    }
    b.client()
        .publish_with_headers(t.clone(), binary, r#"{"order":2}"#.into())
        .await
        .unwrap();
    let mut structured = async_nats::HeaderMap::new();
    structured.insert("Content-Type", "application/cloudevents+json");
    let doc = r#"{"specversion":"1.0","id":"go-2","source":"/go","type":"t","data":{"order":3}}"#;
    b.client()
        .publish_with_headers(t.clone(), structured, doc.into())
        .await
        .unwrap();
    b.client().flush().await.unwrap();
    for expected in [2, 3] {
        let mut d = next(&mut stream).await;
        let e = Event::<Order>::from_message(d.message(), &JsonCodec)
            .unwrap_or_else(|err| panic!("not read: {}", err.chain()));
        d.ack().await.unwrap();
        assert_eq!(e.data.order, expected);
        if expected == 2 {
            assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
            assert_eq!(e.subject.as_deref(), Some("Euro \u{20AC}"));
            assert!(e.extensions.is_empty(), "{:?}", e.extensions);
        }
    }
}

/// A JetStream publish in flight when the server goes away fails at once
/// (retryable) instead of waiting out its 10 s request timeout, so that a
/// publisher that retries publishes again as soon as the server answers.
/// Before, after a 2 s outage publishing resumed only ~8 s after the
/// server answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_publishing_resumes_soon_after_an_outage() {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    // Alone: the restart would fail the other tests of this binary.
    let _alone = broker_lock("reconnect_after_restart").await;
    let b = broker(config(Mode::JetStream)).await;
    let t = topic("recover");
    b.publish(&t, Message::new("before")).await.unwrap();
    // Steady publishers, several publishes in flight at any moment, each
    // failure retried; each records when the broker accepted its publishes.
    let accepted: Vec<Arc<Mutex<Vec<Instant>>>> = (0..8).map(|_| Arc::default()).collect();
    let publishers: Vec<_> = accepted
        .iter()
        .map(|accepted| {
            let (b, t, accepted) = (b.clone(), t.clone(), accepted.clone());
            tokio::spawn(async move {
                loop {
                    match b.publish(&t, Message::new("steady")).await {
                        Ok(_) => accepted.lock().unwrap().push(Instant::now()),
                        // Retryable, or (for a moment after the restart,
                        // while JetStream loads its streams) "no stream".
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    BrokerEnv::get("nats")
        .restart_after(Duration::from_secs(2))
        .await
        .expect("restart nats (cargo xtask brokers up nats)");
    // The restart returns once the server answers again.
    let answered = Instant::now();
    let deadline = answered + Duration::from_secs(15);
    // Every publisher resumed: the one whose publish was in flight when
    // the server went is the one that waited.
    let resumed = loop {
        let firsts: Vec<Option<Instant>> = accepted
            .iter()
            .map(|a| a.lock().unwrap().iter().copied().find(|at| *at > answered))
            .collect();
        if firsts.iter().all(Option::is_some) {
            break firsts.into_iter().flatten().max().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "a publisher had no publish accepted within 15 s of the server answering"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for p in publishers {
        p.abort();
    }
    let took = resumed - answered;
    println!("publishing resumed {took:?} after the server answered");
    // Well under the 10 s request timeout the in-flight publishes waited.
    assert!(
        took < Duration::from_secs(3),
        "publishing resumed {took:?} after the server answered"
    );
}

/// Requests in JetStream mode: 10,000 of them over one connection use its
/// core NATS inbox; no stream keeps replies, and the request topic's
/// stream has one consumer, the responder's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_use_the_core_inbox_and_store_no_reply() {
    let _shared = broker_lock("requests").await;
    let b = broker(config(Mode::JetStream)).await;
    let client = b.client().clone();
    let t = topic("request");
    let conn = msg_core::Connection::new(b);
    let router = msg_testkit::echo_responder(&conn, earliest(&t).group("answer")).await;
    let requester = conn.requester().await.unwrap().clone();
    assert!(
        requester.address().starts_with("_INBOX."),
        "{}",
        requester.address()
    );
    msg_testkit::request_echoes(&requester, &t, 10, WAIT).await;
    let js = async_nats::jetstream::new(client);
    let stream = js.stream_by_subject(requester.address()).await;
    assert!(stream.is_err(), "no stream holds the inbox: {stream:?}");
    let mut request_stream = js
        .get_stream(js.stream_by_subject(&t).await.unwrap())
        .await
        .unwrap();
    let info = request_stream.info().await.unwrap();
    assert_eq!(
        info.state.consumer_count, 1,
        "the responder's consumer, and no other"
    );
    assert_eq!(info.state.messages, 10_000, "the requests, and no reply");
    router.shutdown().await;
    conn.close().await.unwrap();
}
