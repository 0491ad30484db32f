//! Consuming from the in-process broker.
//!
//! Prefetch is the most unsettled deliveries one subscriber holds, as
//! AMQP's `basic.qos`: with prefetch 1, the next message comes only after
//! the previous one is settled.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use msg_core::{
    Capabilities, Delivery, DeliveryStream, Metadata, Result, StartPosition, Subscriber,
    Subscription,
};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::ack::MemoryAcker;
use crate::broker::{Entry, Queue, Shared, lock};
use crate::{MemoryBroker, error};

/// One subscriber's share of a queue: how many deliveries it holds.
pub(crate) struct Member {
    unacked: AtomicUsize,
    prefetch: usize,
    /// Wakes the subscriber when a settle frees a prefetch slot.
    freed: Notify,
}

impl Member {
    /// One delivery was settled.
    pub(crate) fn release(&self) {
        if self.unacked.fetch_sub(1, Ordering::AcqRel) >= self.prefetch {
            self.freed.notify_one();
        }
    }
}

impl Subscriber for MemoryBroker {
    async fn subscribe(&self, subscription: Subscription) -> Result<DeliveryStream> {
        subscription.validate()?;
        let closed = self.handle.subscriber_closed.subscribe();
        if *closed.borrow() {
            return Err(error::closed());
        }
        let queue = self.shared.bind(
            subscription.group_name(),
            subscription.topics(),
            subscription.start_position() == StartPosition::Earliest,
        );
        let consumer = Consumer {
            shared: self.shared.clone(),
            member: Arc::new(Member {
                unacked: AtomicUsize::new(0),
                prefetch: subscription.prefetch_count(),
                freed: Notify::new(),
            }),
            broadcast: queue.group.is_none(),
            queue,
            buffer: VecDeque::new(),
            closed,
        };
        let stream = futures::stream::unfold(consumer, |mut consumer| async move {
            let delivery = consumer.next().await?;
            Some((Ok(delivery), consumer))
        });
        Ok(stream.boxed())
    }

    async fn close(&self) -> Result<()> {
        self.handle.subscriber_closed.send_replace(true);
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities()
    }
}

/// The state behind one subscription's stream.
struct Consumer {
    shared: Arc<Shared>,
    queue: Arc<Queue>,
    member: Arc<Member>,
    /// Entries taken from the queue in one go (up to the prefetch), not yet
    /// handed out.
    buffer: VecDeque<Entry>,
    closed: watch::Receiver<bool>,
    broadcast: bool,
}

impl Consumer {
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            if *self.closed.borrow() {
                return None;
            }
            if let Some(entry) = self.buffer.pop_front() {
                return Some(self.deliver(entry));
            }
            // Register for wake-ups before looking, so that none is missed.
            let freed = self.member.freed.notified();
            let available = self.queue.available.notified();
            tokio::pin!(freed, available);
            freed.as_mut().enable();
            available.as_mut().enable();

            let held = self.member.unacked.load(Ordering::Acquire);
            if held >= self.member.prefetch {
                tokio::select! {
                    () = freed => {}
                    _ = self.closed.changed() => {}
                }
                continue;
            }
            let next_due = {
                let mut state = lock(&self.queue.state);
                let next_due = state.promote_due(Instant::now());
                let len_before = state.ready.len();
                let take = (self.member.prefetch - held).min(len_before);
                self.buffer.extend(state.ready.drain(..take));
                self.queue
                    .made_room(len_before, self.shared.config.capacity);
                next_due
            };
            if !self.buffer.is_empty() {
                self.member
                    .unacked
                    .fetch_add(self.buffer.len(), Ordering::AcqRel);
                continue;
            }
            let sleep = async {
                match next_due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = available => {}
                () = sleep => {}
                _ = self.closed.changed() => {}
            }
        }
    }

    fn deliver(&self, entry: Entry) -> Delivery {
        entry
            .topic
            .counters
            .delivered
            .fetch_add(1, Ordering::Release);
        let metadata = Metadata::new(entry.topic.name.clone())
            .with_offset(entry.offset)
            .with_timestamp(entry.timestamp)
            .with_attempt(entry.attempt)
            .with_group(self.queue.group.clone());
        let message = entry.message.clone();
        Delivery::new(
            message,
            metadata,
            MemoryAcker {
                shared: self.shared.clone(),
                queue: self.queue.clone(),
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
            let mut state = lock(&self.queue.state);
            for entry in self.buffer.drain(..).rev() {
                state.ready.push_front(entry);
            }
        }
        if self.broadcast {
            self.shared.unbind(&self.queue);
        } else {
            // This member may have taken a wake-up meant for another one.
            self.queue.available.notify_one();
        }
    }
}
