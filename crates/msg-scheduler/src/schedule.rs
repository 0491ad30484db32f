//! A schedule as the scheduler hands it out, and how callers name, find and
//! page through schedules.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use msg_core::{Error, Message, PublishOptions, Result, Uuid};

use crate::time::{from_millis, millis, millis_ceil};
use crate::when::Recurrence;

/// A schedule's id: made by [`Scheduler::schedule`](crate::Scheduler::schedule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScheduleId(Uuid);

impl ScheduleId {
    /// A new id (UUID v7: ids sort by creation time).
    pub(crate) fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for ScheduleId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl fmt::Display for ScheduleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ScheduleId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|e| Error::invalid_config(format!("`{s}` is not a schedule id: {e}")))
    }
}

/// What [`Scheduler::schedule_with`](crate::Scheduler::schedule_with) does
/// when a schedule with the same key exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IfExists {
    /// The new schedule replaces the old one, which keeps its id.
    #[default]
    Replace,
    /// The old schedule stays as it is; its id is returned.
    Keep,
}

/// How to make a schedule: an idempotency key, and the publish options the
/// fire uses.
///
/// ```
/// use std::time::Duration;
/// use msg_scheduler::{IfExists, ScheduleOptions};
///
/// let options = ScheduleOptions::new()
///     .key("invoice-7-reminder")
///     .if_exists(IfExists::Keep)
///     .ttl(Duration::from_secs(3600));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleOptions {
    pub(crate) key: Option<String>,
    pub(crate) if_exists: IfExists,
    pub(crate) ttl: Option<Duration>,
    pub(crate) reply_to: Option<String>,
}

impl ScheduleOptions {
    /// No key, no publish options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Scheduling again with the same key does not make a second schedule:
    /// see [`if_exists`](Self::if_exists).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// What a schedule with a key that exists does; by default it replaces.
    pub fn if_exists(mut self, if_exists: IfExists) -> Self {
        self.if_exists = if_exists;
        self
    }

    /// The fire is published with this `ttl` (counted from the fire).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The fire is published with this `reply_to`.
    pub fn reply_to(mut self, topic: impl Into<String>) -> Self {
        self.reply_to = Some(topic.into());
        self
    }
}

/// A schedule, as [`get`](crate::Scheduler::get) and
/// [`list`](crate::Scheduler::list) return it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Schedule {
    /// Its id.
    pub id: ScheduleId,
    /// Its idempotency key, if it was made with one.
    pub key: Option<String>,
    /// Where it publishes.
    pub topic: String,
    /// What it publishes. A one-shot fire publishes it with this id; each
    /// fire of a recurring schedule gets an id derived from this one and
    /// its due time, the same on every runner.
    pub message: Message,
    /// The publish options of a fire (`ttl`, `reply_to`).
    pub options: PublishOptions,
    /// When it fires next.
    pub due: SystemTime,
    /// How it recurs; none for a one-shot schedule.
    pub recurrence: Option<Recurrence>,
    /// Whether it is paused (recurring schedules only).
    pub paused: bool,
    /// How many fires it has made.
    pub fires: u64,
    /// Whether a runner is firing it now.
    pub firing: bool,
}

impl Schedule {
    pub(crate) fn due_millis(&self) -> i64 {
        millis_ceil(self.due)
    }

    /// The message id of this schedule's fire due at `due`: the message's
    /// own id for a one-shot schedule; for a recurring one, an id derived
    /// from it and `due`, the same on every runner.
    pub fn fire_id(&self, due: SystemTime) -> Uuid {
        if self.recurrence.is_none() {
            return self.message.id();
        }
        fire_id(self.message.id(), millis(due))
    }
}

fn fire_id(message_id: Uuid, due: i64) -> Uuid {
    msg_core::raw::stable_id(format!("msg-scheduler/{message_id}/{due}"))
}

/// Which schedules [`list`](crate::Scheduler::list) returns: those that
/// match every condition set, in due order, a page at a time.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use msg_scheduler::Filter;
///
/// let filter = Filter::new()
///     .topic("reminders")
///     .due_before(SystemTime::now() + Duration::from_secs(3600))
///     .recurring(false)
///     .limit(50);
/// # let _ = filter;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub(crate) topic: Option<String>,
    pub(crate) due_before: Option<i64>,
    pub(crate) due_after: Option<i64>,
    pub(crate) recurring: Option<bool>,
    pub(crate) limit: usize,
    pub(crate) after: Option<Cursor>,
}

