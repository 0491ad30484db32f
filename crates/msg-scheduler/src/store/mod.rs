//! What a scheduler asks of the place that keeps its schedules: for those
//! who add a store; users pick one of the stores here.
//!
//! Every store keeps, per schedule, its due time and a *wake* time: when
//! it is unclaimed the two are equal; a runner's claim moves the wake time
//! to the end of its lease. A runner claims what wakes at or before now, so
//! a schedule whose runner died is claimed again when its lease ends, with
//! the same due time.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use msg_core::{Result, Uuid};

use crate::schedule::{Filter, IfExists, Page, Schedule, ScheduleId};
use crate::when::Recurrence;

pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// One claim pass of a runner.
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    /// Now, in milliseconds since the Unix epoch: schedules waking at or
    /// before it are claimed.
    pub now: i64,
    /// The end of the lease: the claimed schedules wake again then, unless
    /// the runner finishes them first.
    pub lease_until: i64,
    /// Names this pass: only it may finish what it claimed.
    pub token: Uuid,
    /// The most schedules to claim, the earliest due first.
    pub limit: usize,
}

/// What becomes of a claimed schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// It is over (fired once, or its recurrence ended): removed.
    Remove,
    /// It fired (`fires` times) and is due again at this time.
    Due {
        /// The next due time, in milliseconds.
        at: i64,
        /// Fires made in this pass.
        fires: u32,
    },
    /// Its fire failed: unclaimed, same due time, tried again at this time.
    Retry(i64),
}

/// What a store must do. Every method is one atomic step of the store.
pub trait Store: Send + Sync + 'static {
    /// Creates what the store needs (tables, indexes); safe to run again.
    fn migrate(&self) -> BoxFuture<'_, Result<()>>;

    /// Stores `schedule`. A schedule with the same key is replaced (keeping
    /// its id) or kept, as `if_exists` says; the id stored is returned.
    fn insert(&self, schedule: Schedule, if_exists: IfExists) -> BoxFuture<'_, Result<ScheduleId>>;

    /// Removes the schedule; `Some(firing)` when there was one, saying
    /// whether a runner held it under a live lease at `now`.
    fn remove(&self, id: ScheduleId, now: i64) -> BoxFuture<'_, Result<Option<bool>>>;

    /// The schedule, with `firing` as of `now`.
    fn get(&self, id: ScheduleId, now: i64) -> BoxFuture<'_, Result<Option<Schedule>>>;

    /// A page of the schedules `filter` matches, in (due, id) order.
    fn list(&self, filter: Filter, now: i64) -> BoxFuture<'_, Result<Page>>;

    /// Gives the schedule a new due time and recurrence, and drops any
    /// claim on it (a fire in flight finishes without effect). Whether it
    /// existed.
    fn reschedule(
        &self,
        id: ScheduleId,
        due: i64,
        recurrence: Option<Recurrence>,
    ) -> BoxFuture<'_, Result<bool>>;

    /// Pauses or resumes the schedule. Whether it existed.
    fn set_paused(&self, id: ScheduleId, paused: bool) -> BoxFuture<'_, Result<bool>>;

    /// Claims unpaused schedules waking at or before `claim.now`.
    fn claim(&self, claim: Claim) -> BoxFuture<'_, Result<Vec<Schedule>>>;

    /// Records what became of schedules claimed by `token`; a schedule no
    /// longer claimed by it (cancelled, rescheduled, or claimed again after
    /// the lease ended) is left alone.
    fn finish(&self, token: Uuid, outcomes: Vec<(ScheduleId, Next)>) -> BoxFuture<'_, Result<()>>;

    /// The earliest wake time of an unpaused schedule.
    fn next_wake(&self) -> BoxFuture<'_, Result<Option<i64>>>;

    /// How many unpaused schedules are due at `now` and not being fired.
    fn backlog(&self, now: i64) -> BoxFuture<'_, Result<u64>>;

    /// A stream that yields when another process may have added an earlier
    /// schedule, where the store can tell (PostgreSQL's `LISTEN`); `None`
    /// when it cannot, and a runner then looks again after
    /// [`poll_interval`](Store::poll_interval) at the latest.
    fn changes(&self) -> BoxFuture<'_, Result<Option<BoxStream<'static, ()>>>> {
        Box::pin(async { Ok(None) })
    }

    /// How long a runner may sleep without looking at the store, when
    /// nothing is due sooner: what a schedule made by another process may
    /// wait beyond its due time, where [`changes`](Store::changes) cannot
    /// tell.
    fn poll_interval(&self) -> Duration;
}
