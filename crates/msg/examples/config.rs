//! Loads the broker and router settings from a TOML file, overridden by
//! environment variables, and runs a handler with them.
//!
//! ```sh
//! cargo run -p msg --example config
//! MSG_ROUTER__HANDLER__CONCURRENCY=2 cargo run -p msg --example config
//! MSG_CONFIG=/etc/billing.toml cargo run -p msg --example config
//! ```
//!
//! figment reads the file and the environment into one serde struct, and
//! a bad value's error names where it came from (the file and key, or the
//! variable); every transport's configuration and `HandlerOptions` are
//! serde types, so they load as they are.

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use msg::{Connection, HandlerOptions, Received, Router, Subscription};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    broker: Broker,
    router: RouterSettings,
}

/// The transport, chosen by the `transport` key; the rest of the table is
/// that transport's configuration.
#[derive(Debug, Deserialize)]
#[serde(tag = "transport", rename_all = "lowercase")]
enum Broker {
    Memory(msg::memory::MemoryConfig),
    #[cfg(feature = "redis")]
    Redis(msg::redis::RedisConfig),
    #[cfg(feature = "nats")]
    Nats(msg::nats::NatsConfig),
    #[cfg(feature = "amqp")]
    Amqp(msg::amqp::AmqpConfig),
    #[cfg(feature = "kafka")]
    Kafka(msg::kafka::KafkaConfig),
}

impl Broker {
    async fn connect(self) -> msg::Result<Connection> {
        Ok(match self {
            Broker::Memory(c) => Connection::new(msg::memory::MemoryBroker::with_config(c)?),
            #[cfg(feature = "redis")]
            Broker::Redis(c) => Connection::new(msg::redis::RedisBroker::connect(c).await?),
            #[cfg(feature = "nats")]
            Broker::Nats(c) => Connection::new(msg::nats::NatsBroker::connect(c).await?),
            #[cfg(feature = "amqp")]
            Broker::Amqp(c) => Connection::new(msg::amqp::AmqpBroker::connect(c).await?),
            #[cfg(feature = "kafka")]
            Broker::Kafka(c) => Connection::new(msg::kafka::KafkaBroker::connect(c).await?),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouterSettings {
    topic: String,
    group: String,
    #[serde(default)]
    handler: HandlerOptions,
}

fn load() -> anyhow::Result<Settings> {
    let file = std::env::var("MSG_CONFIG")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config.toml").into());
    Figment::new()
        .merge(Toml::file_exact(&file))
        .merge(Env::prefixed("MSG_").ignore(&["CONFIG"]).split("__"))
        .extract()
        .with_context(|| format!("loading the settings from {file} and MSG_* variables"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = load()?;
    println!("settings: {settings:#?}");
    let conn = settings.broker.connect().await?;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let router = Router::new(conn.clone(), conn.clone())
        .handle_with(
            Subscription::new(&settings.router.topic).group(&settings.router.group),
            settings.router.handler,
            move |r: Received| {
                let done = done_tx.clone();
                async move {
                    println!("handled {:?}", String::from_utf8_lossy(r.message.payload()));
                    let _ = done.send(());
                    Ok(())
                }
            },
        )
        .start()
        .await?;
    for i in 0..3 {
        msg::Publisher::publish(
            &conn,
            &settings.router.topic,
            msg::Message::new(format!("order {i}")),
        )
        .await?;
    }
    for _ in 0..3 {
        done_rx.recv().await.context("the router stopped early")?;
    }
    router.shutdown().await;
    Ok(())
}
