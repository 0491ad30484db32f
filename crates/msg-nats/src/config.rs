//! Configuration of the NATS transport.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use msg_core::DeliveryPolicy;
use msg_core::raw::config::{self as options, query_options, split_query};
use msg_core::raw::url::{percent_decode, redact};
use msg_core::{Error, Result};
use serde::Deserialize;

/// Which NATS the transport speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Core NATS: at most once, nothing stored. Settling is a no-op, except
    /// that a reject still publishes the dead letter.
    #[default]
    Core,
    /// JetStream: persistent streams, at least once, acks, redelivery.
    JetStream,
}

/// How the client proves who it is. Secrets are never printed.
#[derive(Clone, Default)]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// A token (`nats://TOKEN@host`).
    Token(String),
    /// A user and password (`nats://user:password@host`).
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// A `.creds` file with a user JWT and its nkey seed (`?creds=PATH`).
    CredentialsFile(PathBuf),
    /// An nkey seed (`SU...`); from a URL, the path of a file that holds it
    /// (`?nkey=PATH`).
    NkeySeed(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Token(_) => f.write_str("Token(***)"),
            Auth::UserPassword { user, .. } => write!(f, "UserPassword({user}, ***)"),
            Auth::CredentialsFile(path) => write!(f, "CredentialsFile({})", path.display()),
            Auth::NkeySeed(_) => f.write_str("NkeySeed(***)"),
        }
    }
}

/// TLS settings. Certificates are PEM files.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// Refuse to talk to a server without TLS.
    pub required: bool,
    /// Extra root certificates to trust (`?tls_ca=PATH`).
    pub root_certificates: Vec<PathBuf>,
    /// A client certificate and its key, for mutual TLS
    /// (`?tls_cert=PATH&tls_key=PATH`).
    pub client_certificate: Option<(PathBuf, PathBuf)>,
}

/// Where JetStream stores the streams this transport creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// On disk: survives a server restart.
    #[default]
    File,
    /// In memory: lost on restart.
    Memory,
}

/// When a stream this transport creates drops messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Retention {
    /// Kept until `max_age` or the size limits remove them; consumers do not
    /// remove anything. Replay works.
    #[default]
    Limits,
    /// Removed once every consumer acknowledged them.
    Interest,
}

/// The streams of the JetStream mode.
///
/// A topic is a subject. Before its first publish or subscription the
/// transport finds the stream that holds the subject; if there is none, it
/// creates one named after the topic's first segment, holding that segment
/// and everything below it (`orders` holds `orders` and `orders.>`), with
/// the settings here. [`bind`](Self::bind) puts every topic into one stream
/// of your choosing instead.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub(crate) bind: Option<(String, Vec<String>)>,
    pub(crate) storage: Storage,
    pub(crate) retention: Retention,
    pub(crate) max_age: Option<Duration>,
    pub(crate) duplicate_window: Duration,
    pub(crate) replicas: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            bind: None,
            storage: Storage::File,
            retention: Retention::Limits,
            max_age: None,
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
        }
    }
}

impl StreamSettings {
    /// Every topic goes to the stream `name`, created with `subjects` when
    /// it does not exist (an existing stream is used as it is). Topics
    /// outside its subjects fail to publish.
    pub fn bind(mut self, name: impl Into<String>, subjects: Vec<String>) -> Self {
        self.bind = Some((name.into(), subjects));
        self
    }

    /// Storage of created streams (default file).
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// Retention of created streams (default limits).
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// How long created streams keep a message (default forever).
    pub fn max_age(mut self, max_age: Option<Duration>) -> Self {
        self.max_age = max_age;
        self
    }

    /// How long the server remembers message ids to drop republished
    /// duplicates (default 2 minutes).
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// Replicas of created streams (default 1; up to 5 on a cluster).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }
}

/// Configuration of a [`NatsBroker`](crate::NatsBroker).
///
/// ```
/// use std::time::Duration;
/// use msg_nats::{Mode, NatsConfig};
/// let config = NatsConfig::from_url("nats+js://alice:s3cret@127.0.0.1:4222")
///     .unwrap()
///     .ack_wait(Duration::from_secs(60));
/// assert!(config.is_jetstream());
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct NatsConfig {
    pub(crate) servers: Vec<String>,
    pub(crate) mode: Mode,
    pub(crate) auth: Auth,
    pub(crate) tls: Tls,
    pub(crate) name: Option<String>,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) streams: StreamSettings,
    pub(crate) ack_wait: Duration,
    pub(crate) delivery: DeliveryPolicy,
    pub(crate) pull_expiry: Duration,
}

