//! The scheduler's runners, per store: how many fires a second two runners
//! make from a store full of due schedules, and how late fires are at a
//! steady 1,000 a second. Fires go to the in-process broker, so that the
//! store and the runner are what is measured.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use futures::StreamExt;
use msg::scheduler::store::redis::RedisStore;
use msg::scheduler::{Scheduler, When};
use msg::{Connection, Message, Publisher, Uuid};

use crate::measure::{Sizes, percentile, spread};
use crate::side::payload;

/// One store's figures.
#[derive(Debug, Clone)]
pub(crate) struct SchedulerRow {
    store: &'static str,
    schedules: usize,
    rate: u32,
    /// Per round.
    fires_per_sec: Vec<f64>,
    lateness_p50_ms: Vec<f64>,
    lateness_p99_ms: Vec<f64>,
}

/// Where schedules live.
#[derive(Debug, Clone, Copy)]
enum Store {
    Sqlite,
    Postgres,
    Redis,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Sqlite => "SQLite",
            Store::Postgres => "PostgreSQL",
            Store::Redis => "Redis",
        }
    }

    /// A fresh, empty scheduler over this store.
    async fn scheduler(self) -> Result<Scheduler> {
        let scheduler = match self {
            Store::Sqlite => {
                use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
                let dir = std::env::temp_dir().join("msg-bench-scheduler");
                std::fs::create_dir_all(&dir)?;
                let options = SqliteConnectOptions::new()
                    .filename(dir.join(format!("{}.db", Uuid::new_v4().simple())))
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(options)
                    .await?;
                Scheduler::sqlite(pool)
            }
            Store::Postgres => {
                use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
                let url = msg_testkit::BrokerEnv::get("postgres").url().to_owned();
                let schema = format!("bench_{}", Uuid::new_v4().simple());
                let admin = sqlx::PgPool::connect(&url).await?;
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&admin)
                    .await?;
                let options =
                    PgConnectOptions::from_str(&url)?.options([("search_path", schema.as_str())]);
                let pool = PgPoolOptions::new()
                    .max_connections(8)
                    .connect_with(options)
                    .await?;
                Scheduler::postgres(pool)
            }
            Store::Redis => {
                let url = msg_testkit::BrokerEnv::get("redis").url().to_owned();
                let prefix = format!("bench:{}", Uuid::new_v4().simple());
                Scheduler::new(RedisStore::connect_url(&url)?.with_prefix(&prefix))
            }
        };
        scheduler.migrate().await?;
        Ok(scheduler)
    }
}

/// Records when each fire was accepted.
#[derive(Clone)]
struct Timing {
    inner: Connection,
    fired: Arc<Mutex<Vec<(Uuid, SystemTime)>>>,
}

impl Publisher for Timing {
    async fn publish_with(
        &self,
        topic: &str,
        message: Message,
        options: msg::PublishOptions,
    ) -> msg::Result<msg::Receipt> {
        let id = message.id();
        let receipt = self.inner.publish_with(topic, message, options).await?;
        self.fired.lock().unwrap().push((id, SystemTime::now()));
        Ok(receipt)
    }
    async fn flush(&self) -> msg::Result<()> {
        self.inner.flush().await
    }
    async fn close(&self) -> msg::Result<()> {
        self.inner.close().await
    }
    fn capabilities(&self) -> msg::Capabilities {
        self.inner.capabilities()
    }
}

/// Schedules `due.len()` messages, 64 at a time (not timed); their ids.
async fn fill(scheduler: &Scheduler, due: &[SystemTime]) -> Result<Vec<Uuid>> {
    let made: Vec<msg::Result<Uuid>> = futures::stream::iter(due.iter().copied())
        .map(|at| async move {
            let message = Message::new(payload());
            let id = message.id();
            scheduler
                .schedule("bench.scheduled", message, When::at(at))
                .await
                .map(|_| id)
        })
        .buffer_unordered(64)
        .collect()
        .await;
    made.into_iter().map(|r| r.map_err(Into::into)).collect()
}

/// Two runners over `scheduler` until `n` fires were accepted; how long.
async fn run_until(scheduler: &Scheduler, timing: &Timing, n: usize) -> Result<Duration> {
    let started = Instant::now();
    let runners = [
        scheduler.runner(timing.clone()).start(),
        scheduler.runner(timing.clone()).start(),
    ];
    let deadline = started + Duration::from_secs(600);
    while timing.fired.lock().unwrap().len() < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the runners did not finish in 10 min"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    for runner in runners {
        runner.shutdown().await;
    }
    Ok(elapsed)
}

