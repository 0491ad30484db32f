//! What the SQLite and PostgreSQL tests share: a recording publisher and
//! the cases every database must pass.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use msg_core::{Capabilities, Error, Message, PublishOptions, Publisher, Receipt, Result, headers};
use msg_outbox::{Outbox, Relay};

/// What the recording publisher does with one publish.
pub enum Act {
    Accept,
    /// Accepts after a while, as a broker's confirm takes.
    AcceptAfter(Duration),
    Refuse(Error),
    Hang,
}

type Rule = dyn Fn(&str, &Message) -> Act + Send + Sync;

/// Records what it accepted, in order; a rule decides each publish.
#[derive(Clone)]
pub struct Recorder {
    accepted: Arc<Mutex<Vec<(String, Message, PublishOptions)>>>,
    tries: Arc<Mutex<HashMap<msg_core::Uuid, u32>>>,
    rule: Arc<Rule>,
    /// Publishes under way now, and the most there ever were.
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
}

impl Recorder {
    pub fn accepting() -> Self {
        Self::with_rule(|_, _| Act::Accept)
    }

    pub fn with_rule(rule: impl Fn(&str, &Message) -> Act + Send + Sync + 'static) -> Self {
        Self {
            accepted: Arc::default(),
            tries: Arc::default(),
            rule: Arc::new(rule),
            in_flight: Arc::default(),
            most_in_flight: Arc::default(),
        }
    }

    pub fn accepted(&self) -> Vec<(String, Message, PublishOptions)> {
        self.accepted.lock().unwrap().clone()
    }

    pub fn payloads(&self, topic: &str) -> Vec<String> {
        self.accepted()
            .into_iter()
            .filter(|(t, _, _)| t == topic)
            .map(|(_, m, _)| String::from_utf8(m.payload().to_vec()).unwrap())
            .collect()
    }

    /// The most publishes there were under way at once.
    pub fn most_in_flight(&self) -> usize {
        self.most_in_flight.load(Ordering::SeqCst)
    }

    /// Publishes tried for message `id`.
    pub fn tries(&self, id: msg_core::Uuid) -> u32 {
        self.tries.lock().unwrap().get(&id).copied().unwrap_or(0)
    }

