//! Kafka specifics: against the broker of `cargo xtask brokers up kafka`
//! (tansu), and fault tests on librdkafka's in-process mock cluster, whose
//! brokers can be taken down and up.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use msg_core::{
    DeliveryStream, Event, Message, Publisher, PublisherExt, StartPosition, Subscriber,
    Subscription, Uuid, headers,
};
use msg_kafka::publisher::HEADER_KEY_HEX;
use msg_kafka::{HEADER_ORIGINAL_OFFSET, HEADER_ORIGINAL_PARTITION, KafkaBroker, KafkaConfig};
use msg_testkit::{BrokerEnv, collect, recv};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::FutureRecord;

const WAIT: Duration = Duration::from_secs(20);

fn config() -> KafkaConfig {
    KafkaConfig::from_url(BrokerEnv::get("kafka").url()).expect("URL")
}

fn unique(prefix: &str) -> String {
    format!("{prefix}.{}", &Uuid::new_v4().simple().to_string()[..12])
}

fn earliest(topic: &str) -> Subscription {
    Subscription::new(topic).start(StartPosition::Earliest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsettled_message_holds_the_commit_point_back() {
    let broker = KafkaBroker::connect(config().partitions(1)).await.unwrap();
    let (topic, group) = (unique("kt.gap"), unique("gap"));
    let sent: Vec<Message> = (0..5)
        .map(|i| Message::new(format!("m{i}")).with_key("k"))
        .collect();
    // One record batch each: tansu's in-memory storage cannot fetch from
    // the middle of a batch (it skips to the next batch), which Kafka can.
    for m in &sent {
        broker.publish(&topic, m.clone()).await.unwrap();
    }

    let first = KafkaBroker::connect(config()).await.unwrap();
    let mut stream = first
        .subscribe(earliest(&topic).group(&group))
        .await
        .unwrap();
    let mut held = None;
    for expected in &sent {
        let mut d = recv(&mut stream, WAIT).await.expect("delivery");
        assert_eq!(d.message().id(), expected.id());
        if expected.id() == sent[2].id() {
            held = Some(d); // handled by nobody: neither acked nor nacked
        } else {
            d.ack().await.unwrap();
        }
    }
    // Closing commits the settled prefix: offsets 0 and 1, not 3 and 4.
    Subscriber::close(&first).await.unwrap();
    drop(held);

    let second = KafkaBroker::connect(config()).await.unwrap();
    let mut stream = second
        .subscribe(earliest(&topic).group(&group))
        .await
        .unwrap();
    let again = collect(&mut stream, 3, WAIT).await;
    let ids: Vec<Uuid> = again.iter().map(|d| d.message().id()).collect();
    assert_eq!(ids, [sent[2].id(), sent[3].id(), sent[4].id()]);
    assert!(
        recv(&mut stream, Duration::from_millis(500))
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_say_where_they_came_from() {
    let broker = KafkaBroker::connect(config()).await.unwrap();
    let topic = unique("kt.dlq");
    let mut stream = broker.subscribe(earliest(&topic)).await.unwrap();
    let mut dead = broker
        .subscribe(earliest(&format!("{topic}.dlq")))
        .await
        .unwrap();
    broker
        .publish(&topic, Message::new("poison").with_key("k1"))
        .await
        .unwrap();
    let mut d = recv(&mut stream, WAIT).await.expect("delivery");
    let (partition, offset) = (d.metadata().partition, d.metadata().offset);
    d.dead_letter("cannot parse").await.unwrap();
    let dl = recv(&mut dead, WAIT).await.expect("dead letter");
    let m = dl.message();
    assert_eq!(m.key(), Some("k1"));
    assert_eq!(m.header(headers::DEAD_LETTER_REASON), Some("cannot parse"));
    assert_eq!(
        m.header(HEADER_ORIGINAL_PARTITION),
        partition.map(|p| p.to_string()).as_deref()
    );
    assert_eq!(
        m.header(HEADER_ORIGINAL_OFFSET),
        offset.map(|o| o.to_string()).as_deref()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_other_clients_are_read_and_dead_lettered_losslessly() {
    let broker = KafkaBroker::connect(config()).await.unwrap();
    let topic = unique("kt.foreign");
    let mut stream = broker.subscribe(earliest(&topic)).await.unwrap();
    let mut dead = broker
        .subscribe(earliest(&format!("{topic}.dlq")))
        .await
        .unwrap();
    let key = [0xffu8, 0x00, 0x7f];
    let record = FutureRecord::to(&topic)
        .payload(&b"from java"[..])
        .key(&key[..])
        .headers(OwnedHeaders::new().insert(Header {
            key: "trace",
            value: Some("abc"),
        }));
    broker
        .producer()
        .send(record, Duration::from_secs(5))
        .await
        .expect("raw produce");

    let mut d = recv(&mut stream, WAIT).await.expect("delivery");
    let id = d.message().id();
    assert_eq!(d.message().key(), None);
    assert_eq!(d.message().header(HEADER_KEY_HEX), Some("ff007f"));
    assert_eq!(d.message().header("trace"), Some("abc"));
    assert_eq!(&d.message().payload()[..], b"from java");
    d.retry().await.unwrap();
    let mut again = recv(&mut stream, WAIT).await.expect("redelivery");
    assert_eq!(again.message().id(), id, "the same record keeps its id");
    again.dead_letter("unknown format").await.unwrap();

    let dl = recv(&mut dead, WAIT).await.expect("dead letter");
    assert_eq!(dl.message().id(), id);
    assert_eq!(dl.message().header(HEADER_KEY_HEX), Some("ff007f"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patterns_match_existing_topics() {
    let broker = KafkaBroker::connect(config()).await.unwrap();
    let root = unique("kt.wild");
    let (a, b, deep) = (
        format!("{root}.a"),
        format!("{root}.b"),
        format!("{root}.b.c"),
    );
    for t in [&a, &b, &deep] {
        broker.publish(t, Message::new(t.clone())).await.unwrap();
    }
    let mut one_level = broker
        .subscribe(earliest(&format!("{root}.*")))
        .await
        .unwrap();
    let got = collect(&mut one_level, 2, WAIT).await;
    let topics: HashSet<&str> = got.iter().map(|d| &*d.metadata().topic).collect();
    assert_eq!(topics, HashSet::from([a.as_str(), b.as_str()]));
    assert!(
        recv(&mut one_level, Duration::from_millis(500))
            .await
            .is_none(),
        "'*' matched two segments"
    );
    let mut all = broker
        .subscribe(earliest(&format!("{root}.>")))
        .await
        .unwrap();
    assert_eq!(collect(&mut all, 3, WAIT).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_subscription_sees_what_is_published_after_subscribe_returns() {
    let broker = KafkaBroker::connect(config()).await.unwrap();
    let topic = unique("kt.latest");
    let old = Message::new("before");
    broker.publish(&topic, old.clone()).await.unwrap();
    let mut stream = broker.subscribe(Subscription::new(&topic)).await.unwrap();
    let new = Message::new("after");
    broker.publish(&topic, new.clone()).await.unwrap();
    let got = collect(&mut stream, 1, WAIT).await;
    assert_eq!(got[0].message().id(), new.id());
    assert!(
        recv(&mut stream, Duration::from_millis(500))
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_use_the_kafka_cloudevents_binding() {
    let broker = KafkaBroker::connect(config()).await.unwrap();
    let topic = unique("kt.ce");
    let mut stream = broker.subscribe(earliest(&topic)).await.unwrap();
    let event = Event::new("/shop", "com.example.order.placed", 7u32);
    broker.publish_event(&topic, &event).await.unwrap();
    let d = recv(&mut stream, WAIT).await.expect("delivery");
    assert_eq!(
        d.message().header("ce_type"),
        Some("com.example.order.placed")
    );
    assert_eq!(d.message().header("ce_source"), Some("/shop"));
    assert_eq!(d.message().header("ce_specversion"), Some("1.0"));
}

// ------------------------------------------------------------------ faults

/// A mock cluster of three brokers with one topic of three partitions, each
/// on all three brokers, and a transport configured for it.
fn mock(
    topic: &str,
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    KafkaConfig,
) {
    let cluster = MockCluster::new(3).expect("mock cluster");
    cluster.create_topic(topic, 3, 3).expect("mock topic");
    cluster
        .create_topic(&format!("{topic}.dlq"), 1, 3)
        .expect("mock topic");
    let config = KafkaConfig::new(vec![cluster.bootstrap_servers()])
        // The mock has no admin API; its topics exist already.
        .create_topics(false)
        .publish_timeout(Duration::from_secs(60));
    (cluster, config)
}

async fn drain(stream: &mut DeliveryStream, want: &HashSet<Uuid>) {
    let mut got = HashSet::new();
    while !want.is_subset(&got) {
        match tokio::time::timeout(Duration::from_secs(60), stream.next()).await {
            Ok(Some(Ok(mut d))) => {
                d.ack().await.unwrap();
                got.insert(d.message().id());
            }
            Ok(Some(Err(e))) => panic!("stream error: {}", e.chain()),
            Ok(None) => panic!("the stream ended"),
            Err(_) => panic!(
                "{} of {} messages arrived",
                want.intersection(&got).count(),
                want.len()
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_survive_brokers_going_down_and_up() {
    let topic = "faults.publish";
    let (cluster, config) = mock(topic);
    let broker = Arc::new(KafkaBroker::connect(config.clone()).await.unwrap());
    let sent: Vec<Message> = (0..300)
        .map(|i| Message::new(format!("m{i}")).with_key(format!("k{}", i % 7)))
        .collect();
    let publishing = {
        let broker = broker.clone();
        let sent = sent.clone();
        tokio::spawn(async move {
            for chunk in sent.chunks(10) {
                broker.publish_batch(topic, chunk.to_vec()).await?;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<(), msg_core::Error>(())
        })
    };
    for id in 1..=3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        cluster.broker_down(id).unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        cluster.broker_up(id).unwrap();
    }
    publishing
        .await
        .unwrap()
        .expect("every publish succeeds in the end");

    let consumer = KafkaBroker::connect(config).await.unwrap();
    let mut stream = consumer
        .subscribe(earliest(topic).group("check"))
        .await
        .unwrap();
    drain(&mut stream, &sent.iter().map(Message::id).collect()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumption_goes_on_across_an_outage_of_every_broker() {
    let topic = "faults.consume";
    let (cluster, config) = mock(topic);
    let broker = KafkaBroker::connect(config.clone()).await.unwrap();
    let before: Vec<Message> = (0..50).map(|i| Message::new(format!("b{i}"))).collect();
    broker.publish_batch(topic, before.clone()).await.unwrap();
    let mut stream = broker
        .subscribe(earliest(topic).group("outage"))
        .await
        .unwrap();
    drain(&mut stream, &before.iter().map(Message::id).collect()).await;

    for id in 1..=3 {
        cluster.broker_down(id).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for id in 1..=3 {
        cluster.broker_up(id).unwrap();
    }
    let after: Vec<Message> = (0..50).map(|i| Message::new(format!("a{i}"))).collect();
    broker.publish_batch(topic, after.clone()).await.unwrap();
    drain(&mut stream, &after.iter().map(Message::id).collect()).await;
}

/// The topics the broker has now.
fn broker_topics() -> HashSet<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", config().brokers().join(","))
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(None, WAIT).unwrap();
    metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| t.name().to_owned())
        .collect()
}

/// 10,000 requests over one connection use one reply topic of one
/// partition; a reply to a reply topic that does not exist is dropped at
/// once, and does not make the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_use_one_reply_topic() {
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let topic = unique("kt.request");
    let conn = msg_core::Connection::new(KafkaBroker::connect(config()).await.unwrap());
    let router = msg_testkit::echo_responder(&conn, earliest(&topic).group(unique("answer"))).await;
    let requester = conn.requester().await.unwrap().clone();
    let inbox = requester.address().to_owned();
    msg_testkit::request_echoes(&requester, &topic, 10, WAIT * 3).await;
    let topics = broker_topics();
    assert!(topics.contains(&inbox));
    let reply_topics = topics
        .iter()
        .filter(|t| t.starts_with("msg-reply."))
        .count();
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", config().brokers().join(","))
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(None, WAIT).unwrap();
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == inbox)
        .map(|t| t.partitions().len());
    assert_eq!(partitions, Some(1), "one partition for one reader");
    router.shutdown().await;
    conn.close().await.unwrap();
    // A reply for a requester whose topic is not there: dropped at once.
    let gone = format!("msg-reply.{}", Uuid::new_v4().simple());
    let late = KafkaBroker::connect(config()).await.unwrap();
    let started = std::time::Instant::now();
    late.publish(&gone, Message::new("late"))
        .await
        .expect("a reply nobody waits for is dropped, not an error");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "dropped at once, not after the publish timeout"
    );
    let after = broker_topics();
    assert!(
        !after.contains(&gone),
        "a reply does not make a reply topic"
    );
    assert!(
        after.iter().filter(|t| t.starts_with("msg-reply.")).count() <= reply_topics + 8,
        "no reply topic per request"
    );
}
