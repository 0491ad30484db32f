//! RustStream on Kafka (ruststream-rdkafka), next to msg-kafka, on the same
//! broker (tansu on the native path). The producer is configured as
//! msg-kafka's and msg-bench's raw side (idempotent, `acks=all`, 5 ms
//! linger) and consumers wait at most 10 ms per fetch as theirs do, since
//! tansu answers a fetch only when that wait is over.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use ruststream_rdkafka::prelude::*;
use ruststream_rdkafka::{ConnectedKafkaBroker, KafkaPublish};

use crate::measure::{Counter, Scenarios, Sizes, publish_at_rate, publish_many, unique};

#[derive(Deserialized)]
struct Frame<'a>(&'a [u8]);

#[subscriber]
async fn take(frame: &Frame<'_>, ctx: &mut Context<'_, (), Counter>) -> HandlerOutcome {
    ctx.state().record(frame.0);
    HandlerOutcome::ack()
}

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

    async fn publish(&self, topic: &str, n: usize, window: usize) -> Result<()> {
        let publisher = self.connected.publisher(KafkaPublish::default());
        publish_many(&publisher, topic, n, window).await
    }

    /// Starts an app whose one handler reads `topic` into `counter`.
    async fn consumer(&self, topic: &str, counter: &Counter) -> Result<RunningApp> {
        let state = counter.clone();
        let topic = topic.to_owned();
        let app = RustStream::new(AppInfo::new("bench", "0.0.0"))
            .on_startup(async move |()| Ok::<_, Infallible>(state))
            .with_broker(broker(&self.servers), move |b| {
                b.include(take.name(topic));
            });
        app.start()
            .await
            .map_err(|e| anyhow::anyhow!("starting the app: {e}"))
    }
}

async fn stop(running: RunningApp) -> Result<()> {
    running
        .shutdown()
        .await
        .map_err(|e| anyhow::anyhow!("shutdown: {e}"))
}

impl Scenarios for Kafka {
    async fn publish_rate(&self, sizes: Sizes) -> Result<f64> {
        let topic = unique("bench.kafka.publish");
        self.create(&topic).await?;
        let started = Instant::now();
        self.publish(&topic, sizes.messages, sizes.window).await?;
        Ok(sizes.messages as f64 / started.elapsed().as_secs_f64())
    }

    async fn consume_rate(&self, sizes: Sizes) -> Result<f64> {
        let topic = unique("bench.kafka.consume");
        self.create(&topic).await?;
        self.publish(&topic, sizes.messages, 64).await?;
        let counter = Counter::expecting(sizes.messages);
        let running = self.consumer(&topic, &counter).await?;
        counter.done(Duration::from_secs(120)).await?;
        stop(running).await?;
        Ok(counter.rate())
    }

    async fn latencies(&self, sizes: Sizes) -> Result<[f64; 3]> {
        let topic = unique("bench.kafka.latency");
        self.create(&topic).await?;
        let n = sizes.latency_messages();
        let counter = Counter::expecting(n);
        let running = self.consumer(&topic, &counter).await?;
        let publisher = self.connected.publisher(KafkaPublish::default());
        publish_at_rate(&publisher, &topic, n, sizes.rate).await?;
        counter.done(Duration::from_secs(60)).await?;
        stop(running).await?;
        Ok(counter.latencies())
    }
}
