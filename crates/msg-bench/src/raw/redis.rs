//! The raw side of Redis Streams: fred, `XADD` to publish, a consumer
//! group read with `XREADGROUP` on a connection of its own (reads block),
//! each batch acked with one `XACK`.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use fred::prelude::{Builder, Client, ClientLike, Config, KeysInterface, StreamsInterface};
use fred::types::Value;
use fred::types::streams::XReadResponse;
use futures::future::BoxFuture;

use crate::side::{Consumed, Side};

pub(crate) struct RawRedis {
    config: Config,
    client: Client,
}

impl RawRedis {
    pub(crate) async fn connect(url: &str) -> Result<Self> {
        let config = Config::from_url(url).context("redis URL")?;
        let client = Builder::from_config(config.clone()).build()?;
        client.init().await?;
        Ok(Self { config, client })
    }

    /// Deletes `topic`'s stream, and disconnects.
    pub(crate) async fn delete(self, topic: &str) -> Result<()> {
        let _: i64 = self.client.del(topic).await?;
        self.client.quit().await?;
        Ok(())
    }
}

impl Side for RawRedis {
    fn publish<'a>(&'a self, topic: &'a str, payload: Bytes) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let _: Value = self
                .client
                .xadd(topic, false, None::<()>, "*", ("payload", payload))
                .await?;
            Ok(())
        })
    }

    fn publish_batch<'a>(
        &'a self,
        topic: &'a str,
        payloads: Vec<Bytes>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let pipeline = self.client.pipeline();
            for payload in payloads {
                let () = pipeline
                    .xadd(topic, false, None::<()>, "*", ("payload", payload))
                    .await?;
            }
            let _: Vec<Value> = pipeline.all().await?;
            Ok(())
        })
    }

    fn declare<'a>(&'a self, topic: &'a str, group: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let _: Value = self.client.xgroup_create(topic, group, "0", true).await?;
            Ok(())
        })
    }

    fn consume<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
        n: usize,
    ) -> BoxFuture<'a, Result<BoxFuture<'static, Result<Consumed>>>> {
        Box::pin(async move {
            let _: Result<Value, _> = self.client.xgroup_create(topic, group, "0", true).await;
            let reader = Arc::new(Builder::from_config(self.config.clone()).build()?);
            reader.init().await?;
            let (topic, group) = (topic.to_owned(), group.to_owned());
            let task = tokio::spawn(async move {
                let mut consumed = Consumed::default();
                let mut seen = 0;
                while seen < n {
                    let read: XReadResponse<String, String, String, Value> = reader
                        .xreadgroup_map(
                            group.as_str(),
                            "bench",
                            Some(256),
                            Some(500),
                            false,
                            topic.as_str(),
                            ">",
                        )
                        .await?;
                    let entries = read.into_values().flatten();
                    let mut ids = Vec::new();
                    for (id, fields) in entries {
                        let fields: HashMap<String, Value> = fields;
                        let payload = fields.get("payload").and_then(Value::as_bytes);
                        consumed.record(payload.unwrap_or_default());
                        ids.push(id);
                        seen += 1;
                    }
                    if !ids.is_empty() {
                        let _: Value = reader.xack(topic.as_str(), group.as_str(), ids).await?;
                    }
                }
                let _ = reader.quit().await;
                anyhow::Ok(consumed)
            });
            let finished: BoxFuture<'static, Result<Consumed>> =
                Box::pin(async move { task.await? });
            Ok(finished)
        })
    }
}
