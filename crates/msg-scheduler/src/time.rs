//! Times as stores keep them (milliseconds since the Unix epoch), and the
//! clock a scheduler reads.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub(crate) fn millis(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Milliseconds since the Unix epoch, rounded up: a due time kept in
/// milliseconds is never before the time asked for.
pub(crate) fn millis_ceil(time: SystemTime) -> i64 {
    let floor = millis(time);
    if from_millis(floor) < time {
        floor.saturating_add(1)
    } else {
        floor
    }
}

/// The time `ms` milliseconds after the Unix epoch.
pub(crate) fn from_millis(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// The clock a scheduler reads due times against.
///
/// Every runner compares due times with its own clock, so the machines
/// that run runners should keep their clocks in sync (NTP): a runner whose
/// clock is ahead fires early by as much.
#[derive(Debug, Clone, Copy, Default)]
pub enum Clock {
    /// The system's wall clock: what production uses.
    #[default]
    System,
    /// Wall-clock time as of when this clock was made, advanced by tokio's
    /// clock: under `tokio::time::pause` a test moves time with
    /// `tokio::time::advance` (or by sleeping) and recurring schedules fire
    /// deterministically.
    Tokio {
        /// The wall-clock time at `since`.
        base: SystemTime,
        /// tokio's time when the clock was made.
        since: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock driven by tokio's time, starting at the current wall-clock
    /// time. See [`Clock::Tokio`].
    pub fn tokio() -> Self {
        Self::Tokio {
            base: SystemTime::now(),
            since: tokio::time::Instant::now(),
        }
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        match self {
            Self::System => SystemTime::now(),
            Self::Tokio { base, since } => *base + since.elapsed(),
        }
    }

    /// The current time in milliseconds since the Unix epoch.
    pub(crate) fn now_millis(&self) -> i64 {
        millis(self.now())
    }
}
