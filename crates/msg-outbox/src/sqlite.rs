//! The outbox in SQLite.
//!
//! SQLite has one writer at a time, so rows commit in `seq` order and a
//! claim is one `UPDATE ... RETURNING` in a `BEGIN IMMEDIATE` transaction
//! (which waits for the writer lock rather than failing on a stale
//! snapshot). A claimed row carries a lease (its relay and an expiry): a
//! relay that dies leaves its rows to the next relay once the lease
//! expires.

use std::sync::Arc;
use std::time::Duration;

use msg_core::{Result, Uuid};
use sqlx::SqlitePool;

use crate::row::{NewRow, now_millis};
use crate::store::{
    Claim, FailedRow, Hold, INSERT_COLUMNS, OutboxStats, Outcome, bind_new_row, claimed,
    failed_row, stats, store_error,
};
use crate::table::Table;

/// The SQL, with the table's name in it, written once.
#[derive(Debug)]
struct Sql {
    table: Table,
    /// The schema's versions, oldest first (see `schema`).
    migrate: Vec<Vec<String>>,
    insert: String,
    claim: String,
    mark_sent: String,
    delete_sent_now: String,
    fail: String,
    release: String,
    delete_sent: String,
    stats: String,
    failed: String,
    requeue: String,
}

impl Sql {
    fn new(table: Table) -> Self {
        let t = table.name();
        let pending = table.derived("pending");
        let by_key = table.derived("key");
        let sent = table.derived("sent");
        Self {
            migrate: vec![vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {t} (
                        seq INTEGER PRIMARY KEY AUTOINCREMENT,
                        id TEXT NOT NULL,
                        topic TEXT NOT NULL,
                        msg_key TEXT,
                        headers TEXT NOT NULL,
                        payload BLOB NOT NULL,
                        deliver_at INTEGER,
                        ttl_ms INTEGER,
                        reply_to TEXT,
                        enqueued_at INTEGER NOT NULL,
                        state TEXT NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending', 'sent', 'failed')),
                        attempts INTEGER NOT NULL DEFAULT 0,
                        next_attempt_at INTEGER NOT NULL DEFAULT 0,
                        last_error TEXT,
                        sent_at INTEGER,
                        lease_owner TEXT,
                        lease_until INTEGER
                    )"
                ),
                format!(
                    "CREATE INDEX IF NOT EXISTS {pending} ON {t} (seq) WHERE state = 'pending'"
                ),
                format!(
                    "CREATE INDEX IF NOT EXISTS {by_key} ON {t} (msg_key, seq) \
                     WHERE state = 'pending' AND msg_key IS NOT NULL"
                ),
                format!("CREATE INDEX IF NOT EXISTS {sent} ON {t} (sent_at) WHERE state = 'sent'"),
            ]],
            insert: format!(
                "INSERT INTO {t} ({INSERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            // A row is claimable when it is due and not leased, and no
            // earlier row of its key is still pending and held back
            // (leased by a relay, or waiting out a backoff): a key's rows
            // go out in order, one relay at a time. The earlier rows of a
            // key that are free are claimed in the same batch, ahead of
            // it, since the batch is in `seq` order.
            claim: format!(
                "UPDATE {t} SET lease_owner = ?1, lease_until = ?2
                 WHERE seq IN (
                    SELECT o.seq FROM {t} o
                    WHERE o.state = 'pending' AND o.next_attempt_at <= ?3
                      AND (o.lease_until IS NULL OR o.lease_until < ?3)
                      AND (o.msg_key IS NULL OR NOT EXISTS (
                        SELECT 1 FROM {t} p
                        WHERE p.msg_key = o.msg_key AND p.seq < o.seq AND p.state = 'pending'
                          AND (p.next_attempt_at > ?3 OR p.lease_until >= ?3)))
                    ORDER BY o.seq LIMIT ?4)
                 RETURNING seq, id, topic, msg_key, headers, payload, deliver_at, ttl_ms,
                           reply_to, attempts, enqueued_at"
            ),
            mark_sent: format!(
                "UPDATE {t} SET state = 'sent', sent_at = ?1, lease_owner = NULL, lease_until = NULL
                 WHERE lease_owner = ?2 AND seq IN (SELECT value FROM json_each(?3))"
            ),
            delete_sent_now: format!(
                "DELETE FROM {t} WHERE lease_owner = ?1 AND seq IN (SELECT value FROM json_each(?2))"
            ),
            fail: format!(
                "UPDATE {t} SET attempts = ?1, next_attempt_at = ?2, last_error = ?3,
                    state = CASE WHEN ?4 THEN 'failed' ELSE 'pending' END,
                    lease_owner = NULL, lease_until = NULL
                 WHERE seq = ?5 AND lease_owner = ?6"
            ),
            release: format!(
                "UPDATE {t} SET lease_owner = NULL, lease_until = NULL
                 WHERE lease_owner = ?1 AND seq IN (SELECT value FROM json_each(?2))"
            ),
            delete_sent: format!(
                "DELETE FROM {t} WHERE seq IN (
                    SELECT seq FROM {t} WHERE state = 'sent' AND sent_at < ?1 LIMIT ?2)"
            ),
            stats: format!(
                "SELECT
                    COALESCE(SUM(state = 'pending'), 0) AS pending,
                    COALESCE(SUM(state = 'failed'), 0) AS failed,
                    COALESCE(SUM(state = 'sent'), 0) AS sent,
                    MIN(CASE WHEN state = 'pending' THEN enqueued_at END) AS oldest
                 FROM {t}"
            ),
            failed: format!(
                "SELECT id, topic, attempts, last_error, enqueued_at FROM {t}
                 WHERE state = 'failed' ORDER BY seq LIMIT ?1"
            ),
            requeue: format!(
                "UPDATE {t} SET state = 'pending', attempts = 0, next_attempt_at = 0,
                    last_error = NULL
                 WHERE id = ?1 AND state = 'failed'"
            ),
            table,
        }
    }
}

