//! Received messages and how they are settled.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;

use crate::policy::SubscriptionPolicy;
use crate::{Error, Message, Result, headers};

/// What the broker says about a received message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metadata {
    /// The topic the message was published to.
    pub topic: Arc<str>,
    /// The partition, on partitioned brokers.
    pub partition: Option<u32>,
    /// The offset or sequence number within the topic or partition.
    pub offset: Option<u64>,
    /// When the broker accepted the message.
    pub timestamp: Option<SystemTime>,
    /// The delivery attempt: 1 on first delivery.
    pub attempt: u32,
    /// Whether the broker delivered this message before.
    pub redelivered: bool,
    /// The consumer group, for group subscriptions.
    pub group: Option<Arc<str>>,
}

impl Metadata {
    /// Metadata of a first delivery from `topic`.
    pub fn new(topic: impl Into<Arc<str>>) -> Self {
        Self {
            topic: topic.into(),
            partition: None,
            offset: None,
            timestamp: None,
            attempt: 1,
            redelivered: false,
            group: None,
        }
    }

    /// Sets the partition.
    pub fn with_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the offset or sequence number.
    pub fn with_offset(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }

    /// Sets the broker timestamp.
    pub fn with_timestamp(mut self, timestamp: SystemTime) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Sets the delivery attempt (1-based); `redelivered` follows from it.
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt.max(1);
        self.redelivered = self.attempt > 1;
        self
    }

    /// Sets the consumer group.
    pub fn with_group(mut self, group: Option<Arc<str>>) -> Self {
        self.group = group;
        self
    }
}

/// A received message with its metadata, as handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The message.
    pub message: Message,
    /// What the broker says about it.
    pub metadata: Metadata,
}

impl Received {
    /// The topic it came from.
    pub fn topic(&self) -> &str {
        &self.metadata.topic
    }

    /// The delivery attempt: 1 on first delivery.
    pub fn attempt(&self) -> u32 {
        self.metadata.attempt
    }
}

impl std::ops::Deref for Received {
    type Target = Message;
    fn deref(&self) -> &Message {
        &self.message
    }
}

/// How a delivery is settled. The same four words run from a handler's
/// result (see [`HandlerError`](crate::HandlerError)) to the broker: ack,
/// retry, retry after a delay, dead-letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Processed: never deliver again.
    Ack,
    /// Not processed: deliver again soon.
    Retry,
    /// Not processed: deliver again, but not before the delay.
    RetryAfter(Duration),
    /// Never deliver again: publish to the dead-letter topic with this
    /// reason.
    DeadLetter(String),
}

impl Settlement {
    /// Its name, for logs, metrics and span fields: `ack`, `retry`,
    /// `retry_after` or `dead_letter`.
    pub fn name(&self) -> &'static str {
        match self {
            Settlement::Ack => "ack",
            Settlement::Retry => "retry",
            Settlement::RetryAfter(_) => "retry_after",
            Settlement::DeadLetter(_) => "dead_letter",
        }
    }
}

/// The future of one settle: ready at once for transports that settle
/// without waiting (no allocation then), or boxed.
#[must_use = "a settle does nothing unless awaited"]
pub enum AckFuture {
    /// Settled already, with this result.
    Ready(Option<Result<()>>),
    /// Settling needs a round trip to the broker.
    Pending(BoxFuture<'static, Result<()>>),
}

impl AckFuture {
    /// A settle that completed at once.
    pub fn ready(result: Result<()>) -> Self {
        AckFuture::Ready(Some(result))
    }

    /// A settle that has to wait.
    pub fn pending(future: impl Future<Output = Result<()>> + Send + 'static) -> Self {
        AckFuture::Pending(Box::pin(future))
    }
}

impl Future for AckFuture {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        match self.get_mut() {
            AckFuture::Ready(result) => {
                Poll::Ready(result.take().unwrap_or(Err(Error::AlreadySettled)))
            }
            AckFuture::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for AckFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AckFuture::Ready(_) => "AckFuture::Ready",
            AckFuture::Pending(_) => "AckFuture::Pending",
        })
    }
}

/// What a transport is asked to do with one delivery: the user's
/// [`Settlement`] after the delivery policy was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Processed: never deliver again.
    Ack,
    /// Deliver again soon.
    Retry,
    /// Deliver again, but not before the delay.
    RetryAfter(Duration),
    /// Publish the dead letter (the message with the reserved headers, see
    /// [`dead_letter_message`]) to `topic`, then never deliver again.
    DeadLetter {
        /// The dead-letter topic, chosen by the subscription's policy.
        topic: String,
        /// Why: the handler's reason, or `max deliveries (N) reached`.
        reason: String,
        /// The attempts the message had: its deliveries, or the handler's
        /// calls when a retry layer called it more than once per delivery.
        /// The dead letter's `msg-attempts` header.
        attempts: u32,
    },
}

