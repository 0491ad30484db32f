//! Publishing into the in-process broker.

use msg_core::raw::topic::validate_topic;
use msg_core::{Capabilities, Message, Publisher, Result};

use crate::broker::Admission;
use crate::{MemoryBroker, error};

impl Publisher for MemoryBroker {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        self.check_open()?;
        validate_topic(topic)?;
        message.validate()?;
        self.shared
            .append(topic, std::iter::once(message), Admission::Publish)
            .await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.check_open()?;
        validate_topic(topic)?;
        messages.iter().try_for_each(Message::validate)?;
        self.shared
            .append(topic, messages.into_iter(), Admission::Publish)
            .await
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
