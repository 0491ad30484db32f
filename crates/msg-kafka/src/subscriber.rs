//! Consuming: one rdkafka consumer per subscription, in a consumer group.
//!
//! A task per subscription polls the consumer, hands deliveries to the
//! stream within the prefetch, and commits offsets. Offsets are tracked per
//! partition: the committed offset is the lowest one still unsettled (or
//! one past the highest delivered when all are settled), so acking out of
//! order never skips a message that is still being handled.
//!
//! When the prefetch stays used up for a second the task pauses its
//! partitions but keeps polling, so that the group sees a live member
//! however long handlers take.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use msg_core::raw::reply::new_reply_topic;
use msg_core::raw::topic::{is_pattern, validate_topic};
use msg_core::raw::{Prefetch, govern, stable_id};
use msg_core::{
    Capabilities, Delivery, DeliveryStream, Distribution, Error, Headers, Message, Metadata,
    Received, ReplyInbox, Result, StartPosition, Subscriber, Subscription, Uuid, headers,
};
use rdkafka::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::sync::{Notify, mpsc, watch};

use crate::ack::{Fetched, KafkaAcker};
use crate::publisher::{HEADER_KEY_HEX, to_hex};
use crate::{KafkaBroker, Shared, error};

/// How long closing a subscription waits for its final commit and for
/// leaving the group.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// What is known of one assigned partition.
#[derive(Debug)]
struct PartitionState {
    /// Tells this assignment from an earlier one of the same partition.
    generation: u64,
    /// Offsets handed out and not yet settled.
    pending: BTreeSet<i64>,
    /// One past the highest offset handed out.
    next: Option<i64>,
    /// The last offset committed by this consumer.
    committed: Option<i64>,
}

impl PartitionState {
    /// Where the group resumes: the lowest unsettled offset, or one past
    /// the highest delivered.
    fn commit_point(&self) -> Option<i64> {
        self.pending.first().copied().or(self.next)
    }
}

/// The partitions assigned to one consumer and their unsettled offsets,
/// shared by the consume task, the rebalance callback and the ackers.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    inner: Mutex<TrackerInner>,
}

#[derive(Debug, Default)]
struct TrackerInner {
    generations: u64,
    partitions: HashMap<String, HashMap<i32, PartitionState>>,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, TrackerInner> {
        self.inner.lock().expect("offset tracker lock")
    }

    fn assign(&self, tpl: &TopicPartitionList) {
        let mut inner = self.lock();
        for elem in tpl.elements() {
            inner.generations += 1;
            let state = PartitionState {
                generation: inner.generations,
                pending: BTreeSet::new(),
                next: None,
                committed: None,
            };
            inner
                .partitions
                .entry(elem.topic().to_owned())
                .or_default()
                .insert(elem.partition(), state);
        }
    }

    /// Forgets the partitions (all when `tpl` is `None`) and returns where
    /// the group should resume them.
    fn revoke(&self, tpl: Option<&TopicPartitionList>) -> TopicPartitionList {
        let mut inner = self.lock();
        let mut out = TopicPartitionList::new();
        let mut take = |topic: &str, partition: i32, state: PartitionState| {
            if let Some(offset) = state.commit_point()
                && state.committed != Some(offset)
            {
                let _ = out.add_partition_offset(topic, partition, Offset::Offset(offset));
            }
        };
        match tpl {
            Some(tpl) => {
                for elem in tpl.elements() {
                    let removed = inner
                        .partitions
                        .get_mut(elem.topic())
                        .and_then(|p| p.remove(&elem.partition()));
                    if let Some(state) = removed {
                        take(elem.topic(), elem.partition(), state);
                    }
                }
            }
            None => {
                for (topic, partitions) in inner.partitions.drain() {
                    for (partition, state) in partitions {
                        take(&topic, partition, state);
                    }
                }
            }
        }
        out
    }

    /// Records a handed-out offset; `None` when the partition is not
    /// assigned (any more).
    fn delivered(&self, topic: &str, partition: i32, offset: i64) -> Option<u64> {
        let mut inner = self.lock();
        let state = inner.partitions.get_mut(topic)?.get_mut(&partition)?;
        state.pending.insert(offset);
        state.next = Some(state.next.map_or(offset + 1, |n| n.max(offset + 1)));
        Some(state.generation)
    }

