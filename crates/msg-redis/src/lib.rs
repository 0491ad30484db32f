//! Redis Streams transport for **msg**, on fred.
//!
//! A topic is a stream; a message is an entry (layout in
//! [`publisher`]); a group is a consumer group; settling
//! maps onto XACK, a claim, a sorted set of deferred entries, and a
//! dead-letter stream. `docs/transports/redis.md` has the whole picture.
//!
//! ```no_run
//! # async fn example() -> msg_core::Result<()> {
//! use msg_core::{Message, Publisher};
//! use msg_redis::{RedisBroker, RedisConfig};
//! let broker = RedisBroker::connect(RedisConfig::from_url("redis://127.0.0.1:6379")?).await?;
//! broker.publish("orders", Message::new("hello")).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod ack;
mod config;
mod dead_letter;
mod entry;
mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod publisher;
mod subscriber;
mod tls;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use fred::prelude::{Builder, Client, ClientLike, ReconnectPolicy};
use msg_core::{Capabilities, MessageOrder, Result};
use tokio::sync::Notify;

pub use config::RedisConfig;

/// A connection to a Redis server, publishing and subscribing.
///
/// Clones share the connection and the closed state.
#[derive(Clone)]
pub struct RedisBroker {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) config: RedisConfig,
    /// Commands that return at once (XADD, XACK, ZADD, ...).
    pub(crate) client: Client,
    pub(crate) publisher_closed: AtomicBool,
    pub(crate) subscriber_closed: AtomicBool,
    pub(crate) closing: Notify,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// Connects to the server. Fails if it cannot be reached now; once
    /// connected, the client reconnects on its own after an outage.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        config.validate()?;
        let client = new_client(&config)?;
        client
            .init()
            .await
            .map_err(|e| error::map(e, config.command_timeout).on_connect())?;
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                client,
                publisher_closed: AtomicBool::new(false),
                subscriber_closed: AtomicBool::new(false),
                closing: Notify::new(),
            }),
        })
    }

    /// Connects by URL with the default configuration.
    pub async fn connect_url(url: &str) -> Result<Self> {
        Self::connect(RedisConfig::from_url(url)?).await
    }

    /// What this transport guarantees.
    pub const CAPABILITIES: Capabilities = Capabilities::minimal("redis")
        .with_persistent(true)
        .with_at_least_once(true)
        .with_consumer_groups(true)
        .with_ordering(MessageOrder::PerTopic)
        .with_replay(true)
        .with_native_reply_to(true)
        // Redis limits a bulk string to 512 MiB.
        .with_max_message_size(Some(512 * 1024 * 1024));

    /// What this transport guarantees.
    pub fn capabilities(&self) -> Capabilities {
        Self::CAPABILITIES
    }
}

/// A client that reconnects forever, with backoff, and bounds each command.
pub(crate) fn new_client(config: &RedisConfig) -> Result<Client> {
    let mut fred_config = fred::types::config::Config::from_url(&config.url)
        .map_err(|e| error::map(e, config.command_timeout))?;
    if fred_config.uses_tls() {
        let client = msg_core::raw::config::client_certificate(
            config.tls_cert.as_deref(),
            config.tls_key.as_deref(),
        )?;
        fred_config.tls = Some(tls::client_config(config.tls_ca.as_deref(), client)?.into());
    }
    let timeout = config.command_timeout;
    Builder::from_config(fred_config)
        .with_performance_config(|p| p.default_command_timeout = timeout)
        .with_connection_config(|c| {
            c.connection_timeout = std::time::Duration::from_secs(5);
            c.max_command_attempts = 1;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
        .build()
        .map_err(|e| error::map(e, config.command_timeout))
}
