//! What a publish can ask for ([`PublishOptions`]) and what it gets back
//! ([`Receipt`], [`BatchError`]).

use std::time::{Duration, SystemTime};

use crate::raw::topic::validate_topic;
use crate::{Capabilities, Error, Message, Result, headers};

/// Options of one publish, for
/// [`Publisher::publish_with`](crate::Publisher::publish_with).
///
/// Each option has a capability of the same name
/// ([`Capabilities::native_deliver_at`], [`Capabilities::native_ttl`],
/// [`Capabilities::native_reply_to`]); a transport that cannot honour an
/// option refuses the publish with [`Error::Unsupported`], never ignores it.
///
/// ```
/// use std::time::Duration;
/// use msg_core::PublishOptions;
///
/// let options = PublishOptions::new()
///     .delay(Duration::from_secs(30))
///     .ttl(Duration::from_secs(600))
///     .reply_to("billing.replies");
/// assert!(options.deliver_at.is_some());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishOptions {
    /// Not delivered before this time. The message carries it in the
    /// `msg-deliver-at` header (RFC 3339).
    pub deliver_at: Option<SystemTime>,
    /// Dropped if not delivered within this time of the publish.
    pub ttl: Option<Duration>,
    /// Where replies go; the message carries it in the `msg-reply-to` header.
    pub reply_to: Option<String>,
}

impl PublishOptions {
    /// No options: the same as [`Publisher::publish`](crate::Publisher::publish).
    pub fn new() -> Self {
        Self::default()
    }

    /// Not delivered before `time`.
    pub fn deliver_at(mut self, time: SystemTime) -> Self {
        self.deliver_at = Some(time);
        self
    }

    /// Not delivered before `delay` from now.
    pub fn delay(self, delay: Duration) -> Self {
        self.deliver_at(SystemTime::now() + delay)
    }

    /// Dropped if not delivered within `ttl`.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Replies go to `topic`.
    pub fn reply_to(mut self, topic: impl Into<String>) -> Self {
        self.reply_to = Some(topic.into());
        self
    }

    /// Whether no option is set.
    pub fn is_empty(&self) -> bool {
        self.deliver_at.is_none() && self.ttl.is_none() && self.reply_to.is_none()
    }
}

/// Where the broker stored a published message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Position {
    /// A partition and an offset in it (Kafka; the in-memory broker's
    /// topics have one partition, 0).
    Offset {
        /// The partition.
        partition: i32,
        /// The offset in the partition.
        offset: i64,
    },
    /// A stream and a sequence number in it (NATS JetStream).
    Sequence {
        /// The stream's name.
        stream: String,
        /// The sequence number in the stream.
        sequence: u64,
    },
    /// A stream entry id (Redis Streams), e.g. `1700000000000-0`.
    EntryId(String),
}

/// What the broker said about a published message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Receipt {
    /// Where the message is stored, on brokers that say (none on RabbitMQ
    /// and core NATS).
    pub position: Option<Position>,
    /// The broker recognised the message id as one it stored before and
    /// did not store it again (JetStream's duplicate window).
    pub duplicate: bool,
}

impl Receipt {
    /// Accepted, with no position.
    pub fn accepted() -> Self {
        Self::default()
    }

    /// Stored at `position`.
    pub fn at(position: Position) -> Self {
        Self {
            position: Some(position),
            duplicate: false,
        }
    }

    /// Marks the receipt as that of a duplicate.
    pub fn with_duplicate(mut self, duplicate: bool) -> Self {
        self.duplicate = duplicate;
        self
    }
}

/// A batch of which only some messages were accepted.
///
/// Messages are listed by their index in the batch. A message the broker
/// accepted has a receipt; any other may or may not have been stored (the
/// broker may have stored it and failed to say so), so publishing it again
/// is safe only where consumers deduplicate by message id.
#[derive(Debug, thiserror::Error)]
#[error("{} of {} messages accepted: {error}", self.accepted().count(), self.receipts.len())]
pub struct BatchError {
    receipts: Vec<Option<Receipt>>,
    error: Error,
}

