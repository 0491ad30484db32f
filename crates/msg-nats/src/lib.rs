//! NATS transport for **msg**, on async-nats: core NATS and JetStream.
//!
//! - **Core NATS** (`nats://`): at most once, nothing stored. Broadcast is
//!   a plain subscription, a group is a queue group, topic patterns are
//!   NATS's own wildcards. Settling is a no-op, except that a reject still
//!   publishes the dead letter.
//! - **JetStream** (`nats+js://`): persistent and at least once. Publishes
//!   wait for the server's acknowledgement and are de-duplicated by message
//!   id; a group is a durable pull consumer; settles map onto ack, nak,
//!   nak with delay and term.
//!
//! `docs/transports/nats.md` has the whole picture.
//!
//! ```no_run
//! # async fn example() -> msg_core::Result<()> {
//! use msg_core::{Message, Publisher};
//! use msg_nats::{NatsBroker, NatsConfig};
//! let broker = NatsBroker::connect(NatsConfig::from_url("nats+js://127.0.0.1:4222")?).await?;
//! broker.publish("orders.created", Message::new("hello")).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod ack;
mod config;
mod dead_letter;
mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod publisher;
mod streams;
mod subscriber;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use async_nats::jetstream;
use msg_core::{Capabilities, CloudEventsBinding, MessageOrder, Result};
use tokio::sync::watch;

pub use config::{Auth, Mode, NatsConfig, Retention, Storage, StreamSettings, Tls};

/// A connection to a NATS server, publishing and subscribing in one
/// [`Mode`].
///
/// Clones share the connection and the closed state.
#[derive(Clone)]
pub struct NatsBroker {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) config: NatsConfig,
    pub(crate) client: async_nats::Client,
    pub(crate) jetstream: jetstream::Context,
    /// Topic (or pattern) -> the stream that holds it, once looked up.
    pub(crate) streams: Mutex<HashMap<String, String>>,
    pub(crate) publisher_closed: AtomicBool,
    pub(crate) subscriber_closed: AtomicBool,
    /// Becomes true when the subscriber closes; every stream watches it.
    pub(crate) closing: watch::Sender<bool>,
    /// Counts lost connections: a JetStream publish waiting for its
    /// acknowledgement when the connection goes fails at once.
    pub(crate) disconnects: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl NatsBroker {
    /// Connects to the server. Fails if it cannot be reached now; once
    /// connected, the client reconnects on its own after an outage, and
    /// subscriptions go on.
    ///
    /// In JetStream mode it also checks that the server has JetStream.
    pub async fn connect(config: NatsConfig) -> Result<Self> {
        config.delivery.validate()?;
        let disconnects = Arc::new(watch::channel(0u64).0);
        let counter = disconnects.clone();
        let options = config
            .connect_options()
            .await?
            .event_callback(move |event| {
                let counter = counter.clone();
                async move {
                    if matches!(event, async_nats::Event::Disconnected) {
                        counter.send_modify(|n| *n += 1);
                    }
                }
            });
        let client = options
            .connect(config.servers.clone())
            .await
            .map_err(|e| error::connect(e, config.connect_timeout).on_connect())?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .build(client.clone());
        if config.mode == Mode::JetStream {
            jetstream.query_account().await.map_err(|e| {
                msg_core::Error::invalid_config_with(
                    "JetStream is not available on this NATS server \
                     (start it with -js, or use nats:// for core NATS)",
                    e,
                )
            })?;
        }
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                client,
                jetstream,
                streams: Mutex::new(HashMap::new()),
                publisher_closed: AtomicBool::new(false),
                subscriber_closed: AtomicBool::new(false),
                closing: watch::channel(false).0,
                disconnects,
            }),
        })
    }

    /// Connects by URL with the default configuration; the scheme picks the
    /// mode (see [`NatsConfig::from_url`]).
    pub async fn connect_url(url: &str) -> Result<Self> {
        Self::connect(NatsConfig::from_url(url)?).await
    }

    /// What core NATS guarantees.
    pub const CORE_CAPABILITIES: Capabilities = Capabilities::minimal("nats-core")
        .with_consumer_groups(true)
        // In the order the server received them: one publisher's messages
        // arrive in its publish order.
        .with_ordering(MessageOrder::PerTopic)
        .with_wildcards(true)
        .with_native_reply_to(true)
        // The server's default max_payload; the connection reports the
        // actual limit.
        .with_max_message_size(Some(1024 * 1024))
        .with_cloudevents(CloudEventsBinding::Nats);

    /// What JetStream guarantees.
    pub const JETSTREAM_CAPABILITIES: Capabilities = Self::CORE_CAPABILITIES
        .with_transport("nats-jetstream")
        .with_persistent(true)
        .with_at_least_once(true)
        .with_replay(true)
        .with_native_retry_after(true)
        .with_native_dedup(true);

    /// The mode this broker speaks.
    pub fn mode(&self) -> Mode {
        self.shared.config.mode
    }

    /// What this transport guarantees, in its mode.
    pub fn capabilities(&self) -> Capabilities {
        let base = match self.mode() {
            Mode::Core => Self::CORE_CAPABILITIES,
            Mode::JetStream => Self::JETSTREAM_CAPABILITIES,
        };
        let jetstream = self.mode() == Mode::JetStream;
        base.with_max_message_size(Some(self.shared.max_payload()))
            // Per-message TTLs came with server 2.11, message schedules with 2.12.
            .with_native_ttl(jetstream && self.shared.server_at_least(2, 11))
            .with_native_deliver_at(jetstream && self.shared.server_at_least(2, 12))
    }

    /// The async-nats client, for what this transport does not cover
    /// (request-reply, key-value, object store).
    pub fn client(&self) -> &async_nats::Client {
        &self.shared.client
    }
}

impl Drop for Shared {
    /// Publishes, acks and naks are queued on the connection without
    /// waiting: when the last handle goes, send what is queued before the
    /// connection closes, so that nothing is lost by dropping a broker.
    fn drop(&mut self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            runtime.spawn(async move {
                if let Err(e) = client.flush().await {
                    tracing::warn!(error = %e, "NATS flush on drop failed");
                }
            });
        }
    }
}

impl Shared {
    /// The largest message the server accepts (headers included).
    pub(crate) fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Whether the server's version is at least `major.minor`.
    pub(crate) fn server_at_least(&self, major: u64, minor: u64) -> bool {
        let version = self.client.server_info().version;
        let mut parts = version
            .split(['.', '-'])
            .map(|p| p.parse::<u64>().unwrap_or(0));
        let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        found >= (major, minor)
    }
}
