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
use msg_core::raw::topic::validate_topic;
use msg_core::{Capabilities, Error, Message, Publisher, Result};

use crate::{RedisBroker, Shared, error};

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
            Some(n) => ("MAXLEN", "~", n as i64).try_into().map_err(error::map),
            None => Ok(None::<()>.into()),
        }
    }

    /// XADD of one message to the stream `topic`.
    pub(crate) async fn append(&self, topic: &str, message: &Message) -> Result<()> {
        let cap = self.cap()?;
        let _: Value = self
            .client
            .xadd(topic, false, cap, "*", fields(message))
            .await
            .map_err(error::map)?;
        Ok(())
    }
}

impl Publisher for RedisBroker {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        if self.shared.publisher_closed.load(AtomicOrdering::Acquire) {
            return Err(Error::Closed);
        }
        validate_topic(topic)?;
        message.validate()?;
        self.shared.append(topic, &message).await
    }

    /// One round trip for the whole batch (a pipeline of XADDs, applied in
    /// order). On error, the other entries of the batch may have been
    /// added: a connection error fails them all, while a refused entry does
    /// not stop the ones after it.
    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        if self.shared.publisher_closed.load(AtomicOrdering::Acquire) {
            return Err(Error::Closed);
        }
        validate_topic(topic)?;
        messages.iter().try_for_each(Message::validate)?;
        if messages.is_empty() {
            return Ok(());
        }
        let cap = self.shared.cap()?;
        let pipeline = self.shared.client.pipeline();
        for message in &messages {
            let () = pipeline
                .xadd(topic, false, cap.clone(), "*", fields(message))
                .await
                .map_err(error::map)?;
        }
        let results: Vec<std::result::Result<Value, fred::error::Error>> = pipeline.try_all().await;
        match results.into_iter().find_map(|r| r.err()) {
            Some(e) => Err(error::map(e)),
            None => Ok(()),
        }
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
