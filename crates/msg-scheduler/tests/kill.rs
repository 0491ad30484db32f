//! Kill the runner: a runner in a child process is SIGKILLed while it
//! holds claims over 10,000 due schedules, and a second runner finishes.
//! Every schedule fires, none early; the only duplicates are fires the
//! first runner published and had not recorded, with their ids.
//!
//! The runners publish to a file (one line per accepted publish, written
//! before the publish returns), which both processes share: a line is
//! exactly "the broker accepted it". One publish at a time, a millisecond
//! each, so that the kill lands inside a batch.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use msg_core::{Capabilities, Message, PublishOptions, Publisher, Receipt, Result};
use msg_scheduler::{Filter, Scheduler, When};

const SCHEDULES: usize = 10_000;
const BATCH: usize = 100;
const LEASE: Duration = Duration::from_secs(2);
const CHILD: &str = "MSG_SCHEDULER_KILL_CHILD";

fn ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis()
}

/// Appends `id due-ms fired-ms` per publish, one publish at a time.
#[derive(Clone)]
struct FilePublisher(Arc<tokio::sync::Mutex<std::fs::File>>);

impl FilePublisher {
    fn new(path: &Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        Self(Arc::new(tokio::sync::Mutex::new(file)))
    }
}

impl Publisher for FilePublisher {
    async fn publish_with(&self, _: &str, message: Message, _: PublishOptions) -> Result<Receipt> {
        let mut file = self.0.lock().await;
        // A broker's confirm takes a while.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let line = format!(
            "{} {} {}\n",
            message.id(),
            String::from_utf8_lossy(message.payload()),
            ms(SystemTime::now())
        );
        file.write_all(line.as_bytes()).unwrap();
        Ok(Receipt::accepted())
    }
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
    async fn close(&self) -> Result<()> {
        Ok(())
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::minimal("file")
    }
}

/// `(id, due ms, fired ms)` per line.
fn lines(path: &Path) -> Vec<(String, u128, u128)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(' ');
            Some((
                parts.next()?.to_owned(),
                parts.next()?.parse().ok()?,
                parts.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// The scheduler over the store `which` names, at `db`.
async fn scheduler(which: &str, db: &str) -> Scheduler {
    let scheduler = match which {
        "sqlite" => {
            use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};
            let options = SqliteConnectOptions::new()
                .filename(db)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal);
            Scheduler::sqlite(SqlitePool::connect_with(options).await.unwrap())
        }
        #[cfg(feature = "postgres")]
        "postgres" => {
            use std::str::FromStr;
            let (url, schema) = db.split_once('#').unwrap();
            let options = sqlx::postgres::PgConnectOptions::from_str(url)
                .unwrap()
                .options([("search_path", schema)]);
            Scheduler::postgres(sqlx::PgPool::connect_with(options).await.unwrap())
        }
        #[cfg(feature = "redis")]
        "redis" => {
            let (url, prefix) = db.split_once('#').unwrap();
            let store = msg_scheduler::store::redis::RedisStore::connect_url(url)
                .unwrap()
                .with_prefix(prefix);
            Scheduler::new(store)
        }
        other => panic!("no store {other}"),
    };
    scheduler.migrate().await.unwrap();
    scheduler
}

/// The child's entry: a test that does nothing unless the parent started
/// it. It runs a runner and never returns: the parent kills it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_child() {
    if let Ok(which) = std::env::var(CHILD) {
        let db = std::env::var("MSG_SCHEDULER_KILL_DB").unwrap();
        let out = PathBuf::from(std::env::var("MSG_SCHEDULER_KILL_OUT").unwrap());
        let _running = scheduler(&which, &db)
            .await
            .runner(FilePublisher::new(&out))
            .batch_size(BATCH)
            .lease(LEASE)
            .start();
        std::future::pending::<()>().await;
    }
}

/// How many schedules are left in the store, and how many of them a
/// runner holds under a live lease.
async fn left_and_held(scheduler: &Scheduler) -> (usize, usize) {
    let mut filter = Filter::new().limit(1000);
    let (mut left, mut held) = (0, 0);
    loop {
        let page = scheduler.list(filter.clone()).await.unwrap();
        left += page.schedules.len();
        held += page.schedules.iter().filter(|s| s.firing).count();
        match page.next {
            Some(cursor) => filter = filter.after(cursor),
            None => return (left, held),
        }
    }
}

