//! Faults under load, against a real broker: the broker restarted twice
//! while messages flow (cleanly, then killed with SIGKILL), and a consumer
//! process SIGKILLed mid-stream with a second consumer finishing.
//!
//! A transport crate runs both from `tests/faults.rs`:
//!
//! ```ignore
//! msg_testkit::faults_suite!(harness(), "redis");
//! ```
//!
//! The harness's connection should redeliver what a dead consumer held
//! within seconds (a short claim or acknowledgement timeout), or the
//! second consumer waits for it. What each case counts is printed
//! (`--nocapture` shows it); what it asserts is that nothing the broker
//! confirmed is lost.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use msg_core::{
    Connection, DeliveryStream, Message, Publisher, StartPosition, Subscriber, Subscription,
};

use crate::{BrokerEnv, Harness};

/// Messages published in each case.
pub const MESSAGES: usize = 10_000;
/// The steady publish rate under load, messages per second: the load
/// lasts 25 s, which spans two restarts of the slowest broker to start
/// (RabbitMQ, 6-8 s each).
const RATE: u64 = 400;
/// Publishes in flight at most; a publish that fails is retried.
const IN_FLIGHT: usize = 64;
/// How long one message may take to be confirmed, retries included.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(60);
/// How long the consumers may take to receive everything confirmed.
const RECEIVE_DEADLINE: Duration = Duration::from_secs(90);

/// The environment variables that make a test binary the child consumer.
const CHILD: &str = "MSG_TESTKIT_FAULTS_CHILD";
const CHILD_TOPIC: &str = "MSG_TESTKIT_FAULTS_TOPIC";
const CHILD_GROUP: &str = "MSG_TESTKIT_FAULTS_GROUP";
const CHILD_OUT: &str = "MSG_TESTKIT_FAULTS_OUT";

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

/// The message numbered `n`: its payload is the number.
fn numbered(n: usize) -> Message {
    Message::new(n.to_string())
}

fn number_of(message: &Message) -> Option<usize> {
    std::str::from_utf8(message.payload()).ok()?.parse().ok()
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

async fn wait_until(
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

/// What [`consumer_killed_mid_stream`] counted.
#[derive(Debug, Clone)]
pub struct KillReport {
    /// Messages the first consumer had handled when it was killed.
    pub handled_before_kill: usize,
    /// Messages the second consumer handled.
    pub handled_after: usize,
    /// Messages handled by both: the first's work in flight at the kill.
    pub duplicates: usize,
}

/// Publishes [`MESSAGES`], starts a consumer of a group in a child
/// process (this test binary again, running the test `child_test`, which
/// calls [`consumer_child`]), SIGKILLs it once it handled a quarter, and
/// finishes with a second consumer of the same group in this process:
/// every message is handled by one or the other.
///
/// # Panics
///
/// When a message is lost, or the child cannot be started or exits.
pub async fn consumer_killed_mid_stream(h: &Harness, child_test: &str) -> KillReport {
    let topic = h.topic("consumer-kill");
    let group = h.group("consumer-kill");
    let c = h.connect().await;
    let subscription = Subscription::new(&topic)
        .start(StartPosition::Earliest)
        .group(group.clone());
    if !h.capabilities().replay {
        // Without replay (RabbitMQ routes at publish time) the group's
        // queue must exist before anything is published. Where the group
        // can start at the earliest position, no member joins early: on
        // tansu a member that leaves can stall the group's next members.
        drop(c.subscribe(subscription.clone()).await.expect("subscribe"));
    }
    publish_all(&c, &topic).await;
    let out = std::env::temp_dir().join(format!(
        "msg-faults-{}-{}.log",
        h.name(),
        msg_core::Uuid::now_v7()
    ));
    let mut child = KillOnDrop(
        std::process::Command::new(std::env::current_exe().expect("the test binary"))
            .args([child_test, "--exact", "--nocapture"])
            .env(CHILD, "1")
            .env(CHILD_TOPIC, &topic)
            .env(CHILD_GROUP, &group)
            .env(CHILD_OUT, &out)
            .spawn()
            .expect("start the child consumer"),
    );
    let deadline = Instant::now() + RECEIVE_DEADLINE;
    while handled(&out).len() < MESSAGES / 4 {
        assert!(
            Instant::now() < deadline,
            "the child consumer handled only {} messages",
            handled(&out).len()
        );
        assert!(
            child.0.try_wait().expect("child status").is_none(),
            "the child consumer exited"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.0.kill().expect("SIGKILL the child");
    child.0.wait().expect("reap the child");
    let before: Vec<usize> = handled(&out);
    let _ = std::fs::remove_file(&out);
    assert!(
        before.len() < MESSAGES,
        "killed after it had handled everything"
    );

    let first: HashSet<usize> = before.iter().copied().collect();
    let mut second: Vec<usize> = Vec::new();
    let mut stream = c.subscribe(subscription).await.expect("subscribe");
    let until = Instant::now() + RECEIVE_DEADLINE;
    let mut seen: HashSet<usize> = first.clone();
    while seen.len() < MESSAGES {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Ok(mut delivery))) => {
                if let Some(n) = number_of(delivery.message()) {
                    second.push(n);
                    seen.insert(n);
                }
                let _ = delivery.ack().await;
            }
            Ok(Some(Err(_))) => {}
            Ok(None) => panic!("the second consumer's stream ended"),
            Err(_) => {
                let mut missing: Vec<usize> = (0..MESSAGES)
                    .filter(|n| !seen.contains(n))
                    .take(10)
                    .collect();
                missing.sort_unstable();
                panic!(
                    "{} of {MESSAGES} messages handled after the kill ({} before it); missing e.g. {missing:?}",
                    seen.len(),
                    first.len()
                );
            }
        }
    }
    // What is still to come is duplicates: let them show.
    while let Some(mut delivery) = crate::recv(&mut stream, h.quiet()).await {
        if let Some(n) = number_of(delivery.message()) {
            second.push(n);
        }
        let _ = delivery.ack().await;
    }
    let report = KillReport {
        handled_before_kill: before.len(),
        handled_after: second.len(),
        duplicates: before.len() + second.len() - seen.len(),
    };
    println!("{}: consumer killed mid-stream: {report:?}", h.name());
    let _ = c.close().await;
    report
}

/// The child consumer of [`consumer_killed_mid_stream`]: does nothing
/// unless this process is that child; then handles the group's messages
/// slowly, one line per message handled, and never returns (the parent
/// kills it).
pub async fn consumer_child(h: &Harness) {
    if std::env::var(CHILD).is_err() {
        return;
    }
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let out = PathBuf::from(var(CHILD_OUT));
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out)
        .expect("open the child's log");
    let c = h.connect().await;
    let subscription = Subscription::new(var(CHILD_TOPIC))
        .start(StartPosition::Earliest)
        .group(var(CHILD_GROUP));
    let mut stream = c.subscribe(subscription).await.expect("subscribe");
    while let Some(next) = stream.next().await {
        if let Ok(mut delivery) = next {
            // A handler's work takes a while: the kill lands mid-stream.
            tokio::time::sleep(Duration::from_micros(500)).await;
            if let Some(n) = number_of(delivery.message()) {
                // One write per line, unbuffered: what the kernel has
                // survives the kill.
                log.write_all(format!("{n}\n").as_bytes())
                    .expect("write the child's log");
            }
            let _ = delivery.ack().await;
        }
    }
    std::future::pending::<()>().await;
}