    /// The offset is done with: it no longer holds the commit point back.
    pub(crate) fn settled(&self, topic: &str, partition: i32, offset: i64, generation: u64) {
        let mut inner = self.lock();
        if let Some(state) = inner
            .partitions
            .get_mut(topic)
            .and_then(|p| p.get_mut(&partition))
            && state.generation == generation
        {
            state.pending.remove(&offset);
        }
    }

    /// Whether the partition is still assigned as it was.
    fn live(&self, topic: &str, partition: i32, generation: u64) -> bool {
        self.lock()
            .partitions
            .get(topic)
            .and_then(|p| p.get(&partition))
            .is_some_and(|s| s.generation == generation)
    }

    /// Commit points that moved since the last commit.
    fn due(&self) -> TopicPartitionList {
        let mut inner = self.lock();
        let mut out = TopicPartitionList::new();
        for (topic, partitions) in &mut inner.partitions {
            for (partition, state) in partitions {
                if let Some(offset) = state.commit_point()
                    && state.committed != Some(offset)
                {
                    state.committed = Some(offset);
                    let _ = out.add_partition_offset(topic, *partition, Offset::Offset(offset));
                }
            }
        }
        out
    }
}

/// The consumer's callbacks: rebalances commit what is settled before
/// partitions go, and position new partitions.
pub(crate) struct Context {
    tracker: Arc<Tracker>,
    /// Start new partitions at the end (no committed offset yet).
    latest: bool,
    /// The consume task paused fetching (its prefetch is full).
    paused: AtomicBool,
    /// The first assignment arrived.
    assigned: AtomicBool,
    assigned_notify: Notify,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if self.latest {
                    self.position_at_end(consumer, tpl);
                }
                self.tracker.assign(tpl);
                let assigned = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if self.paused.load(AtomicOrdering::Acquire) {
                    let _ = consumer.pause(tpl);
                }
                self.assigned.store(true, AtomicOrdering::Release);
                self.assigned_notify.notify_waiters();
                assigned
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let resume_at = self.tracker.revoke(Some(tpl));
                if resume_at.count() > 0
                    && !consumer.assignment_lost()
                    && let Err(e) = consumer.commit(&resume_at, CommitMode::Sync)
                {
                    tracing::warn!(error = %e, "commit on revoke failed; the next owner may redeliver");
                }
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::warn!(error = ?other, "rebalance failed; dropping the assignment");
                self.tracker.revoke(None);
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "applying a rebalance failed");
        }
    }
}

impl Context {
    /// Partitions the group has no offset for start at their current end,
    /// looked up now: a message published after `subscribe` returned is
    /// never skipped.
    fn position_at_end(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let timeout = Duration::from_secs(10);
        let committed = consumer
            .committed_offsets(tpl.clone(), timeout)
            .unwrap_or_else(|_| tpl.clone());
        for elem in committed.elements() {
            if matches!(elem.offset(), Offset::Offset(_)) {
                continue;
            }
            match consumer.fetch_watermarks(elem.topic(), elem.partition(), timeout) {
                Ok((_, high)) => {
                    let _ = tpl.set_partition_offset(
                        elem.topic(),
                        elem.partition(),
                        Offset::Offset(high),
                    );
                }
                Err(e) => tracing::warn!(
                    topic = elem.topic(),
                    partition = elem.partition(),
                    error = %e,
                    "looking up the end of a partition failed; starting where librdkafka resolves it"
                ),
            }
        }
    }
}

type KafkaConsumer = StreamConsumer<Context>;

/// The librdkafka subscription for a topic or pattern: patterns become
/// regular expressions (`*` one segment, `>` one or more).
fn kafka_topic(pattern: &str) -> String {
    if !is_pattern(pattern) {
        return pattern.to_owned();
    }
    let segment = "[A-Za-z0-9_-]+";
    let parts: Vec<String> = pattern
        .split('.')
        .map(|s| match s {
            "*" => segment.to_owned(),
            ">" => format!("{segment}(\\.{segment})*"),
            literal => literal.replace('-', "\\-"),
        })
        .collect();
    format!("^{}$", parts.join("\\."))
}

