//! Configuration of the Kafka transport.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use msg_core::DeliveryPolicy;
use msg_core::raw::config::{self as options, query_options, split_query};
use msg_core::raw::url::{is_secret, percent_decode, redact};
use msg_core::{Error, Result};
use rdkafka::ClientConfig;
use serde::Deserialize;

/// How record batches are compressed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
        }
    }
}

/// Configuration of a [`KafkaBroker`](crate::KafkaBroker).
///
/// Every option has the same name in a URL's query, in a file (as a field,
/// beside `url`, with librdkafka properties under `properties`) and as a
/// builder method; see the transport's docs.
///
/// ```
/// use std::time::Duration;
/// use msg_kafka::{Compression, KafkaConfig};
/// let config: KafkaConfig =
///     "kafka://alice:s3cret@10.0.0.1:9092,10.0.0.2:9092?partitions=6&compression=lz4&linger=10ms"
///         .parse()
///         .unwrap();
/// let config = config.property("security.protocol", "sasl_ssl");
/// assert_eq!(config.brokers(), ["10.0.0.1:9092", "10.0.0.2:9092"]);
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `kafka://[user:password@]host:port[,host:port...]`: read into
    /// `brokers` and the SASL properties.
    url: String,
    #[serde(skip)]
    pub(crate) brokers: Vec<String>,
    pub(crate) client_id: String,
    pub(crate) partitions: u16,
    pub(crate) replication_factor: u16,
    pub(crate) create_topics: bool,
    #[serde(deserialize_with = "options::duration")]
    pub(crate) linger: Duration,
    pub(crate) batch_size: Option<usize>,
    pub(crate) compression: Compression,
    #[serde(deserialize_with = "options::duration")]
    pub(crate) publish_timeout: Duration,
    #[serde(deserialize_with = "options::duration")]
    pub(crate) commit_interval: Duration,
    #[serde(deserialize_with = "options::duration")]
    pub(crate) subscribe_timeout: Duration,
    #[serde(deserialize_with = "options::duration")]
    pub(crate) connect_timeout: Duration,
    #[serde(deserialize_with = "options::max_deliveries")]
    pub(crate) max_deliveries: Option<u32>,
    pub(crate) dead_letter_suffix: String,
    pub(crate) properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    /// The broker at `127.0.0.1:9092`, with the default options.
    fn default() -> Self {
        Self::new(vec!["127.0.0.1:9092".to_owned()])
    }
}

impl<'de> Deserialize<'de> for KafkaConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut config = KafkaConfig::deserialize(deserializer)?;
        config
            .read_url()
            .map_err(|e| serde::de::Error::custom(e.chain()))?;
        config
            .validate()
            .map_err(|e| serde::de::Error::custom(e.chain()))?;
        Ok(config)
    }
}

impl FromStr for KafkaConfig {
    type Err = Error;

    /// [`KafkaConfig::from_url`].
    fn from_str(url: &str) -> Result<Self> {
        Self::from_url(url)
    }
}

impl KafkaConfig {
    /// A configuration for `brokers` (`host:port` each), with defaults.
    pub fn new(brokers: Vec<String>) -> Self {
        let policy = DeliveryPolicy::default();
        Self {
            url: format!("kafka://{}", brokers.join(",")),
            brokers,
            client_id: "msg".into(),
            partitions: 3,
            replication_factor: 1,
            create_topics: true,
            linger: Duration::from_millis(5),
            batch_size: None,
            compression: Compression::None,
            publish_timeout: Duration::from_secs(30),
            commit_interval: Duration::from_millis(500),
            subscribe_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_deliveries: policy.max_deliveries,
            dead_letter_suffix: policy.dead_letter_suffix,
            properties: BTreeMap::new(),
        }
    }

