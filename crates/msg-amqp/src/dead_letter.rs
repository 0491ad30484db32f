//! Reading the dead-letter queues. A group's dead letters are kept in the
//! durable queue `<queue>.dlq` (e.g. `orders:billing.dlq`; the dead-letter
//! topic `<topic>.dlq` on the exchange reaches only its subscribers of the
//! moment), so the manager is pointed at that queue's name.
//!
//! A queue has no positions to read from: a read takes the messages with
//! `basic.get` (unacknowledged) on a channel of its own from the head of
//! the queue, keeps those after the position asked for, and closes the
//! channel, which puts every one back in its place. Deleting acks the
//! chosen ones on such a pass. A position is the message id, with `#n`
//! for its `n`th repeat in the queue. Reading the whole queue on each
//! page costs a pass over it; a consumer of the dead-letter queue at the
//! same time would take messages from under the pass (normally none has
//! one). An unknown queue holds nothing.

use std::collections::HashMap;

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use msg_core::dead_letter::{DeadLetter, DeadLetterCapabilities, DeadLetterReader};
use msg_core::{Message, Result};

use crate::subscriber::decode;
use crate::{AmqpBroker, error};

/// One pass over a queue: every message, with its position and the
/// channel's delivery tag. The channel is returned open: closing it puts
/// back whatever it did not ack.
async fn pass(
    broker: &AmqpBroker,
    queue: &str,
    mut each: impl FnMut(&str, &Message) -> Visit,
) -> Result<(lapin::Channel, Vec<u64>)> {
    let channel = broker.shared.channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    if channel
        .queue_declare(queue.into(), passive, Default::default())
        .await
        .is_err()
    {
        // NOT_FOUND closed this channel: nothing to read.
        return Ok((broker.shared.channel().await?, Vec::new()));
    }
    let mut repeats: HashMap<String, u32> = HashMap::new();
    let mut chosen = Vec::new();
    while let Some(got) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .map_err(error::map)?
    {
        let (message, ..) = decode(&got.delivery);
        let id = message.id().to_string();
        let n = repeats.entry(id.clone()).or_default();
        let position = if *n == 0 { id } else { format!("{id}#{n}") };
        *n += 1;
        match each(&position, &message) {
            Visit::Next => {}
            Visit::Take => chosen.push(got.delivery.delivery_tag),
            Visit::Stop => break,
        }
    }
    Ok((channel, chosen))
}

enum Visit {
    Next,
    Take,
    Stop,
}

/// Closes `channel`: the broker puts back what it did not ack, in order.
async fn put_back(channel: lapin::Channel) {
    let _ = channel.close(200, "msg dead letters read".into()).await;
}

impl DeadLetterReader for AmqpBroker {
    async fn read(
        &self,
        queue: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        let mut skipping = after.is_some();
        let mut letters = Vec::new();
        let (channel, _) = pass(self, queue, |position, message| {
            if skipping {
                skipping = Some(position) != after;
                return Visit::Next;
            }
            letters.push(DeadLetter::new(position, message.clone()));
            if letters.len() == limit {
                Visit::Stop
            } else {
                Visit::Next
            }
        })
        .await?;
        put_back(channel).await;
        Ok(letters)
    }

    async fn delete(&self, queue: &str, positions: &[String]) -> Result<u64> {
        let (channel, chosen) = pass(self, queue, |position, _| {
            if positions.iter().any(|p| p == position) {
                Visit::Take
            } else {
                Visit::Next
            }
        })
        .await?;
        let mut removed = 0;
        for tag in chosen {
            channel
                .basic_ack(tag, BasicAckOptions::default())
                .await
                .map_err(error::map)?;
            removed += 1;
        }
        put_back(channel).await;
        Ok(removed)
    }

    fn dead_letter_capabilities(&self) -> DeadLetterCapabilities {
        DeadLetterCapabilities::full()
    }
}