impl NatsConfig {
    /// A configuration for the servers in `url`:
    ///
    /// `SCHEME://[user:password@ | token@]host:port[,host:port...][?options]`
    ///
    /// | scheme | mode | TLS |
    /// |---|---|---|
    /// | `nats` | core | if the server asks |
    /// | `tls` | core | required |
    /// | `nats+js` | JetStream | if the server asks |
    /// | `tls+js` | JetStream | required |
    ///
    /// The options are those of a configuration file (see the transport's
    /// docs): `creds=PATH`, `nkey=PATH`, `tls_ca=PATH`, `tls_cert=PATH` and
    /// `tls_key=PATH`, `name=NAME`, the timeouts, the delivery policy and
    /// the settings of the streams this transport creates. User, password
    /// and token are percent-decoded.
    pub fn from_url(url: &str) -> Result<Self> {
        let (base, query) = split_query(url);
        let mut options: Options = query_options("NATS", url, query)?;
        if options.url.is_some() {
            return Err(Error::invalid_config(format!(
                "invalid NATS URL {}: url is not a query option",
                redact(url)
            )));
        }
        options.url = Some(base.to_owned());
        options.into_config(url)
    }

    /// A core NATS configuration for `servers` (`host:port`), with defaults.
    pub fn new(servers: Vec<String>) -> Self {
        Self {
            servers,
            mode: Mode::Core,
            auth: Auth::None,
            tls: Tls::default(),
            name: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            streams: StreamSettings::default(),
            ack_wait: Duration::from_secs(30),
            delivery: DeliveryPolicy::default(),
            pull_expiry: Duration::from_millis(500),
        }
    }

    /// Whether this configuration speaks JetStream (rather than core NATS).
    pub fn is_jetstream(&self) -> bool {
        self.mode == Mode::JetStream
    }

    /// Sets the mode (the URL's scheme sets it too).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the credentials.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Sets the TLS settings.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }

    /// The client name the server shows in its monitoring.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How long the first connection may take (default 5 s). Once
    /// connected, the client reconnects on its own, forever.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a request to the server (a JetStream publish waiting for its
    /// acknowledgement, a stream lookup) may take before it fails with a
    /// retryable error (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The JetStream streams (JetStream mode only).
    pub fn streams(mut self, streams: StreamSettings) -> Self {
        self.streams = streams;
        self
    }

    /// How long the server waits for a settle before it delivers a message
    /// again (JetStream `ack_wait`, default 30 s). A handler that runs
    /// longer is kept alive by progress signals the transport sends.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait.max(Duration::from_millis(100));
        self
    }

    /// After this many deliveries, a nack or defer dead-letters the message
    /// instead (default 10; `None` redelivers forever). JetStream mode.
    pub fn max_deliveries(mut self, max: Option<u32>) -> Self {
        self.delivery.max_deliveries = max;
        self
    }

    /// Appended to a topic to name its dead-letter topic (default `.dlq`).
    pub fn dead_letter_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.delivery.dead_letter_suffix = suffix.into();
        self
    }

    /// How long one pull request waits for messages before it is renewed
    /// (default 500 ms). Shorter notices a closed subscriber sooner.
    pub fn pull_expiry(mut self, expiry: Duration) -> Self {
        self.pull_expiry = expiry.max(Duration::from_millis(10));
        self
    }

    /// The options async-nats connects with.
    pub(crate) async fn connect_options(&self) -> Result<async_nats::ConnectOptions> {
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(self.connect_timeout)
            .request_timeout(Some(self.request_timeout))
            // A retry every attempt, forever: outages never end a subscription.
            .max_reconnects(None)
            .reconnect_delay_callback(reconnect_delay);
        options = match &self.auth {
            Auth::None => options,
            Auth::Token(token) => options.token(token.clone()),
            Auth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
            Auth::CredentialsFile(path) => options.credentials_file(path).await.map_err(|e| {
                Error::invalid_config_with(
                    format!("cannot read the NATS credentials file {}", path.display()),
                    e,
                )
            })?,
            Auth::NkeySeed(seed) => options.nkey(seed.clone()),
        };
        if self.tls.required {
            options = options.require_tls(true);
        }
        for ca in &self.tls.root_certificates {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls.client_certificate {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(name) = &self.name {
            options = options.name(name);
        }
        Ok(options)
    }
}

/// The configuration as a file or a URL's query writes it: text values,
/// one name per option.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Options {
    url: Option<String>,
    creds: Option<PathBuf>,
    nkey: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    name: Option<String>,
    #[serde(deserialize_with = "options::duration")]
    connect_timeout: Duration,
    #[serde(deserialize_with = "options::duration")]
    request_timeout: Duration,
    #[serde(deserialize_with = "options::duration")]
    ack_wait: Duration,
    #[serde(deserialize_with = "options::duration")]
    pull_expiry: Duration,
    #[serde(deserialize_with = "options::max_deliveries")]
    max_deliveries: Option<u32>,
    dead_letter_suffix: String,
    storage: Storage,
    retention: Retention,
    #[serde(deserialize_with = "options::optional_duration")]
    max_age: Option<Duration>,
    #[serde(deserialize_with = "options::duration")]
    duplicate_window: Duration,
    replicas: usize,
}

