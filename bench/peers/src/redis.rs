//! RustStream on Redis Streams (ruststream-fred), next to msg-redis.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;
use ruststream_fred::ConnectedRedisBroker;
use ruststream_fred::stream::prelude::*;

use crate::measure::{Counter, Figure, Sizes, figures, payload, unique};

#[derive(Deserialized)]
struct Frame<'a>(&'a [u8]);

#[derive(Outgoing, Serialized)]
struct Blob(Vec<u8>);

#[subscriber]
async fn take(frame: &Frame<'_>, ctx: &mut Context<'_, (), Counter>) -> HandlerOutcome {
    ctx.state().record(frame.0);
    HandlerOutcome::ack()
}

/// The connection publishes; each app connects on its own, in a group of
/// its own.
struct Redis {
    url: String,
    connected: ConnectedRedisBroker,
}

async fn publish_rate(redis: &Redis, sizes: Sizes) -> Result<f64> {
    let publisher = redis.connected.publisher();
    let topic = unique("bench.redis.publish");
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
async fn consumer(redis: &Redis, topic: &str, counter: &Counter) -> Result<RunningApp> {
    let state = counter.clone();
    let topic = topic.to_owned();
    let app = RustStream::new(AppInfo::new("bench", "0.0.0"))
        .on_startup(async move |()| Ok::<_, Infallible>(state))
        .with_broker(
            RedisBroker::standalone(redis.url.clone()).default_group(unique("bench")),
            move |b| {
                b.include(take.name(topic).start_at(RedisGroupPosition::beginning()));
            },
        );
    app.start()
        .await
        .map_err(|e| anyhow::anyhow!("starting the app: {e}"))
}

async fn consume_rate(redis: &Redis, sizes: Sizes) -> Result<f64> {
    let publisher = redis.connected.publisher();
    let topic = unique("bench.redis.consume");
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
    let running = consumer(redis, &topic, &counter).await?;
    counter.done(Duration::from_secs(120)).await?;
    running
        .shutdown()
        .await
        .map_err(|e| anyhow::anyhow!("shutdown: {e}"))?;
    Ok(counter.rate())
}

async fn latencies(redis: &Redis, sizes: Sizes) -> Result<[f64; 3]> {
    let publisher = redis.connected.publisher();
    let topic = unique("bench.redis.latency");
    let n = sizes.latency_messages();
    let counter = Counter::expecting(n);
    let running = consumer(redis, &topic, &counter).await?;
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

pub async fn run(url: &str, sizes: Sizes) -> Result<Vec<Figure>> {
    let connected = RedisBroker::standalone(url)
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("connecting to {url}: {e}"))?;
    let redis = Redis {
        url: url.to_owned(),
        connected,
    };
    let (mut publish, mut consume) = (Vec::new(), Vec::new());
    let mut latency = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..sizes.rounds {
        eprintln!("ruststream-peer: redis round {}", round + 1);
        publish.push(publish_rate(&redis, sizes).await?);
        consume.push(consume_rate(&redis, sizes).await?);
        for (v, l) in latency.iter_mut().zip(latencies(&redis, sizes).await?) {
            v.push(l);
        }
    }
    Ok(figures("redis", publish, consume, latency))
}
