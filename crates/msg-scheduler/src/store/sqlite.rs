//! Schedules in SQLite: the embedded store (a file, no server).
//!
//! SQLite has one writer at a time, so each claim (one `UPDATE ...
//! RETURNING`) is atomic across the processes sharing the file. A runner
//! learns of schedules its own process makes at once; of those another
//! process makes, within the [poll interval](SqliteStore::with_poll_interval)
//! (1 s by default).

use std::time::Duration;

use futures::stream::BoxStream;
use msg_core::Result;
use sqlx::SqlitePool;

use super::sql::{Dialect, Sql, sql_store};

/// Schedules in an SQLite database, in the table `msg_schedules`.
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    sql: Sql,
    poll: Duration,
}

impl SqliteStore {
    const DOLLAR: bool = false;

    /// The store in `pool`'s database.
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            sql: Sql::new(Dialect {
                bytes: "BLOB",
                int: "INTEGER",
                lock: "",
                id_list: "SELECT value FROM json_each(?2)",
                dollar: Self::DOLLAR,
                extra: Vec::new(),
                // One writer at a time: migrations cannot collide.
                migrate_lock: None,
            }),
            poll: Duration::from_secs(1),
        }
    }

    /// How soon a runner notices a schedule another process made due
    /// sooner than anything it knew of; by default 1 s. Schedules made in
    /// the runner's own process are noticed at once.
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(1));
        self
    }

    async fn listen(&self) -> Result<Option<BoxStream<'static, ()>>> {
        Ok(None)
    }

    fn id_list(ids: Vec<String>) -> String {
        serde_json::Value::from(ids).to_string()
    }
}

sql_store!(SqliteStore);
