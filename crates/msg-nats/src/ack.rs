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
//! - reject(reason): the dead letter is published to `<topic>.dlq` with the
//!   reserved headers (and acknowledged by its stream), then `+TERM`.
//!
//! A nack or defer of a message whose attempt reached `max_deliveries`
//! dead-letters it instead.

use std::sync::Arc;

use async_nats::jetstream::AckKind;
use msg_core::{Acker, Error, Received, Result, SettleFuture, Settlement, dead_letter_message};

use crate::Shared;
use crate::subscriber::Held;

impl Shared {
    /// Publishes the dead letter of `received` to its topic's dead-letter
    /// topic, in this broker's mode.
    pub(crate) async fn dead_letter(&self, received: &Received, reason: &str) -> Result<()> {
        let topic = format!(
            "{}{}",
            received.metadata.topic, self.config.dead_letter_suffix
        );
        self.publish(&topic, &dead_letter_message(received, reason, None))
            .await
    }
}

/// Settles a core NATS delivery.
pub(crate) struct CoreAcker {
    pub(crate) shared: Arc<Shared>,
    pub(crate) received: Received,
}

impl Acker for CoreAcker {
    fn settle(self: Box<Self>, settlement: Settlement) -> SettleFuture {
        match settlement {
            Settlement::Reject(reason) => SettleFuture::pending(async move {
                self.shared.dead_letter(&self.received, &reason).await
            }),
            Settlement::Ack | Settlement::Nack | Settlement::Defer(_) => {
                SettleFuture::ready(Ok(()))
            }
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
    pub(crate) async fn dead_letter(&self, reason: &str) -> Result<()> {
        self.shared.dead_letter(&self.received, reason).await?;
        self.send(AckKind::Term).await
    }

    async fn settle_now(self, settlement: Settlement) -> Result<()> {
        self.held.release(self.id);
        let over = self
            .shared
            .config
            .max_deliveries
            .is_some_and(|max| self.received.metadata.attempt >= max);
        match settlement {
            Settlement::Ack => self.send(AckKind::Ack).await,
            Settlement::Nack | Settlement::Defer(_) if over => {
                let max = self.shared.config.max_deliveries.unwrap_or_default();
                self.dead_letter(&format!("max deliveries ({max}) reached"))
                    .await
            }
            Settlement::Nack => self.send(AckKind::Nak(None)).await,
            Settlement::Defer(delay) => self.send(AckKind::Nak(Some(delay))).await,
            Settlement::Reject(reason) => self.dead_letter(&reason).await,
        }
    }
}

impl Acker for JsAcker {
    fn settle(self: Box<Self>, settlement: Settlement) -> SettleFuture {
        match settlement {
            // The common case gets a future of its own that holds only the
            // reply subject: boxing `settle_now`'s (kilobytes, for the dead
            // letter publish it may make) was a copy per message.
            Settlement::Ack => {
                self.held.release(self.id);
                let acker = self.acker;
                SettleFuture::pending(async move {
                    acker
                        .ack_with(AckKind::Ack)
                        .await
                        .map_err(Error::Connection)
                })
            }
            other => SettleFuture::pending(self.settle_now(other)),
        }
    }
}
