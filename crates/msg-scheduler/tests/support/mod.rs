//! What every store's tests share: a recording publisher and the cases
//! every store must pass. Each store's test file makes a fresh, empty
//! scheduler per case and runs `store_cases!`.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use msg_core::{
    Capabilities, Error, Message, PublishOptions, Publisher, Receipt, Result, Uuid, headers,
};
use msg_scheduler::store::{Claim, Next, Store};
use msg_scheduler::{Clock, Filter, IfExists, ScheduleOptions, Scheduled, Scheduler, When};

/// One accepted publish.
#[derive(Debug, Clone)]
pub struct Fired {
    pub topic: String,
    pub message: Message,
    pub options: PublishOptions,
    /// When the publisher accepted it.
    pub at: SystemTime,
}

/// Records what it accepted; refuses every publish while `refusing`.
#[derive(Clone, Default)]
pub struct Recorder {
    fired: Arc<Mutex<Vec<Fired>>>,
    refusing: Arc<Mutex<bool>>,
    deliver_at: bool,
    clock: Clock,
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A recorder that says it delays messages itself.
    pub fn with_native_deliver_at() -> Self {
        Self {
            deliver_at: true,
            ..Self::default()
        }
    }

    /// A recorder that reads the time of a fire from `clock`.
    pub fn with_clock(clock: Clock) -> Self {
        Self {
            clock,
            ..Self::default()
        }
    }

    pub fn fired(&self) -> Vec<Fired> {
        self.fired.lock().unwrap().clone()
    }

    pub fn refuse(&self, refusing: bool) {
        *self.refusing.lock().unwrap() = refusing;
    }

    /// Waits until `n` fires were recorded, at most `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Fired> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let fired = self.fired();
            if fired.len() >= n || tokio::time::Instant::now() > deadline {
                return fired;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
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
        if *self.refusing.lock().unwrap() {
            return Err(Error::broker_retryable("the broker is away"));
        }
        self.fired.lock().unwrap().push(Fired {
            topic: topic.to_owned(),
            message,
            options,
            at: self.clock.now(),
        });
        Ok(Receipt::accepted())
    }
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
    async fn close(&self) -> Result<()> {
        Ok(())
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::minimal("recorder")
            .with_native_deliver_at(self.deliver_at)
            .with_native_ttl(true)
            .with_native_reply_to(true)
    }
}

