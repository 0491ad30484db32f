//! Kafka transport for **msg**, on rdkafka (librdkafka).
//!
//! - Publishing is idempotent with `acks=all`: a publish returns once every
//!   in-sync replica has the record. The message key is the record key, so
//!   one key stays in one partition and in order.
//! - A group subscription is a Kafka consumer group; a broadcast
//!   subscription is a consumer group of its own. Offsets are committed by
//!   the transport: only the settled prefix of each partition, so that a
//!   message still being handled is never skipped, even when later ones
//!   were acked first.
//! - nack and defer redeliver locally (Kafka has no per-message
//!   redelivery); reject produces the dead letter to `<topic>.dlq`.
//! - Missing topics are created through the admin API.
//!
//! `docs/transports/kafka.md` has the whole picture.
//!
//! ```no_run
//! # async fn example() -> msg_core::Result<()> {
//! use msg_core::{Message, Publisher};
//! use msg_kafka::{KafkaBroker, KafkaConfig};
//! let broker = KafkaBroker::connect(KafkaConfig::from_url("kafka://127.0.0.1:9092")?).await?;
//! broker.publish("orders.created", Message::new("hello").with_key("order-7")).await?;
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
mod subscriber;

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use msg_core::raw::reply::is_reply_topic;
use msg_core::{Capabilities, CloudEventsBinding, MessageOrder, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureProducer;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use ack::{HEADER_ORIGINAL_OFFSET, HEADER_ORIGINAL_PARTITION};
pub use config::{Compression, KafkaConfig};
pub use error::ErrorContext;

/// librdkafka's default `message.max.bytes`: the largest record a
/// producer sends unless the property says otherwise.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1_000_000;

/// A connection to a Kafka cluster: one idempotent producer for publishing,
/// one consumer per subscription.
///
/// Clones share the producer and the closed state.
#[derive(Clone)]
pub struct KafkaBroker {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) config: KafkaConfig,
    pub(crate) producer: FutureProducer<ErrorContext>,
    admin: AdminClient<DefaultClientContext>,
    /// Topics known to exist: created or seen by this broker handle.
    known_topics: Mutex<HashSet<String>>,
    pub(crate) publisher_closed: AtomicBool,
    pub(crate) subscriber_closed: AtomicBool,
    /// Becomes true when the subscriber closes; every consumer watches it.
    pub(crate) closing: watch::Sender<bool>,
    /// The consume tasks, awaited on close.
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for KafkaBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBroker")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl KafkaBroker {
    /// Creates the producer and checks that the cluster answers (its
    /// metadata within the connect timeout). Once connected, librdkafka
    /// reconnects on its own after an outage.
    pub async fn connect(config: KafkaConfig) -> Result<Self> {
        config.validate()?;
        let errors = ErrorContext::default();
        let producer: FutureProducer<ErrorContext> = config
            .producer()
            .create_with_context(errors.clone())
            .map_err(error::kafka)?;
        let admin: AdminClient<DefaultClientContext> =
            config.admin().create().map_err(error::kafka)?;
        // Ask for the cluster's metadata, so that an unreachable cluster is
        // an error now rather than a publish that times out later.
        let probe = producer.clone();
        let timeout = config.connect_timeout;
        tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer;
            // In steps, so that a refusal (a certificate, a login) ends the
            // wait at once rather than after the whole timeout.
            let deadline = std::time::Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match probe
                    .client()
                    .fetch_metadata(None, left.min(Duration::from_millis(500)))
                {
                    Ok(_) => return Ok(()),
                    Err(e) if errors.refused() || left.is_zero() => {
                        return Err(error::connect(e, &errors));
                    }
                    Err(_) => {}
                }
            }
        })
        .await
        .map_err(|e| msg_core::Error::Connection(Box::new(e)))??;
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                producer,
                admin,
                known_topics: Mutex::new(HashSet::new()),
                publisher_closed: AtomicBool::new(false),
                subscriber_closed: AtomicBool::new(false),
                closing: watch::channel(false).0,
                tasks: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Connects by URL with the default configuration (see
    /// [`KafkaConfig::from_url`]).
    pub async fn connect_url(url: &str) -> Result<Self> {
        Self::connect(KafkaConfig::from_url(url)?).await
    }

    /// What Kafka guarantees.
    pub const CAPABILITIES: Capabilities = Capabilities::minimal("kafka")
        .with_persistent(true)
        .with_at_least_once(true)
        .with_consumer_groups(true)
        // Within a partition, and so per key.
        .with_ordering(MessageOrder::PerKey)
        .with_replay(true)
        .with_wildcards(true)
        .with_native_reply_to(true)
        .with_max_message_size(Some(DEFAULT_MAX_MESSAGE_SIZE))
        .with_cloudevents(CloudEventsBinding::Kafka);

    /// What this transport guarantees with its configuration.
    pub fn capabilities(&self) -> Capabilities {
        Self::CAPABILITIES.with_max_message_size(Some(self.shared.config.max_message_size()))
    }

    /// The rdkafka producer, for what this transport does not cover
    /// (transactions, custom partitions).
    pub fn producer(&self) -> &FutureProducer<ErrorContext> {
        &self.shared.producer
    }
}

