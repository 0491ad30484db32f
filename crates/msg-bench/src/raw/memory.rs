//! The raw side of the in-process broker: a `tokio::sync::mpsc` channel per
//! topic.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::side::{Consumed, Side};

type Channel = (
    mpsc::UnboundedSender<Bytes>,
    Option<mpsc::UnboundedReceiver<Bytes>>,
);

/// One channel per topic, made by whichever side comes first.
#[derive(Default)]
pub(crate) struct RawMemory {
    topics: Mutex<HashMap<String, Channel>>,
}

impl RawMemory {
    fn sender(&self, topic: &str) -> mpsc::UnboundedSender<Bytes> {
        let mut topics = self.topics.lock().expect("lock");
        let (tx, _) = topics.entry(topic.to_owned()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            (tx, Some(rx))
        });
        tx.clone()
    }
}

impl Side for RawMemory {
    fn publish<'a>(&'a self, topic: &'a str, payload: Bytes) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.sender(topic)
                .send(payload)
                .ok()
                .context("channel closed")
        })
    }

    fn publish_batch<'a>(
        &'a self,
        topic: &'a str,
        payloads: Vec<Bytes>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let tx = self.sender(topic);
            for p in payloads {
                tx.send(p).ok().context("channel closed")?;
            }
            Ok(())
        })
    }

    fn declare<'a>(&'a self, topic: &'a str, _group: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.sender(topic);
            Ok(())
        })
    }

    fn consume<'a>(
        &'a self,
        topic: &'a str,
        _group: &'a str,
        n: usize,
    ) -> BoxFuture<'a, Result<BoxFuture<'static, Result<Consumed>>>> {
        Box::pin(async move {
            self.sender(topic);
            let mut rx = self
                .topics
                .lock()
                .expect("lock")
                .get_mut(topic)
                .and_then(|(_, rx)| rx.take())
                .context("one consumer per topic")?;
            // Consumes in its own task, as a subscriber would, while the
            // caller publishes.
            let task = tokio::spawn(async move {
                let mut consumed = Consumed::default();
                for _ in 0..n {
                    let p = rx.recv().await.context("channel closed")?;
                    consumed.record(&p);
                }
                anyhow::Ok(consumed)
            });
            let finished: BoxFuture<'static, Result<Consumed>> =
                Box::pin(async move { task.await? });
            Ok(finished)
        })
    }
}