    /// A configuration from a URL:
    ///
    /// `kafka://[user:password@]host:port[,host:port...][?options]`
    ///
    /// User and password set SASL PLAIN over plaintext (change the
    /// mechanism and protocol with librdkafka properties). The options are
    /// this configuration's fields (`partitions=6&linger=10ms`); an option
    /// whose name has a `.` is a librdkafka property, passed through as it
    /// is (`?security.protocol=sasl_ssl&sasl.mechanism=SCRAM-SHA-512`).
    /// Values are percent-decoded.
    pub fn from_url(url: &str) -> Result<Self> {
        let (base, query) = split_query(url);
        let (properties, ours): (Vec<&str>, Vec<&str>) = query
            .split('&')
            .filter(|p| !p.is_empty())
            .partition(|p| p.split('=').next().unwrap_or(p).contains('.'));
        if ours.iter().any(|p| p.split('=').next() == Some("url")) {
            return Err(Error::invalid_config(format!(
                "invalid Kafka URL {}: url is not a query option",
                redact(url)
            )));
        }
        let mut config: KafkaConfig = query_options("Kafka", url, &ours.join("&"))?;
        config.url = base.trim_end_matches('/').to_owned();
        config.read_url()?;
        for pair in properties {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value).map_err(|e| {
                Error::invalid_config(format!("invalid Kafka URL {}: {e}", redact(url)))
            })?;
            if value.is_empty() {
                return Err(Error::invalid_config(format!(
                    "invalid Kafka URL {}: property {name:?} needs a value",
                    redact(url)
                )));
            }
            config.properties.insert(name.to_owned(), value);
        }
        config.validate()?;
        Ok(config)
    }

    /// Reads `url` into the brokers and, for user info, SASL PLAIN.
    fn read_url(&mut self) -> Result<()> {
        let url = self.url.clone();
        let bad = |why: String| {
            Error::invalid_config(format!("invalid Kafka URL {}: {why}", redact(&url)))
        };
        let rest = url
            .strip_prefix("kafka://")
            .ok_or_else(|| bad("expected kafka://host:port[,host:port...]".into()))?;
        if rest.contains('?') {
            return Err(bad(
                "options in a file are fields, not part of the url".into()
            ));
        }
        let rest = rest.trim_end_matches('/');
        let (userinfo, hosts) = match rest.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, rest),
        };
        self.brokers.clear();
        for host in hosts.split(',').map(str::trim) {
            let Some((name, port)) = host.rsplit_once(':') else {
                return Err(bad(format!("{host:?} is not host:port")));
            };
            if name.is_empty() || host.contains('/') {
                return Err(bad(format!("{host:?} is not host:port")));
            }
            if port.parse::<u16>().is_err() {
                return Err(bad(format!("port {port:?} is not a number")));
            }
            self.brokers.push(host.to_owned());
        }
        if let Some(userinfo) = userinfo {
            let (user, password) = userinfo
                .split_once(':')
                .ok_or_else(|| bad("user info needs user:password".into()))?;
            let decode = |s| percent_decode(s).map_err(|e| bad(e.into()));
            let (user, password) = (decode(user)?, decode(password)?);
            for (name, value) in [
                ("security.protocol", "sasl_plaintext"),
                ("sasl.mechanism", "PLAIN"),
            ] {
                self.properties
                    .entry(name.to_owned())
                    .or_insert_with(|| value.to_owned());
            }
            self.properties.insert("sasl.username".into(), user);
            self.properties.insert("sasl.password".into(), password);
        }
        Ok(())
    }

    /// Checks what librdkafka would only find later.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.partitions == 0 || self.replication_factor == 0 {
            return Err(Error::invalid_config(
                "partitions and replication_factor must be at least 1",
            ));
        }
        self.delivery().validate()
    }

    /// The largest payload the producer takes (`message.max.bytes`).
    pub(crate) fn max_message_size(&self) -> usize {
        self.properties
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(crate::DEFAULT_MAX_MESSAGE_SIZE)
    }

    /// The transport's default delivery policy.
    pub(crate) fn delivery(&self) -> DeliveryPolicy {
        DeliveryPolicy {
            max_deliveries: self.max_deliveries,
            dead_letter_suffix: self.dead_letter_suffix.clone(),
        }
    }

    /// The bootstrap brokers.
    pub fn brokers(&self) -> &[String] {
        &self.brokers
    }

    /// The client id the brokers see (default `msg`).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }

    /// Partitions of the topics this transport creates (default 3). Members
    /// of one group share a topic by partition, so this is how many of them
    /// can work at once.
    pub fn partitions(mut self, partitions: u16) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// Replicas of the topics this transport creates (default 1; use 3 on a
    /// production cluster).
    pub fn replication_factor(mut self, replicas: u16) -> Self {
        self.replication_factor = replicas.max(1);
        self
    }

    /// Whether missing topics are created through the admin API (default
    /// true). Off, publishing to a missing topic fails (unless the brokers
    /// create topics on first use).
    pub fn create_topics(mut self, create: bool) -> Self {
        self.create_topics = create;
        self
    }

    /// How long the producer waits to fill a batch (`linger.ms`, default 5 ms).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// The most bytes in one batch (`batch.size`; librdkafka's default when unset).
    pub fn batch_size(mut self, bytes: usize) -> Self {
        self.batch_size = Some(bytes);
        self
    }

    /// How batches are compressed (default none).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// How long a publish may take, retries included, before it fails with a
    /// retryable error (`message.timeout.ms`, default 30 s).
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// How often settled offsets are committed (default 500 ms). They are also
    /// committed when partitions are taken away and on close.
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// How long `subscribe` waits for the group to assign partitions
    /// (default 30 s).
    pub fn subscribe_timeout(mut self, timeout: Duration) -> Self {
        self.subscribe_timeout = timeout;
        self
    }

    /// How long `connect` waits for the cluster to answer (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// After this many deliveries, a nack or defer dead-letters the message
    /// instead (default 10; `None` redelivers forever). Attempts are counted
    /// by the consumer that holds the partition: they start again at 1 when
    /// the partition moves to another member.
    pub fn max_deliveries(mut self, max: Option<u32>) -> Self {
        self.max_deliveries = max;
        self
    }

    /// Appended to a topic to name its dead-letter topic (default `.dlq`).
    pub fn dead_letter_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.dead_letter_suffix = suffix.into();
        self
    }

    /// Sets any librdkafka property (SASL, SSL, timeouts...), for producer
    /// and consumer alike. Values of secret properties are never printed.
    pub fn property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }

    /// The settings every client shares, over `config`: the user's
    /// properties come last, so they win.
    fn with_common(&self, mut config: ClientConfig) -> ClientConfig {
        config
            .set("bootstrap.servers", self.brokers.join(","))
            .set("client.id", &self.client_id);
        for (name, value) in &self.properties {
            config.set(name, value);
        }
        config
    }

    /// The producer's settings: idempotent, acks from all in-sync replicas.
    pub(crate) fn producer(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Keyed records land where Java clients put them.
            .set("partitioner", "murmur2_random")
            .set("linger.ms", self.linger.as_millis().to_string())
            .set("compression.type", self.compression.as_str())
            .set(
                "message.timeout.ms",
                self.publish_timeout.as_millis().max(1).to_string(),
            );
        if let Some(bytes) = self.batch_size {
            config.set("batch.size", bytes.to_string());
        }
        self.with_common(config)
    }

    /// The consumer's settings: offsets are stored and committed by the
    /// transport, never automatically.
    pub(crate) fn consumer(&self, group: &str, earliest: bool) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // Members learn of a rebalance at their next heartbeat: 3 s by
            // default, which makes every join and leave take that long.
            .set("heartbeat.interval.ms", "1000")
            .set(
                "auto.offset.reset",
                if earliest { "earliest" } else { "latest" },
            );
        self.with_common(config)
    }

    /// The admin client's settings.
    pub(crate) fn admin(&self) -> ClientConfig {
        self.with_common(ClientConfig::new())
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(name, value)| {
                let shown = if is_secret(name) { "***" } else { value };
                (name.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("client_id", &self.client_id)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("create_topics", &self.create_topics)
            .field("linger", &self.linger)
            .field("batch_size", &self.batch_size)
            .field("compression", &self.compression)
            .field("publish_timeout", &self.publish_timeout)
            .field("commit_interval", &self.commit_interval)
            .field("subscribe_timeout", &self.subscribe_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_deliveries", &self.max_deliveries)
            .field("dead_letter_suffix", &self.dead_letter_suffix)
            .field("properties", &properties)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = KafkaConfig::from_url(
            "kafka://h1:9092,h2:9093/?client_id=app&partitions=6&replication_factor=3&linger=0ms\
             &batch_size=1000&compression=lz4&create_topics=false&socket.timeout.ms=5000\
             &max_deliveries=4&dead_letter_suffix=-dead",
        )
        .unwrap();
        assert_eq!(c.max_deliveries, Some(4));
        assert_eq!(c.dead_letter_suffix, "-dead");
        let unlimited = KafkaConfig::from_url("kafka://h:1?max_deliveries=none").unwrap();
        assert_eq!(unlimited.max_deliveries, None);
        assert_eq!(c.brokers, ["h1:9092", "h2:9093"]);
        assert_eq!(
            (c.client_id.as_str(), c.partitions, c.replication_factor),
            ("app", 6, 3)
        );
        assert_eq!(c.linger, Duration::ZERO);
        assert_eq!(c.batch_size, Some(1000));
        assert_eq!(c.compression, Compression::Lz4);
        assert!(!c.create_topics);
        let producer = c.producer();
        assert_eq!(producer.get("socket.timeout.ms"), Some("5000"));
        assert_eq!(producer.get("bootstrap.servers"), Some("h1:9092,h2:9093"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(producer.get("compression.type"), Some("lz4"));
        let consumer = c.consumer("g", true);
        assert_eq!(consumer.get("enable.auto.commit"), Some("false"));
        assert_eq!(consumer.get("auto.offset.reset"), Some("earliest"));
    }

    #[test]
    fn user_info_is_sasl_plain() {
        let c = KafkaConfig::from_url("kafka://al%40ice:p%3Ass@h:9092").unwrap();
        let consumer = c.consumer("g", false);
        assert_eq!(consumer.get("sasl.username"), Some("al@ice"));
        assert_eq!(consumer.get("sasl.password"), Some("p:ss"));
        assert_eq!(consumer.get("security.protocol"), Some("sasl_plaintext"));
    }

    #[test]
    fn bad_urls_are_config_errors_without_secrets() {
        for url in [
            "nats://h:1",
            "kafka://",
            "kafka://h",
            "kafka://h:port",
            "kafka://h:1?partitions=0",
            "kafka://h:1?compression=brotli",
            "kafka://h:1?what=1",
            "kafka://h:1?linger=",
            "kafka://h:1?linger=5",
            "kafka://u:s3cret@h:x",
            "kafka://h:x?sasl.password=s3cret",
        ] {
            match KafkaConfig::from_url(url) {
                Err(e @ Error::InvalidConfig { .. }) => {
                    assert!(!e.chain().contains("s3cret"), "{}", e.chain())
                }
                other => panic!("{url}: expected InvalidConfig, got {other:?}"),
            }
        }
    }

    #[test]
    fn secrets_never_show() {
        let c = KafkaConfig::from_url("kafka://u:s3cret@h:1?ssl.key.password=k3y")
            .unwrap()
            .property("sasl.oauthbearer.client.secret", "t0p");
        let shown = format!("{c:?}");
        for secret in ["s3cret", "k3y", "t0p"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("sasl.username"), "{shown}");
    }
}
