//! RustStream's in-process broker, next to msg's (`memory://`).

use std::num::NonZeroUsize;
use std::sync::Mutex;

use anyhow::Result;
use ruststream::memory::prelude::*;

use crate::measure::{Counter, Peer, app, start, unique};

#[derive(Deserialized)]
struct Frame<'a>(&'a [u8]);

#[subscriber(MemorySource)]
async fn take(frame: &Frame<'_>, ctx: &mut Context<'_, (), Counter>) -> HandlerOutcome {
    ctx.state().record(frame.0);
    HandlerOutcome::ack()
}

/// A broker per scenario: shutting an app down shuts its broker down, so
/// each scenario's topic comes with a new one.
pub struct Memory(Mutex<MemoryBroker<Retaining>>);

impl Memory {
    pub fn new() -> Self {
        Self(Mutex::new(broker()))
    }

    fn current(&self) -> MemoryBroker<Retaining> {
        self.0.lock().expect("lock").clone()
    }
}

fn broker() -> MemoryBroker<Retaining> {
    MemoryBroker::retaining(Retention::Messages(
        NonZeroUsize::new(1_000_000).expect("non-zero"),
    ))
}

impl Peer for Memory {
    async fn topic(&self, scenario: &str, _filled: bool) -> Result<String> {
        *self.0.lock().expect("lock") = broker();
        Ok(unique(&format!("bench.memory.{scenario}")))
    }

    fn publisher(&self) -> impl Publisher {
        self.current().publisher()
    }

    async fn consumer(&self, topic: &str, counter: &Counter) -> Result<RunningApp> {
        let topic = topic.to_owned();
        start(app(counter).with_broker(self.current(), move |b| {
            b.include(take.name(topic).start_at(MemoryPosition::start()));
        }))
        .await
    }
}
