//! The outbox in PostgreSQL.
//!
//! Two PostgreSQL facts shape it:
//! - A `BIGSERIAL` is taken at insert, not at commit: a row with a smaller
//!   `seq` can become visible after a larger one was published. Each row
//!   records the inserting transaction (`txid`), and the relay only takes
//!   rows whose transaction is older than every transaction still running
//!   (`txid < pg_snapshot_xmin(pg_current_snapshot())`): no row that sorts
//!   before them can still appear. Rows go out in `(txid, seq)` order. A
//!   long transaction anywhere in the cluster holds the relay back for as
//!   long as it runs.
//! - A claim is a transaction: the relay takes a transaction-scoped
//!   advisory lock per message key (and per block of
//!   [`KEYLESS_BLOCK`] rows without a key), publishes, records what it
//!   published and commits. Other relays skip the locked keys and blocks;
//!   a relay that dies loses its connection, which ends the transaction
//!   and frees them at once. A lock per keyless row cost the database
//!   more than the rest of the claim (taking and releasing 500 locks in
//!   the shared lock table); a block's later rows take the lock the claim
//!   already holds, which costs nothing shared.
//! - A claim reads its candidates before it locks them (one statement, one
//!   snapshot), so a row another claim published and recorded in between
//!   still looks pending there. A key's rows are therefore read again
//!   after its lock, and the rows without a key are looked up again by
//!   place: only those still pending are published. Without that, two
//!   workers of one relay published some rows twice.
//! - The claim records its batch by the rows' physical places (`ctid`),
//!   read in the same transaction: deleting 500 rows by `ctid` reads no
//!   index, by `seq` it walks the primary key 500 times. No one else
//!   changes a claimed row (its lock is held; the other writers touch
//!   only failed or sent rows), and the claim's own table lock keeps
//!   `VACUUM FULL` from moving it; a row changed by hand all the same is
//!   left pending and published again, which at least once allows.
//! - The record does not wait for its commit to reach the disk
//!   (`synchronous_commit = off`, for the claim's transaction only): if
//!   PostgreSQL itself crashes, the last records may be lost, and their
//!   rows are published again with the same ids, which at least once
//!   allows; the relay no longer waits a flush per batch.
//!
//! - A queue table's statistics are rarely right: a new table has none,
//!   and a backlog grows faster than autovacuum analyzes. Estimating a few
//!   rows, the planner reads every pending row and sorts them, per claim
//!   (0.7 s a claim over 20,000 keyed rows here, against 1.5 ms). A claim
//!   therefore plans without bitmap and sequential scans: it walks the
//!   pending index in order and stops at its batch, whatever the
//!   statistics say.
//!
//! Inserts fire a trigger that `NOTIFY`s the table's channel at commit,
//! which wakes relays listening anywhere.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use msg_core::{Result, Uuid};
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::row::{ClaimedRow, NewRow, now_millis};
use crate::store::{
    Claim, FailedRow, Hold, INSERT_COLUMNS, OutboxStats, Outcome, bind_new_row, claimed,
    failed_row, stats, store_error,
};
use crate::table::Table;

