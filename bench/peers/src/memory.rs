//! RustStream's in-process broker, next to msg's (`memory://`).

use std::convert::Infallible;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;
use ruststream::memory::prelude::*;

use crate::measure::{Counter, Figure, Sizes, figures, payload, unique};

#[derive(Deserialized)]
struct Frame<'a>(&'a [u8]);

#[derive(Outgoing, Serialized)]
struct Blob(Vec<u8>);

#[subscriber(MemorySource)]
async fn take(frame: &Frame<'_>, ctx: &mut Context<'_, (), Counter>) -> HandlerOutcome {
    ctx.state().record(frame.0);
    HandlerOutcome::ack()
}

fn broker() -> MemoryBroker<Retaining> {
    MemoryBroker::retaining(Retention::Messages(
        NonZeroUsize::new(1_000_000).expect("non-zero"),
    ))
}

async fn publish_rate(sizes: Sizes) -> Result<f64> {
    // One broker per scenario: shutting an app down shuts its broker down.
    let broker = &broker();
    let publisher = broker.publisher();
    let topic = unique("bench.memory.publish");
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..sizes.messages)
        .map(|_| {
            let (publisher, topic) = (&publisher, &topic);
            async move {
                let blob = Blob(payload());
                publisher.message(&blob).to(topic.as_str()).publish().await
            }
        })
        .buffer_unordered(sizes.window)
        .collect()
        .await;
    let elapsed = started.elapsed();
    for r in results {
        r.map_err(|e| anyhow::anyhow!("publish: {e}"))?;
    }
    Ok(sizes.messages as f64 / elapsed.as_secs_f64())
}

/// Starts an app whose one handler reads `topic` into `counter`.
async fn consumer(
    broker: &MemoryBroker<Retaining>,
    topic: &str,
    counter: &Counter,
) -> Result<RunningApp> {
    let state = counter.clone();
    let topic = topic.to_owned();
    let app = RustStream::new(AppInfo::new("bench", "0.0.0"))
        .on_startup(async move |()| Ok::<_, Infallible>(state))
        .with_broker(broker.clone(), move |b| {
            b.include(take.name(topic).start_at(MemoryPosition::start()));
        });
    app.start()
        .await
        .map_err(|e| anyhow::anyhow!("starting the app: {e}"))
}

async fn consume_rate(sizes: Sizes) -> Result<f64> {
    let broker = &broker();
    let publisher = broker.publisher();
    let topic = unique("bench.memory.consume");
    for _ in 0..sizes.messages {
        let blob = Blob(payload());
        publisher
            .message(&blob)
            .to(topic.as_str())
            .publish()
            .await
            .map_err(|e| anyhow::anyhow!("fill: {e}"))?;
    }
    let counter = Counter::expecting(sizes.messages);
    let running = consumer(broker, &topic, &counter).await?;
    counter.done(Duration::from_secs(120)).await?;
    running
        .shutdown()
        .await
        .map_err(|e| anyhow::anyhow!("shutdown: {e}"))?;
    Ok(counter.rate())
}

async fn latencies(sizes: Sizes) -> Result<[f64; 3]> {
    let broker = &broker();
    let publisher = broker.publisher();
    let topic = unique("bench.memory.latency");
    let n = sizes.latency_messages();
    let counter = Counter::expecting(n);
    let running = consumer(broker, &topic, &counter).await?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(sizes.rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..n {
        tick.tick().await;
        let blob = Blob(payload());
        publisher
            .message(&blob)
            .to(topic.as_str())
            .publish()
            .await
            .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
    }
    counter.done(Duration::from_secs(60)).await?;
    running
        .shutdown()
        .await
        .map_err(|e| anyhow::anyhow!("shutdown: {e}"))?;
    Ok(counter.latencies())
}

pub async fn run(sizes: Sizes) -> Result<Vec<Figure>> {
    let (mut publish, mut consume) = (Vec::new(), Vec::new());
    let mut latency = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..sizes.rounds {
        eprintln!("ruststream-peer: memory round {}", round + 1);
        publish.push(publish_rate(sizes).await?);
        consume.push(consume_rate(sizes).await?);
        for (v, l) in latency.iter_mut().zip(latencies(sizes).await?) {
            v.push(l);
        }
    }
    Ok(figures("memory", publish, consume, latency))
}
