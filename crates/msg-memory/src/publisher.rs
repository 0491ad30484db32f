//! Publishing into the in-process broker.

use std::time::Duration;

use tokio::time::Instant;

use msg_core::raw::topic::validate_topic;
use msg_core::raw::{apply_options, batch_outcome, delay_until};
use msg_core::{
    BatchError, Capabilities, Message, Position, PublishOptions, Publisher, Receipt, Result,
};

use crate::broker::{Admission, Timing};
use crate::{MemoryBroker, error};

fn receipt(offset: u64) -> Receipt {
    Receipt::at(Position::Offset {
        partition: 0,
        offset: offset as i64,
    })
}

/// When a message published with `options` is due and expires.
fn timing(options: &PublishOptions) -> Timing {
    let now = Instant::now();
    Timing {
        due: options
            .deliver_at
            .map(delay_until)
            .filter(|d| !d.is_zero())
            .map(|d| now + d),
        expires: options.ttl.map(|ttl: Duration| now + ttl),
    }
}

impl Publisher for MemoryBroker {
    /// Honours every option: a `deliver_at` message waits in each queue
    /// until it is due; a `ttl` message is dropped (and counted as
    /// [`expired`](crate::TopicStats::expired)) if a consumer has not taken
    /// it in time.
    async fn publish_with(
        &self,
        topic: &str,
        mut message: Message,
        options: PublishOptions,
    ) -> Result<Receipt> {
        self.check_open()?;
        validate_topic(topic)?;
        let timing = if options.is_empty() {
            Timing::default()
        } else {
            apply_options(&mut message, &options, &self.capabilities())?;
            timing(&options)
        };
        message.validate()?;
        let mut at = 0;
        self.shared
            .append(
                topic,
                std::iter::once(message),
                timing,
                Admission::Publish,
                |offset| at = offset,
            )
            .await?;
        Ok(receipt(at))
    }

    /// Appends the messages under one lock, unless a full queue makes it
    /// wait; they are accepted in order, so on error the accepted ones
    /// are those before the first that was not.
    async fn publish_batch(
        &self,
        topic: &str,
        messages: Vec<Message>,
    ) -> Result<Vec<Receipt>, BatchError> {
        let len = messages.len();
        let checked = self
            .check_open()
            .and_then(|()| validate_topic(topic))
            .and_then(|()| messages.iter().try_for_each(Message::validate));
        if let Err(e) = checked {
            return Err(BatchError::none_accepted(len, e));
        }
        let mut receipts = Vec::with_capacity(len);
        let appended = self
            .shared
            .append(
                topic,
                messages.into_iter(),
                Timing::default(),
                Admission::Publish,
                |offset| receipts.push(receipt(offset)),
            )
            .await;
        batch_outcome(len, receipts.into_iter().map(Ok), appended.err())
    }

    async fn flush(&self) -> Result<()> {
        // A publish returns once the message is in every queue: nothing is
        // ever buffered on the way.
        self.check_open()
    }

    async fn close(&self) -> Result<()> {
        self.handle
            .publisher_closed
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities()
    }
}

impl MemoryBroker {
    fn check_open(&self) -> Result<()> {
        if self
            .handle
            .publisher_closed
            .load(std::sync::atomic::Ordering::Acquire)
        {
            Err(error::closed())
        } else {
            Ok(())
        }
    }
}
