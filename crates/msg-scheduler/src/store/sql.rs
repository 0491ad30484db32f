//! What the SQLite and PostgreSQL stores share: the table, its SQL (written
//! once, in PostgreSQL's placeholder style; SQLite reads `$n` as `?n`),
//! and how a row becomes a schedule.
//!
//! The table, `msg_schedules`:
//!
//! | column | |
//! |---|---|
//! | `id` | the schedule id (a UUID's text) |
//! | `schedule_key` | the idempotency key, unique |
//! | `topic` | where the fire publishes |
//! | `message_id`, `message_key`, `headers`, `payload` | the message's parts; the headers as a JSON array of `[name, value]` pairs |
//! | `ttl_ms`, `reply_to` | the fire's publish options |
//! | `recurrence` | how it recurs, as JSON; `NULL` for one-shot |
//! | `due_at` | when it fires next (milliseconds since the Unix epoch) |
//! | `wake_at` | when a runner may claim it: `due_at`, or a claim's lease end, or a retry's time |
//! | `paused` | whether it is paused |
//! | `claim` | the claim that holds it, if any |
//! | `fires` | fires made |

use std::time::Duration;

use msg_core::{Bytes, Error, Message, MessageParts, PublishOptions, Result, Uuid};
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::schedule::{Schedule, ScheduleId, due_time};
use crate::when::Recurrence;

/// The table's name.
pub(crate) const TABLE: &str = "msg_schedules";

/// The columns a schedule is read from, in every query that reads one
/// (`firing` is computed by each query).
pub(crate) const COLUMNS: &str = "id, schedule_key, topic, message_id, message_key, headers, \
     payload, ttl_ms, reply_to, recurrence, due_at, paused, fires";

/// The SQL of one dialect.
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) migrate: Vec<String>,
    pub(crate) migrate_lock: Option<String>,
    pub(crate) insert: String,
    pub(crate) insert_replace: String,
    pub(crate) insert_keep: String,
    pub(crate) remove: String,
    pub(crate) get: String,
    pub(crate) reschedule: String,
    pub(crate) set_paused: String,
    pub(crate) claim: String,
    pub(crate) finish_remove: String,
    pub(crate) finish_due: String,
    pub(crate) finish_retry: String,
    pub(crate) next_wake: String,
    pub(crate) backlog: String,
}

/// How the two dialects differ.
pub(crate) struct Dialect {
    pub(crate) bytes: &'static str,
    pub(crate) int: &'static str,
    /// `FOR UPDATE SKIP LOCKED` where the database has row locks.
    pub(crate) lock: &'static str,
    /// The ids of a batch, bound as one parameter `$2`.
    pub(crate) id_list: &'static str,
    /// Placeholders are `$n` (PostgreSQL) or `?n` (SQLite).
    pub(crate) dollar: bool,
    /// Statements after the table: triggers, say.
    pub(crate) extra: Vec<String>,
    /// Taken first in the migration's transaction, where processes that
    /// create the table at once would otherwise collide.
    pub(crate) migrate_lock: Option<String>,
}

