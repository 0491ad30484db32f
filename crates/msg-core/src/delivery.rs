//! Received messages and how they are settled.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;

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

/// How a delivery is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Processed: never deliver again.
    Ack,
    /// Not processed: deliver again soon.
    Nack,
    /// Not processed: deliver again, but not before the delay.
    Defer(Duration),
    /// Never deliver again: dead-letter with this reason.
    Reject(String),
}

/// The future of one settle: ready at once for transports that settle
/// without waiting (no allocation then), or boxed.
#[must_use = "a settle does nothing unless awaited"]
pub enum SettleFuture {
    /// Settled already, with this result.
    Ready(Option<Result<()>>),
    /// Settling needs a round trip to the broker.
    Pending(BoxFuture<'static, Result<()>>),
}

impl SettleFuture {
    /// A settle that completed at once.
    pub fn ready(result: Result<()>) -> Self {
        SettleFuture::Ready(Some(result))
    }

    /// A settle that has to wait.
    pub fn pending(future: impl Future<Output = Result<()>> + Send + 'static) -> Self {
        SettleFuture::Pending(Box::pin(future))
    }
}

impl Future for SettleFuture {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        match self.get_mut() {
            SettleFuture::Ready(result) => {
                Poll::Ready(result.take().unwrap_or(Err(Error::AlreadySettled)))
            }
            SettleFuture::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for SettleFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SettleFuture::Ready(_) => "SettleFuture::Ready",
            SettleFuture::Pending(_) => "SettleFuture::Pending",
        })
    }
}

/// The transport's side of settling one delivery.
///
/// Each transport implements this once; [`Delivery`] and [`Settle`] make
/// sure it is called at most once.
pub trait Acker: Send + 'static {
    /// Settles the delivery on the broker.
    fn settle(self: Box<Self>, settlement: Settlement) -> SettleFuture;

    /// Called when a delivery is dropped unsettled: the broker must deliver it
    /// again. The default spawns a [`Settlement::Nack`] on the current Tokio
    /// runtime; transports that redeliver unsettled messages on their own, or
    /// can nack without waiting, override it.
    fn drop_unsettled(self: Box<Self>) {
        let nack = self.settle(Settlement::Nack);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = nack.await {
                    tracing::warn!(error = %e.chain(), "nack of a dropped delivery failed");
                }
            });
        }
    }
}

/// The handle that settles one delivery: ack, nack, defer or reject.
///
/// Settling twice returns [`Error::AlreadySettled`]. Dropping it unsettled
/// nacks the delivery, so that nothing is lost.
pub struct Settle {
    acker: Option<Box<dyn Acker>>,
}

impl Settle {
    /// Wraps a transport's acker.
    pub fn new(acker: impl Acker) -> Self {
        Self {
            acker: Some(Box::new(acker)),
        }
    }

    /// Settles the delivery as `settlement` says.
    pub async fn settle(&mut self, settlement: Settlement) -> Result<()> {
        self.start(settlement).await
    }

    /// Starts settling: the transport's future, which the router polls in
    /// place, boxing nothing when the transport settled at once.
    pub(crate) fn start(&mut self, settlement: Settlement) -> SettleFuture {
        match self.acker.take() {
            Some(acker) => acker.settle(settlement),
            None => SettleFuture::ready(Err(Error::AlreadySettled)),
        }
    }

    /// Processed: never deliver again.
    pub async fn ack(&mut self) -> Result<()> {
        self.settle(Settlement::Ack).await
    }

    /// Not processed: deliver again soon.
    pub async fn nack(&mut self) -> Result<()> {
        self.settle(Settlement::Nack).await
    }

    /// Deliver again, but not before `delay`.
    pub async fn defer(&mut self, delay: Duration) -> Result<()> {
        self.settle(Settlement::Defer(delay)).await
    }

    /// Never deliver again: dead-letter with `reason`.
    pub async fn reject(&mut self, reason: impl Into<String>) -> Result<()> {
        self.settle(Settlement::Reject(reason.into())).await
    }

