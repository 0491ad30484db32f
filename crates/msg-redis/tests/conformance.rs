//! The conformance suite against a real Redis started by
//! `cargo xtask brokers up redis`.

use std::time::Duration;

use msg_core::Connection;
use msg_redis::{RedisBroker, RedisConfig};
use msg_testkit::{BrokerEnv, Harness};

fn harness() -> Harness {
    let env = BrokerEnv::get("redis");
    let url = env.url().to_owned();
    Harness::new("redis", RedisBroker::CAPABILITIES, move || {
        let config = RedisConfig::from_url(&url)
            .expect("URL")
            .claim_idle(Duration::from_secs(5));
        async move { Ok(Connection::new(RedisBroker::connect(config).await?)) }
    })
    .with_restart(move || {
        let env = env.clone();
        async move { env.restart().await }
    })
}

msg_testkit::conformance_suite!(harness());
msg_testkit::outbox_case!(harness());
msg_testkit::scheduler_case!(harness());
