//! Configuration of the Redis Streams transport.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use msg_core::DeliveryPolicy;
use msg_core::raw::config::{self as options, TlsFiles, query_options, split_query};
use msg_core::raw::url::redact;
use msg_core::{Error, Result};
use serde::Deserialize;

/// Configuration of a [`RedisBroker`](crate::RedisBroker).
///
/// Every option has the same name in a URL's query, in a file (as a field,
/// beside `url`) and as a builder method; see the transport's docs.
///
/// ```
/// use std::time::Duration;
/// use msg_redis::RedisConfig;
/// let config: RedisConfig = "redis://:secret@127.0.0.1:6379/0?max_len=100000&claim_idle=1m"
///     .parse()
///     .unwrap();
/// let config = config.block(Duration::from_secs(1));
/// assert!(!format!("{config:?}").contains("secret"));
///
/// let from_file: RedisConfig = serde_json::from_str(
///     r#"{ "url": "redis://127.0.0.1:6379", "max_len": 100000, "claim_idle": "1m" }"#,
/// )
/// .unwrap();
/// ```
#[derive(Clone, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub struct RedisConfig {
    pub(crate) url: String,
    pub(crate) max_len: Option<u64>,
    #[serde(deserialize_with = "options::duration")]
    pub(crate) block: Duration,
    #[serde(deserialize_with = "options::duration")]
    pub(crate) claim_idle: Duration,
    #[serde(deserialize_with = "options::duration")]
    pub(crate) poll_interval: Duration,
    #[serde(deserialize_with = "options::max_deliveries")]
    pub(crate) max_deliveries: Option<u32>,
    pub(crate) dead_letter_suffix: String,
    #[serde(deserialize_with = "options::duration")]
    pub(crate) command_timeout: Duration,
    pub(crate) tls_ca: Option<PathBuf>,
    /// A client certificate (PEM, the chain) and its key, for mutual TLS.
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
}

impl Default for RedisConfig {
    /// The server at `redis://127.0.0.1:6379`, with the default options.
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            max_len: None,
            block: Duration::from_millis(500),
            claim_idle: Duration::from_secs(30),
            poll_interval: Duration::from_millis(100),
            max_deliveries: DeliveryPolicy::default().max_deliveries,
            dead_letter_suffix: DeliveryPolicy::default().dead_letter_suffix,
            command_timeout: Duration::from_secs(10),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl<'de> Deserialize<'de> for RedisConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let config = RedisConfig::deserialize(deserializer)?;
        config
            .validate()
            .map_err(|e| serde::de::Error::custom(e.chain()))?;
        Ok(config)
    }
}

impl FromStr for RedisConfig {
    type Err = Error;

    /// [`RedisConfig::from_url`].
    fn from_str(url: &str) -> Result<Self> {
        Self::from_url(url)
    }
}

