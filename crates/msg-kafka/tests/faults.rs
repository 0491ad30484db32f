//! Faults under load against a real Kafka-API broker (tansu) started by
//! `cargo xtask brokers up kafka`: the broker restarted cleanly and killed
//! with SIGKILL while messages flow.
//!
//! The other fault case, a consumer process SIGKILLed mid-stream, runs on
//! librdkafka's mock cluster instead: when the killed member led its
//! group, tansu 0.6 keeps that dead leader while the group re-forms, and
//! the next member's join waits for it for good
//! (`docs/transports/kafka.md`).
//!
//! Durability relied on: the harness runs tansu on its SQLite storage
//! engine (WAL journal, `synchronous = normal`), which has written a
//! record to its file before the produce is acknowledged, so a killed
//! process loses nothing acknowledged; a machine that loses power may
//! lose the last transactions. The publisher waits for every in-sync
//! replica (`acks=all`); idempotence is off here, see below.

use std::time::Duration;

use msg_core::Connection;
use msg_kafka::{KafkaBroker, KafkaConfig};
use msg_testkit::{BrokerEnv, Harness};

fn harness() -> Harness {
    let config = KafkaConfig::from_url(BrokerEnv::get("kafka").url())
        .expect("URL")
        // tansu 0.6's SQLite engine panics (its storage task, after which
        // it answers every request with an error) on the first produce of
        // an idempotent producer it knew before a restart ("more or less
        // than one row" in its idempotence check); without idempotence a
        // retried produce is a duplicate, which the test counts.
        .property("enable.idempotence", "false");
    Harness::new("kafka", KafkaBroker::CAPABILITIES, move || {
        let config = config.clone();
        async move { Ok(Connection::new(KafkaBroker::connect(config).await?)) }
    })
    // A group on tansu can take long to settle after a restart.
    .with_timeout(Duration::from_secs(45))
}

/// The broker restarted cleanly, then killed, under a steady load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_under_load() {
    // Alone: the other case restarts the broker too.
    let _alone = msg_testkit::broker_lock("faults_restart").await;
    msg_testkit::faults::restart_under_load(
        &harness(),
        &BrokerEnv::get("kafka"),
        &[
            msg_testkit::faults::Restart::Graceful,
            msg_testkit::faults::Restart::Kill,
        ],
    )
    .await;
}

/// An outbox relay publishing while the broker restarts, cleanly and
/// killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_across_restarts() {
    // Alone: the other case restarts the broker too.
    let _alone = msg_testkit::broker_lock("faults_restart").await;
    msg_testkit::faults::relay_across_restarts(
        &harness(),
        &BrokerEnv::get("kafka"),
        &[
            msg_testkit::faults::Restart::Graceful,
            msg_testkit::faults::Restart::Kill,
        ],
        // While it restarts cleanly (about 12 s here), tansu answers
        // produce requests with UNKNOWN_SERVER_ERROR, which Kafka counts as
        // a refusal, not as the broker being away (the Java client does not
        // retry it either): each key's row then waits out this backoff.
        Duration::from_secs(1),
    )
    .await;
}

/// Where the mock cluster of `consumer_killed_mid_stream` listens, for the
/// child consumer, which reaches it over TCP like any client.
const MOCK_BOOTSTRAP: &str = "MSG_TEST_KAFKA_MOCK_BOOTSTRAP";

/// A harness on librdkafka's mock cluster at `bootstrap`: an in-process
/// Kafka that implements the consumer group protocol, standing in for
/// tansu, whose dead group leaders stall the group (see the top).
fn mock_harness(bootstrap: &str) -> Harness {
    let config = KafkaConfig::new(vec![bootstrap.to_owned()])
        // The mock has no admin API; a producer's metadata request
        // creates a topic.
        .create_topics(false)
        // The dead member leaves the group when its session ends.
        .property("session.timeout.ms", "6000");
    Harness::new("kafka-mock", KafkaBroker::CAPABILITIES, move || {
        let config = config.clone();
        async move { Ok(Connection::new(KafkaBroker::connect(config).await?)) }
    })
    .with_timeout(Duration::from_secs(45))
    .with_child_env(MOCK_BOOTSTRAP, bootstrap)
}

/// A consumer process SIGKILLed mid-stream, on the mock cluster: a second
/// consumer of the group takes its partitions once its session ended, and
/// every message is handled by one or the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_killed_mid_stream() {
    let cluster = rdkafka::mocking::MockCluster::new(3).expect("a mock cluster");
    let h = mock_harness(&cluster.bootstrap_servers());
    msg_testkit::faults::consumer_killed_mid_stream(&h, "faults_consumer_child").await;
}

/// The child process of `consumer_killed_mid_stream`; nothing unless
/// started as that child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_consumer_child() {
    if let Ok(bootstrap) = std::env::var(MOCK_BOOTSTRAP) {
        msg_testkit::faults::consumer_child(&mock_harness(&bootstrap)).await;
    }
}
