//! Consuming: one channel and one consumer per subscription, read by a
//! task that opens them again after an outage.
//!
//! The channel's `basic.qos` is the subscription's prefetch, so the broker
//! never has more out with one subscriber than it may hold. A group's
//! queue is durable and shared by its members; a broadcast subscriber's
//! queue is exclusive and goes away with it.

use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::{AMQPValue, FieldTable};
use msg_core::raw::reply::new_reply_topic;
use msg_core::raw::{govern, stable_id};
use msg_core::{
    Capabilities, Delivery, DeliveryStream, Error, Headers, Message, Metadata, Received,
    ReplyInbox, Result, Subscriber, Subscription, Uuid,
};
use tokio::sync::{mpsc, watch};

use crate::ack::{AmqpAcker, Requeues};
use crate::publisher::{HEADER_ATTEMPT, HEADER_TOPIC};
use crate::topology::HEADER_DELAY;
use crate::topology::{WorkQueue, declare_exchange};
use crate::{AmqpBroker, Shared, error};

impl Subscriber for AmqpBroker {
    async fn subscribe(&self, subscription: Subscription) -> Result<DeliveryStream> {
        let queue = WorkQueue::new(&subscription);
        self.consume(subscription, queue).await
    }

    async fn close(&self) -> Result<()> {
        self.shared
            .subscriber_closed
            .store(true, AtomicOrdering::Release);
        self.shared.closing.send_replace(true);
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities()
    }

    /// An exclusive queue named after its address (`msg-reply.<uuid>`),
    /// bound to the exchange with the address as routing key; the broker
    /// deletes it with the connection. Named so, it is also reached the
    /// way RabbitMQ's RPC clients and servers answer: through the default
    /// exchange, with the `reply-to` property as routing key and the
    /// `correlation-id` property.
    async fn reply_inbox(&self) -> Result<ReplyInbox> {
        let address = new_reply_topic();
        let queue = WorkQueue {
            name: address.clone(),
            group: None,
        };
        let replies = self
            .consume(Subscription::new(address.clone()), queue)
            .await?;
        Ok(ReplyInbox::new(address, replies))
    }
}

impl AmqpBroker {
    /// Consumes `subscription` from `queue`, declared and bound first.
    async fn consume(
        &self,
        subscription: Subscription,
        queue: WorkQueue,
    ) -> Result<DeliveryStream> {
        subscription.validate()?;
        if self.shared.subscriber_closed.load(AtomicOrdering::Acquire) {
            return Err(Error::Closed);
        }
        let (tx, rx) = mpsc::channel(subscription.prefetch_count());
        let mut reader = Reader {
            shared: self.shared.clone(),
            queue: Arc::new(queue),
            topics: subscription.topics().to_vec(),
            prefetch: subscription.prefetch_count().min(usize::from(u16::MAX)) as u16,
            requeues: Arc::default(),
            tx,
            closing: self.shared.closing.subscribe(),
        };
        // The first consumer is set up before this returns, so that nothing
        // published afterwards is missed; later ones by the reader.
        let consumer = reader.open().await?;
        tokio::spawn(reader.run(consumer));
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            let item = rx.recv().await?;
            Some((item, rx))
        });
        let policy = self
            .shared
            .config
            .delivery()
            .for_subscription(&subscription);
        Ok(govern(stream.boxed(), policy))
    }
}

struct Reader {
    shared: Arc<Shared>,
    queue: Arc<WorkQueue>,
    topics: Vec<String>,
    prefetch: u16,
    requeues: Arc<Requeues>,
    tx: mpsc::Sender<Result<Delivery>>,
    closing: watch::Receiver<bool>,
}

type Open = (lapin::Channel, lapin::Consumer);

impl Reader {
    fn done(&self) -> bool {
        *self.closing.borrow() || self.tx.is_closed()
    }

