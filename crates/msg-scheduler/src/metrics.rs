//! Prometheus metrics of a scheduler and its runners (feature `metrics`).

use msg_core::{Error, Result};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

/// A scheduler's metrics, registered in a registry you pass:
///
/// | metric | |
/// |---|---|
/// | `msg_scheduler_scheduled_total` | schedules made (or replaced by key) |
/// | `msg_scheduler_fired_total` | fires the broker accepted |
/// | `msg_scheduler_failed_total` | fires that failed and will be tried again |
/// | `msg_scheduler_cancelled_total` | schedules removed by `cancel` |
/// | `msg_scheduler_lateness_seconds` | from a fire's due time to the broker's acceptance |
/// | `msg_scheduler_backlog` | schedules due and not being fired, as a runner last saw |
///
/// Pass them to [`Scheduler::with_metrics`](crate::Scheduler::with_metrics).
#[derive(Debug, Clone)]
pub struct SchedulerMetrics {
    pub(crate) scheduled: IntCounter,
    pub(crate) fired: IntCounter,
    pub(crate) failed: IntCounter,
    pub(crate) cancelled: IntCounter,
    pub(crate) lateness: Histogram,
    pub(crate) backlog: IntGauge,
}

impl SchedulerMetrics {
    /// Registers the metrics in `registry`; registering twice in one
    /// registry is an error.
    pub fn new(registry: &Registry) -> Result<Self> {
        let counter = |name: &str, help: &str| IntCounter::new(name, help).map_err(invalid);
        let metrics = Self {
            scheduled: counter(
                "msg_scheduler_scheduled_total",
                "Schedules made (or replaced by key).",
            )?,
            fired: counter("msg_scheduler_fired_total", "Fires the broker accepted.")?,
            failed: counter(
                "msg_scheduler_failed_total",
                "Fires that failed and will be tried again.",
            )?,
            cancelled: counter(
                "msg_scheduler_cancelled_total",
                "Schedules removed by cancel.",
            )?,
            lateness: Histogram::with_opts(
                HistogramOpts::new(
                    "msg_scheduler_lateness_seconds",
                    "From a fire's due time to the broker's acceptance.",
                )
                .buckets(vec![
                    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0,
                ]),
            )
            .map_err(invalid)?,
            backlog: IntGauge::new(
                "msg_scheduler_backlog",
                "Schedules due and not being fired, as a runner last saw.",
            )
            .map_err(invalid)?,
        };
        for collector in [
            Box::new(metrics.scheduled.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.fired.clone()),
            Box::new(metrics.failed.clone()),
            Box::new(metrics.cancelled.clone()),
            Box::new(metrics.lateness.clone()),
            Box::new(metrics.backlog.clone()),
        ] {
            registry.register(collector).map_err(invalid)?;
        }
        Ok(metrics)
    }
}

fn invalid(e: prometheus::Error) -> Error {
    Error::invalid_config_with("scheduler metrics", e)
}
