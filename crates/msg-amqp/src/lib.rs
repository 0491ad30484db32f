//! RabbitMQ / AMQP 0-9-1 transport for **msg**, on lapin.
//!
//! Topics are routing keys on one durable topic exchange; a group is a
//! durable queue per (topics, group) bound to it; a broadcast subscriber
//! gets an exclusive queue of its own. Publishes are persistent and wait
//! for the broker's confirm. `docs/transports/amqp.md` has the topology
//! picture and how each settle maps.
//!
//! ```no_run
//! # async fn example() -> msg_core::Result<()> {
//! use msg_core::{Message, Publisher};
//! use msg_amqp::{AmqpBroker, AmqpConfig};
//! let broker = AmqpBroker::connect(AmqpConfig::from_url("amqp://guest:guest@127.0.0.1:5672/%2f")?).await?;
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
mod reconnect;
mod subscriber;
mod topology;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::{Channel, Connection, ConnectionProperties};
use msg_core::{Capabilities, CloudEventsBinding, Error, MessageOrder, Result};
use tokio::sync::watch;

pub use config::AmqpConfig;

/// A connection to a RabbitMQ broker, publishing and subscribing.
///
/// Clones share the connection and the closed state. After an outage the
/// connection is opened again on next use; subscriptions re-declare their
/// topology and go on.
#[derive(Clone)]
pub struct AmqpBroker {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) config: AmqpConfig,
    connection: tokio::sync::Mutex<Link>,
    /// The channel publishes go through, in confirm mode.
    publish_channel: tokio::sync::Mutex<Option<Channel>>,
    /// Retry and delay queues declared on the current publish channel, and
    /// when.
    declared_queues: Mutex<HashMap<String, Instant>>,
    pub(crate) publisher_closed: AtomicBool,
    pub(crate) subscriber_closed: AtomicBool,
    /// Becomes true when the subscriber closes; every stream watches it.
    pub(crate) closing: watch::Sender<bool>,
}

impl std::fmt::Debug for AmqpBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpBroker")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl AmqpBroker {
    /// Connects to the broker and declares the exchange. Fails if the
    /// broker cannot be reached now.
    pub async fn connect(config: AmqpConfig) -> Result<Self> {
        config.validate()?;
        let shared = Arc::new(Shared {
            config,
            connection: tokio::sync::Mutex::new(Link::default()),
            publish_channel: tokio::sync::Mutex::new(None),
            declared_queues: Mutex::new(HashMap::new()),
            publisher_closed: AtomicBool::new(false),
            subscriber_closed: AtomicBool::new(false),
            closing: watch::channel(false).0,
        });
        shared.publish_channel().await?;
        Ok(Self { shared })
    }

    /// Connects by URL with the default configuration.
    pub async fn connect_url(url: &str) -> Result<Self> {
        Self::connect(AmqpConfig::from_url(url)?).await
    }

    /// What this transport guarantees.
    pub const CAPABILITIES: Capabilities = Capabilities::minimal("amqp")
        .with_persistent(true)
        .with_at_least_once(true)
        .with_consumer_groups(true)
        // A queue is FIFO; a nack puts the message back at its place.
        .with_ordering(MessageOrder::PerTopic)
        .with_wildcards(true)
        .with_native_deliver_at(true)
        .with_native_ttl(true)
        .with_native_reply_to(true)
        // RabbitMQ's default max_message_size.
        .with_max_message_size(Some(128 * 1024 * 1024))
        .with_cloudevents(CloudEventsBinding::Amqp);

    /// What this transport guarantees.
    pub fn capabilities(&self) -> Capabilities {
        Self::CAPABILITIES
    }
}

/// The connection, and when to open it again if opening it failed.
#[derive(Default)]
struct Link {
    open: Option<Arc<Connection>>,
    reconnect: reconnect::Reconnect,
}