    /// A channel with the prefetch, the topology declared, and a consumer.
    async fn open(&mut self) -> Result<Open> {
        let channel = self.shared.channel().await?;
        channel
            .basic_qos(self.prefetch, Default::default())
            .await
            .map_err(error::map)?;
        let config = &self.shared.config;
        declare_exchange(&channel, &config.exchange).await?;
        self.queue
            .declare(
                &channel,
                &config.exchange,
                &self.topics,
                config.quorum_queues,
                &config.dead_letter_suffix,
            )
            .await?;
        let consumer = channel
            .basic_consume(
                self.queue.name.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(error::map)?;
        Ok((channel, consumer))
    }

    async fn run(mut self, first: Open) {
        let mut open = Some(first);
        let mut backoff = Duration::from_millis(100);
        while !self.done() {
            let result = match open.take() {
                Some(o) => Ok(o),
                None => self.open().await,
            };
            let failure = match result {
                Ok(o) => match self.consume(o).await {
                    Ok(()) => break,
                    Err(e) => e,
                },
                Err(e) => e,
            };
            // Report and go on: an outage never ends the stream.
            tracing::warn!(error = %failure.chain(), queue = %self.queue.name, "AMQP consumer failed; reopening");
            let _ = self.tx.try_send(Err(failure));
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = self.closing.changed() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Hands out deliveries until the subscription ends (`Ok`) or the
    /// channel breaks (`Err`).
    async fn consume(&mut self, (channel, mut consumer): Open) -> Result<()> {
        loop {
            tokio::select! {
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => self.deliver(delivery).await,
                    Some(Err(e)) => return Err(error::map(e)),
                    None => return Err(Error::Connection("the broker cancelled the consumer".into())),
                },
                _ = self.closing.changed() => break,
                () = self.tx.closed() => break,
            }
        }
        // Unsettled deliveries go back to the queue when the channel closes.
        let _ = channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await;
        let _ = channel.close(200, "subscription closed".into()).await;
        Ok(())
    }

    async fn deliver(&self, delivery: lapin::message::Delivery) {
        let (message, copies_before, broker_count, topic) = decode(&delivery);
        let this_copy = match broker_count {
            // Quorum queues count deliveries (x-delivery-count: earlier ones).
            Some(earlier) => earlier + 1,
            None => self.requeues.count(message.id(), delivery.redelivered),
        };
        let attempt = copies_before + this_copy;
        let topic = topic.as_deref().unwrap_or(delivery.routing_key.as_str());
        let mut metadata = Metadata::new(topic)
            .with_attempt(attempt)
            .with_group(self.queue.group.as_deref().map(Arc::from));
        if let Some(seconds) = delivery.properties.timestamp() {
            metadata =
                metadata.with_timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(*seconds));
        }
        let acker = AmqpAcker {
            shared: self.shared.clone(),
            acker: delivery.acker,
            received: Received {
                message: message.clone(),
                metadata: metadata.clone(),
            },
            queue: self.queue.clone(),
            requeues: self.requeues.clone(),
        };
        // Fails only when the stream was dropped: the delivery is dropped
        // with the error, which nacks it.
        let _ = self
            .tx
            .send(Ok(Delivery::new(message, metadata, acker)))
            .await;
    }
}

/// The message, the deliveries before this copy (`msg-attempt`), the
/// broker's count of earlier deliveries of this copy (quorum queues), and
/// the topic of a deferred copy (`msg-topic`).
pub(crate) fn decode(
    delivery: &lapin::message::Delivery,
) -> (Message, u32, Option<u32>, Option<String>) {
    let properties = &delivery.properties;
    let id = message_id(delivery);
    let mut headers = Headers::new();
    let mut key = None;
    let mut copies_before = 0;
    let mut broker_count = None;
    let mut topic = None;
    if let Some(table) = properties.headers() {
        for (name, value) in table.inner() {
            let name = name.as_str();
            match name {
                HEADER_ATTEMPT => copies_before = number(value).unwrap_or(0),
                "x-delivery-count" => broker_count = number(value),
                HEADER_TOPIC => topic = text(value),
                HEADER_DELAY => {}
                msg_core::headers::MSG_KEY => key = text(value),
                _ => {
                    if let Some(value) = text(value) {
                        headers.insert(name, value);
                    }
                }
            }
        }
    }
    // Another client says these in the properties only (an RPC server
    // answers with the request's `correlation-id` property, say).
    let from_properties = [
        (msg_core::headers::CONTENT_TYPE, properties.content_type()),
        (
            msg_core::headers::CORRELATION_ID,
            properties.correlation_id(),
        ),
    ];
    for (name, value) in from_properties {
        if let Some(value) = value
            && !headers.contains(name)
        {
            headers.insert(name, value.as_str());
        }
    }
    let mut message = Message::with_id(id, Bytes::from(delivery.data.clone()));
    if let Some(key) = key {
        message = message.with_key(key);
    }
    *message.headers_mut() = headers;
    (message, copies_before, broker_count, topic)
}

/// The message's id: its AMQP `message-id` when that is a UUID (as msg
/// writes it). A message of another client gets an id derived from what
/// identifies it, the same on every delivery: its `message-id` string with
/// the exchange and routing key it was published to; without a
/// `message-id`, its exchange, routing key, `timestamp` and payload (so
/// that two such messages alike in all of these share an id).
fn message_id(delivery: &lapin::message::Delivery) -> Uuid {
    let properties = &delivery.properties;
    let given = properties.message_id().as_ref().map(|id| id.as_str());
    if let Some(id) = given.and_then(|id| Uuid::parse_str(id).ok()) {
        return id;
    }
    let exchange = delivery.exchange.as_str();
    let routing_key = delivery.routing_key.as_str();
    // Lengths first: no choice of names can make two places read alike.
    let place = format!(
        "amqp/{}:{exchange}/{}:{routing_key}/",
        exchange.len(),
        routing_key.len()
    );
    match given {
        Some(id) => stable_id(format!("{place}message-id/{id}")),
        None => {
            let timestamp = properties
                .timestamp()
                .map_or(String::new(), |t| t.to_string());
            let mut content = format!("{place}content/{timestamp}/").into_bytes();
            content.extend_from_slice(&delivery.data);
            stable_id(content)
        }
    }
}

/// A header value as text. An AMQP timestamp (as the CloudEvents AMQP
/// binding allows for `time`) becomes RFC 3339.
fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        // A timestamp past what the clock can hold stays a number.
        AMQPValue::Timestamp(seconds) => Some(
            SystemTime::UNIX_EPOCH
                .checked_add(Duration::from_secs(*seconds))
                .map_or_else(|| seconds.to_string(), msg_core::raw::time::rfc3339),
        ),
        _ => None,
    }
}

fn number(value: &AMQPValue) -> Option<u32> {
    let n: i64 = match value {
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => *n,
        _ => return None,
    };
    u32::try_from(n).ok()
}