/// The transport's side of settling one delivery.
///
/// Each transport implements this once; [`Delivery`] and [`Acker`] make
/// sure it is called at most once, and turn the user's settlement into an
/// [`Action`] under the subscription's delivery policy.
pub trait AckBackend: Send + 'static {
    /// The topic the delivery came from; its dead-letter topic is derived
    /// from it.
    fn topic(&self) -> &str;

    /// Carries out `action` on the broker.
    fn settle(self: Box<Self>, action: Action) -> AckFuture;

    /// Called when a delivery is dropped unsettled: the broker must deliver it
    /// again (a dropped delivery is never dead-lettered: its next delivery
    /// is, if it is past the limit). The default spawns an [`Action::Retry`]
    /// on the current Tokio runtime; transports that redeliver unsettled
    /// messages on their own, or can retry without waiting, override it.
    fn drop_unsettled(self: Box<Self>) {
        let nack = self.settle(Action::Retry);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = nack.await {
                    tracing::warn!(error = %e.chain(), "retrying a dropped delivery failed");
                }
            });
        }
    }
}

/// The handle that settles one delivery: ack, retry, retry after a delay,
/// or dead-letter.
///
/// Settling twice returns [`Error::AlreadySettled`]. Dropping it unsettled
/// retries the delivery, so that nothing is lost. A retry of the last
/// delivery the subscription's policy allows dead-letters instead.
pub struct Acker {
    backend: Option<Box<dyn AckBackend>>,
    attempt: u32,
    policy: Option<SubscriptionPolicy>,
}

impl Acker {
    /// Settles the delivery as `settlement` says.
    pub async fn settle(&mut self, settlement: Settlement) -> Result<()> {
        self.start(settlement).await
    }

    /// Starts settling: the transport's future, which the router polls in
    /// place, boxing nothing when the transport settled at once.
    pub(crate) fn start(&mut self, settlement: Settlement) -> AckFuture {
        let Some(acker) = self.backend.take() else {
            return AckFuture::ready(Err(Error::AlreadySettled));
        };
        let policy = self.policy.as_ref();
        let exhausted = policy
            .and_then(SubscriptionPolicy::max_deliveries)
            .filter(|max| self.attempt >= *max);
        let action = match (settlement, exhausted) {
            (Settlement::Ack, _) => Action::Ack,
            (Settlement::Retry | Settlement::RetryAfter(_), Some(max)) => {
                let reason = SubscriptionPolicy::exhausted_reason(max);
                dead_letter_action(policy, &*acker, reason, self.attempt)
            }
            (Settlement::Retry, None) => Action::Retry,
            (Settlement::RetryAfter(delay), None) => Action::RetryAfter(delay),
            (Settlement::DeadLetter(reason), _) => {
                dead_letter_action(policy, &*acker, reason, self.attempt)
            }
        };
        acker.settle(action)
    }

    /// Dead-letters at once under `policy` (a delivery past its limit).
    pub(crate) fn start_dead_letter(
        &mut self,
        policy: &SubscriptionPolicy,
        reason: String,
    ) -> AckFuture {
        match self.backend.take() {
            Some(acker) => {
                let action = dead_letter_action(Some(policy), &*acker, reason, self.attempt);
                acker.settle(action)
            }
            None => AckFuture::ready(Err(Error::AlreadySettled)),
        }
    }

    /// Processed: never deliver again.
    pub async fn ack(&mut self) -> Result<()> {
        self.settle(Settlement::Ack).await
    }

    /// Not processed: deliver again soon.
    pub async fn retry(&mut self) -> Result<()> {
        self.settle(Settlement::Retry).await
    }

    /// Deliver again, but not before `delay`.
    pub async fn retry_after(&mut self, delay: Duration) -> Result<()> {
        self.settle(Settlement::RetryAfter(delay)).await
    }

    /// Never deliver again: dead-letter with `reason`.
    pub async fn dead_letter(&mut self, reason: impl Into<String>) -> Result<()> {
        self.settle(Settlement::DeadLetter(reason.into())).await
    }