/// The SQL, with the table's name in it, written once.
#[derive(Debug)]
struct Sql {
    table: Table,
    channel: String,
    /// The schema's versions, oldest first (see `schema`).
    migrate: Vec<Vec<String>>,
    /// The insert trigger that `NOTIFY`s at commit, made or dropped by
    /// every migrate as the outbox says (not a schema version: a setting).
    notify_on: Vec<String>,
    notify_off: String,
    insert: String,
    candidates: String,
    keyless: String,
    rows: String,
    mark_sent: String,
    delete_sent_now: String,
    fail: String,
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
        let channel = table.derived("enqueued");
        let notify = table.derived("notify");
        // Rows whose transaction may still be followed by earlier ones are
        // not ready.
        let settled = "txid < pg_snapshot_xmin(pg_current_snapshot())";
        Self {
            migrate: vec![vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {t} (
                        seq BIGSERIAL PRIMARY KEY,
                        txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
                        id TEXT NOT NULL,
                        topic TEXT NOT NULL,
                        msg_key TEXT,
                        headers TEXT NOT NULL,
                        payload BYTEA NOT NULL,
                        deliver_at BIGINT,
                        ttl_ms BIGINT,
                        reply_to TEXT,
                        enqueued_at BIGINT NOT NULL,
                        state TEXT NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending', 'sent', 'failed')),
                        attempts BIGINT NOT NULL DEFAULT 0,
                        next_attempt_at BIGINT NOT NULL DEFAULT 0,
                        last_error TEXT,
                        sent_at BIGINT
                    )"
                ),
                format!(
                    "CREATE INDEX IF NOT EXISTS {pending} ON {t} (txid, seq) WHERE state = 'pending'"
                ),
                format!(
                    "CREATE INDEX IF NOT EXISTS {by_key} ON {t} (msg_key, txid, seq) \
                     WHERE state = 'pending' AND msg_key IS NOT NULL"
                ),
                format!("CREATE INDEX IF NOT EXISTS {sent} ON {t} (sent_at) WHERE state = 'sent'"),
            ]],
            notify_on: vec![
                format!(
                    "CREATE OR REPLACE FUNCTION {notify}() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN PERFORM pg_notify('{channel}', ''); RETURN NULL; END $$"
                ),
                format!(
                    "CREATE OR REPLACE TRIGGER {notify} AFTER INSERT ON {t}
                     FOR EACH STATEMENT EXECUTE FUNCTION {notify}()"
                ),
            ],
            notify_off: format!("DROP TRIGGER IF EXISTS {notify} ON {t}"),
            insert: format!(
                "INSERT INTO {t} ({INSERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ),
            // Due rows, oldest first, whose key has no earlier row waiting
            // out a backoff (which holds the key back), each taken with a
            // transaction-scoped advisory lock on its key (or on its block,
            // without a key; the two-key form keeps blocks apart from keys
            // and from the bigint locks other programs take); rows whose
            // lock another claim holds are
            // skipped, so that concurrent claims take different rows. The
            // locks are tried in order over a window of the oldest rows
            // (the inner LIMIT), and only until the batch is full. No row
            // lock: the claim takes no transaction id before it records
            // its batch, so it holds back no other relay's view of what
            // committed (see `settled`). A key's rows are read again after
            // its lock (see `rows`), so only the key is needed here.
            candidates: format!(
                "SELECT c.* FROM (
                    SELECT o.seq, o.txid::text::bigint AS txid, o.ctid::text AS ctid, o.id,
                           o.topic, o.msg_key, o.headers,
                           CASE WHEN o.msg_key IS NULL THEN o.payload END AS payload,
                           o.deliver_at, o.ttl_ms, o.reply_to, o.attempts, o.enqueued_at
                    FROM {t} o
                    WHERE o.state = 'pending' AND o.next_attempt_at <= $1 AND o.{settled}
                      AND (o.msg_key IS NULL OR NOT EXISTS (
                        SELECT 1 FROM {t} p
                        WHERE p.msg_key = o.msg_key AND p.state = 'pending'
                          AND p.next_attempt_at > $1 AND (p.txid, p.seq) < (o.txid, o.seq)))
                    ORDER BY o.txid, o.seq LIMIT $3) c
                 WHERE CASE WHEN c.msg_key IS NULL
                    THEN pg_try_advisory_xact_lock(hashtext('{t}'),
                        ((c.seq / {KEYLESS_BLOCK}) % 2147483647)::int4)
                    ELSE pg_try_advisory_xact_lock(hashtextextended('{t}:key:' || c.msg_key, 0))
                 END
                 LIMIT $2"
            ),
            // Which of the rows without a key this claim locked are still
            // pending, by place, looked at after the locks: the
            // candidates' snapshot was taken before them, so a row another
            // claim published and recorded while this one locked it still
            // looked pending there. A row deleted or changed since has no
            // version at its old place that this statement sees; one that
            // is still there is as the candidates read it.
            keyless: format!(
                "SELECT seq FROM {t} WHERE ctid = ANY($1::text[]::tid[]) AND state = 'pending'"
            ),
            // Every pending row of the keys this claim holds, in order, up
            // to the last candidate (`$2`, `$3`: its txid and seq), read
            // after the locks were taken, so it sees what the claim that
            // held them last recorded. The bound keeps it within what the
            // candidates walked, whichever index the plan takes: with the
            // statistics of a few busy keys, a generic plan walks the
            // pending index, and without the bound it would read the whole
            // backlog whenever the claim's keys have fewer rows than it
            // asks for.
            rows: format!(
                "SELECT seq, ctid::text AS ctid, id, topic, msg_key, headers, payload, deliver_at,
                        ttl_ms, reply_to, attempts, next_attempt_at, enqueued_at
                 FROM {t}
                 WHERE state = 'pending' AND {settled} AND msg_key = ANY($1)
                   AND (txid, seq) <= ($2::text::xid8, $3)
                 ORDER BY txid, seq"
            ),
            // By place: see the module's documentation.
            mark_sent: format!(
                "UPDATE {t} SET state = 'sent', sent_at = $1 WHERE ctid = ANY($2::text[]::tid[])"
            ),
            delete_sent_now: format!("DELETE FROM {t} WHERE ctid = ANY($1::text[]::tid[])"),
            fail: format!(
                "UPDATE {t} AS t SET attempts = f.attempts, next_attempt_at = f.next_attempt_at,
                    last_error = f.error,
                    state = CASE WHEN f.gave_up THEN 'failed' ELSE 'pending' END
                 FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bool[], $5::text[])
                    AS f(seq, attempts, next_attempt_at, gave_up, error)
                 WHERE t.seq = f.seq"
            ),
            delete_sent: format!(
                "DELETE FROM {t} WHERE seq IN (
                    SELECT seq FROM {t} WHERE state = 'sent' AND sent_at < $1 LIMIT $2)"
            ),
            stats: format!(
                "SELECT
                    count(*) FILTER (WHERE state = 'pending') AS pending,
                    count(*) FILTER (WHERE state = 'failed') AS failed,
                    count(*) FILTER (WHERE state = 'sent') AS sent,
                    min(enqueued_at) FILTER (WHERE state = 'pending') AS oldest
                 FROM {t}"
            ),
            failed: format!(
                "SELECT id, topic, attempts, last_error, enqueued_at FROM {t}
                 WHERE state = 'failed' ORDER BY seq LIMIT $1"
            ),
            requeue: format!(
                "UPDATE {t} SET state = 'pending', attempts = 0, next_attempt_at = 0,
                    last_error = NULL
                 WHERE id = $1 AND state = 'failed'"
            ),
            channel,
            table,
        }
    }
}

