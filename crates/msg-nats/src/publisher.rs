//! Publishing: one NATS message per message, on the topic's subject.
//!
//! The message id and key travel in headers:
//!
//! | header | value |
//! |---|---|
//! | `Nats-Msg-Id` | `<message id>:<topic>`, and `:replay-<n>` for a dead letter's `n`th replay |
//! | `msg-key` | the ordering key, when there is one |
//! | every other header | as given |
//!
//! JetStream drops a publish whose `Nats-Msg-Id` it saw within the
//! stream's duplicate window, so publishing the same message to the same
//! topic twice stores it once. The topic is part of the id because one
//! stream holds several topics: the same message dead-lettered to
//! `<topic>.dlq`, or forwarded to another topic, is a different publish.
//!
//! Replies to a requester's inbox (`_INBOX.…`, see
//! [`reply_inbox`](msg_core::Subscriber::reply_inbox)) go over core NATS
//! in both modes: they are for the one requester listening now, and no
//! stream should keep them.
//!
//! Messages of other clients are read too: without a `Nats-Msg-Id` that
//! starts with a UUID, the id is derived from the stream sequence
//! (JetStream; stable across redeliveries) or new (core NATS).

use std::str::FromStr;
use std::sync::atomic::Ordering as AtomicOrdering;

use std::time::{Duration, SystemTime};

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::{HeaderMap, HeaderName, HeaderValue};
use futures::future::join_all;
use msg_core::raw::time::rfc3339;
use msg_core::raw::topic::validate_topic;
use msg_core::raw::{apply_options, batch_outcome, check_size, delay_until};
use msg_core::{
    BatchError, Capabilities, Error, Message, Position, PublishOptions, Publisher, Receipt, Result,
    headers,
};

use crate::config::Mode;
use crate::streams::schedule_prefix;
use crate::{NatsBroker, Shared, error};

/// The header of the message id (`<message id>:<topic>`).
pub const HEADER_ID: &str = "Nats-Msg-Id";

/// The NATS headers of `message` published to `topic`.
pub(crate) fn nats_headers(topic: &str, message: &Message) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    let invalid = |name: &str, reason| Error::InvalidHeader {
        name: name.to_owned(),
        reason,
    };
    for (name, value) in message.headers().iter() {
        let header = HeaderName::from_str(name)
            .map_err(|_| invalid(name, "not a valid NATS header name"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| invalid(name, "not a valid NATS header value"))?;
        map.append(header, value);
    }
    if let Some(key) = message.key() {
        let value = HeaderValue::from_str(key)
            .map_err(|_| invalid(headers::MSG_KEY, "the key holds a line break"))?;
        map.insert(headers::MSG_KEY, value);
    }
    // A replayed dead letter keeps its id, but is a new publish: within
    // the duplicate window the server would drop it as the original.
    let replay = message
        .header(msg_core::dead_letter::REPLAY_COUNT)
        .map(|n| format!(":replay-{n}"))
        .unwrap_or_default();
    map.insert(
        HEADER_ID,
        HeaderValue::from(format!("{}:{topic}{replay}", message.id())),
    );
    Ok(map)
}

/// The subjects of requesters' reply inboxes (async-nats's default).
pub(crate) const INBOX_PREFIX: &str = "_INBOX.";

impl Shared {
    /// Checks the topic and message, and that the publisher is open.
    fn check(&self, topic: &str, message: &Message) -> Result<()> {
        if self.publisher_closed.load(AtomicOrdering::Acquire) {
            return Err(Error::Closed);
        }
        validate_topic(topic)?;
        message.validate()?;
        check_size(message, Some(self.max_payload()))
    }

    /// Core NATS: hands the message to the connection.
    pub(crate) async fn publish_core(&self, topic: &str, message: &Message) -> Result<Receipt> {
        let headers = nats_headers(topic, message)?;
        self.client
            .publish_with_headers(topic.to_owned(), headers, message.payload().clone())
            .await
            .map_err(|e| error::publish(e, message.payload().len(), self.max_payload()))?;
        Ok(Receipt::accepted())
    }

