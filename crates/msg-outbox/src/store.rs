//! What the relay asks of a database, whichever it is.

use std::time::Duration;

use msg_core::{Error, Result};
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::row::{ClaimedRow, NewRow};
use crate::table::Table;

/// A database error as a `msg` error: one that may go away (a lost or
/// exhausted connection, a busy database, a conflict) is retryable.
pub(crate) fn store_error(error: sqlx::Error) -> Error {
    let retryable = match &error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            msg_core::raw::store::retryable_sql_code(db.code().as_deref().unwrap_or(""))
        }
        _ => false,
    };
    if retryable {
        Error::store_retryable(error)
    } else {
        Error::store_permanent(error)
    }
}

/// A row as the relay reads it back; the columns are named as in both
/// dialects' claim queries.
pub(crate) fn claimed<'r, R>(row: &'r R) -> Result<ClaimedRow>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let get = |e: sqlx::Error| store_error(e);
    Ok(ClaimedRow {
        seq: row.try_get("seq").map_err(get)?,
        id: row.try_get("id").map_err(get)?,
        topic: row.try_get("topic").map_err(get)?,
        key: row.try_get("msg_key").map_err(get)?,
        headers: row.try_get("headers").map_err(get)?,
        payload: row.try_get("payload").map_err(get)?,
        deliver_at: row.try_get("deliver_at").map_err(get)?,
        ttl_ms: row.try_get("ttl_ms").map_err(get)?,
        reply_to: row.try_get("reply_to").map_err(get)?,
        attempts: row.try_get("attempts").map_err(get)?,
        enqueued_at: row.try_get("enqueued_at").map_err(get)?,
    })
}

/// What became of a claimed batch.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Published: the broker accepted them.
    pub(crate) sent: Vec<i64>,
    /// Not published, to try again later or to give up on.
    pub(crate) failed: Vec<Failure>,
    /// Not tried (an earlier row of their key failed): free for the next
    /// pass, as they were.
    pub(crate) released: Vec<i64>,
}

/// One row whose publish failed.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) seq: i64,
    /// Failed publishes, this one included.
    pub(crate) attempts: i64,
    /// When to try again (ms since the epoch); ignored when `gave_up`.
    pub(crate) next_attempt_at: i64,
    /// Moves the row to the failed state.
    pub(crate) gave_up: bool,
    pub(crate) error: String,
}

/// Counts an operator or a metric wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// Rows not yet published (claimed ones included).
    pub pending: u64,
    /// Rows given up on, kept for an operator.
    pub failed: u64,
    /// Published rows kept for the retention time.
    pub sent: u64,
    /// How long the oldest pending row has waited.
    pub oldest_pending_age: Option<Duration>,
}

/// A row in the failed state, for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRow {
    /// The message id.
    pub id: msg_core::Uuid,
    /// The topic it was for.
    pub topic: String,
    /// Failed publishes.
    pub attempts: u64,
    /// The last publish's error.
    pub error: String,
    /// When it was enqueued.
    pub enqueued_at: std::time::SystemTime,
}

/// A claimed batch: its rows, in the order to publish them, and what
/// holds them (a lease, or an open transaction).
pub(crate) struct Claim {
    pub(crate) rows: Vec<ClaimedRow>,
    pub(crate) hold: Hold,
}

pub(crate) enum Hold {
    /// SQLite: the rows' lease columns name this relay.
    #[cfg(feature = "sqlite")]
    Lease { owner: String },
    /// PostgreSQL: the claiming transaction, with its key locks, and
    /// where each claimed row is (its `ctid`, by `seq`).
    #[cfg(feature = "postgres")]
    Transaction {
        tx: sqlx::Transaction<'static, sqlx::Postgres>,
        places: std::collections::HashMap<i64, String>,
    },
}

/// The database an outbox lives in.
#[derive(Debug, Clone)]
pub(crate) enum Store {
    #[cfg(feature = "sqlite")]
    Sqlite(crate::sqlite::SqliteStore),
    #[cfg(feature = "postgres")]
    Postgres(crate::postgres::PgStore),
}

impl Store {
    pub(crate) async fn migrate(&self) -> Result<()> {
        match self {
            #[cfg(feature = "sqlite")]
            Store::Sqlite(s) => s.migrate().await,
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => s.migrate().await,
        }
    }

    /// Claims up to `batch` rows; SQLite leases them to `owner` for
    /// `lease`.
    #[cfg_attr(not(feature = "sqlite"), allow(unused_variables))]
    pub(crate) async fn claim(&self, owner: &str, batch: usize, lease: Duration) -> Result<Claim> {
        match self {
            #[cfg(feature = "sqlite")]
            Store::Sqlite(s) => s.claim(owner, batch, lease).await,
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => s.claim(batch).await,
        }
    }

