//! Configuration of the in-process broker.

use msg_core::DeliveryPolicy;
use serde::Deserialize;

/// What a publish does when a subscriber's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait until the consumers make room (backpressure).
    #[default]
    Wait,
    /// Fail at once with the retryable `Error::Backpressure`.
    Fail,
}

/// Configuration of a [`MemoryBroker`](crate::MemoryBroker).
///
/// ```
/// use msg_memory::{MemoryConfig, WhenFull};
/// let config = MemoryConfig::default()
///     .capacity(10_000)
///     .when_full(WhenFull::Fail)
///     .retention(1_000)
///     .max_deliveries(Some(5));
/// # let _ = config;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// How many messages one subscriber queue holds before publishes wait
    /// or fail (deliveries handed out and not yet settled do not count).
    pub capacity: usize,
    /// What a publish does when a queue is full.
    pub when_full: WhenFull,
    /// How many of its latest messages each topic keeps, so that a new
    /// subscriber starting at the earliest position receives them, and so
    /// that [`MemoryBroker::published`](crate::MemoryBroker::published) can
    /// show them. 0 keeps none.
    pub retention: usize,
    /// The default of [`DeliveryPolicy::max_deliveries`]; a subscription
    /// may set its own. `none` in a file or URL.
    #[serde(deserialize_with = "msg_core::raw::config::max_deliveries")]
    pub max_deliveries: Option<u32>,
    /// The default of [`DeliveryPolicy::dead_letter_suffix`]; a subscription
    /// may name its own dead-letter topic.
    pub dead_letter_suffix: String,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            capacity: 65_536,
            when_full: WhenFull::Wait,
            retention: 0,
            max_deliveries: DeliveryPolicy::default().max_deliveries,
            dead_letter_suffix: DeliveryPolicy::default().dead_letter_suffix,
        }
    }
}

impl std::str::FromStr for MemoryConfig {
    type Err = msg_core::Error;

    /// The configuration in a `memory://[NAME][?options]` URL; the name is
    /// the broker's, not part of its configuration.
    fn from_str(url: &str) -> msg_core::Result<Self> {
        crate::parse_url(url).map(|(_, config)| config)
    }
}

impl MemoryConfig {
    /// Sets [`capacity`](Self::capacity).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }
    /// Sets [`when_full`](Self::when_full).
    pub fn when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
        self
    }
    /// Sets [`retention`](Self::retention).
    pub fn retention(mut self, retention: usize) -> Self {
        self.retention = retention;
        self
    }
    /// Sets [`max_deliveries`](Self::max_deliveries).
    pub fn max_deliveries(mut self, max: Option<u32>) -> Self {
        self.max_deliveries = max;
        self
    }
    /// Sets [`dead_letter_suffix`](Self::dead_letter_suffix).
    pub fn dead_letter_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.dead_letter_suffix = suffix.into();
        self
    }

    /// The delivery policy subscriptions start from.
    pub fn delivery_policy(&self) -> DeliveryPolicy {
        DeliveryPolicy {
            max_deliveries: self.max_deliveries,
            dead_letter_suffix: self.dead_letter_suffix.clone(),
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> msg_core::Result<()> {
        if self.capacity == 0 {
            return Err(msg_core::Error::invalid_config(
                "memory capacity must be at least 1",
            ));
        }
        self.delivery_policy().validate()
    }
}