async fn left(scheduler: &Scheduler) -> usize {
    left_and_held(scheduler).await.0
}

/// Fills the store, starts the child runner, kills it inside a batch once
/// it fired a quarter, finishes with a runner here, and checks the fires.
async fn kill_and_finish(which: &str, db: &str) {
    let out = std::env::temp_dir().join(format!(
        "msg-scheduler-kill-{}.out",
        msg_core::Uuid::new_v4().simple()
    ));
    let scheduler = scheduler(which, db).await;
    let due = SystemTime::now() + Duration::from_millis(500);
    for _ in 0..SCHEDULES {
        let message = Message::new(ms(due).to_string());
        scheduler
            .schedule("orders", message, When::at(due))
            .await
            .unwrap();
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["kill_child", "--exact", "--nocapture"])
        .env(CHILD, which)
        .env("MSG_SCHEDULER_KILL_DB", db)
        .env("MSG_SCHEDULER_KILL_OUT", &out)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // Inside a batch: some of a batch published, not all.
    while lines(&out).len() < SCHEDULES / 4 || lines(&out).len().is_multiple_of(BATCH) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the child runner fired only {}",
            lines(&out).len()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child runner exited"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed_at = SystemTime::now();
    let at_kill = lines(&out).len();
    let (left_at_kill, held) = left_and_held(&scheduler).await;
    let recorded = SCHEDULES - left_at_kill;
    // Usually the kill lands inside a batch; under load the child can
    // finish one between the parent's look and the kill, and then nothing
    // is in flight (the checks below still hold, with no duplicates).
    assert!(
        recorded <= at_kill,
        "{recorded} recorded but only {at_kill} fired"
    );
    if recorded == at_kill {
        println!("{which}: the kill landed between batches ({at_kill} fired and recorded)");
    }
    assert!(
        held >= at_kill - recorded && held <= BATCH,
        "the dead runner's batch ({held} schedules) stays held under its lease"
    );

    let running = scheduler
        .runner(FilePublisher::new(&out))
        .batch_size(BATCH)
        .lease(LEASE)
        .start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while left(&scheduler).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} schedules left",
            left(&scheduler).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Anything still to come would be a duplicate: let it show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.shutdown().await;

    let fired = lines(&out);
    let mut by_id: HashMap<&str, Vec<u128>> = HashMap::new();
    for (id, due, at) in &fired {
        assert!(at >= due, "fired at {at}, before its due time {due}");
        by_id.entry(id).or_default().push(*at);
    }
    assert_eq!(by_id.len(), SCHEDULES, "every schedule fired, none lost");
    let duplicates: usize = by_id.values().map(|fires| fires.len() - 1).sum();
    assert_eq!(
        duplicates,
        at_kill - recorded,
        "the duplicates are the fires made and not yet recorded at the kill"
    );
    assert!(duplicates < BATCH, "{duplicates} duplicates");
    // The dead runner's claims wait for their lease (claimed a batch's
    // publishing, ~100 ms, before the kill): their second fires come well
    // after the kill.
    let lease_end = ms(killed_at + LEASE - Duration::from_secs(1));
    for fires in by_id.values().filter(|f| f.len() > 1) {
        assert!(fires[1] >= lease_end, "fired again before the lease ended");
    }
    println!(
        "{which}: {at_kill} fired before the kill ({recorded} recorded), {} in all, {duplicates} duplicates",
        fired.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_runner_sqlite() {
    let db = std::env::temp_dir().join(format!(
        "msg-scheduler-kill-{}.db",
        msg_core::Uuid::new_v4().simple()
    ));
    kill_and_finish("sqlite", db.to_str().unwrap()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_runner_postgres() {
    let url = msg_testkit::BrokerEnv::get("postgres").url().to_owned();
    let schema = format!("kill_{}", msg_core::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(&url).await.unwrap_or_else(|e| {
        panic!("PostgreSQL at {url}: {e} (start it: cargo xtask brokers up postgres)")
    });
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&pool)
        .await
        .unwrap();
    kill_and_finish("postgres", &format!("{url}#{schema}")).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_runner_redis() {
    let url = msg_testkit::BrokerEnv::get("redis").url().to_owned();
    let prefix = format!("kill:{}", msg_core::Uuid::new_v4().simple());
    kill_and_finish("redis", &format!("{url}#{prefix}")).await;
}