impl Default for Options {
    fn default() -> Self {
        let c = NatsConfig::new(Vec::new());
        Self {
            url: None,
            creds: None,
            nkey: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            name: None,
            connect_timeout: c.connect_timeout,
            request_timeout: c.request_timeout,
            ack_wait: c.ack_wait,
            pull_expiry: c.pull_expiry,
            max_deliveries: c.delivery.max_deliveries,
            dead_letter_suffix: c.delivery.dead_letter_suffix,
            storage: c.streams.storage,
            retention: c.streams.retention,
            max_age: c.streams.max_age,
            duplicate_window: c.streams.duplicate_window,
            replicas: c.streams.replicas,
        }
    }
}

impl Options {
    /// The configuration these options describe; `shown` is the URL or
    /// file they came from, for errors.
    fn into_config(self, shown: &str) -> Result<NatsConfig> {
        let bad = |why: String| {
            Error::invalid_config(format!("invalid NATS URL {}: {why}", redact(shown)))
        };
        let url = self.url.ok_or_else(|| bad("no url".into()))?;
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected nats://, tls://, nats+js:// or tls+js://".into()))?;
        let (mode, tls_required) = match scheme {
            "nats" => (Mode::Core, false),
            "tls" => (Mode::Core, true),
            "nats+js" => (Mode::JetStream, false),
            "tls+js" => (Mode::JetStream, true),
            other => {
                return Err(bad(format!(
                    "unknown scheme {other:?}; expected nats, tls, nats+js or tls+js"
                )));
            }
        };
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
        let mut config = NatsConfig::new(Vec::new());
        config.mode = mode;
        config.tls.required = tls_required;
        for host in hosts.split(',') {
            let host = host.trim();
            if host.is_empty() {
                return Err(bad("no server address".into()));
            }
            if host.contains('/') {
                return Err(bad(format!("{host:?} is not host:port")));
            }
            if let Some((_, port)) = host.rsplit_once(':')
                && !host.ends_with(']')
                && port.parse::<u16>().is_err()
            {
                return Err(bad(format!("port {port:?} is not a number")));
            }
            config.servers.push(host.to_owned());
        }
        config.auth = match userinfo {
            None => Auth::None,
            Some(userinfo) => match userinfo.split_once(':') {
                Some((user, password)) => Auth::UserPassword {
                    user: percent_decode(user).map_err(|e| bad(e.into()))?,
                    password: percent_decode(password).map_err(|e| bad(e.into()))?,
                },
                None => Auth::Token(percent_decode(userinfo).map_err(|e| bad(e.into()))?),
            },
        };
        if let Some(creds) = self.creds {
            config.auth = Auth::CredentialsFile(creds);
        }
        if let Some(path) = self.nkey {
            let seed = std::fs::read_to_string(&path).map_err(|e| {
                Error::invalid_config_with(
                    format!(
                        "invalid NATS URL {}: cannot read the nkey file {}",
                        redact(shown),
                        path.display()
                    ),
                    e,
                )
            })?;
            config.auth = Auth::NkeySeed(seed.trim().to_owned());
        }
        config.tls.root_certificates.extend(self.tls_ca);
        match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => config.tls.client_certificate = Some((cert, key)),
            (None, None) => {}
            _ => return Err(bad("tls_cert and tls_key go together".into())),
        }
        config.name = self.name;
        config.connect_timeout = self.connect_timeout;
        config.request_timeout = self.request_timeout;
        config = config.ack_wait(self.ack_wait).pull_expiry(self.pull_expiry);
        config.delivery = DeliveryPolicy {
            max_deliveries: self.max_deliveries,
            dead_letter_suffix: self.dead_letter_suffix,
        };
        config.delivery.validate()?;
        config.streams = StreamSettings::default()
            .storage(self.storage)
            .retention(self.retention)
            .max_age(self.max_age)
            .duplicate_window(self.duplicate_window)
            .replicas(self.replicas);
        Ok(config)
    }
}

