//! The conformance suite against a real nats-server started by
//! `cargo xtask brokers up nats`, once per mode.

use std::sync::Arc;

use msg_core::Connection;
use msg_nats::{Mode, NatsBroker, NatsConfig};
use msg_testkit::{BrokerEnv, Harness};

/// A message as another client publishes it: to the topic's subject, no
/// headers; through JetStream (acknowledged) in JetStream mode.
async fn foreign_publish(
    url: String,
    mode: Mode,
    topic: String,
    payload: Vec<u8>,
) -> msg_core::Result<()> {
    let client = async_nats::connect(url.as_str())
        .await
        .map_err(msg_core::Error::broker_retryable)?;
    match mode {
        Mode::Core => {
            client
                .publish(topic, payload.into())
                .await
                .map_err(msg_core::Error::broker_retryable)?;
            client
                .flush()
                .await
                .map_err(msg_core::Error::broker_retryable)?;
        }
        Mode::JetStream => {
            async_nats::jetstream::new(client)
                .publish(topic, payload.into())
                .await
                .map_err(msg_core::Error::broker_retryable)?
                .await
                .map_err(msg_core::Error::broker_retryable)?;
        }
    }
    Ok(())
}

async fn harness(mode: Mode) -> Harness {
    let env = BrokerEnv::get("nats");
    let foreign_url = env.url().to_owned();
    let config = NatsConfig::from_url(env.url()).expect("URL").mode(mode);
    // The capabilities hold the server's payload limit: ask it.
    let capabilities = NatsBroker::connect(config.clone())
        .await
        .expect("connect to nats")
        .capabilities();
    let name = match mode {
        Mode::Core => "nats",
        Mode::JetStream => "nats-jetstream",
    };
    Harness::new(name, capabilities, move || {
        let config = config.clone();
        async move {
            let broker = NatsBroker::connect(config).await?;
            Ok(Connection::new(broker.clone()).with_dead_letter_reader(Arc::new(broker)))
        }
    })
    .with_restart(move || {
        let env = env.clone();
        async move { env.restart().await }
    })
    .with_foreign_publish(move |topic, payload| {
        foreign_publish(foreign_url.clone(), mode, topic, payload)
    })
}

mod core {
    msg_testkit::conformance_suite!(super::harness(msg_nats::Mode::Core).await);
}

mod jetstream {
    msg_testkit::conformance_suite!(super::harness(msg_nats::Mode::JetStream).await);
    // The outbox's relay needs a publish the broker confirms.
    msg_testkit::outbox_case!(super::harness(msg_nats::Mode::JetStream).await);
    msg_testkit::scheduler_case!(super::harness(msg_nats::Mode::JetStream).await);
}
