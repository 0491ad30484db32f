//! One side of a comparison: msg over a transport, or the raw client it
//! wraps, behind the same three operations.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use bytes::Bytes;
use futures::future::BoxFuture;
use msg::{
    Connection, Message, Publisher, Received, Router, StartPosition, Subscriber, Subscription,
};
use std::sync::Mutex;

use tokio::sync::Notify;

/// What one consumption saw: when the first and last message came, and
/// each message's latency (now minus the send time in its payload).
#[derive(Debug, Default)]
pub(crate) struct Consumed {
    pub(crate) first: Option<Instant>,
    pub(crate) last: Option<Instant>,
    pub(crate) latencies_ns: Vec<u64>,
}

impl Consumed {
    /// Records one message.
    pub(crate) fn record(&mut self, payload: &[u8]) {
        let now = Instant::now();
        self.first.get_or_insert(now);
        self.last = Some(now);
        if let Some(sent) = sent_at(payload) {
            self.latencies_ns.push(now_ns().saturating_sub(sent));
        }
    }
}

/// Nanoseconds since the Unix epoch.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A 256-byte payload that carries its send time in the first 8 bytes.
pub(crate) fn payload() -> Bytes {
    let mut p = vec![0x5au8; 256];
    p[..8].copy_from_slice(&now_ns().to_le_bytes());
    Bytes::from(p)
}

fn sent_at(payload: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(payload.get(..8)?.try_into().ok()?))
}

/// The operations every side offers.
pub(crate) trait Side: Send + Sync {
    /// Publishes one payload and waits until the broker confirmed it.
    fn publish<'a>(&'a self, topic: &'a str, payload: Bytes) -> BoxFuture<'a, Result<()>>;
    /// Publishes payloads as one batch, where the client has batches.
    fn publish_batch<'a>(
        &'a self,
        topic: &'a str,
        payloads: Vec<Bytes>,
    ) -> BoxFuture<'a, Result<()>>;
    /// Makes `group` on `topic` exist, so that what is published from now
    /// on waits for it (an AMQP queue drops nothing once it is bound).
    fn declare<'a>(&'a self, topic: &'a str, group: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Consumes as `group` from the earliest position; returns once the
    /// subscription is live, with a future that completes after `n`
    /// messages were received and acked.
    fn consume<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
        n: usize,
    ) -> BoxFuture<'a, Result<BoxFuture<'static, Result<Consumed>>>>;
}

/// msg over any transport, through the router for consuming.
pub(crate) struct MsgSide {
    pub(crate) conn: Connection,
    /// The subscriptions' prefetch, where the default does not fit.
    pub(crate) prefetch: Option<usize>,
}

impl MsgSide {
    pub(crate) fn new(conn: Connection) -> Self {
        Self {
            conn,
            prefetch: None,
        }
    }
}

impl Side for MsgSide {
    fn publish<'a>(&'a self, topic: &'a str, payload: Bytes) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.conn.publish(topic, Message::new(payload)).await?;
            Ok(())
        })
    }

    fn publish_batch<'a>(
        &'a self,
        topic: &'a str,
        payloads: Vec<Bytes>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let messages = payloads.into_iter().map(Message::new).collect();
            self.conn.publish_batch(topic, messages).await?;
            Ok(())
        })
    }

    fn declare<'a>(&'a self, topic: &'a str, group: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // A broker that replays from the earliest position keeps what
            // is published before the group's first subscriber.
            if Publisher::capabilities(&self.conn).replay {
                return Ok(());
            }
            let subscription = Subscription::new(topic)
                .group(group)
                .start(StartPosition::Earliest);
            // Subscribing declares the group; dropping the stream leaves it.
            drop(self.conn.subscribe(subscription).await?);
            Ok(())
        })
    }

    fn consume<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
        n: usize,
    ) -> BoxFuture<'a, Result<BoxFuture<'static, Result<Consumed>>>> {
        Box::pin(async move {
            let consumed = Arc::new(Mutex::new(Consumed::default()));
            let count = Arc::new(AtomicUsize::new(0));
            let done = Arc::new(Notify::new());
            let handler = {
                let (consumed, count, done) = (consumed.clone(), count.clone(), done.clone());
                move |r: Received| {
                    let (consumed, count, done) = (consumed.clone(), count.clone(), done.clone());
                    async move {
                        consumed.lock().expect("lock").record(r.message.payload());
                        if count.fetch_add(1, Ordering::AcqRel) + 1 == n {
                            done.notify_one();
                        }
                        Ok(())
                    }
                }
            };
            let mut subscription = Subscription::new(topic)
                .group(group)
                .start(StartPosition::Earliest);
            if let Some(prefetch) = self.prefetch {
                subscription = subscription.prefetch(prefetch);
            }
            let router = Router::new(self.conn.clone(), self.conn.clone())
                .handle(subscription, handler)
                .start()
                .await?;
            let finished: BoxFuture<'static, Result<Consumed>> = Box::pin(async move {
                done.notified().await;
                router.shutdown().await;
                let mut consumed = consumed.lock().expect("lock");
                Ok(std::mem::take(&mut *consumed))
            });
            Ok(finished)
        })
    }
}
