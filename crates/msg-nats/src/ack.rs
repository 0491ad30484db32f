//! How ack, nack, defer and reject map onto NATS.
//!
//! Core NATS delivers at most once: ack, nack and defer do nothing, and a
//! dropped delivery is not redelivered. A reject still publishes the dead
//! letter, so a message that cannot be handled is never lost silently.
//!
//! JetStream:
//! - ack: `+ACK`.
//! - nack: `-NAK`: the server delivers it again at once.
//! - defer(d): `-NAK {"delay": d}`: the server delivers it again after `d`.
//! - dead letter: the dead letter is published to the dead-letter topic
//!   with the reserved headers (and acknowledged by its stream), then
//!   `+TERM`.

use std::sync::Arc;

use async_nats::jetstream::AckKind;
use msg_core::raw::{AckBackend, AckFuture, Action, dead_letter_message};
use msg_core::{Error, Received, Result};

use crate::Shared;
use crate::subscriber::Held;

impl Shared {
    /// Publishes the dead letter of `received` to `topic`, in this
    /// broker's mode.
    pub(crate) async fn dead_letter(
        &self,
        received: &Received,
        topic: &str,
        reason: &str,
        attempts: u32,
    ) -> Result<()> {
        self.publish(
            topic,
            &dead_letter_message(received, reason, attempts, None),
        )
        .await
        .map(drop)
    }
}

/// Settles a core NATS delivery.
pub(crate) struct CoreAcker {
    pub(crate) shared: Arc<Shared>,
    pub(crate) received: Received,
}

impl AckBackend for CoreAcker {
    fn topic(&self) -> &str {
        &self.received.metadata.topic
    }

    fn settle(self: Box<Self>, action: Action) -> AckFuture {
        match action {
            Action::DeadLetter {
                topic,
                reason,
                attempts,
            } => AckFuture::pending(async move {
                self.shared
                    .dead_letter(&self.received, &topic, &reason, attempts)
                    .await
            }),
            Action::Ack | Action::Retry | Action::RetryAfter(_) => AckFuture::ready(Ok(())),
        }
    }

    /// At most once: nothing to give back.
    fn drop_unsettled(self: Box<Self>) {}
}

/// Settles a JetStream delivery.
pub(crate) struct JsAcker {
    pub(crate) shared: Arc<Shared>,
    pub(crate) acker: async_nats::jetstream::message::Acker,
    pub(crate) received: Received,
    /// The consumer sequence: the key of the delivery in `held`.
    pub(crate) id: u64,
    pub(crate) held: Arc<Held>,
}

impl JsAcker {
    async fn send(&self, kind: AckKind) -> Result<()> {
        self.acker.ack_with(kind).await.map_err(Error::Connection)
    }

    /// Publishes the dead letter, then terminates the message: a crash in
    /// between leaves the message to be delivered again, and the server
    /// drops the second dead letter as a duplicate.
    async fn dead_letter(&self, topic: &str, reason: &str, attempts: u32) -> Result<()> {
        self.shared
            .dead_letter(&self.received, topic, reason, attempts)
            .await?;
        self.send(AckKind::Term).await
    }

    async fn settle_now(self, action: Action) -> Result<()> {
        self.held.release(self.id);
        match action {
            Action::Ack => self.send(AckKind::Ack).await,
            Action::Retry => self.send(AckKind::Nak(None)).await,
            Action::RetryAfter(delay) => self.send(AckKind::Nak(Some(delay))).await,
            Action::DeadLetter {
                topic,
                reason,
                attempts,
            } => self.dead_letter(&topic, &reason, attempts).await,
        }
    }
}

impl AckBackend for JsAcker {
    fn topic(&self) -> &str {
        &self.received.metadata.topic
    }

    fn settle(self: Box<Self>, action: Action) -> AckFuture {
        match action {
            // The common case gets a future of its own that holds only the
            // reply subject: boxing `settle_now`'s (kilobytes, for the dead
            // letter publish it may make) was a copy per message.
            Action::Ack => {
                self.held.release(self.id);
                let acker = self.acker;
                AckFuture::pending(async move {
                    acker
                        .ack_with(AckKind::Ack)
                        .await
                        .map_err(Error::Connection)
                })
            }
            other => AckFuture::pending(self.settle_now(other)),
        }
    }
}
