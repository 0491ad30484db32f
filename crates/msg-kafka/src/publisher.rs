//! Publishing: one Kafka record per message.
//!
//! | record part | value |
//! |---|---|
//! | key | the message key, as UTF-8 bytes |
//! | header `msg-id` | the message id |
//! | every other header | as given, UTF-8 |
//!
//! Records of other clients are read too: a key that is not UTF-8 is kept
//! as hex in the header `msg-key-hex` (and written back as those bytes when
//! the message is published again, to a dead-letter topic say); a record
//! without `msg-id` gets an id derived from its topic, partition and
//! offset, the same on every redelivery.

use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Duration;

use futures::future::join_all;
use msg_core::raw::reply::is_reply_topic;
use msg_core::raw::topic::validate_topic;
use msg_core::raw::{apply_options, batch_outcome, check_size};
use msg_core::{
    BatchError, Capabilities, Error, Message, Position, PublishOptions, Publisher, Receipt, Result,
    headers,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer};
use tokio::time::Instant;

use crate::{KafkaBroker, Shared, error};

/// The header that holds a key that is not UTF-8, as hex.
pub const HEADER_KEY_HEX: &str = "msg-key-hex";

/// The record headers of `message`: `msg-id` first, then its own.
pub(crate) fn record_headers(message: &Message) -> OwnedHeaders {
    let id = message.id().to_string();
    let mut out = OwnedHeaders::new_with_capacity(message.headers().len() + 1).insert(Header {
        key: headers::MSG_ID,
        value: Some(id.as_str()),
    });
    let key_in_header = binary_key(message).is_some();
    for (name, value) in message.headers().iter() {
        if !(key_in_header && name == HEADER_KEY_HEX) {
            out = out.insert(Header {
                key: name,
                value: Some(value),
            });
        }
    }
    out
}

/// The record key of `message`: its key, or the bytes a foreign record's
/// binary key had.
pub(crate) fn record_key(message: &Message) -> Option<Vec<u8>> {
    match message.key() {
        Some(key) => Some(key.as_bytes().to_vec()),
        None => binary_key(message),
    }
}

/// The key bytes in `msg-key-hex` of a message without a key: what the
/// subscriber put there for a record whose key is not UTF-8, and only
/// that. Any other value is a header of the message's own and stays one.
fn binary_key(message: &Message) -> Option<Vec<u8>> {
    if message.key().is_some() {
        return None;
    }
    let hex = message.header(HEADER_KEY_HEX)?;
    from_hex(hex)
        // Written by the subscriber: lower-case hex of bytes not UTF-8.
        .filter(|bytes| std::str::from_utf8(bytes).is_err() && to_hex(bytes) == hex)
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Shared {
    /// Checks the topic and message, and that the publisher is open.
    fn check(&self, topic: &str, message: &Message) -> Result<()> {
        if self.publisher_closed.load(AtomicOrdering::Acquire) {
            return Err(Error::Closed);
        }
        validate_topic(topic)?;
        check_size(message, Some(self.config.max_message_size()))?;
        message.validate()
    }

    /// Hands one record to the producer, creating the topic first if this
    /// handle has not seen it; the future completes when the record is
    /// acknowledged. While librdkafka's queue is full it waits, up to the
    /// publish timeout.
    pub(crate) async fn enqueue(&self, topic: &str, message: &Message) -> Result<DeliveryFuture> {
        // A reply topic is its requester's to make and delete: a late
        // reply must not make it again.
        if !is_reply_topic(topic) {
            self.ensure_topics(&[topic]).await?;
        }
        let key = record_key(message);
        let mut record = FutureRecord::to(topic)
            .payload(message.payload().as_ref())
            .headers(record_headers(message));
        if let Some(key) = &key {
            record = record.key(key.as_slice());
        }
        let deadline = Instant::now() + self.config.publish_timeout;
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), again))
                    if Instant::now() < deadline =>
                {
                    record = again;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    let max = self.config.max_message_size();
                    return Err(error::publish(e, message.payload().len(), max));
                }
            }
        }
    }

    /// Waits for the acknowledgement of one enqueued record of `size`
    /// bytes, under the limit `max`.
    pub(crate) async fn acknowledged(
        delivery: DeliveryFuture,
        size: usize,
        max: usize,
    ) -> Result<Receipt> {
        match delivery.await {
            Ok(Ok(d)) => Ok(Receipt::at(Position::Offset {
                partition: d.partition,
                offset: d.offset,
            })),
            Ok(Err((e, _))) => Err(error::publish(e, size, max)),
            // The producer went away with the record still queued.
            Err(canceled) => Err(Error::Connection(Box::new(canceled))),
        }
    }

    /// Publishes and waits for the acknowledgement, whether or not the
    /// publisher is closed (dead letters of the subscriber use this).
    ///
    /// A reply to a reply topic that no longer exists is dropped (at once,
    /// not after the publish timeout): nobody waits for it.
    pub(crate) async fn produce(&self, topic: &str, message: &Message) -> Result<Receipt> {
        let reply = is_reply_topic(topic);
        if reply && !self.reply_topic_exists(topic).await? {
            tracing::debug!(
                topic,
                "the reply topic is gone (its requester closed); reply dropped"
            );
            return Ok(Receipt::accepted());
        }
        let delivery = self.enqueue(topic, message).await?;
        let acknowledged = Self::acknowledged(
            delivery,
            message.payload().len(),
            self.config.max_message_size(),
        )
        .await;
        if reply && acknowledged.is_err() {
            self.forget_topic(topic);
        }
        acknowledged
    }

    /// Waits until every queued record is acknowledged or failed.
    async fn flush_producer(&self) -> Result<()> {
        let producer = self.producer.clone();
        let timeout = self.config.publish_timeout;
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| Error::Connection(Box::new(e)))?
            .map_err(error::kafka)
    }
}

