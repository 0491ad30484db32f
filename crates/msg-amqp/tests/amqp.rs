//! RabbitMQ-specific behaviour, against a real broker started by
//! `cargo xtask brokers up rabbitmq`.

use std::time::Duration;

use lapin::options::BasicGetOptions;
use msg_amqp::{AmqpBroker, AmqpConfig};
use msg_core::{
    DeliveryStream, Error, Message, Publisher, Subscriber, Subscription, dead_letter_topic, headers,
};
use msg_testkit::{BrokerEnv, broker_lock, recv};

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(500);

fn url() -> String {
    BrokerEnv::get("rabbitmq").url().to_owned()
}

async fn broker(config: AmqpConfig) -> AmqpBroker {
    AmqpBroker::connect(config).await.expect("connect")
}

fn config() -> AmqpConfig {
    AmqpConfig::from_url(&url()).expect("URL")
}

fn topic(name: &str) -> String {
    let id = msg_core::Uuid::new_v4().simple().to_string();
    format!("at.{name}.{}", &id[..10])
}

async fn next(stream: &mut DeliveryStream) -> msg_core::Delivery {
    recv(stream, WAIT).await.expect("a delivery")
}

#[tokio::test]
async fn mandatory_publishes_to_nowhere_fail() {
    let _shared = broker_lock("mandatory").await;
    let b = broker(config().mandatory(true)).await;
    let err = b
        .publish(&topic("nowhere"), Message::new("lost?"))
        .await
        .expect_err("a publish no queue takes");
    assert!(!err.is_retryable(), "{err:?}");
    assert!(err.chain().contains("no queue is bound"), "{}", err.chain());
    // The default drops it, as publishing to an unheard topic is fine elsewhere.
    broker(config())
        .await
        .publish(&topic("nowhere"), Message::new("dropped"))
        .await
        .unwrap();
}

#[tokio::test]
async fn wildcards_map_to_amqp_binding_keys() {
    let _shared = broker_lock("wildcards").await;
    let b = broker(config()).await;
    let root = topic("w");
    let mut one = b
        .subscribe(Subscription::new(format!("{root}.*")))
        .await
        .unwrap();
    let mut many = b
        .subscribe(Subscription::new(format!("{root}.>")))
        .await
        .unwrap();
    for t in [root.clone(), format!("{root}.a"), format!("{root}.b.c")] {
        b.publish(&t, Message::new(t.clone())).await.unwrap();
    }
    let d = next(&mut one).await;
    assert_eq!(&*d.metadata().topic, format!("{root}.a"));
    assert!(recv(&mut one, QUIET).await.is_none(), "* matched another");
    let mut got = Vec::new();
    for _ in 0..2 {
        let mut d = next(&mut many).await;
        got.push(d.metadata().topic.to_string());
        d.ack().await.unwrap();
    }
    got.sort();
    assert_eq!(got, [format!("{root}.a"), format!("{root}.b.c")]);
    if let Some(extra) = recv(&mut many, QUIET).await {
        panic!("> matched {} too", extra.metadata().topic);
    }
}

#[tokio::test]
async fn attempts_survive_requeues_and_retry_queues() {
    let _shared = broker_lock("attempts").await;
    let b = broker(config()).await;
    let t = topic("attempts");
    let mut stream = b.subscribe(Subscription::new(&t).group("g")).await.unwrap();
    b.publish(&t, Message::new("x").with_key("k"))
        .await
        .unwrap();
    let mut first = next(&mut stream).await;
    assert_eq!(first.metadata().attempt, 1);
    first.retry().await.unwrap();
    let mut second = next(&mut stream).await;
    assert_eq!(second.metadata().attempt, 2);
    second
        .retry_after(Duration::from_millis(200))
        .await
        .unwrap();
    let mut third = next(&mut stream).await;
    assert_eq!(third.metadata().attempt, 3);
    assert_eq!(third.message().id(), first.message().id());
    assert_eq!(third.message().key(), Some("k"));
    assert_eq!(third.message().header("msg-attempt"), None);
    third.ack().await.unwrap();
}

