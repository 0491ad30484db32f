//! The conformance suite against a real RabbitMQ started by
//! `cargo xtask brokers up rabbitmq`.

use msg_amqp::{AmqpBroker, AmqpConfig};
use msg_core::Connection;
use msg_testkit::{BrokerEnv, Harness};

fn harness() -> Harness {
    let env = BrokerEnv::get("rabbitmq");
    let url = env.url().to_owned();
    Harness::new("amqp", AmqpBroker::CAPABILITIES, move || {
        let config = AmqpConfig::from_url(&url).expect("URL");
        async move { Ok(Connection::new(AmqpBroker::connect(config).await?)) }
    })
    .with_restart(move || {
        let env = env.clone();
        async move { env.restart().await }
    })
}

msg_testkit::conformance_suite!(harness());
msg_testkit::outbox_case!(harness());
msg_testkit::scheduler_case!(harness());
