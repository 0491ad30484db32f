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
//! to do (a retry is a nack, a retry-after a defer).

use crate::failed;
use msg_core::BoxError;
use msg_core::Settlement;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use msg_core::{
    BatchError, Capabilities, Error, HandlerError, Message, Outgoing, PublishOptions, Publisher,
    Receipt, Received, Result,
};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio::time::Instant;
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
        }
    }
}

/// See [`MetricsLayer`].
#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: Metrics,
    handler: String,
}

impl<S> Service<Received> for Metered<S>
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
        let m = self.metrics.clone();
        let labels = [
            received.topic().to_owned(),
            received.metadata.group.as_deref().unwrap_or("").to_owned(),
            self.handler.clone(),
        ];
        let refs = [labels[0].as_str(), labels[1].as_str(), labels[2].as_str()];
        m.consumed.with_label_values(&refs).inc();
        let in_flight = m.in_flight.with_label_values(&refs);
        in_flight.inc();
        let started = Instant::now();
        let call = self.inner.call(received);
        Box::pin(async move {
            let result = call.await.map(Into::into).map_err(failed);
            let refs = [labels[0].as_str(), labels[1].as_str(), labels[2].as_str()];
            in_flight.dec();
            m.process_duration
                .with_label_values(&refs)
                .observe(started.elapsed().as_secs_f64());
            let outcome = match &result {
                Ok(_) => &m.acked,
                Err(e) => match e.settlement() {
                    Settlement::Ack => &m.acked,
                    Settlement::Retry => &m.retried,
                    Settlement::RetryAfter(_) => &m.retried_after,
                    Settlement::DeadLetter(_) => &m.dead_lettered,
                },
            };
            outcome.with_label_values(&refs).inc();
            result
        })
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
