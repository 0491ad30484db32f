//! Kill the relay: a relay in a child process is SIGKILLed mid-batch over
//! 10,000 rows, and a second relay finishes. Every row is published; the
//! only duplicates are rows that were in flight, with their ids; each
//! key's first publishes stay in order.
//!
//! The relays publish to a file (one line per accepted publish, appended
//! before the publish returns), which both processes share: what is
//! tested here is the relay's bookkeeping across a crash, and a line is
//! exactly "the broker accepted it".

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use msg_core::{Capabilities, Message, PublishOptions, Publisher, Receipt, Result};
use msg_outbox::Relay;

const ROWS: usize = 10_000;
const KEYS: usize = 100;
const BATCH: usize = 100;
/// Passes the child relay makes at once: as many batches may be in flight.
const WORKERS: usize = 2;
const CHILD: &str = "MSG_OUTBOX_KILL_CHILD";

/// Appends `id payload` per publish.
#[derive(Clone)]
struct FilePublisher(Arc<Mutex<std::fs::File>>);

impl FilePublisher {
    fn new(path: &Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        Self(Arc::new(Mutex::new(file)))
    }
}

impl Publisher for FilePublisher {
    async fn publish_with(&self, _: &str, message: Message, _: PublishOptions) -> Result<Receipt> {
        // A broker's confirm takes a while: the kill lands mid-batch.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let line = format!(
            "{} {}\n",
            message.id(),
            String::from_utf8_lossy(message.payload())
        );
        self.0.lock().unwrap().write_all(line.as_bytes()).unwrap();
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

fn lines(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(id, p)| (id.to_owned(), p.to_owned()))
        .collect()
}

fn messages() -> Vec<Message> {
    (0..ROWS)
        .map(|n| {
            let key = format!("k{}", n % KEYS);
            Message::new(format!("{key}:{}", n / KEYS)).with_key(key)
        })
        .collect()
}

/// Runs the relay of the child process (`which` database) and never
/// returns: the parent kills it.
async fn child_relay(which: &str) {
    let out = PathBuf::from(std::env::var("MSG_OUTBOX_KILL_OUT").unwrap());
    let publisher = FilePublisher::new(&out);
    let relay = match which {
        "sqlite" => sqlite::outbox(&PathBuf::from(std::env::var("MSG_OUTBOX_KILL_DB").unwrap()))
            .await
            .relay(publisher),
        #[cfg(feature = "postgres")]
        "postgres" => postgres::outbox(&std::env::var("MSG_OUTBOX_KILL_DB").unwrap())
            .await
            .relay(publisher),
        other => panic!("no database {other}"),
    };
    let _running = relay
        .batch_size(BATCH)
        .workers(WORKERS)
        .lease(Duration::from_secs(1))
        .start();
    std::future::pending::<()>().await;
}

/// The child's entry: a test that does nothing unless the parent started
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_child() {
    if let Ok(which) = std::env::var(CHILD) {
        child_relay(&which).await;
    }
}

