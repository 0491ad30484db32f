//! The broker restarted under a steady load.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use msg_core::{Connection, DeliveryStream, Publisher, StartPosition, Subscriber, Subscription};

use super::{IN_FLIGHT, MESSAGES, PUBLISH_DEADLINE, RECEIVE_DEADLINE, number_of, numbered};
use crate::{BrokerEnv, Harness};

/// The steady publish rate under load, messages per second: the load
/// lasts 25 s, which spans two restarts of the slowest broker to start
/// (RabbitMQ, 6-8 s each).
const RATE: u64 = 400;

/// How a broker is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Stopped cleanly and started again.
    Graceful,
    /// Killed with SIGKILL, as a crash would, and started again.
    Kill,
}

/// What [`restart_under_load`] counted.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Messages the broker confirmed (all of them, or the case fails).
    pub confirmed: usize,
    /// Publish attempts that failed and were retried.
    pub failed_attempts: usize,
    /// Distinct messages received.
    pub received: usize,
    /// Deliveries beyond the first of a message.
    pub duplicates: usize,
    /// Per restart: from the broker answering again (its restart command
    /// returned) to the first publish it confirmed after that; `None` when
    /// every message was confirmed before the command returned.
    pub publishing_resumed: Vec<(Restart, Option<Duration>)>,
}

/// Publishes [`MESSAGES`] at a steady rate while a consumer group
/// receives them, restarts the broker once per entry of `restarts`
/// (spread over the run), and checks that every message the broker
/// confirmed was received.
///
/// # Panics
///
/// When a message is not confirmed within a minute of retries, when a
/// confirmed message is not received, when the subscription's stream
/// ends, or when a restart fails.
pub async fn restart_under_load(
    h: &Harness,
    broker: &BrokerEnv,
    restarts: &[Restart],
) -> LoadReport {
    let topic = h.topic("under-load");
    let c = h.connect().await;
    let subscription = Subscription::new(&topic)
        .start(StartPosition::Earliest)
        .group(h.group("under-load"));
    let received = Arc::new(Mutex::new(vec![0u32; MESSAGES]));
    // Subscribed before the first publish: on brokers that route at
    // publish time (RabbitMQ) the group's queue must be there.
    let stream = c.subscribe(subscription).await.expect("subscribe");
    let consumer = tokio::spawn(consume(stream, received.clone()));

    let confirmed: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; MESSAGES]));
    let failed_attempts = Arc::new(AtomicUsize::new(0));
    let publisher = tokio::spawn(publish_steadily(
        c.clone(),
        topic.clone(),
        confirmed.clone(),
        failed_attempts.clone(),
    ));

    // Restarts spread over the run, each once the load flows.
    let mut publishing_resumed = Vec::new();
    for (i, restart) in restarts.iter().enumerate() {
        let at = MESSAGES * (i + 1) / (restarts.len() + 1);
        wait_until(
            PUBLISH_DEADLINE,
            || count_confirmed(&confirmed) >= at,
            || {
                format!(
                    "{} of {at} messages confirmed before restart {}",
                    count_confirmed(&confirmed),
                    i + 1
                )
            },
        )
        .await;
        match restart {
            Restart::Graceful => broker.restart().await,
            Restart::Kill => broker.kill_and_restart().await,
        }
        .unwrap_or_else(|e| panic!("restart ({restart:?}) failed: {}", e.chain()));
        // The restart command returns once the broker answers again.
        let answered = Instant::now();
        let all_done = || count_confirmed(&confirmed) == MESSAGES;
        wait_until(
            PUBLISH_DEADLINE,
            || confirmed_after(&confirmed, answered) || all_done(),
            || {
                format!(
                    "no publish confirmed within {PUBLISH_DEADLINE:?} of the restart ({restart:?})"
                )
            },
        )
        .await;
        // None: the load had ended before the restart command returned.
        let first = confirmed
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .filter(|at| **at > answered)
            .min()
            .map(|first| *first - answered);
        publishing_resumed.push((*restart, first));
    }
    publisher.await.expect("the publisher panicked");

    let expected: HashSet<usize> = (0..MESSAGES).collect();
    wait_until(
        RECEIVE_DEADLINE,
        || distinct(&received) == MESSAGES || consumer.is_finished(),
        || {
            format!(
                "{} of {MESSAGES} confirmed messages received; missing e.g. {:?}",
                distinct(&received),
                missing(&received, &expected)
            )
        },
    )
    .await;
    assert!(!consumer.is_finished(), "the subscription's stream ended");
    // What is still to come is duplicates: let them show.
    tokio::time::sleep(h.quiet()).await;
    consumer.abort();
    let counts = received.lock().unwrap().clone();
    let report = LoadReport {
        confirmed: MESSAGES,
        failed_attempts: failed_attempts.load(Ordering::Relaxed),
        received: counts.iter().filter(|n| **n > 0).count(),
        duplicates: counts.iter().map(|n| n.saturating_sub(1) as usize).sum(),
        publishing_resumed,
    };
    println!("{}: restart under load: {report:?}", h.name());
    assert_eq!(
        report.received, MESSAGES,
        "every confirmed message received"
    );
    let _ = c.close().await;
    report
}

