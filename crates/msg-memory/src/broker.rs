//! The broker's shared state: topics, queues, retention and statistics.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use msg_core::raw::reply::is_reply_topic;
use msg_core::raw::topic::topic_matches;
use msg_core::{Message, Result};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::{MemoryConfig, WhenFull};
use crate::error;

/// Locks a mutex; a panic elsewhere while holding it leaves the data valid
/// (every critical section here is a few pushes and pops), so go on.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Counters of one topic, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicStats {
    /// Messages published to the topic.
    pub published: u64,
    /// Deliveries handed to subscribers (redeliveries included).
    pub delivered: u64,
    /// Deliveries acked.
    pub acked: u64,
    /// Deliveries nacked (dropping an unsettled delivery counts).
    pub nacked: u64,
    /// Deliveries deferred.
    pub deferred: u64,
    /// Messages dead-lettered from this topic.
    pub dead_lettered: u64,
    /// Queued copies dropped because their ttl passed before delivery.
    pub expired: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) published: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) nacked: AtomicU64,
    pub(crate) deferred: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) expired: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> TopicStats {
        let get = |c: &AtomicU64| c.load(Ordering::Acquire);
        TopicStats {
            published: get(&self.published),
            delivered: get(&self.delivered),
            acked: get(&self.acked),
            nacked: get(&self.nacked),
            deferred: get(&self.deferred),
            dead_lettered: get(&self.dead_lettered),
            expired: get(&self.expired),
        }
    }
}

pub(crate) struct Topic {
    pub(crate) name: Arc<str>,
    pub(crate) counters: Counters,
    next_offset: AtomicU64,
}

/// A retained message.
#[derive(Clone)]
struct Stored {
    seq: u64,
    offset: u64,
    timestamp: SystemTime,
    message: Message,
}

struct TopicState {
    topic: Arc<Topic>,
    queues: Vec<Arc<Queue>>,
    log: VecDeque<Stored>,
}

/// One message waiting in a queue, or handed out.
pub(crate) struct Entry {
    pub(crate) topic: Arc<Topic>,
    pub(crate) offset: u64,
    pub(crate) timestamp: SystemTime,
    pub(crate) attempt: u32,
    /// When the entry expires undelivered (the publish option `ttl`).
    pub(crate) expires: Option<Instant>,
    pub(crate) message: Message,
}

/// A deferred entry, ordered by when it is due, then by arrival.
struct Delayed {
    due: Instant,
    seq: u64,
    entry: Entry,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

#[derive(Default)]
pub(crate) struct QueueState {
    pub(crate) ready: VecDeque<Entry>,
    delayed: BinaryHeap<Reverse<Delayed>>,
    delayed_seq: u64,
}

impl QueueState {
    fn len(&self) -> usize {
        self.ready.len() + self.delayed.len()
    }

    fn push_delayed(&mut self, entry: Entry, due: Instant) {
        self.delayed_seq += 1;
        let seq = self.delayed_seq;
        self.delayed.push(Reverse(Delayed { due, seq, entry }));
    }

    /// Moves due deferred entries to the ready queue; returns when the next
    /// deferred entry is due.
    pub(crate) fn promote_due(&mut self, now: Instant) -> Option<Instant> {
        while let Some(Reverse(d)) = self.delayed.peek() {
            if d.due > now {
                return Some(d.due);
            }
            let Reverse(d) = self.delayed.pop().expect("peeked");
            self.ready.push_back(d.entry);
        }
        None
    }
}

/// A queue: every message of the matching topics, shared by the members of
/// one group, or owned by one broadcast subscriber.
pub(crate) struct Queue {
    pub(crate) filters: Vec<String>,
    pub(crate) group: Option<Arc<str>>,
    pub(crate) state: Mutex<QueueState>,
    /// Wakes members when entries arrive.
    pub(crate) available: Notify,
    /// Wakes waiting publishers when room is made.
    pub(crate) space: Notify,
}

impl Queue {
    fn matches(&self, topic: &str) -> bool {
        self.filters.iter().any(|f| topic_matches(f, topic))
    }

    /// Puts an entry back to be delivered next (nack, or never handed out).
    pub(crate) fn requeue_front(&self, entry: Entry) {
        lock(&self.state).ready.push_front(entry);
        self.available.notify_one();
    }

    /// Puts an entry back, due after `delay`.
    pub(crate) fn requeue_delayed(&self, entry: Entry, due: Instant) {
        lock(&self.state).push_delayed(entry, due);
        // A member may sleep until a later due time: wake it to look again.
        self.available.notify_waiters();
        self.available.notify_one();
    }