impl Publisher for KafkaBroker {
    /// Honours `reply_to`; `deliver_at` and `ttl` are unsupported (Kafka
    /// has neither; the scheduler gives `deliver_at` on any transport).
    async fn publish_with(
        &self,
        topic: &str,
        mut message: Message,
        options: PublishOptions,
    ) -> Result<Receipt> {
        apply_options(&mut message, &options, &Self::CAPABILITIES)?;
        self.shared.check(topic, &message)?;
        self.shared.produce(topic, &message).await
    }

    /// Enqueues every record, then waits for all acknowledgements: the
    /// records share batches instead of waiting one round trip each.
    ///
    /// A record the producer refuses (too large, say) stops the batch:
    /// the ones after it are not sent, so that a key's order holds. Each
    /// record sent is acknowledged or failed on its own, and the error says
    /// which were accepted.
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
        let mut pending = Vec::with_capacity(len);
        let mut refused = None;
        for message in &messages {
            match self.shared.enqueue(topic, message).await {
                Ok(delivery) => pending.push(Shared::acknowledged(
                    delivery,
                    message.payload().len(),
                    self.shared.config.max_message_size(),
                )),
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        batch_outcome(len, join_all(pending).await, refused)
    }

    async fn flush(&self) -> Result<()> {
        self.shared.flush_producer().await
    }

    async fn close(&self) -> Result<()> {
        self.shared
            .publisher_closed
            .store(true, AtomicOrdering::Release);
        self.shared.flush_producer().await
    }

    fn capabilities(&self) -> Capabilities {
        KafkaBroker::capabilities(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;

    #[test]
    fn headers_and_key() {
        let m = Message::new("p").with_key("k").with_header("a", "1");
        let h = record_headers(&m);
        let got: Vec<(String, String)> = h
            .iter()
            .map(|h| {
                let value = String::from_utf8(h.value.unwrap().to_vec()).unwrap();
                (h.key.to_owned(), value)
            })
            .collect();
        assert_eq!(
            got,
            [
                ("msg-id".to_owned(), m.id().to_string()),
                ("a".to_owned(), "1".to_owned())
            ]
        );
        assert_eq!(record_key(&m).as_deref(), Some(&b"k"[..]));
    }

    #[test]
    fn binary_keys_go_through_hex() {
        let raw = [0u8, 0xff, 0x10];
        let m = Message::new("p").with_header(HEADER_KEY_HEX, to_hex(&raw));
        assert_eq!(record_key(&m).as_deref(), Some(&raw[..]));
        assert_eq!(record_headers(&m).count(), 1, "msg-key-hex is not a header");
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
