//! Tracing across the broker: one trace from producer to consumer.
//!
//! [`TracingLayer`] opens a span per handled message with the OpenTelemetry
//! messaging attributes, whose parent is the context carried in the
//! message's W3C `traceparent` / `tracestate` headers. [`TracedPublisher`]
//! opens a span per publish and writes the current context into those
//! headers. With a `tracing-opentelemetry` layer installed, the consumer's
//! span is a child of the producer's, across any transport.

use crate::failed;
use msg_core::BoxError;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use msg_core::{
    BatchError, Capabilities, HandlerError, Headers, Message, Outgoing, PublishOptions, Publisher,
    Receipt, Received, Result, headers,
};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderReader<'a>(&'a Headers);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k).collect()
    }
}

struct HeaderWriter<'a>(&'a mut Headers);

impl Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value);
    }
}

/// A span per handled message, child of the producer's; see the
/// [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingLayer;

impl TracingLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for TracingLayer {
    type Service = Traced<S>;
    fn layer(&self, inner: S) -> Traced<S> {
        Traced { inner }
    }
}

/// See [`TracingLayer`].
#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
}

impl<S> Service<Received> for Traced<S>
where
    S: Service<Received>,
    S::Response: Into<Outgoing>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Outgoing;
    type Error = HandlerError;
    type Future = BoxFuture<'static, std::result::Result<Outgoing, HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), HandlerError>> {
        self.inner.poll_ready(cx).map_err(failed)
    }

    fn call(&mut self, received: Received) -> Self::Future {
        let span = tracing::info_span!(
            "process",
            otel.name = %format!("process {}", received.topic()),
            otel.kind = "consumer",
            messaging.operation.type = "process",
            messaging.destination.name = %received.topic(),
            messaging.message.id = %received.message.id(),
            messaging.message.conversation_id = received.message.header(headers::CORRELATION_ID),
            messaging.message.body.size = received.message.payload().len(),
            messaging.consumer.group.name = received.metadata.group.as_deref(),
            messaging.message.delivery_attempt = received.attempt(),
            error.type = tracing::field::Empty,
        );
        // A disabled span (no subscriber wants it) needs no parent.
        if !span.is_disabled() {
            let parent =
                TraceContextPropagator::new().extract(&HeaderReader(received.message.headers()));
            // An error means no OpenTelemetry layer is installed: nothing to link.
            let _ = span.set_parent(parent);
        }
        let call = self.inner.call(received);
        let recorded = span.clone();
        Box::pin(
            async move {
                let result = call.await.map(Into::into).map_err(failed);
                if let Err(e) = &result {
                    recorded.record("error.type", e.settlement().name());
                }
                result
            }
            .instrument(span),
        )
    }
}

/// A publisher that opens a span per publish and carries its context in
/// the message headers; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct TracedPublisher<P> {
    inner: P,
}

impl<P: Publisher> TracedPublisher<P> {
    /// Traces the publishes of `inner`.
    pub fn new(inner: P) -> Self {
        Self { inner }
    }
}

fn send_span(topic: &str) -> tracing::Span {
    tracing::info_span!(
        "send",
        otel.name = %format!("send {topic}"),
        otel.kind = "producer",
        messaging.operation.type = "send",
        messaging.destination.name = %topic,
    )
}

fn inject(span: &tracing::Span, message: &mut Message) {
    if !span.is_disabled() {
        TraceContextPropagator::new()
            .inject_context(&span.context(), &mut HeaderWriter(message.headers_mut()));
    }
}

impl<P: Publisher> Publisher for TracedPublisher<P> {
    async fn publish_with(
        &self,
        topic: &str,
        mut message: Message,
        options: PublishOptions,
    ) -> Result<Receipt> {
        let span = send_span(topic);
        inject(&span, &mut message);
        self.inner
            .publish_with(topic, message, options)
            .instrument(span)
            .await
    }

    async fn publish_batch(
        &self,
        topic: &str,
        mut messages: Vec<Message>,
    ) -> Result<Vec<Receipt>, BatchError> {
        let span = send_span(topic);
        for message in &mut messages {
            inject(&span, message);
        }
        self.inner
            .publish_batch(topic, messages)
            .instrument(span)
            .await
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
