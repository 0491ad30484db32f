//! The raw side of RabbitMQ: lapin, a confirm-mode channel publishing
//! persistent messages to a durable topic exchange, a durable queue per
//! group bound to the topic, consumed with a prefetch of 256 and each
//! message acked.

use anyhow::{Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::{BoxFuture, try_join_all};
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use lapin::{Confirmation, PublisherConfirm};

use crate::side::{Consumed, Side};

const EXCHANGE: &str = "bench.raw";

pub(crate) struct RawAmqp {
    connection: Connection,
    publish: Channel,
}

impl RawAmqp {
    pub(crate) async fn connect(url: &str) -> Result<Self> {
        let connection = Connection::connect(url, ConnectionProperties::default()).await?;
        let publish = connection.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        publish
            .exchange_declare(
                EXCHANGE.into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            connection,
            publish,
        })
    }

    async fn send(&self, topic: &str, payload: &[u8]) -> Result<PublisherConfirm> {
        let persistent = BasicProperties::default().with_delivery_mode(2);
        Ok(self
            .publish
            .basic_publish(
                EXCHANGE.into(),
                topic.into(),
                BasicPublishOptions::default(),
                payload,
                persistent,
            )
            .await?)
    }

    async fn queue(&self, channel: &Channel, topic: &str, group: &str) -> Result<String> {
        let name = format!("{topic}:{group}");
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(name.as_str().into(), durable, FieldTable::default())
            .await?;
        channel
            .queue_bind(
                name.as_str().into(),
                EXCHANGE.into(),
                topic.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(name)
    }
}

fn confirmed(confirmation: Confirmation) -> Result<()> {
    match confirmation {
        Confirmation::Ack(_) | Confirmation::NotRequested => Ok(()),
        Confirmation::Nack(_) => bail!("the broker nacked a publish"),
    }
}

impl Side for RawAmqp {
    fn publish<'a>(&'a self, topic: &'a str, payload: Bytes) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { confirmed(self.send(topic, &payload).await?.await?) })
    }

    fn publish_batch<'a>(
        &'a self,
        topic: &'a str,
        payloads: Vec<Bytes>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // Sent concurrently, as lapin hands each publish to its I/O
            // loop and awaits the hand-over; then all confirms.
            let sends = payloads.iter().map(|payload| self.send(topic, payload));
            let confirms = try_join_all(sends).await?;
            try_join_all(confirms)
                .await?
                .into_iter()
                .try_for_each(confirmed)
        })
    }

    fn declare<'a>(&'a self, topic: &'a str, group: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.queue(&self.publish, topic, group).await?;
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
            let channel = self.connection.create_channel().await?;
            channel.basic_qos(256, BasicQosOptions::default()).await?;
            let queue = self.queue(&channel, topic, group).await?;
            let mut consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let task = tokio::spawn(async move {
                let mut consumed = Consumed::default();
                // Acks run while the next deliveries come in, rather than
                // one hand-over to lapin's I/O loop after another.
                let mut acks = FuturesUnordered::new();
                let mut received = 0;
                while received < n || !acks.is_empty() {
                    tokio::select! {
                        Some(acked) = acks.next(), if !acks.is_empty() => {
                            let acked: lapin::Result<bool> = acked;
                            acked?;
                        }
                        delivery = consumer.next(), if received < n => {
                            let Some(delivery) = delivery else {
                                bail!("the consumer ended");
                            };
                            let delivery = delivery?;
                            consumed.record(&delivery.data);
                            received += 1;
                            let acker = delivery.acker;
                            acks.push(async move { acker.ack(BasicAckOptions::default()).await });
                        }
                    }
                }
                channel.close(200, "done".into()).await?;
                anyhow::Ok(consumed)
            });
            let finished: BoxFuture<'static, Result<Consumed>> =
                Box::pin(async move { task.await? });
            Ok(finished)
        })
    }
}
