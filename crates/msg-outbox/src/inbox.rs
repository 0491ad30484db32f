//! [`Inbox`]: a consumer's effects, once per message.
//!
//! At-least-once delivery hands a consumer some messages twice. The inbox
//! records each message id it processed (per consumer name) in the same
//! transaction as the consumer's own writes: a message whose id is there
//! is skipped, and one whose transaction did not commit left no trace, so
//! its redelivery runs the work again. Messages the work enqueues in an
//! [`Outbox`](crate::Outbox) through the same transaction go out only if it
//! commits (the "consumer outbox").
//!
//! ```
//! # #[cfg(feature = "sqlite")]
//! # mod example {
//! use msg_core::{HandlerError, Received, Router, State, Subscription};
//! use msg_outbox::{Inbox, Outbox};
//! use sqlx::Sqlite;
//!
//! #[derive(Clone)]
//! struct App {
//!     inbox: Inbox<Sqlite>,
//!     outbox: Outbox<Sqlite>,
//! }
//!
//! #[derive(serde::Deserialize)]
//! struct Order {
//!     id: i64,
//! }
//!
//! async fn bill(State(app): State<App>, received: Received) -> Result<(), HandlerError> {
//!     let Some(mut tx) = app.inbox.begin(&received).await? else {
//!         return Ok(()); // processed before: ack, do nothing
//!     };
//!     let order: Order = received.message.json()?;
//!     sqlx::query("INSERT INTO invoices (order_id) VALUES (?)")
//!         .bind(order.id)
//!         .execute(&mut *tx)
//!         .await?;
//!     let invoice = serde_json::json!({ "order": order.id });
//!     app.outbox.enqueue_json(&mut tx, "invoices", &invoice).await?;
//!     tx.commit().await?;
//!     Ok(()) // the router acks after the commit
//! }
//!
//! pub fn router(broker: msg_memory::MemoryBroker, pool: sqlx::SqlitePool) -> Router<App> {
//!     let app = App {
//!         inbox: Inbox::sqlite(pool.clone(), "billing"),
//!         outbox: Outbox::sqlite(pool),
//!     };
//!     Router::new(broker.clone(), broker)
//!         .with_state(app)
//!         .handle(Subscription::new("orders").group("billing"), bill)
//! }
//! # }
//! ```

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use msg_core::{Received, Result};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::row::now_millis;
use crate::store::store_error;
use crate::table::Table;

/// The SQL of an inbox table, with its name in it.
#[derive(Debug)]
struct Sql {
    table: Table,
    /// The schema's versions, oldest first (see `schema`).
    migrate: Vec<Vec<String>>,
    /// Keeps two `migrate()`s apart.
    migrate_lock: Option<String>,
    record: String,
    forget: String,
}

impl Sql {
    fn new(table: &Table, postgres: bool) -> Self {
        let t = table.name();
        let processed = table.derived("processed");
        let (int, p) = if postgres {
            ("BIGINT", ["$1", "$2", "$3"])
        } else {
            ("INTEGER", ["?1", "?2", "?3"])
        };
        Self {
            migrate: vec![vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {t} (
                        consumer TEXT NOT NULL,
                        message_id TEXT NOT NULL,
                        processed_at {int} NOT NULL,
                        PRIMARY KEY (consumer, message_id)
                    )"
                ),
                format!("CREATE INDEX IF NOT EXISTS {processed} ON {t} (processed_at)"),
            ]],
            // SQLite's `BEGIN IMMEDIATE` is the lock there.
            migrate_lock: postgres.then(|| {
                format!("SELECT pg_advisory_xact_lock(hashtextextended('{t}:migrate', 0))")
            }),
            table: table.clone(),
            // A second delivery running at the same time waits here for
            // the first one's transaction, then finds its row.
            record: format!(
                "INSERT INTO {t} (consumer, message_id, processed_at) VALUES ({}, {}, {})
                 ON CONFLICT (consumer, message_id) DO NOTHING",
                p[0], p[1], p[2]
            ),
            // A chunk at a time, so that a large backlog of old records
            // never holds the table (SQLite: the database) for long.
            forget: format!(
                "DELETE FROM {t} WHERE consumer = {c} AND message_id IN (
                    SELECT message_id FROM {t}
                    WHERE consumer = {c} AND processed_at < {before} LIMIT {limit})",
                c = p[0],
                before = p[1],
                limit = p[2]
            ),
        }
    }
}

/// Records deleted per statement by `forget_older_than`.
const FORGET_CHUNK: i64 = 1_000;

/// The background cleanup [`Inbox::start_cleanup`] started; it stops when
/// this is shut down or dropped.
#[derive(Debug)]
pub struct InboxCleanup {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl InboxCleanup {
    fn start<F, Fut>(forget: F, every: Duration) -> Self
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<u64>> + Send,
    {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                match forget().await {
                    Ok(n) => tracing::debug!(forgotten = n, "inbox cleanup"),
                    Err(e) => {
                        tracing::warn!(error = %e.chain(), "inbox cleanup failed; trying again later");
                    }
                }
                tokio::select! {
                    // A stop, or the handle dropped.
                    _ = stopped.changed() => return,
                    () = tokio::time::sleep(every) => {}
                }
            }
        });
        Self { stop, task }
    }

    /// Stops the cleanup, after the pass in progress if there is one.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the inbox cleanup task failed");
        }
    }
}

/// Records the messages a consumer processed, in the consumer's own
/// transaction; see the [module docs](self). `DB` is `sqlx::Sqlite` or
/// `sqlx::Postgres`.
pub struct Inbox<DB: sqlx::Database> {
    pool: sqlx::Pool<DB>,
    consumer: String,
    sql: std::sync::Arc<Sql>,
    _db: PhantomData<fn() -> DB>,
}