#[tokio::test]
async fn quorum_queues_count_deliveries() {
    let _shared = broker_lock("quorum").await;
    let b = broker(config().quorum_queues(true)).await;
    let t = topic("quorum");
    let mut stream = b.subscribe(Subscription::new(&t).group("q")).await.unwrap();
    b.publish(&t, Message::new("x")).await.unwrap();
    for attempt in 1..=3 {
        let mut d = next(&mut stream).await;
        assert_eq!(d.metadata().attempt, attempt);
        d.retry().await.unwrap();
    }
}

#[tokio::test]
async fn group_dead_letters_park_in_the_queue_dlq() {
    let _shared = broker_lock("dlq").await;
    let b = broker(config().max_deliveries(Some(2))).await;
    let t = topic("dlq");
    let mut stream = b.subscribe(Subscription::new(&t).group("g")).await.unwrap();
    let mut dead = b
        .subscribe(Subscription::new(dead_letter_topic(&t)))
        .await
        .unwrap();
    b.publish(&t, Message::new("poison")).await.unwrap();
    next(&mut stream).await.retry().await.unwrap();
    let mut last = next(&mut stream).await;
    last.retry().await.unwrap();
    // Subscribers of the dead-letter topic get it...
    let dl = next(&mut dead).await;
    assert_eq!(
        dl.message().header(headers::DEAD_LETTER_REASON),
        Some("max deliveries (2) reached")
    );
    assert!(recv(&mut stream, QUIET).await.is_none(), "delivered again");
    // ...and the group's dead-letter queue keeps it.
    let raw = lapin::Connection::connect(&url(), Default::default())
        .await
        .unwrap();
    let channel = raw.create_channel().await.unwrap();
    let parked = channel
        .basic_get(
            format!("{t}:g.dlq").as_str().into(),
            BasicGetOptions::default(),
        )
        .await
        .unwrap()
        .expect("a message in the dead-letter queue");
    assert_eq!(
        parked
            .delivery
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .as_str(),
        last.message().id().to_string()
    );
}

#[tokio::test]
async fn bad_input_is_a_clear_error() {
    let _shared = broker_lock("bad-input").await;
    let refused = AmqpBroker::connect_url("amqp://guest:guest@127.0.0.1:1/%2f")
        .await
        .expect_err("connected to nothing");
    assert!(refused.is_retryable(), "{refused:?}");
    let wrong = url().replacen("guest:guest", "guest:wrong-s3cret", 1);
    match AmqpBroker::connect_url(&wrong).await {
        Err(e) => assert!(
            !format!("{e:?} {}", e.chain()).contains("wrong-s3cret"),
            "{e:?}"
        ),
        Ok(_) => panic!("connected with a wrong password"),
    }
    let b = broker(config()).await;
    assert!(matches!(
        b.publish("bad topic", Message::new("x")).await,
        Err(Error::InvalidTopic { .. })
    ));
}

