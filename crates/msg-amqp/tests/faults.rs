//! Faults under load against a real RabbitMQ started by
//! `cargo xtask brokers up rabbitmq`: RabbitMQ restarted cleanly and
//! killed with SIGKILL while messages flow, and a consumer process
//! SIGKILLed mid-stream.
//!
//! Durability relied on: msg declares durable queues and publishes
//! persistent messages with publisher confirms, and RabbitMQ confirms a
//! persistent message only once it is written to disk, so a killed
//! process loses nothing it confirmed. What a dead consumer held is
//! requeued when its connection closes.

use msg_amqp::{AmqpBroker, AmqpConfig};
use msg_core::Connection;
use msg_testkit::{BrokerEnv, Harness};

fn harness() -> Harness {
    let url = BrokerEnv::get("rabbitmq").url().to_owned();
    Harness::new("amqp", AmqpBroker::CAPABILITIES, move || {
        let config = AmqpConfig::from_url(&url).expect("URL");
        async move { Ok(Connection::new(AmqpBroker::connect(config).await?)) }
    })
}

msg_testkit::faults_suite!(harness(), "rabbitmq");
