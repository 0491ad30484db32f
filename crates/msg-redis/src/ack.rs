//! How ack, nack, defer and reject map onto Redis.
//!
//! - ack: `XACK`. The acks of one subscriber go through one task that
//!   sends them in batches: while one `XACK` is on its way, the acks that
//!   come in wait and go together in the next, one command for many.
//! - nack: the entry stays pending; the subscriber claims it again at once
//!   (`XCLAIM`, which counts the delivery).
//! - defer(d): the entry stays pending and its id goes into the sorted set
//!   `<stream>:msg-deferred:<group>` scored by when it is due; it is
//!   claimed again then. The set lives in Redis, so a restart keeps it.
//! - dead letter: `XADD` to the dead-letter stream with the reserved
//!   headers, then `XACK`.

use std::sync::Arc;

use fred::prelude::{SortedSetsInterface, StreamsInterface};
use fred::types::Value;
use msg_core::raw::{AckBackend, AckFuture, Action, dead_letter_message};
use msg_core::{Error, Received, Result};
use tokio::sync::{mpsc, oneshot};

use crate::Shared;
use crate::subscriber::{deferred_key, now_ms};

/// The most entry ids one batched `XACK` carries.
const MAX_ACK_BATCH: usize = 1024;

/// One ack waiting for its batch.
pub(crate) struct PendingAck {
    key: Arc<str>,
    id: String,
    done: oneshot::Sender<Result<()>>,
}

/// Starts the task that acks for one subscriber's group; it ends once
/// every sender (the reader's and each delivery's) is gone.
pub(crate) fn spawn_acks(
    shared: Arc<Shared>,
    group: Arc<str>,
) -> mpsc::UnboundedSender<PendingAck> {
    let (tx, mut rx) = mpsc::unbounded_channel::<PendingAck>();
    tokio::spawn(async move {
        let mut batch = Vec::new();
        while rx.recv_many(&mut batch, MAX_ACK_BATCH).await > 0 {
            // Usually one stream; a subscription to several gets one XACK each.
            while let Some(first) = batch.first() {
                let key = first.key.clone();
                let (same, rest): (Vec<_>, Vec<_>) = batch.drain(..).partition(|a| a.key == key);
                batch = rest;
                let ids: Vec<&str> = same.iter().map(|a| a.id.as_str()).collect();
                let result: std::result::Result<Value, _> =
                    shared.client.xack(&*key, &*group, ids).await;
                for ack in same {
                    let _ = ack.done.send(
                        result
                            .as_ref()
                            .map(drop)
                            .map_err(|e| shared.fail(e.clone())),
                    );
                }
            }
        }
    });
    tx
}

pub(crate) struct RedisAcker {
    pub(crate) shared: Arc<Shared>,
    pub(crate) key: Arc<str>,
    pub(crate) group: Arc<str>,
    pub(crate) id: String,
    pub(crate) received: Received,
    pub(crate) member: Arc<msg_core::raw::Prefetch>,
    pub(crate) retry: mpsc::UnboundedSender<(String, String)>,
    pub(crate) acks: mpsc::UnboundedSender<PendingAck>,
}

impl RedisAcker {
    async fn ack(&self) -> Result<()> {
        let (done, acked) = oneshot::channel();
        let pending = PendingAck {
            key: self.key.clone(),
            id: self.id.clone(),
            done,
        };
        if self.acks.send(pending).is_ok()
            && let Ok(result) = acked.await
        {
            return result;
        }
        // The ack task is gone (the runtime is shutting down): ack directly.
        let _: Value = self
            .shared
            .client
            .xack(&*self.key, &*self.group, self.id.as_str())
            .await
            .map_err(|e| self.shared.fail(e))?;
        Ok(())
    }

    /// Publishes the dead letter to `topic`, then acks: a crash between the
    /// two leaves a duplicate dead letter, never a lost one.
    async fn dead_letter(&self, topic: &str, reason: &str, attempts: u32) -> Result<()> {
        self.shared
            .append(
                topic,
                &dead_letter_message(&self.received, reason, attempts, None),
            )
            .await?;
        self.ack().await
    }

    async fn settle_now(self, action: Action) -> Result<()> {
        self.member.release();
        match action {
            Action::Ack => self.ack().await,
            Action::Retry => {
                // If the subscriber is gone, the entry stays pending and a
                // live consumer claims it after `claim_idle`.
                let _ = self.retry.send((self.key.to_string(), self.id.clone()));
                Ok(())
            }
            Action::RetryAfter(delay) => {
                let due = now_ms().saturating_add(delay.as_millis().min(i64::MAX as u128) as i64);
                let _: Value = self
                    .shared
                    .client
                    .zadd(
                        deferred_key(&self.key, &self.group),
                        None,
                        None,
                        false,
                        false,
                        (due as f64, self.id.as_str()),
                    )
                    .await
                    .map_err(|e| self.shared.fail(e))?;
                Ok(())
            }
            Action::DeadLetter {
                topic,
                reason,
                attempts,
            } => self.dead_letter(&topic, &reason, attempts).await,
        }
    }
}

impl AckBackend for RedisAcker {
    fn topic(&self) -> &str {
        &self.received.metadata.topic
    }

    fn settle(self: Box<Self>, action: Action) -> AckFuture {
        match action {
            Action::Ack => self.queue_ack(),
            other => AckFuture::pending(self.settle_now(other)),
        }
    }
}

impl RedisAcker {
    /// The common case, kept small: the ack goes to the batching task now,
    /// and the future only waits for its `XACK`. (Settling through
    /// `settle_now` boxed a future of several kilobytes per message, large
    /// enough for its copy to show in profiles of the consume loop.)
    fn queue_ack(self: Box<Self>) -> AckFuture {
        self.member.release();
        let (done, acked) = oneshot::channel();
        let pending = PendingAck {
            key: self.key.clone(),
            id: self.id,
            done,
        };
        match self.acks.send(pending) {
            // A batch that ends without an answer (the runtime is shutting
            // down) leaves the entry pending, to be claimed again.
            Ok(()) => AckFuture::pending(async move { acked.await.unwrap_or(Err(Error::Closed)) }),
            // The ack task is gone: ack directly.
            Err(mpsc::error::SendError(pending)) => {
                let (shared, group) = (self.shared, self.group);
                AckFuture::pending(async move {
                    let _: Value = shared
                        .client
                        .xack(&*pending.key, &*group, pending.id.as_str())
                        .await
                        .map_err(|e| shared.fail(e))?;
                    Ok(())
                })
            }
        }
    }
}
