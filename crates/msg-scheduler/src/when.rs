//! When a schedule fires: once ([`When::at`], [`When::after`]) or again and
//! again ([`When::every`], [`When::cron`]), and what a recurring schedule
//! does about fires missed while no runner ran ([`CatchUp`]).

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use msg_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::time::{from_millis, millis};

/// When a schedule fires.
///
/// ```
/// use std::time::Duration;
/// use msg_scheduler::{CatchUp, When};
///
/// let once = When::after(Duration::from_secs(30));
/// let nightly = When::cron("0 30 2 * * *")?
///     .in_zone("Europe/Berlin")?
///     .catch_up(CatchUp::FireOnce);
/// let heartbeat = When::every(Duration::from_secs(10));
/// # let _ = (once, nightly, heartbeat);
/// # Ok::<(), msg_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum When {
    /// Once, at this time (at once if it has passed).
    At(SystemTime),
    /// Once, this long after the schedule is made.
    After(Duration),
    /// Again and again.
    Recurring(Recurrence),
}

impl When {
    /// Once, at `time`. A time that has passed fires at once.
    pub fn at(time: SystemTime) -> Self {
        Self::At(time)
    }

    /// Once, `delay` after the schedule is made.
    pub fn after(delay: Duration) -> Self {
        Self::After(delay)
    }

    /// Every `interval`: the first fire one interval after the schedule is
    /// made (or at [`starting`](Recurrence::starting)), then one interval
    /// after each due time, so that fires do not drift.
    pub fn every(interval: Duration) -> Recurrence {
        Recurrence::new(Rule::Every {
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// At the times a cron expression names: five fields (minute, hour,
    /// day of month, month, day of week) or six with seconds first, as in
    /// `0 */5 * * * *`. Read in UTC unless [`in_zone`](Recurrence::in_zone)
    /// says otherwise. An expression that does not parse is an error here.
    pub fn cron(expression: &str) -> Result<Recurrence> {
        parse_cron(expression)?;
        Ok(Recurrence::new(Rule::Cron {
            expression: expression.to_owned(),
            zone: None,
        }))
    }

    /// Whether the schedule recurs.
    pub fn is_recurring(&self) -> bool {
        matches!(self, Self::Recurring(_))
    }

    /// The first due time, counting from `now`, and the recurrence.
    pub(crate) fn first(self, now: SystemTime) -> Result<(SystemTime, Option<Recurrence>)> {
        match self {
            Self::At(at) => Ok((at, None)),
            Self::After(delay) => Ok((now + delay, None)),
            Self::Recurring(mut recurrence) => {
                recurrence.validate()?;
                // An interval counts from when it was scheduled, unless it
                // says where to start: pin that so every runner agrees.
                let anchor = recurrence
                    .start
                    .get_or_insert_with(|| match recurrence.rule {
                        Rule::Every { interval_ms } => {
                            millis(now).saturating_add(interval_ms as i64)
                        }
                        Rule::Cron { .. } => millis(now),
                    });
                let from = (*anchor).max(millis(now));
                let first = recurrence.first_at_or_after(from)?.ok_or_else(|| {
                    Error::invalid_config("the recurring schedule has no fire before its end")
                })?;
                Ok((from_millis(first), Some(recurrence)))
            }
        }
    }
}

impl From<Recurrence> for When {
    fn from(recurrence: Recurrence) -> Self {
        Self::Recurring(recurrence)
    }
}

/// What a recurring schedule does with fires missed while no runner ran
/// (a fire is missed when it is more than the [grace](Recurrence::grace)
/// late).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "policy")]
pub enum CatchUp {
    /// Missed fires are dropped; the schedule goes on with its next time.
    Skip,
    /// All missed fires together fire once, as the latest of them.
    #[default]
    FireOnce,
    /// Each missed fire fires, up to the latest `max` of them, oldest first.
    FireAll {
        /// The most missed fires to make up for.
        max: u32,
    },
}

/// The rule of a recurring schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Rule {
    Every {
        interval_ms: u64,
    },
    Cron {
        expression: String,
        /// An IANA time zone name; UTC when absent.
        zone: Option<String>,
    },
}

/// A recurring schedule: made by [`When::every`] or [`When::cron`], then
/// refined with a time zone, a start, an end and a catch-up policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recurrence {
    rule: Rule,
    /// No fire before this (milliseconds since the Unix epoch).
    start: Option<i64>,
    /// No fire after this.
    end: Option<i64>,
    catch_up: CatchUp,
    grace_ms: u64,
}

/// A fire late by more than this counts as missed, by default.
const DEFAULT_GRACE: Duration = Duration::from_secs(60);

impl Recurrence {
    fn new(rule: Rule) -> Self {
        Self {
            rule,
            start: None,
            end: None,
            catch_up: CatchUp::default(),
            grace_ms: DEFAULT_GRACE.as_millis() as u64,
        }
    }

