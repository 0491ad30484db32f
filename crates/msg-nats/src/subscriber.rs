//! Consuming: core subscriptions, and JetStream pull consumers read by a
//! task per subscription.
//!
//! Core NATS: a broadcast subscription is a plain subscription, a group a
//! queue group; NATS's wildcards are the topic patterns.
//!
//! JetStream: a group is a durable pull consumer named after the group
//! (and its topics); a broadcast subscriber gets a consumer of its own,
//! deleted when its stream is dropped (and by the server after 10 minutes
//! without a client, should the process die). The reader pulls at most as
//! many messages as the subscription has room for (its prefetch), so the
//! server never has more out with this subscriber than it may hold.
//! Handlers that run long send progress signals, so the server does not
//! deliver the message again while work goes on.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use async_nats::Subject;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use bytes::Bytes;
use futures::StreamExt;
use msg_core::raw::{Prefetch, govern, stable_id};
use msg_core::{
    Capabilities, Delivery, DeliveryStream, Error, Headers, Message, Metadata, Received,
    ReplyInbox, Result, StartPosition, Subscriber, Subscription, Uuid,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::ack::{CoreAcker, JsAcker};
use crate::config::Mode;
use crate::publisher::{HEADER_ID, INBOX_PREFIX};
use crate::{NatsBroker, Shared, error};

/// How long a broadcast consumer outlives a subscriber that vanished
/// without deleting it.
const BROADCAST_INACTIVE: Duration = Duration::from_secs(600);

impl Subscriber for NatsBroker {
    async fn subscribe(&self, subscription: Subscription) -> Result<DeliveryStream> {
        subscription.validate()?;
        if self.shared.subscriber_closed.load(AtomicOrdering::Acquire) {
            return Err(Error::Closed);
        }
        let policy = self.shared.config.delivery.for_subscription(&subscription);
        let stream = match self.shared.config.mode {
            Mode::Core => self.subscribe_core(subscription).await?,
            Mode::JetStream => self.subscribe_js(subscription).await?,
        };
        Ok(govern(stream, policy))
    }

    async fn close(&self) -> Result<()> {
        self.shared
            .subscriber_closed
            .store(true, AtomicOrdering::Release);
        self.shared.closing.send_replace(true);
        // Acks are sent without waiting: make sure they left.
        let _ = self.shared.client.flush().await;
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities()
    }

    /// What the server said when the client connected.
    async fn server_version(&self) -> Result<Option<String>> {
        let info = self.shared.client.server_info();
        Ok(Some(format!("nats-server {}", info.version)))
    }

    /// JetStream: the subjects that hold messages in any stream (schedules
    /// left out). Core NATS stores nothing: `Unsupported`.
    async fn topics(&self) -> Result<Vec<String>> {
        if self.shared.config.mode != Mode::JetStream {
            return Err(Error::Unsupported {
                operation: "listing topics (core NATS stores none)",
                transport: "nats",
            });
        }
        let jetstream = &self.shared.jetstream;
        let names: Vec<String> = jetstream
            .stream_names()
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<std::result::Result<_, _>>()
            .map_err(error::request)?;
        let mut topics = Vec::new();
        for name in names {
            let stream = jetstream.get_stream(&name).await.map_err(error::request)?;
            let mut subjects = stream
                .info_with_subjects(">")
                .await
                .map_err(error::request)?;
            while let Some(subject) = subjects.next().await {
                let (subject, _) = subject.map_err(error::request)?;
                if !subject.starts_with("_") {
                    topics.push(subject);
                }
            }
        }
        topics.sort();
        topics.dedup();
        Ok(topics)
    }

    /// The native inbox: a core NATS subscription to a subject of its own
    /// (`_INBOX.<nuid>`), in both modes. Nothing is stored and nothing
    /// stays on the server when the subscription ends.
    async fn reply_inbox(&self) -> Result<ReplyInbox> {
        if self.shared.subscriber_closed.load(AtomicOrdering::Acquire) {
            return Err(Error::Closed);
        }
        let address = self.shared.client.new_inbox();
        debug_assert!(address.starts_with(INBOX_PREFIX));
        let replies = self
            .subscribe_core(Subscription::new(address.clone()))
            .await?;
        Ok(ReplyInbox::new(address, replies))
    }
}

/// Returns once the server has read everything this connection sent
/// before, subscriptions included. `flush` only writes to the socket: a
/// message published on another connection right after could still reach
/// the server before the subscription and miss it. The server handles one
/// connection's commands in order, so the answer to a request sent after
/// them proves they were read; a request to an inbox nobody listens on is
/// answered at once with "no responders".
async fn server_caught_up(client: &async_nats::Client) -> Result<()> {
    use async_nats::RequestErrorKind;
    match client.request(client.new_inbox(), Bytes::new()).await {
        Ok(_) => Ok(()),
        Err(e) => match e.kind() {
            RequestErrorKind::NoResponders => Ok(()),
            // No answer: most likely the account may not publish to its own
            // inbox. The subscription stands; only that it was in place
            // before this returned is unconfirmed.
            RequestErrorKind::TimedOut => {
                tracing::warn!(
                    "NATS did not answer a request to an inbox; a message published right \
                     after subscribing may be missed (may this account publish to _INBOX?)"
                );
                Ok(())
            }
            _ => Err(Error::Connection(Box::new(e))),
        },
    }
}

/// Completes when the subscriber closes.
fn closed(shared: &Shared) -> impl Future<Output = ()> + Send + 'static {
    let mut closing = shared.closing.subscribe();
    async move {
        let _ = closing.wait_for(|closed| *closed).await;
    }
}