/// Another client's `message-id` that is not a UUID names its message: the
/// same `message-id` on the same topic gives the same id (a producer's
/// retry is recognised), another gives another, and a redelivery keeps it.
#[tokio::test]
async fn a_foreign_message_id_names_the_message() {
    let _shared = broker_lock("foreign-message-id").await;
    let b = broker(config()).await;
    let t = topic("foreign-id");
    let mut stream = b.subscribe(Subscription::new(&t).group("g")).await.unwrap();
    let raw = lapin::Connection::connect(&url(), Default::default())
        .await
        .unwrap();
    let channel = raw.create_channel().await.unwrap();
    for (message_id, body) in [("order-7", "a"), ("order-7", "b"), ("order-8", "c")] {
        channel
            .basic_publish(
                "msg".into(),
                t.as_str().into(),
                Default::default(),
                body.as_bytes(),
                lapin::BasicProperties::default().with_message_id(message_id.into()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // Four deliveries: "a" once more after its retry, in whatever order
    // the prefetch gives them.
    let mut ids: std::collections::HashMap<String, Vec<msg_core::Uuid>> = Default::default();
    let mut retried = false;
    for _ in 0..4 {
        let mut d = next(&mut stream).await;
        let body = String::from_utf8(d.message().payload().to_vec()).unwrap();
        ids.entry(body.clone()).or_default().push(d.message().id());
        if body == "a" && !retried {
            retried = true;
            d.retry().await.unwrap();
        } else {
            d.ack().await.unwrap();
        }
    }
    let a = &ids["a"];
    assert_eq!(a.len(), 2);
    assert_eq!(a[0], a[1], "a redelivery keeps the id");
    assert_eq!(ids["b"], [a[0]], "the same message-id, the same id");
    assert_ne!(ids["c"], [a[0]], "another message-id, another id");
}

/// A defer of a delivery whose channel a broker restart closed fails with
/// a retryable error, publishes no copy, and the broker's redelivery is
/// the one copy that comes back (a reported success and a retry-queue copy
/// beside the redelivery was the defect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_defer_across_a_restart_comes_back_once() {
    use futures::StreamExt;
    // Alone: the restart would fail the other tests of this binary.
    let _alone = broker_lock("reconnect_after_restart").await;
    let b = broker(config()).await;
    let t = topic("defer-restart");
    let mut stream = b.subscribe(Subscription::new(&t).group("g")).await.unwrap();
    let m = Message::new("once");
    b.publish(&t, m.clone()).await.unwrap();
    let mut d = next(&mut stream).await;
    BrokerEnv::get("rabbitmq")
        .restart()
        .await
        .expect("restart rabbitmq (cargo xtask brokers up rabbitmq)");
    let settled = d.retry_after(Duration::from_millis(300)).await;
    let err = settled.expect_err("a defer on a closed channel reported success");
    assert!(err.is_retryable(), "{err}");
    // Count what comes back, past the retry queue's delay.
    let mut copies = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut quiet_since = None;
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
            Ok(Some(Ok(mut again))) => {
                assert_eq!(again.message().id(), m.id());
                copies += 1;
                again.ack().await.unwrap();
                quiet_since = Some(tokio::time::Instant::now());
            }
            // The stream reports the outage and goes on.
            Ok(Some(Err(e))) => assert!(e.is_retryable(), "{e}"),
            Ok(None) => panic!("the stream ended"),
            Err(_) => {
                if quiet_since.is_some_and(|q| q.elapsed() > Duration::from_secs(2)) {
                    break;
                }
            }
        }
    }
    assert_eq!(copies, 1, "the message came back {copies} times");
}

