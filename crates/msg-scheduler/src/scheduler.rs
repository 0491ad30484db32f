//! The scheduler: make, cancel, look up and change schedules.

use std::sync::Arc;

use msg_core::raw::topic::validate_topic;
use msg_core::{Error, Message, Publisher, Result};
use tokio::sync::watch;

use crate::runner::Runner;
use crate::schedule::{Filter, Page, Schedule, ScheduleId, ScheduleOptions};
use crate::store::Store;
use crate::store::memory::MemoryStore;
use crate::time::{Clock, millis_ceil};
use crate::when::When;

/// Makes, cancels, lists and changes schedules in a [`Store`]; its
/// [`runner`](Scheduler::runner) fires them. Clones share the store.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> msg_core::Result<()> {
/// use std::time::Duration;
/// use msg_core::Message;
/// use msg_scheduler::{Scheduler, When};
///
/// let scheduler = Scheduler::memory();
/// let id = scheduler
///     .schedule("reminders", Message::new("pay invoice 7"), When::after(Duration::from_secs(3600)))
///     .await?;
/// assert!(scheduler.get(id).await?.is_some());
/// assert!(scheduler.cancel(id).await?, "cancelled before it fired");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Scheduler {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Clock,
    /// Bumped when a schedule is made or changed: this process's runners
    /// look again at what is due next.
    pub(crate) changed: Arc<watch::Sender<u64>>,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: Option<crate::SchedulerMetrics>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler over `store`.
    pub fn new(store: impl Store) -> Self {
        Self {
            store: Arc::new(store),
            clock: Clock::System,
            changed: Arc::new(watch::channel(0).0),
            #[cfg(feature = "metrics")]
            metrics: None,
        }
    }

    /// A scheduler keeping its schedules in memory (lost with the process):
    /// for tests.
    pub fn memory() -> Self {
        Self::new(MemoryStore::new())
    }

    /// A scheduler keeping its schedules in an SQLite database, in the
    /// table `msg_schedules`. Call [`migrate`](Self::migrate) once.
    #[cfg(feature = "sqlite")]
    pub fn sqlite(pool: sqlx::SqlitePool) -> Self {
        Self::new(crate::store::sqlite::SqliteStore::new(pool))
    }

    /// A scheduler keeping its schedules in PostgreSQL, in the table
    /// `msg_schedules`. Call [`migrate`](Self::migrate) once.
    #[cfg(feature = "postgres")]
    pub fn postgres(pool: sqlx::PgPool) -> Self {
        Self::new(crate::store::postgres::PgStore::new(pool))
    }

    /// Reads due times against `clock` (by default the system's).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Records what the scheduler and its runners do in `metrics`.
    #[cfg(feature = "metrics")]
    pub fn with_metrics(mut self, metrics: crate::SchedulerMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The clock due times are read against.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Creates the store's tables; safe to run again.
    pub async fn migrate(&self) -> Result<()> {
        self.store.migrate().await
    }

    /// Publishes `message` to `topic` when `when` says. A one-shot time
    /// that has passed fires at once.
    pub async fn schedule(
        &self,
        topic: &str,
        message: Message,
        when: impl Into<When>,
    ) -> Result<ScheduleId> {
        self.schedule_with(topic, message, when, ScheduleOptions::new())
            .await
    }

    /// As [`schedule`](Self::schedule), with an idempotency key and the
    /// publish options of the fire. An invalid topic, header, option or
    /// recurrence is an error here, and nothing is stored.
    pub async fn schedule_with(
        &self,
        topic: &str,
        message: Message,
        when: impl Into<When>,
        options: ScheduleOptions,
    ) -> Result<ScheduleId> {
        validate_topic(topic)?;
        message.validate()?;
        let mut publish = msg_core::PublishOptions::new();
        if let Some(reply_to) = options.reply_to {
            validate_topic(&reply_to)?;
            publish = publish.reply_to(reply_to);
        }
        if let Some(ttl) = options.ttl {
            if ttl.is_zero() {
                return Err(Error::invalid_config("a publish ttl must not be zero"));
            }
            publish = publish.ttl(ttl);
        }
        if options.key.as_deref() == Some("") {
            return Err(Error::invalid_config("a schedule key must not be empty"));
        }
        let (due, recurrence) = when.into().first(self.clock.now())?;
        let schedule = Schedule {
            id: ScheduleId::new(),
            key: options.key,
            topic: topic.to_owned(),
            message,
            options: publish,
            due,
            recurrence,
            paused: false,
            fires: 0,
            firing: false,
        };
        let id = self.store.insert(schedule, options.if_exists).await?;
        self.changed.send_modify(|n| *n += 1);
        #[cfg(feature = "metrics")]
        if let Some(m) = &self.metrics {
            m.scheduled.inc();
        }
        Ok(id)
    }

    /// Cancels the schedule: no fire starts after this returns.
    ///
    /// `true` when it was cancelled before its pending fire began, which
    /// then never happens. `false` when there was nothing to stop: no such
    /// schedule (an unknown id, or a one-shot schedule that has fired), or
    /// a runner was firing it at that moment, and that one fire may still
    /// be delivered.
    pub async fn cancel(&self, id: ScheduleId) -> Result<bool> {
        let removed = self.store.remove(id, self.clock.now_millis()).await?;
        let cancelled = removed == Some(false);
        #[cfg(feature = "metrics")]
        if let (Some(m), Some(_)) = (&self.metrics, removed) {
            m.cancelled.inc();
        }
        Ok(cancelled)
    }

    /// The schedule, if it exists (a one-shot schedule stops existing when
    /// it has fired).
    pub async fn get(&self, id: ScheduleId) -> Result<Option<Schedule>> {
        self.store.get(id, self.clock.now_millis()).await
    }

    /// A page of the schedules `filter` matches, the earliest due first.
    pub async fn list(&self, filter: Filter) -> Result<Page> {
        self.store.list(filter, self.clock.now_millis()).await
    }

    /// Gives the schedule a new time (one-shot or recurring, as `when`
    /// says). A fire in flight finishes, but does not move the schedule on.
    /// Whether the schedule existed.
    pub async fn reschedule(&self, id: ScheduleId, when: impl Into<When>) -> Result<bool> {
        let (due, recurrence) = when.into().first(self.clock.now())?;
        let found = self
            .store
            .reschedule(id, millis_ceil(due), recurrence)
            .await?;
        self.changed.send_modify(|n| *n += 1);
        Ok(found)
    }

    /// Stops the schedule firing until [`resume`](Self::resume). Whether it
    /// existed.
    pub async fn pause(&self, id: ScheduleId) -> Result<bool> {
        self.store.set_paused(id, true).await
    }

    /// Lets a paused schedule fire again; fires it missed while paused are
    /// made up for by its [catch-up policy](crate::CatchUp). Whether it
    /// existed.
    pub async fn resume(&self, id: ScheduleId) -> Result<bool> {
        let found = self.store.set_paused(id, false).await?;
        self.changed.send_modify(|n| *n += 1);
        Ok(found)
    }

    /// How many schedules are due and not being fired: a runner's backlog.
    pub async fn backlog(&self) -> Result<u64> {
        self.store.backlog(self.clock.now_millis()).await
    }

    /// A runner that fires due schedules through `publisher`.
    pub fn runner<P: Publisher>(&self, publisher: P) -> Runner<P> {
        Runner::new(self.clone(), publisher)
    }
}
