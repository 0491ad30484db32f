//! Publishing: persistent messages on the topic exchange, confirmed.
//!
//! | AMQP | msg |
//! |---|---|
//! | routing key | topic |
//! | `message-id` property | message id |
//! | `msg-key` header | key |
//! | headers (long strings) | headers |
//! | `content-type` property | also set from the `content-type` header |
//! | `msg-attempt` header | deliveries before this copy (set on deferred copies) |
//! | body | payload |
//!
//! Messages of other clients are read too: without a UUID `message-id`
//! they get a new id, and headers that are not strings are skipped.

use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::SystemTime;

use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Confirmation};
use msg_core::raw::topic::validate_topic;
use msg_core::{Capabilities, Error, Message, Publisher, Result, headers};

use crate::topology::key;
use crate::{AmqpBroker, Shared, error};

/// The header that counts the deliveries before a deferred copy.
pub const HEADER_ATTEMPT: &str = "msg-attempt";
/// The header with the topic of a deferred copy: it comes back from its
/// retry queue with the work queue's name as routing key.
pub const HEADER_TOPIC: &str = "msg-topic";

/// The AMQP properties of `message`; `attempts` are the deliveries it had
/// before this copy.
pub(crate) fn properties(message: &Message, attempts: u32) -> BasicProperties {
    let mut table = FieldTable::default();
    for (name, value) in message.headers().iter() {
        table.insert(key(name), long(value));
    }
    if let Some(k) = message.key() {
        table.insert(key(headers::MSG_KEY), long(k));
    }
    if attempts > 0 {
        table.insert(key(HEADER_ATTEMPT), AMQPValue::LongUInt(attempts));
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut properties = BasicProperties::default()
        .with_message_id(message.id().to_string().into())
        .with_delivery_mode(2)
        .with_timestamp(now)
        .with_headers(table);
    if let Some(content_type) = message.header(headers::CONTENT_TYPE) {
        properties = properties.with_content_type(content_type.into());
    }
    properties
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

impl Shared {
    /// Publishes to `exchange` with `routing_key` and waits for the confirm.
    /// Mandatory publishes that reach no queue are an error.
    pub(crate) async fn publish_to(
        &self,
        exchange: &str,
        routing_key: &str,
        message: &Message,
        attempts: u32,
        mandatory: bool,
    ) -> Result<()> {
        let channel = self.publish_channel().await?;
        let options = BasicPublishOptions {
            mandatory,
            ..Default::default()
        };
        let confirm = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                options,
                message.payload(),
                properties(message, attempts),
            )
            .await
            .map_err(error::map)?;
        let timeout = self.config.publish_timeout;
        let confirmation = tokio::time::timeout(timeout, confirm)
            .await
            .map_err(|_| Error::Timeout(timeout))?
            .map_err(error::map)?;
        match confirmation {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) => Err(Error::broker_permanent(format!(
                "no queue is bound to {routing_key:?} on exchange {exchange:?}: \
                 the broker returned the message (subscribe a group first, so that \
                 its queue keeps messages)"
            ))),
            Confirmation::Nack(_) => Err(Error::broker_retryable(format!(
                "the broker did not take the message for {routing_key:?} (nack)"
            ))),
        }
    }

    fn check(&self, topic: &str, message: &Message) -> Result<()> {
        if self.publisher_closed.load(AtomicOrdering::Acquire) {
            return Err(Error::Closed);
        }
        validate_topic(topic)?;
        message.validate()
    }
}

impl Publisher for AmqpBroker {
    /// Returns once the broker confirmed the message. A topic no queue is
    /// bound to drops it, or with [`mandatory`](crate::AmqpConfig::mandatory)
    /// is an error.
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        self.shared.check(topic, &message)?;
        let exchange = self.shared.config.exchange.clone();
        self.shared
            .publish_to(&exchange, topic, &message, 0, self.shared.config.mandatory)
            .await
    }

    /// Sends the whole batch, then waits for the confirms: about one round
    /// trip. On error, others of the batch may have been taken.
    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        for message in &messages {
            self.shared.check(topic, message)?;
        }
        let exchange = self.shared.config.exchange.clone();
        let publishes = messages.iter().map(|m| {
            self.shared
                .publish_to(&exchange, topic, m, 0, self.shared.config.mandatory)
        });
        futures::future::try_join_all(publishes).await.map(drop)
    }

    async fn flush(&self) -> Result<()> {
        // Every publish waits for its confirm: nothing is buffered.
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