impl NatsBroker {
    async fn subscribe_core(&self, subscription: Subscription) -> Result<DeliveryStream> {
        let client = &self.shared.client;
        let mut subscribers = Vec::with_capacity(subscription.topics().len());
        for topic in subscription.topics() {
            let subscriber = match subscription.group_name() {
                Some(group) => {
                    client
                        .queue_subscribe(topic.clone(), group.to_owned())
                        .await
                }
                None => client.subscribe(topic.clone()).await,
            };
            subscribers.push(subscriber.map_err(error::request)?);
        }
        // The server knows of the subscription once this returns, so that
        // nothing published afterwards is missed.
        server_caught_up(client).await?;
        let shared = self.shared.clone();
        let group: Option<Arc<str>> = subscription.group_name().map(Arc::from);
        let stream = futures::stream::select_all(subscribers).map(move |nats| {
            let message = decode(&nats, Uuid::now_v7);
            let metadata = Metadata::new(nats.subject.as_str()).with_group(group.clone());
            let acker = CoreAcker {
                shared: shared.clone(),
                received: Received {
                    message: message.clone(),
                    metadata: metadata.clone(),
                },
            };
            Ok(Delivery::new(message, metadata, acker))
        });
        Ok(stream.take_until(closed(&self.shared)).boxed())
    }

    async fn subscribe_js(&self, subscription: Subscription) -> Result<DeliveryStream> {
        // One consumer per stream the topics live in; usually one.
        let mut by_stream: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for topic in subscription.topics() {
            let stream = self.shared.stream_for(topic).await?;
            by_stream.entry(stream).or_default().push(topic.clone());
        }
        let (tx, rx) = mpsc::channel(subscription.prefetch_count());
        let held = Arc::new(Held::new(subscription.prefetch_count()));
        for (stream, filters) in by_stream {
            let declare = Declare::new(&subscription, stream, filters, &self.shared.config);
            let consumer = declare.run(&self.shared).await?;
            let reader = Reader {
                shared: self.shared.clone(),
                consumer,
                declare,
                redeclare: false,
                held: held.clone(),
                tx: tx.clone(),
                closing: self.shared.closing.subscribe(),
            };
            tokio::spawn(reader.run());
        }
        tokio::spawn(send_progress(
            Arc::downgrade(&held),
            self.shared.clone(),
            self.shared.config.ack_wait / 3,
        ));
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            let item = rx.recv().await?;
            Some((item, rx))
        });
        Ok(stream.boxed())
    }
}

/// What a subscription's deliveries hold: its prefetch slots, and the reply
/// subjects of unsettled messages, for progress signals.
pub(crate) struct Held {
    pub(crate) prefetch: Prefetch,
    unsettled: Mutex<HashMap<u64, (Subject, Instant)>>,
}

impl Held {
    fn new(prefetch: usize) -> Self {
        Self {
            prefetch: Prefetch::new(prefetch),
            unsettled: Mutex::new(HashMap::new()),
        }
    }

