//! Publishing: one stream entry per message.
//!
//! The entry layout, in field order:
//!
//! | field | value |
//! |---|---|
//! | `msg-id` | the message id (a UUID) |
//! | `msg-key` | the ordering key, when there is one |
//! | `h:<name>` | one field per header, in header order |
//! | `payload` | the payload bytes |
//!
//! Entries written by other clients are read too: without `msg-id` the id
//! is derived from the entry id (stable across redeliveries), and without
//! `payload` the payload is empty.

use std::sync::atomic::Ordering as AtomicOrdering;

use fred::prelude::StreamsInterface;
use fred::types::Value;
use fred::types::streams::XCap;
use msg_core::raw::reply::is_reply_topic;
use msg_core::raw::topic::validate_topic;
use msg_core::raw::{apply_options, batch_outcome, check_size};
use msg_core::{
    BatchError, Capabilities, Error, Message, Position, PublishOptions, Publisher, Receipt, Result,
};

use crate::{RedisBroker, Shared};

/// The field of the message id.
pub const FIELD_ID: &str = "msg-id";
/// The field of the ordering key.
pub const FIELD_KEY: &str = "msg-key";
/// The prefix of header fields.
pub const HEADER_PREFIX: &str = "h:";
/// The field of the payload.
pub const FIELD_PAYLOAD: &str = "payload";

/// The fields of `message`, in the documented order.
pub(crate) fn fields(message: &Message) -> Vec<(String, Value)> {
    let mut fields = Vec::with_capacity(message.headers().len() + 3);
    fields.push((FIELD_ID.to_owned(), Value::from(message.id().to_string())));
    if let Some(key) = message.key() {
        fields.push((FIELD_KEY.to_owned(), Value::from(key)));
    }
    for (name, value) in message.headers().iter() {
        fields.push((format!("{HEADER_PREFIX}{name}"), Value::from(value)));
    }
    fields.push((
        FIELD_PAYLOAD.to_owned(),
        Value::Bytes(message.payload().clone()),
    ));
    fields
}

impl Shared {
    /// The stream cap of every XADD.
    fn cap(&self) -> Result<XCap> {
        match self.config.max_len {
            Some(n) => ("MAXLEN", "~", n as i64)
                .try_into()
                .map_err(|e| self.fail(e)),
            None => Ok(None::<()>.into()),
        }
    }

    /// XADD of one message to the stream `topic`.
    pub(crate) async fn append(&self, topic: &str, message: &Message) -> Result<Receipt> {
        let cap = self.cap()?;
        let id: Value = self
            .client
            .xadd(topic, is_reply_topic(topic), cap, "*", fields(message))
            .await
            .map_err(|e| self.fail(e))?;
        Ok(receipt(id))
    }

    fn check_open(&self) -> Result<()> {
        if self.publisher_closed.load(AtomicOrdering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

/// The receipt of an XADD, which replies with the new entry's id (or
/// nil for a reply whose inbox is gone: `NOMKSTREAM`, the requester
/// closed and nobody waits for it).
fn receipt(id: Value) -> Receipt {
    match id.into_string() {
        Some(id) => Receipt::at(Position::EntryId(id)),
        None => Receipt::accepted(),
    }
}

impl Publisher for RedisBroker {
    /// Honours `reply_to`; `deliver_at` and `ttl` are unsupported (a
    /// stream has neither; the scheduler gives `deliver_at` on any
    /// transport).
    async fn publish_with(
        &self,
        topic: &str,
        mut message: Message,
        options: PublishOptions,
    ) -> Result<Receipt> {
        self.shared.check_open()?;
        validate_topic(topic)?;
        apply_options(&mut message, &options, &Self::CAPABILITIES)?;
        check_size(&message, Self::CAPABILITIES.max_message_size)?;
        message.validate()?;
        self.shared.append(topic, &message).await
    }

    /// One round trip for the whole batch (a pipeline of XADDs, applied in
    /// order). Each entry succeeds or fails on its own: a refused entry
    /// does not stop the ones after it, and the error says which were
    /// added. When the connection breaks, none is reported accepted,
    /// although some may have been added.
    async fn publish_batch(
        &self,
        topic: &str,
        messages: Vec<Message>,
    ) -> Result<Vec<Receipt>, BatchError> {
        let len = messages.len();
        let checked = self
            .shared
            .check_open()
            .and_then(|()| validate_topic(topic))
            .and_then(|()| messages.iter().try_for_each(Message::validate))
            .and_then(|()| {
                messages
                    .iter()
                    .try_for_each(|m| check_size(m, Self::CAPABILITIES.max_message_size))
            })
            .and_then(|()| self.shared.cap());
        let cap = match checked {
            Ok(cap) => cap,
            Err(e) => return Err(BatchError::none_accepted(len, e)),
        };
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.shared.client.pipeline();
        for message in &messages {
            let queued: std::result::Result<(), _> = pipeline
                .xadd(
                    topic,
                    is_reply_topic(topic),
                    cap.clone(),
                    "*",
                    fields(message),
                )
                .await;
            if let Err(e) = queued {
                return Err(BatchError::none_accepted(len, self.shared.fail(e)));
            }
        }
        let results: Vec<std::result::Result<Value, fred::error::Error>> = pipeline.try_all().await;
        batch_outcome(
            len,
            results
                .into_iter()
                .map(|r| r.map(receipt).map_err(|e| self.shared.fail(e))),
            None,
        )
    }

    async fn flush(&self) -> Result<()> {
        // Each publish returns once Redis has the entry: nothing is buffered.
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.shared
            .publisher_closed
            .store(true, AtomicOrdering::Release);
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities()
    }
}