/// Receives and acknowledges, counting deliveries per message, until the
/// stream ends.
async fn consume(mut stream: DeliveryStream, received: Arc<Mutex<Vec<u32>>>) {
    while let Some(next) = stream.next().await {
        match next {
            Ok(mut delivery) => {
                if let Some(n) = number_of(delivery.message()) {
                    received.lock().unwrap()[n] += 1;
                }
                // A settle the outage refused comes back as a redelivery,
                // which is counted as a duplicate.
                let _ = delivery.ack().await;
            }
            // The stream may report the outage; it must not end.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Publishes every message at [`RATE`], each retried until the broker
/// confirms it, with at most [`IN_FLIGHT`] in flight.
async fn publish_steadily(
    c: Connection,
    topic: String,
    confirmed: Arc<Mutex<Vec<Option<Instant>>>>,
    failed_attempts: Arc<AtomicUsize>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    // After an outage the rate stays steady rather than bursting.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..MESSAGES {
        tick.tick().await;
        let slot = slots.clone().acquire_owned().await.unwrap();
        let (c, topic, confirmed, failed) = (
            c.clone(),
            topic.clone(),
            confirmed.clone(),
            failed_attempts.clone(),
        );
        tasks.spawn(async move {
            let _slot = slot;
            // The same message, with its id, on every attempt: a retry of a
            // publish the broker took but did not confirm is a duplicate
            // that a consumer's de-duplication recognises.
            let message = numbered(n);
            let deadline = Instant::now() + PUBLISH_DEADLINE;
            loop {
                match c.publish(&topic, message.clone()).await {
                    Ok(_) => {
                        confirmed.lock().unwrap()[n] = Some(Instant::now());
                        return;
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        assert!(
                            Instant::now() < deadline,
                            "message {n} not confirmed within {PUBLISH_DEADLINE:?}: {}",
                            e.chain()
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a publish task panicked");
    }
}

fn count_confirmed(confirmed: &Mutex<Vec<Option<Instant>>>) -> usize {
    confirmed.lock().unwrap().iter().flatten().count()
}

fn confirmed_after(confirmed: &Mutex<Vec<Option<Instant>>>, after: Instant) -> bool {
    confirmed
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .any(|at| *at > after)
}

fn distinct(received: &Mutex<Vec<u32>>) -> usize {
    received.lock().unwrap().iter().filter(|n| **n > 0).count()
}

fn missing(received: &Mutex<Vec<u32>>, expected: &HashSet<usize>) -> Vec<usize> {
    let counts = received.lock().unwrap();
    let mut missing: Vec<usize> = expected
        .iter()
        .copied()
        .filter(|n| counts[*n] == 0)
        .collect();
    missing.sort_unstable();
    missing.truncate(10);
    missing
}

pub(super) async fn wait_until(
    deadline: Duration,
    mut done: impl FnMut() -> bool,
    explain: impl FnOnce() -> String,
) {
    let until = Instant::now() + deadline;
    while !done() {
        assert!(Instant::now() < until, "{}", explain());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
