//! Faults under load against a real nats-server started by
//! `cargo xtask brokers up nats`, in JetStream mode: the server restarted
//! cleanly and killed with SIGKILL while messages flow, and a consumer
//! process SIGKILLed mid-stream.
//!
//! Durability relied on: JetStream's file store (the harness runs
//! `-js -sd DIR`). The server hands a message to the operating system's
//! file buffers and forces them to disk every two minutes (its default
//! `sync_interval`; `always` syncs every write): a killed process loses
//! nothing those buffers hold, which this test checks, but a machine that
//! loses power may lose acknowledged messages that were not synced.

use std::time::Duration;

use msg_core::Connection;
use msg_nats::{Mode, NatsBroker, NatsConfig};
use msg_testkit::{BrokerEnv, Harness};

fn harness() -> Harness {
    let config = NatsConfig::from_url(BrokerEnv::get("nats").url())
        .expect("URL")
        .mode(Mode::JetStream)
        // What a dead consumer held comes again after 2 s.
        .ack_wait(Duration::from_secs(2));
    Harness::new(
        "nats-jetstream",
        NatsBroker::JETSTREAM_CAPABILITIES,
        move || {
            let config = config.clone();
            async move { Ok(Connection::new(NatsBroker::connect(config).await?)) }
        },
    )
}

msg_testkit::faults_suite!(harness(), "nats");
