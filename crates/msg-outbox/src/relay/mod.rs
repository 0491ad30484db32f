//! [`Relay`]: publishes committed outbox rows through a [`Publisher`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use msg_core::{Error, Publisher, Result, Uuid};
use tokio::sync::{Notify, Semaphore, watch};

use crate::row::{ClaimedRow, now_millis};
use crate::store::{Failure, Outcome, Store};

mod running;

pub use running::RunningRelay;
use running::cleanup;

/// Publishes in flight per relay unless [`Relay::concurrency`] says
/// otherwise.
const DEFAULT_IN_FLIGHT: usize = 64;

/// The longest a running relay waits before it looks again while the
/// broker or the database cannot be reached: each look costs a claim and
/// one publish.
const TROUBLE_INTERVAL: Duration = Duration::from_secs(1);

/// Publishes an outbox's rows once their transaction committed, and marks
/// them sent only after the broker accepted them (at least once: a relay
/// that dies between the two publishes the row again, with the same
/// message id).
///
/// - Several relays may run at once, in one process or many: each claims
///   its batch (SQLite: a lease; PostgreSQL: key locks held by the claiming
///   transaction until the batch is recorded), so one pass never publishes
///   a row another pass holds.
/// - The rows of one message key are published in commit order, one at a
///   time; a row that fails holds back only the later rows of its key.
///   Rows without a key are published concurrently.
/// - A failed publish is tried again after a backoff; after
///   `max_attempts` tries, or at once for an error no retry can fix (the
///   broker refuses its size, say), the row moves to the failed state with
///   the reason, where [`Outbox::failed`](crate::Outbox::failed) shows it.
///   A failed row no longer holds back its key.
/// - A broker that cannot be reached (a lost connection, a timeout,
///   backpressure, a closed publisher) fails no row and costs none of
///   them a try or a backoff, however long it lasts: the pass stops
///   publishing at the first such error and puts its rows back as they
///   were, and a running relay looks again every `poll_interval` until the
///   broker is back. Its rows then go out at once, in order.
#[derive(Debug)]
pub struct Relay<P> {
    store: Store,
    wake: Arc<Notify>,
    publisher: Arc<P>,
    /// Names this relay's leases.
    owner: String,
    batch_size: usize,
    /// Publishes in flight across the relay's workers: a worker busy with
    /// the database leaves its share to the others.
    in_flight: Arc<Semaphore>,
    workers: usize,
    max_attempts: u32,
    min_backoff: Duration,
    max_backoff: Duration,
    retention: Duration,
    lease: Duration,
    poll_interval: Duration,
    shutdown_timeout: Duration,
    #[cfg(feature = "metrics")]
    metrics: Option<crate::metrics::TableMetrics>,
    #[cfg(feature = "metrics")]
    stats_interval: Duration,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PassReport {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows the broker accepted.
    pub published: usize,
    /// Rows whose publish failed and will be tried again.
    pub retrying: usize,
    /// Rows moved to the failed state.
    pub failed: usize,
    /// Whether the broker could not be reached: the pass stopped
    /// publishing there and put the rows it had not published back, as
    /// they were.
    pub broker_unreachable: bool,
}

impl<P: Publisher> Relay<P> {
    pub(crate) fn new(store: Store, wake: Arc<Notify>, publisher: P) -> Self {
        Self {
            store,
            wake,
            publisher: Arc::new(publisher),
            owner: Uuid::new_v4().to_string(),
            batch_size: 100,
            in_flight: Arc::new(Semaphore::new(DEFAULT_IN_FLIGHT)),
            workers: 2,
            max_attempts: 10,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            retention: Duration::ZERO,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(30),
            #[cfg(feature = "metrics")]
            metrics: None,
            #[cfg(feature = "metrics")]
            stats_interval: Duration::from_secs(10),
        }
    }

    /// Records the relay's work in `metrics` (feature `metrics`).
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, metrics: &crate::OutboxMetrics) -> Self {
        self.metrics = Some(metrics.table(self.store.table().name()));
        self
    }