/// The message in a record (layout in the publisher module): one
/// consumed, or one built by hand (`OwnedMessage`, for the fuzz target).
pub(crate) fn decode(record: &impl rdkafka::Message) -> Message {
    let mut id = None;
    let mut headers = Headers::new();
    if let Some(record_headers) = record.headers() {
        for header in record_headers.iter() {
            let value = header
                .value
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            if header.key == headers::MSG_ID {
                id = Uuid::parse_str(&value).ok();
            } else {
                headers.insert(header.key, value);
            }
        }
    }
    let id = id.unwrap_or_else(|| {
        // The same record always gets the same id.
        stable_id(format!(
            "kafka/{}/{}/{}",
            record.topic(),
            record.partition(),
            record.offset()
        ))
    });
    let payload = Bytes::copy_from_slice(record.payload().unwrap_or_default());
    let mut message = Message::with_id(id, payload);
    *message.headers_mut() = headers;
    match record.key().map(std::str::from_utf8) {
        Some(Ok(key)) => message = message.with_key(key),
        Some(Err(_)) => {
            let raw = record.key().unwrap_or_default();
            message.headers_mut().insert(HEADER_KEY_HEX, to_hex(raw));
        }
        None => {}
    }
    message
}

/// A fresh record, tracked; `None` if its partition was revoked meanwhile.
fn fetched(
    tracker: &Tracker,
    group: &Option<Arc<str>>,
    record: &BorrowedMessage<'_>,
) -> Option<Fetched> {
    let (topic, partition, offset) = (record.topic(), record.partition(), record.offset());
    let generation = tracker.delivered(topic, partition, offset)?;
    let mut metadata = Metadata::new(topic)
        .with_partition(partition.unsigned_abs())
        .with_offset(offset.unsigned_abs())
        .with_group(group.clone());
    if let Some(millis) = record.timestamp().to_millis() {
        metadata =
            metadata.with_timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(millis as u64));
    }
    Some(Fetched {
        received: Received {
            message: decode(record),
            metadata,
        },
        partition,
        offset,
        generation,
    })
}

/// What woke the consume task.
enum Event {
    Stop,
    Again(Fetched),
    Commit,
    Fetched(Option<Fetched>),
    Error(KafkaError),
    Freed,
    /// The prefetch stayed full for [`PAUSE_AFTER`].
    Full,
}

/// How long the prefetch may stay full before the partitions are paused
/// (and polled, so that the group sees a live member).
const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// What a subscription's consume task and the ackers of its deliveries
/// share: one reference count per delivery rather than four.
pub(crate) struct Member {
    pub(crate) shared: Arc<Shared>,
    pub(crate) tracker: Arc<Tracker>,
    pub(crate) prefetch: Prefetch,
    /// Nacked and deferred deliveries, back to the consume task.
    pub(crate) redeliver: mpsc::UnboundedSender<Fetched>,
}

/// What a consume task needs besides its consumer.
pub(crate) struct Consume {
    member: Arc<Member>,
    consumer: Arc<KafkaConsumer>,
    group: Option<Arc<str>>,
    tx: mpsc::Sender<Result<Delivery>>,
    redeliver_rx: mpsc::UnboundedReceiver<Fetched>,
    closing: watch::Receiver<bool>,
    /// Fetched while the prefetch was full (before the pause took hold).
    overflow: VecDeque<Fetched>,
}

