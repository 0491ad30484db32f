//! Correlation ids: one id for all messages of a conversation.
//!
//! The handler sees the `correlation-id` header of the message it handles,
//! created (UUID v7) when the message had none, and every message it
//! returns for publishing carries the same id unless it set its own.

use crate::failed;
use msg_core::BoxError;
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::BoxFuture;
use msg_core::{HandlerError, Outgoing, Received, Uuid, headers};
use tower::{Layer, Service};

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
    S::Future: Send + 'static,
{
    type Response = Outgoing;
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<Outgoing, HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx).map_err(failed)
    }

    fn call(&mut self, mut received: Received) -> Self::Future {
        let id = match received.message.header(headers::CORRELATION_ID) {
            Some(id) => id.to_owned(),
            None => {
                let id = Uuid::now_v7().to_string();
                received
                    .message
                    .headers_mut()
                    .insert(headers::CORRELATION_ID, &id);
                id
            }
        };
        self.inner
            .call(received)
            .map(move |result| {
                let outgoing: Outgoing = result.map_err(failed)?.into();
                let mut tagged = Outgoing::none();
                for (topic, mut message) in outgoing {
                    if !message.headers().contains(headers::CORRELATION_ID) {
                        message.headers_mut().insert(headers::CORRELATION_ID, &id);
                    }
                    tagged.push(topic, message);
                }
                Ok(tagged)
            })
            .boxed()
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

    #[tokio::test]
    async fn an_incoming_id_is_seen_by_the_handler_and_copied_onto_its_messages() {
        let incoming = Message::new("x").with_header(headers::CORRELATION_ID, "conv-1");
        let out: Vec<_> = CorrelationIdLayer::new()
            .layer(echo_twice())
            .oneshot(received(incoming))
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(&out[0].1.payload()[..], b"conv-1", "the handler saw the id");
        assert_eq!(out[0].1.header(headers::CORRELATION_ID), Some("conv-1"));
        assert_eq!(
            out[1].1.header(headers::CORRELATION_ID),
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