impl<'de> Deserialize<'de> for NatsConfig {
    /// From a file: the fields are the URL's query options, beside `url`.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let options = Options::deserialize(deserializer)?;
        let shown = options.url.clone().unwrap_or_default();
        options
            .into_config(&shown)
            .map_err(|e| serde::de::Error::custom(e.chain()))
    }
}

impl FromStr for NatsConfig {
    type Err = Error;

    /// [`NatsConfig::from_url`].
    fn from_str(url: &str) -> Result<Self> {
        Self::from_url(url)
    }
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("servers", &self.servers)
            .field("mode", &self.mode)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("name", &self.name)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("streams", &self.streams)
            .field("ack_wait", &self.ack_wait)
            .field("delivery", &self.delivery)
            .field("pull_expiry", &self.pull_expiry)
            .finish()
    }
}

/// The wait before connection attempt `attempt` (counted from 1, for the
/// first connect as for every reconnect): none before the first, then
/// 50 ms doubling up to 2 s, so that a restarted server is found quickly
/// and a server that stays down is not hammered.
/// The wait before reconnect attempt `attempt`: none for the first, then
/// 50 ms doubling to 500 ms. The cap bounds how long after a server comes
/// back the client notices (a try every half second costs a down server
/// nothing).
fn reconnect_delay(attempt: usize) -> Duration {
    match attempt {
        0 | 1 => Duration::ZERO,
        n => Duration::from_millis((50u64 << (n - 2).min(6)).min(500)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_connect_is_not_delayed() {
        let delays: Vec<u64> = (1..=9)
            .map(|n| reconnect_delay(n).as_millis() as u64)
            .collect();
        assert_eq!(delays, [0, 50, 100, 200, 400, 500, 500, 500, 500]);
    }

    #[test]
    fn urls() {
        let c = NatsConfig::from_url("nats://127.0.0.1:4222").unwrap();
        assert_eq!((c.mode, c.tls.required), (Mode::Core, false));
        assert_eq!(c.servers, ["127.0.0.1:4222"]);
        let c = NatsConfig::from_url("tls+js://a:1,b:2/?name=svc").unwrap();
        assert_eq!((c.mode, c.tls.required), (Mode::JetStream, true));
        assert_eq!(c.servers, ["a:1", "b:2"]);
        assert_eq!(c.name.as_deref(), Some("svc"));
        let c = NatsConfig::from_url("nats://al%40ice:p%3Aw@h:1").unwrap();
        assert!(
            matches!(c.auth, Auth::UserPassword { ref user, ref password } if user == "al@ice" && password == "p:w")
        );
        let c = NatsConfig::from_url("nats://tok@h:1").unwrap();
        assert!(matches!(c.auth, Auth::Token(ref t) if t == "tok"));
        let c = NatsConfig::from_url("nats://h:1?creds=/etc/x.creds&tls_ca=/ca.pem").unwrap();
        assert!(
            matches!(c.auth, Auth::CredentialsFile(ref p) if p == std::path::Path::new("/etc/x.creds"))
        );
        assert_eq!(c.tls.root_certificates, [PathBuf::from("/ca.pem")]);
    }

    #[test]
    fn bad_urls_are_config_errors_without_secrets() {
        for bad in [
            "http://h:1",
            "h:4222",
            "nats://u:pw@",
            "nats://u:pw@h:port",
            "nats://u:pw@h:1?bogus=1",
            "nats://u:pw@h:1?tls_cert=/c.pem",
            "nats://u:pw@h:1?nkey=/no/such/file",
            "nats://u:pw%zz@h:1",
        ] {
            match NatsConfig::from_url(bad) {
                Err(Error::InvalidConfig { reason: text, .. }) => {
                    assert!(!text.contains("pw"), "{bad}: {text}");
                    assert!(text.contains("invalid NATS URL"), "{text}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn secrets_never_show() {
        assert_eq!(
            redact("nats://u:pw@h:1,h:2?x=1"),
            "nats://u:***@h:1,h:2?x=1"
        );
        assert_eq!(redact("nats://token@h:1"), "nats://***@h:1");
        let seed = NatsConfig::new(vec!["h:1".into()]).auth(Auth::NkeySeed("SUSEED".into()));
        let token = NatsConfig::from_url("nats://tokentoken@h:1").unwrap();
        let pw = NatsConfig::from_url("nats://u:hunter2@h:1").unwrap();
        for (config, secret) in [(seed, "SUSEED"), (token, "tokentoken"), (pw, "hunter2")] {
            assert!(!format!("{config:?}").contains(secret));
        }
    }
}