impl BatchError {
    /// A batch of `receipts.len()` messages of which those with a receipt
    /// were accepted; `error` is why the first other one was not.
    pub fn new(receipts: Vec<Option<Receipt>>, error: Error) -> Self {
        Self { receipts, error }
    }

    /// A batch of `len` messages of which none was accepted.
    pub fn none_accepted(len: usize, error: Error) -> Self {
        Self::new(vec![None; len], error)
    }

    /// Per message of the batch, its receipt if the broker accepted it.
    pub fn receipts(&self) -> &[Option<Receipt>] {
        &self.receipts
    }

    /// The indices and receipts of the accepted messages.
    pub fn accepted(&self) -> impl Iterator<Item = (usize, &Receipt)> {
        self.receipts
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().map(|r| (i, r)))
    }

    /// Whether the message at `index` was accepted.
    pub fn is_accepted(&self, index: usize) -> bool {
        matches!(self.receipts.get(index), Some(Some(_)))
    }

    /// Why the batch was not accepted whole.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The error, without the receipts.
    pub fn into_error(self) -> Error {
        self.error
    }
}

/// Checks `options` against what the transport can do and writes them into
/// the message's reserved headers (`msg-deliver-at`, `msg-reply-to`).
///
/// Every transport calls this first in `publish_with`; what is left for it
/// is to carry out the options its capabilities claim.
pub fn apply_options(
    message: &mut Message,
    options: &PublishOptions,
    capabilities: &Capabilities,
) -> Result<()> {
    if options.is_empty() {
        return Ok(());
    }
    let unsupported = |option| Error::Unsupported {
        operation: option,
        transport: capabilities.transport,
    };
    if options.deliver_at.is_some() && !capabilities.native_deliver_at {
        return Err(unsupported("the publish option deliver_at"));
    }
    if let Some(ttl) = options.ttl {
        if !capabilities.native_ttl {
            return Err(unsupported("the publish option ttl"));
        }
        if ttl.is_zero() {
            return Err(Error::invalid_config("a publish ttl must not be zero"));
        }
    }
    if let Some(reply_to) = &options.reply_to {
        if !capabilities.native_reply_to {
            return Err(unsupported("the publish option reply_to"));
        }
        validate_topic(reply_to)?;
    }
    let h = message.headers_mut();
    if let Some(at) = options.deliver_at {
        h.insert(headers::DELIVER_AT, crate::raw::time::rfc3339(at));
    }
    if let Some(reply_to) = &options.reply_to {
        h.insert(headers::REPLY_TO, reply_to.clone());
    }
    Ok(())
}

/// The outcome of publishing a batch of `len` messages: `results` are the
/// broker's answers for the messages sent, in batch order from the first;
/// `refused` is why the message after them was not sent, if one was not.
/// The error of the first message not accepted is the batch's error.
pub fn batch_outcome(
    len: usize,
    results: impl IntoIterator<Item = Result<Receipt>>,
    refused: Option<Error>,
) -> Result<Vec<Receipt>, BatchError> {
    let mut receipts = Vec::with_capacity(len);
    let mut first_error = None;
    for result in results {
        match result {
            Ok(receipt) => receipts.push(Some(receipt)),
            Err(e) => {
                first_error.get_or_insert(e);
                receipts.push(None);
            }
        }
    }
    match first_error.or(refused) {
        None if receipts.len() == len => Ok(receipts.into_iter().flatten().collect()),
        None => Err(BatchError::new(
            receipts,
            Error::broker_retryable("the batch ended before every message was sent"),
        )),
        Some(e) => {
            receipts.resize(len, None);
            Err(BatchError::new(receipts, e))
        }
    }
}