impl Default for Filter {
    fn default() -> Self {
        Self {
            topic: None,
            due_before: None,
            due_after: None,
            recurring: None,
            limit: 100,
            after: None,
        }
    }
}

impl Filter {
    /// Every schedule, 100 to a page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only schedules publishing to `topic`.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Only schedules due before `time`.
    pub fn due_before(mut self, time: SystemTime) -> Self {
        self.due_before = Some(millis(time));
        self
    }

    /// Only schedules due at or after `time`.
    pub fn due_after(mut self, time: SystemTime) -> Self {
        self.due_after = Some(millis(time));
        self
    }

    /// Only recurring schedules (`true`) or only one-shot ones (`false`).
    pub fn recurring(mut self, recurring: bool) -> Self {
        self.recurring = Some(recurring);
        self
    }

    /// At most `limit` schedules a page (at least 1).
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit.max(1);
        self
    }

    /// The page after the one that returned this cursor.
    pub fn after(mut self, cursor: Cursor) -> Self {
        self.after = Some(cursor);
        self
    }

    /// Whether `schedule` passes the conditions (not the cursor).
    pub(crate) fn matches(&self, schedule: &Schedule) -> bool {
        let due = schedule.due_millis();
        self.topic.as_ref().is_none_or(|t| *t == schedule.topic)
            && self.due_before.is_none_or(|b| due < b)
            && self.due_after.is_none_or(|a| due >= a)
            && self
                .recurring
                .is_none_or(|r| r == schedule.recurrence.is_some())
    }
}

/// Where a page of [`list`](crate::Scheduler::list) ended; pass it to
/// [`Filter::after`] for the next page. Its text form (`Display`,
/// `FromStr`) is what a command line prints and reads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub(crate) due: i64,
    pub(crate) id: ScheduleId,
}

impl Cursor {
    pub(crate) fn of(schedule: &Schedule) -> Self {
        Self {
            due: schedule.due_millis(),
            id: schedule.id,
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.due, self.id)
    }
}

impl FromStr for Cursor {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::invalid_config(format!("`{s}` is not a schedule cursor"));
        let (due, id) = s.split_once('.').ok_or_else(bad)?;
        Ok(Self {
            due: due.parse().map_err(|_| bad())?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// One page of [`list`](crate::Scheduler::list).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The schedules, in due order.
    pub schedules: Vec<Schedule>,
    /// The cursor of the next page; none on the last page.
    pub next: Option<Cursor>,
}

impl Page {
    /// The page of `schedules` (fetched with one more than `limit`, to tell
    /// whether another page follows).
    pub(crate) fn of(mut schedules: Vec<Schedule>, limit: usize) -> Self {
        let more = schedules.len() > limit;
        schedules.truncate(limit);
        let next = if more {
            schedules.last().map(Cursor::of)
        } else {
            None
        };
        Self { schedules, next }
    }
}

/// The message a fire of `schedule` due at `due` publishes: the schedule's
/// message itself for a one-shot schedule; for a recurring one, the same
/// message with an id that names this fire, so that every runner that
/// fires it (after a crash, say) gives it the same id.
pub(crate) fn fire_message(schedule: &Schedule, due: i64) -> Message {
    if schedule.recurrence.is_none() {
        return schedule.message.clone();
    }
    let mut parts = schedule.message.clone().into_parts();
    parts.id = fire_id(parts.id, due);
    Message::from_parts(parts)
}

/// The due time of `ms`, for a schedule.
pub(crate) fn due_time(ms: i64) -> SystemTime {
    from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_what_it_prints() {
        let cursor = Cursor {
            due: 1_800_000_000_000,
            id: ScheduleId::new(),
        };
        assert_eq!(cursor.to_string().parse::<Cursor>().unwrap(), cursor);
        assert!("nonsense".parse::<Cursor>().is_err());
        assert!("12.not-a-uuid".parse::<Cursor>().is_err());
    }
}
