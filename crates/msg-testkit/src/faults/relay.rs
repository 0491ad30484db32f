//! An outbox relay publishing while the broker restarts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use msg_core::{
    Capabilities, Connection, DeliveryStream, Message, PublishOptions, Publisher, Receipt, Result,
    StartPosition, Subscriber, Subscription, Uuid,
};
use msg_outbox::Outbox;
use sqlx::sqlite::SqlitePool;

use super::restart::wait_until;
use super::{RECEIVE_DEADLINE, Restart};
use crate::{BrokerEnv, Harness};

/// Rows the application enqueues, at [`ENQUEUE_RATE`].
const ROWS: usize = 4_000;
/// Rows enqueued per second: the enqueues last 10 s, and go on while the
/// broker is away.
const ENQUEUE_RATE: u64 = 400;
/// Message keys the rows spread over.
const KEYS: usize = 50;
/// How long the relay may take to publish every row once the last restart
/// is over (the broker answers again) and the enqueues are done. Far less
/// than the relay's backoff in this case, which an outage must not charge.
const CATCH_UP: Duration = Duration::from_secs(30);

/// What [`relay_across_restarts`] counted.
#[derive(Debug, Clone)]
pub struct RelayReport {
    /// Rows enqueued (and published: every one, or the case fails).
    pub rows: usize,
    /// Distinct rows received.
    pub received: usize,
    /// Deliveries beyond the first of a row: publishes the broker took
    /// but did not confirm before it went away, and deliveries it handed
    /// out again.
    pub duplicates: usize,
    /// The relay's publishes that failed: how many with each error (its
    /// `Debug`, which names its kind).
    pub failed_publishes: BTreeMap<String, usize>,
    /// How long each restart command took (until the broker answered).
    pub restarts: Vec<(Restart, Duration)>,
    /// From the last restart being over (or the enqueues done, if later)
    /// to the relay having published every row.
    pub caught_up: Duration,
}