    /// Reads a cron expression in `zone`, an IANA name such as
    /// `Europe/Berlin`: across a daylight-saving change, a time that does
    /// not exist fires at the first instant after the gap, and a time that
    /// exists twice fires once. An unknown zone, or a zone on an interval,
    /// is an error.
    pub fn in_zone(mut self, zone: &str) -> Result<Self> {
        let Rule::Cron { zone: z, .. } = &mut self.rule else {
            return Err(Error::invalid_config(
                "a time zone applies to cron schedules; an interval is the same in every zone",
            ));
        };
        parse_zone(zone)?;
        *z = Some(zone.to_owned());
        Ok(self)
    }

    /// No fire before `time`. An interval's fires count from it.
    pub fn starting(mut self, time: SystemTime) -> Self {
        self.start = Some(millis(time));
        self
    }

    /// No fire after `time`: the schedule ends with its last fire before.
    pub fn until(mut self, time: SystemTime) -> Self {
        self.end = Some(millis(time));
        self
    }

    /// What to do with fires missed while no runner ran; by default
    /// [`CatchUp::FireOnce`].
    pub fn catch_up(mut self, policy: CatchUp) -> Self {
        self.catch_up = policy;
        self
    }

    /// How late a fire may be before it counts as missed; by default a
    /// minute.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// The catch-up policy.
    pub fn catch_up_policy(&self) -> CatchUp {
        self.catch_up
    }

    fn validate(&self) -> Result<()> {
        match &self.rule {
            Rule::Every { interval_ms } if *interval_ms == 0 => Err(Error::invalid_config(
                "a recurring interval must not be zero",
            )),
            Rule::Every { .. } => Ok(()),
            Rule::Cron { expression, zone } => {
                parse_cron(expression)?;
                zone.as_deref().map(parse_zone).transpose()?;
                Ok(())
            }
        }
    }

    /// The first fire at or after `from` (milliseconds), within start and
    /// end.
    fn first_at_or_after(&self, from: i64) -> Result<Option<i64>> {
        let from = self.start.map_or(from, |start| from.max(start));
        let next = match &self.rule {
            Rule::Every { interval_ms } => {
                let anchor = self.start.unwrap_or(from);
                let interval = (*interval_ms).min(i64::MAX as u64) as i64;
                let periods = ((from - anchor).max(0) as u64).div_ceil(interval as u64) as i64;
                Some(anchor.saturating_add(periods.saturating_mul(interval)))
            }
            Rule::Cron { expression, zone } => {
                cron_next(expression, zone.as_deref(), from - 1, false)?
            }
        };
        Ok(next.filter(|&n| self.end.is_none_or(|end| n <= end)))
    }

    /// The first fire strictly after `after`.
    pub(crate) fn next_after(&self, after: i64) -> Result<Option<i64>> {
        self.first_at_or_after(after.saturating_add(1))
    }

    /// The latest fire at or before `at`, not before `from`.
    fn latest_at_or_before(&self, at: i64, from: i64) -> Result<Option<i64>> {
        let latest = match &self.rule {
            Rule::Every { interval_ms } => {
                let anchor = self.start.unwrap_or(from);
                let interval = (*interval_ms).min(i64::MAX as u64) as i64;
                (at >= anchor).then(|| anchor + (at - anchor) / interval * interval)
            }
            Rule::Cron { expression, zone } => cron_next(expression, zone.as_deref(), at, true)?,
        };
        Ok(latest.filter(|&l| l >= from && self.end.is_none_or(|end| l <= end)))
    }

