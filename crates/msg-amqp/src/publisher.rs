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
//! | `reply-to` property | also set from the `msg-reply-to` header |
//! | `correlation-id` property | also set from the `correlation-id` header (read into it when a message has no header) |
//! | `expiration` property | the publish option `ttl`, in milliseconds |
//! | body | payload |
//!
//! A publish with `deliver_at` goes to the headers exchange `<exchange>.delay`
//! with the header `msg-delay-ms`, which routes it to the queue
//! `<exchange>.delay.<ms>`; when its TTL passes, the queue dead-letters it
//! into the exchange with its topic as routing key. RabbitMQ drops the
//! `expiration` of a dead-lettered message, so `deliver_at` and `ttl`
//! cannot be combined.
//!
//! Messages of other clients are read too: without a UUID `message-id`
//! they get a new id, and headers that are not strings are skipped.

use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::{Duration, SystemTime};

use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Confirmation};
use msg_core::raw::topic::validate_topic;
use msg_core::raw::{apply_options, batch_outcome, check_size, delay_until};
use msg_core::{
    BatchError, Capabilities, Error, Message, PublishOptions, Publisher, Receipt, Result, headers,
};

use crate::topology::{
    HEADER_DELAY, declare_delay_queue, delay_exchange, delay_ms, delay_queue_name, key,
};
use crate::{AmqpBroker, Shared, error};

/// The header that counts the deliveries before a deferred copy.
pub const HEADER_ATTEMPT: &str = "msg-attempt";
/// The header with the topic of a deferred copy: it comes back from its
/// retry queue with the work queue's name as routing key.
pub const HEADER_TOPIC: &str = "msg-topic";

/// The AMQP properties of `message`; `attempts` are the deliveries it had
/// before this copy.
pub(crate) fn properties(
    message: &Message,
    attempts: u32,
    ttl: Option<Duration>,
) -> BasicProperties {
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
    // Properties are short strings (255 bytes at most); a longer value
    // travels in the headers only, which readers of msg's messages use
    // first anyway.
    let short = |name| {
        message
            .header(name)
            .and_then(|value| ShortString::try_new(value).ok())
    };
    if let Some(content_type) = short(headers::CONTENT_TYPE) {
        properties = properties.with_content_type(content_type);
    }
    if let Some(reply_to) = short(headers::REPLY_TO) {
        properties = properties.with_reply_to(reply_to);
    }
    if let Some(correlation) = short(headers::CORRELATION_ID) {
        properties = properties.with_correlation_id(correlation);
    }
    if let Some(ttl) = ttl {
        // Whole milliseconds, rounded up: never expire early.
        let ms = ttl.as_nanos().div_ceil(1_000_000);
        properties = properties.with_expiration(ms.to_string().into());
    }
    properties
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

impl Shared {
    /// Publishes to `exchange` with `routing_key` and waits for the confirm,
    /// all of it within the publish timeout. Mandatory publishes that reach
    /// no queue are an error.
    pub(crate) async fn publish_to(
        &self,
        exchange: &str,
        routing_key: &str,
        message: &Message,
        attempts: u32,
        mandatory: bool,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let timeout = self.config.publish_timeout;
        let publish = async {
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
                    properties(message, attempts, ttl),
                )
                .await
                .map_err(error::map)?;
            confirm.await.map_err(error::map)
        };
        let confirmation = tokio::time::timeout(timeout, publish)
            .await
            .map_err(|_| Error::timeout(timeout))??;
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

    /// Publishes through the delay queue of `delay`, declaring it when it
    /// may have expired.
    async fn publish_delayed(&self, topic: &str, message: &Message, delay: Duration) -> Result<()> {
        let ms = delay_ms(delay);
        let exchange = &self.config.exchange;
        let queue = delay_queue_name(exchange, ms);
        if !self.recently_declared(&queue) {
            let declare = async {
                let channel = self.publish_channel().await?;
                declare_delay_queue(&channel, exchange, ms).await
            };
            let timeout = self.config.publish_timeout;
            tokio::time::timeout(timeout, declare)
                .await
                .map_err(|_| Error::timeout(timeout))??;
            self.declared(queue);
        }
        let mut copy = message.clone();
        copy.headers_mut().insert(HEADER_DELAY, ms.to_string());
        // Mandatory: the delay queue must take it, or it would be lost.
        self.publish_to(&delay_exchange(exchange), topic, &copy, 0, true, None)
            .await
    }

    fn check(&self, topic: &str, message: &Message) -> Result<()> {
        if self.publisher_closed.load(AtomicOrdering::Acquire) {
            return Err(Error::Closed);
        }
        validate_topic(topic)?;
        check_size(message, AmqpBroker::CAPABILITIES.max_message_size)?;
        message.validate()
    }
}

impl Publisher for AmqpBroker {
    /// Returns once the broker confirmed the message. A topic no queue is
    /// bound to drops it, or with [`mandatory`](crate::AmqpConfig::mandatory)
    /// is an error. RabbitMQ has no position to report.
    ///
    /// Honours every option, though not `deliver_at` and `ttl` together. A
    /// message whose `ttl` passes in a group's queue goes to the queue's
    /// dead-letter queue (RabbitMQ dead-letters what expires).
    async fn publish_with(
        &self,
        topic: &str,
        mut message: Message,
        options: PublishOptions,
    ) -> Result<Receipt> {
        apply_options(&mut message, &options, &Self::CAPABILITIES)?;
        self.shared.check(topic, &message)?;
        let delay = options.deliver_at.map(delay_until).filter(|d| !d.is_zero());
        match (delay, options.ttl) {
            (Some(_), Some(_)) => {
                return Err(Error::Unsupported {
                    operation: "the publish options deliver_at and ttl together",
                    transport: Self::CAPABILITIES.transport,
                });
            }
            (Some(delay), None) => {
                self.shared.publish_delayed(topic, &message, delay).await?;
            }
            (None, ttl) => {
                let exchange = &self.shared.config.exchange;
                self.shared
                    .publish_to(
                        exchange,
                        topic,
                        &message,
                        0,
                        self.shared.config.mandatory,
                        ttl,
                    )
                    .await?;
            }
        }
        Ok(Receipt::accepted())
    }

    /// Sends the whole batch, then waits for the confirms: about one round
    /// trip. Each message is confirmed or refused on its own, and the error
    /// says which were taken.
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
        let exchange = &self.shared.config.exchange;
        let publishes = messages.iter().map(|m| {
            self.shared
                .publish_to(exchange, topic, m, 0, self.shared.config.mandatory, None)
        });
        let results = futures::future::join_all(publishes).await;
        batch_outcome(
            len,
            results.into_iter().map(|r| r.map(|()| Receipt::accepted())),
            None,
        )
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
