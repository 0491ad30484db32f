//! The in-process broker of **msg**: the embedded default and the test
//! double.
//!
//! Topics, broadcast and consumer groups, ack / nack / defer / reject with
//! dead-letter topics (`<topic>.dlq` by default), max deliveries, bounded
//! queues with backpressure, optional retention for subscribers that start
//! at the earliest position, and helpers for tests.
//!
//! ```
//! # async fn example() -> msg_core::Result<()> {
//! use futures::StreamExt;
//! use msg_core::{Message, Publisher, Subscriber, Subscription};
//! use msg_memory::MemoryBroker;
//!
//! let broker = MemoryBroker::new();
//! let mut stream = broker.subscribe(Subscription::new("orders").group("billing")).await?;
//! broker.publish("orders", Message::new("hello")).await?;
//! let mut delivery = stream.next().await.expect("a delivery")?;
//! assert_eq!(&delivery.message().payload()[..], b"hello");
//! delivery.ack().await?;
//! # Ok(()) }
//! ```
//!
//! Messages are kept in memory only: they are gone when the process ends.
#![forbid(unsafe_code)]

mod ack;
mod broker;
mod config;
mod dead_letter;
mod error;
mod publisher;
mod subscriber;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use msg_core::{Capabilities, Error, Message, MessageOrder, Result};

pub use broker::TopicStats;
pub use config::{MemoryConfig, WhenFull};

use broker::{Shared, lock};

/// A handle to an in-process broker.
///
/// Clones share the broker and the handle's closed state;
/// [`client`](Self::client) gives a new handle to the same broker that is
/// closed on its own, as a second connection would be.
#[derive(Clone)]
pub struct MemoryBroker {
    shared: Arc<Shared>,
    handle: Arc<Handle>,
}

/// The close state of one handle.
struct Handle {
    publisher_closed: AtomicBool,
    subscriber_closed: AtomicBool,
    /// Wakes this handle's streams when the subscriber closes.
    closing: tokio::sync::Notify,
}

impl Handle {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            publisher_closed: AtomicBool::new(false),
            subscriber_closed: AtomicBool::new(false),
            closing: tokio::sync::Notify::new(),
        })
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

fn registry() -> &'static Mutex<HashMap<String, Weak<Shared>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Weak<Shared>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

impl MemoryBroker {
    /// A new broker with the default configuration.
    pub fn new() -> Self {
        Self::from_shared(Arc::new(Shared::new(MemoryConfig::default())))
    }

    /// A new broker with `config`.
    pub fn with_config(config: MemoryConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self::from_shared(Arc::new(Shared::new(config))))
    }

    /// Connects by URL: `memory://` is a new broker; `memory://NAME` is the
    /// broker of that name in this process, created on first use, so that
    /// separate parts of a program can meet. Query parameters set the
    /// configuration: `capacity`, `when_full` (`wait` | `fail`), `retention`,
    /// `max_deliveries` (a number or `none`), `dead_letter_suffix`.
    pub fn connect(url: &str) -> Result<Self> {
        let (name, config) = parse_url(url)?;
        config.validate()?;
        let Some(name) = name else {
            return Ok(Self::from_shared(Arc::new(Shared::new(config))));
        };
        let mut registry = lock(registry());
        registry.retain(|_, weak| weak.strong_count() > 0);
        if let Some(shared) = registry.get(&name).and_then(Weak::upgrade) {
            if shared.config != config {
                return Err(Error::invalid_config(format!(
                    "memory broker {name:?} already runs with another configuration: {:?}",
                    shared.config
                )));
            }
            return Ok(Self::from_shared(shared));
        }
        let shared = Arc::new(Shared::new(config));
        registry.insert(name, Arc::downgrade(&shared));
        Ok(Self::from_shared(shared))
    }

    fn from_shared(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            handle: Handle::new(),
        }
    }

    /// A new handle to the same broker, closed on its own.
    pub fn client(&self) -> Self {
        Self::from_shared(self.shared.clone())
    }

    /// What this broker guarantees.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities::minimal("memory")
            .with_at_least_once(true)
            .with_consumer_groups(true)
            .with_ordering(MessageOrder::PerTopic)
            .with_replay(self.shared.config.retention > 0)
            .with_native_dead_letter(true)
            .with_native_retry_after(true)
            .with_native_deliver_at(true)
            .with_native_ttl(true)
            .with_native_reply_to(true)
            .with_wildcards(true)
    }

    /// The configuration.
    pub fn config(&self) -> &MemoryConfig {
        &self.shared.config
    }

    /// The counters of `topic` (all zero for a topic never published to).
    pub fn stats(&self, topic: &str) -> TopicStats {
        self.shared.stats(topic)
    }

    /// The messages `topic` retains, oldest first: the last
    /// [`retention`](MemoryConfig::retention) ones published.
    pub fn published(&self, topic: &str) -> Vec<Message> {
        self.shared.retained(topic)
    }

    /// The topics published to so far, sorted.
    pub fn topics(&self) -> Vec<String> {
        self.shared.topics()
    }

    /// Waits until `condition` holds for the counters of `topic`, e.g.
    /// `|s| s.acked >= 10`. Fails with [`Error::Timeout`] after `timeout`.
    pub async fn wait_for(
        &self,
        topic: &str,
        condition: impl Fn(&TopicStats) -> bool,
        timeout: Duration,
    ) -> Result<TopicStats> {
        let wait = self.shared.watching(async |changed| {
            loop {
                let notified = changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let stats = self.stats(topic);
                if condition(&stats) {
                    return stats;
                }
                notified.await;
            }
        });
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::timeout(timeout))
    }
}

