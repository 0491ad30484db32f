//! RustStream on NATS JetStream (ruststream-nats), next to msg-nats in
//! `nats+js://` mode: publishes await the stream's acknowledgement, and the
//! app reads a durable pull consumer of the stream msg and the raw side use.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use async_nats::jetstream::stream;
use ruststream_nats::prelude::*;
use ruststream_nats::{ConnectedNatsBroker, JetStreamPublish};

use crate::measure::{Counter, PREFETCH, Scenarios, Sizes, publish_at_rate, publish_many, unique};

#[derive(Deserialized)]
struct Frame<'a>(&'a [u8]);

/// The handler: a JetStream subject has no plain-name form (it needs its
/// stream), so it is mounted through the macro-free `subscriber(source, body)`.
struct Take;

impl Handle<Frame<'_>, (), (), (), Counter> for Take {
    async fn handle(
        &self,
        frame: &Frame<'_>,
        _outs: &(),
        ctx: &mut Context<'_, (), Counter>,
    ) -> Result<(), HandlerOutcome> {
        ctx.state().record(frame.0);
        Ok(())
    }
}

/// The connection publishes and creates streams; each app connects on its
/// own, with a durable consumer of its own that starts at the beginning.
pub struct Nats {
    url: String,
    connected: ConnectedNatsBroker,
}

impl Nats {
    pub async fn connect(url: &str) -> Result<Self> {
        let url = url.replacen("nats+js://", "nats://", 1);
        let connected = NatsBroker::new(url.clone())
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("connecting to {url}: {e}"))?;
        Ok(Self { url, connected })
    }

    /// The stream holding `topic`, as msg-nats names it: after the topic's
    /// first segment, with that segment and everything under it.
    async fn stream(&self, topic: &str) -> Result<String> {
        let root = topic.split('.').next().unwrap_or(topic).to_owned();
        let config = stream::Config {
            name: root.clone(),
            subjects: vec![root.clone(), format!("{root}.>")],
            storage: stream::StorageType::File,
            ..Default::default()
        };
        self.connected
            .jetstream()
            .get_or_create_stream(config)
            .await
            .map_err(|e| anyhow::anyhow!("creating stream {root}: {e}"))?;
        Ok(root)
    }

    async fn publish(&self, topic: &str, n: usize, window: usize) -> Result<()> {
        let publisher = self.connected.publisher(JetStreamPublish::default());
        publish_many(&publisher, topic, n, window).await
    }

    /// Starts an app whose one handler reads `topic` into `counter`.
    async fn consumer(&self, topic: &str, counter: &Counter) -> Result<RunningApp> {
        let stream = self.stream(topic).await?;
        let state = counter.clone();
        let source = JetStreamSubject::new(topic, stream)
            .durable(unique("bench").replace('.', "-"))
            .max_ack_pending(i64::from(PREFETCH));
        let app = RustStream::new(AppInfo::new("bench", "0.0.0"))
            .on_startup(async move |()| Ok::<_, Infallible>(state))
            .with_broker(NatsBroker::new(self.url.clone()), move |b| {
                b.include(subscriber(source, Take).build());
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

impl Scenarios for Nats {
    async fn publish_rate(&self, sizes: Sizes) -> Result<f64> {
        let topic = unique("bench.nats.publish");
        self.stream(&topic).await?;
        let started = Instant::now();
        self.publish(&topic, sizes.messages, sizes.window).await?;
        Ok(sizes.messages as f64 / started.elapsed().as_secs_f64())
    }

    async fn consume_rate(&self, sizes: Sizes) -> Result<f64> {
        let topic = unique("bench.nats.consume");
        self.stream(&topic).await?;
        self.publish(&topic, sizes.messages, 64).await?;
        let counter = Counter::expecting(sizes.messages);
        let running = self.consumer(&topic, &counter).await?;
        counter.done(Duration::from_secs(120)).await?;
        stop(running).await?;
        Ok(counter.rate())
    }

    async fn latencies(&self, sizes: Sizes) -> Result<[f64; 3]> {
        let topic = unique("bench.nats.latency");
        let n = sizes.latency_messages();
        let counter = Counter::expecting(n);
        let running = self.consumer(&topic, &counter).await?;
        let publisher = self.connected.publisher(JetStreamPublish::default());
        publish_at_rate(&publisher, &topic, n, sizes.rate)
            .await
            .context("publishing at a fixed rate")?;
        counter.done(Duration::from_secs(60)).await?;
        stop(running).await?;
        Ok(counter.latencies())
    }
}