impl Sql {
    pub(crate) fn new(d: Dialect) -> Self {
        let t = TABLE;
        let p = |sql: String| if d.dollar { sql } else { sql.replace('$', "?") };
        let values = "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, FALSE, NULL, 0)";
        let insert = format!(
            "INSERT INTO {t} (id, schedule_key, topic, message_id, message_key, headers, payload, \
             ttl_ms, reply_to, recurrence, due_at, wake_at, paused, claim, fires) VALUES {values}"
        );
        let mut migrate = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                    id TEXT PRIMARY KEY,
                    schedule_key TEXT UNIQUE,
                    topic TEXT NOT NULL,
                    message_id TEXT NOT NULL,
                    message_key TEXT,
                    headers TEXT NOT NULL,
                    payload {bytes} NOT NULL,
                    ttl_ms {int},
                    reply_to TEXT,
                    recurrence TEXT,
                    due_at {int} NOT NULL,
                    wake_at {int} NOT NULL,
                    paused BOOLEAN NOT NULL DEFAULT FALSE,
                    claim TEXT,
                    fires {int} NOT NULL DEFAULT 0
                )",
                bytes = d.bytes,
                int = d.int
            ),
            format!("CREATE INDEX IF NOT EXISTS {t}_wake ON {t} (wake_at) WHERE NOT paused"),
            format!("CREATE INDEX IF NOT EXISTS {t}_due ON {t} (due_at, id)"),
        ];
        migrate.extend(d.extra);
        let firing = "(claim IS NOT NULL AND wake_at > $2) AS firing";
        Self {
            migrate,
            migrate_lock: d.migrate_lock,
            insert_replace: p(format!(
                "{insert} ON CONFLICT (schedule_key) DO UPDATE SET topic = excluded.topic,
                 message_id = excluded.message_id, message_key = excluded.message_key,
                 headers = excluded.headers, payload = excluded.payload, ttl_ms = excluded.ttl_ms,
                 reply_to = excluded.reply_to, recurrence = excluded.recurrence,
                 due_at = excluded.due_at, wake_at = excluded.wake_at, paused = FALSE,
                 claim = NULL, fires = 0
                 RETURNING id"
            )),
            insert_keep: p(format!(
                "{insert} ON CONFLICT (schedule_key) DO UPDATE SET schedule_key = {t}.schedule_key
                 RETURNING id"
            )),
            insert: p(format!("{insert} RETURNING id")),
            remove: p(format!(
                "DELETE FROM {t} WHERE id = $1 RETURNING (claim IS NOT NULL AND wake_at > $2) AS firing"
            )),
            get: p(format!("SELECT {COLUMNS}, {firing} FROM {t} WHERE id = $1")),
            reschedule: p(format!(
                "UPDATE {t} SET due_at = $2, wake_at = $2, recurrence = $3, claim = NULL WHERE id = $1"
            )),
            set_paused: p(format!("UPDATE {t} SET paused = $2 WHERE id = $1")),
            claim: p(format!(
                "UPDATE {t} SET wake_at = $1, claim = $2 WHERE id IN (
                    SELECT id FROM {t} WHERE NOT paused AND wake_at <= $3
                    ORDER BY wake_at LIMIT $4 {lock})
                 RETURNING {COLUMNS}, FALSE AS firing",
                lock = d.lock
            )),
            finish_remove: p(format!(
                "DELETE FROM {t} WHERE claim = $1 AND id IN ({list})",
                list = d.id_list
            )),
            finish_due: p(format!(
                "UPDATE {t} SET due_at = $3, wake_at = $3, fires = fires + $4, claim = NULL
                 WHERE claim = $1 AND id = $2"
            )),
            finish_retry: p(format!(
                "UPDATE {t} SET wake_at = $3, claim = NULL WHERE claim = $1 AND id = $2"
            )),
            next_wake: format!("SELECT MIN(wake_at) FROM {t} WHERE NOT paused"),
            backlog: p(format!(
                "SELECT COUNT(*) FROM {t} WHERE NOT paused AND wake_at <= $1"
            )),
        }
    }

    /// The `list` query for `filter`'s conditions; its parameters are bound
    /// in the order [`list_params`] gives them.
    pub(crate) fn list(&self, filter: &crate::Filter, dollar: bool) -> String {
        let mut conditions = Vec::new();
        let mut n = 1;
        let mut next = || {
            n += 1;
            if dollar {
                format!("${n}")
            } else {
                format!("?{n}")
            }
        };
        if filter.topic.is_some() {
            conditions.push(format!("topic = {}", next()));
        }
        if filter.due_before.is_some() {
            conditions.push(format!("due_at < {}", next()));
        }
        if filter.due_after.is_some() {
            conditions.push(format!("due_at >= {}", next()));
        }
        if filter.after.is_some() {
            let (due, id) = (next(), next());
            conditions.push(format!(
                "(due_at > {due} OR (due_at = {due} AND id > {id}))"
            ));
        }
        match filter.recurring {
            Some(true) => conditions.push("recurrence IS NOT NULL".into()),
            Some(false) => conditions.push("recurrence IS NULL".into()),
            None => {}
        }
        let limit = next();
        let now = if dollar { "$1" } else { "?1" };
        let firing = format!("(claim IS NOT NULL AND wake_at > {now}) AS firing");
        let conditions = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        format!(
            "SELECT {COLUMNS}, {firing} FROM {TABLE} {conditions} ORDER BY due_at, id LIMIT {limit}"
        )
    }
}

/// A parameter of a `list` query.
pub(crate) enum ListParam {
    Text(String),
    Int(i64),
}

/// The parameters of [`Sql::list`] after `now`, in order.
pub(crate) fn list_params(filter: &crate::Filter) -> Vec<ListParam> {
    let mut params = Vec::new();
    if let Some(topic) = &filter.topic {
        params.push(ListParam::Text(topic.clone()));
    }
    if let Some(before) = filter.due_before {
        params.push(ListParam::Int(before));
    }
    if let Some(after) = filter.due_after {
        params.push(ListParam::Int(after));
    }
    if let Some(cursor) = filter.after {
        params.push(ListParam::Int(cursor.due));
        params.push(ListParam::Text(cursor.id.to_string()));
    }
    params.push(ListParam::Int(
        i64::try_from(filter.limit.saturating_add(1)).unwrap_or(i64::MAX),
    ));
    params
}