    fn hold(&self, id: u64, reply: Subject) {
        self.prefetch.take(1);
        self.unsettled
            .lock()
            .expect("unsettled lock")
            .insert(id, (reply, Instant::now()));
    }

    /// One delivery was settled: its slot is free and its progress stops.
    pub(crate) fn release(&self, id: u64) {
        self.unsettled.lock().expect("unsettled lock").remove(&id);
        self.prefetch.release();
    }
}

/// Tells the server every `every` that unsettled messages held that long
/// are still being worked on, until the subscription and all its
/// deliveries are gone.
async fn send_progress(held: Weak<Held>, shared: Arc<Shared>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(held) = held.upgrade() else { return };
        let due: Vec<Subject> = {
            let mut unsettled = held.unsettled.lock().expect("unsettled lock");
            let now = Instant::now();
            unsettled
                .values_mut()
                .filter(|(_, since)| now.duration_since(*since) >= every)
                .map(|(reply, since)| {
                    *since = now;
                    reply.clone()
                })
                .collect()
        };
        for reply in due {
            if let Err(e) = shared.client.publish(reply, "+WPI".into()).await {
                tracing::debug!(error = %e, "progress signal not sent");
            }
        }
    }
}

/// How a subscription's consumer is declared; kept to declare it again
/// when the server lost it.
struct Declare {
    stream: String,
    name: String,
    config: pull::Config,
    broadcast: bool,
    group: Option<Arc<str>>,
}

impl Declare {
    fn new(
        subscription: &Subscription,
        stream: String,
        filters: Vec<String>,
        config: &crate::NatsConfig,
    ) -> Self {
        let group = subscription.group_name();
        let name = match group {
            Some(group) => consumer_name(group, &filters),
            None => format!("msg-broadcast-{}", Uuid::new_v4().simple()),
        };
        let (filter_subject, filter_subjects) = match filters.len() {
            1 => (filters[0].clone(), Vec::new()),
            _ => (String::new(), filters),
        };
        let consumer = pull::Config {
            durable_name: Some(name.clone()),
            name: Some(name.clone()),
            deliver_policy: match subscription.start_position() {
                StartPosition::Earliest => DeliverPolicy::All,
                StartPosition::Latest => DeliverPolicy::New,
            },
            ack_policy: AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            // The transport counts deliveries itself and dead-letters the
            // last one: the server's limit would drop messages silently.
            max_deliver: -1,
            // Prefetch bounds each subscriber; members of a group add up.
            max_ack_pending: -1,
            filter_subject,
            filter_subjects,
            inactive_threshold: if group.is_none() {
                BROADCAST_INACTIVE
            } else {
                Duration::ZERO
            },
            ..Default::default()
        };
        Self {
            stream,
            name,
            config: consumer,
            broadcast: group.is_none(),
            group: group.map(Arc::from),
        }
    }

    /// Gets the consumer, creating it when it does not exist. An existing
    /// group consumer keeps its position and settings.
    async fn run(&self, shared: &Shared) -> Result<PullConsumer> {
        let stream = shared
            .jetstream
            .get_stream_no_info(&self.stream)
            .await
            .map_err(error::request)?;
        stream
            .get_or_create_consumer(&self.name, self.config.clone())
            .await
            .map_err(error::request)
    }
}

