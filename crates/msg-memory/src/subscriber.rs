//! Consuming from the in-process broker.
//!
//! Prefetch is the most unsettled deliveries one subscriber holds, as
//! AMQP's `basic.qos`: with prefetch 1, the next message comes only after
//! the previous one is settled.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::task::{Context, Poll, ready};

use futures::{FutureExt, Stream};
use msg_core::raw::reply::new_reply_topic;
use msg_core::raw::{Governor, Prefetch, dead_letter_failed};
use msg_core::{
    Capabilities, Delivery, DeliveryStream, Metadata, ReplyInbox, Result, StartPosition,
    Subscriber, Subscription,
};
use tokio::time::Instant;

use crate::ack::MemoryAcker;
use crate::broker::{Entry, Queue, Shared, lock};
use crate::{Handle, MemoryBroker, error};

impl Subscriber for MemoryBroker {
    async fn subscribe(&self, subscription: Subscription) -> Result<DeliveryStream> {
        subscription.validate()?;
        if self.handle.subscriber_closed.load(AtomicOrdering::Acquire) {
            return Err(error::closed());
        }
        let queue = self.shared.bind(
            subscription.group_name(),
            subscription.topics(),
            subscription.start_position() == StartPosition::Earliest,
        );
        let consumer = Consumer {
            broadcast: queue.group.is_none(),
            member: Arc::new(Member {
                shared: self.shared.clone(),
                queue,
                prefetch: Prefetch::new(subscription.prefetch_count()),
            }),
            buffer: VecDeque::new(),
            handle: self.handle.clone(),
            waiting: None,
            governor: Governor::new(
                self.shared
                    .config
                    .delivery_policy()
                    .for_subscription(&subscription),
            ),
        };
        Ok(Box::pin(consumer))
    }

    async fn close(&self) -> Result<()> {
        self.handle
            .subscriber_closed
            .store(true, AtomicOrdering::Release);
        self.handle.closing.notify_waiters();
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities()
    }

    /// This crate's version: the broker is this crate.
    async fn server_version(&self) -> Result<Option<String>> {
        Ok(Some(format!("msg-memory {}", env!("CARGO_PKG_VERSION"))))
    }

    /// The topics published to so far.
    async fn topics(&self) -> Result<Vec<String>> {
        Ok(self.shared.topics())
    }

    /// A reply topic of this broker, which retains nothing and is removed
    /// when the requester closes.
    async fn reply_inbox(&self) -> Result<ReplyInbox> {
        let address = new_reply_topic();
        let replies = self.subscribe(Subscription::new(address.clone())).await?;
        let (shared, topic) = (self.shared.clone(), address.clone());
        Ok(ReplyInbox::new(address, replies).with_cleanup(async move {
            shared.remove_topic(&topic);
            Ok(())
        }))
    }
}

/// What one subscription's stream and its deliveries' ackers share: one
/// reference count per delivery rather than three.
pub(crate) struct Member {
    pub(crate) shared: Arc<Shared>,
    pub(crate) queue: Arc<Queue>,
    pub(crate) prefetch: Prefetch,
}

/// The state behind one subscription's stream.
struct Consumer {
    member: Arc<Member>,
    /// Entries taken from the queue in one go (up to the prefetch), not yet
    /// handed out.
    buffer: VecDeque<Entry>,
    handle: Arc<Handle>,
    /// Set while there is nothing to deliver: resolves on a wake-up.
    waiting: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    broadcast: bool,
    /// The subscription's delivery policy, applied here rather than in a
    /// stream around this one: the in-process broker's hot path.
    governor: Governor,
}

impl Stream for Consumer {
    type Item = Result<Delivery>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.handle.subscriber_closed.load(AtomicOrdering::Acquire) {
                return Poll::Ready(None);
            }
            if let Some(waiting) = &mut this.waiting {
                ready!(waiting.as_mut().poll(cx));
                this.waiting = None;
            }
            if let Some(entry) = this.buffer.pop_front() {
                let mut delivery = this.deliver(entry);
                match this.governor.admit(&mut delivery) {
                    None => return Poll::Ready(Some(Ok(delivery))),
                    // Settling in memory completes at once.
                    Some(mut dead_letter) => match (&mut dead_letter).now_or_never() {
                        Some(Ok(())) => {}
                        Some(Err(e)) => dead_letter_failed(&e),
                        None => {
                            tokio::spawn(async move {
                                if let Err(e) = dead_letter.await {
                                    dead_letter_failed(&e);
                                }
                            });
                        }
                    },
                }
                continue;
            }
            let member = &*this.member;
            let room = member.prefetch.room();
            let mut next_due = None;
            if room > 0 {
                let mut state = lock(&member.queue.state);
                next_due = state.promote_due(Instant::now());
                let len_before = state.ready.len();
                let take = room.min(len_before);
                this.buffer.extend(state.ready.drain(..take));
                if this.buffer.iter().any(|e| e.expires.is_some()) {
                    let now = Instant::now();
                    this.buffer.retain(|e| match e.expires {
                        Some(at) if at <= now => {
                            let expired = &e.topic.counters.expired;
                            expired.fetch_add(1, AtomicOrdering::Release);
                            false
                        }
                        _ => true,
                    });
                }
                member
                    .queue
                    .made_room(len_before, member.shared.config.capacity);
            }
            if !this.buffer.is_empty() {
                member.prefetch.take(this.buffer.len());
                continue;
            }
            this.waiting = Some(Box::pin(wait_for_work(
                this.member.clone(),
                this.handle.clone(),
                next_due,
            )));
        }
    }
}

/// Resolves when there may be work: an entry arrived, a prefetch slot was
/// freed, a deferred entry is due, or the subscriber was closed. It
/// registers for every wake-up before looking again, so none is missed.
async fn wait_for_work(member: Arc<Member>, handle: Arc<Handle>, next_due: Option<Instant>) {
    let queue = &member.queue;
    let available = queue.available.notified();
    let freed = member.prefetch.freed();
    let closing = handle.closing.notified();
    tokio::pin!(available, freed, closing);
    available.as_mut().enable();
    freed.as_mut().enable();
    closing.as_mut().enable();
    let full = member.prefetch.room() == 0;
    if handle.subscriber_closed.load(AtomicOrdering::Acquire)
        || (!full && !lock(&queue.state).ready.is_empty())
    {
        return;
    }
    let due = async {
        match next_due {
            Some(due) => tokio::time::sleep_until(due).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = available => {}
        () = freed => {}
        () = closing => {}
        () = due => {}
    }
}

impl Consumer {
    fn deliver(&self, entry: Entry) -> Delivery {
        entry
            .topic
            .counters
            .delivered
            .fetch_add(1, AtomicOrdering::Release);
        self.member.shared.counters_changed();
        let metadata = Metadata::new(entry.topic.name.clone())
            .with_offset(entry.offset)
            .with_timestamp(entry.timestamp)
            .with_attempt(entry.attempt)
            .with_group(self.member.queue.group.clone());
        let message = entry.message.clone();
        Delivery::new(
            message,
            metadata,
            MemoryAcker {
                member: self.member.clone(),
                entry,
            },
        )
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Entries taken but never handed out go back, in order, unchanged.
        if !self.buffer.is_empty() {
            let mut state = lock(&self.member.queue.state);
            for entry in self.buffer.drain(..).rev() {
                state.ready.push_front(entry);
            }
        }
        if self.broadcast {
            self.member.shared.unbind(&self.member.queue);
        } else {
            // This member may have taken a wake-up meant for another one.
            self.member.queue.available.notify_one();
        }
    }
}
