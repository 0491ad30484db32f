//! **msg**: transport-agnostic messaging for Rust.
//!
//! One set of types ([`Message`], [`Delivery`], [`Event`]), one [`Router`]
//! whose handlers are async functions of extractors ([`Json`], [`State`],
//! [`Metadata`], ...) or `tower` services, and whose middleware are `tower`
//! layers, over any broker. Application code written against `msg` runs
//! unchanged on the in-process broker in tests and on a real broker in
//! production; [`connect`] picks the transport from a URL.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> msg::Result<()> {
//! use msg::{Message, Metadata, Publisher, Router, Subscription};
//!
//! let conn = msg::connect("memory://").await?;
//! let router = Router::new(conn.clone(), conn.clone())
//!     .handle(
//!         Subscription::new("greetings").group("greeter"),
//!         |meta: Metadata, msg: Message| async move {
//!             println!("got {:?} on {}", msg.payload(), meta.topic);
//!             Ok(())
//!         },
//!     )
//!     .start()
//!     .await?;
//! conn.publish("greetings", Message::new("hello")).await?;
//! router.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Transports are cargo features of this crate, each re-exported as a
//! module:
//!
//! | feature | URL scheme | module (crate) |
//! |---|---|---|
//! | `memory` (default) | `memory://`, `memory://NAME` | [`memory`] (`msg-memory`) |
//! | `redis` | `redis://[user:password@]host:port[/db]` | `redis` (`msg-redis`) |
//! | `amqp` | `amqp[s]://[user:password@]host:port[/vhost]` | `amqp` (`msg-amqp`) |
//! | `nats` | `nats://host:port` (core), `nats+js://host:port` (JetStream); `tls://`, `tls+js://` | `nats` (`msg-nats`) |
//! | `kafka` | `kafka://[user:password@]host:port[,host:port...]` | `kafka` (`msg-kafka`) |
//!
//! The transactional outbox is the feature `outbox`, with the database as
//! a feature too (`sqlite`, embedded; `postgres`): module `outbox`
//! (`msg-outbox`). Scheduled and recurring delivery is the feature
//! `scheduler` (module `scheduler`, `msg-scheduler`), with its stores
//! chosen the same way (`sqlite`, `postgres`, and `redis` with the Redis
//! transport; the in-memory store always).
//!
//! What only transport authors need is in [`raw`].
#![forbid(unsafe_code)]

pub use msg_core::*;

#[doc(hidden)]
pub mod fuzz;

/// Handler middleware as `tower` layers: retry then dead letter,
/// timeout, poison quarantine, dedup, circuit breaker, rate limit,
/// metrics, tracing.
pub use msg_middleware as middleware;

/// The transactional outbox: messages enqueued in the application's
/// database transaction, published by a relay once it committed.
#[cfg(feature = "outbox")]
pub use msg_outbox as outbox;

/// Messages delivered at a time: one-shot and recurring schedules, their
/// runners, and `deliver_at` on every transport.
#[cfg(feature = "scheduler")]
pub use msg_scheduler as scheduler;

/// The in-process broker.
#[cfg(feature = "memory")]
pub use msg_memory as memory;

/// The Redis Streams transport.
#[cfg(feature = "redis")]
pub use msg_redis as redis;

/// The NATS transport, core and JetStream.
#[cfg(feature = "nats")]
pub use msg_nats as nats;

/// The RabbitMQ / AMQP 0-9-1 transport.
#[cfg(feature = "amqp")]
pub use msg_amqp as amqp;

/// The Kafka transport.
#[cfg(feature = "kafka")]
pub use msg_kafka as kafka;

/// Connects to the broker a URL names, with the transport its scheme picks.
///
/// Fails with [`Error::InvalidConfig`] for a URL without a scheme, or one
/// whose transport is not compiled in; the message names the scheme, never
/// the credentials the URL may hold.
pub async fn connect(url: &str) -> Result<Connection> {
    let scheme = url
        .split_once("://")
        .map(|(scheme, _)| scheme)
        .ok_or_else(|| Error::invalid_config("a broker URL needs a scheme, e.g. memory://"))?;
    match scheme {
        #[cfg(feature = "memory")]
        "memory" => {
            let broker = msg_memory::MemoryBroker::connect(url)?;
            Ok(
                Connection::new(broker.clone())
                    .with_dead_letter_reader(std::sync::Arc::new(broker)),
            )
        }
        #[cfg(feature = "redis")]
        "redis" | "rediss" => {
            let broker = msg_redis::RedisBroker::connect_url(url).await?;
            Ok(
                Connection::new(broker.clone())
                    .with_dead_letter_reader(std::sync::Arc::new(broker)),
            )
        }
        #[cfg(feature = "nats")]
        "nats" | "tls" | "nats+js" | "tls+js" => {
            let broker = msg_nats::NatsBroker::connect_url(url).await?;
            Ok(
                Connection::new(broker.clone())
                    .with_dead_letter_reader(std::sync::Arc::new(broker)),
            )
        }
        #[cfg(feature = "amqp")]
        "amqp" | "amqps" => {
            let broker = msg_amqp::AmqpBroker::connect_url(url).await?;
            Ok(
                Connection::new(broker.clone())
                    .with_dead_letter_reader(std::sync::Arc::new(broker)),
            )
        }
        #[cfg(feature = "kafka")]
        "kafka" => {
            let broker = msg_kafka::KafkaBroker::connect_url(url).await?;
            Ok(
                Connection::new(broker.clone())
                    .with_dead_letter_reader(std::sync::Arc::new(broker)),
            )
        }
        other => Err(Error::invalid_config(format!(
            "no transport for URL scheme {other:?}; compiled in: {}",
            SCHEMES.join(", ")
        ))),
    }
}

/// The URL schemes this build can connect to.
const SCHEMES: &[&str] = &[
    #[cfg(feature = "memory")]
    "memory",
    #[cfg(feature = "redis")]
    "redis, rediss",
    #[cfg(feature = "nats")]
    "nats, tls, nats+js, tls+js",
    #[cfg(feature = "amqp")]
    "amqp, amqps",
    #[cfg(feature = "kafka")]
    "kafka",
];
