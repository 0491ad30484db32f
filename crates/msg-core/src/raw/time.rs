//! RFC 3339 timestamps, as CloudEvents and the dead-letter headers use them.

use std::time::SystemTime;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{Error, Result};

/// Formats `t` as RFC 3339 in UTC, e.g. `2026-11-23T01:45:12.123456Z`.
pub fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
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
}
