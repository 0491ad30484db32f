//! The documented options and the configuration agree (no server needed).

use msg_redis::RedisConfig;

#[test]
fn documented_options_parse() {
    msg_testkit::check_documented_options::<RedisConfig>(
        include_str!("../../../docs/transports/redis.md"),
        // `tls_ca` belongs to `rediss://`.
        "rediss://127.0.0.1:6379/0",
        &[],
    );
}

#[test]
fn bad_options_are_config_errors() {
    for bad in [
        "redis://h:6379?max_len=lots",
        "redis://h:6379?claim_idle=30",
        "redis://h:6379?max_deliveries=0",
        "redis://h:6379?colour=red",
        "redis://h:6379?url=redis://elsewhere:6379",
        "redis://h:6379?tls_ca=/etc/ca.pem",
    ] {
        match bad.parse::<RedisConfig>() {
            Err(msg_core::Error::InvalidConfig { .. }) => {}
            other => panic!("{bad}: expected InvalidConfig, got {other:?}"),
        }
    }
}