/// A child process that a failing case must not leave running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The numbers the child logged as handled.
fn handled(out: &Path) -> Vec<usize> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

/// Publishes every message, 64 in flight.
async fn publish_all(c: &Connection, topic: &str) {
    let numbers: Vec<usize> = (0..MESSAGES).collect();
    for chunk in numbers.chunks(IN_FLIGHT) {
        let publishes = chunk.iter().map(|n| c.publish(topic, numbered(*n)));
        for result in futures::future::join_all(publishes).await {
            result.unwrap_or_else(|e| panic!("publish: {}", e.chain()));
        }
    }
}

/// Expands to the fault cases of [`faults`](crate::faults) against the
/// broker `name` of `cargo xtask brokers up`, each a `#[tokio::test]`
/// building the harness with the given expression. They run one at a
/// time (they restart the broker).
#[macro_export]
macro_rules! faults_suite {
    ($harness:expr, $broker:expr) => {
        /// The broker restarted cleanly, then killed, under a steady load.
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn restart_under_load() {
            let _alone = $crate::broker_lock("faults_restart").await;
            let h = $harness;
            $crate::faults::restart_under_load(
                &h,
                &$crate::BrokerEnv::get($broker),
                &[
                    $crate::faults::Restart::Graceful,
                    $crate::faults::Restart::Kill,
                ],
            )
            .await;
        }

        /// A consumer process SIGKILLed mid-stream; another finishes.
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn consumer_killed_mid_stream() {
            if ::std::env::var("MSG_TESTKIT_FAULTS_CHILD").is_ok() {
                return;
            }
            let _alone = $crate::broker_lock("faults_restart").await;
            let h = $harness;
            $crate::faults::consumer_killed_mid_stream(&h, "faults_consumer_child").await;
        }

        /// The child process of `consumer_killed_mid_stream`; nothing
        /// otherwise.
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn faults_consumer_child() {
            if ::std::env::var("MSG_TESTKIT_FAULTS_CHILD").is_ok() {
                let h = $harness;
                $crate::faults::consumer_child(&h).await;
            }
        }
    };
}