/// Begins a claim's transaction, in the `BEGIN`'s round trip: its queries
/// read the indexes in order, and its commit does not wait for the disk
/// (see the module's documentation). Its statements also use their
/// generic plans, made once per connection: planned again for each call
/// with the batch's 500 places or seqs as constants, they cost the
/// database more than running them (about 2.5 µs a row in the benchmark).
const BEGIN_CLAIM: &str = "BEGIN; SET LOCAL enable_bitmapscan = off; \
    SET LOCAL enable_seqscan = off; SET LOCAL synchronous_commit = off; \
    SET LOCAL plan_cache_mode = force_generic_plan";

/// Rows without a key are locked in blocks of this many consecutive `seq`s.
const KEYLESS_BLOCK: i64 = 64;

/// What the scan of a claim found: a row without a key (its `seq`), or a
/// key.
enum Candidate {
    Row(i64),
    Key(String),
}

/// An outbox table in a PostgreSQL database.
#[derive(Debug, Clone)]
pub(crate) struct PgStore {
    pool: PgPool,
    sql: Arc<Sql>,
    /// Whether `migrate` gives the table its `NOTIFY` trigger.
    notify: bool,
}

impl PgStore {
    pub(crate) fn new(pool: PgPool, table: Table) -> Self {
        Self {
            pool,
            sql: Arc::new(Sql::new(table)),
            notify: true,
        }
    }

