//! How each protocol's CloudEvents binding puts attributes into headers:
//! their names, where `datacontenttype` goes, and how values are encoded.

use std::borrow::Cow;

use crate::{Message, Result, headers};

use super::decode_error;

/// How a protocol names CloudEvents attributes in its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CloudEventsBinding {
    /// Kafka: `ce_id`, `ce_type`, ...; `datacontenttype` is `content-type`.
    Kafka,
    /// HTTP-style, used for Redis and in memory: `ce-id`, `ce-type`, ...;
    /// `datacontenttype` is `content-type`; values percent-encoded.
    #[default]
    Http,
    /// NATS: `ce-id`, `ce-type`, ... and `ce-datacontenttype`; values
    /// percent-encoded; header names case-insensitive.
    Nats,
    /// AMQP: `cloudEvents:id`, `cloudEvents:type`, ...; reading takes
    /// `cloudEvents_` too, as the binding asks of consumers.
    Amqp,
}

impl CloudEventsBinding {
    /// The header-name prefix of the attributes written.
    pub fn prefix(self) -> &'static str {
        match self {
            CloudEventsBinding::Kafka => "ce_",
            CloudEventsBinding::Http | CloudEventsBinding::Nats => "ce-",
            CloudEventsBinding::Amqp => "cloudEvents:",
        }
    }

    /// The header that carries `datacontenttype` when writing.
    pub(crate) fn content_type_header(self) -> Cow<'static, str> {
        match self {
            CloudEventsBinding::Nats => Cow::Borrowed("ce-datacontenttype"),
            _ => Cow::Borrowed(headers::CONTENT_TYPE),
        }
    }

    /// A header value as written: the `ce-` bindings percent-encode space,
    /// `"`, `%` and everything outside printable ASCII (UTF-8 bytes,
    /// upper-case hex), so that any string survives a header.
    pub(crate) fn encode_value(self, value: &str) -> Cow<'_, str> {
        match self {
            CloudEventsBinding::Http | CloudEventsBinding::Nats => percent_encode(value),
            _ => Cow::Borrowed(value),
        }
    }

    #[cfg(test)]
    pub(crate) const ALL: [CloudEventsBinding; 4] = [
        CloudEventsBinding::Kafka,
        CloudEventsBinding::Http,
        CloudEventsBinding::Nats,
        CloudEventsBinding::Amqp,
    ];
}

/// How a received message's headers are read: one rule per family of
/// prefixes, whichever binding wrote them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reader {
    /// `ce_`: names as they are, values as they are.
    Kafka,
    /// `ce-` (HTTP, NATS): names case-insensitive, values percent-decoded
    /// (after unquoting a quoted string).
    Dash,
    /// `cloudEvents:` or `cloudEvents_`.
    Amqp(&'static str),
}

impl Reader {
    /// The reader for the binding whose `specversion` header `message` has.
    pub(crate) fn detect(message: &Message) -> Option<Self> {
        [
            Reader::Kafka,
            Reader::Dash,
            Reader::Amqp("cloudEvents:"),
            Reader::Amqp("cloudEvents_"),
        ]
        .into_iter()
        .find(|r| r.raw(message, "specversion").is_some())
    }

