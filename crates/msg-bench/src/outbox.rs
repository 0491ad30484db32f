//! The outbox's rows: how fast a relay drains a table into a broker, next
//! to msg's own confirmed publish on the same broker in the same run; and
//! what enqueue adds to a PostgreSQL transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use msg::outbox::Outbox;
use msg::{Connection, Message, Publisher};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};

use crate::cpu::{Group, Sample};
use crate::measure::{Row, Sizes, median, percentile};
use crate::side::payload;

/// Where the relay reads from.
pub(crate) enum Database {
    /// An SQLite file (the embedded default).
    Sqlite,
    /// The PostgreSQL that `cargo xtask brokers up postgres` starts.
    Postgres(String),
}

impl Database {
    fn name(&self) -> &'static str {
        match self {
            Database::Sqlite => "SQLite",
            Database::Postgres(_) => "PostgreSQL",
        }
    }
}

const BATCH: usize = 500;
const IN_FLIGHT: usize = 64;

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", msg::Uuid::new_v4().simple())
}

/// Fills an outbox with `n` rows (not timed) and returns the time a relay
/// takes to publish them all.
async fn relay_rate(
    db: &Database,
    conn: &Connection,
    topic: &str,
    n: usize,
    broker: Option<&str>,
) -> Result<(f64, Cpu)> {
    let counting = Counting {
        inner: conn.clone(),
        accepted: Arc::default(),
        all: n,
        done: Arc::default(),
    };
    let messages: Vec<Message> = (0..n).map(|_| Message::new(payload())).collect();
    let (elapsed, cpu) = match db {
        Database::Sqlite => {
            let dir = std::env::temp_dir().join(unique("msg-bench-outbox"));
            std::fs::create_dir_all(&dir)?;
            let pool = SqlitePool::connect_with(
                SqliteConnectOptions::new()
                    .filename(dir.join("outbox.db"))
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal),
            )
            .await?;
            let outbox = Outbox::sqlite(pool.clone());
            outbox.migrate().await?;
            for chunk in messages.chunks(1_000) {
                let mut tx = pool.begin().await?;
                for m in chunk {
                    outbox.enqueue(&mut tx, topic, m.clone()).await?;
                }
                tx.commit().await?;
            }
            let drained = drain(relay(&outbox, &counting), &counting, broker).await?;
            pool.close().await;
            let _ = std::fs::remove_dir_all(&dir);
            drained
        }
        Database::Postgres(url) => {
            let pool = PgPoolOptions::new().max_connections(4).connect(url).await?;
            let table = unique("bench_outbox");
            let outbox = Outbox::postgres(pool.clone()).with_table(&table)?;
            outbox.migrate().await?;
            for chunk in messages.chunks(1_000) {
                let mut tx = pool.begin().await?;
                for m in chunk {
                    outbox.enqueue(&mut tx, topic, m.clone()).await?;
                }
                tx.commit().await?;
            }
            let drained = drain(relay(&outbox, &counting), &counting, broker).await?;
            drop_outbox(&pool, &table).await?;
            pool.close().await;
            drained
        }
    };
    Ok((n as f64 / elapsed.as_secs_f64(), cpu.per(n)))
}

/// Drops an outbox table and what its migrations made beside it.
async fn drop_outbox(pool: &PgPool, table: &str) -> Result<()> {
    sqlx::raw_sql(&format!(
        "DROP TABLE {table}; DROP TABLE {table}_schema; DROP FUNCTION IF EXISTS {table}_notify()"
    ))
    .execute(pool)
    .await?;
    Ok(())
}

/// A relay as a busy service would set it: large batches, as many
/// publishes in flight as the direct side has.
fn relay<DB>(outbox: &Outbox<DB>, conn: &Counting) -> msg::outbox::Relay<Counting> {
    outbox
        .relay(conn.clone())
        .batch_size(BATCH)
        .concurrency(IN_FLIGHT)
}

/// A publisher that counts what the broker accepted.
#[derive(Clone)]
struct Counting {
    inner: Connection,
    accepted: Arc<AtomicUsize>,
    /// Rows in the table: `done` is notified when the last is accepted.
    all: usize,
    done: Arc<tokio::sync::Notify>,
}