impl Shared {
    /// Creates the topics that this handle has not seen yet; a topic that
    /// exists already is fine.
    pub(crate) async fn ensure_topics(&self, topics: &[&str]) -> Result<()> {
        let missing: Vec<&str> = {
            let known = self.known_topics.lock().expect("topics lock");
            topics
                .iter()
                .copied()
                .filter(|t| !known.contains(*t))
                .collect()
        };
        if missing.is_empty() || !self.config.create_topics {
            return Ok(());
        }
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|t| {
                let replication =
                    TopicReplication::Fixed(i32::from(self.config.replication_factor));
                if is_reply_topic(t) {
                    // One reader: one partition. A reply is of no use once
                    // its request timed out: keep an hour of them at most.
                    NewTopic::new(t, 1, replication).set("retention.ms", "3600000")
                } else {
                    NewTopic::new(t, i32::from(self.config.partitions), replication)
                }
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = self
            .admin
            .create_topics(&new, &options)
            .await
            .map_err(error::kafka)?;
        let mut known = self.known_topics.lock().expect("topics lock");
        for result in results {
            match result {
                Ok(topic) | Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    known.insert(topic);
                }
                Err((topic, code)) => {
                    let e = error::kafka(rdkafka::error::KafkaError::AdminOp(code));
                    tracing::warn!(topic, error = %e.chain(), "creating a topic failed");
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Whether the reply topic `topic` exists: known to this handle, or in
    /// the cluster's metadata now (then remembered).
    pub(crate) async fn reply_topic_exists(&self, topic: &str) -> Result<bool> {
        if self
            .known_topics
            .lock()
            .expect("topics lock")
            .contains(topic)
        {
            return Ok(true);
        }
        let producer = self.producer.clone();
        let (name, timeout) = (topic.to_owned(), self.config.connect_timeout);
        let exists = tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer;
            // All topics rather than this one: asked for a topic it does
            // not have, tansu answers with what crashes librdkafka 2.x
            // (a segfault in its metadata cache, seen in tests).
            let metadata = producer
                .client()
                .fetch_metadata(None, timeout)
                .map_err(error::kafka)?;
            Ok::<_, msg_core::Error>(
                metadata
                    .topics()
                    .iter()
                    .any(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty()),
            )
        })
        .await
        .map_err(|e| msg_core::Error::Connection(Box::new(e)))??;
        if exists {
            self.known_topics
                .lock()
                .expect("topics lock")
                .insert(topic.to_owned());
        }
        Ok(exists)
    }

    /// Forgets that `topic` exists (a reply topic whose publish failed:
    /// it may have been deleted).
    pub(crate) fn forget_topic(&self, topic: &str) {
        self.known_topics.lock().expect("topics lock").remove(topic);
    }
}
