//! RFC 3339 timestamps, as CloudEvents and the dead-letter headers use them.

use std::time::SystemTime;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{Error, Result};

/// Formats `t` as RFC 3339 in UTC, e.g. `2026-11-23T01:45:12.123456Z`.
/// RFC 3339 has four-digit years: a time outside years 0000 to 9999 is
/// written as the nearest one inside.
pub fn rfc3339(t: SystemTime) -> String {
    let day = |year, month, day| {
        time::Date::from_calendar_date(year, month, day).unwrap_or(time::Date::MIN)
    };
    let earliest = day(0, time::Month::January, 1).midnight().assume_utc();
    let latest = day(9999, time::Month::December, 31)
        .with_time(time::Time::MAX)
        .assume_utc();
    // `OffsetDateTime::from(SystemTime)` panics out of its range.
    let at = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => time::Duration::try_from(after)
            .ok()
            .and_then(|d| OffsetDateTime::UNIX_EPOCH.checked_add(d))
            .map_or(latest, |at| at.min(latest)),
        Err(before) => time::Duration::try_from(before.duration())
            .ok()
            .and_then(|d| OffsetDateTime::UNIX_EPOCH.checked_sub(d))
            .map_or(earliest, |at| at.max(earliest)),
    };
    at.format(&Rfc3339)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
}

/// Parses an RFC 3339 timestamp with any offset.
pub fn parse_rfc3339(s: &str) -> Result<SystemTime> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| Error::Decode(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn round_trip_and_offsets() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let s = rfc3339(t);
        assert_eq!(s, "2023-11-14T22:13:20.123Z");
        assert_eq!(parse_rfc3339(&s).unwrap(), t);
        let plus_one = parse_rfc3339("2023-11-14T23:13:20.123+01:00").unwrap();
        assert_eq!(plus_one, t);
        assert!(parse_rfc3339("yesterday").is_err());
    }

    /// Found by the fuzz target amqp_delivery: a far-off time panicked.
    #[test]
    fn times_beyond_four_digit_years_are_clamped() {
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 40);
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59.999999999Z");
        let long_ago = SystemTime::UNIX_EPOCH - Duration::from_secs(1 << 40);
        assert_eq!(rfc3339(long_ago), "0000-01-01T00:00:00Z");
        let y2k = SystemTime::UNIX_EPOCH + Duration::from_secs(946_684_800);
        assert_eq!(rfc3339(y2k), "2000-01-01T00:00:00Z");
    }
}
