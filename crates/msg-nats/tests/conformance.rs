//! The conformance suite against a real nats-server started by
//! `cargo xtask brokers up nats`, once per mode.

use msg_core::Connection;
use msg_nats::{Mode, NatsBroker, NatsConfig};
use msg_testkit::{BrokerEnv, Harness};

async fn harness(mode: Mode) -> Harness {
    let env = BrokerEnv::get("nats");
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
        async move { Ok(Connection::new(NatsBroker::connect(config).await?)) }
    })
    .with_restart(move || {
        let env = env.clone();
        async move { env.restart().await }
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
