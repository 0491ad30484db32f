//! What to consume, and how.

use crate::raw::topic::validate_pattern;
use crate::{Error, Result};

/// Who gets each message of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distribution {
    /// Every subscriber gets every message.
    Broadcast,
    /// Subscribers of one group compete: each message goes to one of them.
    /// Different groups each get every message.
    Group(String),
}

/// Where a new subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartPosition {
    /// Only messages published from now on.
    #[default]
    Latest,
    /// Every message the broker still retains.
    Earliest,
}

/// The default prefetch: how many unsettled deliveries one subscriber holds.
pub const DEFAULT_PREFETCH: usize = 256;

/// A subscription: the topics, who gets each message, where to start, prefetch.
///
/// ```
/// use msg_core::{Subscription, StartPosition};
/// let sub = Subscription::new("orders.*")
///     .group("billing")
///     .start(StartPosition::Earliest)
///     .prefetch(64);
/// assert_eq!(sub.topics(), ["orders.*"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    topics: Vec<String>,
    distribution: Distribution,
    start: StartPosition,
    prefetch: usize,
    max_deliveries: Option<Option<u32>>,
    dead_letter_topic: Option<String>,
}

impl Subscription {
    /// A broadcast subscription to one topic or topic pattern, starting at
    /// the latest position.
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topics: vec![topic.into()],
            distribution: Distribution::Broadcast,
            start: StartPosition::Latest,
            prefetch: DEFAULT_PREFETCH,
            max_deliveries: None,
            dead_letter_topic: None,
        }
    }

    /// Adds another topic or pattern.
    pub fn and_topic(mut self, topic: impl Into<String>) -> Self {
        self.topics.push(topic.into());
        self
    }

    /// Joins the consumer group `name`.
    pub fn group(mut self, name: impl Into<String>) -> Self {
        self.distribution = Distribution::Group(name.into());
        self
    }

    /// Sets where a new subscription starts.
    pub fn start(mut self, start: StartPosition) -> Self {
        self.start = start;
        self
    }

    /// Sets how many unsettled deliveries this subscriber may hold.
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// Sets how often one message may be delivered before a failure
    /// dead-letters it (`None`: redeliver forever), instead of the
    /// transport's default ([`DeliveryPolicy`](crate::DeliveryPolicy)).
    pub fn max_deliveries(mut self, max: Option<u32>) -> Self {
        self.max_deliveries = Some(max);
        self
    }

    /// Sends the dead letters of every topic of this subscription to
    /// `topic`, instead of `<topic><dead_letter_suffix>`.
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self
    }

    /// The max deliveries this subscription sets, if it sets one.
    pub fn max_deliveries_override(&self) -> Option<Option<u32>> {
        self.max_deliveries
    }

    /// The dead-letter topic this subscription sets, if it sets one.
    pub fn dead_letter_topic_override(&self) -> Option<&str> {
        self.dead_letter_topic.as_deref()
    }

    /// The topics and patterns.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// Who gets each message: every subscriber, or one of a group.
    pub fn distribution(&self) -> &Distribution {
        &self.distribution
    }

    /// The group name, for group subscriptions.
    pub fn group_name(&self) -> Option<&str> {
        match &self.distribution {
            Distribution::Group(g) => Some(g),
            Distribution::Broadcast => None,
        }
    }

    /// Where a new subscription starts.
    pub fn start_position(&self) -> StartPosition {
        self.start
    }

    /// How many unsettled deliveries this subscriber may hold.
    pub fn prefetch_count(&self) -> usize {
        self.prefetch
    }

    /// Checks topics, group name and prefetch; subscribers call this first.
    pub fn validate(&self) -> Result<()> {
        if self.topics.is_empty() {
            return Err(Error::invalid_config("subscription names no topic"));
        }
        self.topics.iter().try_for_each(|t| validate_pattern(t))?;
        if let Distribution::Group(g) = &self.distribution {
            let ok = !g.is_empty()
                && g.len() <= 200
                && g.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(Error::invalid_config(format!(
                    "invalid group name {g:?}: use 1-200 ASCII letters, digits, '.', '_' or '-'"
                )));
            }
        }
        if self.prefetch == 0 {
            return Err(Error::invalid_config("prefetch must be at least 1"));
        }
        if self.max_deliveries == Some(Some(0)) {
            return Err(Error::invalid_config(
                "max_deliveries must be at least 1 (or None for no limit)",
            ));
        }
        if let Some(topic) = &self.dead_letter_topic {
            crate::raw::topic::validate_topic(topic)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        Subscription::new("a.*").group("g-1").validate().unwrap();
        assert!(Subscription::new("a b").validate().is_err());
        assert!(Subscription::new("a").group("").validate().is_err());
        assert!(
            Subscription::new("a")
                .group("has space")
                .validate()
                .is_err()
        );
        assert!(Subscription::new("a").prefetch(0).validate().is_err());
        assert!(
            Subscription::new("a")
                .max_deliveries(Some(0))
                .validate()
                .is_err()
        );
        assert!(
            Subscription::new("a")
                .dead_letter_topic("a.*")
                .validate()
                .is_err()
        );
    }
}