    /// How often a running relay with metrics reads the table's counts
    /// (pending, failed, oldest pending) into them (default 10 s): a count
    /// over the table's pending rows, so not too often on a large one.
    #[cfg(feature = "metrics")]
    pub fn stats_interval(mut self, interval: Duration) -> Self {
        self.stats_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Rows claimed per pass (default 100).
    pub fn batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// Publishes waiting for the broker at once, across the relay's
    /// workers (default 64). Rows of one key are never among them
    /// together.
    pub fn concurrency(mut self, publishes: usize) -> Self {
        self.in_flight = Arc::new(Semaphore::new(publishes.clamp(1, Semaphore::MAX_PERMITS)));
        self
    }

    /// Passes a running relay makes at once (default 2): while one
    /// claims or records its batch, another publishes, with all of the
    /// relay's `concurrency`, so the database's time overlaps the
    /// broker's. Each is a relay of its own for the claims (and on
    /// PostgreSQL holds a connection while it publishes).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Tries of a row before it moves to the failed state (default 10);
    /// tries that found the broker unreachable do not count.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The backoff of a row the broker refused: `min` after the first
    /// refusal, doubling up to `max` (default 1 s to 5 min). Only the row's
    /// key waits it out. (While the broker cannot be reached, no row waits
    /// a backoff; the relay waits between passes, see `poll_interval`.)
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }

    /// How long sent rows are kept (default zero: deleted as they are
    /// sent). Kept rows are deleted by a cleanup beside the relay.
    pub fn retention(mut self, keep: Duration) -> Self {
        self.retention = keep;
        self
    }

