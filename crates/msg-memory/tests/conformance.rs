//! The conformance suite on the in-process broker.

use std::sync::Arc;

use msg_core::Connection;
use msg_memory::{MemoryBroker, MemoryConfig};

fn harness() -> msg_testkit::Harness {
    let broker =
        MemoryBroker::with_config(MemoryConfig::default().retention(1_000)).expect("config");
    msg_testkit::Harness::new("memory", broker.capabilities(), move || {
        let client = broker.client();
        async move { Ok(Connection::new(client.clone()).with_dead_letter_reader(Arc::new(client))) }
    })
}

msg_testkit::conformance_suite!(harness());
msg_testkit::outbox_case!(harness());
msg_testkit::scheduler_case!(harness());
