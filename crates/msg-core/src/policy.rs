//! Delivery policy: how often a message may be delivered, and where it goes
//! when it may not be delivered again. Enforced here, once, for every
//! transport.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::Stream;
use serde::Deserialize;

use crate::raw::AckFuture;
use crate::raw::topic::validate_topic;
use crate::{Delivery, DeliveryStream, Error, Result, Subscription};

/// The default [`dead_letter_suffix`](DeliveryPolicy::dead_letter_suffix).
pub const DEFAULT_DEAD_LETTER_SUFFIX: &str = ".dlq";

/// The default [`max_deliveries`](DeliveryPolicy::max_deliveries).
pub const DEFAULT_MAX_DELIVERIES: u32 = 10;

/// A transport's default delivery policy, part of its configuration;
/// a [`Subscription`] may override either part.
///
/// ```
/// use msg_core::DeliveryPolicy;
/// let policy: DeliveryPolicy =
///     serde_json::from_str(r#"{ "max_deliveries": 5, "dead_letter_suffix": ".dead" }"#).unwrap();
/// assert_eq!(policy.max_deliveries, Some(5));
/// policy.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryPolicy {
    /// After this many deliveries, a message that fails again (retried,
    /// now or after a delay) is dead-lettered with the reason `max deliveries (N)
    /// reached`, and a message the broker delivers more often (its
    /// consumers crashed) is dead-lettered without being handed out.
    /// `None` redelivers forever (written `none` in a file or URL).
    #[serde(deserialize_with = "crate::raw::config::max_deliveries")]
    pub max_deliveries: Option<u32>,
    /// Appended to a topic's name to name its dead-letter topic.
    pub dead_letter_suffix: String,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            max_deliveries: Some(DEFAULT_MAX_DELIVERIES),
            dead_letter_suffix: DEFAULT_DEAD_LETTER_SUFFIX.to_owned(),
        }
    }
}

impl DeliveryPolicy {
    /// Checks the values: at least one delivery, and a suffix that forms
    /// valid topic names.
    pub fn validate(&self) -> Result<()> {
        if self.max_deliveries == Some(0) {
            return Err(Error::invalid_config(
                "max_deliveries must be at least 1 (or none for no limit)",
            ));
        }
        validate_topic(&format!("t{}", self.dead_letter_suffix)).map_err(|_| {
            Error::invalid_config(format!(
                "dead_letter_suffix {:?} does not form valid topic names",
                self.dead_letter_suffix
            ))
        })
    }

    /// The policy of one subscription: its own settings where it has
    /// them, these defaults elsewhere.
    pub fn for_subscription(&self, subscription: &Subscription) -> SubscriptionPolicy {
        SubscriptionPolicy {
            max_deliveries: subscription
                .max_deliveries_override()
                .unwrap_or(self.max_deliveries),
            dead_letter: match subscription.dead_letter_topic_override() {
                Some(topic) => DeadLetterTo::Topic(topic.into()),
                None if self.dead_letter_suffix == DEFAULT_DEAD_LETTER_SUFFIX => {
                    DeadLetterTo::DefaultSuffix
                }
                None => DeadLetterTo::Suffix(self.dead_letter_suffix.as_str().into()),
            },
        }
    }
}

/// Where a subscription's dead letters go. Cloned per delivery: the
/// default needs no reference count.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DeadLetterTo {
    /// `<topic>.dlq`.
    DefaultSuffix,
    /// `<topic><suffix>`.
    Suffix(Arc<str>),
    /// One topic for every topic of the subscription.
    Topic(Arc<str>),
}

/// The delivery policy in force for one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionPolicy {
    max_deliveries: Option<u32>,
    dead_letter: DeadLetterTo,
}

impl Default for SubscriptionPolicy {
    /// No limit; dead letters to `<topic>.dlq`.
    fn default() -> Self {
        Self {
            max_deliveries: None,
            dead_letter: DeadLetterTo::DefaultSuffix,
        }
    }
}

impl SubscriptionPolicy {
    /// The most deliveries of one message, if limited.
    pub fn max_deliveries(&self) -> Option<u32> {
        self.max_deliveries
    }

    /// The dead-letter topic of messages from `topic`.
    pub fn dead_letter_topic(&self, topic: &str) -> String {
        match &self.dead_letter {
            DeadLetterTo::DefaultSuffix => format!("{topic}{DEFAULT_DEAD_LETTER_SUFFIX}"),
            DeadLetterTo::Suffix(suffix) => format!("{topic}{suffix}"),
            DeadLetterTo::Topic(to) => to.to_string(),
        }
    }