    /// SQLite: how long a claim holds its rows (default 30 s). A relay
    /// that dies leaves its rows to others after this; a pass that takes
    /// longer may see its rows published twice. (PostgreSQL holds claims
    /// with the claiming transaction, which ends with the relay.)
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(1));
        self
    }

    /// How often to look for rows when nothing wakes the relay (default
    /// 1 s). Enqueues in this process wake it at once, and on PostgreSQL
    /// enqueues anywhere do (`LISTEN`/`NOTIFY`), unless the table's
    /// outbox was migrated with `Outbox::notify(false)`: then this is how
    /// soon other processes' rows are found. While the broker or the
    /// database cannot be reached, a running relay looks again at this
    /// interval, or every second if that is sooner, and nothing else wakes
    /// it.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long [`RunningRelay::shutdown`] waits for the passes in flight
    /// (default 30 s). Past it, they are abandoned: their rows are
    /// published again by the next relay (PostgreSQL: at once; SQLite:
    /// once their lease expired), with the same ids.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Claims one batch, publishes it and records the outcome.
    ///
    /// The claim and the record are `debug` spans (`outbox claim`, `outbox
    /// record`, with the table and the counts). The publishes are in
    /// neither: a publish continues the trace of the transaction that
    /// enqueued its message (see `TracedPublisher`), not the relay's.
    pub async fn run_once(&self) -> Result<PassReport> {
        // The spans time the store's calls without being entered: sqlx's
        // SQLite worker keeps the current span of a command until the
        // connection's next command, which would stretch them by as much.
        let table = self.store.table().name();
        let claiming = tracing::debug_span!("outbox claim", table, claimed = tracing::field::Empty);
        let claim = self
            .store
            .claim(&self.owner, self.batch_size, self.lease)
            .await?;
        claiming.record("claimed", claim.rows.len());
        drop(claiming);
        let mut report = PassReport {
            claimed: claim.rows.len(),
            ..PassReport::default()
        };
        // Publishes that found the broker away: once one did, the others
        // stop before their next publish.
        let unreachable = AtomicUsize::new(0);
        let outcomes: Vec<Outcome> = futures::stream::iter(by_key(claim.rows))
            .map(|rows| self.publish_in_order(rows, &unreachable))
            // The semaphore bounds the publishes; the runs only wait.
            .buffer_unordered(usize::MAX)
            .collect()
            .await;
        let mut outcome = Outcome::default();
        for o in outcomes {
            outcome.sent.extend(o.sent);
            outcome.failed.extend(o.failed);
            outcome.released.extend(o.released);
        }
        let unreachable = unreachable.into_inner();
        report.published = outcome.sent.len();
        report.failed = outcome.failed.iter().filter(|f| f.gave_up).count();
        report.retrying = outcome.failed.len() - report.failed + unreachable;
        report.broker_unreachable = unreachable > 0;
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            metrics.published.inc_by(report.published as u64);
            metrics.retried.inc_by(report.retrying as u64);
            metrics.failed.inc_by(report.failed as u64);
        }
        let recording = tracing::debug_span!(
            "outbox record",
            table,
            published = report.published,
            retrying = report.retrying,
            failed = report.failed,
        );
        self.store
            .finish(claim.hold, outcome, !self.retention.is_zero())
            .await?;
        drop(recording);
        Ok(report)
    }

    /// Publishes one key's rows in order, stopping at the first failure, or
    /// before the next publish once any publish of the pass found the
    /// broker away (`unreachable` counts those).
    async fn publish_in_order(&self, rows: Vec<ClaimedRow>, unreachable: &AtomicUsize) -> Outcome {
        let mut outcome = Outcome::default();
        let mut rows = rows.into_iter();
        while let Some(mut row) = rows.next() {
            // Never closed, so a permit always comes.
            let _permit = self.in_flight.acquire().await;
            if unreachable.load(Ordering::Relaxed) > 0 {
                outcome.released.push(row.seq);
                outcome.released.extend(rows.map(|r| r.seq));
                break;
            }
            let published = match row.take_message() {
                Ok((message, options)) => self
                    .publisher
                    .publish_with(&row.topic, message, options)
                    .await
                    .map(drop),
                Err(e) => Err(e),
            };
            match published {
                Ok(()) => {
                    #[cfg(feature = "metrics")]
                    if let Some(metrics) = &self.metrics {
                        let lag = (now_millis() - row.enqueued_at).max(0);
                        metrics.lag.observe(lag as f64 / 1_000.0);
                    }
                    outcome.sent.push(row.seq);
                }
                Err(error) if is_unreachable(&error) => {
                    // The broker is away: nothing is known about the row,
                    // so it goes back untouched (no try counted, no
                    // backoff), to go out as soon as the broker is back.
                    if unreachable.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(topic = %row.topic, error = %error.chain(), "the broker cannot be reached; the outbox relay stops this pass");
                    }
                    outcome.released.push(row.seq);
                    outcome.released.extend(rows.map(|r| r.seq));
                    break;
                }
                Err(error) => {
                    outcome.failed.push(self.failure(&row, &error));
                    // Later rows of the key wait for this one.
                    outcome.released.extend(rows.map(|r| r.seq));
                    break;
                }
            }
        }
        outcome
    }

    fn failure(&self, row: &ClaimedRow, error: &Error) -> Failure {
        let attempts = row.attempts + 1;
        let gave_up = !error.is_retryable() || attempts >= i64::from(self.max_attempts);
        let backoff = self
            .min_backoff
            .saturating_mul(2u32.saturating_pow(u32::try_from(attempts - 1).unwrap_or(u32::MAX)))
            .min(self.max_backoff);
        let chain = error.chain();
        if gave_up {
            tracing::warn!(id = %row.id, topic = %row.topic, attempts, error = %chain, "outbox row failed: kept in the failed state");
        } else {
            tracing::debug!(id = %row.id, topic = %row.topic, attempts, ?backoff, error = %chain, "publishing an outbox row failed; trying again later");
        }
        Failure {
            seq: row.seq,
            attempts,
            next_attempt_at: now_millis()
                .saturating_add(i64::try_from(backoff.as_millis()).unwrap_or(i64::MAX)),
            gave_up,
            error: chain,
        }
    }

    /// Runs the relay (and, with a retention, the cleanup of sent rows) in
    /// the background until [`RunningRelay::shutdown`].
    pub fn start(self) -> RunningRelay {
        let (stop, stopped) = watch::channel(false);
        let cleanup = (!self.retention.is_zero())
            .then(|| tokio::spawn(cleanup(self.store.clone(), self.retention, stopped.clone())));
        let relay = Arc::new(self);
        let workers = (0..relay.workers)
            .map(|worker| tokio::spawn(relay.clone().run(worker, stopped.clone())))
            .collect();
        RunningRelay {
            stop,
            workers,
            cleanup,
            timeout: relay.shutdown_timeout,
        }
    }

    #[cfg_attr(
        not(any(feature = "postgres", feature = "metrics")),
        allow(unused_variables)
    )]
    async fn run(self: Arc<Self>, worker: usize, mut stopped: watch::Receiver<bool>) {
        // One listener per relay: the first worker wakes the others.
        #[cfg(feature = "postgres")]
        let mut listener = match &self.store {
            Store::Postgres(store) if worker == 0 => store.listen().await,
            #[allow(unreachable_patterns)]
            _ => None,
        };
        // After a wake-up, the enqueuing transaction may not have committed
        // yet: look again shortly, a few times, before the regular polling.
        let mut soon: VecDeque<Duration> = VecDeque::new();
        // Whether the last pass found the broker or the database away.
        let mut trouble = false;
        #[cfg(feature = "metrics")]
        let mut stats_due = tokio::time::Instant::now();
        loop {
            if *stopped.borrow() {
                break;
            }
            #[cfg(feature = "metrics")]
            if worker == 0
                && let Some(metrics) = &self.metrics
                && tokio::time::Instant::now() >= stats_due
            {
                stats_due = tokio::time::Instant::now() + self.stats_interval;
                match self.store.stats().await {
                    Ok(stats) => metrics.stats(&stats),
                    Err(e) => {
                        tracing::debug!(error = %e.chain(), "reading the outbox's counts failed")
                    }
                }
            }
            let pass = self.run_once().await;
            if let Err(error) = &pass {
                tracing::warn!(error = %error.chain(), "outbox relay pass failed; trying again");
            }
            let was_in_trouble = std::mem::replace(
                &mut trouble,
                pass.as_ref()
                    .map_or(true, |report| report.broker_unreachable),
            );
            if was_in_trouble && !trouble {
                tracing::info!("the outbox relay's passes go through again");
            }
            let wait = match pass {
                // While the broker or the database is away, look again
                // every second at most, whatever wakes the relay.
                _ if trouble => self.poll_interval.min(TROUBLE_INTERVAL),
                // A full batch that went somewhere: the next one at once.
                // One whose every row waits out a backoff is not followed
                // at once, whatever the backoff.
                Ok(report)
                    if report.claimed == self.batch_size
                        && report.published + report.failed > 0 =>
                {
                    continue;
                }
                _ => soon.pop_front().unwrap_or(self.poll_interval),
            };
            #[cfg(feature = "postgres")]
            let notified = async {
                let Some(listener) = listener.as_mut() else {
                    return std::future::pending().await;
                };
                loop {
                    match listener.recv().await {
                        // Drained, not acted on: the listener keeps what
                        // is not received, without a bound, for as long
                        // as an outage lasts.
                        Ok(_) if trouble => {}
                        Ok(_) => return self.wake.notify_waiters(),
                        Err(e) => {
                            // It reconnects on the next call; until then
                            // the relay polls, rather than spinning on
                            // the error.
                            tracing::debug!(error = %e, "outbox listener lost its connection");
                            return std::future::pending::<()>().await;
                        }
                    }
                }
            };
            #[cfg(not(feature = "postgres"))]
            let notified = std::future::pending::<()>();
            tokio::select! {
                _ = stopped.changed() => break,
                () = self.wake.notified(), if !trouble => {
                    soon = [5, 20, 100, 500].map(Duration::from_millis).into();
                }
                () = notified => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Whether a failed publish says the broker cannot be reached (or takes no
/// more), rather than anything about the message: a lost connection, a
/// timeout, backpressure, a publisher closed before the relay was. However
/// long an outage lasts, it must not move every pending row to the failed
/// state (and let later rows of their keys overtake them), nor leave them
/// waiting out backoffs grown during it once the broker is back.
fn is_unreachable(error: &Error) -> bool {
    matches!(
        error,
        Error::Connection(_) | Error::Timeout { .. } | Error::Backpressure | Error::Closed
    )
}

/// The claimed rows as runs to publish: one per key (in order), and one
/// per row without a key; in the order of their first row.
fn by_key(rows: Vec<ClaimedRow>) -> Vec<Vec<ClaimedRow>> {
    let mut runs: Vec<Vec<ClaimedRow>> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for row in rows {
        match &row.key {
            Some(key) => match by_key.get(key) {
                Some(&run) => runs[run].push(row),
                None => {
                    by_key.insert(key.clone(), runs.len());
                    runs.push(vec![row]);
                }
            },
            None => runs.push(vec![row]),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64, key: Option<&str>) -> ClaimedRow {
        ClaimedRow {
            seq,
            id: Uuid::now_v7().to_string(),
            topic: "t".into(),
            key: key.map(Into::into),
            headers: "[]".into(),
            payload: vec![],
            deliver_at: None,
            ttl_ms: None,
            reply_to: None,
            attempts: 0,
            enqueued_at: 0,
        }
    }

    #[test]
    fn rows_run_by_key_in_order_and_alone_without_one() {
        let runs = by_key(vec![
            row(1, Some("a")),
            row(2, None),
            row(3, Some("b")),
            row(4, Some("a")),
            row(5, None),
            row(6, Some("b")),
        ]);
        let seqs: Vec<Vec<i64>> = runs
            .iter()
            .map(|run| run.iter().map(|r| r.seq).collect())
            .collect();
        assert_eq!(seqs, [vec![1, 4], vec![2], vec![3, 6], vec![5]]);
    }
}
