//! The conformance suite against the Kafka-API broker started by
//! `cargo xtask brokers up kafka`.
//!
//! No restart command: tansu on the native path keeps its data in memory,
//! so a restart loses it and the reconnect case would test nothing but the
//! loss. The fault tests in `tests/kafka.rs` take brokers down and up on
//! librdkafka's mock cluster instead.

use std::sync::Arc;
use std::time::Duration;

use msg_core::Connection;
use msg_kafka::{KafkaBroker, KafkaConfig};
use msg_testkit::{BrokerEnv, Harness};

/// A record as another client produces it: no key, no headers.
async fn foreign_publish(url: String, topic: String, payload: Vec<u8>) -> msg_core::Result<()> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let servers = url.trim_start_matches("kafka://").to_owned();
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .map_err(msg_core::Error::broker_retryable)?;
    producer
        .send(
            FutureRecord::<(), _>::to(&topic).payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| msg_core::Error::broker_retryable(e))?;
    Ok(())
}

fn harness() -> Harness {
    let env = BrokerEnv::get("kafka");
    let url = env.url().to_owned();
    let config = KafkaConfig::from_url(&url).expect("URL");
    Harness::new("kafka", KafkaBroker::CAPABILITIES, move || {
        let config = config.clone();
        async move {
            let broker = KafkaBroker::connect(config).await?;
            Ok(Connection::new(broker.clone()).with_dead_letter_reader(Arc::new(broker)))
        }
    })
    // How long a member may wait for its next message. A group on tansu can
    // stall for more than the default 15 s while members join (tansu 0.6
    // keeps a departed leader and delays followers; a fresh-clone CI run
    // once lost the consumer_groups case that way); Kafka's own bound on a
    // rebalance is the session timeout, 45 s.
    .with_timeout(Duration::from_secs(45))
    // tansu keeps its data in a SQLite file: a restart keeps it.
    .with_restart(move || {
        let env = env.clone();
        async move { env.restart().await }
    })
    .with_foreign_publish(move |topic, payload| foreign_publish(url.clone(), topic, payload))
}

msg_testkit::conformance_suite!(harness());
msg_testkit::outbox_case!(harness());
msg_testkit::scheduler_case!(harness());
