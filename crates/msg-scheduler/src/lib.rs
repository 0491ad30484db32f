//! Messages delivered at a time for **msg**: one-shot and recurring
//! schedules that can be cancelled, listed, rescheduled and paused, kept in
//! memory, SQLite (the default feature `sqlite`), PostgreSQL (`postgres`)
//! or Redis (`redis`), and fired by [runners](Runner) that several
//! processes may run at once.
//!
//! A fire is never early: a runner publishes a schedule only once its due
//! time has passed on the runner's clock. Each due schedule is claimed by
//! one runner under a lease and fired once per lease; a runner that dies
//! leaves its claims to another when the lease ends, so a fire is made at
//! least once across a crash and exactly once otherwise. A fire's message
//! id is stable (a one-shot schedule's message keeps its id; each fire of a
//! recurring one gets an id derived from it and the due time), so
//! consumers deduplicate the rare repeat.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> msg_core::Result<()> {
//! use std::time::Duration;
//! use msg_core::{Message, Subscriber, Subscription};
//! use msg_scheduler::{Scheduler, When};
//! use futures::StreamExt;
//!
//! let broker = msg_memory::MemoryBroker::new();
//! let mut reminders = broker.subscribe(Subscription::new("reminders")).await?;
//!
//! let scheduler = Scheduler::memory();
//! let runner = scheduler.runner(broker.clone()).start();
//! scheduler
//!     .schedule("reminders", Message::new("stand up"), When::after(Duration::from_millis(20)))
//!     .await?;
//!
//! let delivery = reminders.next().await.unwrap()?;
//! assert_eq!(&delivery.message().payload()[..], b"stand up");
//! runner.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! [`Scheduled`] gives the publish option `deliver_at` to a transport that
//! cannot delay messages itself. See the project's `docs/scheduler.md` for
//! the guarantees, the stores, and running several runners.
#![forbid(unsafe_code)]

#[cfg(feature = "metrics")]
mod metrics;
mod runner;
mod schedule;
mod scheduled;
mod scheduler;
pub mod store;
mod time;
mod when;

#[cfg(feature = "metrics")]
pub use metrics::SchedulerMetrics;
pub use runner::{Runner, RunningRunner};
pub use schedule::{Cursor, Filter, IfExists, Page, Schedule, ScheduleId, ScheduleOptions};
pub use scheduled::Scheduled;
pub use scheduler::Scheduler;
pub use time::Clock;
pub use when::{CatchUp, Recurrence, When};