    /// Records `outcome`; sent rows are deleted when `keep_sent` is false.
    pub(crate) async fn finish(&self, hold: Hold, outcome: Outcome, keep_sent: bool) -> Result<()> {
        match (self, hold) {
            #[cfg(feature = "sqlite")]
            (Store::Sqlite(s), Hold::Lease { owner }) => s.finish(&owner, outcome, keep_sent).await,
            #[cfg(feature = "postgres")]
            (Store::Postgres(s), Hold::Transaction { tx, places }) => {
                s.finish(tx, places, outcome, keep_sent).await
            }
            #[allow(unreachable_patterns)]
            _ => unreachable!("a claim is finished by the store that made it"),
        }
    }

    /// Deletes up to `limit` rows sent before `before` (ms since the epoch).
    pub(crate) async fn delete_sent(&self, before: i64, limit: i64) -> Result<u64> {
        match self {
            #[cfg(feature = "sqlite")]
            Store::Sqlite(s) => s.delete_sent(before, limit).await,
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => s.delete_sent(before, limit).await,
        }
    }

    pub(crate) async fn stats(&self) -> Result<OutboxStats> {
        match self {
            #[cfg(feature = "sqlite")]
            Store::Sqlite(s) => s.stats().await,
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => s.stats().await,
        }
    }

    pub(crate) async fn failed(&self, limit: i64) -> Result<Vec<FailedRow>> {
        match self {
            #[cfg(feature = "sqlite")]
            Store::Sqlite(s) => s.failed(limit).await,
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => s.failed(limit).await,
        }
    }

    pub(crate) async fn requeue(&self, id: msg_core::Uuid) -> Result<bool> {
        match self {
            #[cfg(feature = "sqlite")]
            Store::Sqlite(s) => s.requeue(id).await,
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => s.requeue(id).await,
        }
    }

    #[cfg(feature = "sqlite")]
    pub(crate) fn sqlite(&self) -> &crate::sqlite::SqliteStore {
        match self {
            Store::Sqlite(s) => s,
            #[allow(unreachable_patterns)]
            _ => unreachable!("an Outbox<Sqlite> holds an SQLite store"),
        }
    }

    #[cfg(feature = "postgres")]
    pub(crate) fn postgres(&self) -> &crate::postgres::PgStore {
        match self {
            Store::Postgres(s) => s,
            #[allow(unreachable_patterns)]
            _ => unreachable!("an Outbox<Postgres> holds a PostgreSQL store"),
        }
    }

    pub(crate) fn table(&self) -> &Table {
        match self {
            #[cfg(feature = "sqlite")]
            Store::Sqlite(s) => s.table(),
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => s.table(),
        }
    }
}

/// The counts of a stats query: `pending, failed, sent, oldest`.
pub(crate) fn stats<'r, R>(row: &'r R) -> Result<OutboxStats>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let count = |name: &'static str| -> Result<u64> {
        let n: i64 = row.try_get(name).map_err(store_error)?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    let oldest: Option<i64> = row.try_get("oldest").map_err(store_error)?;
    Ok(OutboxStats {
        pending: count("pending")?,
        failed: count("failed")?,
        sent: count("sent")?,
        oldest_pending_age: oldest.map(|at| {
            Duration::from_millis(u64::try_from(crate::row::now_millis() - at).unwrap_or(0))
        }),
    })
}

/// The row of a failed-state query: `id, topic, attempts, last_error,
/// enqueued_at`.
pub(crate) fn failed_row<'r, R>(row: &'r R) -> Result<FailedRow>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    let get = |e: sqlx::Error| store_error(e);
    let id: String = row.try_get("id").map_err(get)?;
    let attempts: i64 = row.try_get("attempts").map_err(get)?;
    let error: Option<String> = row.try_get("last_error").map_err(get)?;
    Ok(FailedRow {
        id: msg_core::Uuid::parse_str(&id)
            .map_err(|e| Error::Decode(format!("outbox row id {id:?}: {e}").into()))?,
        topic: row.try_get("topic").map_err(get)?,
        attempts: u64::try_from(attempts).unwrap_or(0),
        error: error.unwrap_or_default(),
        enqueued_at: crate::row::from_millis(row.try_get("enqueued_at").map_err(get)?),
    })
}

/// What both dialects' inserts bind, in this order: id, topic, msg_key,
/// headers, payload, deliver_at, ttl_ms, reply_to, enqueued_at.
pub(crate) const INSERT_COLUMNS: &str =
    "id, topic, msg_key, headers, payload, deliver_at, ttl_ms, reply_to, enqueued_at";

/// Binds `row` to an insert of [`INSERT_COLUMNS`].
pub(crate) fn bind_new_row<'q, DB>(
    query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    row: &'q NewRow,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + Type<DB>,
    Option<&'q str>: sqlx::Encode<'q, DB> + Type<DB>,
    &'q [u8]: sqlx::Encode<'q, DB> + Type<DB>,
    i64: sqlx::Encode<'q, DB> + Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + Type<DB>,
{
    query
        .bind(row.id.as_str())
        .bind(row.topic.as_str())
        .bind(row.key.as_deref())
        .bind(row.headers.as_str())
        .bind(row.payload.as_slice())
        .bind(row.deliver_at)
        .bind(row.ttl_ms)
        .bind(row.reply_to.as_deref())
        .bind(row.enqueued_at)
}
