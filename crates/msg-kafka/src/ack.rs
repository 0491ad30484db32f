//! How a settle maps onto Kafka, which has no per-message acknowledgement:
//!
//! | settle | on Kafka |
//! |---|---|
//! | ack | the offset no longer holds back the partition's commit point |
//! | nack | handed out again by this consumer, attempt + 1 |
//! | defer(d) | handed out again by this consumer after `d`, attempt + 1 |
//! | dead letter | the dead letter is produced to the dead-letter topic, then as ack |
//!
//! A nacked or deferred message keeps its offset unsettled, so the commit
//! point waits for it: if the consumer dies or the partition moves to
//! another member meanwhile, the group reads it again from there.

use std::sync::Arc;

use msg_core::raw::{AckBackend, AckFuture, Action, dead_letter_message};
use msg_core::{Delivery, Received};

use crate::subscriber::Member;

/// A record taken from a partition and not yet settled.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) received: Received,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// The assignment of the partition it came with.
    pub(crate) generation: u64,
}

/// Settles one delivery.
pub(crate) struct KafkaAcker {
    pub(crate) member: Arc<Member>,
    pub(crate) fetched: Fetched,
}

/// The header with the partition a dead letter came from.
pub const HEADER_ORIGINAL_PARTITION: &str = "msg-original-partition";
/// The header with the offset a dead letter had.
pub const HEADER_ORIGINAL_OFFSET: &str = "msg-original-offset";

impl KafkaAcker {
    /// The delivery this acker settles.
    pub(crate) fn into_delivery(self) -> Delivery {
        let received = self.fetched.received.clone();
        Delivery::new(received.message, received.metadata, self)
    }

    fn done(&self) {
        let f = &self.fetched;
        self.member.tracker.settled(
            &f.received.metadata.topic,
            f.partition,
            f.offset,
            f.generation,
        );
        self.member.prefetch.release();
    }

    /// Back to the consume task, one attempt more.
    fn again(self) {
        self.member.prefetch.release();
        let mut fetched = self.fetched;
        let attempt = fetched.received.metadata.attempt.saturating_add(1);
        fetched.received.metadata = fetched.received.metadata.with_attempt(attempt);
        // Fails only when the subscription ended: the offset stays
        // uncommitted and the group reads the message again.
        let _ = self.member.redeliver.send(fetched);
    }
}

impl AckBackend for KafkaAcker {
    fn topic(&self) -> &str {
        &self.fetched.received.metadata.topic
    }

    fn settle(self: Box<Self>, action: Action) -> AckFuture {
        match action {
            Action::Ack => {
                self.done();
                AckFuture::ready(Ok(()))
            }
            Action::Retry => {
                self.again();
                AckFuture::ready(Ok(()))
            }
            Action::RetryAfter(delay) => {
                AckFuture::ready(match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        runtime.spawn(async move {
                            tokio::time::sleep(delay).await;
                            self.again();
                        });
                        Ok(())
                    }
                    Err(_) => {
                        self.again();
                        // The message was nacked instead.
                        Err(msg_core::Error::Unsupported {
                            operation: "deferring outside a Tokio runtime",
                            transport: "kafka",
                        })
                    }
                })
            }
            Action::DeadLetter {
                topic,
                reason,
                attempts,
            } => AckFuture::pending(async move {
                let f = &self.fetched;
                let mut dead = dead_letter_message(&f.received, &reason, attempts, None);
                let headers = dead.headers_mut();
                headers.insert(HEADER_ORIGINAL_PARTITION, f.partition.to_string());
                headers.insert(HEADER_ORIGINAL_OFFSET, f.offset.to_string());
                match self.member.shared.produce(&topic, &dead).await {
                    Ok(_) => {
                        self.done();
                        Ok(())
                    }
                    Err(e) => {
                        // Not dead-lettered: not lost either.
                        tracing::warn!(topic, error = %e.chain(), "dead-lettering failed; the message comes again");
                        self.again();
                        Err(e)
                    }
                }
            }),
        }
    }

    fn drop_unsettled(self: Box<Self>) {
        self.again();
    }
}
