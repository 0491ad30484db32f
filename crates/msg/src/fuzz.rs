//! Entry points of the fuzz targets (`fuzz/`); not part of the API. The
//! core's and the transports' are in their crates; this one reaches every
//! URL parser compiled in.

pub use msg_core::fuzz::*;

/// `data` as the URL of every transport compiled in: each parser accepts
/// it or says why not, and neither its configuration's `Debug` nor its
/// error shows the URL's password.
pub fn urls(data: &[u8]) {
    let url = text(data);
    let _ = msg_core::raw::url::percent_decode(&url);
    let shown = [
        format!("{:?}", msg_core::raw::url::redact(&url)),
        #[cfg(feature = "memory")]
        format!("{:?}", url.parse::<msg_memory::MemoryConfig>()),
        #[cfg(feature = "redis")]
        format!("{:?}", msg_redis::RedisConfig::from_url(&url)),
        #[cfg(feature = "nats")]
        format!("{:?}", msg_nats::NatsConfig::from_url(&url)),
        #[cfg(feature = "amqp")]
        format!("{:?}", msg_amqp::AmqpConfig::from_url(&url)),
        #[cfg(feature = "kafka")]
        format!("{:?}", msg_kafka::KafkaConfig::from_url(&url)),
    ];
    // `scheme://user:password@host...` with a password that is long
    // enough to be told apart and appears nowhere else in the URL.
    let Some((_, rest)) = url.split_once("://") else {
        return;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return;
    };
    let Some((_, password)) = userinfo.split_once(':') else {
        return;
    };
    // A password with `*` in it can read like the mask itself.
    if password.len() < 8 || password.contains('*') || url.matches(password).count() != 1 {
        return;
    }
    for shown in shown {
        assert!(!shown.contains(password), "{url:?} shows as {shown}");
    }
}