    /// Whether the delivery was settled.
    pub fn is_settled(&self) -> bool {
        self.acker.is_none()
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        if let Some(acker) = self.acker.take() {
            acker.drop_unsettled();
        }
    }
}

impl fmt::Debug for Settle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settle")
            .field("settled", &self.is_settled())
            .finish()
    }
}

/// A received message, its metadata, and the handle that settles it.
#[derive(Debug)]
pub struct Delivery {
    received: Received,
    settle: Settle,
}

impl Delivery {
    /// A delivery of `message` with `metadata`, settled through `acker`.
    pub fn new(message: Message, metadata: Metadata, acker: impl Acker) -> Self {
        Self {
            received: Received { message, metadata },
            settle: Settle::new(acker),
        }
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
    pub fn into_parts(self) -> (Received, Settle) {
        (self.received, self.settle)
    }

    /// Processed: never deliver again.
    pub async fn ack(&mut self) -> Result<()> {
        self.settle.ack().await
    }

    /// Not processed: deliver again soon.
    pub async fn nack(&mut self) -> Result<()> {
        self.settle.nack().await
    }

    /// Deliver again, but not before `delay`.
    pub async fn defer(&mut self, delay: Duration) -> Result<()> {
        self.settle.defer(delay).await
    }

    /// Never deliver again: dead-letter with `reason`.
    pub async fn reject(&mut self, reason: impl Into<String>) -> Result<()> {
        self.settle.reject(reason).await
    }

    /// Settles as `settlement` says.
    pub async fn settle(&mut self, settlement: Settlement) -> Result<()> {
        self.settle.settle(settlement).await
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
pub fn dead_letter_message(received: &Received, reason: &str, error: Option<&str>) -> Message {
    let mut message = received.message.clone();
    let headers = message.headers_mut();
    headers.insert(headers::DEAD_LETTER_REASON, one_line(reason));
    headers.insert(headers::ORIGINAL_TOPIC, &*received.metadata.topic);
    headers.insert(headers::ATTEMPTS, received.metadata.attempt.to_string());
    headers.insert(
        headers::DEAD_LETTERED_AT,
        crate::time::rfc3339(SystemTime::now()),
    );
    if let Some(error) = error {
        headers.insert(headers::ERROR, one_line(error));
    }
    message
}

/// Header values may not hold line breaks: fold them into spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Record(Arc<Mutex<Vec<Settlement>>>);

    impl Acker for Record {
        fn settle(self: Box<Self>, s: Settlement) -> SettleFuture {
            self.0.lock().unwrap().push(s);
            SettleFuture::ready(Ok(()))
        }
        fn drop_unsettled(self: Box<Self>) {
            self.0.lock().unwrap().push(Settlement::Nack);
        }
    }

    #[tokio::test]
    async fn settling_twice_is_an_error() {
        let rec = Record::default();
        let mut d = Delivery::new(Message::new("x"), Metadata::new("t"), rec.clone());
        d.ack().await.unwrap();
        assert!(matches!(d.nack().await, Err(Error::AlreadySettled)));
        assert!(matches!(d.reject("r").await, Err(Error::AlreadySettled)));
        drop(d);
        assert_eq!(*rec.0.lock().unwrap(), vec![Settlement::Ack]);
    }

    #[tokio::test]
    async fn dropping_unsettled_nacks() {
        let rec = Record::default();
        let d = Delivery::new(Message::new("x"), Metadata::new("t"), rec.clone());
        let (_received, settle) = d.into_parts();
        drop(settle);
        assert_eq!(*rec.0.lock().unwrap(), vec![Settlement::Nack]);
    }

    #[test]
    fn dead_letter_headers() {
        let received = Received {
            message: Message::new("p").with_header("h", "v"),
            metadata: Metadata::new("orders").with_attempt(3),
        };
        let dl = dead_letter_message(&received, "bad\npayload", Some("decode failed"));
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
