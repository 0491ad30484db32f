//! The scheduler's Prometheus metrics count what happened.
#![cfg(feature = "metrics")]

mod support;

use std::time::Duration;

use msg_core::Message;
use msg_scheduler::{Scheduler, SchedulerMetrics, When};
use prometheus::Registry;
use support::Recorder;

fn value(registry: &Registry, name: &str) -> f64 {
    let family = registry
        .gather()
        .into_iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("no metric {name}"));
    let metric = &family.get_metric()[0];
    if name.ends_with("_seconds") {
        metric.get_histogram().get_sample_count() as f64
    } else if family.get_field_type() == prometheus::proto::MetricType::COUNTER {
        metric.get_counter().get_value()
    } else {
        metric.get_gauge().get_value()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_scheduled_fired_failed_cancelled_lateness_and_backlog() {
    let registry = Registry::new();
    let metrics = SchedulerMetrics::new(&registry).unwrap();
    assert!(SchedulerMetrics::new(&registry).is_err(), "registered once");
    let s = Scheduler::memory().with_metrics(metrics);
    let recorder = Recorder::new();
    recorder.refuse(true);
    let runner = s
        .runner(recorder.clone())
        .retry_delay(Duration::from_millis(100))
        .start();
    for n in 0..3 {
        s.schedule(
            "t",
            Message::new(n.to_string()),
            When::after(Duration::from_millis(50)),
        )
        .await
        .unwrap();
    }
    let cancelled = s
        .schedule("t", Message::new("c"), When::after(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(s.cancel(cancelled).await.unwrap());
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(
        value(&registry, "msg_scheduler_failed_total") >= 3.0,
        "refused fires"
    );
    assert_eq!(
        value(&registry, "msg_scheduler_backlog"),
        0.0,
        "retries wait: not due"
    );
    recorder.refuse(false);
    recorder.wait_for(3, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    runner.shutdown().await;
    assert_eq!(value(&registry, "msg_scheduler_scheduled_total"), 4.0);
    assert_eq!(value(&registry, "msg_scheduler_cancelled_total"), 1.0);
    assert_eq!(value(&registry, "msg_scheduler_fired_total"), 3.0);
    assert_eq!(
        value(&registry, "msg_scheduler_lateness_seconds"),
        3.0,
        "one per fire"
    );
}

#[tokio::test(start_paused = true)]
async fn the_backlog_counts_what_is_due_and_not_fired() {
    let registry = Registry::new();
    let s = Scheduler::memory()
        .with_clock(msg_scheduler::Clock::tokio())
        .with_metrics(SchedulerMetrics::new(&registry).unwrap());
    for n in 0..5 {
        s.schedule(
            "t",
            Message::new(n.to_string()),
            When::after(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    }
    assert_eq!(s.backlog().await.unwrap(), 0, "not due yet");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.backlog().await.unwrap(), 5, "due, no runner");
    let recorder = Recorder::new();
    assert_eq!(
        s.runner(recorder).batch_size(2).run_once().await.unwrap(),
        2
    );
    assert_eq!(s.backlog().await.unwrap(), 3);
}