/// Starts the child relay, kills it mid-batch once it published a quarter
/// of the rows, then finishes with `finish` and checks what was published;
/// `pending` counts the rows not recorded as sent.
async fn kill_and_finish<P: Publisher, F: Future<Output = u64>>(
    which: &str,
    db: &str,
    out: &Path,
    finish: Relay<P>,
    pending: impl Fn() -> F,
) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["kill_child", "--exact", "--nocapture"])
        .env(CHILD, which)
        .env("MSG_OUTBOX_KILL_DB", db)
        .env("MSG_OUTBOX_KILL_OUT", out)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // Mid-batch: some of a batch published, not all.
    while lines(out).len() < ROWS / 4 || lines(out).len().is_multiple_of(BATCH) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the child relay published only {} rows",
            lines(out).len()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child relay exited"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = lines(out).len();
    assert!(at_kill < ROWS, "killed after it had published everything");
    let recorded = ROWS - usize::try_from(pending().await).unwrap();
    // Usually the kill lands inside a batch (some rows published, not
    // recorded). Under load the child can finish the batch between the
    // parent's look and the kill; then there is nothing in flight, and the
    // checks below still hold (no duplicates at all).
    assert!(
        recorded <= at_kill,
        "{recorded} recorded but only {at_kill} published"
    );
    if recorded == at_kill {
        println!("{which}: the kill landed between batches ({at_kill} published and recorded)");
    }

    let running = finish
        .batch_size(BATCH)
        .lease(Duration::from_secs(1))
        .start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let ids: HashSet<String> = lines(out).into_iter().map(|(id, _)| id).collect();
        if ids.len() == ROWS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {ROWS} rows published",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Anything still to come would be a duplicate: let it show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.shutdown().await;

    let published = lines(out);
    let mut by_id: HashMap<&str, (&str, usize)> = HashMap::new();
    for (id, payload) in &published {
        by_id.entry(id).or_insert((payload, 0)).1 += 1;
    }
    assert_eq!(by_id.len(), ROWS, "every row published, none lost");
    let duplicates: usize = by_id.values().map(|(_, n)| n - 1).sum();
    assert_eq!(
        duplicates,
        at_kill - recorded,
        "the duplicates are the rows published and not yet recorded at the kill"
    );
    assert!(duplicates < WORKERS * BATCH, "{duplicates} duplicates");
    assert!(
        by_id.values().all(|(_, n)| *n <= 2),
        "a row was published more than twice"
    );
    // Per key, the first publish of each row comes in order.
    let mut seen = HashSet::new();
    let mut next: HashMap<&str, usize> = HashMap::new();
    for (id, payload) in &published {
        if !seen.insert(id) {
            continue;
        }
        let (key, n) = payload.split_once(':').unwrap();
        let expected = next.entry(key).or_default();
        assert_eq!(
            n.parse::<usize>().unwrap(),
            *expected,
            "key {key} out of order"
        );
        *expected += 1;
    }
    println!(
        "{which}: {at_kill} published before the kill ({recorded} recorded), {} in all, {duplicates} duplicates",
        published.len()
    );
}

mod sqlite {
    use std::path::Path;

    use msg_outbox::Outbox;
    use sqlx::Sqlite;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};

    pub(super) async fn outbox(path: &Path) -> Outbox<Sqlite> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let outbox = Outbox::sqlite(SqlitePool::connect_with(options).await.unwrap());
        outbox.migrate().await.unwrap();
        outbox
    }

    pub(super) async fn fill(outbox: &Outbox<Sqlite>, path: &Path) {
        let pool = SqlitePool::connect_with(SqliteConnectOptions::new().filename(path))
            .await
            .unwrap();
        for chunk in super::messages().chunks(500) {
            let mut tx = pool.begin().await.unwrap();
            for message in chunk {
                outbox
                    .enqueue(&mut tx, "orders", message.clone())
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use msg_outbox::Outbox;
    use sqlx::Postgres;
    use sqlx::postgres::PgPool;

    /// `db` is `URL#table`.
    pub(super) async fn outbox(db: &str) -> Outbox<Postgres> {
        let (url, table) = db.split_once('#').unwrap();
        let outbox = Outbox::postgres(PgPool::connect(url).await.unwrap())
            .with_table(table)
            .unwrap();
        outbox.migrate().await.unwrap();
        outbox
    }

    pub(super) async fn fill(outbox: &Outbox<Postgres>, url: &str) {
        let pool = PgPool::connect(url).await.unwrap();
        for chunk in super::messages().chunks(500) {
            let mut tx = pool.begin().await.unwrap();
            for message in chunk {
                outbox
                    .enqueue(&mut tx, "orders", message.clone())
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
        }
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("msg-outbox-kill-{}", msg_core::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sqlite_relay_loses_nothing() {
    let db = scratch("outbox.db");
    let out = db.with_file_name("published.txt");
    let outbox = sqlite::outbox(&db).await;
    sqlite::fill(&outbox, &db).await;
    let finish = outbox.relay(FilePublisher::new(&out));
    let pending = || async { outbox.stats().await.unwrap().pending };
    kill_and_finish("sqlite", db.to_str().unwrap(), &out, finish, pending).await;
    assert_eq!(outbox.stats().await.unwrap().pending, 0);
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_postgres_relay_loses_nothing() {
    let url = msg_testkit::BrokerEnv::get("postgres").url().to_owned();
    let table = format!("kill_{}", msg_core::Uuid::new_v4().simple());
    let db = format!("{url}#{table}");
    let out = scratch("published.txt");
    let outbox = postgres::outbox(&db).await;
    postgres::fill(&outbox, &url).await;
    let finish = outbox.relay(FilePublisher::new(&out));
    let pending = || async { outbox.stats().await.unwrap().pending };
    kill_and_finish("postgres", &db, &out, finish, pending).await;
    assert_eq!(outbox.stats().await.unwrap().pending, 0);
}
