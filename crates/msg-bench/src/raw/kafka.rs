//! The raw side of Kafka: rdkafka's `FutureProducer` and `StreamConsumer`,
//! configured as msg-kafka configures them (idempotent, `acks=all`, 5 ms
//! linger), with librdkafka's automatic offset commits.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::future::{BoxFuture, try_join_all};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::side::{Consumed, Side};

pub(crate) struct RawKafka {
    brokers: String,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    topics: Mutex<HashSet<String>>,
}

impl RawKafka {
    pub(crate) fn new(brokers: &str) -> Result<Self> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .create()?;
        let admin = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()?;
        Ok(Self {
            brokers: brokers.to_owned(),
            producer,
            admin,
            topics: Mutex::new(HashSet::new()),
        })
    }

    async fn ensure(&self, topic: &str) -> Result<()> {
        if self.topics.lock().expect("lock").contains(topic) {
            return Ok(());
        }
        let new = [NewTopic::new(topic, 3, TopicReplication::Fixed(1))];
        for result in self.admin.create_topics(&new, &AdminOptions::new()).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => bail!("creating {t}: {code}"),
            }
        }
        self.topics.lock().expect("lock").insert(topic.to_owned());
        Ok(())
    }
}

impl Side for RawKafka {
    fn publish<'a>(&'a self, topic: &'a str, payload: Bytes) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.ensure(topic).await?;
            let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(topic).payload(&payload[..]);
            self.producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)?;
            Ok(())
        })
    }

    fn publish_batch<'a>(
        &'a self,
        topic: &'a str,
        payloads: Vec<Bytes>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.ensure(topic).await?;
            let mut pending = Vec::with_capacity(payloads.len());
            for p in &payloads {
                let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(topic).payload(&p[..]);
                let delivery = self.producer.send_result(record).map_err(|(e, _)| e)?;
                pending.push(delivery);
            }
            for result in try_join_all(pending).await? {
                result.map_err(|(e, _)| e)?;
            }
            Ok(())
        })
    }

    fn declare<'a>(&'a self, topic: &'a str, _group: &'a str) -> BoxFuture<'a, Result<()>> {
        // A new group starts at the earliest offset (auto.offset.reset).
        Box::pin(self.ensure(topic))
    }

    fn consume<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
        n: usize,
    ) -> BoxFuture<'a, Result<BoxFuture<'static, Result<Consumed>>>> {
        Box::pin(async move {
            self.ensure(topic).await?;
            let consumer: StreamConsumer = ClientConfig::new()
                .set("bootstrap.servers", &self.brokers)
                .set("group.id", group)
                .set("auto.offset.reset", "earliest")
                .set("heartbeat.interval.ms", "1000")
                .set("fetch.wait.max.ms", "10")
                .create()?;
            consumer.subscribe(&[topic])?;
            let consumer = Arc::new(consumer);
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            let task = {
                let consumer = consumer.clone();
                tokio::spawn(async move {
                    let mut consumed = Consumed::default();
                    let mut ready = Some(ready_tx);
                    while consumed.latencies_ns.len() < n {
                        let recv = tokio::time::timeout(Duration::from_millis(50), consumer.recv());
                        if let Ok(message) = recv.await {
                            let message = message?;
                            consumed.record(message.payload().unwrap_or_default());
                        }
                        if ready.is_some() && consumer.assignment().is_ok_and(|a| a.count() > 0) {
                            let _ = ready.take().map(|r| r.send(()));
                        }
                    }
                    anyhow::Ok(consumed)
                })
            };
            tokio::time::timeout(Duration::from_secs(30), ready_rx)
                .await
                .context("the raw consumer got no partitions in 30 s")?
                .ok();
            let finished: BoxFuture<'static, Result<Consumed>> =
                Box::pin(async move { task.await? });
            Ok(finished)
        })
    }
}
