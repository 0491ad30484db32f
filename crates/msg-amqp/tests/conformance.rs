//! The conformance suite against a real RabbitMQ started by
//! `cargo xtask brokers up rabbitmq`.

use std::sync::Arc;

use msg_amqp::{AmqpBroker, AmqpConfig};
use msg_core::Connection;
use msg_testkit::{BrokerEnv, Harness};

/// A message as another client publishes it: to msg's exchange with the
/// topic as routing key, no properties (so no `message-id`), confirmed.
async fn foreign_publish(url: String, topic: String, payload: Vec<u8>) -> msg_core::Result<()> {
    let connection = lapin::Connection::connect(&url, Default::default())
        .await
        .map_err(msg_core::Error::broker_retryable)?;
    let channel = connection
        .create_channel()
        .await
        .map_err(msg_core::Error::broker_retryable)?;
    channel
        .confirm_select(Default::default())
        .await
        .map_err(msg_core::Error::broker_retryable)?;
    channel
        .basic_publish(
            "msg".into(),
            topic.as_str().into(),
            Default::default(),
            &payload,
            Default::default(),
        )
        .await
        .map_err(msg_core::Error::broker_retryable)?
        .await
        .map_err(msg_core::Error::broker_retryable)?;
    connection
        .close(0, "done".into())
        .await
        .map_err(msg_core::Error::broker_retryable)
}

fn harness() -> Harness {
    let env = BrokerEnv::get("rabbitmq");
    let url = env.url().to_owned();
    let foreign_url = url.clone();
    Harness::new("amqp", AmqpBroker::CAPABILITIES, move || {
        let config = AmqpConfig::from_url(&url).expect("URL");
        async move {
            let broker = AmqpBroker::connect(config).await?;
            Ok(Connection::new(broker.clone()).with_dead_letter_reader(Arc::new(broker)))
        }
    })
    // A group's dead letters are kept in its queue's dead-letter queue.
    .with_dead_letters_at(|topic, group| format!("{topic}:{group}.dlq"))
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