/// A schedule as its row's columns, to bind in [`Sql::insert`]'s order.
pub(crate) struct NewRow {
    pub(crate) id: String,
    pub(crate) key: Option<String>,
    pub(crate) topic: String,
    pub(crate) message_id: String,
    pub(crate) message_key: Option<String>,
    pub(crate) headers: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) ttl_ms: Option<i64>,
    pub(crate) reply_to: Option<String>,
    pub(crate) recurrence: Option<String>,
    pub(crate) due_at: i64,
}

impl NewRow {
    pub(crate) fn new(schedule: Schedule) -> Result<Self> {
        let due_at = schedule.due_millis();
        let MessageParts {
            id,
            key,
            payload,
            headers,
        } = schedule.message.into_parts();
        Ok(Self {
            id: schedule.id.to_string(),
            key: schedule.key,
            topic: schedule.topic,
            message_id: id.to_string(),
            message_key: key,
            headers: serde_json::to_string(&headers).map_err(|e| Error::Encode(e.into()))?,
            payload: payload.to_vec(),
            ttl_ms: schedule
                .options
                .ttl
                .map(|ttl| i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
            reply_to: schedule.options.reply_to,
            recurrence: schedule
                .recurrence
                .as_ref()
                .map(encode_recurrence)
                .transpose()?,
            due_at,
        })
    }
}

pub(crate) fn encode_recurrence(recurrence: &Recurrence) -> Result<String> {
    serde_json::to_string(recurrence).map_err(|e| Error::Encode(e.into()))
}

/// Binds a [`NewRow`] to a query, in [`Sql::insert`]'s order.
macro_rules! bind_new_row {
    ($query:expr, $row:expr) => {{
        let row = $row;
        $query
            .bind(row.id)
            .bind(row.key)
            .bind(row.topic)
            .bind(row.message_id)
            .bind(row.message_key)
            .bind(row.headers)
            .bind(row.payload)
            .bind(row.ttl_ms)
            .bind(row.reply_to)
            .bind(row.recurrence)
            .bind(row.due_at)
    }};
}
pub(crate) use bind_new_row;

/// Binds [`list_params`] to a query.
macro_rules! bind_list_params {
    ($query:expr, $params:expr) => {{
        let mut query = $query;
        for param in $params {
            query = match param {
                $crate::store::sql::ListParam::Text(text) => query.bind(text),
                $crate::store::sql::ListParam::Int(int) => query.bind(int),
            };
        }
        query
    }};
}
pub(crate) use bind_list_params;

/// A row as a schedule. A row that does not decode (edited by hand, say)
/// is an error that names it.
pub(crate) fn schedule<'r, R>(row: &'r R) -> Result<Schedule>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let get = |e: sqlx::Error| store_error(e);
    let id: String = row.try_get("id").map_err(get)?;
    let corrupt = |what: &str, e: Box<dyn std::error::Error + Send + Sync>| {
        Error::Decode(format!("schedule {id}: {what}: {e}").into())
    };
    let message_id: String = row.try_get("message_id").map_err(get)?;
    let headers: String = row.try_get("headers").map_err(get)?;
    let recurrence: Option<String> = row.try_get("recurrence").map_err(get)?;
    let ttl_ms: Option<i64> = row.try_get("ttl_ms").map_err(get)?;
    let reply_to: Option<String> = row.try_get("reply_to").map_err(get)?;
    let mut options = PublishOptions::new();
    if let Some(ttl) = ttl_ms {
        options = options.ttl(Duration::from_millis(u64::try_from(ttl).unwrap_or(0)));
    }
    if let Some(reply_to) = reply_to {
        options = options.reply_to(reply_to);
    }
    let payload: Vec<u8> = row.try_get("payload").map_err(get)?;
    Ok(Schedule {
        id: ScheduleId::from(Uuid::parse_str(&id).map_err(|e| corrupt("id", e.into()))?),
        key: row.try_get("schedule_key").map_err(get)?,
        topic: row.try_get("topic").map_err(get)?,
        message: Message::from_parts(MessageParts {
            id: Uuid::parse_str(&message_id).map_err(|e| corrupt("message id", e.into()))?,
            key: row.try_get("message_key").map_err(get)?,
            payload: Bytes::from(payload),
            headers: serde_json::from_str(&headers).map_err(|e| corrupt("headers", e.into()))?,
        }),
        options,
        due: due_time(row.try_get("due_at").map_err(get)?),
        recurrence: recurrence
            .map(|r| serde_json::from_str(&r))
            .transpose()
            .map_err(|e| corrupt("recurrence", e.into()))?,
        paused: row.try_get("paused").map_err(get)?,
        fires: u64::try_from(row.try_get::<i64, _>("fires").map_err(get)?).unwrap_or(0),
        firing: row.try_get("firing").map_err(get)?,
    })
}

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