/// An application enqueues rows into an SQLite outbox at a steady rate
/// while a running relay publishes them through the harness's connection
/// and the broker is restarted once per entry of `restarts`. Every row is
/// published and received, with the id it was enqueued with; the relay
/// publishes each key's rows one at a time, confirmed in order; and
/// the relay catches up within 30 s of the last restart, although
/// its backoff for a row the broker refused is `refusal_backoff`: an hour
/// shows that an unreachable broker charges no row a try or a backoff (a
/// broker that refuses publishes while it restarts needs a shorter one).
///
/// # Panics
///
/// When a row is not published or not received in time, when the relay
/// publishes a key's rows together or out of order, when the relay moves a row to the failed state, or
/// when a restart fails.
pub async fn relay_across_restarts(
    h: &Harness,
    broker: &BrokerEnv,
    restarts: &[Restart],
    refusal_backoff: Duration,
) -> RelayReport {
    let topic = h.topic("relay-restart");
    let conn = h.connect().await;
    let stream = conn
        .subscribe(
            Subscription::new(&topic)
                .start(StartPosition::Earliest)
                .group(h.group("relay-restart")),
        )
        .await
        .expect("subscribe");
    let received: Arc<Mutex<Vec<Uuid>>> = Arc::default();
    let consumer = tokio::spawn(consume(stream, received.clone()));

    let (outbox, pool, dir) = crate::outbox::scratch_outbox().await;
    let watched = Arc::new(Mutex::new(Watched::default()));
    let relay = outbox
        .relay(Watching {
            inner: conn.clone(),
            watched: watched.clone(),
        })
        .backoff(refusal_backoff, refusal_backoff)
        .poll_interval(Duration::from_millis(100))
        .start();

    let enqueued: Arc<Mutex<Vec<Message>>> = Arc::default();
    let enqueuer = tokio::spawn(enqueue_steadily(
        outbox.clone(),
        pool.clone(),
        topic.clone(),
        enqueued.clone(),
    ));
    let count = |m: &Mutex<Vec<Message>>| m.lock().unwrap().len();
    let mut restart_took = Vec::new();
    for (i, restart) in restarts.iter().enumerate() {
        let at = ROWS * (i + 1) / (restarts.len() + 1);
        wait_until(
            Duration::from_secs(60),
            || count(&enqueued) >= at,
            || format!("{} of {at} rows enqueued", count(&enqueued)),
        )
        .await;
        let began = Instant::now();
        match restart {
            Restart::Graceful => broker.restart().await,
            Restart::Kill => broker.kill_and_restart().await,
        }
        .unwrap_or_else(|e| panic!("restart ({restart:?}) failed: {}", e.chain()));
        restart_took.push((*restart, began.elapsed()));
    }
    enqueuer.await.expect("the enqueues panicked");
    let since = Instant::now();
    let mut stats = outbox.stats().await.expect("stats");
    while stats.pending > 0 {
        assert_eq!(stats.failed, 0, "the relay failed rows: {stats:?}");
        assert!(
            since.elapsed() < CATCH_UP,
            "{} of {ROWS} rows still pending {CATCH_UP:?} after the last restart; {}",
            stats.pending,
            watched.lock().unwrap().explain()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        stats = outbox.stats().await.expect("stats");
    }
    let caught_up = since.elapsed();
    assert_eq!(stats.failed, 0, "the relay failed rows: {stats:?}");
    relay.shutdown().await;

    let enqueued = enqueued.lock().unwrap().clone();
    let distinct = |received: &Mutex<Vec<Uuid>>| {
        let ids = received.lock().unwrap();
        ids.iter().collect::<std::collections::HashSet<_>>().len()
    };
    wait_until(
        RECEIVE_DEADLINE,
        || distinct(&received) == ROWS || consumer.is_finished(),
        || format!("{} of {ROWS} rows received", distinct(&received)),
    )
    .await;
    assert!(!consumer.is_finished(), "the subscription's stream ended");
    // What is still to come is duplicates: let them show.
    tokio::time::sleep(h.quiet()).await;
    consumer.abort();
    let received = received.lock().unwrap().clone();

    let ids: HashSet<Uuid> = enqueued.iter().map(Message::id).collect();
    let seen: HashSet<Uuid> = received.iter().copied().collect();
    assert!(
        seen.is_subset(&ids),
        "received ids that were never enqueued"
    );
    let watched = std::mem::take(&mut *watched.lock().unwrap());
    assert_eq!(
        watched.overlaps,
        0,
        "{}: publishes of a key's row while another of the key was in flight",
        h.name()
    );
    // The relay's order: each key's rows confirmed in the order enqueued
    // (a row confirmed again, after a publish whose answer the outage
    // lost, may follow later ones). What a consumer receives first can
    // differ: a delivery lost on its way in the outage comes back after
    // its acknowledgement wait, behind later ones.
    for (key, rows) in &watched.confirmed {
        let mut seen_rows = HashSet::new();
        let firsts: Vec<usize> = rows
            .iter()
            .copied()
            .filter(|n| seen_rows.insert(*n))
            .collect();
        assert!(
            firsts.is_sorted(),
            "{}: key {key}: rows confirmed out of order: {firsts:?}",
            h.name()
        );
    }
    let report = RelayReport {
        rows: ROWS,
        received: seen.len(),
        duplicates: received.len() - seen.len(),
        failed_publishes: watched.failed,
        restarts: restart_took,
        caught_up,
    };
    println!("{}: outbox relay across restarts: {report:?}", h.name());
    assert_eq!(report.received, ROWS, "every row received");
    pool.close().await;
    let _ = conn.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    report
}

/// The relay's publisher: the connection, watching what the relay does
/// with it.
struct Watching {
    inner: Connection,
    watched: Arc<Mutex<Watched>>,
}

/// What [`Watching`] saw.
#[derive(Default)]
struct Watched {
    /// Per key: the row in flight, and since when.
    in_flight: HashMap<String, (usize, Instant)>,
    /// Publishes begun while another of their key was in flight.
    overlaps: usize,
    /// Per key: the rows the broker confirmed, in the order it did.
    confirmed: HashMap<String, Vec<usize>>,
    /// How many publishes failed with each error.
    failed: BTreeMap<String, usize>,
}

impl Watched {
    /// What the relay is doing, for a failure's message.
    fn explain(&self) -> String {
        let oldest = self.in_flight.values().map(|(_, since)| since).min();
        format!(
            "{} publishes in flight (the oldest for {:?}); failed publishes: {:?}",
            self.in_flight.len(),
            oldest.map(Instant::elapsed),
            self.failed
        )
    }
}

impl Publisher for Watching {
    async fn publish_with(
        &self,
        topic: &str,
        message: Message,
        options: PublishOptions,
    ) -> Result<Receipt> {
        let key = message.key().unwrap_or_default().to_owned();
        let n = number(&message);
        {
            let mut watched = self.watched.lock().unwrap();
            if watched
                .in_flight
                .insert(key.clone(), (n, Instant::now()))
                .is_some()
            {
                watched.overlaps += 1;
            }
        }
        let published = self.inner.publish_with(topic, message, options).await;
        let mut watched = self.watched.lock().unwrap();
        watched.in_flight.remove(&key);
        match &published {
            Ok(_) => watched.confirmed.entry(key).or_default().push(n),
            Err(e) => *watched.failed.entry(format!("{e:?}")).or_default() += 1,
        }
        published
    }

    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }

    fn capabilities(&self) -> Capabilities {
        Publisher::capabilities(&self.inner)
    }
}

/// Enqueues [`ROWS`] rows at [`ENQUEUE_RATE`], one transaction each, each
/// keyed and numbered in its key's order.
async fn enqueue_steadily(
    outbox: Outbox<sqlx::Sqlite>,
    pool: SqlitePool,
    topic: String,
    enqueued: Arc<Mutex<Vec<Message>>>,
) {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / ENQUEUE_RATE));
    for n in 0..ROWS {
        tick.tick().await;
        let message = Message::new(n.to_string()).with_key(format!("k{}", n % KEYS));
        let mut tx = pool.begin().await.expect("begin");
        outbox
            .enqueue(&mut tx, &topic, message.clone())
            .await
            .expect("enqueue");
        tx.commit().await.expect("commit");
        enqueued.lock().unwrap().push(message);
    }
}

fn number(message: &Message) -> usize {
    std::str::from_utf8(message.payload())
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("a numbered row")
}

/// Receives and acknowledges, recording each delivery's id in order, until
/// the stream ends.
async fn consume(mut stream: DeliveryStream, received: Arc<Mutex<Vec<Uuid>>>) {
    while let Some(next) = stream.next().await {
        match next {
            Ok(mut delivery) => {
                received.lock().unwrap().push(delivery.message().id());
                let _ = delivery.ack().await;
            }
            // The stream may report the outage; it must not end.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}
