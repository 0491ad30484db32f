//! The exchange, queues and bindings, declared idempotently.
//!
//! ```text
//!  publish(topic) ──► exchange `msg` (topic, durable) ──routing key = topic──►
//!      ├─► `<topics>:<group>`   durable queue per (topics, group)   ──► group members
//!      │       └─ dead letters ─► `<topics>:<group>.dlq` (durable)
//!      └─► `msg.broadcast.<uuid>`  exclusive queue per broadcast subscriber
//!
//!  defer(d) ──► `<queue>.retry.<ms>`  (TTL d, dead-letters back to `<queue>`)
//!  publish(topic, deliver_at) ──► exchange `msg.delay` (headers) ──msg-delay-ms──►
//!      `msg.delay.<ms>` (TTL ms, dead-letters to `msg` with routing key = topic)
//!  reject    ──► `<queue>.dlq`, and topic `<topic>.dlq` on the exchange
//! ```

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};
use msg_core::raw::stable_id;
use msg_core::{Result, Subscription, Uuid};

use crate::error;

/// How long an unused retry or delay queue lives after its last
/// declaration and the wait of its messages.
pub(crate) const QUEUE_IDLE_MS: u64 = 60_000;

/// The header that routes a delayed publish to its delay queue.
pub(crate) const HEADER_DELAY: &str = "msg-delay-ms";

pub(crate) async fn declare_exchange(channel: &Channel, exchange: &str) -> Result<()> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            options,
            FieldTable::default(),
        )
        .await
        .map_err(error::map)
}

/// A msg topic pattern as an AMQP binding key: `*` is one word in both;
/// msg's `>` is one or more words, AMQP's `#` zero or more, so `>` is `*.#`.
pub(crate) fn binding_key(pattern: &str) -> String {
    pattern
        .split('.')
        .map(|segment| if segment == ">" { "*.#" } else { segment })
        .collect::<Vec<_>>()
        .join(".")
}

/// The work queue of a subscription.
pub(crate) struct WorkQueue {
    pub(crate) name: String,
    /// Group queues are durable; a broadcast queue is exclusive.
    pub(crate) group: Option<String>,
}

impl WorkQueue {
    pub(crate) fn new(subscription: &Subscription) -> Self {
        match subscription.group_name() {
            Some(group) => {
                // ':' occurs in no topic or group name, so names never collide.
                let mut name = format!("{}:{group}", subscription.topics().join("+"));
                if name.len() > 200 {
                    name = format!("msg:{group}:{}", stable_id(&name).simple());
                }
                Self {
                    name,
                    group: Some(group.to_owned()),
                }
            }
            None => Self {
                name: format!("msg.broadcast.{}", Uuid::new_v4().simple()),
                group: None,
            },
        }
    }

    /// The queue's dead-letter queue.
    pub(crate) fn dead_letter_queue(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.name)
    }

    /// Declares the queue (and for a group, its dead-letter queue) and binds
    /// it to every topic of the subscription.
    pub(crate) async fn declare(
        &self,
        channel: &Channel,
        exchange: &str,
        topics: &[String],
        quorum: bool,
        dead_letter_suffix: &str,
    ) -> Result<()> {
        let mut arguments = FieldTable::default();
        let options = if self.group.is_some() {
            let dlq = self.dead_letter_queue(dead_letter_suffix);
            let mut dlq_arguments = FieldTable::default();
            if quorum {
                dlq_arguments.insert("x-queue-type".into(), long("quorum"));
            }
            channel
                .queue_declare(dlq.as_str().into(), durable(), dlq_arguments)
                .await
                .map_err(error::map)?;
            // What the broker dead-letters itself goes to the same place.
            arguments.insert("x-dead-letter-exchange".into(), long(""));
            arguments.insert("x-dead-letter-routing-key".into(), long(&dlq));
            if quorum {
                arguments.insert("x-queue-type".into(), long("quorum"));
            }
            durable()
        } else {
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            }
        };
        channel
            .queue_declare(self.name.as_str().into(), options, arguments)
            .await
            .map_err(error::map)?;
        for topic in topics {
            channel
                .queue_bind(
                    self.name.as_str().into(),
                    exchange.into(),
                    binding_key(topic).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(error::map)?;
        }
        Ok(())
    }
}