    /// What a runner does at `now` with this schedule, due at `due`: the
    /// times to fire (each names one fire, for its message id) and the next
    /// due time (none: the schedule is over).
    pub(crate) fn plan(&self, due: i64, now: i64) -> Result<Plan> {
        let latest = self.latest_at_or_before(now, due)?.unwrap_or(due).max(due);
        let late = |t: i64| now.saturating_sub(t) > self.grace_ms.min(i64::MAX as u64) as i64;
        let fires = match self.catch_up {
            CatchUp::Skip => {
                if late(latest) {
                    Vec::new()
                } else {
                    vec![latest]
                }
            }
            CatchUp::FireOnce => vec![latest],
            CatchUp::FireAll { max } => {
                let mut fires = vec![latest];
                while fires.len() < max as usize {
                    let Some(before) = self.latest_at_or_before(fires[fires.len() - 1] - 1, due)?
                    else {
                        break;
                    };
                    fires.push(before);
                }
                fires.reverse();
                fires
            }
        };
        Ok(Plan {
            fires,
            next: self.next_after(now.max(latest))?,
        })
    }
}

/// What a runner does with a due recurring schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The due times to fire, oldest first.
    pub(crate) fires: Vec<i64>,
    /// The next due time; none when the schedule is over.
    pub(crate) next: Option<i64>,
}

fn parse_cron(expression: &str) -> Result<Cron> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(expression)
        .map_err(|e| Error::invalid_config(format!("the cron expression `{expression}`: {e}")))
}

fn parse_zone(zone: &str) -> Result<Tz> {
    Tz::from_str(zone).map_err(|_| Error::invalid_config(format!("unknown time zone `{zone}`")))
}

