//! Dead-lettering by the handler stack itself.
//!
//! After the last attempt, or at once on a permanent failure, the message
//! is published to its dead-letter topic with the reserved headers (reason,
//! original topic, attempts, error chain, time) and the delivery is acked.
//! It works the same on every transport, with or without native
//! dead-lettering. If the dead letter cannot be published, the delivery is
//! retried: nothing is lost.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use msg_core::raw::dead_letter_message;
use msg_core::{
    Disposition, DynPublisher, HandlerError, Outgoing, Publisher, Received, error_chain,
};
use tower::{Layer, Service};

/// Publishes failed messages to their dead-letter topic; see the
/// [module docs](self).
#[derive(Clone)]
pub struct DeadLetterLayer {
    publisher: Arc<dyn DynPublisher>,
    after_attempts: Option<u32>,
    suffix: String,
}

impl std::fmt::Debug for DeadLetterLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterLayer")
            .field("after_attempts", &self.after_attempts)
            .field("suffix", &self.suffix)
            .finish_non_exhaustive()
    }
}

impl DeadLetterLayer {
    /// Dead letters go out through `publisher`, to `<topic>.dlq`, on
    /// permanent failures only until [`after_attempts`](Self::after_attempts)
    /// is set.
    pub fn new(publisher: impl Publisher) -> Self {
        Self {
            publisher: Arc::new(publisher),
            after_attempts: None,
            suffix: ".dlq".to_owned(),
        }
    }

    /// Also dead-letter a retryable failure of delivery attempt `n` or later.
    pub fn after_attempts(mut self, n: u32) -> Self {
        self.after_attempts = Some(n.max(1));
        self
    }

    /// Appended to the topic to name its dead-letter topic.
    pub fn suffix(mut self, suffix: impl Into<String>) -> Self {
        self.suffix = suffix.into();
        self
    }
}

impl<S> Layer<S> for DeadLetterLayer {
    type Service = DeadLetter<S>;
    fn layer(&self, inner: S) -> DeadLetter<S> {
        DeadLetter {
            inner,
            config: self.clone(),
        }
    }
}

/// See [`DeadLetterLayer`].
#[derive(Clone, Debug)]
pub struct DeadLetter<S> {
    inner: S,
    config: DeadLetterLayer,
}

impl<S> Service<Received> for DeadLetter<S>
where
    S: Service<Received>,
    S::Response: Into<Outgoing>,
    S::Error: Into<HandlerError>,
    S::Future: Send + 'static,
{
    type Response = Outgoing;
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<Outgoing, HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, received: Received) -> Self::Future {
        let original = received.clone();
        let call = self.inner.call(received);
        let config = self.config.clone();
        Box::pin(async move {
            let error: HandlerError = match call.await {
                Ok(out) => return Ok(out.into()),
                Err(e) => e.into(),
            };
            let last = config
                .after_attempts
                .is_some_and(|n| original.attempt() >= n);
            if error.disposition() != Disposition::DeadLetter && !last {
                return Err(error);
            }
            let reason = error.to_string();
            let chain = error_chain(&error);
            let message = dead_letter_message(&original, &reason, Some(&chain));
            let topic = format!("{}{}", original.topic(), config.suffix);
            match config.publisher.publish_boxed(&topic, message).await {
                Ok(_) => {
                    tracing::warn!(
                        topic = original.topic(),
                        dead_letter = topic,
                        reason,
                        "message dead-lettered"
                    );
                    Ok(Outgoing::none())
                }
                Err(e) => Err(HandlerError::retry(e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msg_core::{BoxError, Message, Metadata, handler_fn, headers};
    use msg_memory::{MemoryBroker, MemoryConfig};
    use tower::ServiceExt;

    fn received(attempt: u32) -> Received {
        Received {
            message: Message::new("order 7").with_header("x-app", "shop"),
            metadata: Metadata::new("orders").with_attempt(attempt),
        }
    }

    fn broker() -> MemoryBroker {
        MemoryBroker::with_config(MemoryConfig::default().retention(10)).unwrap()
    }

    #[tokio::test]
    async fn a_permanent_failure_is_published_with_the_reserved_headers_and_acked() {
        let b = broker();
        let failing = handler_fn(|_r: Received| async {
            Err::<(), _>(HandlerError::dead_letter("amount missing"))
        });
        let out = DeadLetterLayer::new(b.clone())
            .layer(failing)
            .oneshot(received(1))
            .await
            .unwrap();
        assert!(out.is_empty(), "acked with nothing to publish");
        let dead = b.published("orders.dlq");
        assert_eq!(dead.len(), 1);
        let m = &dead[0];
        assert_eq!(&m.payload()[..], b"order 7");
        assert_eq!(m.header("x-app"), Some("shop"));
        assert_eq!(
            m.header(headers::DEAD_LETTER_REASON),
            Some("amount missing")
        );
        assert_eq!(m.header(headers::ORIGINAL_TOPIC), Some("orders"));
        assert_eq!(m.header(headers::ATTEMPTS), Some("1"));
        assert_eq!(m.header(headers::ERROR), Some("amount missing"));
        assert!(m.header(headers::DEAD_LETTERED_AT).is_some());
    }

    #[tokio::test]
    async fn retryable_failures_pass_until_the_last_attempt() {
        let b = broker();
        let layer = DeadLetterLayer::new(b.clone()).after_attempts(3);
        let failing = handler_fn(|_r: Received| async { Err::<(), BoxError>("flaky".into()) });
        let err = layer
            .clone()
            .layer(failing.clone())
            .oneshot(received(2))
            .await
            .unwrap_err();
        assert_eq!(err.disposition(), Disposition::Retry);
        assert!(b.published("orders.dlq").is_empty());
        layer.layer(failing).oneshot(received(3)).await.unwrap();
        assert_eq!(b.published("orders.dlq").len(), 1);
    }

    #[tokio::test]
    async fn when_the_dead_letter_cannot_be_published_the_delivery_is_retried() {
        let b = broker();
        Publisher::close(&b).await.unwrap();
        let failing =
            handler_fn(|_r: Received| async { Err::<(), _>(HandlerError::dead_letter("bad")) });
        let err = DeadLetterLayer::new(b.clone())
            .layer(failing)
            .oneshot(received(1))
            .await
            .unwrap_err();
        assert_eq!(err.disposition(), Disposition::Retry, "nothing is lost");
    }
}