    /// Counts `calls` handler calls for this message (a retry layer called
    /// it more than once per delivery): a dead letter says so in
    /// `msg-attempts`, rather than the deliveries alone.
    pub(crate) fn count_calls(&mut self, calls: u32) {
        self.attempt = self.attempt.max(calls);
    }

    /// Whether the delivery was settled.
    pub fn is_settled(&self) -> bool {
        self.backend.is_none()
    }
}

impl Drop for Acker {
    fn drop(&mut self) {
        if let Some(acker) = self.backend.take() {
            acker.drop_unsettled();
        }
    }
}

impl fmt::Debug for Acker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acker")
            .field("settled", &self.is_settled())
            .field("policy", &self.policy)
            .finish()
    }
}

/// Dead-letters to the topic `policy` chooses for the delivery's topic.
fn dead_letter_action(
    policy: Option<&SubscriptionPolicy>,
    acker: &dyn AckBackend,
    reason: String,
    attempts: u32,
) -> Action {
    let topic = match policy {
        Some(policy) => policy.dead_letter_topic(acker.topic()),
        None => dead_letter_topic(acker.topic()),
    };
    Action::DeadLetter {
        topic,
        reason,
        attempts,
    }
}

/// A received message, its metadata, and the handle that settles it.
#[derive(Debug)]
pub struct Delivery {
    received: Received,
    acker: Acker,
}

impl Delivery {
    /// A delivery of `message` with `metadata`, settled through `acker`.
    pub fn new(message: Message, metadata: Metadata, acker: impl AckBackend) -> Self {
        let acker = Acker {
            backend: Some(Box::new(acker)),
            attempt: metadata.attempt,
            policy: None,
        };
        Self {
            received: Received { message, metadata },
            acker,
        }
    }

    /// Puts the delivery under its subscription's policy.
    pub(crate) fn govern(&mut self, policy: SubscriptionPolicy) {
        self.acker.policy = Some(policy);
    }

    /// Dead-letters at once under `policy`; the delivery is then settled.
    pub(crate) fn dead_letter_now(
        &mut self,
        policy: &SubscriptionPolicy,
        reason: String,
    ) -> AckFuture {
        self.acker.start_dead_letter(policy, reason)
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.received.message
    }

    /// What the broker says about the message.
    pub fn metadata(&self) -> &Metadata {
        &self.received.metadata
    }

    /// Splits into what a handler sees and the handle that settles it.
    pub fn into_parts(self) -> (Received, Acker) {
        (self.received, self.acker)
    }

    /// Processed: never deliver again.
    pub async fn ack(&mut self) -> Result<()> {
        self.acker.ack().await
    }

    /// Not processed: deliver again soon.
    pub async fn retry(&mut self) -> Result<()> {
        self.acker.retry().await
    }

    /// Deliver again, but not before `delay`.
    pub async fn retry_after(&mut self, delay: Duration) -> Result<()> {
        self.acker.retry_after(delay).await
    }

    /// Never deliver again: dead-letter with `reason`.
    pub async fn dead_letter(&mut self, reason: impl Into<String>) -> Result<()> {
        self.acker.dead_letter(reason).await
    }

    /// Settles as `settlement` says.
    pub async fn settle(&mut self, settlement: Settlement) -> Result<()> {
        self.acker.settle(settlement).await
    }
}

/// The default dead-letter topic of `topic`: `<topic>.dlq`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// The message to publish to a dead-letter topic: the original id, key,
/// payload and headers, plus the reserved dead-letter headers.
///
/// Transports without native dead-lettering use this so that a dead letter
/// reads the same on every broker.
pub fn dead_letter_message(
    received: &Received,
    reason: &str,
    attempts: u32,
    error: Option<&str>,
) -> Message {
    let mut message = received.message.clone();
    let headers = message.headers_mut();
    headers.insert(headers::DEAD_LETTER_REASON, one_line(reason));
    headers.insert(headers::ORIGINAL_TOPIC, &*received.metadata.topic);
    headers.insert(headers::ATTEMPTS, attempts.to_string());
    headers.insert(
        headers::DEAD_LETTERED_AT,
        crate::raw::time::rfc3339(SystemTime::now()),
    );
    if let Some(error) = error {
        headers.insert(headers::ERROR, one_line(error));
    }
    message
}

