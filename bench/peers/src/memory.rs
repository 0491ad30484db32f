//! RustStream's in-process broker, next to msg's (`memory://`).

use std::convert::Infallible;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use anyhow::Result;
use ruststream::memory::prelude::*;

use crate::measure::{Counter, Scenarios, Sizes, publish_at_rate, publish_many, unique};

#[derive(Deserialized)]
struct Frame<'a>(&'a [u8]);

#[subscriber(MemorySource)]
async fn take(frame: &Frame<'_>, ctx: &mut Context<'_, (), Counter>) -> HandlerOutcome {
    ctx.state().record(frame.0);
    HandlerOutcome::ack()
}

/// A new broker per scenario: shutting an app down shuts its broker down.
fn broker() -> MemoryBroker<Retaining> {
    MemoryBroker::retaining(Retention::Messages(
        NonZeroUsize::new(1_000_000).expect("non-zero"),
    ))
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

async fn stop(running: RunningApp) -> Result<()> {
    running
        .shutdown()
        .await
        .map_err(|e| anyhow::anyhow!("shutdown: {e}"))
}

pub struct Memory;

impl Scenarios for Memory {
    async fn publish_rate(&self, sizes: Sizes) -> Result<f64> {
        let publisher = broker().publisher();
        let started = Instant::now();
        publish_many(
            &publisher,
            &unique("bench.memory.publish"),
            sizes.messages,
            sizes.window,
        )
        .await?;
        Ok(sizes.messages as f64 / started.elapsed().as_secs_f64())
    }

    async fn consume_rate(&self, sizes: Sizes) -> Result<f64> {
        let broker = broker();
        let topic = unique("bench.memory.consume");
        publish_many(&broker.publisher(), &topic, sizes.messages, 1).await?;
        let counter = Counter::expecting(sizes.messages);
        let running = consumer(&broker, &topic, &counter).await?;
        counter.done(Duration::from_secs(120)).await?;
        stop(running).await?;
        Ok(counter.rate())
    }

    async fn latencies(&self, sizes: Sizes) -> Result<[f64; 3]> {
        let broker = broker();
        let topic = unique("bench.memory.latency");
        let n = sizes.latency_messages();
        let counter = Counter::expecting(n);
        let running = consumer(&broker, &topic, &counter).await?;
        publish_at_rate(&broker.publisher(), &topic, n, sizes.rate).await?;
        counter.done(Duration::from_secs(60)).await?;
        stop(running).await?;
        Ok(counter.latencies())
    }
}
