//! RustStream on NATS JetStream (ruststream-nats), next to msg-nats in
//! `nats+js://` mode: publishes await the stream's acknowledgement, and the
//! app reads a durable pull consumer of the stream msg and the raw side use.

use anyhow::Result;
use async_nats::jetstream::stream;
use ruststream_nats::prelude::*;
use ruststream_nats::{ConnectedNatsBroker, JetStreamPublish};

use crate::measure::{Counter, Frame, PREFETCH, Peer, app, start, unique};

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
}

impl Peer for Nats {
    async fn topic(&self, scenario: &str, _filled: bool) -> Result<String> {
        let topic = unique(&format!("bench.nats.{scenario}"));
        self.stream(&topic).await?;
        Ok(topic)
    }

    fn publisher(&self) -> impl Publisher {
        self.connected.publisher(JetStreamPublish::default())
    }

    async fn consumer(&self, topic: &str, counter: &Counter) -> Result<RunningApp> {
        let stream = self.stream(topic).await?;
        let source = JetStreamSubject::new(topic, stream)
            .durable(unique("bench").replace('.', "-"))
            .max_ack_pending(i64::from(PREFETCH));
        start(
            app(counter).with_broker(NatsBroker::new(self.url.clone()), move |b| {
                b.include(subscriber(source, Take).build());
            }),
        )
        .await
    }
}
