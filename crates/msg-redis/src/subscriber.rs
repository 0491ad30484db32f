//! Consuming: consumer groups read by a task with its own connection.
//!
//! Every subscription reads through a consumer group: the named group for
//! `group(name)`, a group of its own (destroyed when the stream is dropped)
//! for a broadcast subscriber. A blocking XREADGROUP runs on a dedicated
//! connection, since fred multiplexes commands on one connection and a
//! blocked read would stall publishes.
//!
//! Besides new entries, the reader claims (XCLAIM) entries nacked by its
//! own handlers, deferred entries that are due (from a sorted set per
//! stream and group), and entries left idle longer than `claim_idle` by
//! consumers that died (XAUTOCLAIM). The delivery count of the pending list
//! is the attempt number.

use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::{Duration, SystemTime};

use fred::prelude::{Client, ClientLike, KeysInterface, SortedSetsInterface, StreamsInterface};
use fred::types::Value;
use futures::StreamExt;
use msg_core::raw::reply::new_reply_topic;
use msg_core::raw::{Prefetch, govern};
use msg_core::{
    Capabilities, Delivery, DeliveryStream, Error, Metadata, ReplyInbox, Result, StartPosition,
    Subscriber, Subscription, Uuid,
};
use tokio::sync::mpsc;

use crate::ack::{PendingAck, RedisAcker, spawn_acks};
use crate::entry::{Entry, decode, parse_entries, parse_read};
use crate::{RedisBroker, Shared, error};

/// The sorted set of deferred entries of one stream and group. `:` cannot
/// occur in a topic name, so it never collides with a stream.
pub(crate) fn deferred_key(stream: &str, group: &str) -> String {
    format!("{stream}:msg-deferred:{group}")
}

impl Subscriber for RedisBroker {
    async fn subscribe(&self, subscription: Subscription) -> Result<DeliveryStream> {
        subscription.validate()?;
        if self.shared.subscriber_closed.load(AtomicOrdering::Acquire) {
            return Err(Error::Closed);
        }
        if subscription
            .topics()
            .iter()
            .any(|t| msg_core::raw::topic::is_pattern(t))
        {
            // Redis streams are named one by one.
            return Err(Error::Unsupported {
                operation: "a topic pattern",
                transport: "redis",
            });
        }
        let (group, broadcast) = match subscription.group_name() {
            Some(g) => (g.to_owned(), false),
            None => (format!("msg-broadcast-{}", Uuid::new_v4().simple()), true),
        };
        let start = match subscription.start_position() {
            StartPosition::Earliest => "0",
            StartPosition::Latest => "$",
        };
        let keys = subscription.topics().to_vec();
        create_groups(&self.shared, &keys, &group, start).await?;
        let blocking = self.shared.client.clone_new();
        blocking.init().await.map_err(|e| self.shared.fail(e))?;
        let prefetch = subscription.prefetch_count();
        let (tx, rx) = mpsc::channel(prefetch);
        let (retry_tx, retry_rx) = mpsc::unbounded_channel();
        let group_arc: Arc<str> = Arc::from(group.as_str());
        let reader = Reader {
            acks: spawn_acks(self.shared.clone(), group_arc.clone()),
            group_arc,
            shared: self.shared.clone(),
            blocking,
            keys,
            consumer: format!("msg-{}", Uuid::new_v4().simple()),
            broadcast,
            group,
            member: Arc::new(Prefetch::new(prefetch)),
            retry_tx,
            retry_rx,
            tx,
        };
        tokio::spawn(reader.run());
        // Deliveries arrive a read at a time: one channel hand-over (and one
        // wake-up of the consumer) per read, not per entry.
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            let batch = rx.recv().await?;
            Some((futures::stream::iter(batch), rx))
        })
        .flatten();
        Ok(govern(
            stream.boxed(),
            self.shared
                .config
                .delivery()
                .for_subscription(&subscription),
        ))
    }

    async fn close(&self) -> Result<()> {
        self.shared
            .subscriber_closed
            .store(true, AtomicOrdering::Release);
        self.shared.closing.notify_waiters();
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities()
    }

    /// `redis_version` of `INFO server`.
    async fn server_version(&self) -> Result<Option<String>> {
        let info: String = self
            .shared
            .client
            .custom(fred::cmd!("INFO"), vec!["server"])
            .await
            .map_err(|e| self.shared.fail(e))?;
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(|v| format!("Redis {}", v.trim())))
    }

    /// The streams (`SCAN ... TYPE stream`), reply streams left out.
    async fn topics(&self) -> Result<Vec<String>> {
        let keys: Vec<fred::types::Key> = self
            .shared
            .client
            .scan_buffered("*", Some(1_000), Some(fred::types::scan::ScanType::Stream))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| self.shared.fail(e))?;
        let mut topics: Vec<String> = keys
            .iter()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .filter(|k| !msg_core::raw::reply::is_reply_topic(k))
            .collect();
        topics.sort();
        Ok(topics)
    }

    /// A stream of its own, deleted when the requester closes; replies to
    /// it after that are dropped (`XADD NOMKSTREAM`), so a late reply does
    /// not bring it back.
    async fn reply_inbox(&self) -> Result<ReplyInbox> {
        let address = new_reply_topic();
        let subscription = Subscription::new(address.clone()).start(StartPosition::Earliest);
        let replies = self.subscribe(subscription).await?;
        let (shared, key) = (self.shared.clone(), address.clone());
        Ok(ReplyInbox::new(address, replies).with_cleanup(async move {
            let _: i64 = shared.client.del(key).await.map_err(|e| shared.fail(e))?;
            Ok(())
        }))
    }
}