/// The cron expression's next fire after `at` (or, `backward`, its latest
/// at or before `at`), in milliseconds.
fn cron_next(expression: &str, zone: Option<&str>, at: i64, backward: bool) -> Result<Option<i64>> {
    let cron = parse_cron(expression)?;
    let zone = zone.map(parse_zone).transpose()?.unwrap_or(Tz::UTC);
    let Some(at) = DateTime::<Utc>::from_timestamp_millis(at) else {
        return Ok(None);
    };
    let at = zone.from_utc_datetime(&at.naive_utc());
    let found = if backward {
        cron.find_previous_occurrence(&at, true)
    } else {
        cron.find_next_occurrence(&at, false)
    };
    // An expression with no further time (the 30th of February) ends the
    // schedule rather than failing it.
    Ok(found.ok().map(|t| t.timestamp_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis()
    }

    fn utc(ms: i64) -> String {
        DateTime::<Utc>::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339()
    }

    #[test]
    fn an_invalid_cron_expression_or_zone_is_an_error_when_made() {
        assert!(When::cron("not cron").is_err());
        assert!(When::cron("0 61 * * * *").is_err());
        assert!(
            When::cron("0 */5 * * * *").is_ok(),
            "six fields, seconds first"
        );
        assert!(When::cron("*/5 * * * *").is_ok(), "five fields");
        let err = When::cron("0 * * * *")
            .unwrap()
            .in_zone("Mars/Olympus")
            .unwrap_err();
        assert!(err.to_string().contains("Mars/Olympus"), "{err}");
        assert!(When::every(Duration::from_secs(1)).in_zone("UTC").is_err());
        let zero = When::Recurring(When::every(Duration::ZERO));
        assert!(zero.first(SystemTime::now()).is_err());
    }

    #[test]
    fn an_interval_counts_from_its_start_without_drift() {
        let r =
            When::every(Duration::from_secs(10)).starting(from_millis(ms("2026-01-01T00:00:00Z")));
        assert_eq!(
            r.next_after(ms("2026-01-01T00:00:00Z")).unwrap(),
            Some(ms("2026-01-01T00:00:10Z"))
        );
        assert_eq!(
            r.next_after(ms("2026-01-01T00:00:13.5Z")).unwrap(),
            Some(ms("2026-01-01T00:00:20Z"))
        );
        let (first, _) = When::from(r.clone())
            .first(from_millis(ms("2025-12-31T00:00:00Z")))
            .unwrap();
        assert_eq!(
            millis(first),
            ms("2026-01-01T00:00:00Z"),
            "not before its start"
        );
    }

    #[test]
    fn an_end_ends_the_schedule() {
        let r = When::every(Duration::from_secs(10))
            .starting(from_millis(0))
            .until(from_millis(25_000));
        assert_eq!(r.next_after(10_000).unwrap(), Some(20_000));
        assert_eq!(r.next_after(20_000).unwrap(), None);
    }

    #[test]
    fn a_cron_time_missing_in_the_spring_change_fires_after_the_gap_and_a_doubled_one_once() {
        // Europe/Berlin: 2026-03-29 02:00 CET becomes 03:00 CEST;
        // 2026-10-25 03:00 CEST becomes 02:00 CET.
        let r = When::cron("0 30 2 * * *")
            .unwrap()
            .in_zone("Europe/Berlin")
            .unwrap();
        let three_after = |from: &str| {
            let mut t = ms(from);
            (0..3)
                .map(|_| {
                    t = r.next_after(t).unwrap().unwrap();
                    utc(t)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            three_after("2026-03-27T12:00:00Z"),
            [
                "2026-03-28T01:30:00+00:00", // 02:30 CET
                "2026-03-29T01:00:00+00:00", // 02:30 does not exist: 03:00 CEST
                "2026-03-30T00:30:00+00:00", // 02:30 CEST
            ]
        );
        assert_eq!(
            three_after("2026-10-24T12:00:00Z"),
            [
                "2026-10-25T00:30:00+00:00", // 02:30 CEST, the first of two
                "2026-10-26T01:30:00+00:00", // the next day, 02:30 CET
                "2026-10-27T01:30:00+00:00",
            ]
        );
    }

    #[test]
    fn catch_up_policies_after_a_downtime() {
        let every_minute = When::every(Duration::from_secs(60)).starting(from_millis(0));
        // Due at 60 s; the runner comes back at 305 s: fires at 60, 120,
        // 180, 240, 300 are due, the next is 360.
        let now = 305_000;
        let plan = |policy| {
            every_minute
                .clone()
                .catch_up(policy)
                .plan(60_000, now)
                .unwrap()
        };
        assert_eq!(
            plan(CatchUp::FireOnce),
            Plan {
                fires: vec![300_000],
                next: Some(360_000)
            }
        );
        assert_eq!(
            plan(CatchUp::FireAll { max: 3 }),
            Plan {
                fires: vec![180_000, 240_000, 300_000],
                next: Some(360_000)
            }
        );
        assert_eq!(
            plan(CatchUp::FireAll { max: 100 }).fires,
            vec![60_000, 120_000, 180_000, 240_000, 300_000]
        );
        // The latest is 5 s late, within the grace: Skip fires it alone.
        assert_eq!(
            plan(CatchUp::Skip),
            Plan {
                fires: vec![300_000],
                next: Some(360_000)
            }
        );
        let strict = every_minute
            .clone()
            .catch_up(CatchUp::Skip)
            .grace(Duration::from_secs(1));
        assert_eq!(
            strict.plan(60_000, now).unwrap(),
            Plan {
                fires: vec![],
                next: Some(360_000)
            }
        );
        // On time: one fire, whatever the policy.
        assert_eq!(
            every_minute
                .catch_up(CatchUp::FireAll { max: 3 })
                .plan(60_000, 60_004)
                .unwrap(),
            Plan {
                fires: vec![60_000],
                next: Some(120_000)
            }
        );
    }

    #[test]
    fn a_recurrence_survives_its_stored_form() {
        let r = When::cron("0 */5 * * * *")
            .unwrap()
            .in_zone("America/New_York")
            .unwrap()
            .until(from_millis(5_000_000))
            .catch_up(CatchUp::FireAll { max: 4 });
        let stored = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Recurrence>(&stored).unwrap(), r);
    }
}