    pub async fn wait_for(&self, accepted: usize, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.accepted.lock().unwrap().len() < accepted {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {accepted} published within {within:?}",
                self.accepted.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Publisher for Recorder {
    async fn publish_with(
        &self,
        topic: &str,
        message: Message,
        options: PublishOptions,
    ) -> Result<Receipt> {
        *self.tries.lock().unwrap().entry(message.id()).or_default() += 1;
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        let mut act = (self.rule)(topic, &message);
        if let Act::AcceptAfter(delay) = act {
            tokio::time::sleep(delay).await;
            act = Act::Accept;
        }
        if !matches!(act, Act::Hang) {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        match act {
            Act::AcceptAfter(_) => unreachable!(),
            Act::Accept => {
                let id = message.id();
                self.accepted
                    .lock()
                    .unwrap()
                    .push((topic.to_owned(), message, options));
                let _ = id;
                Ok(Receipt::accepted())
            }
            Act::Refuse(e) => Err(e),
            Act::Hang => std::future::pending().await,
        }
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::minimal("recorder")
    }
}

/// One database the cases run on.
pub trait Db: Send + Sync + 'static {
    type DB: Send + Sync + 'static;
    /// A fresh outbox (its own table or file), migrated.
    fn outbox() -> impl Future<Output = Outbox<Self::DB>> + Send;
    /// Another outbox over the same table, with its own connections, as
    /// another process would have.
    fn other(outbox: &Outbox<Self::DB>) -> impl Future<Output = Outbox<Self::DB>> + Send;
    /// Enqueues `messages` in one transaction, which commits or rolls back.
    fn enqueue(
        outbox: &Outbox<Self::DB>,
        messages: Vec<(&'static str, Message)>,
        commit: bool,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Enqueues with options, committing.
    fn enqueue_with(
        outbox: &Outbox<Self::DB>,
        topic: &'static str,
        message: Message,
        options: PublishOptions,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Rows in the outbox table, whatever their state.
    fn rows(outbox: &Outbox<Self::DB>) -> impl Future<Output = i64> + Send;
    /// Whether a relay that dies needs its lease to expire.
    const LEASED: bool;
}

pub fn keyed(key: &str, n: usize) -> Message {
    Message::new(format!("{key}:{n}")).with_key(key)
}

pub async fn rollback_publishes_nothing_and_commit_publishes_once<D: Db>() {
    let outbox = D::outbox().await;
    let recorder = Recorder::accepting();
    let relay = outbox.relay(recorder.clone());
    D::enqueue(
        &outbox,
        vec![("orders", Message::new("rolled back"))],
        false,
    )
    .await
    .unwrap();
    assert_eq!(D::rows(&outbox).await, 0, "a rollback leaves no row");
    let committed = Message::new("committed").with_header(headers::CORRELATION_ID, "conv-1");
    D::enqueue(&outbox, vec![("orders", committed.clone())], true)
        .await
        .unwrap();
    let report = relay.run_once().await.unwrap();
    assert_eq!((report.claimed, report.published), (1, 1));
    assert_eq!(relay.run_once().await.unwrap().claimed, 0, "published once");
    let accepted = recorder.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].0, "orders");
    assert_eq!(
        accepted[0].1, committed,
        "id, headers and payload as enqueued"
    );
    assert_eq!(
        D::rows(&outbox).await,
        0,
        "sent rows are deleted by default"
    );
}

pub async fn bad_input_is_an_error_and_writes_nothing<D: Db>() {
    let outbox = D::outbox().await;
    let err = D::enqueue(
        &outbox,
        vec![
            ("orders", Message::new("ok")),
            ("", Message::new("no topic")),
        ],
        true,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::InvalidTopic { .. }), "{err}");
    let err = D::enqueue(
        &outbox,
        vec![("orders", Message::new("x").with_header("bad\nname", "v"))],
        true,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::InvalidHeader { .. }), "{err}");
    assert_eq!(D::rows(&outbox).await, 0);
}

pub async fn options_are_carried_to_the_publish<D: Db>() {
    let outbox = D::outbox().await;
    let recorder = Recorder::accepting();
    let at = std::time::UNIX_EPOCH + Duration::from_millis(4_000_000_000_000);
    let options = PublishOptions::new()
        .deliver_at(at)
        .ttl(Duration::from_secs(30))
        .reply_to("replies");
    D::enqueue_with(&outbox, "orders", Message::new("later"), options.clone())
        .await
        .unwrap();
    outbox.relay(recorder.clone()).run_once().await.unwrap();
    assert_eq!(recorder.accepted()[0].2, options);
}

/// Two relays (as two processes) over rows of 20 keys: every row once,
/// each key's rows in the order they were enqueued.
pub async fn two_relays_keep_each_keys_order<D: Db>() {
    const KEYS: usize = 20;
    const PER_KEY: usize = 50;
    let outbox = D::outbox().await;
    // Confirms take 0 to 2 ms, so that the relays' publishes interleave.
    let recorder = Recorder::with_rule(|_, message| {
        Act::AcceptAfter(Duration::from_millis(u64::from(
            message.id().as_bytes()[15] % 3,
        )))
    });
    let enqueue = |n: usize| {
        let batch = (0..KEYS)
            .map(|k| ("orders", keyed(&format!("k{k}"), n)))
            .collect();
        D::enqueue(&outbox, batch, true)
    };
    // A backlog both relays race for, then small transactions while they
    // run.
    for n in 0..PER_KEY / 2 {
        enqueue(n).await.unwrap();
    }
    let poll = Duration::from_millis(5);
    let relays = [
        outbox
            .relay(recorder.clone())
            .batch_size(37)
            .poll_interval(poll)
            .start(),
        D::other(&outbox)
            .await
            .relay(recorder.clone())
            .batch_size(23)
            .poll_interval(poll)
            .start(),
    ];
    for n in PER_KEY / 2..PER_KEY {
        enqueue(n).await.unwrap();
    }
    recorder
        .wait_for(KEYS * PER_KEY, Duration::from_secs(60))
        .await;
    for relay in relays {
        relay.shutdown().await;
    }
    let payloads = recorder.payloads("orders");
    assert_eq!(payloads.len(), KEYS * PER_KEY, "every row once");
    let mut next: HashMap<String, usize> = HashMap::new();
    for payload in payloads {
        let (key, n) = payload.split_once(':').unwrap();
        let expected = next.entry(key.to_owned()).or_default();
        assert_eq!(
            n.parse::<usize>().unwrap(),
            *expected,
            "key {key} out of order"
        );
        *expected += 1;
    }
}

/// Two relays racing over rows without a key, claimed while earlier
/// claims record theirs: no row is published twice. (A claim that locked
/// a row after another claim had published and recorded it, but judged it
/// pending by what it read before, would publish it again.)
pub async fn two_relays_publish_rows_without_a_key_once<D: Db>() {
    const ROWS: usize = 3_000;
    let outbox = D::outbox().await;
    let recorder = Recorder::with_rule(|_, message| {
        Act::AcceptAfter(Duration::from_micros(
            u64::from(message.id().as_bytes()[15] % 4) * 100,
        ))
    });
    for chunk in 0..ROWS / 100 {
        let batch = (0..100)
            .map(|n| ("events", Message::new(format!("{}", chunk * 100 + n))))
            .collect();
        D::enqueue(&outbox, batch, true).await.unwrap();
    }
    let other = D::other(&outbox).await;
    let relays = [
        outbox.relay(recorder.clone()).batch_size(37).workers(3),
        other.relay(recorder.clone()).batch_size(23).workers(3),
    ]
    .map(|relay| relay.poll_interval(Duration::from_millis(5)).start());
    recorder.wait_for(ROWS, Duration::from_secs(60)).await;
    // Time for a late duplicate to arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for relay in relays {
        relay.shutdown().await;
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for payload in recorder.payloads("events") {
        *seen.entry(payload).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|&(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "published more than once: {twice:?}");
    assert_eq!(seen.len(), ROWS, "every row");
}

/// A row that fails holds back the later rows of its key, and only those;
/// after its backoff the key goes on in order.
pub async fn a_failing_row_holds_back_only_its_key<D: Db>() {
    let outbox = D::outbox().await;
    let failures = Arc::new(Mutex::new(2));
    let f = failures.clone();
    let recorder = Recorder::with_rule(move |_, message| {
        let mut left = f.lock().unwrap();
        if message.payload().as_ref() == b"stuck:0" && *left > 0 {
            *left -= 1;
            return Act::Refuse(Error::broker_retryable("refused for now"));
        }
        Act::Accept
    });
    let relay = outbox
        .relay(recorder.clone())
        .backoff(Duration::from_millis(200), Duration::from_secs(1));
    D::enqueue(
        &outbox,
        vec![
            ("orders", keyed("stuck", 0)),
            ("orders", keyed("free", 0)),
            ("orders", keyed("stuck", 1)),
            ("orders", keyed("free", 1)),
            ("orders", Message::new("no key")),
        ],
        true,
    )
    .await
    .unwrap();
    let first = relay.run_once().await.unwrap();
    assert_eq!((first.published, first.retrying), (3, 1), "{first:?}");
    assert_eq!(recorder.payloads("orders"), ["free:0", "free:1", "no key"]);
    let held = relay.run_once().await.unwrap();
    assert_eq!(held.claimed, 0, "the key waits out the backoff: {held:?}");
    tokio::time::sleep(Duration::from_millis(250)).await;
    relay.run_once().await.unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    relay.run_once().await.unwrap();
    let stuck: Vec<String> = recorder
        .payloads("orders")
        .into_iter()
        .filter(|p| p.starts_with("stuck"))
        .collect();
    assert_eq!(
        stuck,
        ["stuck:0", "stuck:1"],
        "in order, once the first went"
    );
}

/// A row no retry can publish goes to the failed state with the reason,
/// stops holding back its key, and can be put back by an operator.
pub async fn a_row_that_cannot_be_published_is_kept_as_failed<D: Db>() {
    let outbox = D::outbox().await;
    let refuse = Arc::new(Mutex::new(true));
    let r = refuse.clone();
    let recorder = Recorder::with_rule(move |_, message| {
        if message.payload().as_ref() == b"big:0" && *r.lock().unwrap() {
            return Act::Refuse(Error::MessageTooLarge { size: 5, max: 4 });
        }
        if message.payload().as_ref() == b"flaky" {
            // Retryable, and about the message: the broker refused it.
            return Act::Refuse(Error::broker_retryable("refused for now"));
        }
        Act::Accept
    });
    let relay = outbox
        .relay(recorder.clone())
        .max_attempts(3)
        .backoff(Duration::ZERO, Duration::ZERO);
    let big = keyed("big", 0);
    let flaky = Message::new("flaky");
    D::enqueue(
        &outbox,
        vec![
            ("orders", big.clone()),
            ("orders", keyed("big", 1)),
            ("orders", flaky.clone()),
        ],
        true,
    )
    .await
    .unwrap();
    for _ in 0..5 {
        relay.run_once().await.unwrap();
    }
    assert_eq!(
        recorder.tries(big.id()),
        1,
        "a permanent error is not retried"
    );
    assert_eq!(
        recorder.tries(flaky.id()),
        3,
        "a retryable one max_attempts times"
    );
    assert_eq!(
        recorder.payloads("orders"),
        ["big:1"],
        "a failed row holds back its key no longer"
    );
    let failed = outbox.failed(10).await.unwrap();
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[0].id, big.id());
    assert_eq!(failed[0].topic, "orders");
    assert!(
        failed[0].error.contains("exceeds the limit"),
        "{}",
        failed[0].error
    );
    assert_eq!(failed[1].attempts, 3);
    assert!(
        failed[1].error.contains("refused for now"),
        "{}",
        failed[1].error
    );
    let stats = outbox.stats().await.unwrap();
    assert_eq!((stats.pending, stats.failed), (0, 2));

    *refuse.lock().unwrap() = false;
    assert!(outbox.requeue_failed(big.id()).await.unwrap());
    assert!(!outbox.requeue_failed(big.id()).await.unwrap(), "once");
    relay.run_once().await.unwrap();
    assert_eq!(recorder.payloads("orders"), ["big:1", "big:0"]);
}

/// A broker that cannot be reached (a lost connection, timeouts,
/// backpressure, a closed publisher) for longer than `max_attempts` tries
/// fails no row and charges it no backoff: each stays pending, its key in
/// order, and goes out on the first pass once the broker is back.
pub async fn an_unreachable_broker_fails_no_row<D: Db>() {
    let outbox = D::outbox().await;
    let outage = Arc::new(Mutex::new(0usize));
    let o = outage.clone();
    let recorder = Recorder::with_rule(move |_, _| {
        let mut tries = o.lock().unwrap();
        *tries += 1;
        match *tries {
            1..=2 => Act::Refuse(Error::Connection("broker away".into())),
            3..=4 => Act::Refuse(Error::timeout(Duration::from_secs(1))),
            5..=6 => Act::Refuse(Error::Backpressure),
            7..=8 => Act::Refuse(Error::Closed),
            _ => Act::Accept,
        }
    });
    let relay = outbox
        .relay(recorder.clone())
        .max_attempts(2)
        .backoff(Duration::from_secs(3600), Duration::from_secs(3600));
    D::enqueue(
        &outbox,
        vec![("orders", keyed("k", 0)), ("orders", keyed("k", 1))],
        true,
    )
    .await
    .unwrap();
    for _ in 0..8 {
        let pass = relay.run_once().await.unwrap();
        assert_eq!(
            (
                pass.claimed,
                pass.retrying,
                pass.failed,
                pass.broker_unreachable
            ),
            (2, 1, 0, true),
            "{pass:?}"
        );
    }
    assert_eq!(
        *outage.lock().unwrap(),
        8,
        "the first row, tried on each of 8 passes: no backoff in between"
    );
    let stats = outbox.stats().await.unwrap();
    assert_eq!((stats.pending, stats.failed), (2, 0));
    relay.run_once().await.unwrap();
    assert_eq!(recorder.payloads("orders"), ["k:0", "k:1"]);
}

/// A pass stops publishing at the first publish that finds the broker
/// away: the rest of its rows are not tried, and all go out on the next
/// pass once the broker is back.
pub async fn a_pass_stops_at_an_unreachable_broker<D: Db>() {
    let outbox = D::outbox().await;
    let away = Arc::new(Mutex::new(true));
    let a = away.clone();
    let recorder = Recorder::with_rule(move |_, _| {
        if *a.lock().unwrap() {
            Act::Refuse(Error::Connection("broker away".into()))
        } else {
            Act::Accept
        }
    });
    let messages: Vec<_> = (0..5).map(|i| Message::new(format!("{i}"))).collect();
    D::enqueue(
        &outbox,
        messages.iter().map(|m| ("orders", m.clone())).collect(),
        true,
    )
    .await
    .unwrap();
    let relay = outbox.relay(recorder.clone()).concurrency(1);
    let pass = relay.run_once().await.unwrap();
    assert_eq!(
        (pass.claimed, pass.retrying, pass.broker_unreachable),
        (5, 1, true),
        "{pass:?}"
    );
    let tries: u32 = messages.iter().map(|m| recorder.tries(m.id())).sum();
    assert_eq!(tries, 1, "publishes after the broker was found away");

    *away.lock().unwrap() = false;
    let pass = relay.run_once().await.unwrap();
    assert_eq!((pass.published, pass.broker_unreachable), (5, false));
}

/// A running relay finds the broker back within its poll interval, however
/// long the backoff: the outage grew none.
pub async fn a_running_relay_publishes_as_soon_as_the_broker_is_back<D: Db>() {
    let outbox = D::outbox().await;
    let away = Arc::new(Mutex::new(true));
    let a = away.clone();
    let recorder = Recorder::with_rule(move |_, _| {
        if *a.lock().unwrap() {
            Act::Refuse(Error::timeout(Duration::from_millis(1)))
        } else {
            Act::Accept
        }
    });
    D::enqueue(&outbox, vec![("orders", keyed("k", 0))], true)
        .await
        .unwrap();
    let running = outbox
        .relay(recorder.clone())
        .backoff(Duration::from_secs(3600), Duration::from_secs(3600))
        .poll_interval(Duration::from_millis(20))
        .start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    *away.lock().unwrap() = false;
    recorder.wait_for(1, Duration::from_secs(5)).await;
    running.shutdown().await;
    assert_eq!(recorder.payloads("orders"), ["k:0"]);
}

/// A running relay whose broker is away, with no backoff, does not spin:
/// a pass that found the broker away is not followed at once, and
/// enqueues meanwhile (which wake a relay) do not start passes either.
pub async fn a_relay_does_not_spin_while_the_broker_is_away<D: Db>() {
    let outbox = D::outbox().await;
    let recorder = Recorder::with_rule(|_, _| Act::Refuse(Error::Connection("broker away".into())));
    let away = Message::new("away");
    D::enqueue(&outbox, vec![("orders", away.clone())], true)
        .await
        .unwrap();
    let running = outbox
        .relay(recorder.clone())
        .batch_size(1)
        .backoff(Duration::ZERO, Duration::ZERO)
        .poll_interval(Duration::from_secs(60))
        .start();
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        D::enqueue(
            &outbox,
            vec![("orders", Message::new(format!("{i}")))],
            true,
        )
        .await
        .unwrap();
    }
    running.shutdown().await;
    // Each pass claims the oldest row, the first, and tries it.
    let tries = recorder.tries(away.id());
    assert!((1..5).contains(&tries), "tried {tries} times in 300 ms");
}

/// With a retention, sent rows stay for it, then the cleanup deletes them.
pub async fn sent_rows_are_kept_for_the_retention_then_deleted<D: Db>() {
    let outbox = D::outbox().await;
    let recorder = Recorder::accepting();
    D::enqueue(&outbox, vec![("orders", Message::new("a"))], true)
        .await
        .unwrap();
    let relay = outbox
        .relay(recorder.clone())
        .retention(Duration::from_millis(300))
        .start();
    recorder.wait_for(1, Duration::from_secs(10)).await;
    let stats = outbox.stats().await.unwrap();
    assert_eq!((stats.pending, stats.sent), (0, 1), "kept after sending");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while D::rows(&outbox).await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "never cleaned up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.shutdown().await;
}

/// `concurrency` bounds the publishes of all of a relay's workers
/// together, and a relay uses all of it.
pub async fn publishes_in_flight_are_bounded_across_workers<D: Db>() {
    let outbox = D::outbox().await;
    let recorder = Recorder::with_rule(|_, _| Act::AcceptAfter(Duration::from_millis(20)));
    let messages = (0..200).map(|i| ("orders", Message::new(format!("{i}"))));
    D::enqueue(&outbox, messages.collect(), true).await.unwrap();
    let relay = outbox
        .relay(recorder.clone())
        .workers(3)
        .batch_size(50)
        .concurrency(8)
        .start();
    recorder.wait_for(200, Duration::from_secs(30)).await;
    relay.shutdown().await;
    assert_eq!(recorder.most_in_flight(), 8);
}

/// A relay that polls once a minute still publishes at once: an enqueue
/// wakes it.
pub async fn an_enqueue_wakes_the_relay<D: Db>(
    outbox: Outbox<D::DB>,
    enqueue_through: Outbox<D::DB>,
) {
    let recorder = Recorder::accepting();
    let relay = outbox
        .relay(recorder.clone())
        .poll_interval(Duration::from_secs(60))
        .start();
    // Let the relay make its first pass and go to sleep.
    tokio::time::sleep(Duration::from_millis(200)).await;
    D::enqueue(
        &enqueue_through,
        vec![("orders", Message::new("now"))],
        true,
    )
    .await
    .unwrap();
    recorder.wait_for(1, Duration::from_secs(5)).await;
    relay.shutdown().await;
}

/// A relay that dies holding a batch (its publish never returns) leaves
/// the rows to the next relay: published, in order, with the same ids.
pub async fn a_dead_relays_rows_go_to_the_next<D: Db>() {
    let outbox = D::outbox().await;
    let lease = Duration::from_millis(300);
    let hanging = Recorder::with_rule(|_, _| Act::Hang);
    D::enqueue(
        &outbox,
        (0..5).map(|n| ("orders", keyed("k", n))).collect(),
        true,
    )
    .await
    .unwrap();
    let dying: Relay<Recorder> = outbox.relay(hanging.clone()).lease(lease);
    let pass = tokio::spawn(async move { dying.run_once().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        hanging.tries(hanging_first_id(&hanging)),
        1,
        "it holds the batch"
    );
    pass.abort();
    let _ = pass.await;

    let recorder = Recorder::accepting();
    let next = D::other(&outbox).await.relay(recorder.clone()).lease(lease);
    if D::LEASED {
        assert_eq!(
            next.run_once().await.unwrap().claimed,
            0,
            "the lease still holds the rows"
        );
        tokio::time::sleep(lease + Duration::from_millis(50)).await;
    }
    let report = next.run_once().await.unwrap();
    assert_eq!(report.published, 5, "{report:?}");
    assert_eq!(
        recorder.payloads("orders"),
        ["k:0", "k:1", "k:2", "k:3", "k:4"]
    );
}

fn hanging_first_id(recorder: &Recorder) -> msg_core::Uuid {
    *recorder
        .tries
        .lock()
        .unwrap()
        .keys()
        .next()
        .expect("a publish was tried")
}

/// A relay whose broker never answers still shuts down, after its
/// shutdown timeout, and its rows go to the next relay.
pub async fn shutdown_gives_up_on_a_broker_that_never_answers<D: Db>() {
    let outbox = D::outbox().await;
    let lease = Duration::from_millis(300);
    D::enqueue(&outbox, vec![("orders", Message::new("stuck"))], true)
        .await
        .unwrap();
    let hanging = Recorder::with_rule(|_, _| Act::Hang);
    let running = outbox
        .relay(hanging.clone())
        .lease(lease)
        .shutdown_timeout(Duration::from_millis(200))
        .start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while hanging.tries.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "nothing was tried");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::timeout(Duration::from_secs(5), running.shutdown())
        .await
        .expect("shutdown returned after its timeout");
    let recorder = Recorder::accepting();
    let next = D::other(&outbox).await.relay(recorder.clone()).lease(lease);
    if D::LEASED {
        tokio::time::sleep(lease + Duration::from_millis(50)).await;
    }
    next.run_once().await.unwrap();
    assert_eq!(recorder.payloads("orders"), ["stuck"]);
}
