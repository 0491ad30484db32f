//! Prometheus metrics of the relay (feature `metrics`).

use msg_core::{Error, Result};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::store::OutboxStats;

/// The relay's metrics, registered in a registry you pass, labelled by
/// outbox table:
///
/// | metric | |
/// |---|---|
/// | `msg_outbox_published_total` | rows the broker accepted |
/// | `msg_outbox_retried_total` | failed publishes that will be tried again |
/// | `msg_outbox_failed_total` | rows moved to the failed state |
/// | `msg_outbox_lag_seconds` | from enqueue to the broker's acceptance |
/// | `msg_outbox_pending_rows` | rows not yet published |
/// | `msg_outbox_failed_rows` | rows in the failed state |
/// | `msg_outbox_oldest_pending_seconds` | the age of the oldest pending row |
///
/// The last three come from the table itself, read by a running relay
/// every `Relay::stats_interval` (default 10 s).
#[derive(Debug, Clone)]
pub struct OutboxMetrics {
    published: IntCounterVec,
    retried: IntCounterVec,
    failed: IntCounterVec,
    lag: HistogramVec,
    pending_rows: IntGaugeVec,
    failed_rows: IntGaugeVec,
    oldest_pending: IntGaugeVec,
}

impl OutboxMetrics {
    /// Registers the metrics in `registry`; registering twice in one
    /// registry is an error.
    pub fn new(registry: &Registry) -> Result<Self> {
        let counter = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["table"]).map_err(invalid)
        };
        let gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["table"]).map_err(invalid)
        };
        let metrics = Self {
            published: counter(
                "msg_outbox_published_total",
                "Outbox rows the broker accepted.",
            )?,
            retried: counter(
                "msg_outbox_retried_total",
                "Failed outbox publishes that will be tried again.",
            )?,
            failed: counter(
                "msg_outbox_failed_total",
                "Outbox rows moved to the failed state.",
            )?,
            lag: HistogramVec::new(
                HistogramOpts::new(
                    "msg_outbox_lag_seconds",
                    "From enqueue to the broker's acceptance.",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 300.0,
                ]),
                &["table"],
            )
            .map_err(invalid)?,
            pending_rows: gauge("msg_outbox_pending_rows", "Outbox rows not yet published.")?,
            failed_rows: gauge("msg_outbox_failed_rows", "Outbox rows in the failed state.")?,
            oldest_pending: gauge(
                "msg_outbox_oldest_pending_seconds",
                "The age of the oldest pending outbox row.",
            )?,
        };
        for collector in [
            Box::new(metrics.published.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.retried.clone()),
            Box::new(metrics.failed.clone()),
            Box::new(metrics.lag.clone()),
            Box::new(metrics.pending_rows.clone()),
            Box::new(metrics.failed_rows.clone()),
            Box::new(metrics.oldest_pending.clone()),
        ] {
            registry.register(collector).map_err(invalid)?;
        }
        Ok(metrics)
    }

    /// The series of one table.
    pub(crate) fn table(&self, table: &str) -> TableMetrics {
        TableMetrics {
            published: self.published.with_label_values(&[table]),
            retried: self.retried.with_label_values(&[table]),
            failed: self.failed.with_label_values(&[table]),
            lag: self.lag.with_label_values(&[table]),
            pending_rows: self.pending_rows.with_label_values(&[table]),
            failed_rows: self.failed_rows.with_label_values(&[table]),
            oldest_pending: self.oldest_pending.with_label_values(&[table]),
        }
    }
}

fn invalid(e: prometheus::Error) -> Error {
    Error::invalid_config_with("outbox metrics", e)
}

/// One table's series.
#[derive(Debug, Clone)]
pub(crate) struct TableMetrics {
    pub(crate) published: IntCounter,
    pub(crate) retried: IntCounter,
    pub(crate) failed: IntCounter,
    pub(crate) lag: Histogram,
    pending_rows: IntGauge,
    failed_rows: IntGauge,
    oldest_pending: IntGauge,
}

impl TableMetrics {
    pub(crate) fn stats(&self, stats: &OutboxStats) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.pending_rows.set(gauge(stats.pending));
        self.failed_rows.set(gauge(stats.failed));
        self.oldest_pending.set(
            stats
                .oldest_pending_age
                .map_or(0, |age| gauge(age.as_secs())),
        );
    }
}