pub(crate) struct Reader {
    shared: Arc<Shared>,
    blocking: Client,
    keys: Vec<String>,
    group: String,
    /// The group once more, shared by every delivery.
    group_arc: Arc<str>,
    consumer: String,
    broadcast: bool,
    member: Arc<Prefetch>,
    retry_tx: mpsc::UnboundedSender<(String, String)>,
    retry_rx: mpsc::UnboundedReceiver<(String, String)>,
    tx: mpsc::Sender<Vec<Result<Delivery>>>,
    acks: mpsc::UnboundedSender<PendingAck>,
}

impl Reader {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        let mut next_poll = tokio::time::Instant::now();
        loop {
            if self.shared.subscriber_closed.load(AtomicOrdering::Acquire) || self.tx.is_closed() {
                break;
            }
            match self.step(&mut next_poll).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) if error::is_no_group(&e) && self.keeps_its_group() => {
                    // The group is gone: a Redis that keeps nothing was
                    // restarted, or someone destroyed the group or the
                    // stream. Made again from the stream's start: what the
                    // stream still holds comes again (at least once), and
                    // nothing published since is missed.
                    tracing::warn!(group = %self.group, "redis consumer group gone; creating it again");
                    if let Err(e) = create_groups(&self.shared, &self.keys, &self.group, "0").await
                    {
                        let _ = self.tx.try_send(vec![Err(e)]);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
                Err(e) => {
                    // Report and go on: an outage never ends the stream.
                    tracing::warn!(error = %e.chain(), "redis read failed; retrying");
                    let _ = self.tx.try_send(vec![Err(e)]);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        if self.broadcast {
            for key in &self.keys {
                let _: std::result::Result<Value, _> = self
                    .shared
                    .client
                    .xgroup_destroy(key.as_str(), self.group.as_str())
                    .await;
                let _: std::result::Result<Value, _> =
                    self.shared.client.del(deferred_key(key, &self.group)).await;
            }
        }
        let _ = self.blocking.quit().await;
    }

    /// Whether a lost group is made again: not for a reply inbox, whose
    /// stream is deleted on purpose when its requester closes.
    fn keeps_its_group(&self) -> bool {
        !self
            .keys
            .iter()
            .any(|key| msg_core::raw::reply::is_reply_topic(key))
    }

    /// One round: wait for room, claim what is due, read what is new.
    async fn step(&mut self, next_poll: &mut tokio::time::Instant) -> Result<()> {
        let room = self.member.room() as u64;
        if room == 0 {
            let freed = self.member.freed();
            let closing = self.shared.closing.notified();
            tokio::select! {
                () = freed => {}
                () = closing => {}
                () = self.tx.closed() => {}
                () = tokio::time::sleep(self.shared.config.poll_interval) => {}
            }
            return Ok(());
        }
        // Nacked by our own handlers: deliver again at once.
        let mut retries = Vec::new();
        while let Ok(retry) = self.retry_rx.try_recv() {
            retries.push(retry);
        }
        for (key, id) in retries {
            self.claim(&key, &id, 0).await?;
        }
        if tokio::time::Instant::now() >= *next_poll {
            *next_poll = tokio::time::Instant::now() + self.shared.config.poll_interval;
            self.claim_due_deferred(room).await?;
            self.claim_idle(room).await?;
        }
        // New entries; the block is short so that retries and due entries
        // are not held up behind it.
        let block = self
            .shared
            .config
            .block
            .min(self.shared.config.poll_interval);
        let ids: Vec<&str> = self.keys.iter().map(|_| ">").collect();
        let reply: Value = self
            .blocking
            .xreadgroup(
                self.group.as_str(),
                self.consumer.as_str(),
                Some(room),
                Some(block.as_millis() as u64),
                false,
                self.keys.clone(),
                ids,
            )
            .await
            .map_err(|e| self.shared.fail(e))?;
        let mut batch = Vec::new();
        for (key, entries) in parse_read(reply) {
            for entry in entries {
                batch.push(Ok(self.delivery(&key, entry, 1)));
            }
        }
        self.hand_out(batch).await;
        Ok(())
    }

    /// XCLAIMs one entry to this consumer and delivers it with the delivery
    /// count of the pending list as its attempt.
    async fn claim(&self, key: &str, id: &str, min_idle_ms: u64) -> Result<()> {
        let reply: Value = self
            .shared
            .client
            .xclaim(
                key,
                self.group.as_str(),
                self.consumer.as_str(),
                min_idle_ms,
                id,
                None,
                None,
                None,
                false,
                false,
            )
            .await
            .map_err(|e| self.shared.fail(e))?;
        for entry in parse_entries(reply) {
            let attempt = self.delivery_count(key, &entry.id).await?;
            let delivery = self.delivery(key, entry, attempt);
            self.hand_out(vec![Ok(delivery)]).await;
        }
        Ok(())
    }

    async fn delivery_count(&self, key: &str, id: &str) -> Result<u32> {
        let reply: Value = self
            .shared
            .client
            .xpending(key, self.group.as_str(), (id, id, 1u64))
            .await
            .map_err(|e| self.shared.fail(e))?;
        // [[id, consumer, idle ms, delivery count]]
        let count = match reply {
            Value::Array(rows) => rows.into_iter().next().and_then(|row| match row {
                Value::Array(cols) => cols.get(3).and_then(Value::as_u64),
                _ => None,
            }),
            _ => None,
        };
        Ok(count.unwrap_or(1).max(1) as u32)
    }

    async fn claim_due_deferred(&self, room: u64) -> Result<()> {
        let now = now_ms();
        for key in &self.keys {
            let zkey = deferred_key(key, &self.group);
            let due: Vec<String> = self
                .shared
                .client
                .zrangebyscore(zkey.as_str(), "-inf", now, false, Some((0, room as i64)))
                .await
                .map_err(|e| self.shared.fail(e))?;
            for id in due {
                // Several consumers may see it due: the one that removes it claims it.
                let removed: i64 = self
                    .shared
                    .client
                    .zrem(zkey.as_str(), id.as_str())
                    .await
                    .map_err(|e| self.shared.fail(e))?;
                if removed == 1 {
                    self.claim(key, &id, 0).await?;
                }
            }
        }
        Ok(())
    }

    async fn claim_idle(&self, room: u64) -> Result<()> {
        let idle = self.shared.config.claim_idle.as_millis() as u64;
        for key in &self.keys {
            let reply: Value = self
                .shared
                .client
                .xautoclaim(
                    key.as_str(),
                    self.group.as_str(),
                    self.consumer.as_str(),
                    idle,
                    "0-0",
                    Some(room),
                    false,
                )
                .await
                .map_err(|e| self.shared.fail(e))?;
            // [next start, [entries], [deleted ids]]
            let entries = match reply {
                Value::Array(mut parts) if parts.len() >= 2 => parse_entries(parts.swap_remove(1)),
                _ => Vec::new(),
            };
            let zkey = deferred_key(key, &self.group);
            for entry in entries {
                // A deferred entry idles until due: it is not abandoned.
                let score: Option<f64> = self
                    .shared
                    .client
                    .zscore(zkey.as_str(), entry.id.as_str())
                    .await
                    .map_err(|e| self.shared.fail(e))?;
                if score.is_some() {
                    continue;
                }
                let attempt = self.delivery_count(key, &entry.id).await?;
                let delivery = self.delivery(key, entry, attempt);
                self.hand_out(vec![Ok(delivery)]).await;
            }
        }
        Ok(())
    }

    /// The delivery of one entry, counted against the prefetch.
    fn delivery(&self, key: &str, entry: Entry, attempt: u32) -> Delivery {
        let message = decode(key, &entry);
        let metadata = Metadata::new(key)
            .with_attempt(attempt)
            .with_group((!self.broadcast).then(|| self.group_arc.clone()));
        let metadata = match entry_millis(&entry.id) {
            Some(ms) => metadata.with_timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
            None => metadata,
        };
        let acker = RedisAcker {
            shared: self.shared.clone(),
            key: metadata.topic.clone(),
            group: self.group_arc.clone(),
            id: entry.id,
            received: msg_core::Received {
                message: message.clone(),
                metadata: metadata.clone(),
            },
            member: self.member.clone(),
            retry: self.retry_tx.clone(),
            acks: self.acks.clone(),
        };
        // Counted before it is handed out: its settle releases the slot.
        self.member.take(1);
        Delivery::new(message, metadata, acker)
    }

    async fn hand_out(&self, batch: Vec<Result<Delivery>>) {
        if batch.is_empty() {
            return;
        }
        // Fails only when the stream was dropped: the entries stay pending
        // and are claimed again later.
        let _ = self.tx.send(batch).await;
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn entry_millis(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}

/// Creates `group` on every stream in `keys` where it is missing (and the
/// stream too), reading from `start` (`"0"` or `"$"`).
async fn create_groups(shared: &Shared, keys: &[String], group: &str, start: &str) -> Result<()> {
    for key in keys {
        let created: std::result::Result<Value, _> = shared
            .client
            .xgroup_create(key.as_str(), group, start, true)
            .await;
        match created {
            Ok(_) => {}
            Err(e) if error::is_busy_group(&e) => {}
            Err(e) => return Err(shared.fail(e)),
        }
    }
    Ok(())
}
