//! [`Outbox`]: enqueue inside the application's transaction.

use std::marker::PhantomData;
use std::sync::Arc;

use msg_core::{Event, Message, PublishOptions, Publisher, Result, Uuid};
use serde::Serialize;
use tokio::sync::Notify;

use crate::relay::Relay;
use crate::store::{FailedRow, OutboxStats, Store};
use crate::table::Table;

/// A transactional outbox in a database `DB` (`sqlx::Sqlite` or
/// `sqlx::Postgres`): messages enqueued in the application's own
/// transaction, published by a [`Relay`] once it committed.
///
/// Cloning is cheap; clones share the table and the in-process wake-up of
/// relays made from them.
pub struct Outbox<DB> {
    pub(crate) store: Store,
    /// Wakes this process's relays when a message is enqueued.
    pub(crate) wake: Arc<Notify>,
    _db: PhantomData<fn() -> DB>,
}

impl<DB> Clone for Outbox<DB> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            wake: self.wake.clone(),
            _db: PhantomData,
        }
    }
}

impl<DB> std::fmt::Debug for Outbox<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("table", &self.store.table().name())
            .finish_non_exhaustive()
    }
}

impl<DB> Outbox<DB> {
    fn from_store(store: Store) -> Self {
        Self {
            store,
            wake: Arc::new(Notify::new()),
            _db: PhantomData,
        }
    }

    /// Creates the outbox's table and indexes if they are missing (the
    /// SQL is in the crate's docs, to run by other means), or brings them
    /// to this release's schema. Safe to call from several processes at
    /// once and on every start.
    ///
    /// The schema's version is recorded in a table beside the outbox's
    /// (`<table>_schema`); a table a newer release migrated is refused
    /// with an error rather than misread.
    pub async fn migrate(&self) -> Result<()> {
        self.store.migrate().await
    }

    /// A relay that publishes this outbox's rows through `publisher`; see
    /// [`Relay`] for its settings.
    pub fn relay<P: Publisher>(&self, publisher: P) -> Relay<P> {
        Relay::new(self.store.clone(), self.wake.clone(), publisher)
    }

    /// How many rows are pending, failed and kept after sending, and how
    /// old the oldest pending one is.
    pub async fn stats(&self) -> Result<OutboxStats> {
        self.store.stats().await
    }

    /// Up to `limit` rows in the failed state, oldest first.
    pub async fn failed(&self, limit: u32) -> Result<Vec<FailedRow>> {
        self.store.failed(i64::from(limit)).await
    }

    /// Puts the failed row of message `id` back to pending with its
    /// attempts reset (after an operator fixed the cause); whether there
    /// was such a row.
    pub async fn requeue_failed(&self, id: Uuid) -> Result<bool> {
        self.store.requeue(id).await
    }
}

/// The enqueue methods, the same for each database but for the connection
/// type they write through.
macro_rules! enqueue_methods {
    ($db:ty, $conn:ty, $variant:ident, $store:ty, $pool:ty, $new:ident, $name:literal) => {
        impl Outbox<$db> {
            #[doc = concat!("An outbox in the ", $name, " database of `pool`, in the table `msg_outbox`.")]
            pub fn $new(pool: $pool) -> Self {
                Self::from_store(Store::$variant(<$store>::new(pool, Table::default())))
            }

            /// The same outbox in the table `name` instead (letters, digits
            /// and `_`, optionally `schema.table`).
            pub fn with_table(self, name: &str) -> Result<Self> {
                Ok(Self::from_store(Store::$variant(
                    self.store.$new().renamed(Table::new(name)?),
                )))
            }

            /// Writes `message` for `topic` into the outbox through `conn`,
            /// the application's transaction (`&mut tx`): the message is
            /// published if and only if the transaction commits. An invalid
            /// topic or header is an error, and nothing is written.
            pub async fn enqueue(&self, conn: &mut $conn, topic: &str, message: Message) -> Result<()> {
                self.enqueue_with(conn, topic, message, PublishOptions::new())
                    .await
            }

            /// Like [`enqueue`](Self::enqueue), with publish options
            /// (`deliver_at`, `ttl`, `reply_to`) the relay publishes with.
            pub async fn enqueue_with(
                &self,
                conn: &mut $conn,
                topic: &str,
                message: Message,
                options: PublishOptions,
            ) -> Result<()> {
                #[cfg(feature = "otel")]
                let message = {
                    let mut message = message;
                    msg_middleware::tracing::inject_current_context(&mut message);
                    message
                };
                let row = crate::row::NewRow::new(topic, message, &options)?;
                self.store.$new().insert(conn, &row).await?;
                // A relay of this process looks at once (it finds the row
                // once the transaction committed).
                self.wake.notify_one();
                Ok(())
            }

            /// Enqueues `value` as JSON (`content-type: application/json`).
            pub async fn enqueue_json<T: Serialize + Sync>(
                &self,
                conn: &mut $conn,
                topic: &str,
                value: &T,
            ) -> Result<()> {
                let message = crate::json_message(value)?;
                self.enqueue(conn, topic, message).await
            }

            /// Enqueues `event` as a structured-mode CloudEvent
            /// (`application/cloudevents+json`, which every transport
            /// carries), its message id derived from the event's id (so
            /// the same event enqueued twice has one message id).
            pub async fn enqueue_event<T: Serialize + Sync>(
                &self,
                conn: &mut $conn,
                topic: &str,
                event: &Event<T>,
            ) -> Result<()> {
                let message = event.to_structured_message()?;
                self.enqueue(conn, topic, message).await
            }
        }
    };
}

#[cfg(feature = "sqlite")]
enqueue_methods!(
    sqlx::Sqlite,
    sqlx::SqliteConnection,
    Sqlite,
    crate::sqlite::SqliteStore,
    sqlx::SqlitePool,
    sqlite,
    "SQLite"
);

#[cfg(feature = "postgres")]
enqueue_methods!(
    sqlx::Postgres,
    sqlx::PgConnection,
    Postgres,
    crate::postgres::PgStore,
    sqlx::PgPool,
    postgres,
    "PostgreSQL"
);

#[cfg(feature = "postgres")]
impl Outbox<sqlx::Postgres> {
    /// Whether a transaction that enqueued wakes the relays of other
    /// processes at commit, through `NOTIFY` (default true; relays of this
    /// process are woken either way). `migrate()` applies it to the table,
    /// creating or dropping its insert trigger.
    ///
    /// PostgreSQL takes one lock for the whole cluster while it commits a
    /// transaction that notifies, so such commits go one at a time. With
    /// many processes enqueueing at once, turn it off: other processes'
    /// relays then find rows when they poll (`Relay::poll_interval`).
    pub fn notify(mut self, on: bool) -> Self {
        if let Store::Postgres(store) = &mut self.store {
            store.set_notify(on);
        }
        self
    }
}
