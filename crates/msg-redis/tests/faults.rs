//! Faults under load against a real Redis started by
//! `cargo xtask brokers up redis`: Redis restarted cleanly and killed with
//! SIGKILL while messages flow, and a consumer process SIGKILLed
//! mid-stream.
//!
//! Durability relied on: the harness runs Redis with `appendonly yes` and
//! `appendfsync everysec`. Redis writes the append-only file before it
//! answers, so a killed process loses nothing it confirmed; a machine
//! that loses power may lose the last second.

use std::time::Duration;

use msg_core::Connection;
use msg_redis::{RedisBroker, RedisConfig};
use msg_testkit::{BrokerEnv, Harness};

fn harness() -> Harness {
    let url = BrokerEnv::get("redis").url().to_owned();
    Harness::new("redis", RedisBroker::CAPABILITIES, move || {
        // A dead consumer's entries are claimed by the next after 1 s.
        let config = RedisConfig::from_url(&url)
            .expect("URL")
            .claim_idle(Duration::from_secs(1));
        async move { Ok(Connection::new(RedisBroker::connect(config).await?)) }
    })
}

msg_testkit::faults_suite!(harness(), "redis");