    /// JetStream: sends the message; the returned future waits for the
    /// server's acknowledgement.
    pub(crate) async fn send_js(
        &self,
        topic: &str,
        message: &Message,
        ttl: Option<Duration>,
    ) -> Result<async_nats::jetstream::context::PublishAckFuture> {
        self.stream_for(topic).await?;
        let mut headers = nats_headers(topic, message)?;
        if let Some(ttl) = ttl {
            // The server counts a message ttl in whole seconds: round up,
            // so that a message never expires early.
            let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
            headers.insert(async_nats::header::NATS_MESSAGE_TTL, secs.to_string());
        }
        let publish = PublishMessage::build()
            .payload(message.payload().clone())
            .headers(headers);
        self.jetstream
            .send_publish(topic.to_owned(), publish)
            .await
            .map_err(|e| {
                error::js_publish(
                    e,
                    message.payload().len(),
                    self.max_payload(),
                    self.config.request_timeout,
                )
            })
    }

    /// JetStream: publishes and waits for the acknowledgement.
    pub(crate) async fn publish_js(
        &self,
        topic: &str,
        message: &Message,
        ttl: Option<Duration>,
    ) -> Result<Receipt> {
        let lost = self.disconnects.subscribe();
        let ack = self.send_js(topic, message, ttl).await?;
        self.acknowledged(ack, message.payload().len(), lost).await
    }

    /// Waits for a JetStream acknowledgement. One in flight when the
    /// connection goes never comes: this fails at once (retryable) rather
    /// than after the whole request timeout, so that the caller publishes
    /// again as soon as the server answers. `lost` was subscribed before
    /// the publish was sent.
    async fn acknowledged(
        &self,
        ack: async_nats::jetstream::context::PublishAckFuture,
        size: usize,
        mut lost: tokio::sync::watch::Receiver<u64>,
    ) -> Result<Receipt> {
        tokio::select! {
            acked = ack => acked.map(receipt).map_err(|e| {
                error::js_publish(e, size, self.max_payload(), self.config.request_timeout)
            }),
            _ = lost.changed() => Err(Error::Connection(
                "the connection to NATS was lost before the publish was acknowledged".into(),
            )),
        }
    }

    /// Publishes in this broker's mode (a reply always over core NATS).
    pub(crate) async fn publish(&self, topic: &str, message: &Message) -> Result<Receipt> {
        match self.mode_for(topic) {
            Mode::Core => self.publish_core(topic, message).await,
            Mode::JetStream => self.publish_js(topic, message, None).await,
        }
    }

    /// The mode a publish to `topic` takes: core NATS for a reply to an
    /// inbox, this broker's mode otherwise.
    pub(crate) fn mode_for(&self, topic: &str) -> Mode {
        if topic.starts_with(INBOX_PREFIX) {
            Mode::Core
        } else {
            self.config.mode
        }
    }
}

impl Shared {
    /// JetStream, `deliver_at`: publishes a message schedule (server 2.12)
    /// on the stream's schedule subject, which the server turns into the
    /// message on `topic` at the time, rounded up to a whole second.
    pub(crate) async fn publish_scheduled(
        &self,
        topic: &str,
        message: &Message,
        at: SystemTime,
    ) -> Result<Receipt> {
        if self.config.streams.bind.is_some() {
            // The bound stream's subjects are the user's: no room for ours.
            return Err(Error::Unsupported {
                operation: "the publish option deliver_at with a bound stream",
                transport: "nats-jetstream",
            });
        }
        let stream = self.stream_for(topic).await?;
        let subject = format!("{}.{}", schedule_prefix(&stream), message.id().simple());
        let mut headers = nats_headers(topic, message)?;
        // The fired message does not keep Nats-Msg-Id: the id travels here too.
        headers.insert(headers::MSG_ID, message.id().to_string().as_str());
        headers.insert(
            async_nats::header::NATS_SCHEDULE,
            format!("@at {}", rfc3339(whole_second_at_or_after(at))).as_str(),
        );
        headers.insert(async_nats::header::NATS_SCHEDULE_TARGET, topic);
        let publish = PublishMessage::build()
            .payload(message.payload().clone())
            .headers(headers);
        let (size, max) = (message.payload().len(), self.max_payload());
        let timeout = self.config.request_timeout;
        let ack = self
            .jetstream
            .send_publish(subject, publish)
            .await
            .map_err(|e| error::js_publish(e, size, max, timeout))?;
        ack.await
            .map(receipt)
            .map_err(|e| error::js_publish(e, size, max, timeout))
    }
}

