//! The publishing metrics: a publisher decorator.

use std::time::Instant;

use msg_core::{BatchError, Capabilities, Message, PublishOptions, Publisher, Receipt, Result};

use super::Metrics;

/// A publisher whose publishes are counted and timed; made by
/// [`Metrics::publisher`].
#[derive(Debug, Clone)]
pub struct MeteredPublisher<P> {
    pub(super) inner: P,
    pub(super) metrics: Metrics,
}

impl<P: Publisher> Publisher for MeteredPublisher<P> {
    async fn publish_with(
        &self,
        topic: &str,
        message: Message,
        options: PublishOptions,
    ) -> Result<Receipt> {
        let started = Instant::now();
        let result = self.inner.publish_with(topic, message, options).await;
        self.metrics
            .operation_duration
            .with_label_values(&["publish", topic])
            .observe(started.elapsed().as_secs_f64());
        if result.is_ok() {
            self.metrics.sent.with_label_values(&[topic]).inc();
        }
        result
    }

    async fn publish_batch(
        &self,
        topic: &str,
        messages: Vec<Message>,
    ) -> Result<Vec<Receipt>, BatchError> {
        let started = Instant::now();
        let result = self.inner.publish_batch(topic, messages).await;
        self.metrics
            .operation_duration
            .with_label_values(&["publish", topic])
            .observe(started.elapsed().as_secs_f64());
        // What the broker accepted, also of a batch that failed in part.
        let sent = match &result {
            Ok(receipts) => receipts.len(),
            Err(e) => e.accepted().count(),
        };
        self.metrics
            .sent
            .with_label_values(&[topic])
            .inc_by(sent as u64);
        result
    }

    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}
