//! RustStream on Redis Streams (ruststream-fred), next to msg-redis.

use anyhow::Result;
use ruststream_fred::ConnectedRedisBroker;
use ruststream_fred::stream::prelude::*;

use crate::measure::{Counter, Peer, app, start, take, unique};

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
}

impl Peer for Redis {
    async fn topic(&self, scenario: &str, _filled: bool) -> Result<String> {
        Ok(unique(&format!("bench.redis.{scenario}")))
    }

    fn publisher(&self) -> impl Publisher {
        self.connected.publisher()
    }

    async fn consumer(&self, topic: &str, counter: &Counter) -> Result<RunningApp> {
        let topic = topic.to_owned();
        let broker = RedisBroker::standalone(self.url.clone()).default_group(unique("bench"));
        start(app(counter).with_broker(broker, move |b| {
            b.include(take.name(topic).start_at(RedisGroupPosition::beginning()));
        }))
        .await
    }
}
