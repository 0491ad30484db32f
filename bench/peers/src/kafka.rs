//! RustStream on Kafka (ruststream-rdkafka), next to msg-kafka, on the same
//! broker (tansu on the native path). The producer is configured as
//! msg-kafka's and msg-bench's raw side (idempotent, `acks=all`, 5 ms
//! linger) and consumers wait at most 10 ms per fetch as theirs do, since
//! tansu answers a fetch only when that wait is over.

use anyhow::{Result, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use ruststream_rdkafka::prelude::*;
use ruststream_rdkafka::{ConnectedKafkaBroker, KafkaPublish};

use crate::measure::{Counter, Peer, app, start, take, unique};

/// A broker in a consumer group of its own that starts at the beginning.
fn broker(servers: &str) -> KafkaBroker {
    KafkaBroker::new([servers])
        .default_group(unique("bench"))
        .config("auto.offset.reset", "earliest")
        .config("fetch.wait.max.ms", "10")
        .producer_config("enable.idempotence", "true")
        .producer_config("acks", "all")
        .producer_config("linger.ms", "5")
}

/// The connection publishes; topics are created through the admin API
/// (tansu does not create them on first use), 3 partitions as msg-kafka's.
pub struct Kafka {
    servers: String,
    connected: ConnectedKafkaBroker,
    admin: AdminClient<DefaultClientContext>,
}

impl Kafka {
    pub async fn connect(url: &str) -> Result<Self> {
        let servers = url.trim_start_matches("kafka://").to_owned();
        let connected = broker(&servers)
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("connecting to {servers}: {e}"))?;
        let admin = ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .create()?;
        Ok(Self {
            servers,
            connected,
            admin,
        })
    }

    async fn create(&self, topic: &str) -> Result<()> {
        let new = [NewTopic::new(topic, 3, TopicReplication::Fixed(1))];
        for result in self.admin.create_topics(&new, &AdminOptions::new()).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => bail!("creating {t}: {code}"),
            }
        }
        Ok(())
    }
}

impl Peer for Kafka {
    async fn topic(&self, scenario: &str, _filled: bool) -> Result<String> {
        let topic = unique(&format!("bench.kafka.{scenario}"));
        self.create(&topic).await?;
        Ok(topic)
    }

    fn publisher(&self) -> impl Publisher {
        self.connected.publisher(KafkaPublish::default())
    }

    async fn consumer(&self, topic: &str, counter: &Counter) -> Result<RunningApp> {
        let topic = topic.to_owned();
        start(app(counter).with_broker(broker(&self.servers), move |b| {
            b.include(take.name(topic));
        }))
        .await
    }
}
