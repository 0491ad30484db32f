//! RustStream on RabbitMQ (ruststream-lapin), next to msg-amqp: persistent
//! messages with publisher confirms, a durable classic queue consumed with
//! a prefetch of 256 and each delivery acked.
//!
//! RustStream publishes to an exchange under a routing key; the default
//! exchange routes a key straight to the queue of that name, so each
//! scenario's queue is its topic. A queue keeps nothing published before it
//! exists, so the consume scenario declares it first, as msg-bench does.

use std::convert::Infallible;
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use anyhow::Result;
use ruststream_lapin::prelude::*;
use ruststream_lapin::{ConnectedLapinBroker, LapinPublish, RabbitQueue};

use crate::measure::{Counter, PREFETCH, Scenarios, Sizes, publish_at_rate, publish_many, unique};

#[derive(Deserialized)]
struct Frame<'a>(&'a [u8]);

#[subscriber]
async fn take(frame: &Frame<'_>, ctx: &mut Context<'_, (), Counter>) -> HandlerOutcome {
    ctx.state().record(frame.0);
    HandlerOutcome::ack()
}

fn broker(url: &str) -> LapinBroker {
    LapinBroker::new(url)
        .declare_topology(true)
        .prefetch(NonZeroU16::new(PREFETCH).expect("non-zero"))
}

/// The connection publishes and declares queues; each app connects on its own.
pub struct Amqp {
    url: String,
    connected: ConnectedLapinBroker,
}

impl Amqp {
    pub async fn connect(url: &str) -> Result<Self> {
        let connected = broker(url)
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("connecting to RabbitMQ: {e}"))?;
        Ok(Self {
            url: url.to_owned(),
            connected,
        })
    }

    async fn publish(&self, queue: &str, n: usize, window: usize) -> Result<()> {
        let publisher = self.connected.publisher(LapinPublish::default().confirms());
        publish_many(&publisher, queue, n, window).await
    }

    /// Declares `queue` by subscribing to it once.
    async fn declare(&self, queue: &str) -> Result<()> {
        self.connected
            .subscribe(RabbitQueue::new(queue))
            .await
            .map_err(|e| anyhow::anyhow!("declaring {queue}: {e}"))?;
        Ok(())
    }

    /// Starts an app whose one handler reads `queue` into `counter`.
    async fn consumer(&self, queue: &str, counter: &Counter) -> Result<RunningApp> {
        let state = counter.clone();
        let queue = queue.to_owned();
        let app = RustStream::new(AppInfo::new("bench", "0.0.0"))
            .on_startup(async move |()| Ok::<_, Infallible>(state))
            .with_broker(broker(&self.url), move |b| {
                b.include(take.name(queue));
            });
        app.start()
            .await
            .map_err(|e| anyhow::anyhow!("starting the app: {e}"))
    }
}

async fn stop(running: RunningApp) -> Result<()> {
    running
        .shutdown()
        .await
        .map_err(|e| anyhow::anyhow!("shutdown: {e}"))
}

impl Scenarios for Amqp {
    async fn publish_rate(&self, sizes: Sizes) -> Result<f64> {
        let queue = unique("bench.amqp.publish");
        let started = Instant::now();
        self.publish(&queue, sizes.messages, sizes.window).await?;
        Ok(sizes.messages as f64 / started.elapsed().as_secs_f64())
    }

    async fn consume_rate(&self, sizes: Sizes) -> Result<f64> {
        let queue = unique("bench.amqp.consume");
        self.declare(&queue).await?;
        self.publish(&queue, sizes.messages, 64).await?;
        let counter = Counter::expecting(sizes.messages);
        let running = self.consumer(&queue, &counter).await?;
        counter.done(Duration::from_secs(120)).await?;
        stop(running).await?;
        Ok(counter.rate())
    }

    async fn latencies(&self, sizes: Sizes) -> Result<[f64; 3]> {
        let queue = unique("bench.amqp.latency");
        let n = sizes.latency_messages();
        let counter = Counter::expecting(n);
        let running = self.consumer(&queue, &counter).await?;
        let publisher = self.connected.publisher(LapinPublish::default().confirms());
        publish_at_rate(&publisher, &queue, n, sizes.rate).await?;
        counter.done(Duration::from_secs(60)).await?;
        stop(running).await?;
        Ok(counter.latencies())
    }
}
