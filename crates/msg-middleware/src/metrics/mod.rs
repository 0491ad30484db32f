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

use msg_core::{Error, Publisher, Result};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

mod handler;
mod publisher;

pub use handler::{Metered, MeteredFuture, MetricsLayer};
pub use publisher::MeteredPublisher;

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

#[cfg(test)]
mod tests {
    use super::*;
    use msg_core::{HandlerError, Message, Outgoing, Received};
    use msg_core::{Metadata, service};
    use msg_memory::MemoryBroker;
    use tower::ServiceExt;
    use tower::{Layer, Service};

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