    /// The reason given when a message ran out of deliveries.
    pub(crate) fn exhausted_reason(max: u32) -> String {
        format!("max deliveries ({max}) reached")
    }
}

/// One subscription's policy, applied to each delivery as it arrives.
///
/// [`govern`] applies it to a whole stream; a transport that builds its
/// deliveries in a stream of its own may call [`admit`](Self::admit)
/// there instead, and save a stream layer.
#[derive(Debug, Clone)]
pub struct Governor {
    policy: SubscriptionPolicy,
}

impl Governor {
    /// Applies `policy`.
    pub fn new(policy: SubscriptionPolicy) -> Self {
        Self { policy }
    }

    /// Puts `delivery` under the policy, to be handed out; or, when it was
    /// delivered more often than allowed (its consumers crashed), starts its
    /// dead letter and returns that, for the caller to drive: the delivery
    /// is then settled and must not be handed out.
    ///
    /// It takes the delivery by reference: moving a delivery in and out
    /// costs the in-process broker a measurable share of its time.
    pub fn admit(&self, delivery: &mut Delivery) -> Option<AckFuture> {
        match self.policy.max_deliveries {
            Some(max) if delivery.metadata().attempt > max => {
                tracing::warn!(
                    topic = &*delivery.metadata().topic,
                    attempt = delivery.metadata().attempt,
                    max,
                    "delivered more often than allowed; dead-lettering without handing it out"
                );
                Some(
                    delivery
                        .dead_letter_now(&self.policy, SubscriptionPolicy::exhausted_reason(max)),
                )
            }
            _ => {
                delivery.govern(self.policy.clone());
                None
            }
        }
    }
}

/// Logs a failed dead letter of a delivery past its limit: the transport
/// delivers it again, and it is dead-lettered then.
pub fn dead_letter_failed(e: &Error) {
    tracing::warn!(error = %e.chain(), "dead-lettering a message past its max deliveries failed");
}

/// Applies `policy` to a transport's delivery stream: each delivery settles
/// under it, and a delivery whose attempt is past the limit is
/// dead-lettered at once, without being handed out.
///
/// Every transport ends its `subscribe` with this (or admits each delivery
/// through a [`Governor`] itself), so that max deliveries and dead-letter
/// topics mean the same on every broker.
pub fn govern<S>(stream: S, policy: SubscriptionPolicy) -> DeliveryStream
where
    S: Stream<Item = Result<Delivery>> + Send + Unpin + 'static,
{
    Box::pin(Governed {
        inner: stream,
        governor: Governor::new(policy),
        dead_lettering: None,
    })
}

struct Governed<S> {
    inner: S,
    governor: Governor,
    /// The dead letter of a delivery that arrived past the limit.
    dead_lettering: Option<AckFuture>,
}

impl<S> Stream for Governed<S>
where
    S: Stream<Item = Result<Delivery>> + Send + Unpin + 'static,
{
    type Item = Result<Delivery>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(settling) = &mut this.dead_lettering {
                let result = ready!(Pin::new(settling).poll(cx));
                this.dead_lettering = None;
                if let Err(e) = result {
                    dead_letter_failed(&e);
                }
            }
            let mut delivery = match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(delivery)) => delivery,
                other => return Poll::Ready(other),
            };
            match this.governor.admit(&mut delivery) {
                None => return Poll::Ready(Some(Ok(delivery))),
                Some(dead_letter) => this.dead_lettering = Some(dead_letter),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_settings_win_over_the_defaults() {
        let defaults = DeliveryPolicy::default();
        let plain = defaults.for_subscription(&Subscription::new("orders"));
        assert_eq!(plain.max_deliveries(), Some(DEFAULT_MAX_DELIVERIES));
        assert_eq!(plain.dead_letter_topic("orders"), "orders.dlq");

        let own = defaults.for_subscription(
            &Subscription::new("orders.*")
                .max_deliveries(None)
                .dead_letter_topic("failed"),
        );
        assert_eq!(own.max_deliveries(), None);
        assert_eq!(own.dead_letter_topic("orders.eu"), "failed");

        let suffixed = DeliveryPolicy {
            max_deliveries: Some(3),
            dead_letter_suffix: "-dead".into(),
        }
        .for_subscription(&Subscription::new("a"));
        assert_eq!(suffixed.max_deliveries(), Some(3));
        assert_eq!(suffixed.dead_letter_topic("a"), "a-dead");
    }

    #[test]
    fn validation() {
        DeliveryPolicy::default().validate().unwrap();
        let zero = DeliveryPolicy {
            max_deliveries: Some(0),
            ..Default::default()
        };
        assert!(zero.validate().is_err());
        let bad = DeliveryPolicy {
            dead_letter_suffix: " bad".into(),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
