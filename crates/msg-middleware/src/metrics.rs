//! Prometheus metrics of handling and publishing.
//!
//! Names follow the OpenTelemetry messaging semantic conventions where
//! they fit, in Prometheus form; the registry is yours.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `messaging_client_consumed_messages_total` | counter | topic, group, handler |
//! | `msg_acked_total`, `msg_retried_total`, `msg_retried_after_total`, `msg_dead_lettered_total` | counter | topic, group, handler |
//! | `messaging_process_duration_seconds` | histogram | topic, group, handler |
//! | `msg_in_flight` | gauge | topic, group, handler |
//! | `messaging_client_sent_messages_total` | counter | topic |
//! | `messaging_client_operation_duration_seconds` | histogram | operation (`publish`), topic |
//!
//! "acked" and the others count what the handler's result asks the router
//! to do; a handler that panics counts as retried (the router retries it).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use msg_core::{
    BatchError, BoxError, Capabilities, Error, HandlerError, Message, Outgoing, PublishOptions,
    Publisher, Receipt, Received, Result, Settlement,
};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::failed;
// Real durations, whatever a test does to tokio's clock.
use std::time::Instant;
use tower::{Layer, Service};

/// The metric families, registered once in a registry and shared by every
/// layer and publisher decorator that uses them.
#[derive(Debug, Clone)]
pub struct Metrics {
    consumed: IntCounterVec,
    acked: IntCounterVec,
    retried: IntCounterVec,
    retried_after: IntCounterVec,
    dead_lettered: IntCounterVec,
    process_duration: HistogramVec,
    in_flight: IntGaugeVec,
    sent: IntCounterVec,
    operation_duration: HistogramVec,
}

const HANDLER_LABELS: &[&str] = &["topic", "group", "handler"];

impl Metrics {
    /// Creates the metric families and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self> {
        let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), labels).map_err(config_error)?;
            registry
                .register(Box::new(c.clone()))
                .map_err(config_error)?;
            Ok(c)
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| -> Result<HistogramVec> {
            let h =
                HistogramVec::new(HistogramOpts::new(name, help), labels).map_err(config_error)?;
            registry
                .register(Box::new(h.clone()))
                .map_err(config_error)?;
            Ok(h)
        };
        let in_flight = IntGaugeVec::new(
            Opts::new("msg_in_flight", "Messages being handled now."),
            HANDLER_LABELS,
        )
        .map_err(config_error)?;
        registry
            .register(Box::new(in_flight.clone()))
            .map_err(config_error)?;
        Ok(Self {
            consumed: counter(
                "messaging_client_consumed_messages_total",
                "Messages handed to a handler.",
                HANDLER_LABELS,
            )?,
            acked: counter(
                "msg_acked_total",
                "Messages handled successfully.",
                HANDLER_LABELS,
            )?,
            retried: counter(
                "msg_retried_total",
                "Messages whose handler asked for a retry.",
                HANDLER_LABELS,
            )?,
            retried_after: counter(
                "msg_retried_after_total",
                "Messages whose handler asked for a later retry.",
                HANDLER_LABELS,
            )?,
            dead_lettered: counter(
                "msg_dead_lettered_total",
                "Messages whose handler failed permanently.",
                HANDLER_LABELS,
            )?,
            process_duration: histogram(
                "messaging_process_duration_seconds",
                "How long handlers took.",
                HANDLER_LABELS,
            )?,
            in_flight,
            sent: counter(
                "messaging_client_sent_messages_total",
                "Messages published.",
                &["topic"],
            )?,
            operation_duration: histogram(
                "messaging_client_operation_duration_seconds",
                "How long publishes took.",
                &["operation", "topic"],
            )?,
        })
    }

    /// A layer that records the handling metrics under the label `handler`.
    pub fn layer(&self, handler: impl Into<String>) -> MetricsLayer {
        MetricsLayer {
            metrics: self.clone(),
            handler: handler.into(),
        }
    }

    /// Wraps `publisher` so that its publishes are counted and timed.
    pub fn publisher<P: Publisher>(&self, publisher: P) -> MeteredPublisher<P> {
        MeteredPublisher {
            inner: publisher,
            metrics: self.clone(),
        }
    }
}

fn config_error(e: prometheus::Error) -> Error {
    Error::invalid_config_with("metrics", e)
}

/// Records handling metrics; made by [`Metrics::layer`].
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: Metrics,
    handler: String,
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

/// A publisher whose publishes are counted and timed; made by
/// [`Metrics::publisher`].
#[derive(Debug, Clone)]
pub struct MeteredPublisher<P> {
    inner: P,
    metrics: Metrics,
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

#[cfg(test)]
mod tests {
    use super::*;
    use msg_core::{Metadata, service};
    use msg_memory::MemoryBroker;
    use tower::ServiceExt;

    fn value(registry: &Registry, name: &str, label: &str) -> f64 {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter())
            .filter(|m| m.get_label().iter().any(|l| l.value() == label))
            .map(|m| {
                if m.get_counter().get_value() != 0.0 {
                    m.get_counter().get_value()
                } else if m.get_histogram().get_sample_count() != 0 {
                    m.get_histogram().get_sample_count() as f64
                } else {
                    m.get_gauge().get_value()
                }
            })
            .sum()
    }

    fn received(payload: &'static str) -> Received {
        Received {
            message: Message::new(payload),
            metadata: Metadata::new("orders").with_group(Some("billing".into())),
        }
    }

