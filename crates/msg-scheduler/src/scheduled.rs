//! `deliver_at` on every transport: a publisher that hands a message with a
//! delivery time to the scheduler when its transport cannot delay it.

use msg_core::{
    BatchError, Capabilities, Error, Message, PublishOptions, Publisher, Receipt, Result, headers,
};

use crate::{IfExists, ScheduleOptions, Scheduler, When};

/// A publisher that honours the publish option `deliver_at` (and `delay`)
/// on every transport: where the transport delays messages itself
/// ([`Capabilities::native_deliver_at`]), the publish goes straight
/// through; otherwise a message for later is stored as a schedule and a
/// [runner](crate::Runner) publishes it when it is due. A time that has
/// passed publishes at once.
///
/// The scheduled message carries `msg-deliver-at` as a natively delayed one
/// does, and keeps its id. Publishing the same message (same id) to the
/// same topic again before it fires does not schedule it twice.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> msg_core::Result<()> {
/// use std::time::Duration;
/// use msg_core::{Message, PublishOptions, Publisher};
/// use msg_scheduler::{Scheduled, Scheduler};
///
/// # let transport = msg_memory::MemoryBroker::new();
/// let scheduler = Scheduler::memory();
/// let runner = scheduler.runner(transport.clone()).start();
/// let publisher = Scheduled::new(transport, scheduler);
/// publisher
///     .publish_with("reminders", Message::new("hi"), PublishOptions::new().delay(Duration::from_millis(10)))
///     .await?;
/// runner.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Scheduled<P> {
    inner: P,
    scheduler: Scheduler,
}

impl<P: Publisher> Scheduled<P> {
    /// `inner`, with `deliver_at` supplied by `scheduler` where `inner`
    /// lacks it. Run a [runner](Scheduler::runner) over the same store.
    pub fn new(inner: P, scheduler: Scheduler) -> Self {
        Self { inner, scheduler }
    }

    /// The publisher underneath.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    async fn schedule(
        &self,
        topic: &str,
        mut message: Message,
        options: PublishOptions,
    ) -> Result<Receipt> {
        let capabilities = self.inner.capabilities();
        let Some(at) = options
            .deliver_at
            .filter(|_| !capabilities.native_deliver_at)
        else {
            return self.inner.publish_with(topic, message, options).await;
        };
        let mut rest = options;
        rest.deliver_at = None;
        if at <= self.scheduler.clock.now() {
            return self.inner.publish_with(topic, message, rest).await;
        }
        // What the transport cannot do fails now, not at the fire.
        let unsupported = |operation| Error::Unsupported {
            operation,
            transport: capabilities.transport,
        };
        if rest.ttl.is_some() && !capabilities.native_ttl {
            return Err(unsupported("the publish option ttl"));
        }
        if rest.reply_to.is_some() && !capabilities.native_reply_to {
            return Err(unsupported("the publish option reply_to"));
        }
        message
            .headers_mut()
            .insert(headers::DELIVER_AT, msg_core::raw::time::rfc3339(at));
        let mut schedule = ScheduleOptions::new()
            .key(format!("deliver-at/{topic}/{}", message.id()))
            .if_exists(IfExists::Keep);
        schedule.ttl = rest.ttl;
        schedule.reply_to = rest.reply_to;
        self.scheduler
            .schedule_with(topic, message, When::at(at), schedule)
            .await?;
        Ok(Receipt::accepted())
    }
}

impl<P: Publisher> Publisher for Scheduled<P> {
    async fn publish_with(
        &self,
        topic: &str,
        message: Message,
        options: PublishOptions,
    ) -> Result<Receipt> {
        self.schedule(topic, message, options).await
    }

    async fn publish_batch(
        &self,
        topic: &str,
        messages: Vec<Message>,
    ) -> Result<Vec<Receipt>, BatchError> {
        self.inner.publish_batch(topic, messages).await
    }

    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities().with_native_deliver_at(true)
    }
}
