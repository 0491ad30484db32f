//! Configuration of the AMQP transport.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use lapin::uri::AMQPUri;
use msg_core::DeliveryPolicy;
use msg_core::raw::url::redact;
use msg_core::{Error, Result};

/// Configuration of an [`AmqpBroker`](crate::AmqpBroker).
///
/// ```
/// use msg_amqp::AmqpConfig;
/// let config = AmqpConfig::from_url("amqp://app:s3cret@127.0.0.1:5672/%2f")
///     .unwrap()
///     .exchange("orders-exchange")
///     .quorum_queues(true);
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct AmqpConfig {
    pub(crate) url: String,
    pub(crate) exchange: String,
    pub(crate) quorum: bool,
    pub(crate) delivery: DeliveryPolicy,
    pub(crate) tls_ca: Option<PathBuf>,
    pub(crate) publish_timeout: Duration,
    pub(crate) mandatory: bool,
}

impl AmqpConfig {
    /// A configuration for the broker at `url`:
    /// `amqp[s]://[user:password@]host[:port][/vhost][?heartbeat=S&connection_timeout=MS]`.
    /// The vhost is percent-encoded (`%2f` is `/`, the default).
    pub fn from_url(url: &str) -> Result<Self> {
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return Err(Error::invalid_config(format!(
                "invalid AMQP URL {}: expected amqp:// or amqps://",
                redact(url)
            )));
        }
        AMQPUri::from_str(url)
            .map_err(|e| Error::invalid_config(format!("invalid AMQP URL {}: {e}", redact(url))))?;
        Ok(Self {
            url: url.to_owned(),
            exchange: "msg".to_owned(),
            quorum: false,
            delivery: DeliveryPolicy::default(),
            tls_ca: None,
            publish_timeout: Duration::from_secs(10),
            mandatory: false,
        })
    }

    /// The durable topic exchange topics are routing keys on (default `msg`).
    pub fn exchange(mut self, name: impl Into<String>) -> Self {
        self.exchange = name.into();
        self
    }

    /// Declare group queues as quorum queues (replicated; their delivery
    /// count survives requeues). Default: classic durable queues. A queue
    /// that exists already keeps its type.
    pub fn quorum_queues(mut self, quorum: bool) -> Self {
        self.quorum = quorum;
        self
    }

    /// After this many deliveries, a nack or defer dead-letters the message
    /// instead (default 10; `None` redelivers forever).
    pub fn max_deliveries(mut self, max: Option<u32>) -> Self {
        self.delivery.max_deliveries = max;
        self
    }

    /// Appended to a topic to name its dead-letter topic, and to a queue to
    /// name its dead-letter queue (default `.dlq`).
    pub fn dead_letter_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.delivery.dead_letter_suffix = suffix.into();
        self
    }

    /// A PEM file of extra certificate authorities to trust (`amqps://`).
    pub fn tls_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(path.into());
        self
    }

    /// Publish as mandatory: a publish to a topic no queue is bound to is
    /// an error instead of being dropped by the broker (default off, as
    /// publishing to a topic nobody subscribes to is fine on every other
    /// transport).
    pub fn mandatory(mut self, mandatory: bool) -> Self {
        self.mandatory = mandatory;
        self
    }

    /// How long a publish waits for the broker's confirm before it fails
    /// with a retryable timeout (default 10 s).
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }
}

impl fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("url", &redact(&self.url))
            .field("exchange", &self.exchange)
            .field("quorum", &self.quorum)
            .field("delivery", &self.delivery)
            .field("tls_ca", &self.tls_ca)
            .field("publish_timeout", &self.publish_timeout)
            .field("mandatory", &self.mandatory)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show() {
        assert_eq!(
            redact("amqp://u:pw@h:5672/%2f?heartbeat=5"),
            "amqp://u:***@h:5672/%2f?heartbeat=5"
        );
        let c = AmqpConfig::from_url("amqps://u:topsecret@h/vh").unwrap();
        assert!(!format!("{c:?}").contains("topsecret"));
    }

    #[test]
    fn bad_urls_are_config_errors_without_the_password() {
        for bad in [
            "http://h",
            "h:5672",
            "amqp://u:pw@h:port",
            "amqp://u:pw@h?heartbeat=x",
        ] {
            match AmqpConfig::from_url(bad) {
                Err(Error::InvalidConfig { reason: text, .. }) => {
                    assert!(!text.contains("pw@"), "{text}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