/// The durable consumer of `group` over `filters`: the group name made a
/// valid consumer name, and a hash of both, so that one group subscribed to
/// different topics of a stream has one consumer per topic set.
fn consumer_name(group: &str, filters: &[String]) -> String {
    let mut sorted: Vec<&str> = filters.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    // FNV-1a: stable across Rust releases, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in std::iter::once(group)
        .chain(sorted)
        .flat_map(|s| s.bytes().chain([0]))
    {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{}-{hash:016x}", group.replace('.', "_"))
}

struct Reader {
    shared: Arc<Shared>,
    consumer: PullConsumer,
    declare: Declare,
    redeclare: bool,
    held: Arc<Held>,
    tx: mpsc::Sender<Result<Delivery>>,
    closing: watch::Receiver<bool>,
}

impl Reader {
    fn done(&self) -> bool {
        *self.closing.borrow() || self.tx.is_closed()
    }

    async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        while !self.done() {
            match self.pump().await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    // Report and go on: an outage never ends the stream.
                    tracing::warn!(error = %e.chain(), "JetStream pull failed; retrying");
                    let _ = self.tx.try_send(Err(e));
                    self.redeclare = true;
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = self.closing.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        if self.declare.broadcast
            && let Ok(stream) = self
                .shared
                .jetstream
                .get_stream_no_info(&self.declare.stream)
                .await
        {
            let _ = stream.delete_consumer(&self.declare.name).await;
        }
    }

    /// Keeps pulls in flight for the room the subscription has, and hands
    /// out what they bring, until the subscription closes (`Ok`) or a pull
    /// fails. A new pull goes out once half the prefetch is neither held nor
    /// asked for, before the pulls in flight are done: waiting for each pull
    /// to finish before the next would leave the consumer idle for a round
    /// trip per batch.
    async fn pump(&mut self) -> Result<()> {
        if self.redeclare {
            self.consumer = self.declare.run(&self.shared).await?;
            self.redeclare = false;
        }
        let expiry = self.shared.config.pull_expiry;
        let low_water = (self.held.prefetch.limit() / 2).max(1);
        let mut pulls = futures::stream::SelectAll::<Pull>::new();
        // Asked for and not yet brought, over all pulls in flight; with
        // what is held, never more than the prefetch.
        let mut asked = 0;
        loop {
            let free = self.held.prefetch.room().saturating_sub(asked);
            if free >= low_water || (asked == 0 && free > 0) {
                let batch = self
                    .consumer
                    .batch()
                    .max_messages(free)
                    .expires(expiry)
                    .messages()
                    .await
                    .map_err(error::request)?;
                pulls.push(Pull::new(batch, free));
                asked += free;
                continue;
            }
            tokio::select! {
                pulled = pulls.next(), if !pulls.is_empty() => match pulled {
                    // Saturating: a server that brought more than asked
                    // must not leave the count wrapped and the reader stalled.
                    Some(Pulled::Message(message)) => {
                        asked = asked.saturating_sub(1);
                        self.deliver(message).await;
                    }
                    Some(Pulled::Ended { unbrought }) => asked = asked.saturating_sub(unbrought),
                    Some(Pulled::Failed(e)) => return Err(Error::broker_retryable(e)),
                    None => {}
                },
                // Nothing asked for and no room: all is held.
                () = self.held.prefetch.freed(), if asked == 0 => {}
                _ = self.closing.changed() => break,
                () = self.tx.closed() => break,
            }
        }
        // Closing: what the server sends for the pulls in flight until they
        // expire goes back rather than waiting out `ack_wait`. Delayed past
        // the pulls' expiry, or the server would hand it straight back to
        // one of these very pulls, again and again.
        let back_after = expiry + Duration::from_millis(500);
        let _ = tokio::time::timeout(expiry + Duration::from_secs(1), async {
            while let Some(pulled) = pulls.next().await {
                if let Pulled::Message(message) = pulled {
                    let _ = message
                        .ack_with(async_nats::jetstream::AckKind::Nak(Some(back_after)))
                        .await;
                }
            }
        })
        .await;
        Ok(())
    }

    /// Hands one message to the stream, or dead-letters it when it had too
    /// many deliveries already.
    async fn deliver(&self, nats: async_nats::jetstream::Message) {
        let (stream_sequence, consumer_sequence, attempt, published) = match nats.info() {
            Ok(info) => (
                info.stream_sequence,
                info.consumer_sequence,
                u32::try_from(info.delivered).unwrap_or(u32::MAX),
                SystemTime::from(info.published),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "a JetStream message without its metadata; skipped");
                return;
            }
        };
        let stream = self.declare.stream.clone();
        let message = decode(&nats, || {
            stable_id(format!("nats/{stream}/{stream_sequence}"))
        });
        let metadata = Metadata::new(nats.subject.as_str())
            .with_offset(stream_sequence)
            .with_timestamp(published)
            .with_attempt(attempt)
            .with_group(self.declare.group.clone());
        let reply = nats.reply.clone();
        let (_, acker) = nats.split();
        let acker = JsAcker {
            shared: self.shared.clone(),
            acker,
            received: Received {
                message: message.clone(),
                metadata: metadata.clone(),
            },
            id: consumer_sequence,
            held: self.held.clone(),
        };
        if let Some(reply) = reply {
            self.held.hold(consumer_sequence, reply);
        }
        // Fails only when the stream was dropped: the delivery is dropped
        // with the error, which naks it.
        let _ = self
            .tx
            .send(Ok(Delivery::new(message, metadata, acker)))
            .await;
    }
}

