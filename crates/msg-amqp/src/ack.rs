//! How ack, nack, defer and reject map onto AMQP.
//!
//! - ack: `basic.ack`.
//! - nack: `basic.nack` with requeue: the broker delivers it again.
//! - defer(d): a copy goes to the retry queue `<queue>.retry.<ms>` (message
//!   TTL `d`, dead-lettered back into the work queue when it expires), then
//!   the original is acked.
//! - dead letter: the dead letter, with the reserved headers, goes to the
//!   dead-letter queue `<queue>.dlq` (groups) and to the dead-letter topic
//!   on the exchange, then the original is acked.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicNackOptions};
use msg_core::raw::{AckBackend, AckFuture, Action, dead_letter_message};
use msg_core::{Received, Result, Uuid};

use crate::Shared;
use crate::publisher::HEADER_TOPIC;
use crate::topology::{WorkQueue, declare_retry_queue, delay_ms, retry_queue_name};

/// Deliveries of the current copy of each message this subscription saw,
/// for brokers that do not count requeues (classic queues).
#[derive(Default)]
pub(crate) struct Requeues(Mutex<HashMap<Uuid, u32>>);

impl Requeues {
    /// Counts one delivery of the copy of `id`; `redelivered` says whether
    /// the broker delivered this copy before.
    pub(crate) fn count(&self, id: Uuid, redelivered: bool) -> u32 {
        let mut seen = self.0.lock().expect("requeues lock");
        let n = seen.entry(id).or_insert(0);
        *n = if redelivered { (*n + 1).max(2) } else { 1 };
        *n
    }

    /// The copy is gone (acked, deferred, dead-lettered).
    pub(crate) fn forget(&self, id: Uuid) {
        self.0.lock().expect("requeues lock").remove(&id);
    }
}

pub(crate) struct AmqpAcker {
    pub(crate) shared: Arc<Shared>,
    pub(crate) acker: lapin::Acker,
    pub(crate) received: Received,
    pub(crate) queue: Arc<WorkQueue>,
    pub(crate) requeues: Arc<Requeues>,
}

/// How long a settle may take to go out. lapin answers a settle once its
/// frame is written; one queued just as its connection broke was seen
/// never to be answered, which held the consumer awaiting it (and, through
/// it, the subscription) for ever.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// What lapin's acker answered: `Ok(false)` means its channel closed (a
/// restart, a lost connection) and nothing was sent. The broker delivers
/// the message again; the settle is a retryable error, never a success.
async fn sent(answer: impl Future<Output = lapin::Result<bool>>) -> Result<()> {
    match tokio::time::timeout(SETTLE_TIMEOUT, answer).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(channel_closed()),
        Ok(Err(e)) => Err(crate::error::map(e)),
        Err(_) => Err(msg_core::Error::Connection(
            format!(
                "the settle did not go out within {SETTLE_TIMEOUT:?} (its connection broke); \
                 the broker delivers the message again"
            )
            .into(),
        )),
    }
}

fn channel_closed() -> msg_core::Error {
    msg_core::Error::Connection(
        "the delivery's channel closed before it was settled; the broker delivers it again".into(),
    )
}

impl AmqpAcker {
    async fn ack(&self) -> Result<()> {
        self.requeues.forget(self.received.message.id());
        sent(self.acker.ack(BasicAckOptions::default())).await
    }

    /// Fails when the delivery's channel has closed: its copy (a retry or a
    /// dead letter) must not be published, since the broker delivers the
    /// original again.
    fn alive(&self) -> Result<()> {
        if self.acker.poisoned() {
            Err(channel_closed())
        } else {
            Ok(())
        }
    }

    /// Publishes the dead letter, then acks: a crash in between leaves a
    /// duplicate dead letter, never a lost message.
    async fn dead_letter(&self, topic: &str, reason: &str, attempts: u32) -> Result<()> {
        self.alive()?;
        let config = &self.shared.config;
        // A dead letter starts at attempt 1 on its own topic; its
        // `msg-attempts` header keeps the history.
        let letter = dead_letter_message(&self.received, reason, attempts, None);
        if self.queue.group.is_some() {
            let dlq = self.queue.dead_letter_queue(&config.dead_letter_suffix);
            self.shared
                .publish_to("", &dlq, &letter, 0, true, None)
                .await?;
            // Subscribers of the dead-letter topic, if any.
            self.shared
                .publish_to(&config.exchange, topic, &letter, 0, false, None)
                .await?;
        } else {
            // A broadcast queue has no dead-letter queue: the topic must
            // reach someone, or the reject fails rather than lose it.
            self.shared
                .publish_to(&config.exchange, topic, &letter, 0, true, None)
                .await?;
        }
        self.ack().await
    }

    async fn settle_now(self, action: Action) -> Result<()> {
        let attempt = self.received.metadata.attempt;
        match action {
            Action::Ack => self.ack().await,
            Action::Retry => {
                sent(self.acker.nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                }))
                .await
            }
            Action::RetryAfter(delay) => {
                self.alive()?;
                let ms = delay_ms(delay);
                let channel = self.shared.publish_channel().await?;
                let retry = retry_queue_name(&self.queue.name, ms);
                if !self.shared.recently_declared(&retry) {
                    declare_retry_queue(&channel, &self.queue.name, ms).await?;
                    self.shared.declared(retry.clone());
                }
                // The copy comes back with the queue's name as routing key:
                // its topic travels in a header.
                let mut copy = self.received.message.clone();
                copy.headers_mut()
                    .insert(HEADER_TOPIC, &*self.received.metadata.topic);
                self.shared
                    .publish_to("", &retry, &copy, attempt, true, None)
                    .await?;
                self.ack().await
            }
            Action::DeadLetter {
                topic,
                reason,
                attempts,
            } => self.dead_letter(&topic, &reason, attempts).await,
        }
    }
}

impl AckBackend for AmqpAcker {
    fn topic(&self) -> &str {
        &self.received.metadata.topic
    }

    fn settle(self: Box<Self>, action: Action) -> AckFuture {
        match action {
            // The common case gets a future of its own that holds only the
            // acker: boxing `settle_now`'s (kilobytes, for the dead letter
            // publishes it may make) was a copy per message.
            Action::Ack => {
                self.requeues.forget(self.received.message.id());
                let acker = self.acker;
                AckFuture::pending(async move { sent(acker.ack(BasicAckOptions::default())).await })
            }
            other => AckFuture::pending(self.settle_now(other)),
        }
    }
}
