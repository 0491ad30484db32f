//! A consumer process SIGKILLed mid-stream, and a second one finishing.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use msg_core::{Connection, Publisher, StartPosition, Subscriber, Subscription};

use super::{IN_FLIGHT, MESSAGES, RECEIVE_DEADLINE, number_of, numbered};
use crate::Harness;

/// The environment variables that make a test binary the child consumer.
const CHILD: &str = "MSG_TESTKIT_FAULTS_CHILD";
const CHILD_TOPIC: &str = "MSG_TESTKIT_FAULTS_TOPIC";
const CHILD_GROUP: &str = "MSG_TESTKIT_FAULTS_GROUP";
const CHILD_OUT: &str = "MSG_TESTKIT_FAULTS_OUT";

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
            .envs(h.child_env().iter().map(|(k, v)| (k, v)))
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
