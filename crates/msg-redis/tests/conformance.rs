//! The conformance suite against a real Redis started by
//! `cargo xtask brokers up redis`.

use std::sync::Arc;
use std::time::Duration;

use msg_core::Connection;
use msg_redis::{RedisBroker, RedisConfig};
use msg_testkit::{BrokerEnv, Harness};

/// An entry as another client writes it: `XADD` with a `payload` field.
async fn foreign_publish(url: String, topic: String, payload: Vec<u8>) -> msg_core::Result<()> {
    use fred::prelude::{Builder, ClientLike, StreamsInterface};
    let config =
        fred::types::config::Config::from_url(&url).map_err(msg_core::Error::broker_retryable)?;
    let client = Builder::from_config(config)
        .build()
        .map_err(msg_core::Error::broker_retryable)?;
    client
        .init()
        .await
        .map_err(msg_core::Error::broker_retryable)?;
    let _: String = client
        .xadd(
            topic.as_str(),
            false,
            None::<()>,
            "*",
            vec![("payload", fred::bytes::Bytes::from(payload))],
        )
        .await
        .map_err(msg_core::Error::broker_retryable)?;
    client
        .quit()
        .await
        .map_err(msg_core::Error::broker_retryable)
}

fn harness() -> Harness {
    let env = BrokerEnv::get("redis");
    let url = env.url().to_owned();
    let foreign_url = url.clone();
    Harness::new("redis", RedisBroker::CAPABILITIES, move || {
        let config = RedisConfig::from_url(&url)
            .expect("URL")
            .claim_idle(Duration::from_secs(5));
        async move {
            let broker = RedisBroker::connect(config).await?;
            Ok(Connection::new(broker.clone()).with_dead_letter_reader(Arc::new(broker)))
        }
    })
    .with_restart(move || {
        let env = env.clone();
        async move { env.restart().await }
    })
    .with_foreign_publish(move |topic, payload| {
        foreign_publish(foreign_url.clone(), topic, payload)
    })
}

msg_testkit::conformance_suite!(harness());
msg_testkit::outbox_case!(harness());
msg_testkit::scheduler_case!(harness());