fn timing(conn: &Connection) -> Timing {
    Timing {
        inner: conn.clone(),
        fired: Arc::default(),
    }
}

/// Fires a second: `n` schedules all due, two runners drain them.
async fn fires_per_sec(store: Store, conn: &Connection, n: usize) -> Result<f64> {
    let scheduler = store.scheduler().await?;
    let now = SystemTime::now();
    fill(&scheduler, &vec![now; n]).await?;
    let timing = timing(conn);
    let elapsed = run_until(&scheduler, &timing, n).await?;
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// Lateness at `rate` fires a second for `duration`: each fire's
/// acceptance time less its due time, in microseconds, sorted.
async fn lateness(
    store: Store,
    conn: &Connection,
    rate: u32,
    duration: Duration,
) -> Result<Vec<u64>> {
    let scheduler = store.scheduler().await?;
    let n = (f64::from(rate) * duration.as_secs_f64()) as usize;
    // Time to fill before the first is due.
    let start = SystemTime::now() + Duration::from_secs(2) + Duration::from_millis(n as u64 / 20);
    let due: Vec<SystemTime> = (0..n)
        .map(|i| start + Duration::from_secs_f64(i as f64 / f64::from(rate)))
        .collect();
    let ids = fill(&scheduler, &due).await?;
    let due_of: HashMap<Uuid, SystemTime> = ids.into_iter().zip(due).collect();
    let timing = timing(conn);
    run_until(&scheduler, &timing, n).await?;
    let fired = timing.fired.lock().unwrap().clone();
    let mut late: Vec<u64> = fired
        .iter()
        .map(|(id, at)| {
            let due = due_of[id];
            at.duration_since(due).map_or(0, |d| d.as_micros() as u64)
        })
        .collect();
    late.sort_unstable();
    Ok(late)
}

/// Each store's figures, `rounds` times, medians.
pub(crate) async fn rows(sizes: Sizes) -> Result<Vec<SchedulerRow>> {
    let conn = msg::connect("memory://bench-scheduler?capacity=1000000&retention=0")
        .await
        .context("the in-process broker")?;
    let schedules = sizes.messages * 5;
    let rounds = sizes.rounds.min(3);
    let mut rows = Vec::new();
    for store in [Store::Sqlite, Store::Postgres, Store::Redis] {
        let (mut rates, mut p50, mut p99) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            eprintln!("bench: scheduler on {} round {}", store.name(), round + 1);
            rates.push(fires_per_sec(store, &conn, schedules).await?);
            let late = lateness(store, &conn, sizes.rate, sizes.latency_for).await?;
            p50.push(percentile(&late, 50.0) / 1000.0);
            p99.push(percentile(&late, 99.0) / 1000.0);
        }
        rows.push(SchedulerRow {
            store: store.name(),
            schedules,
            rate: sizes.rate,
            fires_per_sec: rates,
            lateness_p50_ms: p50,
            lateness_p99_ms: p99,
        });
    }
    Ok(rows)
}

/// The figures as a markdown table.
pub(crate) fn table(rows: &[SchedulerRow]) -> String {
    let mut out = String::from(
        "| store | thousand fires/s, two runners, all due | lateness p50 (ms) | lateness p99 (ms) |\n|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} (of {} k schedules) | {} | {} (at {} fires/s) |",
            r.store,
            spread(&r.fires_per_sec, 1e3, 1),
            r.schedules / 1000,
            spread(&r.lateness_p50_ms, 1.0, 1),
            spread(&r.lateness_p99_ms, 1.0, 1),
            r.rate
        );
    }
    out
}

const BEGIN: &str = "<!-- scheduler results: written by `cargo xtask bench` -->";
const END: &str = "<!-- end of scheduler results -->";

/// Rewrites the scheduler's section of docs/benchmarks.md.
pub(crate) fn write_docs(rows: &[SchedulerRow], sizes: Sizes, quick: bool) -> Result<()> {
    let section = format!(
        "{BEGIN}\n\nMeasured {} on {}{}; stores as `cargo xtask brokers` starts them \
         (PostgreSQL 15, Redis 7.0; SQLite, bundled by sqlx, in a WAL file with \
         `synchronous = NORMAL`); medians (and ranges) of {} runs. Fires go to the in-process broker.\n\n{}\n{END}",
        crate::report::today(),
        crate::report::cores(),
        if quick { " (a `--quick` run)" } else { "" },
        sizes.rounds.min(3),
        table(rows)
    );
    crate::report::replace_section(BEGIN, END, &section)
}
