//! RustStream on the brokers `cargo xtask bench` starts, measured with the
//! scenarios of msg-bench: confirmed publishes with 64 in flight, a
//! pre-filled topic consumed through its app with a handler that acks at
//! once, and latency at a fixed rate. Prints one JSON object per figure, which
//! msg-bench's report puts beside msg's.
//!
//! ```text
//! ruststream-peer [--quick] [--transport memory|redis|nats|amqp|kafka]
//! ```

mod amqp;
mod kafka;
mod measure;
mod memory;
mod nats;
mod redis;

use anyhow::{Result, bail};

/// A broker's URL: the environment first, then the env file that
/// `cargo xtask brokers up` writes (as msg-testkit reads it).
fn broker_url(key: &str, broker: &str) -> Result<String> {
    if let Ok(url) = std::env::var(key) {
        return Ok(url);
    }
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/brokers/env");
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{key} is neither set nor in {}: run `cargo xtask brokers up {broker}`",
                file.display()
            )
        })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut quick = false;
    let mut only = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--transport" => only = it.next().cloned(),
            other => bail!(
                "unknown argument {other:?}; usage: ruststream-peer [--quick] [--transport NAME]"
            ),
        }
    }
    let sizes = if quick {
        measure::Sizes::quick()
    } else {
        measure::Sizes::full()
    };
    for transport in ["memory", "redis", "nats", "amqp", "kafka"] {
        if only.as_deref().is_some_and(|o| o != transport) {
            continue;
        }
        let figures = match transport {
            "memory" => {
                measure::rounds("memory", &memory::Memory::new(), sizes.in_process()).await?
            }
            "redis" => {
                let url = broker_url("MSG_TEST_REDIS_URL", "redis")?;
                measure::rounds("redis", &redis::Redis::connect(&url).await?, sizes).await?
            }
            "nats" => {
                let url = broker_url("MSG_TEST_NATS_URL", "nats")?;
                measure::rounds("nats", &nats::Nats::connect(&url).await?, sizes).await?
            }
            "amqp" => {
                let url = broker_url("MSG_TEST_RABBITMQ_URL", "rabbitmq")?;
                measure::rounds("amqp", &amqp::Amqp::connect(&url).await?, sizes).await?
            }
            _ => {
                let url = broker_url("MSG_TEST_KAFKA_URL", "kafka")?;
                measure::rounds("kafka", &kafka::Kafka::connect(&url).await?, sizes).await?
            }
        };
        for f in figures {
            println!("{}", serde_json::to_string(&f)?);
        }
    }
    Ok(())
}
