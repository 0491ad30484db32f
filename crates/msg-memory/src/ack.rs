//! How ack, nack, defer and reject map onto the in-process queues.
//!
//! - ack: the entry is gone; the member may take one more (prefetch).
//! - nack: the entry goes back to the front of its queue, attempt + 1.
//! - defer(d): the entry waits in the queue's delay heap until due.
//! - reject(reason): the entry is published to the dead-letter topic with
//!   the reserved headers, then gone.
//!
//! A nack or defer past `max_deliveries` dead-letters instead. Every settle
//! is a few in-memory operations, so it is done synchronously; dropping an
//! unsettled delivery nacks at once, without a runtime.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use msg_core::{Acker, Metadata, Received, SettleFuture, Settlement, dead_letter_message};

use crate::broker::{Admission, Entry};
use crate::subscriber::Member;

pub(crate) struct MemoryAcker {
    pub(crate) member: Arc<Member>,
    pub(crate) entry: Entry,
}

impl MemoryAcker {
    fn settle_now(self, settlement: Settlement) {
        let MemoryAcker { member, mut entry } = self;
        let Member {
            shared,
            queue,
            prefetch,
        } = &*member;
        prefetch.release();
        let counters = &entry.topic.counters;
        let over_limit = shared
            .config
            .max_deliveries
            .is_some_and(|max| entry.attempt >= max);
        let dead_letter = |entry: &Entry, reason: &str| {
            counters.dead_lettered.fetch_add(1, Ordering::Release);
            let received = Received {
                message: entry.message.clone(),
                metadata: Metadata::new(entry.topic.name.clone()).with_attempt(entry.attempt),
            };
            let topic = format!("{}{}", entry.topic.name, shared.config.dead_letter_suffix);
            Some((topic, dead_letter_message(&received, reason, None)))
        };
        let out = match settlement {
            Settlement::Ack => {
                counters.acked.fetch_add(1, Ordering::Release);
                None
            }
            Settlement::Nack | Settlement::Defer(_) if over_limit => {
                let max = shared.config.max_deliveries.unwrap_or_default();
                if matches!(settlement, Settlement::Nack) {
                    counters.nacked.fetch_add(1, Ordering::Release);
                } else {
                    counters.deferred.fetch_add(1, Ordering::Release);
                }
                dead_letter(&entry, &format!("max deliveries ({max}) reached"))
            }
            Settlement::Nack => {
                counters.nacked.fetch_add(1, Ordering::Release);
                entry.attempt += 1;
                queue.requeue_front(entry);
                None
            }
            Settlement::Defer(delay) => {
                counters.deferred.fetch_add(1, Ordering::Release);
                entry.attempt += 1;
                let due =
                    tokio::time::Instant::now() + delay.min(Duration::from_secs(86_400 * 365));
                queue.requeue_delayed(entry, due);
                None
            }
            Settlement::Reject(reason) => dead_letter(&entry, &reason),
        };
        if let Some((topic, message)) = out {
            // Internal admission never waits, so this completes on its first
            // poll: settle without needing a runtime (drop may have none).
            let append = shared.append(&topic, std::iter::once(message), Admission::Internal);
            match futures::FutureExt::now_or_never(append) {
                Some(Ok(())) => {}
                Some(Err(e)) => tracing::error!(topic, error = %e.chain(), "dead-lettering failed"),
                None => tracing::error!(topic, "dead-lettering did not complete at once"),
            }
        }
        shared.counters_changed();
    }
}

impl Acker for MemoryAcker {
    fn settle(self: Box<Self>, settlement: Settlement) -> SettleFuture {
        self.settle_now(settlement);
        SettleFuture::ready(Ok(()))
    }

    fn drop_unsettled(self: Box<Self>) {
        self.settle_now(Settlement::Nack);
    }
}