pub(crate) fn parse_url(url: &str) -> Result<(Option<String>, MemoryConfig)> {
    // Whatever was given may carry a password meant for another broker.
    let shown = msg_core::raw::url::redact(url);
    let rest = url.strip_prefix("memory://").ok_or_else(|| {
        Error::invalid_config(format!(
            "invalid memory URL {shown:?}: expected memory:// or memory://NAME"
        ))
    })?;
    let (name, query) = msg_core::raw::config::split_query(rest);
    let name = name.trim_end_matches('/');
    let config: MemoryConfig = msg_core::raw::config::query_options("memory", url, query)?;
    if name.contains('/') {
        return Err(Error::invalid_config(format!(
            "invalid memory URL {shown:?}: the name may not contain '/'"
        )));
    }
    Ok(((!name.is_empty()).then(|| name.to_owned()), config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the urls fuzz target: the error echoed a URL meant for
    /// another broker, password and all.
    #[test]
    fn a_refused_url_does_not_show_its_password() {
        for url in [
            "redis://u:s3cretpassword@h:6379",
            "memory://a/b?x=1&password=s3cretpassword",
        ] {
            let e = parse_url(url).unwrap_err();
            assert!(!e.chain().contains("s3cretpassword"), "{}", e.chain());
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("memory://").unwrap(),
            (None, MemoryConfig::default())
        );
        let (name, config) =
            parse_url("memory://shop?retention=5&max_deliveries=none&when_full=fail").unwrap();
        assert_eq!(name.as_deref(), Some("shop"));
        assert_eq!(config.retention, 5);
        assert_eq!(config.max_deliveries, None);
        assert_eq!(config.when_full, WhenFull::Fail);
        for bad in [
            "redis://x",
            "memory://?capacity=x",
            "memory://?bogus=1",
            "memory://?retention",
            "memory://a/b",
        ] {
            assert!(MemoryBroker::connect(bad).is_err(), "{bad}");
        }
        assert!(MemoryBroker::connect("memory://?capacity=0").is_err());
    }

    #[test]
    fn named_brokers_are_shared_and_config_must_match() {
        let a = MemoryBroker::connect("memory://unit-named").unwrap();
        let b = MemoryBroker::connect("memory://unit-named").unwrap();
        assert!(Arc::ptr_eq(&a.shared, &b.shared));
        assert!(MemoryBroker::connect("memory://unit-named?retention=3").is_err());
        let c = MemoryBroker::connect("memory://").unwrap();
        assert!(!Arc::ptr_eq(&a.shared, &c.shared));
    }
}
