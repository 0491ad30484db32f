//! `deliver_at` on every transport through the scheduler's publisher
//! decorator (feature `scheduler`): a transport crate adds
//! `msg_testkit::scheduler_case!(harness());` to its conformance tests.
//! Where the transport delays natively the decorator passes the publish
//! through; elsewhere the scheduler holds the message until it is due.

use std::time::{Duration, Instant, SystemTime};

use msg_core::{
    Message, PublishOptions, Publisher, StartPosition, Subscriber, Subscription, headers,
};
use msg_scheduler::{Scheduled, Scheduler};

use crate::harness::{Harness, collect};

/// A message published with `deliver_at` through [`Scheduled`] arrives
/// not before that time, after a later message without it, carrying the
/// time in `msg-deliver-at` and its own id.
pub async fn scheduled_deliver_at_not_before(h: &Harness) {
    let topic = h.topic("scheduled");
    let delay = Duration::from_millis(1500);
    let conn = h.connect().await;
    let mut stream = conn
        .subscribe(Subscription::new(&topic).start(StartPosition::Earliest))
        .await
        .expect("subscribe");
    let scheduler = Scheduler::memory();
    let runner = scheduler.runner(conn.clone()).start();
    let publisher = Scheduled::new(conn.clone(), scheduler);
    assert!(publisher.capabilities().native_deliver_at);

    let later = Message::new("later");
    let deliver_at = SystemTime::now() + delay;
    let published = Instant::now();
    publisher
        .publish_with(
            &topic,
            later.clone(),
            PublishOptions::new().deliver_at(deliver_at),
        )
        .await
        .expect("publish with deliver_at");
    let now = Message::new("now");
    publisher
        .publish(&topic, now.clone())
        .await
        .expect("publish");
    let first = collect(&mut stream, 1, h.timeout()).await;
    assert_eq!(
        first[0].message().id(),
        now.id(),
        "{}: the delayed message came first",
        h.name()
    );
    let second = collect(&mut stream, 1, h.timeout() + delay).await;
    let waited = published.elapsed();
    assert_eq!(second[0].message().id(), later.id(), "its own id");
    assert!(
        waited >= delay && SystemTime::now() >= deliver_at,
        "{}: delivered after {waited:?}, before deliver_at ({delay:?})",
        h.name()
    );
    assert_eq!(
        second[0].message().header(headers::DELIVER_AT),
        Some(msg_core::raw::time::rfc3339(deliver_at).as_str())
    );
    runner.shutdown().await;
}

/// Expands to the scheduler case as a `#[tokio::test]`, with the harness
/// the expression builds.
#[macro_export]
macro_rules! scheduler_case {
    ($harness:expr) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn scheduled_deliver_at_not_before() {
            let _shared = $crate::broker_lock("scheduled_deliver_at_not_before").await;
            let harness = $harness;
            $crate::scheduler::scheduled_deliver_at_not_before(&harness).await;
        }
    };
}
