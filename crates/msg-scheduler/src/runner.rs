//! The runner: claims due schedules under a lease and fires them through a
//! publisher.

use std::time::Duration;

use futures::{StreamExt, stream};
use msg_core::{Publisher, Result, Uuid};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Scheduler;
use crate::schedule::{Schedule, fire_message};
use crate::store::{Claim, Next};

/// Fires due schedules through a publisher; made by
/// [`Scheduler::runner`]. Several runners, in this process or others, may
/// run over one store: each due schedule is claimed by one of them under a
/// lease, and fired once per lease.
///
/// A runner sleeps until the next due time. It learns of schedules this
/// process makes at once; of those other processes make, through the
/// store's change notifications where it has them (PostgreSQL), or else
/// within the store's poll interval.
#[derive(Debug)]
pub struct Runner<P> {
    scheduler: Scheduler,
    publisher: P,
    batch_size: usize,
    lease: Duration,
    retry_delay: Duration,
}

impl<P: Publisher> Runner<P> {
    pub(crate) fn new(scheduler: Scheduler, publisher: P) -> Self {
        Self {
            scheduler,
            publisher,
            batch_size: 500,
            lease: Duration::from_secs(30),
            retry_delay: Duration::from_secs(5),
        }
    }

    /// The most schedules one pass claims and fires at once; by default
    /// 500.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// How long a claim lasts; by default 30 s. A pass must publish its
    /// batch within it, or another runner fires the batch again; a runner
    /// that dies leaves its claims to another runner after it.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long a schedule whose fire failed (the broker refused or was
    /// unreachable) waits before it is fired again; by default 5 s. It is
    /// never dropped.
    pub fn retry_delay(mut self, retry_delay: Duration) -> Self {
        self.retry_delay = retry_delay;
        self
    }

    /// One pass: claims what is due now (at most a batch), fires it and
    /// records the outcome. Returns how many schedules it claimed.
    pub async fn run_once(&self) -> Result<usize> {
        let now = self.scheduler.clock.now_millis();
        let token = Uuid::new_v4();
        let claimed = self
            .scheduler
            .store
            .claim(Claim {
                now,
                lease_until: now.saturating_add(millis_of(self.lease)),
                token,
                limit: self.batch_size,
            })
            .await?;
        let count = claimed.len();
        if count == 0 {
            return Ok(0);
        }
        let outcomes: Vec<_> = stream::iter(claimed)
            .map(|schedule| self.fire(schedule, now))
            .buffer_unordered(self.batch_size)
            .collect()
            .await;
        self.scheduler.store.finish(token, outcomes).await?;
        Ok(count)
    }

    /// Fires one claimed schedule; what becomes of it.
    async fn fire(&self, schedule: Schedule, now: i64) -> (crate::ScheduleId, Next) {
        let due = schedule.due_millis();
        let (fires, next) = match &schedule.recurrence {
            None => (vec![due], Next::Remove),
            Some(recurrence) => match recurrence.plan(due, now) {
                Ok(plan) => {
                    let fires = u32::try_from(plan.fires.len()).unwrap_or(u32::MAX);
                    let next = plan.next.map_or(Next::Remove, |at| Next::Due { at, fires });
                    (plan.fires, next)
                }
                Err(error) => {
                    tracing::error!(schedule = %schedule.id, %error, "a stored recurrence does not compute; tried again later");
                    return (schedule.id, self.retry(now));
                }
            },
        };
        for at in fires {
            let message = fire_message(&schedule, at);
            let message_id = message.id();
            let published = self
                .publisher
                .publish_with(&schedule.topic, message, schedule.options.clone())
                .await;
            if let Err(error) = published {
                tracing::warn!(schedule = %schedule.id, topic = %schedule.topic, %error, "fire failed; tried again after the retry delay");
                #[cfg(feature = "metrics")]
                if let Some(m) = &self.scheduler.metrics {
                    m.failed.inc();
                }
                return (schedule.id, self.retry(now));
            }
            let lateness = self.scheduler.clock.now_millis().saturating_sub(at);
            tracing::debug!(schedule = %schedule.id, %message_id, lateness_ms = lateness, "fired");
            #[cfg(feature = "metrics")]
            if let Some(m) = &self.scheduler.metrics {
                m.fired.inc();
                m.lateness.observe(lateness.max(0) as f64 / 1000.0);
            }
        }
        (schedule.id, next)
    }

    fn retry(&self, now: i64) -> Next {
        Next::Retry(now.saturating_add(millis_of(self.retry_delay)))
    }

    /// Runs the runner in a task until [`RunningRunner::shutdown`].
    pub fn start(self) -> RunningRunner {
        let (stop, stopped) = watch::channel(false);
        RunningRunner {
            stop,
            task: tokio::spawn(self.run(stopped)),
        }
    }

    async fn run(self, mut stopped: watch::Receiver<bool>) {
        let store = &self.scheduler.store;
        let mut changed = self.scheduler.changed.subscribe();
        let mut changes = match store.changes().await {
            Ok(changes) => changes,
            Err(error) => {
                tracing::warn!(%error, "the store's change notifications are unavailable; polling");
                None
            }
        };
        let poll = store.poll_interval();
        // A dropped `RunningRunner` stops the runner as `shutdown` does.
        let stop = |s: &watch::Receiver<bool>| *s.borrow() || s.has_changed().is_err();
        while !stop(&stopped) {
            changed.borrow_and_update();
            let wait = match self.run_once().await {
                Ok(n) if n >= self.batch_size => continue,
                Ok(claimed) => match store.next_wake().await {
                    Ok(next) => {
                        #[cfg(feature = "metrics")]
                        self.record_backlog().await;
                        let now = self.scheduler.clock.now();
                        let now_ms = crate::time::millis(now);
                        match next {
                            // Due while this pass fired: the next pass at
                            // once. After a pass that found nothing, a
                            // millisecond first, so that a store that
                            // disagrees with itself cannot make us spin.
                            Some(at) if at <= now_ms && claimed > 0 => continue,
                            Some(at) => crate::time::from_millis(at)
                                .duration_since(now)
                                .unwrap_or_default()
                                .max(Duration::from_micros(100))
                                .min(poll),
                            None => poll,
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the store did not say what is due next");
                        self.retry_delay
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "claiming due schedules failed; trying again");
                    self.retry_delay
                }
            };
            let notified = async {
                match &mut changes {
                    Some(changes) => changes.next().await.is_some(),
                    None => std::future::pending().await,
                }
            };
            let ended = tokio::select! {
                () = tokio::time::sleep(wait) => false,
                _ = changed.changed() => false,
                alive = notified => !alive,
                _ = stopped.changed() => false,
            };
            if ended {
                tracing::warn!("the store's change notifications ended; polling");
                changes = None;
            }
        }
    }

    #[cfg(feature = "metrics")]
    async fn record_backlog(&self) {
        if let Some(m) = &self.scheduler.metrics
            && let Ok(backlog) = self.scheduler.backlog().await
        {
            m.backlog.set(backlog as i64);
        }
    }
}

/// A runner running in a task.
#[derive(Debug)]
pub struct RunningRunner {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningRunner {
    /// Stops claiming, lets the pass in flight finish its publishes and
    /// record them, and returns: the runner holds no claims after it.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the scheduler runner's task failed");
        }
    }
}

fn millis_of(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
