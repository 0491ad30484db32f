//! Tracing across the broker: one trace from producer to consumer.
//!
//! [`TracingLayer`] opens a span per handled message with the OpenTelemetry
//! messaging attributes, whose parent is the context carried in the
//! message's W3C `traceparent` / `tracestate` headers. [`TracedPublisher`]
//! opens a span per publish and writes the current context into those
//! headers. With a `tracing-opentelemetry` layer installed, the consumer's
//! span is a child of the producer's, across any transport, and the
//! messages a handler returns continue the trace from its span. The
//! propagator is the globally configured one
//! (`opentelemetry::global::set_text_map_propagator`), W3C trace context
//! when none is set.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use msg_core::{
    BatchError, BoxError, Capabilities, HandlerError, Headers, Message, Outgoing, PublishOptions,
    Publisher, Receipt, Received, Result, headers,
};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::failed;

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
{
    type Response = Outgoing;
    type Error = HandlerError;
    type Future = TracedFuture<S::Future>;

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
            let parent = with_propagator(|p| p.extract(&HeaderReader(received.message.headers())));
            // An error means no OpenTelemetry layer is installed: nothing to link.
            let _ = span.set_parent(parent);
        }
        let inner = {
            let _entered = span.enter();
            self.inner.call(received)
        };
        TracedFuture { inner, span }
    }
}

/// A batch gets one span, linked (not parented) to the context each of
/// its messages carries, as the OpenTelemetry messaging conventions have
/// it for batches; the messages the handler returns carry the span.
impl<S> Service<Vec<Received>> for Traced<S>
where
    S: Service<Vec<Received>>,
    S::Response: Into<Outgoing>,
    S::Error: Into<BoxError>,
{
    type Response = Outgoing;
    type Error = HandlerError;
    type Future = TracedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), HandlerError>> {
        self.inner.poll_ready(cx).map_err(failed)
    }

    fn call(&mut self, batch: Vec<Received>) -> Self::Future {
        let topic = batch.first().map_or("", |r| r.topic());
        let span = tracing::info_span!(
            "process",
            otel.name = %format!("process {topic}"),
            otel.kind = "consumer",
            messaging.operation.type = "process",
            messaging.destination.name = topic,
            messaging.batch.message_count = batch.len(),
            messaging.consumer.group.name = batch.first().and_then(|r| r.metadata.group.as_deref()),
            error.type = tracing::field::Empty,
        );
        if !span.is_disabled() {
            for received in &batch {
                let context =
                    with_propagator(|p| p.extract(&HeaderReader(received.message.headers())));
                let linked = opentelemetry::trace::TraceContextExt::span(&context)
                    .span_context()
                    .clone();
                if linked.is_valid() {
                    span.add_link(linked);
                }
            }
        }
        let inner = {
            let _entered = span.enter();
            self.inner.call(batch)
        };
        TracedFuture { inner, span }
    }
}

pin_project_lite::pin_project! {
    /// The future of a [`Traced`] handler call: polled inside the span,
    /// and the messages the handler returns carry the span's context.
    pub struct TracedFuture<F> {
        #[pin]
        inner: F,
        span: tracing::Span,
    }
}

impl<F, R, E> Future for TracedFuture<F>
where
    F: Future<Output = std::result::Result<R, E>>,
    R: Into<Outgoing>,
    E: Into<BoxError>,
{
    type Output = std::result::Result<Outgoing, HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let mut result = std::task::ready!(this.inner.poll(cx))
            .map(Into::into)
            .map_err(failed);
        if !this.span.is_disabled() {
            match &mut result {
                // The router publishes them after the handler returned,
                // outside this span: they carry it, so that the next hop's
                // parent is this span (unless they set their own).
                Ok(outgoing) => {
                    let context = this.span.context();
                    for (_, message) in outgoing.iter_mut() {
                        if !message.headers().contains(headers::TRACEPARENT) {
                            with_propagator(|p| {
                                p.inject_context(&context, &mut HeaderWriter(message.headers_mut()))
                            });
                        }
                    }
                }
                Err(e) => {
                    this.span.record("error.type", e.settlement().name());
                }
            }
        }
        Poll::Ready(result)
    }
}

/// Runs `f` with the globally configured propagator
/// (`opentelemetry::global::set_text_map_propagator`), or W3C trace
/// context when none was set.
fn with_propagator<T>(f: impl FnOnce(&dyn TextMapPropagator) -> T) -> T {
    let mut f = Some(f);
    opentelemetry::global::get_text_map_propagator(|global| {
        let f = f.take().expect("called once");
        // The default global propagator is a no-op, which names no fields.
        if global.fields().next().is_some() {
            f(global)
        } else {
            f(&TraceContextPropagator::new())
        }
    })
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

/// Writes the send span's context into the message. With no span of its
/// own around the publish (the router publishing what a handler returned),
/// the send span's parent is the context the message already carries.
fn inject(span: &tracing::Span, message: &mut Message) {
    if span.is_disabled() {
        return;
    }
    if tracing::Span::current().is_none() && message.headers().contains(headers::TRACEPARENT) {
        let parent = with_propagator(|p| p.extract(&HeaderReader(message.headers())));
        let _ = span.set_parent(parent);
    }
    let context = span.context();
    with_propagator(|p| p.inject_context(&context, &mut HeaderWriter(message.headers_mut())));
}

/// Writes the current span's context into `message`, unless it carries a
/// trace context already: for a message stored before it is published (the
/// outbox), so that the trace goes on from where it was written. Without a
/// current span it writes nothing.
pub fn inject_current_context(message: &mut Message) {
    if message.headers().contains(headers::TRACEPARENT) {
        return;
    }
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    let context = span.context();
    if !opentelemetry::trace::TraceContextExt::span(&context)
        .span_context()
        .is_valid()
    {
        return;
    }
    with_propagator(|p| p.inject_context(&context, &mut HeaderWriter(message.headers_mut())));
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