    #[tokio::test]
    async fn outcomes_durations_and_in_flight_are_recorded() {
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).unwrap();
        let handler = metrics
            .layer("bill")
            .layer(service(|r: Received| async move {
                match r.payload().as_ref() {
                    b"ok" => Ok(()),
                    b"retry" => Err(HandlerError::retry("busy")),
                    b"later" => Err(HandlerError::retry_after(
                        "busy",
                        std::time::Duration::from_secs(1),
                    )),
                    _ => Err::<(), _>(HandlerError::dead_letter("bad")),
                }
            }));
        for p in ["ok", "ok", "retry", "later", "bad"] {
            let _ = handler.clone().oneshot(received(p)).await;
        }
        let v = |name| value(&registry, name, "bill");
        assert_eq!(v("messaging_client_consumed_messages_total"), 5.0);
        assert_eq!(v("msg_acked_total"), 2.0);
        assert_eq!(v("msg_retried_total"), 1.0);
        assert_eq!(v("msg_retried_after_total"), 1.0);
        assert_eq!(v("msg_dead_lettered_total"), 1.0);
        assert_eq!(v("messaging_process_duration_seconds"), 5.0);
        assert_eq!(v("msg_in_flight"), 0.0);
        assert_eq!(
            value(&registry, "msg_acked_total", "billing"),
            2.0,
            "the group label"
        );
    }

    #[tokio::test]
    async fn a_batch_counts_its_messages_and_one_duration() {
        use futures::FutureExt;
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).unwrap();
        let mut handler =
            metrics
                .layer("bill")
                .layer(tower::service_fn(|batch: Vec<Received>| async move {
                    if batch.iter().any(|r| r.payload().as_ref() == b"hang") {
                        std::future::pending::<()>().await;
                    }
                    if batch.len() == 2 {
                        return Err(HandlerError::retry("busy"));
                    }
                    Ok::<_, HandlerError>(Outgoing::none())
                }));
        let v = |name| value(&registry, name, "bill");
        let batch = |ps: &[&'static str]| ps.iter().map(|p| received(p)).collect::<Vec<_>>();
        let mut hanging = Box::pin(handler.call(batch(&["hang", "a", "b", "c"])));
        assert!(futures::poll!(hanging.as_mut()).is_pending());
        assert_eq!(v("msg_in_flight"), 4.0, "a batch's messages are in flight");
        drop(hanging);
        assert_eq!(v("msg_in_flight"), 0.0);
        handler
            .call(batch(&["a", "b", "c"]))
            .now_or_never()
            .unwrap()
            .unwrap();
        handler
            .call(batch(&["d", "e"]))
            .now_or_never()
            .unwrap()
            .unwrap_err();
        assert_eq!(v("messaging_client_consumed_messages_total"), 9.0);
        assert_eq!(v("msg_acked_total"), 3.0);
        assert_eq!(v("msg_retried_total"), 2.0);
        assert_eq!(
            v("messaging_process_duration_seconds"),
            3.0,
            "one observation per call"
        );
    }

    #[tokio::test]
    async fn in_flight_counts_running_calls_and_comes_down_on_panic_and_drop() {
        use futures::FutureExt;
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).unwrap();
        let mut handler = metrics
            .layer("bill")
            .layer(service(|r: Received| async move {
                match r.payload().as_ref() {
                    b"hang" => std::future::pending::<()>().await,
                    b"panic" => panic!("handler bug"),
                    _ => {}
                }
                Ok(())
            }));
        let in_flight = |registry: &Registry| value(registry, "msg_in_flight", "bill");

        let mut hanging = Box::pin(handler.call(received("hang")));
        assert!(futures::poll!(hanging.as_mut()).is_pending());
        assert_eq!(
            in_flight(&registry),
            1.0,
            "the gauge counts the running call"
        );
        drop(hanging);
        assert_eq!(
            in_flight(&registry),
            0.0,
            "a dropped call is no longer in flight"
        );

        let panicked = std::panic::AssertUnwindSafe(handler.call(received("panic")))
            .catch_unwind()
            .await;
        assert!(panicked.is_err());
        assert_eq!(
            in_flight(&registry),
            0.0,
            "a panicked call is no longer in flight"
        );
        assert_eq!(
            value(&registry, "msg_retried_total", "bill"),
            1.0,
            "a panic is retried"
        );
        assert_eq!(
            value(&registry, "messaging_process_duration_seconds", "bill"),
            2.0
        );
    }

    #[tokio::test]
    async fn publishes_are_counted_and_timed() {
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).unwrap();
        let publisher = metrics.publisher(MemoryBroker::new());
        publisher
            .publish("invoices", Message::new("1"))
            .await
            .unwrap();
        publisher
            .publish_batch("invoices", vec![Message::new("2"), Message::new("3")])
            .await
            .unwrap();
        assert!(
            publisher
                .publish("bad topic", Message::new("x"))
                .await
                .is_err()
        );
        assert_eq!(
            value(
                &registry,
                "messaging_client_sent_messages_total",
                "invoices"
            ),
            3.0
        );
        assert_eq!(
            value(
                &registry,
                "messaging_client_operation_duration_seconds",
                "invoices"
            ),
            2.0
        );
        assert_eq!(
            value(
                &registry,
                "messaging_client_sent_messages_total",
                "bad topic"
            ),
            0.0
        );
    }

    #[test]
    fn registering_twice_in_one_registry_is_a_clear_error() {
        let registry = Registry::new();
        Metrics::new(&registry).unwrap();
        let err = Metrics::new(&registry).unwrap_err();
        assert!(err.to_string().contains("metrics"), "{err}");
    }
}
