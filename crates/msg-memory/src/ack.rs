//! How ack, nack, defer and dead-lettering map onto the in-process queues.
//!
//! - ack: the entry is gone; the member may take one more (prefetch).
//! - nack: the entry goes back to the front of its queue, attempt + 1.
//! - defer(d): the entry waits in the queue's delay heap until due.
//! - dead letter: the entry is published to the dead-letter topic with the
//!   reserved headers, then gone.
//!
//! Every settle is a few in-memory operations, so it is done synchronously;
//! dropping an unsettled delivery nacks at once, without a runtime.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use msg_core::raw::{AckBackend, AckFuture, Action, dead_letter_message};
use msg_core::{Metadata, Received};

use crate::broker::{Admission, Entry, Timing};
use crate::subscriber::Member;

pub(crate) struct MemoryAcker {
    pub(crate) member: Arc<Member>,
    pub(crate) entry: Entry,
}

impl MemoryAcker {
    fn settle_now(self, action: Action) {
        let MemoryAcker { member, mut entry } = self;
        let Member {
            shared,
            queue,
            prefetch,
        } = &*member;
        prefetch.release();
        let counters = &entry.topic.counters;
        let out = match action {
            Action::Ack => {
                counters.acked.fetch_add(1, Ordering::Release);
                None
            }
            Action::Retry => {
                counters.nacked.fetch_add(1, Ordering::Release);
                entry.attempt += 1;
                queue.requeue_front(entry);
                None
            }
            Action::RetryAfter(delay) => {
                counters.deferred.fetch_add(1, Ordering::Release);
                entry.attempt += 1;
                let due =
                    tokio::time::Instant::now() + delay.min(Duration::from_secs(86_400 * 365));
                queue.requeue_delayed(entry, due);
                None
            }
            Action::DeadLetter {
                topic,
                reason,
                attempts,
            } => {
                counters.dead_lettered.fetch_add(1, Ordering::Release);
                let received = Received {
                    message: entry.message.clone(),
                    metadata: Metadata::new(entry.topic.name.clone()).with_attempt(entry.attempt),
                };
                Some((
                    topic,
                    dead_letter_message(&received, &reason, attempts, None),
                ))
            }
        };
        if let Some((topic, message)) = out {
            // Internal admission never waits, so this completes on its first
            // poll: settle without needing a runtime (drop may have none).
            let append = shared.append(
                &topic,
                std::iter::once(message),
                Timing::default(),
                Admission::Internal,
                |_| {},
            );
            match futures::FutureExt::now_or_never(append) {
                Some(Ok(())) => {}
                Some(Err(e)) => tracing::error!(topic, error = %e.chain(), "dead-lettering failed"),
                None => tracing::error!(topic, "dead-lettering did not complete at once"),
            }
        }
        shared.counters_changed();
    }
}

impl AckBackend for MemoryAcker {
    fn topic(&self) -> &str {
        &self.entry.topic.name
    }

    fn settle(self: Box<Self>, action: Action) -> AckFuture {
        self.settle_now(action);
        AckFuture::ready(Ok(()))
    }

    fn drop_unsettled(self: Box<Self>) {
        self.settle_now(Action::Retry);
    }
}