/// The [`Store`](super::Store) of a SQL store type with fields `pool` and
/// `sql` (an [`Sql`]) and inherent `listen`,
/// `poll`, `id_list` and `DOLLAR`: the same code for both dialects, with
/// their types.
macro_rules! sql_store {
    ($store:ty) => {
        impl $crate::store::Store for $store {
            fn migrate(&self) -> futures::future::BoxFuture<'_, msg_core::Result<()>> {
                Box::pin(async move {
                    let mut tx = self
                        .pool
                        .begin()
                        .await
                        .map_err($crate::store::sql::store_error)?;
                    for statement in self.sql.migrate_lock.iter().chain(&self.sql.migrate) {
                        sqlx::query(statement)
                            .execute(&mut *tx)
                            .await
                            .map_err($crate::store::sql::store_error)?;
                    }
                    tx.commit().await.map_err($crate::store::sql::store_error)
                })
            }

            fn insert(
                &self,
                schedule: $crate::Schedule,
                if_exists: $crate::IfExists,
            ) -> futures::future::BoxFuture<'_, msg_core::Result<$crate::ScheduleId>> {
                Box::pin(async move {
                    let sql = match (&schedule.key, if_exists) {
                        (None, _) => &self.sql.insert,
                        (Some(_), $crate::IfExists::Replace) => &self.sql.insert_replace,
                        (Some(_), $crate::IfExists::Keep) => &self.sql.insert_keep,
                    };
                    let row = $crate::store::sql::NewRow::new(schedule)?;
                    let id: String =
                        $crate::store::sql::bind_new_row!(sqlx::query_scalar(sql), row)
                            .fetch_one(&self.pool)
                            .await
                            .map_err($crate::store::sql::store_error)?;
                    id.parse()
                })
            }

            fn remove(
                &self,
                id: $crate::ScheduleId,
                now: i64,
            ) -> futures::future::BoxFuture<'_, msg_core::Result<Option<bool>>> {
                Box::pin(async move {
                    sqlx::query_scalar(&self.sql.remove)
                        .bind(id.to_string())
                        .bind(now)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err($crate::store::sql::store_error)
                })
            }

            fn get(
                &self,
                id: $crate::ScheduleId,
                now: i64,
            ) -> futures::future::BoxFuture<'_, msg_core::Result<Option<$crate::Schedule>>> {
                Box::pin(async move {
                    let row = sqlx::query(&self.sql.get)
                        .bind(id.to_string())
                        .bind(now)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err($crate::store::sql::store_error)?;
                    row.as_ref().map($crate::store::sql::schedule).transpose()
                })
            }

            fn list(
                &self,
                filter: $crate::Filter,
                now: i64,
            ) -> futures::future::BoxFuture<'_, msg_core::Result<$crate::Page>> {
                Box::pin(async move {
                    let sql = self.sql.list(&filter, Self::DOLLAR);
                    let query = sqlx::query(&sql).bind(now);
                    let rows = $crate::store::sql::bind_list_params!(
                        query,
                        $crate::store::sql::list_params(&filter)
                    )
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::store::sql::store_error)?;
                    let schedules = rows
                        .iter()
                        .map($crate::store::sql::schedule)
                        .collect::<msg_core::Result<Vec<_>>>()?;
                    Ok($crate::Page::of(schedules, filter.limit))
                })
            }

            fn reschedule(
                &self,
                id: $crate::ScheduleId,
                due: i64,
                recurrence: Option<$crate::Recurrence>,
            ) -> futures::future::BoxFuture<'_, msg_core::Result<bool>> {
                Box::pin(async move {
                    let recurrence = recurrence
                        .as_ref()
                        .map($crate::store::sql::encode_recurrence)
                        .transpose()?;
                    let done = sqlx::query(&self.sql.reschedule)
                        .bind(id.to_string())
                        .bind(due)
                        .bind(recurrence)
                        .execute(&self.pool)
                        .await
                        .map_err($crate::store::sql::store_error)?;
                    Ok(done.rows_affected() > 0)
                })
            }

            fn set_paused(
                &self,
                id: $crate::ScheduleId,
                paused: bool,
            ) -> futures::future::BoxFuture<'_, msg_core::Result<bool>> {
                Box::pin(async move {
                    let done = sqlx::query(&self.sql.set_paused)
                        .bind(id.to_string())
                        .bind(paused)
                        .execute(&self.pool)
                        .await
                        .map_err($crate::store::sql::store_error)?;
                    Ok(done.rows_affected() > 0)
                })
            }

            fn claim(
                &self,
                claim: $crate::store::Claim,
            ) -> futures::future::BoxFuture<'_, msg_core::Result<Vec<$crate::Schedule>>> {
                Box::pin(async move {
                    let rows = sqlx::query(&self.sql.claim)
                        .bind(claim.lease_until)
                        .bind(claim.token.to_string())
                        .bind(claim.now)
                        .bind(i64::try_from(claim.limit).unwrap_or(i64::MAX))
                        .fetch_all(&self.pool)
                        .await
                        .map_err($crate::store::sql::store_error)?;
                    let mut schedules = rows
                        .iter()
                        .map($crate::store::sql::schedule)
                        .collect::<msg_core::Result<Vec<_>>>()?;
                    // Earliest due first, as a runner fires them.
                    schedules.sort_by_key(|s| (s.due, s.id));
                    Ok(schedules)
                })
            }

            fn finish(
                &self,
                token: msg_core::Uuid,
                outcomes: Vec<($crate::ScheduleId, $crate::store::Next)>,
            ) -> futures::future::BoxFuture<'_, msg_core::Result<()>> {
                Box::pin(async move {
                    let token = token.to_string();
                    let mut removed = Vec::new();
                    let mut updates = Vec::new();
                    for (id, next) in outcomes {
                        match next {
                            $crate::store::Next::Remove => removed.push(id.to_string()),
                            other => updates.push((id, other)),
                        }
                    }
                    let remove = sqlx::query(&self.sql.finish_remove)
                        .bind(token.clone())
                        .bind(Self::id_list(removed.clone()));
                    // One statement needs no transaction of its own: the
                    // common case (one-shot fires only) is one round trip.
                    if updates.is_empty() {
                        if !removed.is_empty() {
                            remove
                                .execute(&self.pool)
                                .await
                                .map_err($crate::store::sql::store_error)?;
                        }
                        return Ok(());
                    }
                    let mut tx = self
                        .pool
                        .begin()
                        .await
                        .map_err($crate::store::sql::store_error)?;
                    for (id, next) in updates {
                        let query = match next {
                            $crate::store::Next::Due { at, fires } => {
                                sqlx::query(&self.sql.finish_due)
                                    .bind(&token)
                                    .bind(id.to_string())
                                    .bind(at)
                                    .bind(i64::from(fires))
                            }
                            $crate::store::Next::Retry(at) => sqlx::query(&self.sql.finish_retry)
                                .bind(&token)
                                .bind(id.to_string())
                                .bind(at),
                            $crate::store::Next::Remove => continue,
                        };
                        query
                            .execute(&mut *tx)
                            .await
                            .map_err($crate::store::sql::store_error)?;
                    }
                    if !removed.is_empty() {
                        remove
                            .execute(&mut *tx)
                            .await
                            .map_err($crate::store::sql::store_error)?;
                    }
                    tx.commit().await.map_err($crate::store::sql::store_error)
                })
            }

            fn next_wake(&self) -> futures::future::BoxFuture<'_, msg_core::Result<Option<i64>>> {
                Box::pin(async move {
                    sqlx::query_scalar(&self.sql.next_wake)
                        .fetch_one(&self.pool)
                        .await
                        .map_err($crate::store::sql::store_error)
                })
            }

            fn backlog(&self, now: i64) -> futures::future::BoxFuture<'_, msg_core::Result<u64>> {
                Box::pin(async move {
                    let count: i64 = sqlx::query_scalar(&self.sql.backlog)
                        .bind(now)
                        .fetch_one(&self.pool)
                        .await
                        .map_err($crate::store::sql::store_error)?;
                    Ok(u64::try_from(count).unwrap_or(0))
                })
            }

            fn changes(
                &self,
            ) -> futures::future::BoxFuture<
                '_,
                msg_core::Result<Option<futures::stream::BoxStream<'static, ()>>>,
            > {
                Box::pin(self.listen())
            }

            fn poll_interval(&self) -> std::time::Duration {
                self.poll
            }
        }
    };
}
pub(crate) use sql_store;