impl Consume {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(self.member.shared.config.commit_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let prefetch = &self.member.prefetch;
            let room = prefetch.room() > 0;
            if room {
                self.set_paused(false);
            }
            if room && let Some(next) = self.overflow.pop_front() {
                self.emit_if_live(next).await;
                continue;
            }
            let freed = prefetch.freed();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if !room && prefetch.room() > 0 {
                continue;
            }
            if !room && !self.consumer.context().paused.load(AtomicOrdering::Acquire) {
                // Full: librdkafka's own queue holds what comes meanwhile.
                // Pause only if it stays full, since a resumed partition
                // waits for a fetch (most of a second on tansu): pausing
                // at once, per settle, slowed a busy subscriber to a
                // crawl (request/reply with a prefetch of 256 answered 300
                // of 600 requests in 20 s).
                let event = tokio::select! {
                    biased;
                    _ = self.closing.wait_for(|closing| *closing) => Event::Stop,
                    () = self.tx.closed() => Event::Stop,
                    () = &mut freed => Event::Freed,
                    () = tokio::time::sleep(PAUSE_AFTER) => Event::Full,
                };
                match event {
                    Event::Stop => break,
                    Event::Full => self.set_paused(true),
                    _ => {}
                }
                continue;
            }
            let event = tokio::select! {
                biased;
                _ = self.closing.wait_for(|closing| *closing) => Event::Stop,
                () = self.tx.closed() => Event::Stop,
                Some(again) = self.redeliver_rx.recv(), if room => Event::Again(again),
                _ = tick.tick() => Event::Commit,
                record = self.consumer.recv() => match record {
                    Ok(record) => Event::Fetched(fetched(&self.member.tracker, &self.group, &record)),
                    Err(e) => Event::Error(e),
                },
                () = &mut freed, if !room => Event::Freed,
            };
            match event {
                Event::Stop => break,
                Event::Again(again) => self.emit_if_live(again).await,
                Event::Commit => self.commit(CommitMode::Async),
                // Just tracked, with no rebalance since (the rebalance
                // callback runs inside `recv`, on this task): live.
                Event::Fetched(Some(fetched)) if self.member.prefetch.room() > 0 => {
                    self.emit(fetched).await;
                }
                Event::Fetched(Some(fetched)) => self.overflow.push_back(fetched),
                Event::Fetched(None) | Event::Freed | Event::Full => {}
                Event::Error(e) => self.report(e).await,
            }
        }
        self.finish().await;
    }

    /// Pauses or resumes the assignment when the prefetch fills or frees.
    fn set_paused(&self, pause: bool) {
        let context = self.consumer.context();
        if context.paused.swap(pause, AtomicOrdering::AcqRel) == pause {
            return;
        }
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let result = if pause {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, pause, "pausing or resuming partitions failed");
        }
    }

    /// Hands a delivery to the stream, unless its partition moved away
    /// since it was fetched.
    async fn emit_if_live(&self, delivery: Fetched) {
        let metadata = &delivery.received.metadata;
        if self
            .member
            .tracker
            .live(&metadata.topic, delivery.partition, delivery.generation)
        {
            self.emit(delivery).await;
        }
    }

    /// Hands a delivery of a live partition to the stream.
    async fn emit(&self, delivery: Fetched) {
        self.member.prefetch.take(1);
        let acker = KafkaAcker {
            member: self.member.clone(),
            fetched: delivery,
        };
        let delivery = acker.into_delivery();
        // Fails only when the stream is gone: dropping the delivery then
        // nacks it, and the task ends at the next turn.
        let _ = self.tx.send(Ok(delivery)).await;
    }

    /// Consumer errors: librdkafka retries transient ones itself; those that
    /// will not go away are passed on.
    async fn report(&self, e: KafkaError) {
        let e = error::kafka(e);
        if e.is_retryable() {
            tracing::debug!(error = %e.chain(), "transient consumer error");
            tokio::time::sleep(Duration::from_millis(100)).await;
        } else {
            tracing::warn!(error = %e.chain(), "consumer error");
            let _ = self.tx.send(Err(e)).await;
        }
    }

    fn commit(&self, mode: CommitMode) {
        let due = self.member.tracker.due();
        if due.count() > 0
            && let Err(e) = self.consumer.commit(&due, mode)
        {
            tracing::warn!(error = %e, "committing offsets failed; retrying later");
        }
    }

    /// Commits what is settled and leaves the group, on a thread of its
    /// own: both wait for the broker, without a bound when the group's
    /// coordinator is in trouble, and a runtime that shuts down waits for
    /// its blocking pool. Waits at most [`CLOSE_WAIT`]; past it, the close
    /// goes on in the background (what it could not commit is redelivered).
    async fn finish(self) {
        let Consume {
            consumer, member, ..
        } = self;
        let tracker = member.tracker.clone();
        let (left_tx, left_rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("msg-kafka-close".into())
            .spawn(move || {
                let resume_at = tracker.revoke(None);
                if resume_at.count() > 0
                    && let Err(e) = consumer.commit(&resume_at, CommitMode::Sync)
                {
                    tracing::warn!(error = %e, "final commit failed; the group may redeliver");
                }
                consumer.unsubscribe();
                drop(consumer);
                let _ = left_tx.send(());
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no thread to close a consumer on");
            return;
        }
        if tokio::time::timeout(CLOSE_WAIT, left_rx).await.is_err() {
            tracing::warn!(
                "closing a consumer took longer than {CLOSE_WAIT:?}; it goes on in the background"
            );
        }
    }
}

impl KafkaBroker {
    async fn start(&self, subscription: Subscription) -> Result<DeliveryStream> {
        let shared = &self.shared;
        if shared.subscriber_closed.load(AtomicOrdering::Acquire) {
            return Err(Error::Closed);
        }
        subscription.validate()?;
        let patterns = subscription.topics();
        let plain: Vec<&str> = patterns
            .iter()
            .map(String::as_str)
            .filter(|t| !is_pattern(t))
            .collect();
        for topic in &plain {
            validate_topic(topic)?;
        }
        shared.ensure_topics(&plain).await?;
        let (group, group_name) = match subscription.distribution() {
            Distribution::Group(name) => (name.clone(), Some(Arc::from(name.as_str()))),
            Distribution::Broadcast => (format!("msg-broadcast-{}", Uuid::new_v4().simple()), None),
        };
        let earliest = subscription.start_position() == StartPosition::Earliest;
        let tracker = Arc::new(Tracker::default());
        let context = Context {
            tracker: tracker.clone(),
            latest: !earliest,
            paused: AtomicBool::new(false),
            assigned: AtomicBool::new(false),
            assigned_notify: Notify::new(),
        };
        let mut consumer_config = shared.config.consumer(&group, earliest);
        const REFRESH: &str = "topic.metadata.refresh.interval.ms";
        if patterns.len() > plain.len() && !shared.config.properties.contains_key(REFRESH) {
            // librdkafka matches patterns against its metadata, refreshed
            // every 5 minutes by default: new matching topics join sooner.
            consumer_config.set(REFRESH, "10000");
        }
        let consumer: KafkaConsumer = consumer_config
            .create_with_context(context)
            .map_err(error::kafka)?;
        let topics: Vec<String> = patterns.iter().map(|p| kafka_topic(p)).collect();
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topic_refs).map_err(error::kafka)?;
        let consumer = Arc::new(consumer);

        let (tx, rx) = mpsc::channel(subscription.prefetch_count().min(4096));
        let (redeliver, redeliver_rx) = mpsc::unbounded_channel();
        let task = Consume {
            member: Arc::new(Member {
                shared: shared.clone(),
                tracker,
                prefetch: Prefetch::new(subscription.prefetch_count()),
                redeliver,
            }),
            consumer: consumer.clone(),
            group: group_name,
            tx,
            redeliver_rx,
            closing: shared.closing.subscribe(),
            overflow: VecDeque::new(),
        };
        let handle = tokio::spawn(task.run());
        {
            let mut tasks = shared.tasks.lock().expect("tasks lock");
            tasks.retain(|t| !t.is_finished());
            tasks.push(handle);
        }

        // A pattern that matches no topic yet is never assigned anything:
        // only plain subscriptions wait for the group.
        if patterns.len() == plain.len() {
            let context = consumer.context();
            let assigned = async {
                loop {
                    let notified = context.assigned_notify.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if context.assigned.load(AtomicOrdering::Acquire) {
                        return;
                    }
                    notified.await;
                }
            };
            let timeout = shared.config.subscribe_timeout;
            if tokio::time::timeout(timeout, assigned).await.is_err() {
                return Err(Error::timeout(timeout));
            }
        }
        drop(consumer);
        let mut rx = rx;
        Ok(Box::pin(futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
        })))
    }
}