    /// The same store (pool and settings) on another table.
    pub(crate) fn renamed(&self, table: Table) -> Self {
        Self {
            sql: Arc::new(Sql::new(table)),
            ..self.clone()
        }
    }

    pub(crate) fn set_notify(&mut self, on: bool) {
        self.notify = on;
    }

    pub(crate) fn table(&self) -> &Table {
        &self.sql.table
    }

    pub(crate) async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        // Two processes creating the same table at once would collide.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("{}:migrate", self.sql.table.name()))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        crate::schema::upgrade::<sqlx::Postgres>(&mut tx, &self.sql.table, &self.sql.migrate)
            .await?;
        let notify = if self.notify {
            self.sql.notify_on.clone()
        } else {
            vec![self.sql.notify_off.clone()]
        };
        for statement in &notify {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)
    }

    pub(crate) async fn insert(&self, conn: &mut sqlx::PgConnection, row: &NewRow) -> Result<()> {
        bind_new_row(sqlx::query(&self.sql.insert), row)
            .execute(conn)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    pub(crate) async fn claim(&self, batch: usize) -> Result<Claim> {
        use sqlx::Row;
        let now = now_millis();
        let limit = i64::try_from(batch).unwrap_or(i64::MAX);
        let mut tx = self
            .pool
            .begin_with(BEGIN_CLAIM)
            .await
            .map_err(store_error)?;
        // The window holds the batches of a few other claims in flight.
        let found = sqlx::query(&self.sql.candidates)
            .bind(now)
            .bind(limit)
            .bind(limit.saturating_mul(4))
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?;
        let mut candidates = Vec::with_capacity(found.len());
        let mut keyless = HashMap::new();
        let mut places = HashMap::with_capacity(found.len());
        let mut keys = HashSet::new();
        // The last candidate's (txid, seq): where the scan stopped.
        let mut last = (0_i64, 0_i64);
        for row in &found {
            last = last.max((
                row.try_get("txid").map_err(store_error)?,
                row.try_get("seq").map_err(store_error)?,
            ));
            match row.try_get::<Option<String>, _>("msg_key") {
                Ok(None) => {
                    let place: String = row.try_get("ctid").map_err(store_error)?;
                    let row = claimed(row)?;
                    candidates.push(Candidate::Row(row.seq));
                    places.insert(row.seq, place);
                    keyless.insert(row.seq, row);
                }
                Ok(Some(key)) => {
                    if keys.insert(key.clone()) {
                        candidates.push(Candidate::Key(key));
                    }
                }
                Err(e) => return Err(store_error(e)),
            }
        }
        // The rows without a key that are still pending now that they are
        // locked; the others are left out.
        if !keyless.is_empty() {
            let pending: HashSet<i64> = sqlx::query_scalar(&self.sql.keyless)
                .bind(
                    keyless
                        .keys()
                        .filter_map(|seq| places.get(seq).map(String::as_str))
                        .collect::<Vec<_>>(),
                )
                .fetch_all(&mut *tx)
                .await
                .map_err(store_error)?
                .into_iter()
                .collect();
            keyless.retain(|seq, _| pending.contains(seq));
        }
        // Every pending row of a locked key, in order: its first rows may
        // not be among the candidates (another claim's window held them).
        let mut runs: HashMap<String, Vec<ClaimedRow>> = HashMap::new();
        if !keys.is_empty() {
            let keys: Vec<String> = keys.into_iter().collect();
            let keyed = sqlx::query(&self.sql.rows)
                .bind(&keys)
                .bind(last.0.to_string())
                .bind(last.1)
                .fetch_all(&mut *tx)
                .await
                .map_err(store_error)?;
            // A key's rows stop at its first one not due (waiting out a
            // backoff): the later ones wait for it.
            let mut held_back = HashSet::new();
            for row in &keyed {
                let due: i64 = row.try_get("next_attempt_at").map_err(store_error)?;
                let place: String = row.try_get("ctid").map_err(store_error)?;
                let row = claimed(row)?;
                let key = row.key.clone().expect("rows of a key");
                if held_back.contains(&key) || due > now {
                    held_back.insert(key);
                    continue;
                }
                places.insert(row.seq, place);
                runs.entry(key).or_default().push(row);
            }
        }
        // The candidates' order, each key's run where the key first shows;
        // a row without a key that is gone since is left out.
        let mut rows = Vec::with_capacity(found.len());
        for candidate in candidates {
            match candidate {
                Candidate::Row(seq) => rows.extend(keyless.remove(&seq)),
                Candidate::Key(key) => rows.extend(runs.remove(&key).into_iter().flatten()),
            }
        }
        Ok(Claim {
            rows,
            hold: Hold::Transaction { tx, places },
        })
    }

    /// Records `outcome` in the claim's transaction `tx` and commits;
    /// `places` has the `ctid` of each claimed row, by `seq`.
    pub(crate) async fn finish(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        places: HashMap<i64, String>,
        outcome: Outcome,
        keep_sent: bool,
    ) -> Result<()> {
        if !outcome.sent.is_empty() {
            // Every sent row came from this claim, so each has its place.
            let sent: Vec<&str> = outcome
                .sent
                .iter()
                .filter_map(|seq| places.get(seq).map(String::as_str))
                .collect();
            let query = if keep_sent {
                sqlx::query(&self.sql.mark_sent)
                    .bind(now_millis())
                    .bind(sent)
            } else {
                sqlx::query(&self.sql.delete_sent_now).bind(sent)
            };
            query.execute(&mut *tx).await.map_err(store_error)?;
        }
        if !outcome.failed.is_empty() {
            let f = &outcome.failed;
            sqlx::query(&self.sql.fail)
                .bind(f.iter().map(|f| f.seq).collect::<Vec<_>>())
                .bind(f.iter().map(|f| f.attempts).collect::<Vec<_>>())
                .bind(f.iter().map(|f| f.next_attempt_at).collect::<Vec<_>>())
                .bind(f.iter().map(|f| f.gave_up).collect::<Vec<_>>())
                .bind(f.iter().map(|f| f.error.clone()).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        // Released rows need nothing: committing frees their keys.
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

    /// A listener on the table's channel, or `None` (the relay polls) if
    /// it cannot listen.
    pub(crate) async fn listen(&self) -> Option<PgListener> {
        let listen = async {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen(&self.sql.channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listen.await {
            Ok(listener) => Some(listener),
            Err(e) => {
                tracing::warn!(error = %e, "the outbox relay cannot LISTEN; it polls instead");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan `statement` runs with, called with `args` (SQL literals),
    /// in a transaction begun with `begin`: with `BEGIN_CLAIM`, its
    /// generic plan, as the relay's prepared statements use it.
    async fn plan(store: &PgStore, begin: &str, statement: &str, args: &str) -> String {
        let mut tx = store.pool.begin_with(begin.to_owned()).await.unwrap();
        sqlx::raw_sql(&format!("PREPARE plan_check AS {statement}"))
            .execute(&mut *tx)
            .await
            .unwrap();
        let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN EXECUTE plan_check({args})"))
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        // A prepared statement outlives the transaction.
        sqlx::raw_sql("DEALLOCATE plan_check")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        plan.join("\n")
    }

    /// A claim's statements read only what they need over a backlog the
    /// planner has no statistics for (a new table, as autovacuum has not
    /// analyzed it yet) and over one it has: the candidates walk the
    /// pending index in order, a key's rows come from the key index, and
    /// rows are checked and recorded by place.
    #[tokio::test]
    async fn a_claim_reads_only_its_window_whatever_the_statistics() {
        let url = msg_testkit::BrokerEnv::get("postgres").url().to_owned();
        let pool = PgPool::connect(&url).await.unwrap_or_else(|e| {
            panic!("PostgreSQL at {url}: {e} (start it: cargo xtask brokers up postgres)")
        });
        let table = Table::new(&format!("plan_{}", Uuid::new_v4().simple())).unwrap();
        let store = PgStore::new(pool.clone(), table.clone());
        store.migrate().await.unwrap();
        sqlx::query(&format!(
            "INSERT INTO {} (id, topic, msg_key, headers, payload, enqueued_at)
             SELECT gen_random_uuid()::text, 't', CASE WHEN n % 2 = 0 THEN 'k' || (n % 100) END,
                    '[]', '\\x00', 0
             FROM generate_series(1, 20000) AS g(n)",
            table.name()
        ))
        .execute(&pool)
        .await
        .unwrap();
        let sql = &store.sql;
        let candidates = format!("{}, 500, 2000", now_millis());
        // Two keys, up to the 1,000th row, as a claim asks.
        let (txid, seq): (String, i64) = sqlx::query_as(&format!(
            "SELECT txid::text, seq FROM {} ORDER BY txid, seq OFFSET 999 LIMIT 1",
            table.name()
        ))
        .fetch_one(&pool)
        .await
        .unwrap();
        let rows_args = format!("ARRAY['k2', 'k4'], '{txid}', {seq}");

        // What the planner does on its own: reads and sorts the backlog.
        let unguided = plan(&store, "BEGIN", &sql.candidates, &candidates).await;
        assert!(
            unguided.contains("Sort"),
            "the planner no longer sorts a backlog it has no statistics for; \
             this test needs another way to reproduce the trap:\n{unguided}"
        );
        for analyzed in [false, true] {
            if analyzed {
                sqlx::query(&format!("ANALYZE {}", table.name()))
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            let claim = plan(&store, BEGIN_CLAIM, &sql.candidates, &candidates).await;
            assert!(
                !claim.contains("Sort") && !claim.contains("Bitmap") && !claim.contains("Seq Scan"),
                "a claim reads more than its window (analyzed: {analyzed}):\n{claim}"
            );
            assert!(
                claim.contains(&format!("Index Scan using {}", table.derived("pending"))),
                "{claim}"
            );
            let rows = plan(&store, BEGIN_CLAIM, &sql.rows, &rows_args).await;
            // From the key index, or from the pending index up to the
            // last candidate: not the backlog after it.
            let by_key = rows.contains(&format!("Index Scan using {}", table.derived("key")));
            let bounded = rows.contains(&format!("Index Scan using {}", table.derived("pending")))
                && rows
                    .lines()
                    .any(|l| l.contains("Index Cond") && l.contains("ROW(txid, seq) <="));
            assert!(
                by_key || bounded,
                "a claim reads more than its keys' rows (analyzed: {analyzed}):\n{rows}"
            );
            for (by_place, args) in [
                (&sql.keyless, "ARRAY['(0,1)']"),
                (&sql.delete_sent_now, "ARRAY['(0,1)']"),
                (&sql.mark_sent, "0, ARRAY['(0,1)']"),
            ] {
                let by_place = plan(&store, BEGIN_CLAIM, by_place, args).await;
                assert!(by_place.contains("Tid Scan"), "{by_place}");
            }
        }
        sqlx::query(&format!("DROP TABLE {}", table.name()))
            .execute(&pool)
            .await
            .unwrap();
    }
}
