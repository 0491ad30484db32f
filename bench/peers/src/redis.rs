//! RustStream on Redis Streams (ruststream-fred), next to msg-redis.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use anyhow::Result;
use ruststream_fred::ConnectedRedisBroker;
use ruststream_fred::stream::prelude::*;

use crate::measure::{Counter, Scenarios, Sizes, publish_at_rate, publish_many, unique};

#[derive(Deserialized)]
struct Frame<'a>(&'a [u8]);

#[subscriber]
async fn take(frame: &Frame<'_>, ctx: &mut Context<'_, (), Counter>) -> HandlerOutcome {
    ctx.state().record(frame.0);
    HandlerOutcome::ack()
}

/// The connection publishes; each app connects on its own, in a group of
/// its own that starts at the beginning of the stream.
pub struct Redis {
    url: String,
    connected: ConnectedRedisBroker,
}

impl Redis {
    pub async fn connect(url: &str) -> Result<Self> {
        let connected = RedisBroker::standalone(url)
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("connecting to {url}: {e}"))?;
        Ok(Self {
            url: url.to_owned(),
            connected,
        })
    }

    /// Starts an app whose one handler reads `topic` into `counter`.
    async fn consumer(&self, topic: &str, counter: &Counter) -> Result<RunningApp> {
        let state = counter.clone();
        let topic = topic.to_owned();
        let broker = RedisBroker::standalone(self.url.clone()).default_group(unique("bench"));
        let app = RustStream::new(AppInfo::new("bench", "0.0.0"))
            .on_startup(async move |()| Ok::<_, Infallible>(state))
            .with_broker(broker, move |b| {
                b.include(take.name(topic).start_at(RedisGroupPosition::beginning()));
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

impl Scenarios for Redis {
    async fn publish_rate(&self, sizes: Sizes) -> Result<f64> {
        let started = Instant::now();
        let topic = unique("bench.redis.publish");
        publish_many(
            &self.connected.publisher(),
            &topic,
            sizes.messages,
            sizes.window,
        )
        .await?;
        Ok(sizes.messages as f64 / started.elapsed().as_secs_f64())
    }

    async fn consume_rate(&self, sizes: Sizes) -> Result<f64> {
        let topic = unique("bench.redis.consume");
        publish_many(&self.connected.publisher(), &topic, sizes.messages, 64).await?;
        let counter = Counter::expecting(sizes.messages);
        let running = self.consumer(&topic, &counter).await?;
        counter.done(Duration::from_secs(120)).await?;
        stop(running).await?;
        Ok(counter.rate())
    }

    async fn latencies(&self, sizes: Sizes) -> Result<[f64; 3]> {
        let topic = unique("bench.redis.latency");
        let n = sizes.latency_messages();
        let counter = Counter::expecting(n);
        let running = self.consumer(&topic, &counter).await?;
        publish_at_rate(&self.connected.publisher(), &topic, n, sizes.rate).await?;
        counter.done(Duration::from_secs(60)).await?;
        stop(running).await?;
        Ok(counter.latencies())
    }
}