impl Subscriber for KafkaBroker {
    async fn subscribe(&self, subscription: Subscription) -> Result<DeliveryStream> {
        let policy = self
            .shared
            .config
            .delivery()
            .for_subscription(&subscription);
        Ok(govern(self.start(subscription).await?, policy))
    }

    /// Ends every stream; each consumer commits what was settled and leaves
    /// its group before this returns.
    async fn close(&self) -> Result<()> {
        self.shared
            .subscriber_closed
            .store(true, AtomicOrdering::Release);
        self.shared.closing.send_replace(true);
        let tasks = std::mem::take(&mut *self.shared.tasks.lock().expect("tasks lock"));
        for task in tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "a consume task ended abnormally");
            }
        }
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        KafkaBroker::capabilities(self)
    }

    /// The cluster's topics, its internal ones (`__…`) and reply topics
    /// left out.
    async fn topics(&self) -> Result<Vec<String>> {
        let producer = self.shared.producer.clone();
        let timeout = self.shared.config.connect_timeout;
        let metadata = tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer;
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map_err(error::kafka)
        })
        .await
        .map_err(|e| Error::Connection(Box::new(e)))??;
        let mut topics: Vec<String> = metadata
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .filter(|t| !t.starts_with("__") && !msg_core::raw::reply::is_reply_topic(t))
            .collect();
        topics.sort();
        Ok(topics)
    }

    /// A topic of its own with one partition and an hour's retention,
    /// read by a group of its own from the start. Making it costs a topic
    /// creation and a group join (tens of milliseconds to seconds, once
    /// per requester). It is not deleted when the requester closes:
    /// deleting a topic that clients still have in their metadata crashed
    /// librdkafka 2.12 on tansu (a segfault in its metadata cache, in half
    /// of the test runs), so every requester leaves one empty topic
    /// behind, which operators delete with the cluster's tools.
    async fn reply_inbox(&self) -> Result<ReplyInbox> {
        let address = new_reply_topic();
        let subscription = Subscription::new(address.clone()).start(StartPosition::Earliest);
        let replies = self.subscribe(subscription).await?;
        Ok(ReplyInbox::new(address, replies))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tpl(entries: &[(&str, i32)]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in entries {
            tpl.add_partition(t, *p);
        }
        tpl
    }

    fn offsets(tpl: &TopicPartitionList) -> Vec<(String, i32, Offset)> {
        let mut out: Vec<_> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition(), e.offset()))
            .collect();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    #[test]
    fn only_the_settled_prefix_is_committed() {
        let t = Tracker::default();
        t.assign(&tpl(&[("a", 0), ("a", 1)]));
        let g = t.delivered("a", 0, 10).unwrap();
        for offset in 11..=13 {
            t.delivered("a", 0, offset);
        }
        // 11 and 13 acked out of order: 10 still holds the commit point.
        t.settled("a", 0, 11, g);
        t.settled("a", 0, 13, g);
        assert_eq!(offsets(&t.due()), [("a".into(), 0, Offset::Offset(10))]);
        assert_eq!(t.due().count(), 0, "nothing moved since");
        t.settled("a", 0, 10, g);
        assert_eq!(offsets(&t.due()), [("a".into(), 0, Offset::Offset(12))]);
        t.settled("a", 0, 12, g);
        assert_eq!(offsets(&t.due()), [("a".into(), 0, Offset::Offset(14))]);
    }

    #[test]
    fn revoked_partitions_ignore_late_settles() {
        let t = Tracker::default();
        t.assign(&tpl(&[("a", 0)]));
        let g = t.delivered("a", 0, 5).unwrap();
        t.delivered("a", 0, 6);
        t.settled("a", 0, 5, g);
        let resume = t.revoke(Some(&tpl(&[("a", 0)])));
        assert_eq!(offsets(&resume), [("a".into(), 0, Offset::Offset(6))]);
        assert!(!t.live("a", 0, g));
        assert_eq!(t.delivered("a", 0, 7), None);
        // Assigned again: a new generation; the old settle changes nothing.
        t.assign(&tpl(&[("a", 0)]));
        let g2 = t.delivered("a", 0, 6).unwrap();
        assert_ne!(g, g2);
        t.settled("a", 0, 6, g);
        assert_eq!(offsets(&t.due()), [("a".into(), 0, Offset::Offset(6))]);
    }

    #[test]
    fn patterns_become_regular_expressions() {
        assert_eq!(kafka_topic("orders.created"), "orders.created");
        assert_eq!(kafka_topic("orders.*"), "^orders\\.[A-Za-z0-9_-]+$");
        assert_eq!(
            kafka_topic("a-b.>"),
            "^a\\-b\\.[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*$"
        );
    }
}