/// CloudEvents as other SDKs write them to RabbitMQ (the AMQP binding
/// mapped onto 0-9-1): binary mode with `cloudEvents_` attributes, the
/// content type in the `content_type` property and `time` as an AMQP
/// timestamp; structured mode with only the property. Both are read.
#[tokio::test]
async fn cloudevents_of_other_sdks_are_read() {
    use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
    use msg_core::{Event, JsonCodec};
    let _shared = broker_lock("foreign-cloudevents").await;
    let b = broker(config()).await;
    let t = topic("foreign-ce");
    let mut stream = b.subscribe(Subscription::new(&t).group("g")).await.unwrap();
    let raw = lapin::Connection::connect(&url(), Default::default())
        .await
        .unwrap();
    let channel = raw.create_channel().await.unwrap();
    let mut attributes = FieldTable::default();
    let text = |v: &str| AMQPValue::LongString(LongString::from(v.as_bytes().to_vec()));
    for (name, value) in [
        ("cloudEvents_specversion", "1.0"),
        ("cloudEvents_id", "py-1"),
        ("cloudEvents_source", "/python"),
        ("cloudEvents_type", "com.example.order"),
    ] {
        attributes.insert(ShortString::from(name), text(value));
    }
    attributes.insert(
        ShortString::from("cloudEvents_time"),
        AMQPValue::Timestamp(1_700_000_000),
    );
    let binary = lapin::BasicProperties::default()
        .with_content_type("application/json".into())
        .with_headers(attributes);
    let structured =
        lapin::BasicProperties::default().with_content_type("application/cloudevents+json".into());
    let doc =
        br#"{"specversion":"1.0","id":"py-2","source":"/python","type":"t","data":{"order":2}}"#;
    for (payload, properties) in [(&br#"{"order":1}"#[..], binary), (&doc[..], structured)] {
        channel
            .basic_publish(
                "msg".into(),
                t.as_str().into(),
                Default::default(),
                payload,
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    #[derive(serde::Deserialize)]
    struct Order {
        order: u32,
    }
    let mut events = Vec::new();
    for _ in 0..2 {
        let mut d = next(&mut stream).await;
        let e = Event::<Order>::from_message(d.message(), &JsonCodec)
            .unwrap_or_else(|err| panic!("not read: {}", err.chain()));
        d.ack().await.unwrap();
        events.push(e);
    }
    events.sort_by_key(|e| e.data.order);
    assert_eq!(events[0].id, "py-1");
    assert_eq!(
        events[0].datacontenttype.as_deref(),
        Some("application/json")
    );
    assert_eq!(
        events[0].time,
        Some(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    );
    assert!(
        events[0].extensions.is_empty(),
        "{:?}",
        events[0].extensions
    );
    assert_eq!(events[1].id, "py-2");
}

/// An RPC server written as RabbitMQ's tutorial does (raw lapin: reply
/// through the default exchange to the `reply-to` queue, with the request's
/// `correlation-id` property and no msg headers) answers an msg requester.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_rpc_server_answers_an_msg_requester() {
    use futures::StreamExt;
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueBindOptions,
        QueueDeclareOptions,
    };

    let _shared = broker_lock("rpc-interop").await;
    let t = topic("rpc");
    let raw = lapin::Connection::connect(&url(), Default::default())
        .await
        .unwrap();
    let channel = raw.create_channel().await.unwrap();
    let queue = format!("{t}.server");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            "msg".into(),
            t.as_str().into(),
            QueueBindOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let mut requests = channel
        .basic_consume(
            queue.as_str().into(),
            "server".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let server = tokio::spawn(async move {
        while let Some(Ok(request)) = requests.next().await {
            let reply_to = request.properties.reply_to().clone().expect("reply-to");
            let correlation = request
                .properties
                .correlation_id()
                .clone()
                .expect("correlation-id");
            let mut answer = b"re: ".to_vec();
            answer.extend_from_slice(&request.data);
            channel
                .basic_publish(
                    "".into(),
                    reply_to.as_str().into(),
                    BasicPublishOptions::default(),
                    &answer,
                    lapin::BasicProperties::default().with_correlation_id(correlation),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            request.ack(BasicAckOptions::default()).await.unwrap();
        }
    });
    let conn = msg_core::Connection::new(broker(config()).await);
    for i in 0..3 {
        let reply = conn
            .request(&t, Message::new(format!("q{i}")), WAIT)
            .await
            .unwrap();
        assert_eq!(reply.payload().as_ref(), format!("re: q{i}").as_bytes());
    }
    conn.close().await.unwrap();
    server.abort();
}

/// 10,000 requests over one connection use one reply queue, named after
/// the address, which the broker deletes when the connection closes; the
/// answering queue has one consumer, the route's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_use_one_reply_queue_deleted_on_close() {
    use lapin::options::QueueDeclareOptions;

    let _shared = broker_lock("requests").await;
    let t = topic("requests");
    let conn = msg_core::Connection::new(broker(config()).await);
    let router = msg_testkit::echo_responder(&conn, Subscription::new(&t).group("answer")).await;
    let requester = conn.requester().await.unwrap().clone();
    let inbox = requester.address().to_owned();
    msg_testkit::request_echoes(&requester, &t, 10, WAIT).await;
    let raw = lapin::Connection::connect(&url(), Default::default())
        .await
        .unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let channel = raw.create_channel().await.unwrap();
    let answering = channel
        .queue_declare(
            format!("{t}:answer").as_str().into(),
            passive,
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        answering.consumer_count(),
        1,
        "the route's consumer, and no other"
    );
    // Another connection may not even look at an exclusive queue.
    let reply_queue = channel
        .queue_declare(inbox.as_str().into(), passive, Default::default())
        .await
        .expect_err("the reply queue is exclusive");
    assert!(
        reply_queue.to_string().contains("RESOURCE_LOCKED"),
        "the reply queue is named after its address: {reply_queue}"
    );
    router.shutdown().await;
    conn.close().await.unwrap();
    // Auto-delete: gone once its consumer is cancelled.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // A passive declare of a missing queue closes its channel.
        let channel = raw.create_channel().await.unwrap();
        let found = channel
            .queue_declare(inbox.as_str().into(), passive, Default::default())
            .await;
        match found {
            Err(e) if e.to_string().contains("NOT_FOUND") => break,
            Err(e) if e.to_string().contains("RESOURCE_LOCKED") => {}
            other => panic!("unexpected: {other:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reply queue outlived its requester"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