/// Milliseconds since the Unix epoch.
pub fn ms(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn topic() -> String {
    format!("t-{}", Uuid::new_v4().simple())
}

/// A one-shot schedule fires once, not before its time, with its message
/// (id, key, headers, payload) and publish options as scheduled.
pub async fn one_shot_fires_once_not_early(s: Scheduler) {
    let recorder = Recorder::new();
    let runner = s.runner(recorder.clone()).start();
    let topic = topic();
    let message = Message::new(&b"\x00bin\xff"[..])
        .with_key("k1")
        .with_header("b", "2")
        .with_header("a", "1");
    let due = SystemTime::now() + Duration::from_millis(300);
    let options = ScheduleOptions::new()
        .ttl(Duration::from_secs(60))
        .reply_to("replies");
    let id = s
        .schedule_with(&topic, message.clone(), When::at(due), options)
        .await
        .unwrap();
    let listed = s.get(id).await.unwrap().expect("stored");
    assert_eq!(listed.message, message);
    assert_eq!(listed.topic, topic);
    let fired = recorder.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(fired.len(), 1, "fired once");
    assert!(fired[0].at >= due, "never early");
    assert_eq!(
        fired[0].message, message,
        "the message as scheduled, its id kept"
    );
    assert_eq!(
        fired[0].options,
        PublishOptions::new()
            .ttl(Duration::from_secs(60))
            .reply_to("replies")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recorder.fired().len(), 1, "and only once");
    assert!(
        s.get(id).await.unwrap().is_none(),
        "a fired one-shot is gone"
    );
    assert!(!s.cancel(id).await.unwrap(), "nothing left to cancel");
    runner.shutdown().await;
}

/// A due time in the past fires at once.
pub async fn a_past_time_fires_at_once(s: Scheduler) {
    let recorder = Recorder::new();
    let runner = s.runner(recorder.clone()).start();
    let past = SystemTime::now() - Duration::from_secs(3600);
    s.schedule(&topic(), Message::new("late"), When::at(past))
        .await
        .unwrap();
    let fired = recorder.wait_for(1, Duration::from_secs(2)).await;
    assert_eq!(fired.len(), 1);
    runner.shutdown().await;
}

/// Cancel before due: never fires; an unknown id is `false`.
pub async fn cancel_before_due_never_fires(s: Scheduler) {
    let recorder = Recorder::new();
    let runner = s.runner(recorder.clone()).start();
    let id = s
        .schedule(
            &topic(),
            Message::new("x"),
            When::after(Duration::from_millis(200)),
        )
        .await
        .unwrap();
    assert!(s.cancel(id).await.unwrap());
    assert!(
        !s.cancel(id).await.unwrap(),
        "a second cancel finds nothing"
    );
    assert!(
        !s.cancel(Uuid::new_v4().into()).await.unwrap(),
        "unknown id"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        recorder.fired().is_empty(),
        "a cancelled schedule never fires"
    );
    runner.shutdown().await;
}

/// Cancel racing a fire: a schedule a runner holds is `false` (its fire
/// may be delivered), and is gone: the runner's finish does not bring it
/// back, and nothing fires after.
pub async fn cancel_racing_a_fire_is_false_and_final(s: Scheduler, store: &dyn Store) {
    let id = s
        .schedule(
            &topic(),
            Message::new("x"),
            When::every(Duration::from_millis(50)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let now = ms(SystemTime::now());
    let token = Uuid::new_v4();
    let claimed = store
        .claim(Claim {
            now,
            lease_until: now + 60_000,
            token,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(s.get(id).await.unwrap().unwrap().firing, "held by a runner");
    assert!(!s.cancel(id).await.unwrap(), "too late for this fire");
    store
        .finish(
            token,
            vec![(
                id,
                Next::Due {
                    at: now + 50,
                    fires: 1,
                },
            )],
        )
        .await
        .unwrap();
    assert!(
        s.get(id).await.unwrap().is_none(),
        "the finish does not revive it"
    );
    let recorder = Recorder::new();
    let runner = s.runner(recorder.clone()).start();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(recorder.fired().is_empty());
    runner.shutdown().await;
}

/// A runner that dies holding claims leaves them to another after the
/// lease; the fire keeps its id.
pub async fn a_dead_runners_claims_fire_after_the_lease(s: Scheduler, store: &dyn Store) {
    let message = Message::new("held");
    s.schedule(&topic(), message.clone(), When::after(Duration::ZERO))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let now = ms(SystemTime::now());
    let lease_end = now + 400;
    let claimed = store
        .claim(Claim {
            now,
            lease_until: lease_end,
            token: Uuid::new_v4(),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "the dead runner's claim");
    let recorder = Recorder::new();
    let runner = s.runner(recorder.clone());
    assert_eq!(runner.run_once().await.unwrap(), 0, "held under the lease");
    let runner = runner.start();
    let fired = recorder.wait_for(1, Duration::from_secs(3)).await;
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].message.id(), message.id());
    assert!(ms(fired[0].at) >= lease_end, "not before the lease ended");
    runner.shutdown().await;
}

/// A key makes scheduling idempotent: `Keep` keeps the first, `Replace`
/// replaces it and keeps its id.
pub async fn a_key_keeps_or_replaces(s: Scheduler) {
    let topic = topic();
    let later = When::after(Duration::from_secs(3600));
    let keyed = |if_exists| ScheduleOptions::new().key("invoice-7").if_exists(if_exists);
    let first = s
        .schedule_with(
            &topic,
            Message::new("first"),
            later.clone(),
            keyed(IfExists::Keep),
        )
        .await
        .unwrap();
    let kept = s
        .schedule_with(
            &topic,
            Message::new("second"),
            later.clone(),
            keyed(IfExists::Keep),
        )
        .await
        .unwrap();
    assert_eq!(kept, first);
    let stored = s.get(first).await.unwrap().unwrap();
    assert_eq!(&stored.message.payload()[..], b"first");
    let replaced = s
        .schedule_with(
            &topic,
            Message::new("third"),
            later,
            keyed(IfExists::Replace),
        )
        .await
        .unwrap();
    assert_eq!(replaced, first, "the key keeps its id");
    let stored = s.get(first).await.unwrap().unwrap();
    assert_eq!(&stored.message.payload()[..], b"third");
    assert_eq!(stored.key.as_deref(), Some("invoice-7"));
    let page = s.list(Filter::new().topic(&topic)).await.unwrap();
    assert_eq!(page.schedules.len(), 1, "one schedule per key");
}

/// `list` pages through everything in due order and filters by topic, due
/// time and kind.
pub async fn list_pages_and_filters(s: Scheduler) {
    let (a, b) = (topic(), topic());
    let base = SystemTime::now() + Duration::from_secs(3600);
    for n in 0..25u64 {
        let topic = if n % 5 == 0 { &b } else { &a };
        s.schedule(
            topic,
            Message::new(n.to_string()),
            When::at(base + Duration::from_secs(n)),
        )
        .await
        .unwrap();
    }
    s.schedule(
        &a,
        Message::new("r"),
        When::every(Duration::from_secs(7200)),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    let mut filter = Filter::new().topic(&a).recurring(false).limit(7);
    let mut pages = 0;
    loop {
        let page = s.list(filter.clone()).await.unwrap();
        pages += 1;
        assert!(page.schedules.len() <= 7);
        seen.extend(page.schedules.iter().map(|s| s.message.payload().clone()));
        match page.next {
            Some(cursor) => filter = filter.after(cursor.to_string().parse().unwrap()),
            None => break,
        }
    }
    let expected: Vec<_> = (0..25u64)
        .filter(|n| n % 5 != 0)
        .map(|n| msg_core::Bytes::from(n.to_string()))
        .collect();
    assert_eq!(seen, expected, "all of topic a's one-shots, in due order");
    assert_eq!(pages, 3);
    let window = Filter::new()
        .due_after(base + Duration::from_secs(10))
        .due_before(base + Duration::from_secs(15));
    let page = s.list(window).await.unwrap();
    let payloads: Vec<_> = page
        .schedules
        .iter()
        .map(|s| s.message.payload().clone())
        .collect();
    assert_eq!(
        payloads,
        ["10", "11", "12", "13", "14"].map(msg_core::Bytes::from)
    );
    let recurring = s.list(Filter::new().recurring(true)).await.unwrap();
    assert_eq!(recurring.schedules.len(), 1);
    assert!(recurring.schedules[0].recurrence.is_some());
}

/// Reschedule moves a schedule; pause holds a recurring one; resume lets
/// it go on.
pub async fn reschedule_pause_resume(s: Scheduler) {
    let recorder = Recorder::new();
    let runner = s.runner(recorder.clone()).start();
    let topic = topic();
    let id = s
        .schedule(
            &topic,
            Message::new("moved"),
            When::after(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    assert!(
        s.reschedule(id, When::after(Duration::from_millis(50)))
            .await
            .unwrap()
    );
    assert_eq!(
        recorder.wait_for(1, Duration::from_secs(3)).await.len(),
        1,
        "rescheduled sooner"
    );
    // The runner records the fire just after the broker accepted it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while s.get(id).await.unwrap().is_some() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        !s.reschedule(id, When::after(Duration::ZERO)).await.unwrap(),
        "fired: gone"
    );

    let every = s
        .schedule(
            &topic,
            Message::new("tick"),
            When::every(Duration::from_millis(100)),
        )
        .await
        .unwrap();
    assert!(s.pause(every).await.unwrap());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(recorder.fired().len(), 1, "paused: no tick");
    assert!(s.get(every).await.unwrap().unwrap().paused);
    assert!(s.resume(every).await.unwrap());
    let fired = recorder.wait_for(3, Duration::from_secs(3)).await;
    assert!(fired.len() >= 3, "resumed: ticks again");
    assert!(s.cancel(every).await.unwrap() || s.get(every).await.unwrap().is_none());
    runner.shutdown().await;
}

/// A recurring schedule fires again and again, each fire with its own id,
/// derived from its due time (the same on every runner).
pub async fn recurring_fires_have_distinct_stable_ids(s: Scheduler) {
    let recorder = Recorder::new();
    let runner = s.runner(recorder.clone()).start();
    let message = Message::new("tick");
    let id = s
        .schedule(
            &topic(),
            message.clone(),
            When::every(Duration::from_millis(100)),
        )
        .await
        .unwrap();
    recorder.wait_for(3, Duration::from_secs(5)).await;
    runner.shutdown().await;
    // Read after the shutdown: a fire may land between the wait and it.
    let fired = recorder.fired();
    assert!(fired.len() >= 3);
    let ids: std::collections::HashSet<_> = fired.iter().map(|f| f.message.id()).collect();
    assert_eq!(ids.len(), fired.len(), "one id per fire");
    assert!(!ids.contains(&message.id()));
    let schedule = s.get(id).await.unwrap().unwrap();
    assert_eq!(schedule.fires as usize, fired.len());
    assert_eq!(
        schedule.message.id(),
        message.id(),
        "the schedule keeps its message"
    );
}

/// A fire the broker refuses is not lost: it is tried again after the
/// retry delay, with the same id.
pub async fn a_refused_fire_is_retried(s: Scheduler) {
    let recorder = Recorder::new();
    recorder.refuse(true);
    let runner = s
        .runner(recorder.clone())
        .retry_delay(Duration::from_millis(100))
        .start();
    let message = Message::new("again");
    let id = s
        .schedule(&topic(), message.clone(), When::after(Duration::ZERO))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(s.get(id).await.unwrap().is_some(), "kept while refused");
    recorder.refuse(false);
    let fired = recorder.wait_for(1, Duration::from_secs(3)).await;
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].message.id(), message.id());
    runner.shutdown().await;
}

/// Bad input is an error at `schedule`, and nothing is stored.
pub async fn bad_input_is_refused_and_stores_nothing(s: Scheduler) {
    let later = When::after(Duration::from_secs(60));
    assert!(matches!(
        s.schedule("", Message::new("x"), later.clone()).await,
        Err(Error::InvalidTopic { .. })
    ));
    let bad_header = Message::new("x").with_header("bad name", "v");
    assert!(matches!(
        s.schedule("t", bad_header, later.clone()).await,
        Err(Error::InvalidHeader { .. })
    ));
    assert!(When::cron("61 * * * *").is_err());
    let zero = When::every(Duration::ZERO);
    assert!(s.schedule("t", Message::new("x"), zero).await.is_err());
    let empty_key = ScheduleOptions::new().key("");
    assert!(
        s.schedule_with("t", Message::new("x"), later, empty_key)
            .await
            .is_err()
    );
    assert!(s.list(Filter::new()).await.unwrap().schedules.is_empty());
}

/// 10,000 schedules due over 5 s, two runners: every fire at or after its
/// due time, each once.
pub async fn never_early_each_once_with_two_runners(a: Scheduler, b: Scheduler, n: usize) {
    let recorder = Recorder::new();
    let first = a.runner(recorder.clone()).start();
    let second = b.runner(recorder.clone()).start();
    let topic = topic();
    let start = SystemTime::now() + Duration::from_millis(500);
    let mut due = HashMap::new();
    for i in 0..n {
        let at = start + Duration::from_micros((i as u64 * 5_000_000) / n as u64);
        let message = Message::new(i.to_string());
        due.insert(message.id(), at);
        let scheduler = if i % 2 == 0 { &a } else { &b };
        scheduler
            .schedule(&topic, message, When::at(at))
            .await
            .unwrap();
    }
    let fired = recorder.wait_for(n, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fired = recorder.fired().len().max(fired.len());
    let all = recorder.fired();
    first.shutdown().await;
    second.shutdown().await;
    let mut seen = HashMap::new();
    let mut early = 0;
    for f in &all {
        *seen.entry(f.message.id()).or_insert(0) += 1;
        if f.at < due[&f.message.id()] {
            early += 1;
        }
    }
    assert_eq!(early, 0, "no fire before its due time");
    assert_eq!(seen.len(), n, "every schedule fired");
    assert_eq!(fired, n, "each once: {} duplicates", fired - seen.len());
}

/// `deliver_at` through the decorator: a transport that delays natively
/// gets the publish as is; one that does not gets it from the runner when
/// it is due, with `msg-deliver-at` set and its id kept.
pub async fn the_decorator_delays_where_the_transport_cannot(s: Scheduler) {
    let native = Recorder::with_native_deliver_at();
    let at = SystemTime::now() + Duration::from_millis(300);
    Scheduled::new(native.clone(), s.clone())
        .publish_with("t", Message::new("n"), PublishOptions::new().deliver_at(at))
        .await
        .unwrap();
    assert_eq!(native.fired().len(), 1, "passed through at once");
    assert_eq!(native.fired()[0].options.deliver_at, Some(at));

    let plain = Recorder::new();
    let runner = s.runner(plain.clone()).start();
    let publisher = Scheduled::new(plain.clone(), s.clone());
    assert!(publisher.capabilities().native_deliver_at);
    let message = Message::new("later");
    publisher
        .publish_with("t", message.clone(), PublishOptions::new().deliver_at(at))
        .await
        .unwrap();
    // The same message again (a retried publish) is not scheduled twice.
    publisher
        .publish_with("t", message.clone(), PublishOptions::new().deliver_at(at))
        .await
        .unwrap();
    assert!(plain.fired().is_empty(), "not yet");
    let fired = plain.wait_for(1, Duration::from_secs(3)).await;
    assert_eq!(fired.len(), 1);
    assert!(fired[0].at >= at, "not before its time");
    assert_eq!(fired[0].message.id(), message.id());
    assert_eq!(
        fired[0].message.header(headers::DELIVER_AT),
        Some(msg_core::raw::time::rfc3339(at).as_str())
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(plain.fired().len(), 1, "once");
    publisher
        .publish_with(
            "t",
            Message::new("now"),
            PublishOptions::new().deliver_at(SystemTime::now()),
        )
        .await
        .unwrap();
    assert_eq!(
        plain.fired().len(),
        2,
        "a time that has passed publishes at once"
    );
    runner.shutdown().await;
}

/// Generates one `#[tokio::test]` per case, over `$make` (an async fn
/// making a fresh, empty, migrated scheduler and its store).
#[macro_export]
macro_rules! store_cases {
    ($make:ident) => {
        store_cases!(@one $make, one_shot_fires_once_not_early);
        store_cases!(@one $make, a_past_time_fires_at_once);
        store_cases!(@one $make, cancel_before_due_never_fires);
        store_cases!(@one $make, a_key_keeps_or_replaces);
        store_cases!(@one $make, list_pages_and_filters);
        store_cases!(@one $make, reschedule_pause_resume);
        store_cases!(@one $make, recurring_fires_have_distinct_stable_ids);
        store_cases!(@one $make, a_refused_fire_is_retried);
        store_cases!(@one $make, bad_input_is_refused_and_stores_nothing);
        store_cases!(@one $make, the_decorator_delays_where_the_transport_cannot);
        store_cases!(@raw $make, cancel_racing_a_fire_is_false_and_final);
        store_cases!(@raw $make, a_dead_runners_claims_fire_after_the_lease);
    };
    (@one $make:ident, $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let (scheduler, _store) = $make().await;
            support::$case(scheduler).await;
        }
    };
    (@raw $make:ident, $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let (scheduler, store) = $make().await;
            support::$case(scheduler, &*store).await;
        }
    };
}
