//! The scenarios, run alternately on both sides (A B A B ...), reduced to
//! medians.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use serde::Serialize;

use crate::side::{Side, payload};

/// How much each scenario does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    /// Alternating rounds: each side runs each scenario this often.
    pub(crate) rounds: usize,
    /// Messages per throughput run.
    pub(crate) messages: usize,
    /// Publishes in flight at once in the publish scenario.
    pub(crate) window: usize,
    /// Messages per batch in the batch scenario.
    pub(crate) batch: usize,
    /// Messages per second in the latency scenario.
    pub(crate) rate: u32,
    /// How long the latency scenario publishes.
    pub(crate) latency_for: Duration,
}

impl Sizes {
    pub(crate) fn full() -> Self {
        Self {
            rounds: 5,
            messages: 20_000,
            window: 64,
            batch: 100,
            rate: 1_000,
            latency_for: Duration::from_secs(5),
        }
    }

    pub(crate) fn quick() -> Self {
        Self {
            rounds: 2,
            messages: 2_000,
            window: 64,
            batch: 100,
            rate: 500,
            latency_for: Duration::from_secs(1),
        }
    }

    /// The in-process broker moves 20,000 messages through a bare channel
    /// in about 3 ms, too short to measure steadily: it runs ten times as
    /// many.
    pub(crate) fn in_process(self) -> Self {
        Self {
            messages: self.messages * 10,
            ..self
        }
    }
}

/// `values`' median, with their range when there are several.
pub(crate) fn spread(values: &[f64], scale: f64, decimals: usize) -> String {
    let median = median(values.to_vec()) / scale;
    let (min, max) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v / scale), hi.max(*v / scale))
        });
    if values.len() > 1 {
        format!("{median:.decimals$} ({min:.decimals$}–{max:.decimals$})")
    } else {
        format!("{median:.decimals$}")
    }
}

/// One line of the results: the medians of both sides.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) transport: String,
    pub(crate) metric: &'static str,
    pub(crate) unit: &'static str,
    pub(crate) msg: f64,
    pub(crate) raw: f64,
    /// Throughput: msg / raw (higher is better). Latency: msg − raw, the
    /// time msg adds (lower is better).
    pub(crate) compare: f64,
    pub(crate) higher_is_better: bool,
    /// RustStream's figure for the same metric, when it was measured.
    pub(crate) ruststream: Option<f64>,
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

pub(crate) fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

fn topic(transport: &str, scenario: &str, side: &str, round: usize) -> String {
    let id = msg::Uuid::new_v4().simple().to_string();
    format!("bench.{transport}.{scenario}.{side}{round}.{}", &id[..8])
}

async fn publish_rate(side: &dyn Side, topic: &str, sizes: Sizes) -> Result<f64> {
    let started = Instant::now();
    let results: Vec<Result<()>> = futures::stream::iter(0..sizes.messages)
        .map(|_| side.publish(topic, payload()))
        .buffer_unordered(sizes.window)
        .collect()
        .await;
    let elapsed = started.elapsed();
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(sizes.messages as f64 / elapsed.as_secs_f64())
}

async fn batch_rate(side: &dyn Side, topic: &str, sizes: Sizes) -> Result<f64> {
    let started = Instant::now();
    let mut left = sizes.messages;
    while left > 0 {
        let n = left.min(sizes.batch);
        side.publish_batch(topic, (0..n).map(|_| payload()).collect())
            .await?;
        left -= n;
    }
    Ok(sizes.messages as f64 / started.elapsed().as_secs_f64())
}

fn group() -> String {
    format!("bench-{}", msg::Uuid::new_v4().simple())
}

async fn consume_rate(side: &dyn Side, topic: &str, sizes: Sizes) -> Result<f64> {
    let group = group();
    side.declare(topic, &group).await?;
    let mut left = sizes.messages;
    while left > 0 {
        let n = left.min(1_000);
        side.publish_batch(topic, (0..n).map(|_| payload()).collect())
            .await?;
        left -= n;
    }
    let consumed = side.consume(topic, &group, sizes.messages).await?.await?;
    let (first, last) = consumed
        .first
        .zip(consumed.last)
        .context("nothing consumed")?;
    Ok((sizes.messages - 1) as f64 / (last - first).as_secs_f64())
}

/// Latencies in microseconds: p50, p99, p999.
async fn latencies(side: &dyn Side, topic: &str, sizes: Sizes) -> Result<[f64; 3]> {
    let n = (f64::from(sizes.rate) * sizes.latency_for.as_secs_f64()) as usize;
    let consuming = side.consume(topic, &group(), n).await?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(sizes.rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..n {
        tick.tick().await;
        side.publish(topic, payload()).await?;
    }
    let consumed = tokio::time::timeout(Duration::from_secs(60), consuming)
        .await
        .context("latency run: not every message arrived in 60 s")??;
    let mut l = consumed.latencies_ns;
    l.sort_unstable();
    Ok([50.0, 99.0, 99.9].map(|p| percentile(&l, p) / 1_000.0))
}

/// Runs every scenario on both sides, alternating, and returns the rows.
pub(crate) async fn compare(
    transport: &str,
    msg: &dyn Side,
    raw: &dyn Side,
    sizes: Sizes,
) -> Result<Vec<Row>> {
    let sides: [(&str, &dyn Side); 2] = [("msg", msg), ("raw", raw)];
    let mut publish = [Vec::new(), Vec::new()];
    let mut batch = [Vec::new(), Vec::new()];
    let mut consume = [Vec::new(), Vec::new()];
    let mut latency = [
        [Vec::new(), Vec::new(), Vec::new()],
        [Vec::new(), Vec::new(), Vec::new()],
    ];
    for round in 0..sizes.rounds {
        for (i, (name, side)) in sides.iter().enumerate() {
            eprintln!("bench: {transport} round {} {name}", round + 1);
            let t = topic(transport, "publish", name, round);
            publish[i].push(publish_rate(*side, &t, sizes).await?);
            let t = topic(transport, "batch", name, round);
            batch[i].push(batch_rate(*side, &t, sizes).await?);
            let t = topic(transport, "consume", name, round);
            consume[i].push(consume_rate(*side, &t, sizes).await?);
            let t = topic(transport, "latency", name, round);
            let [p50, p99, p999] = latencies(*side, &t, sizes).await?;
            latency[i][0].push(p50);
            latency[i][1].push(p99);
            latency[i][2].push(p999);
        }
    }
    let row = |metric, unit, [m, r]: [Vec<f64>; 2], higher_is_better: bool| {
        let (msg, raw) = (median(m), median(r));
        Row {
            transport: transport.to_owned(),
            metric,
            unit,
            msg,
            raw,
            compare: if higher_is_better {
                msg / raw
            } else {
                msg - raw
            },
            higher_is_better,
            ruststream: None,
        }
    };
    let [lm, lr] = latency;
    let [lm50, lm99, lm999] = lm;
    let [lr50, lr99, lr999] = lr;
    Ok(vec![
        row("publish (confirmed, 64 in flight)", "msg/s", publish, true),
        row("publish batches of 100", "msg/s", batch, true),
        row("consume through the router", "msg/s", consume, true),
        row("latency p50", "µs", [lm50, lr50], false),
        row("latency p99", "µs", [lm99, lr99], false),
        row("latency p999", "µs", [lm999, lr999], false),
    ])
}