/// `at`, or the next whole second after it: schedules count in seconds,
/// and a message is never delivered early.
fn whole_second_at_or_after(at: SystemTime) -> SystemTime {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs() + u64::from(since.subsec_nanos() > 0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// The receipt of a JetStream publish acknowledgement.
fn receipt(ack: PublishAck) -> Receipt {
    Receipt::at(Position::Sequence {
        stream: ack.stream,
        sequence: ack.sequence,
    })
    .with_duplicate(ack.duplicate)
}

impl Publisher for NatsBroker {
    /// Core NATS: returns once the connection has the message (call
    /// [`flush`](Publisher::flush) to wait for the server). JetStream:
    /// returns once the stream stored it.
    ///
    /// Both modes honour `reply_to`. JetStream honours `ttl` (the server's
    /// per-message TTL, server 2.11 and later, in whole seconds rounded up)
    /// and `deliver_at` (a message schedule, server 2.12 and later, fired
    /// at the whole second at or after the time; the receipt is the
    /// schedule's); not both together, and `deliver_at` not with a bound
    /// stream. The streams msg creates allow both.
    async fn publish_with(
        &self,
        topic: &str,
        mut message: Message,
        options: PublishOptions,
    ) -> Result<Receipt> {
        apply_options(&mut message, &options, &self.capabilities())?;
        self.shared.check(topic, &message)?;
        let later = options.deliver_at.filter(|at| !delay_until(*at).is_zero());
        match (self.shared.mode_for(topic), later) {
            (Mode::Core, _) => self.shared.publish_core(topic, &message).await,
            (Mode::JetStream, None) => self.shared.publish_js(topic, &message, options.ttl).await,
            (Mode::JetStream, Some(_)) if options.ttl.is_some() => Err(Error::Unsupported {
                operation: "the publish options deliver_at and ttl together",
                transport: "nats-jetstream",
            }),
            (Mode::JetStream, Some(at)) => self.shared.publish_scheduled(topic, &message, at).await,
        }
    }

    /// JetStream: sends the whole batch, then waits for the
    /// acknowledgements, so the batch costs about one round trip. The
    /// stream stores the messages in order. A message the client refuses
    /// stops the batch (the ones after it are not sent); each one sent is
    /// acknowledged or failed on its own, and the error says which were
    /// stored. Core NATS: one at a time, stopping at the first failure.
    async fn publish_batch(
        &self,
        topic: &str,
        messages: Vec<Message>,
    ) -> Result<Vec<Receipt>, BatchError> {
        let len = messages.len();
        if let Err(e) = messages
            .iter()
            .try_for_each(|m| self.shared.check(topic, m))
        {
            return Err(BatchError::none_accepted(len, e));
        }
        match self.shared.mode_for(topic) {
            Mode::Core => {
                let mut receipts = Vec::with_capacity(len);
                let mut refused = None;
                for message in &messages {
                    match self.shared.publish_core(topic, message).await {
                        Ok(receipt) => receipts.push(Ok(receipt)),
                        Err(e) => {
                            refused = Some(e);
                            break;
                        }
                    }
                }
                batch_outcome(len, receipts, refused)
            }
            Mode::JetStream => {
                let mut acks = Vec::with_capacity(len);
                let mut refused = None;
                let lost = self.shared.disconnects.subscribe();
                for message in &messages {
                    let ack = match self.shared.send_js(topic, message, None).await {
                        Ok(ack) => ack,
                        Err(e) => {
                            refused = Some(e);
                            break;
                        }
                    };
                    acks.push(
                        self.shared
                            .acknowledged(ack, message.payload().len(), lost.clone()),
                    );
                }
                batch_outcome(len, join_all(acks).await, refused)
            }
        }
    }

    /// Waits until the server has everything published so far.
    async fn flush(&self) -> Result<()> {
        self.shared
            .client
            .flush()
            .await
            .map_err(|e| Error::Connection(Box::new(e)))
    }

    async fn close(&self) -> Result<()> {
        self.shared
            .publisher_closed
            .store(true, AtomicOrdering::Release);
        self.flush().await
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities()
    }
}