    /// Room was made in a queue that may have been full.
    pub(crate) fn made_room(&self, len_before: usize, capacity: usize) {
        if len_before >= capacity {
            self.space.notify_waiters();
        }
    }
}

#[derive(Default)]
struct State {
    topics: HashMap<Arc<str>, TopicState>,
    groups: HashMap<(Arc<str>, Vec<String>), Arc<Queue>>,
    broadcast: Vec<Arc<Queue>>,
    next_seq: u64,
}

/// The broker itself, shared by every handle.
pub(crate) struct Shared {
    pub(crate) config: MemoryConfig,
    state: Mutex<State>,
    /// Notified whenever a counter changes, for the test helpers.
    changed: Notify,
    /// How many `wait_for` calls are waiting: notifying takes a lock, so
    /// the hot path skips it when nobody waits.
    watchers: AtomicUsize,
}

/// When appended messages become deliverable and when they expire.
#[derive(Clone, Copy, Default)]
pub(crate) struct Timing {
    pub(crate) due: Option<Instant>,
    pub(crate) expires: Option<Instant>,
}

/// How a message enters a topic.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// A user's publish: capacity applies.
    Publish,
    /// A dead letter: never waits, never fails, so that settling cannot
    /// block or lose a message.
    Internal,
}

impl Shared {
    pub(crate) fn new(config: MemoryConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            watchers: AtomicUsize::new(0),
        }
    }

    /// Wakes the `wait_for` helpers, if any wait.
    pub(crate) fn counters_changed(&self) {
        if self.watchers.load(Ordering::Acquire) > 0 {
            self.changed.notify_waiters();
        }
    }

    /// Runs `f` as a watcher of counter changes; `f` gets the notifier.
    pub(crate) async fn watching<T>(&self, f: impl AsyncFnOnce(&Notify) -> T) -> T {
        struct Watch<'a>(&'a AtomicUsize);
        impl Drop for Watch<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.watchers.fetch_add(1, Ordering::AcqRel);
        let _watch = Watch(&self.watchers);
        f(&self.changed).await
    }

    /// Appends `messages` to `topic` and to every queue bound to it, and
    /// calls `appended` with each one's offset. With [`WhenFull::Wait`],
    /// waits while a queue is full, and appends each message to all queues
    /// at once, so a message is never half-published.
    pub(crate) async fn append(
        &self,
        topic: &str,
        messages: impl Iterator<Item = Message> + Send,
        timing: Timing,
        admission: Admission,
        mut appended_at: impl FnMut(u64) + Send,
    ) -> Result<()> {
        let mut pending = messages.peekable();
        while pending.peek().is_some() {
            let full = {
                let mut state = lock(&self.state);
                let mut seq = state.next_seq;
                // One lookup (one hash of the name) when the topic exists.
                let ts = match state.topics.get_mut(topic) {
                    Some(ts) => ts,
                    None => Self::new_topic(&mut state, topic),
                };
                // Under the topology lock no other publish reaches these
                // queues, and consumers only shrink them: the room measured
                // here is there for the pushes below. (A nack's requeue may
                // overshoot capacity briefly; it is never refused.)
                let mut room = usize::MAX;
                let mut full_queue = None;
                if admission == Admission::Publish {
                    for q in &ts.queues {
                        let free = self.config.capacity.saturating_sub(lock(&q.state).len());
                        if free == 0 {
                            full_queue = Some(q.clone());
                            break;
                        }
                        room = room.min(free);
                    }
                }
                if full_queue.is_none() {
                    let mut appended = 0u64;
                    while room > 0 {
                        let Some(message) = pending.next() else { break };
                        let offset = ts.topic.next_offset.fetch_add(1, Ordering::Relaxed);
                        let timestamp = SystemTime::now();
                        for q in &ts.queues {
                            let entry = Entry {
                                topic: ts.topic.clone(),
                                offset,
                                timestamp,
                                attempt: 1,
                                expires: timing.expires,
                                message: message.clone(),
                            };
                            match timing.due {
                                None => {
                                    lock(&q.state).ready.push_back(entry);
                                    q.available.notify_one();
                                }
                                Some(due) => {
                                    lock(&q.state).push_delayed(entry, due);
                                    // A member may sleep until a later due time.
                                    q.available.notify_waiters();
                                    q.available.notify_one();
                                }
                            }
                        }
                        appended_at(offset);
                        // Replies are for the one inbox listening now.
                        if self.config.retention > 0 && !is_reply_topic(&ts.topic.name) {
                            if ts.log.len() == self.config.retention {
                                ts.log.pop_front();
                            }
                            ts.log.push_back(Stored {
                                seq,
                                offset,
                                timestamp,
                                message,
                            });
                        }
                        seq += 1;
                        room -= 1;
                        appended += 1;
                    }
                    ts.topic
                        .counters
                        .published
                        .fetch_add(appended, Ordering::Release);
                    state.next_seq = seq;
                }
                full_queue
            };
            self.counters_changed();
            if let Some(queue) = full {
                if self.config.when_full == WhenFull::Fail {
                    return Err(error::full());
                }
                let space = queue.space.notified();
                tokio::pin!(space);
                space.as_mut().enable();
                if lock(&queue.state).len() >= self.config.capacity {
                    space.await;
                }
            }
        }
        Ok(())
    }

    /// Creates `topic`, bound to every queue whose filters match it.
    fn new_topic<'a>(state: &'a mut State, topic: &str) -> &'a mut TopicState {
        let name: Arc<str> = Arc::from(topic);
        let queues = state
            .groups
            .values()
            .chain(state.broadcast.iter())
            .filter(|q| q.matches(topic))
            .cloned()
            .collect();
        state.topics.entry(name.clone()).or_insert(TopicState {
            topic: Arc::new(Topic {
                name,
                counters: Counters::default(),
                next_offset: AtomicU64::new(0),
            }),
            queues,
            log: VecDeque::new(),
        })
    }

    /// The queue for a subscription: the group's (created on first use), or
    /// a new one for a broadcast subscriber. A new queue starting at the
    /// earliest position is filled from the retained messages.
    pub(crate) fn bind(
        &self,
        group: Option<&str>,
        filters: &[String],
        earliest: bool,
    ) -> Arc<Queue> {
        let mut state = lock(&self.state);
        let mut filters = filters.to_vec();
        filters.sort();
        filters.dedup();
        if let Some(g) = group
            && let Some(q) = state.groups.get(&(Arc::from(g), filters.clone()))
        {
            return q.clone();
        }
        let queue = Arc::new(Queue {
            filters: filters.clone(),
            group: group.map(Arc::from),
            state: Mutex::new(QueueState::default()),
            available: Notify::new(),
            space: Notify::new(),
        });
        let mut backlog: Vec<(u64, Entry)> = Vec::new();
        for ts in state
            .topics
            .values_mut()
            .filter(|ts| queue.matches(&ts.topic.name))
        {
            ts.queues.push(queue.clone());
            if earliest {
                backlog.extend(ts.log.iter().map(|s| {
                    (
                        s.seq,
                        Entry {
                            topic: ts.topic.clone(),
                            offset: s.offset,
                            timestamp: s.timestamp,
                            attempt: 1,
                            expires: None,
                            message: s.message.clone(),
                        },
                    )
                }));
            }
        }
        backlog.sort_by_key(|(seq, _)| *seq);
        lock(&queue.state)
            .ready
            .extend(backlog.into_iter().map(|(_, e)| e));
        match group {
            Some(g) => {
                state.groups.insert((Arc::from(g), filters), queue.clone());
            }
            None => state.broadcast.push(queue.clone()),
        }
        queue
    }

    /// Removes a broadcast queue whose subscriber went away.
    pub(crate) fn unbind(&self, queue: &Arc<Queue>) {
        let mut state = lock(&self.state);
        state.broadcast.retain(|q| !Arc::ptr_eq(q, queue));
        for ts in state.topics.values_mut() {
            ts.queues.retain(|q| !Arc::ptr_eq(q, queue));
        }
        // Publishers waiting for room in this queue look again: it is gone.
        queue.space.notify_waiters();
    }

    /// Up to `limit` retained messages of `topic` after `offset` (from
    /// the oldest when `None`), with their offsets.
    pub(crate) fn retained_after(
        &self,
        topic: &str,
        offset: Option<u64>,
        limit: usize,
    ) -> Vec<(u64, Message)> {
        lock(&self.state)
            .topics
            .get(topic)
            .map(|ts| {
                ts.log
                    .iter()
                    .filter(|s| offset.is_none_or(|o| s.offset > o))
                    .take(limit)
                    .map(|s| (s.offset, s.message.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes the retained messages of `topic` at `offsets`; returns how
    /// many there were.
    pub(crate) fn remove_retained(&self, topic: &str, offsets: &[u64]) -> u64 {
        let mut state = lock(&self.state);
        let Some(ts) = state.topics.get_mut(topic) else {
            return 0;
        };
        let before = ts.log.len();
        ts.log.retain(|s| !offsets.contains(&s.offset));
        (before - ts.log.len()) as u64
    }

    /// Forgets `topic`: its counters and retained messages.
    pub(crate) fn remove_topic(&self, topic: &str) {
        lock(&self.state).topics.remove(topic);
    }

    pub(crate) fn stats(&self, topic: &str) -> TopicStats {
        lock(&self.state)
            .topics
            .get(topic)
            .map(|ts| ts.topic.counters.snapshot())
            .unwrap_or_default()
    }

    pub(crate) fn retained(&self, topic: &str) -> Vec<Message> {
        lock(&self.state)
            .topics
            .get(topic)
            .map(|ts| ts.log.iter().map(|s| s.message.clone()).collect())
            .unwrap_or_default()
    }

    pub(crate) fn topics(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.state)
            .topics
            .keys()
            .map(|k| k.to_string())
            .collect();
        names.sort();
        names
    }
}