/// Refuses a payload larger than `max` (the transport's
/// [`max_message_size`](Capabilities::max_message_size)) with
/// [`Error::MessageTooLarge`], before anything is sent.
pub fn check_size(message: &Message, max: Option<usize>) -> Result<()> {
    match max {
        Some(max) if message.payload().len() > max => Err(Error::MessageTooLarge {
            size: message.payload().len(),
            max,
        }),
        _ => Ok(()),
    }
}

/// How long from now until `deliver_at`; zero when it has passed.
pub fn delay_until(deliver_at: SystemTime) -> Duration {
    deliver_at
        .duration_since(SystemTime::now())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(deliver_at: bool, ttl: bool) -> Capabilities {
        Capabilities::minimal("test")
            .with_native_deliver_at(deliver_at)
            .with_native_ttl(ttl)
            .with_native_reply_to(true)
    }

    #[test]
    fn unsupported_options_name_the_option_and_the_transport() {
        let mut m = Message::new("x");
        let e = apply_options(
            &mut m,
            &PublishOptions::new().delay(Duration::from_secs(1)),
            &caps(false, true),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the publish option deliver_at is not supported by the test transport"
        );
        let e = apply_options(
            &mut m,
            &PublishOptions::new().ttl(Duration::from_secs(1)),
            &caps(true, false),
        )
        .unwrap_err();
        assert!(e.to_string().contains("ttl"), "{e}");
        assert!(m.headers().is_empty(), "a refused publish changes nothing");
    }

    #[test]
    fn options_become_reserved_headers() {
        let mut m = Message::new("x");
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        apply_options(
            &mut m,
            &PublishOptions::new().deliver_at(at).reply_to("replies"),
            &caps(true, true),
        )
        .unwrap();
        assert_eq!(
            m.headers().get(headers::DELIVER_AT),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(m.headers().get(headers::REPLY_TO), Some("replies"));
        let bad = apply_options(
            &mut m,
            &PublishOptions::new().reply_to("no spaces"),
            &caps(true, true),
        );
        assert!(matches!(bad, Err(Error::InvalidTopic { .. })), "{bad:?}");
    }

    #[test]
    fn a_batch_outcome_reports_the_first_failure() {
        let ok = || Ok(Receipt::accepted());
        assert_eq!(batch_outcome(2, [ok(), ok()], None).unwrap().len(), 2);
        let e = batch_outcome(
            4,
            [ok(), Err(Error::Closed), ok()],
            Some(Error::Backpressure),
        )
        .unwrap_err();
        assert_eq!(e.receipts().len(), 4);
        assert_eq!(e.accepted().map(|(i, _)| i).collect::<Vec<_>>(), [0, 2]);
        assert!(matches!(e.error(), Error::Closed));
        let e = batch_outcome(3, [ok()], Some(Error::Backpressure)).unwrap_err();
        assert!(matches!(e.error(), Error::Backpressure));
        assert!(e.is_accepted(0) && !e.is_accepted(1) && !e.is_accepted(2));
        let e = batch_outcome(2, [ok()], None).unwrap_err();
        assert!(e.error().is_retryable() && !e.is_accepted(1));
    }

    #[test]
    fn sizes_over_the_limit_are_refused() {
        let m = Message::new(vec![0u8; 11]);
        assert!(check_size(&m, None).is_ok());
        assert!(check_size(&m, Some(11)).is_ok());
        assert!(matches!(
            check_size(&m, Some(10)),
            Err(Error::MessageTooLarge { size: 11, max: 10 })
        ));
    }

    #[test]
    fn batch_error_says_which_were_accepted() {
        let e = BatchError::new(
            vec![Some(Receipt::accepted()), None, Some(Receipt::accepted())],
            Error::Closed,
        );
        assert_eq!(e.accepted().map(|(i, _)| i).collect::<Vec<_>>(), vec![0, 2]);
        assert!(e.is_accepted(0) && !e.is_accepted(1) && !e.is_accepted(9));
        assert_eq!(e.to_string(), "2 of 3 messages accepted: closed");
    }
}
