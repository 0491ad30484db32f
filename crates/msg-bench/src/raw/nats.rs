//! The raw side of NATS JetStream: async-nats, a publish awaited until the
//! stream's ack, a durable pull consumer read with `messages()`, each
//! message acked. Same stream as msg uses (named after the topic's first
//! segment, file storage).

use anyhow::{Context, Result};
use async_nats::jetstream::consumer::pull::MessagesErrorKind;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::{BoxFuture, try_join_all};

use crate::side::{Consumed, Side};

pub(crate) struct RawNats {
    jetstream: jetstream::Context,
}

impl RawNats {
    pub(crate) async fn connect(url: &str) -> Result<Self> {
        let server = url.replacen("nats+js://", "nats://", 1);
        let client = async_nats::connect(server).await?;
        Ok(Self {
            jetstream: jetstream::new(client),
        })
    }

    async fn stream(&self, topic: &str) -> Result<stream::Stream> {
        let root = topic.split('.').next().unwrap_or(topic);
        let config = stream::Config {
            name: root.to_owned(),
            subjects: vec![root.to_owned(), format!("{root}.>")],
            storage: stream::StorageType::File,
            ..Default::default()
        };
        Ok(self.jetstream.get_or_create_stream(config).await?)
    }

    async fn consumer(&self, topic: &str, group: &str) -> Result<consumer::PullConsumer> {
        let config = consumer::pull::Config {
            durable_name: Some(group.to_owned()),
            filter_subject: topic.to_owned(),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 256,
            ..Default::default()
        };
        let stream = self.stream(topic).await?;
        Ok(stream.get_or_create_consumer(group, config).await?)
    }
}

impl Side for RawNats {
    fn publish<'a>(&'a self, topic: &'a str, payload: Bytes) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.jetstream
                .publish(topic.to_owned(), payload)
                .await?
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
            let mut acks = Vec::with_capacity(payloads.len());
            for payload in payloads {
                acks.push(self.jetstream.publish(topic.to_owned(), payload).await?);
            }
            try_join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await?;
            Ok(())
        })
    }

    fn declare<'a>(&'a self, topic: &'a str, group: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.consumer(topic, group).await?;
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
            let consumer = self.consumer(topic, group).await?;
            let mut messages = consumer.messages().await?;
            let task = tokio::spawn(async move {
                let mut consumed = Consumed::default();
                let mut received = 0;
                while received < n {
                    let message = match messages.next().await.context("the pull stream ended")? {
                        Ok(message) => message,
                        // A late heartbeat (a busy machine) is reported, and
                        // the stream goes on.
                        Err(e) if e.kind() == MessagesErrorKind::MissingHeartbeat => continue,
                        Err(e) => return Err(anyhow::anyhow!(e)),
                    };
                    consumed.record(&message.payload);
                    message.ack().await.map_err(|e| anyhow::anyhow!(e))?;
                    received += 1;
                }
                anyhow::Ok(consumed)
            });
            let finished: BoxFuture<'static, Result<Consumed>> =
                Box::pin(async move { task.await? });
            Ok(finished)
        })
    }
}