    pub(crate) fn prefix(self) -> &'static str {
        match self {
            Reader::Kafka => "ce_",
            Reader::Dash => "ce-",
            Reader::Amqp(prefix) => prefix,
        }
    }

    /// The attribute `name`'s header, as it arrived.
    fn raw<'m>(self, message: &'m Message, name: &str) -> Option<&'m str> {
        let prefix = self.prefix();
        message.headers().iter().find_map(|(n, v)| {
            let attr = if self == Reader::Dash {
                n.get(..prefix.len())
                    .filter(|p| p.eq_ignore_ascii_case(prefix))
                    .map(|_| &n[prefix.len()..])
                    .filter(|a| a.eq_ignore_ascii_case(name))
            } else {
                n.strip_prefix(prefix).filter(|a| *a == name)
            };
            attr.map(|_| v)
        })
    }

    /// The attribute `name`, decoded.
    pub(crate) fn attr(self, message: &Message, name: &str) -> Result<Option<String>> {
        self.raw(message, name)
            .map(|v| self.decode(name, v))
            .transpose()
    }

    /// The extension attributes: every attribute header not in `known`.
    pub(crate) fn extensions(
        self,
        message: &Message,
        known: &[&str],
    ) -> Result<Vec<(String, String)>> {
        let prefix = self.prefix();
        let mut out = Vec::new();
        for (n, v) in message.headers().iter() {
            let name = match self {
                Reader::Dash => n
                    .get(..prefix.len())
                    .filter(|p| p.eq_ignore_ascii_case(prefix))
                    .map(|_| n[prefix.len()..].to_ascii_lowercase()),
                _ => n.strip_prefix(prefix).map(str::to_owned),
            };
            // Header names differing only in case (`ce-Foo`, `ce-foo`) name
            // one attribute: the first is it, as for the known ones.
            if let Some(name) = name.filter(|a| !known.contains(&a.as_str()))
                && !out.iter().any(|(seen, _)| *seen == name)
            {
                let value = self.decode(&name, v)?;
                out.push((name, value));
            }
        }
        Ok(out)
    }

    fn decode(self, name: &str, value: &str) -> Result<String> {
        match self {
            Reader::Dash => percent_decode(&unquote(value))
                .map_err(|reason| decode_error(format!("CloudEvent attribute {name:?}: {reason}"))),
            _ => Ok(value.to_owned()),
        }
    }
}

/// The value of the header named `name`, compared case-insensitively.
pub(crate) fn header_ignoring_case<'m>(message: &'m Message, name: &str) -> Option<&'m str> {
    message
        .headers()
        .iter()
        .find_map(|(n, v)| n.eq_ignore_ascii_case(name).then_some(v))
}

fn percent_encode(value: &str) -> Cow<'_, str> {
    let keep = |b: u8| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%';
    if value.bytes().all(keep) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Cow::Owned(out)
}

/// One round of percent-decoding; the bytes must be UTF-8 (an overlong
/// encoding such as `%C0%A0` is refused).
fn percent_decode(value: &str) -> std::result::Result<String, String> {
    if !value.contains('%') {
        return Ok(value.to_owned());
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("a bad percent-encoding at byte {i}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-encoded bytes that are not UTF-8".to_owned())
}

/// A double-quoted string unescaped (RFC 7230 §3.2.6), as older binding
/// versions allowed; anything else as it is.
fn unquote(value: &str) -> Cow<'_, str> {
    let trimmed = value.trim();
    let Some(inner) = trimmed.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return Cow::Borrowed(value);
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(escaped) = chars.next() {
                out.push(escaped);
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nats_bindings_own_example_encodes_as_it_says() {
        // NATS protocol binding §3.1.3.2: "Euro € 😀".
        assert_eq!(
            percent_encode("Euro \u{20AC} \u{1F600}"),
            "Euro%20%E2%82%AC%20%F0%9F%98%80"
        );
        assert_eq!(
            percent_decode("Euro%20%E2%82%AC%20%F0%9F%98%80").unwrap(),
            "Euro \u{20AC} \u{1F600}"
        );
    }

    #[test]
    fn what_must_be_encoded_is_and_nothing_else() {
        assert_eq!(
            percent_encode("order 1 ✓ 100%41"),
            "order%201%20%E2%9C%93%20100%2541"
        );
        assert_eq!(percent_encode("a\"b"), "a%22b");
        assert_eq!(percent_encode("/shop/orders?x=1&y"), "/shop/orders?x=1&y");
        assert!(matches!(percent_encode("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn decoding_accepts_lower_case_and_needless_encoding_and_refuses_bad_utf8() {
        assert_eq!(percent_decode("%e2%82%ac").unwrap(), "\u{20AC}");
        assert_eq!(percent_decode("%41bc").unwrap(), "Abc");
        // The binding's own example of what MUST be rejected.
        assert!(percent_decode("%C0%A0").is_err());
        assert!(percent_decode("100%").is_err());
        assert!(percent_decode("%zz").is_err());
    }

    #[test]
    fn quoted_values_of_older_writers_are_unquoted_first() {
        assert_eq!(unquote(r#""a \"quoted\" value""#), r#"a "quoted" value"#);
        assert_eq!(unquote("plain"), "plain");
    }
}