/// The message TTL, in milliseconds, of the queue that holds a message for
/// `delay`: rounded up, and 1 ms more, because RabbitMQ times a TTL in
/// whole milliseconds and was seen to let a message out up to 1 ms before
/// its TTL had passed (a `deliver_at` 0.7 ms early). Not before is the
/// promise; a millisecond late is not noticed.
pub(crate) fn delay_ms(delay: Duration) -> u64 {
    let ms = delay.as_nanos().div_ceil(1_000_000).saturating_add(1);
    u64::try_from(ms)
        .unwrap_or(u64::MAX)
        .min(u64::from(u32::MAX))
}

/// The name of the retry queue of `queue` for `delay_ms`.
pub(crate) fn retry_queue_name(queue: &str, delay_ms: u64) -> String {
    format!("{queue}.retry.{delay_ms}")
}

/// Declares the retry queue that holds messages of `queue` for `delay_ms`
/// and then dead-letters them back into it.
pub(crate) async fn declare_retry_queue(
    channel: &Channel,
    queue: &str,
    delay_ms: u64,
) -> Result<()> {
    let name = retry_queue_name(queue, delay_ms);
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(delay_ms as i64),
    );
    arguments.insert("x-dead-letter-exchange".into(), long(""));
    arguments.insert("x-dead-letter-routing-key".into(), long(queue));
    arguments.insert(
        "x-expires".into(),
        AMQPValue::LongLongInt((delay_ms + QUEUE_IDLE_MS) as i64),
    );
    channel
        .queue_declare(name.as_str().into(), durable(), arguments)
        .await
        .map_err(error::map)?;
    Ok(())
}

/// The headers exchange delayed publishes go to.
pub(crate) fn delay_exchange(exchange: &str) -> String {
    format!("{exchange}.delay")
}

/// The delay queue of `exchange` for `delay_ms`.
pub(crate) fn delay_queue_name(exchange: &str, delay_ms: u64) -> String {
    format!("{exchange}.delay.{delay_ms}")
}

/// Declares the delay queue that holds delayed publishes for `delay_ms`
/// and then dead-letters them into `exchange` with their own routing key
/// (their topic), and binds it to the delay exchange by the delay header.
pub(crate) async fn declare_delay_queue(
    channel: &Channel,
    exchange: &str,
    delay_ms: u64,
) -> Result<()> {
    let delays = delay_exchange(exchange);
    channel
        .exchange_declare(
            delays.as_str().into(),
            ExchangeKind::Headers,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(error::map)?;
    let name = delay_queue_name(exchange, delay_ms);
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(delay_ms as i64),
    );
    // No dead-letter routing key: the message keeps its topic.
    arguments.insert("x-dead-letter-exchange".into(), long(exchange));
    arguments.insert(
        "x-expires".into(),
        AMQPValue::LongLongInt((delay_ms + QUEUE_IDLE_MS) as i64),
    );
    channel
        .queue_declare(name.as_str().into(), durable(), arguments)
        .await
        .map_err(error::map)?;
    let mut binding = FieldTable::default();
    binding.insert("x-match".into(), long("all"));
    binding.insert(key(HEADER_DELAY), long(&delay_ms.to_string()));
    channel
        .queue_bind(
            name.as_str().into(),
            delays.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            binding,
        )
        .await
        .map_err(error::map)
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// A field-table key.
pub(crate) fn key(s: &str) -> ShortString {
    s.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_is_held_at_least_as_long_as_asked() {
        assert_eq!(delay_ms(Duration::from_millis(1500)), 1501);
        assert_eq!(delay_ms(Duration::from_micros(1_499_300)), 1501);
        assert_eq!(delay_ms(Duration::from_nanos(1)), 2);
        assert_eq!(delay_ms(Duration::ZERO), 1);
        assert_eq!(delay_ms(Duration::MAX), u64::from(u32::MAX));
    }

    #[test]
    fn patterns_become_binding_keys() {
        assert_eq!(binding_key("orders.created"), "orders.created");
        assert_eq!(binding_key("orders.*"), "orders.*");
        assert_eq!(binding_key("orders.>"), "orders.*.#");
    }

    #[test]
    fn queue_names() {
        let q = WorkQueue::new(&Subscription::new("a.b").and_topic("c").group("g"));
        assert_eq!(q.name, "a.b+c:g");
        assert_eq!(q.dead_letter_queue(".dlq"), "a.b+c:g.dlq");
        let long = WorkQueue::new(&Subscription::new("x".repeat(240)).group("g"));
        assert!(long.name.starts_with("msg:g:") && long.name.len() < 40);
        assert!(WorkQueue::new(&Subscription::new("t")).group.is_none());
    }
}
