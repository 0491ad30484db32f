//! The handling metrics: a layer over handlers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
// Real durations, whatever a test does to tokio's clock.
use std::time::Instant;

use msg_core::{BoxError, HandlerError, Outgoing, Received, Settlement};
use prometheus::{Histogram, IntCounter, IntGauge};
use tower::{Layer, Service};

use super::Metrics;
use crate::failed;

/// Records handling metrics; made by [`Metrics::layer`].
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    pub(super) metrics: Metrics,
    pub(super) handler: String,
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metered<S>;
    fn layer(&self, inner: S) -> Metered<S> {
        Metered {
            inner,
            metrics: self.metrics.clone(),
            handler: self.handler.clone(),
            last: None,
        }
    }
}

/// See [`MetricsLayer`].
#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: Metrics,
    handler: String,
    /// The series of the last topic and group seen: a subscription's
    /// messages nearly always share them, so the label lookups (three
    /// strings, a hash) happen once, not per message.
    last: Option<Arc<Series>>,
}

/// One topic, group and handler's metrics.
#[derive(Debug)]
struct Series {
    topic: Arc<str>,
    group: Option<Arc<str>>,
    consumed: IntCounter,
    acked: IntCounter,
    retried: IntCounter,
    retried_after: IntCounter,
    dead_lettered: IntCounter,
    process_duration: Histogram,
    in_flight: IntGauge,
}

impl Series {
    fn new(metrics: &Metrics, topic: &Arc<str>, group: &Option<Arc<str>>, handler: &str) -> Self {
        let labels = [&**topic, group.as_deref().unwrap_or(""), handler];
        Self {
            topic: topic.clone(),
            group: group.clone(),
            consumed: metrics.consumed.with_label_values(&labels),
            acked: metrics.acked.with_label_values(&labels),
            retried: metrics.retried.with_label_values(&labels),
            retried_after: metrics.retried_after.with_label_values(&labels),
            dead_lettered: metrics.dead_lettered.with_label_values(&labels),
            process_duration: metrics.process_duration.with_label_values(&labels),
            in_flight: metrics.in_flight.with_label_values(&labels),
        }
    }

    fn is_for(&self, topic: &Arc<str>, group: &Option<Arc<str>>) -> bool {
        self.topic == *topic && self.group == *group
    }
}

impl<S> Service<Received> for Metered<S>
where
    S: Service<Received>,
    S::Response: Into<Outgoing>,
    S::Error: Into<BoxError>,
{
    type Response = Outgoing;
    type Error = HandlerError;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), HandlerError>> {
        self.inner.poll_ready(cx).map_err(failed)
    }

    fn call(&mut self, received: Received) -> Self::Future {
        let series = self.series(&received.metadata.topic, &received.metadata.group);
        let call = InFlight::start(series, 1);
        MeteredFuture {
            inner: self.inner.call(received),
            call,
        }
    }
}

/// A batch counts as its messages (consumed, in flight, and the outcome of
/// each), and its call is one observation of the process duration.
impl<S> Service<Vec<Received>> for Metered<S>
where
    S: Service<Vec<Received>>,
    S::Response: Into<Outgoing>,
    S::Error: Into<BoxError>,
{
    type Response = Outgoing;
    type Error = HandlerError;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), HandlerError>> {
        self.inner.poll_ready(cx).map_err(failed)
    }

    fn call(&mut self, batch: Vec<Received>) -> Self::Future {
        // A batch comes from one subscription: its first message names it.
        let (topic, group) = batch
            .first()
            .map(|r| (r.metadata.topic.clone(), r.metadata.group.clone()))
            .unwrap_or_else(|| (Arc::from(""), None));
        let series = self.series(&topic, &group);
        let call = InFlight::start(series, batch.len() as u64);
        MeteredFuture {
            inner: self.inner.call(batch),
            call,
        }
    }
}

impl<S> Metered<S> {
    fn series(&mut self, topic: &Arc<str>, group: &Option<Arc<str>>) -> Arc<Series> {
        match &self.last {
            Some(series) if series.is_for(topic, group) => series.clone(),
            _ => {
                let series = Arc::new(Series::new(&self.metrics, topic, group, &self.handler));
                self.last = Some(series.clone());
                series
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a [`Metered`] handler call.
    pub struct MeteredFuture<F> {
        #[pin]
        inner: F,
        call: InFlight,
    }
}

/// One call in flight: the gauge goes down when it ends, however it ends
/// (a result, a panic, or its future dropped); a panic counts as a retry,
/// which is what the router makes of it.
#[derive(Debug)]
struct InFlight {
    series: Arc<Series>,
    /// The messages of the call: 1, or a batch's.
    messages: u64,
    started: Instant,
    done: bool,
}

/// How a call ended, for its counter.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Acked,
    Retried,
    RetriedAfter,
    DeadLettered,
}

impl InFlight {
    fn start(series: Arc<Series>, messages: u64) -> Self {
        series.consumed.inc_by(messages);
        // A gauge of at most a batch's size.
        series.in_flight.add(messages as i64);
        Self {
            series,
            messages,
            started: Instant::now(),
            done: false,
        }
    }

    fn end(&mut self, outcome: Option<Outcome>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let (series, n) = (&self.series, self.messages);
        series.in_flight.sub(n as i64);
        series
            .process_duration
            .observe(self.started.elapsed().as_secs_f64());
        match outcome {
            Some(Outcome::Acked) => series.acked.inc_by(n),
            Some(Outcome::Retried) => series.retried.inc_by(n),
            Some(Outcome::RetriedAfter) => series.retried_after.inc_by(n),
            Some(Outcome::DeadLettered) => series.dead_lettered.inc_by(n),
            None => {}
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.end(None);
    }
}

/// Ends the call as retried if polling the handler panics.
struct OnPanic<'a>(Option<&'a mut InFlight>);

impl OnPanic<'_> {
    fn defuse(mut self) {
        self.0 = None;
    }
}

impl Drop for OnPanic<'_> {
    fn drop(&mut self) {
        if let Some(call) = self.0.take()
            && std::thread::panicking()
        {
            call.end(Some(Outcome::Retried));
        }
    }
}

impl<F, R, E> Future for MeteredFuture<F>
where
    F: Future<Output = std::result::Result<R, E>>,
    R: Into<Outgoing>,
    E: Into<BoxError>,
{
    type Output = std::result::Result<Outgoing, HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let guard = OnPanic(Some(&mut *this.call));
        let polled = this.inner.poll(cx);
        guard.defuse();
        let result = std::task::ready!(polled).map(Into::into).map_err(failed);
        let outcome = match &result {
            Ok(_) => Outcome::Acked,
            Err(e) if e.is_dead_letter() => Outcome::DeadLettered,
            Err(e) => match e.settlement() {
                Settlement::RetryAfter(_) => Outcome::RetriedAfter,
                _ => Outcome::Retried,
            },
        };
        this.call.end(Some(outcome));
        Poll::Ready(result)
    }
}