/// An outbox table in an SQLite database.
#[derive(Debug, Clone)]
pub(crate) struct SqliteStore {
    pool: SqlitePool,
    sql: Arc<Sql>,
}

impl SqliteStore {
    pub(crate) fn new(pool: SqlitePool, table: Table) -> Self {
        Self {
            pool,
            sql: Arc::new(Sql::new(table)),
        }
    }

    pub(crate) fn table(&self) -> &Table {
        &self.sql.table
    }

    /// The same store on another table.
    pub(crate) fn renamed(&self, table: Table) -> Self {
        Self::new(self.pool.clone(), table)
    }

    pub(crate) async fn migrate(&self) -> Result<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(store_error)?;
        crate::schema::upgrade::<sqlx::Sqlite>(&mut tx, &self.sql.table, &self.sql.migrate).await?;
        tx.commit().await.map_err(store_error)
    }

    pub(crate) async fn insert(
        &self,
        conn: &mut sqlx::SqliteConnection,
        row: &NewRow,
    ) -> Result<()> {
        bind_new_row(sqlx::query(&self.sql.insert), row)
            .execute(conn)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    pub(crate) async fn claim(&self, owner: &str, batch: usize, lease: Duration) -> Result<Claim> {
        let now = now_millis();
        let until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(store_error)?;
        let rows = sqlx::query(&self.sql.claim)
            .bind(owner)
            .bind(until)
            .bind(now)
            .bind(i64::try_from(batch).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        let mut rows = rows.iter().map(claimed).collect::<Result<Vec<_>>>()?;
        // RETURNING promises no order.
        rows.sort_by_key(|r| r.seq);
        Ok(Claim {
            rows,
            hold: Hold::Lease {
                owner: owner.to_owned(),
            },
        })
    }

    pub(crate) async fn finish(
        &self,
        owner: &str,
        outcome: Outcome,
        keep_sent: bool,
    ) -> Result<()> {
        let seqs = |seqs: &[i64]| serde_json::to_string(seqs).expect("numbers serialize");
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(store_error)?;
        if !outcome.sent.is_empty() {
            // A row whose lease this relay lost (it took longer than the
            // lease) is left to the relay that holds it now.
            let query = if keep_sent {
                sqlx::query(&self.sql.mark_sent)
                    .bind(now_millis())
                    .bind(owner)
                    .bind(seqs(&outcome.sent))
            } else {
                sqlx::query(&self.sql.delete_sent_now)
                    .bind(owner)
                    .bind(seqs(&outcome.sent))
            };
            query.execute(&mut *tx).await.map_err(store_error)?;
        }
        for failure in &outcome.failed {
            sqlx::query(&self.sql.fail)
                .bind(failure.attempts)
                .bind(failure.next_attempt_at)
                .bind(&failure.error)
                .bind(failure.gave_up)
                .bind(failure.seq)
                .bind(owner)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        if !outcome.released.is_empty() {
            sqlx::query(&self.sql.release)
                .bind(owner)
                .bind(seqs(&outcome.released))
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)
    }

    pub(crate) async fn delete_sent(&self, before: i64, limit: i64) -> Result<u64> {
        let done = sqlx::query(&self.sql.delete_sent)
            .bind(before)
            .bind(limit)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn stats(&self) -> Result<OutboxStats> {
        let row = sqlx::query(&self.sql.stats)
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)?;
        stats(&row)
    }

    pub(crate) async fn failed(&self, limit: i64) -> Result<Vec<FailedRow>> {
        let rows = sqlx::query(&self.sql.failed)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter().map(failed_row).collect()
    }

    pub(crate) async fn requeue(&self, id: Uuid) -> Result<bool> {
        let done = sqlx::query(&self.sql.requeue)
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }
}
