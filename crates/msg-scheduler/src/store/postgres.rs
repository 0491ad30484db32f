//! Schedules in PostgreSQL.
//!
//! A claim is one `UPDATE ... RETURNING` over rows picked with `FOR UPDATE
//! SKIP LOCKED`, so runners claiming at once never wait for each other nor
//! claim one schedule twice; the claim commits at once (the lease is a
//! column), so no transaction stays open while a runner publishes. A
//! trigger sends a `NOTIFY` on the channel `msg_schedules` when a schedule
//! becomes due sooner (made, rescheduled earlier, resumed): runners in
//! every process `LISTEN` and look again at once.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use msg_core::Result;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use super::sql::{Dialect, Sql, TABLE, sql_store, store_error};

/// Schedules in PostgreSQL, in the table `msg_schedules`.
#[derive(Debug)]
pub struct PgStore {
    pool: PgPool,
    sql: Sql,
    poll: Duration,
}

impl PgStore {
    const DOLLAR: bool = true;

    /// The store in `pool`'s database.
    pub fn new(pool: PgPool) -> Self {
        let t = TABLE;
        Self {
            pool,
            sql: Sql::new(Dialect {
                bytes: "BYTEA",
                int: "BIGINT",
                lock: "FOR UPDATE SKIP LOCKED",
                id_list: "SELECT unnest($2::text[])",
                dollar: Self::DOLLAR,
                extra: vec![
                    format!(
                        "CREATE OR REPLACE FUNCTION {t}_notify() RETURNS trigger AS $$
                         BEGIN PERFORM pg_notify('{t}', ''); RETURN NULL; END $$ LANGUAGE plpgsql"
                    ),
                    format!("DROP TRIGGER IF EXISTS {t}_inserted ON {t}"),
                    format!(
                        "CREATE TRIGGER {t}_inserted AFTER INSERT ON {t}
                         FOR EACH STATEMENT EXECUTE FUNCTION {t}_notify()"
                    ),
                    format!("DROP TRIGGER IF EXISTS {t}_sooner ON {t}"),
                    format!(
                        "CREATE TRIGGER {t}_sooner AFTER UPDATE ON {t} FOR EACH ROW
                         WHEN (NEW.claim IS NULL AND NOT NEW.paused
                               AND (NEW.wake_at < OLD.wake_at OR OLD.paused))
                         EXECUTE FUNCTION {t}_notify()"
                    ),
                ],
                migrate_lock: Some(format!(
                    "SELECT pg_advisory_xact_lock(hashtextextended('{t}:migrate', 0))"
                )),
            }),
            // The LISTEN tells of changes; the poll only covers a lost
            // notification connection.
            poll: Duration::from_secs(10),
        }
    }

    /// How long a runner sleeps at most when nothing is due sooner; by
    /// default 10 s. Runners hear of new schedules at once through
    /// `LISTEN`; this bounds the wait if that connection is lost.
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(1));
        self
    }

    async fn listen(&self) -> Result<Option<BoxStream<'static, ()>>> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(store_error)?;
        listener.listen(TABLE).await.map_err(store_error)?;
        // The listener reconnects by itself; an error in between is one
        // more reason to look at the table, not an end.
        Ok(Some(listener.into_stream().map(|_| ()).boxed()))
    }

    fn id_list(ids: Vec<String>) -> Vec<String> {
        ids
    }
}

sql_store!(PgStore);
