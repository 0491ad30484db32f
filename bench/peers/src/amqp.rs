//! RustStream on RabbitMQ (ruststream-lapin), next to msg-amqp: persistent
//! messages with publisher confirms, a durable classic queue consumed with
//! a prefetch of 256 and each delivery acked.
//!
//! RustStream publishes to an exchange under a routing key; the default
//! exchange routes a key straight to the queue of that name, so each
//! scenario's queue is its topic. A queue keeps nothing published before it
//! exists, so the consume scenario declares it first, as msg-bench does.

use std::num::NonZeroU16;

use anyhow::Result;
use ruststream_lapin::prelude::*;
use ruststream_lapin::{ConnectedLapinBroker, LapinPublish, RabbitQueue};

use crate::measure::{Counter, PREFETCH, Peer, app, start, take, unique};

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
}

impl Peer for Amqp {
    async fn topic(&self, scenario: &str, filled: bool) -> Result<String> {
        let queue = unique(&format!("bench.amqp.{scenario}"));
        if filled {
            // Declared by subscribing once.
            self.connected
                .subscribe(RabbitQueue::new(queue.clone()))
                .await
                .map_err(|e| anyhow::anyhow!("declaring {queue}: {e}"))?;
        }
        Ok(queue)
    }

    fn publisher(&self) -> impl Publisher {
        self.connected.publisher(LapinPublish::default().confirms())
    }

    async fn consumer(&self, queue: &str, counter: &Counter) -> Result<RunningApp> {
        let queue = queue.to_owned();
        start(app(counter).with_broker(broker(&self.url), move |b| {
            b.include(take.name(queue));
        }))
        .await
    }
}