impl<DB: sqlx::Database> Clone for Inbox<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            consumer: self.consumer.clone(),
            sql: self.sql.clone(),
            _db: PhantomData,
        }
    }
}

impl<DB: sqlx::Database> std::fmt::Debug for Inbox<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

/// The inbox methods, the same for each database but for its types.
macro_rules! inbox_methods {
    ($db:ty, $new:ident, $postgres:literal, $begin:literal, $name:literal) => {
        impl Inbox<$db> {
            #[doc = concat!("The inbox of consumer `consumer` (a name that stays the same across restarts, such as the consumer group) in the ", $name, " database of `pool`, in the table `msg_inbox`.")]
            pub fn $new(pool: sqlx::Pool<$db>, consumer: impl Into<String>) -> Self {
                Self {
                    pool,
                    consumer: consumer.into(),
                    sql: std::sync::Arc::new(Sql::new(&Table::default_inbox(), $postgres)),
                    _db: PhantomData,
                }
            }

            /// The same inbox in the table `name` instead (letters, digits
            /// and `_`, optionally `schema.table`).
            pub fn with_table(mut self, name: &str) -> Result<Self> {
                self.sql = std::sync::Arc::new(Sql::new(&Table::new(name)?, $postgres));
                Ok(self)
            }

            /// Creates the inbox's table if it is missing, or brings it to
            /// this release's schema (safe to run from every process on
            /// start).
            pub async fn migrate(&self) -> Result<()> {
                let mut tx = self.pool.begin_with($begin).await.map_err(store_error)?;
                if let Some(lock) = &self.sql.migrate_lock {
                    sqlx::query(lock).execute(&mut *tx).await.map_err(store_error)?;
                }
                crate::schema::upgrade::<$db>(&mut tx, &self.sql.table, &self.sql.migrate).await?;
                tx.commit().await.map_err(store_error)
            }

            /// Begins the transaction that handles `received`, with its id
            /// recorded for this consumer; `Ok(None)` when this consumer
            /// already processed it (skip the work, return `Ok`). Do the
            /// work through the transaction (`&mut *tx`, `outbox.enqueue(&mut
            /// tx, ..)`), commit it, then return from the handler, which
            /// acks: a crash before the commit leaves no trace and the
            /// redelivery runs the work, one after it is skipped. A
            /// transaction dropped without a commit rolls back.
            ///
            /// A second delivery of the same id handled at the same time
            /// waits here until the first one's transaction ends.
            pub async fn begin(
                &self,
                received: &Received,
            ) -> Result<Option<sqlx::Transaction<'static, $db>>> {
                // Not entered, as the relay's spans (see `Relay::run_once`).
                let recording = tracing::debug_span!(
                    "inbox record",
                    consumer = %self.consumer,
                    message.id = %received.message.id(),
                    duplicate = tracing::field::Empty,
                );
                let mut tx = self.pool.begin_with($begin).await.map_err(store_error)?;
                let recorded = sqlx::query(&self.sql.record)
                    .bind(&self.consumer)
                    .bind(received.message.id().to_string())
                    .bind(now_millis())
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                let duplicate = recorded.rows_affected() == 0;
                recording.record("duplicate", duplicate);
                if duplicate {
                    tracing::debug!(id = %received.message.id(), consumer = %self.consumer, "already processed; skipped");
                    tx.rollback().await.map_err(store_error)?;
                    return Ok(None);
                }
                Ok(Some(tx))
            }

            /// Forgets the ids this consumer processed more than `age` ago
            /// (other consumers' records stay); returns how many. A message
            /// redelivered after that runs again: keep `age` above the
            /// longest redelivery (the broker's retention for a replay).
            /// Deletes in chunks of 1,000, each a statement of its own, so
            /// that consumers are never held up for long. Run it now and
            /// then, or let [`start_cleanup`](Self::start_cleanup) do it.
            pub async fn forget_older_than(&self, age: Duration) -> Result<u64> {
                let before = now_millis()
                    .saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
                let mut forgotten = 0;
                loop {
                    let done = sqlx::query(&self.sql.forget)
                        .bind(&self.consumer)
                        .bind(before)
                        .bind(FORGET_CHUNK)
                        .execute(&self.pool)
                        .await
                        .map_err(store_error)?;
                    forgotten += done.rows_affected();
                    if done.rows_affected() < FORGET_CHUNK as u64 {
                        return Ok(forgotten);
                    }
                }
            }

            /// Forgets this consumer's ids older than `window` in the
            /// background (see [`forget_older_than`](Self::forget_older_than)),
            /// every tenth of the window (but no more often than once a
            /// second, and at least once an hour), until the returned
            /// handle is shut down or dropped.
            /// A failed pass is logged and tried again at the next.
            pub fn start_cleanup(&self, window: Duration) -> InboxCleanup {
                let inbox = self.clone();
                let every = (window / 10).clamp(Duration::from_secs(1), Duration::from_secs(3_600));
                InboxCleanup::start(move || {
                    let inbox = inbox.clone();
                    async move { inbox.forget_older_than(window).await }
                }, every)
            }
        }
    };
}

// SQLite: take the writer lock up front, so that the transaction never
// has to upgrade a stale read snapshot (which fails, rather than waits).
#[cfg(feature = "sqlite")]
inbox_methods!(sqlx::Sqlite, sqlite, false, "BEGIN IMMEDIATE", "SQLite");

#[cfg(feature = "postgres")]
inbox_methods!(sqlx::Postgres, postgres, true, "BEGIN", "PostgreSQL");