impl Shared {
    /// The open connection, or a new one when there is none or it broke;
    /// for a while after a failed connect, that failure again (see
    /// `reconnect`).
    pub(crate) async fn connection(&self) -> Result<Arc<Connection>> {
        let mut link = self.connection.lock().await;
        if let Some(connection) = link.open.as_ref()
            && connection.status().connected()
        {
            return Ok(connection.clone());
        }
        link.reconnect.check(Instant::now())?;
        match self.connect().await {
            Ok(connection) => {
                link.reconnect.connected();
                link.open = Some(connection.clone());
                Ok(connection)
            }
            Err(error) => {
                link.reconnect.failed(Instant::now(), &error);
                Err(error)
            }
        }
    }

    /// Opens a new connection.
    async fn connect(&self) -> Result<Arc<Connection>> {
        let mut tls = lapin::tcp::OwnedTLSConfig::default();
        let read = |option: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| {
                Error::invalid_config_with(format!("cannot read {option} {}", path.display()), e)
            })
        };
        if let Some(path) = &self.config.tls_ca {
            tls.cert_chain = Some(String::from_utf8_lossy(&read("tls_ca", path)?).into_owned());
        }
        if let Some((cert, key)) = msg_core::raw::config::client_certificate(
            self.config.tls_cert.as_deref(),
            self.config.tls_key.as_deref(),
        )? {
            tls.identity = Some(lapin::tcp::OwnedIdentity::PKCS8 {
                pem: read("tls_cert", cert)?,
                key: read("tls_key", key)?,
            });
        }
        let runtime = lapin::runtime::default_runtime().map_err(error::map)?;
        let limit = self.config.connect_timeout();
        let connect = Connection::connect_with_config(
            &self.config.url,
            ConnectionProperties::default().with_connection_name("msg".into()),
            tls,
            runtime,
        );
        let connection = tokio::time::timeout(limit, connect)
            .await
            .map_err(|_| Error::timeout(limit))?
            .map_err(|e| error::map(e).on_connect())?;
        Ok(Arc::new(connection))
    }

    /// A new channel on the connection.
    pub(crate) async fn channel(&self) -> Result<Channel> {
        self.connection()
            .await?
            .create_channel()
            .await
            .map_err(error::map)
    }

    /// Whether the expiring queue `name` was declared recently enough that
    /// it still exists. Declaring renews a queue's `x-expires` lease and
    /// publishing does not, so a queue in use is declared again every half
    /// lease ([`topology::QUEUE_IDLE_MS`]); the lease outlasts the longest
    /// wait of a message published in between.
    pub(crate) fn recently_declared(&self, name: &str) -> bool {
        let lease = Duration::from_millis(topology::QUEUE_IDLE_MS / 2);
        self.declared_queues
            .lock()
            .expect("declared queues lock")
            .get(name)
            .is_some_and(|at| at.elapsed() < lease)
    }

    /// Records that `name` was just declared.
    pub(crate) fn declared(&self, name: String) {
        self.declared_queues
            .lock()
            .expect("declared queues lock")
            .insert(name, Instant::now());
    }

    /// The publishing channel, opened (confirm mode, exchange declared)
    /// when there is none or it broke.
    pub(crate) async fn publish_channel(&self) -> Result<Channel> {
        let mut current = self.publish_channel.lock().await;
        if let Some(channel) = current.as_ref()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let channel = self.channel().await?;
        channel
            .confirm_select(Default::default())
            .await
            .map_err(error::map)?;
        topology::declare_exchange(&channel, &self.config.exchange).await?;
        self.declared_queues
            .lock()
            .expect("declared queues lock")
            .clear();
        *current = Some(channel.clone());
        Ok(channel)
    }
}

impl Drop for Shared {
    /// Closes the connection cleanly, so that the broker requeues at once
    /// what this connection held unsettled.
    fn drop(&mut self) {
        let connection = self.connection.get_mut().open.take();
        if let (Some(connection), Ok(runtime)) = (connection, tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move {
                let _ = connection.close(200, "bye".into()).await;
            });
        }
    }
}
