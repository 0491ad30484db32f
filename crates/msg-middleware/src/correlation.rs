//! Correlation ids: one id for all messages of a conversation.
//!
//! The handler sees the `correlation-id` header of the message it handles,
//! created (UUID v7) when the message had none, and every message it
//! returns for publishing carries the same id unless it set its own. (The
//! router copies an id the message arrived with; the layer copies the one
//! it created.)

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use msg_core::{BoxError, HandlerError, Outgoing, Received, Uuid, headers};
use tower::{Layer, Service};

use crate::failed;

/// Reads or creates the `correlation-id` and copies it onto the messages
/// the handler publishes.
#[derive(Debug, Clone, Copy, Default)]
pub struct CorrelationIdLayer;

impl CorrelationIdLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for CorrelationIdLayer {
    type Service = CorrelationId<S>;
    fn layer(&self, inner: S) -> CorrelationId<S> {
        CorrelationId { inner }
    }
}

/// See [`CorrelationIdLayer`].
#[derive(Debug, Clone)]
pub struct CorrelationId<S> {
    inner: S,
}

impl<S> Service<Received> for CorrelationId<S>
where
    S: Service<Received>,
    S::Response: Into<Outgoing>,
    S::Error: Into<BoxError>,
{
    type Response = Outgoing;
    type Error = HandlerError;
    type Future = CorrelationFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx).map_err(failed)
    }

    fn call(&mut self, mut received: Received) -> Self::Future {
        // An id the message carries reaches what the handler returns
        // through the router, which copies it; only a new one is ours to
        // copy.
        let created = if received.message.headers().contains(headers::CORRELATION_ID) {
            None
        } else {
            let id = Uuid::now_v7().to_string();
            received
                .message
                .headers_mut()
                .insert(headers::CORRELATION_ID, &id);
            Some(id)
        };
        CorrelationFuture {
            inner: self.inner.call(received),
            created,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a [`CorrelationId`] call.
    pub struct CorrelationFuture<F> {
        #[pin]
        inner: F,
        created: Option<String>,
    }
}

impl<F, R, E> Future for CorrelationFuture<F>
where
    F: Future<Output = Result<R, E>>,
    R: Into<Outgoing>,
    E: Into<BoxError>,
{
    type Output = Result<Outgoing, HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut outgoing: Outgoing = std::task::ready!(this.inner.poll(cx))
            .map_err(failed)?
            .into();
        if let Some(id) = this.created {
            for (_, message) in outgoing.iter_mut() {
                if !message.headers().contains(headers::CORRELATION_ID) {
                    message
                        .headers_mut()
                        .insert(headers::CORRELATION_ID, id.clone());
                }
            }
        }
        Poll::Ready(Ok(outgoing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msg_core::{Message, Metadata, service};
    use tower::ServiceExt;

    fn received(message: Message) -> Received {
        Received {
            message,
            metadata: Metadata::new("orders"),
        }
    }

    fn echo_twice() -> msg_core::BoxHandler {
        msg_core::raw::box_handler(service(|r: Received| async move {
            let seen = r
                .header(headers::CORRELATION_ID)
                .unwrap_or("none")
                .to_owned();
            Ok(Outgoing::none().with("a", Message::new(seen)).with(
                "b",
                Message::new("own").with_header(headers::CORRELATION_ID, "mine"),
            ))
        }))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_incoming_id_is_seen_by_the_handler_and_carried_by_its_messages() {
        use msg_core::{Publisher, Router, Subscription};
        let broker = msg_memory::MemoryBroker::with_config(
            msg_memory::MemoryConfig::default().retention(10),
        )
        .unwrap();
        let router = Router::new(broker.clone(), broker.clone())
            .handle(Subscription::new("orders").group("svc"), echo_twice())
            .layer(CorrelationIdLayer::new())
            .start()
            .await
            .unwrap();
        broker
            .publish(
                "orders",
                Message::new("x").with_header(headers::CORRELATION_ID, "conv-1"),
            )
            .await
            .unwrap();
        broker
            .wait_for(
                "orders",
                |s| s.acked == 1,
                std::time::Duration::from_secs(5),
            )
            .await
            .unwrap();
        router.shutdown().await;
        let a = &broker.published("a")[0];
        assert_eq!(&a.payload()[..], b"conv-1", "the handler saw the id");
        assert_eq!(a.header(headers::CORRELATION_ID), Some("conv-1"));
        assert_eq!(
            broker.published("b")[0].header(headers::CORRELATION_ID),
            Some("mine"),
            "an id the handler set is kept"
        );
    }

    #[tokio::test]
    async fn a_missing_id_is_created() {
        let out: Vec<_> = CorrelationIdLayer::new()
            .layer(echo_twice())
            .oneshot(received(Message::new("x")))
            .await
            .unwrap()
            .into_iter()
            .collect();
        let created = out[0].1.header(headers::CORRELATION_ID).unwrap();
        assert_eq!(Uuid::parse_str(created).unwrap().get_version_num(), 7);
        assert_eq!(&out[0].1.payload()[..], created.as_bytes());
    }
}
