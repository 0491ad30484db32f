//! Configuration of the AMQP transport.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use lapin::uri::AMQPUri;
use msg_core::DeliveryPolicy;
use msg_core::raw::config::{self as options, TlsFiles, query_options, split_query};
use msg_core::raw::url::redact;
use msg_core::{Error, Result};
use serde::Deserialize;

/// How long opening a connection may take when the URL does not say
/// (`connection_timeout`).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The URL query options lapin reads itself; they stay in the URL.
const LAPIN_OPTIONS: &[&str] = &[
    "heartbeat",
    "connection_timeout",
    "channel_max",
    "frame_max",
    "auth_mechanism",
];

/// Configuration of an [`AmqpBroker`](crate::AmqpBroker).
///
/// Every option has the same name in a URL's query, in a file (as a field,
/// beside `url`) and as a builder method; see the transport's docs.
///
/// ```
/// use msg_amqp::AmqpConfig;
/// let config: AmqpConfig = "amqp://app:s3cret@127.0.0.1:5672/%2f?heartbeat=10&quorum_queues=true"
///     .parse()
///     .unwrap();
/// let config = config.exchange("orders-exchange");
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub struct AmqpConfig {
    pub(crate) url: String,
    pub(crate) exchange: String,
    pub(crate) quorum_queues: bool,
    #[serde(deserialize_with = "options::max_deliveries")]
    pub(crate) max_deliveries: Option<u32>,
    pub(crate) dead_letter_suffix: String,
    pub(crate) tls_ca: Option<PathBuf>,
    /// A client certificate (PEM, the chain) and its key, for mutual TLS.
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
    #[serde(deserialize_with = "options::duration")]
    pub(crate) publish_timeout: Duration,
    pub(crate) mandatory: bool,
}

impl Default for AmqpConfig {
    /// The broker at `amqp://guest:guest@127.0.0.1:5672/%2f`, with the
    /// default options.
    fn default() -> Self {
        let policy = DeliveryPolicy::default();
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
            exchange: "msg".to_owned(),
            quorum_queues: false,
            max_deliveries: policy.max_deliveries,
            dead_letter_suffix: policy.dead_letter_suffix,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            publish_timeout: Duration::from_secs(10),
            mandatory: false,
        }
    }
}

impl<'de> Deserialize<'de> for AmqpConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let config = AmqpConfig::deserialize(deserializer)?;
        config
            .validate()
            .map_err(|e| serde::de::Error::custom(e.chain()))?;
        Ok(config)
    }
}

impl FromStr for AmqpConfig {
    type Err = Error;

    /// [`AmqpConfig::from_url`].
    fn from_str(url: &str) -> Result<Self> {
        Self::from_url(url)
    }
}

impl AmqpConfig {
    /// A configuration for the broker at
    /// `amqp[s]://[user:password@]host[:port][/vhost][?options]`. The vhost
    /// is percent-encoded (`%2f` is `/`, the default). The options are this
    /// configuration's fields (`exchange=orders&quorum_queues=true`) and
    /// lapin's own (`heartbeat`, `connection_timeout`, `channel_max`,
    /// `frame_max`, `auth_mechanism`), which stay in the URL.
    pub fn from_url(url: &str) -> Result<Self> {
        let (base, query) = split_query(url);
        let (native, ours): (Vec<&str>, Vec<&str>) = query
            .split('&')
            .filter(|p| !p.is_empty())
            .partition(|p| LAPIN_OPTIONS.contains(&p.split('=').next().unwrap_or(p)));
        // Checked below, once the URL is in: the options alone are not a
        // configuration (`tls_ca` is right only for `amqps://`).
        #[derive(Deserialize)]
        #[serde(transparent)]
        struct Unchecked(#[serde(with = "AmqpConfig")] AmqpConfig);
        let Unchecked(mut config) = query_options("AMQP", url, &ours.join("&"))?;
        if ours.iter().any(|p| p.split('=').next() == Some("url")) {
            return Err(Error::invalid_config(format!(
                "invalid AMQP URL {}: url is not a query option",
                redact(url)
            )));
        }
        config.url = if native.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", native.join("&"))
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the URL and the delivery policy.
    pub(crate) fn validate(&self) -> Result<()> {
        let url = &self.url;
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return Err(Error::invalid_config(format!(
                "invalid AMQP URL {}: expected amqp:// or amqps://",
                redact(url)
            )));
        }
        AMQPUri::from_str(url).map_err(|e| {
            Error::invalid_config_with(format!("invalid AMQP URL {}", redact(url)), e)
        })?;
        TlsFiles {
            ca: self.tls_ca.is_some(),
            cert: self.tls_cert.is_some(),
            key: self.tls_key.is_some(),
        }
        .check("AMQP", url, "amqps://")?;
        self.delivery().validate()
    }

    /// How long opening a connection may take, TCP, TLS and the AMQP
    /// handshake together: lapin's `connection_timeout` URL option (in ms),
    /// which lapin applies to the TCP connect alone, or 10 s. A broker that
    /// is starting or stopping can take the connection and never answer;
    /// unbounded, that connect would hold every publish and subscription
    /// waiting on it.
    pub(crate) fn connect_timeout(&self) -> Duration {
        AMQPUri::from_str(&self.url)
            .ok()
            .and_then(|uri| uri.query.connection_timeout)
            .map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from_millis)
    }

    /// The transport's default delivery policy.
    pub(crate) fn delivery(&self) -> DeliveryPolicy {
        DeliveryPolicy {
            max_deliveries: self.max_deliveries,
            dead_letter_suffix: self.dead_letter_suffix.clone(),
        }
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
        self.quorum_queues = quorum;
        self
    }

    /// After this many deliveries, a nack or defer dead-letters the message
    /// instead (default 10; `None` redelivers forever).
    pub fn max_deliveries(mut self, max: Option<u32>) -> Self {
        self.max_deliveries = max;
        self
    }

    /// Appended to a topic to name its dead-letter topic, and to a queue to
    /// name its dead-letter queue (default `.dlq`).
    pub fn dead_letter_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.dead_letter_suffix = suffix.into();
        self
    }

    /// A PEM file of extra certificate authorities to trust (`amqps://`).
    pub fn tls_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(path.into());
        self
    }

    /// A client certificate to show (a PEM file of the certificate and
    /// any intermediates) and its private key (PEM), for a broker that
    /// checks client certificates (`amqps://` only).
    pub fn tls_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_cert = Some(cert.into());
        self.tls_key = Some(key.into());
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

    /// How long a publish may take, from finding a channel (and opening
    /// the connection, if it must) to the broker's confirm, before it fails
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
            .field("quorum_queues", &self.quorum_queues)
            .field("max_deliveries", &self.max_deliveries)
            .field("dead_letter_suffix", &self.dead_letter_suffix)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
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