impl Publisher for Counting {
    async fn publish_with(
        &self,
        topic: &str,
        message: Message,
        options: msg::PublishOptions,
    ) -> msg::Result<msg::Receipt> {
        let receipt = self.inner.publish_with(topic, message, options).await?;
        if self.accepted.fetch_add(1, Ordering::Relaxed) + 1 == self.all {
            self.done.notify_one();
        }
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

/// Runs the relay (its workers, as a service does) until every row went.
/// Woken by the last accept rather than polling, which would take the CPU
/// the relay and the broker share.
async fn drain(
    relay: msg::outbox::Relay<Counting>,
    counting: &Counting,
    broker: Option<&str>,
) -> Result<(Duration, Cpu)> {
    let done = counting.done.notified();
    let cpu = Sample::take(broker);
    let started = Instant::now();
    let running = relay.start();
    tokio::time::timeout(Duration::from_secs(300), done)
        .await
        .map_err(|_| anyhow::anyhow!("the relay did not finish in 5 min"))?;
    let elapsed = started.elapsed();
    let cpu = Cpu::since(cpu, broker);
    running.shutdown().await;
    Ok((elapsed, cpu))
}

/// msg's own confirmed publish, `IN_FLIGHT` at once, as the relay has.
async fn direct_rate(
    conn: &Connection,
    topic: &str,
    n: usize,
    broker: Option<&str>,
) -> Result<(f64, Cpu)> {
    let cpu = Sample::take(broker);
    let started = Instant::now();
    let results: Vec<msg::Result<msg::Receipt>> = futures::stream::iter(0..n)
        .map(|_| conn.publish(topic, Message::new(payload())))
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let cpu = Cpu::since(cpu, broker).per(n);
    for r in results {
        r?;
    }
    Ok((n as f64 / elapsed.as_secs_f64(), cpu))
}

/// CPU time per process group over a run, or per message of it.
#[derive(Debug, Default)]
struct Cpu(HashMap<Group, Duration>);

impl Cpu {
    fn since(before: Option<Sample>, broker: Option<&str>) -> Self {
        match (before, Sample::take(broker)) {
            (Some(before), Some(after)) => Self(before.until(&after)),
            _ => Self::default(),
        }
    }

    fn per(self, messages: usize) -> Self {
        let n = u32::try_from(messages.max(1)).unwrap_or(u32::MAX);
        Self(self.0.into_iter().map(|(g, t)| (g, t / n)).collect())
    }
}

/// The median of each group's CPU time per message over `runs`, in µs:
/// `msg 6.9, PostgreSQL 0.1, broker 6.7 (total 13.7)`.
fn cpu_line(runs: &[Cpu]) -> String {
    let mut parts = Vec::new();
    let mut total = 0.0;
    for group in Group::ALL {
        let us = median(
            runs.iter()
                .map(|run| run.0.get(&group).map_or(0.0, |t| t.as_secs_f64() * 1e6))
                .collect(),
        );
        total += us;
        parts.push(format!("{} {us:.1}", group.name()));
    }
    format!("{} (total {total:.1})", parts.join(", "))
}

/// The relay from `db` next to direct publishing, alternating.
pub(crate) async fn relay_row(
    transport: &str,
    conn: &Connection,
    db: &Database,
    sizes: Sizes,
) -> Result<Row> {
    let (mut relay, mut direct) = (Vec::new(), Vec::new());
    let (mut relay_cpu, mut direct_cpu) = (Vec::new(), Vec::new());
    let broker = crate::cpu::broker_process(transport);
    for round in 0..sizes.rounds {
        eprintln!(
            "bench: {transport} outbox ({}) round {}",
            db.name(),
            round + 1
        );
        let topic = format!("bench.{transport}.outbox.{}", &unique("r")[2..10]);
        let (rate, cpu) = direct_rate(conn, &topic, sizes.messages, broker).await?;
        direct.push(rate);
        direct_cpu.push(cpu);
        let (rate, cpu) = relay_rate(db, conn, &topic, sizes.messages, broker).await?;
        relay.push(rate);
        relay_cpu.push(cpu);
        forget(transport, &topic).await?;
    }
    // What each message cost the machine, per process: where the relay's
    // time goes on cores it shares with the database and the broker.
    println!(
        "bench: {transport} outbox ({}) CPU µs per message, medians: direct: {}; relay: {}",
        db.name(),
        cpu_line(&direct_cpu),
        cpu_line(&relay_cpu)
    );
    let (msg, raw) = (median(relay), median(direct));
    Ok(Row {
        transport: transport.to_owned(),
        metric: match db {
            Database::Sqlite => "outbox relay from SQLite (vs msg's direct publish)",
            Database::Postgres(_) => "outbox relay from PostgreSQL (vs msg's direct publish)",
        },
        unit: "msg/s",
        msg,
        raw,
        compare: msg / raw,
        higher_is_better: true,
        ruststream: None,
    })
}

/// Deletes a round's topic where the broker would keep it: on Redis, each
/// round's stream otherwise stays, and the broker's AOF rewrites of what
/// earlier runs left took CPU in later ones.
async fn forget(transport: &str, topic: &str) -> Result<()> {
    if transport == "redis" {
        let url = msg_testkit::BrokerEnv::get("redis").url().to_owned();
        crate::raw::redis::RawRedis::connect(&url)
            .await?
            .delete(topic)
            .await?;
    }
    Ok(())
}

/// What an enqueue adds to a PostgreSQL transaction that inserts one row.
/// Five kinds of transaction, taken in turn so that the machine's noise
/// falls on each alike: the transaction alone; with one more statement
/// that does nothing (`SELECT 1`: the round trip any statement costs);
/// with a plain sqlx `INSERT` of the row an enqueue writes, into an outbox
/// table without the NOTIFY trigger (the database's share); with an
/// enqueue into that table (the outbox's own code on top); and with an
/// enqueue into an outbox that notifies (the default).
pub(crate) async fn enqueue_rows(url: &str, sizes: Sizes) -> Result<Vec<Row>> {
    const ALONE: usize = 0;
    const SELECT_1: usize = 1;
    const PLAIN_INSERT: usize = 2;
    const QUIET_ENQUEUE: usize = 3;
    const ENQUEUE: usize = 4;
    let pool: PgPool = PgPoolOptions::new().max_connections(2).connect(url).await?;
    let tables = [unique("bench_outbox"), unique("bench_outbox")];
    let notifying = Outbox::postgres(pool.clone()).with_table(&tables[0])?;
    let quiet = Outbox::postgres(pool.clone())
        .with_table(&tables[1])?
        .notify(false);
    notifying.migrate().await?;
    quiet.migrate().await?;
    let plain = format!(
        "INSERT INTO {} (id, topic, msg_key, headers, payload, deliver_at, ttl_ms, reply_to, \
         enqueued_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        tables[1]
    );
    let orders = unique("bench_orders");
    sqlx::query(&format!(
        "CREATE TABLE {orders} (id BIGSERIAL PRIMARY KEY, body BYTEA NOT NULL)"
    ))
    .execute(&pool)
    .await?;
    let insert = format!("INSERT INTO {orders} (body) VALUES ($1)");
    let n = sizes.messages.min(5_000);
    let mut took: [Vec<u64>; 5] = std::array::from_fn(|_| Vec::with_capacity(n));
    for i in 0..5 * n {
        let side = i % 5;
        let body = payload();
        let started = Instant::now();
        let mut tx = pool.begin().await?;
        sqlx::query(&insert)
            .bind(body.as_ref())
            .execute(&mut *tx)
            .await?;
        match side {
            SELECT_1 => {
                sqlx::query("SELECT 1").execute(&mut *tx).await?;
            }
            PLAIN_INSERT => {
                sqlx::query(&plain)
                    .bind(msg::Uuid::now_v7().to_string())
                    .bind("orders.placed")
                    .bind(None::<String>)
                    .bind("[]")
                    .bind(body.to_vec())
                    .bind(None::<i64>)
                    .bind(None::<i64>)
                    .bind(None::<String>)
                    .bind(0i64)
                    .execute(&mut *tx)
                    .await?;
            }
            QUIET_ENQUEUE => {
                quiet
                    .enqueue(&mut tx, "orders.placed", Message::new(body))
                    .await?
            }
            ENQUEUE => {
                notifying
                    .enqueue(&mut tx, "orders.placed", Message::new(body))
                    .await?
            }
            _ => {}
        }
        tx.commit().await?;
        took[side].push(started.elapsed().as_nanos() as u64);
    }
    for t in &tables {
        drop_outbox(&pool, t).await?;
    }
    sqlx::query(&format!("DROP TABLE {orders}"))
        .execute(&pool)
        .await?;
    pool.close().await;
    for side in &mut took {
        side.sort_unstable();
    }
    let row = |metric, side: usize, base: usize, p| {
        let (w, wo) = (
            percentile(&took[side], p) / 1_000.0,
            percentile(&took[base], p) / 1_000.0,
        );
        Row {
            transport: "postgres".to_owned(),
            metric,
            unit: "µs",
            msg: w,
            raw: wo,
            compare: w - wo,
            higher_is_better: false,
            ruststream: None,
        }
    };
    Ok(vec![
        row(
            "transaction p50, with an enqueue (raw: without)",
            ENQUEUE,
            ALONE,
            50.0,
        ),
        row(
            "transaction p99, with an enqueue (raw: without)",
            ENQUEUE,
            ALONE,
            99.0,
        ),
        row(
            "transaction p50, with SELECT 1 (raw: without)",
            SELECT_1,
            ALONE,
            50.0,
        ),
        row(
            "transaction p99, with SELECT 1 (raw: without)",
            SELECT_1,
            ALONE,
            99.0,
        ),
        row(
            "transaction p50, enqueue without NOTIFY (raw: plain INSERT)",
            QUIET_ENQUEUE,
            PLAIN_INSERT,
            50.0,
        ),
        row(
            "transaction p99, enqueue without NOTIFY (raw: plain INSERT)",
            QUIET_ENQUEUE,
            PLAIN_INSERT,
            99.0,
        ),
        row(
            "transaction p50, with an enqueue (raw: without NOTIFY)",
            ENQUEUE,
            QUIET_ENQUEUE,
            50.0,
        ),
        row(
            "transaction p99, with an enqueue (raw: without NOTIFY)",
            ENQUEUE,
            QUIET_ENQUEUE,
            99.0,
        ),
    ])
}

/// The PostgreSQL URL, when the run has one.
pub(crate) fn postgres() -> Result<String> {
    Ok(msg_testkit::BrokerEnv::lookup("postgres")
        .context("no PostgreSQL for the outbox rows: cargo xtask brokers up postgres")?
        .url()
        .to_owned())
}
