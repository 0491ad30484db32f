//! The in-memory store, and recurring schedules under tokio's paused
//! clock: cron and interval fires, and catch-up after a downtime, made
//! deterministic.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use msg_core::Message;
use msg_scheduler::store::Store;
use msg_scheduler::store::memory::MemoryStore;
use msg_scheduler::{CatchUp, Clock, Scheduler, When};
use support::{Recorder, ms};

async fn memory() -> (Scheduler, Arc<dyn Store>) {
    let store = MemoryStore::new();
    (Scheduler::new(store.clone()), Arc::new(store))
}

store_cases!(memory);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_early_each_once_with_two_runners() {
    let store = MemoryStore::new();
    support::never_early_each_once_with_two_runners(
        Scheduler::new(store.clone()),
        Scheduler::new(store),
        10_000,
    )
    .await;
}

/// A scheduler over memory on tokio's paused clock, a recorder reading
/// the same clock, and the clock's start in milliseconds.
fn paused() -> (Scheduler, Recorder, i64) {
    let clock = Clock::tokio();
    (
        Scheduler::memory().with_clock(clock),
        Recorder::with_clock(clock),
        ms(clock.now()),
    )
}

/// The fires' times, in milliseconds after `start`.
fn offsets(recorder: &Recorder, start: i64) -> Vec<i64> {
    recorder.fired().iter().map(|f| ms(f.at) - start).collect()
}

#[tokio::test(start_paused = true)]
async fn an_interval_fires_on_time_under_a_paused_clock() {
    let (s, recorder, start) = paused();
    let runner = s.runner(recorder.clone()).start();
    s.schedule(
        "tick",
        Message::new("t"),
        When::every(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(5 * 60 + 30)).await;
    runner.shutdown().await;
    assert_eq!(
        offsets(&recorder, start),
        [60_000, 120_000, 180_000, 240_000, 300_000],
        "every minute, on the minute, never early"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cron_schedule_fires_on_its_times_under_a_paused_clock() {
    let (s, recorder, start) = paused();
    let runner = s.runner(recorder.clone()).start();
    s.schedule(
        "cron",
        Message::new("c"),
        When::cron("0 */5 * * * *").unwrap(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(20 * 60)).await;
    runner.shutdown().await;
    let fired = recorder.fired();
    assert_eq!(fired.len(), 4, "every five minutes for twenty minutes");
    for f in &fired {
        assert_eq!(
            ms(f.at) % 300_000,
            0,
            "on a five-minute mark: {}",
            ms(f.at) - start
        );
    }
}

/// Every minute, no runner for ten and a half minutes, then one runner
/// pass: which missed fires (minutes 1 to 10) it made, by their ids.
async fn after_downtime(policy: CatchUp, grace: Duration) -> Vec<i64> {
    let (s, recorder, start) = paused();
    let every = When::every(Duration::from_secs(60))
        .catch_up(policy)
        .grace(grace);
    let id = s.schedule("t", Message::new("t"), every).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10 * 60 + 30)).await;
    let schedule = s.get(id).await.unwrap().unwrap();
    s.runner(recorder.clone()).run_once().await.unwrap();
    let next = s.get(id).await.unwrap().unwrap().due;
    assert_eq!(
        ms(next) - start,
        11 * 60_000,
        "then on with the next minute"
    );
    recorder
        .fired()
        .iter()
        .map(|f| {
            (1..=10)
                .find(|m| {
                    let due =
                        SystemTime::UNIX_EPOCH + Duration::from_millis((start + m * 60_000) as u64);
                    f.message.id() == schedule.fire_id(due)
                })
                .expect("each fire stands for one missed minute")
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn catch_up_policies_after_a_downtime() {
    let grace = Duration::from_secs(60);
    assert_eq!(
        after_downtime(CatchUp::FireOnce, grace).await,
        [10],
        "once, as the latest"
    );
    assert_eq!(
        after_downtime(CatchUp::FireAll { max: 3 }, grace).await,
        [8, 9, 10],
        "the latest three, oldest first"
    );
    assert_eq!(
        after_downtime(CatchUp::FireAll { max: 100 }, grace).await,
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        after_downtime(CatchUp::Skip, Duration::from_secs(10)).await,
        Vec::<i64>::new(),
        "the latest is 30 s late, beyond the grace: skipped"
    );
    assert_eq!(
        after_downtime(CatchUp::Skip, grace).await,
        [10],
        "within the grace: the latest is on time enough"
    );
}

#[tokio::test(start_paused = true)]
async fn a_recurring_schedule_ends_at_its_end() {
    let (s, recorder, _) = paused();
    let runner = s.runner(recorder.clone()).start();
    let until = s.clock().now() + Duration::from_secs(150);
    let id = s
        .schedule(
            "t",
            Message::new("t"),
            When::every(Duration::from_secs(60)).until(until),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    runner.shutdown().await;
    assert_eq!(
        recorder.fired().len(),
        2,
        "at 1 and 2 minutes, not after its end"
    );
    assert!(s.get(id).await.unwrap().is_none(), "over, and gone");
}

/// A runner under a paused clock set to the night Europe/Berlin moves to
/// summer time: a daily 02:30 fires at 03:00 CEST that night (02:30 does
/// not exist) and at 02:30 CEST the next.
#[tokio::test(start_paused = true)]
async fn a_runner_fires_a_zoned_cron_across_the_spring_change() {
    // 2026-03-28T12:00:00Z.
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_774_699_200);
    let clock = Clock::Tokio {
        base,
        since: tokio::time::Instant::now(),
    };
    let s = Scheduler::memory().with_clock(clock);
    let recorder = Recorder::with_clock(clock);
    let runner = s.runner(recorder.clone()).start();
    let nightly = When::cron("0 30 2 * * *")
        .unwrap()
        .in_zone("Europe/Berlin")
        .unwrap();
    s.schedule("t", Message::new("nightly"), nightly)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2 * 24 * 3600)).await;
    runner.shutdown().await;
    let fired: Vec<i64> = recorder.fired().iter().map(|f| ms(f.at) / 1000).collect();
    assert_eq!(
        fired,
        [
            1_774_746_000, // 2026-03-29T01:00:00Z: 03:00 CEST, after the gap
            1_774_830_600, // 2026-03-30T00:30:00Z: 02:30 CEST
        ]
    );
}