/// One pull request in flight: the messages it brings, then how many of
/// those it asked for it did not bring. The server ends a pull at its
/// expiry; should that answer be lost (an outage), async-nats' batch gives
/// up on its own 5 s later.
struct Pull {
    batch: pull::Batch,
    unbrought: usize,
    ended: bool,
}

// Nearly every item is a message: boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
enum Pulled {
    Message(async_nats::jetstream::Message),
    Ended { unbrought: usize },
    Failed(async_nats::Error),
}

impl Pull {
    fn new(batch: pull::Batch, asked: usize) -> Self {
        Self {
            batch,
            unbrought: asked,
            ended: false,
        }
    }
}

impl futures::Stream for Pull {
    type Item = Pulled;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Pulled>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.batch.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(message))) => {
                self.unbrought = self.unbrought.saturating_sub(1);
                Poll::Ready(Some(Pulled::Message(message)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.ended = true;
                Poll::Ready(Some(Pulled::Failed(e)))
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(Some(Pulled::Ended {
                    unbrought: self.unbrought,
                }))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The message in a NATS message (layout in the publisher module).
fn decode(nats: &async_nats::Message, fallback_id: impl FnOnce() -> Uuid) -> Message {
    decode_parts(nats.headers.as_ref(), &nats.payload, fallback_id)
}

/// The message of NATS headers and a payload; `fallback_id` names one of
/// another client.
pub(crate) fn decode_parts(
    map: Option<&async_nats::HeaderMap>,
    payload: &Bytes,
    fallback_id: impl FnOnce() -> Uuid,
) -> Message {
    let mut id = None;
    let mut scheduled_id = None;
    let mut key = None;
    let mut headers = Headers::new();
    if let Some(map) = map {
        for (name, values) in map.iter() {
            let name: &str = name.as_ref();
            let last = values.last().map(|v| v.as_str());
            match name {
                HEADER_ID => {
                    id = last.and_then(|v| {
                        let uuid = v.split_once(':').map_or(v, |(uuid, _)| uuid);
                        Uuid::parse_str(uuid).ok()
                    });
                }
                msg_core::headers::MSG_KEY => key = last.map(str::to_owned),
                // A message fired by a schedule carries its id here.
                msg_core::headers::MSG_ID => {
                    scheduled_id = last.and_then(|v| Uuid::parse_str(v).ok())
                }
                // The server's marks on a fired schedule.
                "Nats-Scheduler" | "Nats-Schedule-Next" => {}
                _ => {
                    if let Some(value) = last {
                        headers.insert(name, value);
                    }
                }
            }
        }
    }
    let id = id.or(scheduled_id).unwrap_or_else(fallback_id);
    let mut message = Message::with_id(id, payload.clone());
    if let Some(key) = key {
        message = message.with_key(key);
    }
    *message.headers_mut() = headers;
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_are_valid_and_distinct() {
        let a = consumer_name("billing.eu", &["orders.created".into()]);
        assert!(a.starts_with("billing_eu-"));
        assert!(!a.contains(['.', '*', '>', ' ']));
        assert_eq!(a, consumer_name("billing.eu", &["orders.created".into()]));
        assert_ne!(a, consumer_name("billing_eu", &["orders.created".into()]));
        assert_ne!(a, consumer_name("billing.eu", &["orders.paid".into()]));
        assert_eq!(
            consumer_name("g", &["a".into(), "b".into()]),
            consumer_name("g", &["b".into(), "a".into()])
        );
    }

    #[test]
    fn decode_reads_id_key_and_headers() {
        let sent = Message::new("p").with_key("k").with_header("x-a", "1");
        let headers = crate::publisher::nats_headers("t.x", &sent).unwrap();
        let nats = async_nats::Message {
            subject: "t.x".into(),
            reply: None,
            payload: sent.payload().clone(),
            headers: Some(headers),
            status: None,
            description: None,
            length: 0,
        };
        let got = decode(&nats, || unreachable!("the id is in the headers"));
        assert_eq!(got, sent);
        let foreign = async_nats::Message {
            headers: None,
            ..nats
        };
        let fallback = Uuid::from_u64_pair(1, 2);
        let got = decode(&foreign, || fallback);
        assert_eq!(
            (got.id(), got.key(), got.headers().len()),
            (fallback, None, 0)
        );
    }
}