impl RedisConfig {
    /// A configuration for the server at
    /// `redis[s]://[user:password@]host:port[/db][?options]`; the options
    /// are this configuration's fields (`max_len=100000&claim_idle=1m`).
    ///
    /// `rediss://` speaks TLS (rustls), trusting the system's certificate
    /// authorities and those of `tls_ca=PATH`; the server's certificate
    /// must name the host of the URL. `tls_cert=PATH&tls_key=PATH` show a
    /// client certificate, for a server that checks them.
    pub fn from_url(url: &str) -> Result<Self> {
        let (base, query) = split_query(url);
        // Checked below, once the URL is in: the options alone are not a
        // configuration (`tls_ca` is right only for `rediss://`).
        #[derive(Deserialize)]
        #[serde(transparent)]
        struct Unchecked(#[serde(with = "RedisConfig")] RedisConfig);
        let Unchecked(mut config) = query_options("Redis", url, query)?;
        if config.url != RedisConfig::default().url {
            return Err(Error::invalid_config(format!(
                "invalid Redis URL {}: url is not a query option",
                redact(url)
            )));
        }
        config.url = base.to_owned();
        config.validate()?;
        Ok(config)
    }

    /// Checks the URL and the delivery policy.
    pub(crate) fn validate(&self) -> Result<()> {
        let url = &self.url;
        let tls = url.starts_with("rediss://");
        if !(tls || url.starts_with("redis://")) {
            return Err(Error::invalid_config(format!(
                "invalid Redis URL {}: expected redis:// or rediss://",
                redact(url)
            )));
        }
        // Let fred check the rest now, so that a bad URL fails here.
        fred::types::config::Config::from_url(url).map_err(|e| {
            Error::invalid_config_with(format!("invalid Redis URL {}", redact(url)), e)
        })?;
        TlsFiles {
            ca: self.tls_ca.is_some(),
            cert: self.tls_cert.is_some(),
            key: self.tls_key.is_some(),
        }
        .check("Redis", url, "rediss://")?;
        self.delivery().validate()
    }

    /// The transport's default delivery policy.
    pub(crate) fn delivery(&self) -> DeliveryPolicy {
        DeliveryPolicy {
            max_deliveries: self.max_deliveries,
            dead_letter_suffix: self.dead_letter_suffix.clone(),
        }
    }

    /// Caps each stream at about this many entries (`XADD MAXLEN ~`).
    /// `None` (the default) keeps everything.
    pub fn max_len(mut self, max_len: Option<u64>) -> Self {
        self.max_len = max_len;
        self
    }

    /// How long one blocking read waits for new entries (default 500 ms).
    pub fn block(mut self, block: Duration) -> Self {
        self.block = block.max(Duration::from_millis(1));
        self
    }

    /// How long an entry may stay unsettled with a consumer before a live
    /// consumer of the group claims it (default 30 s). Longer than your
    /// slowest handler.
    pub fn claim_idle(mut self, idle: Duration) -> Self {
        self.claim_idle = idle;
        self
    }

    /// How often due deferred entries and idle entries are looked for
    /// (default 100 ms).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// After this many deliveries, a nack or defer dead-letters the entry
    /// instead (default 10; `None` redelivers forever).
    pub fn max_deliveries(mut self, max: Option<u32>) -> Self {
        self.max_deliveries = max;
        self
    }

    /// Appended to a topic to name its dead-letter stream (default `.dlq`).
    pub fn dead_letter_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.dead_letter_suffix = suffix.into();
        self
    }

    /// How long one command may take before it fails with a retryable
    /// timeout (default 10 s).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// A PEM file of certificate authorities to trust besides the
    /// system's (`rediss://` only).
    pub fn tls_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(path.into());
        self
    }

    /// A client certificate to show (a PEM file of the certificate and
    /// any intermediates) and its private key (PEM), for a server that
    /// checks client certificates (`rediss://` only).
    pub fn tls_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_cert = Some(cert.into());
        self.tls_key = Some(key.into());
        self
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact(&self.url))
            .field("max_len", &self.max_len)
            .field("block", &self.block)
            .field("claim_idle", &self.claim_idle)
            .field("poll_interval", &self.poll_interval)
            .field("max_deliveries", &self.max_deliveries)
            .field("dead_letter_suffix", &self.dead_letter_suffix)
            .field("command_timeout", &self.command_timeout)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show() {
        assert_eq!(redact("redis://user:pw@h:1/0"), "redis://user:***@h:1/0");
        assert_eq!(redact("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        let c = RedisConfig::from_url("redis://u:topsecret@h:6380/2").unwrap();
        assert!(!format!("{c:?}").contains("topsecret"));
    }

    #[test]
    fn bad_urls_are_config_errors_without_the_password() {
        for bad in [
            "http://h",
            "h:6379",
            "redis://u:pw@h:notaport",
            "redis://u:pw@h:6380?tls_ca=/ca.pem",
        ] {
            match RedisConfig::from_url(bad) {
                Err(Error::InvalidConfig { reason: text, .. }) => {
                    assert!(!text.contains("pw@"), "{text}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn rediss_takes_a_ca_file() {
        let c = RedisConfig::from_url("rediss://u:pw@h:6380?tls_ca=/etc/ca.pem").unwrap();
        assert_eq!(c.url, "rediss://u:pw@h:6380");
        assert_eq!(c.tls_ca, Some(PathBuf::from("/etc/ca.pem")));
    }
}