/// Header values may not hold line breaks: fold them into spaces.
pub(crate) fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Record(Arc<Mutex<Vec<Action>>>);

    impl AckBackend for Record {
        fn topic(&self) -> &str {
            "orders"
        }
        fn settle(self: Box<Self>, s: Action) -> AckFuture {
            self.0.lock().unwrap().push(s);
            AckFuture::ready(Ok(()))
        }
        fn drop_unsettled(self: Box<Self>) {
            self.0.lock().unwrap().push(Action::Retry);
        }
    }

    #[tokio::test]
    async fn settling_twice_is_an_error() {
        let rec = Record::default();
        let mut d = Delivery::new(Message::new("x"), Metadata::new("t"), rec.clone());
        d.ack().await.unwrap();
        assert!(matches!(d.retry().await, Err(Error::AlreadySettled)));
        assert!(matches!(
            d.dead_letter("r").await,
            Err(Error::AlreadySettled)
        ));
        drop(d);
        assert_eq!(*rec.0.lock().unwrap(), vec![Action::Ack]);
    }

    #[tokio::test]
    async fn dropping_unsettled_nacks() {
        let rec = Record::default();
        let d = Delivery::new(Message::new("x"), Metadata::new("t"), rec.clone());
        let (_received, settle) = d.into_parts();
        drop(settle);
        assert_eq!(*rec.0.lock().unwrap(), vec![Action::Retry]);
    }

    fn governed(attempt: u32, max: Option<u32>, rec: &Record) -> Delivery {
        let mut d = Delivery::new(
            Message::new("x"),
            Metadata::new("orders").with_attempt(attempt),
            rec.clone(),
        );
        let policy = crate::DeliveryPolicy {
            max_deliveries: max,
            ..Default::default()
        };
        d.govern(policy.for_subscription(&crate::Subscription::new("orders")));
        d
    }

    #[tokio::test]
    async fn the_last_allowed_failure_dead_letters() {
        let rec = Record::default();
        governed(2, Some(3), &rec).retry().await.unwrap();
        governed(3, Some(3), &rec).retry().await.unwrap();
        governed(3, Some(3), &rec)
            .retry_after(Duration::from_secs(1))
            .await
            .unwrap();
        governed(3, None, &rec).retry().await.unwrap();
        governed(3, Some(3), &rec).ack().await.unwrap();
        let exhausted = Action::DeadLetter {
            topic: "orders.dlq".into(),
            reason: "max deliveries (3) reached".into(),
            attempts: 3,
        };
        assert_eq!(
            *rec.0.lock().unwrap(),
            vec![
                Action::Retry,
                exhausted.clone(),
                exhausted,
                Action::Retry,
                Action::Ack
            ]
        );
    }

    #[tokio::test]
    async fn reject_goes_to_the_policy_topic_and_a_drop_is_never_a_dead_letter() {
        let rec = Record::default();
        let mut d = Delivery::new(Message::new("x"), Metadata::new("orders"), rec.clone());
        d.govern(
            crate::DeliveryPolicy::default()
                .for_subscription(&crate::Subscription::new("orders").dead_letter_topic("failed")),
        );
        d.dead_letter("bad").await.unwrap();
        // Without a policy: `<topic>.dlq`.
        let mut plain = Delivery::new(Message::new("x"), Metadata::new("orders"), rec.clone());
        plain.dead_letter("worse").await.unwrap();
        // A crash or shutdown, not a failure: redelivered, not dead-lettered.
        drop(governed(3, Some(3), &rec));
        assert_eq!(
            *rec.0.lock().unwrap(),
            vec![
                Action::DeadLetter {
                    topic: "failed".into(),
                    reason: "bad".into(),
                    attempts: 1,
                },
                Action::DeadLetter {
                    topic: "orders.dlq".into(),
                    reason: "worse".into(),
                    attempts: 1,
                },
                Action::Retry
            ]
        );
    }

    #[test]
    fn dead_letter_headers() {
        let received = Received {
            message: Message::new("p").with_header("h", "v"),
            metadata: Metadata::new("orders").with_attempt(3),
        };
        let dl = dead_letter_message(&received, "bad\npayload", 3, Some("decode failed"));
        assert_eq!(dl.id(), received.message.id());
        assert_eq!(dl.header("h"), Some("v"));
        assert_eq!(dl.header(headers::DEAD_LETTER_REASON), Some("bad payload"));
        assert_eq!(dl.header(headers::ORIGINAL_TOPIC), Some("orders"));
        assert_eq!(dl.header(headers::ATTEMPTS), Some("3"));
        assert_eq!(dl.header(headers::ERROR), Some("decode failed"));
        assert!(dl.header(headers::DEAD_LETTERED_AT).unwrap().ends_with('Z'));
        dl.validate().unwrap();
    }
}
