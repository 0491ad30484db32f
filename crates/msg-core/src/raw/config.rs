//! What every transport's configuration shares: one serde struct read from
//! a file, from the environment, or from the options in a URL's query, so
//! that an option has one name everywhere.
//!
//! Durations are written as text with a unit (`500ms`, `10s`, `2m`), and
//! `max_deliveries` as a number or `none`, in a URL and in a file alike.

use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

use super::url::{redact, redact_secrets_of};
use crate::{Error, Result};

/// Splits a URL at its query: `(everything before '?', the query)`.
pub fn split_query(url: &str) -> (&str, &str) {
    url.split_once('?').unwrap_or((url, ""))
}

/// The TLS file options a transport takes (`tls_ca`, `tls_cert`,
/// `tls_key`), which of them are set.
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsFiles {
    /// `tls_ca` is set.
    pub ca: bool,
    /// `tls_cert` is set.
    pub cert: bool,
    /// `tls_key` is set.
    pub key: bool,
}

impl TlsFiles {
    /// Checks them against `url`: each only when the URL speaks TLS (its
    /// scheme is `tls_scheme`, such as `rediss://`). `what` names the URL
    /// in errors, which show it redacted. (That a client certificate comes
    /// with its key is checked where they are used, [`client_certificate`]:
    /// a configuration is read one option at a time.)
    pub fn check(self, what: &str, url: &str, tls_scheme: &str) -> Result<()> {
        let set = [
            ("tls_ca", self.ca),
            ("tls_cert", self.cert),
            ("tls_key", self.key),
        ];
        if !url.starts_with(tls_scheme)
            && let Some((option, _)) = set.iter().find(|(_, set)| *set)
        {
            return Err(Error::invalid_config(format!(
                "invalid {what} URL {}: {option} is set but the URL is not {tls_scheme}",
                redact(url)
            )));
        }
        Ok(())
    }
}

/// The client certificate and key files of a configuration (`tls_cert`,
/// `tls_key`), which go together: both, or neither.
pub fn client_certificate<'a>(
    cert: Option<&'a std::path::Path>,
    key: Option<&'a std::path::Path>,
) -> Result<Option<(&'a std::path::Path, &'a std::path::Path)>> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        _ => Err(Error::invalid_config(
            "tls_cert and tls_key go together: a client certificate needs its key",
        )),
    }
}

/// Reads URL query options (`a=1&b=10s`, percent-encoded) into `T`, whose
/// fields are the options: a `#[serde(default, deny_unknown_fields)]`
/// struct. `what` names the URL in errors, which show it redacted.
pub fn query_options<T: DeserializeOwned>(what: &str, url: &str, query: &str) -> Result<T> {
    serde_urlencoded::from_str(query).map_err(|e| {
        // The parser's message quotes what it refused, which may be a
        // piece of a malformed URL with a password in it.
        Error::invalid_config_with(
            format!("invalid {what} URL {}", redact(url)),
            redact_secrets_of(url, &e.to_string()),
        )
    })
}

/// Deserializes a duration written as text with a unit: `250ms`, `10s`,
/// `1m 30s`.
pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(de::Error::custom)
}

/// Like [`duration`], for an optional one; `none` is no duration.
pub fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    match text.as_deref() {
        None | Some("none") => Ok(None),
        Some(text) => parse_duration(text).map(Some).map_err(de::Error::custom),
    }
}

fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 500ms or 10s ({e})"))
}

/// Deserializes `max_deliveries`: a number of at least 1, or `none` (or
/// a null) for no limit.
pub fn max_deliveries<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    struct MaxDeliveries;
    impl<'de> Visitor<'de> for MaxDeliveries {
        type Value = Option<u32>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a number of deliveries, or none")
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
            match u32::try_from(n) {
                Ok(0) | Err(_) => Err(E::custom(format!(
                    "max_deliveries must be from 1 to {}, or none",
                    u32::MAX
                ))),
                Ok(n) => Ok(Some(n)),
            }
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
            self.visit_u64(u64::try_from(n).unwrap_or(0))
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            match s {
                "none" => Ok(None),
                _ => match s.parse::<u64>() {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "max_deliveries is a number or none, not {s:?}"
                    ))),
                },
            }
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }
    deserializer.deserialize_any(MaxDeliveries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Options {
        #[serde(deserialize_with = "max_deliveries")]
        max_deliveries: Option<u32>,
        #[serde(deserialize_with = "duration")]
        timeout: Duration,
        #[serde(deserialize_with = "optional_duration")]
        max_age: Option<Duration>,
        count: u64,
        on: bool,
        name: String,
    }

    #[test]
    fn query_options_read_every_kind_of_value() {
        let o: Options = query_options(
            "test",
            "t://h",
            "max_deliveries=5&timeout=1500ms&max_age=2m&count=7&on=true&name=a%20b",
        )
        .unwrap();
        assert_eq!(
            o,
            Options {
                max_deliveries: Some(5),
                timeout: Duration::from_millis(1500),
                max_age: Some(Duration::from_secs(120)),
                count: 7,
                on: true,
                name: "a b".into(),
            }
        );
        let o: Options = query_options("test", "t://h", "max_deliveries=none").unwrap();
        assert_eq!(o.max_deliveries, None);
    }

    #[test]
    fn bad_options_say_what_is_wrong_and_hide_secrets() {
        for (query, says) in [
            ("max_deliveries=0", "max_deliveries must be"),
            ("max_deliveries=many", "number or none"),
            ("timeout=10", "not a duration"),
            ("count=x", "invalid digit"),
            ("colour=red", "unknown field `colour`"),
        ] {
            let e = query_options::<Options>("test", "t://u:s3cret@h", query).unwrap_err();
            let chain = e.chain();
            assert!(chain.contains(says), "{query}: {chain}");
            assert!(!chain.contains("s3cret"), "{chain}");
        }
    }

    #[test]
    fn files_use_the_same_names() {
        let o: Options = serde_json::from_str(
            r#"{ "max_deliveries": 3, "timeout": "10s", "max_age": "none", "count": 1 }"#,
        )
        .unwrap();
        assert_eq!(o.max_deliveries, Some(3));
        assert_eq!(o.timeout, Duration::from_secs(10));
        assert_eq!(o.max_age, None);
        let o: Options = serde_json::from_str(r#"{ "max_deliveries": "none" }"#).unwrap();
        assert_eq!(o.max_deliveries, None);
    }
}
