//! Topic names and topic patterns.
//!
//! A topic name is one or more segments separated by `.`; a segment is made
//! of ASCII letters, digits, `_` and `-`. That is the set every broker
//! accepts unchanged (Kafka's legal characters, NATS subjects, AMQP routing
//! keys, Redis keys), so a name that works on one transport works on all.
//!
//! A pattern may also use the NATS wildcards: `*` matches exactly one
//! segment, `>` matches one or more trailing segments and must come last.

use crate::{Error, Result};

/// The longest topic name accepted (Kafka's limit).
pub const MAX_TOPIC_LEN: usize = 249;

/// Checks that `topic` is a valid topic name (no wildcards).
pub fn validate_topic(topic: &str) -> Result<()> {
    validate(topic, false)
}

/// Checks that `pattern` is a valid topic name or topic pattern.
pub fn validate_pattern(pattern: &str) -> Result<()> {
    validate(pattern, true)
}

/// Whether `pattern` contains a wildcard segment.
pub fn is_pattern(pattern: &str) -> bool {
    pattern.split('.').any(|s| s == "*" || s == ">")
}

fn validate(topic: &str, wildcards: bool) -> Result<()> {
    // Every publish checks its topic: take the common case, a plain name,
    // in one pass over the bytes. Wildcards and errors go the segment-wise
    // way below, which says what is wrong.
    if is_plain_name(topic) {
        return Ok(());
    }
    validate_segments(topic, wildcards)
}

/// The segment-wise validation alone, without the fast path: the fuzz
/// target checks that both agree.
#[doc(hidden)]
pub fn validate_slowly(topic: &str, wildcards: bool) -> Result<()> {
    validate_segments(topic, wildcards)
}

fn validate_segments(topic: &str, wildcards: bool) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidTopic {
            topic: topic.to_owned(),
            reason,
        })
    };
    if topic.is_empty() {
        return invalid("topic is empty");
    }
    if topic.len() > MAX_TOPIC_LEN {
        return invalid("topic is longer than 249 bytes");
    }
    let mut segments = topic.split('.').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() {
            return invalid("empty segment (leading, trailing or double '.')");
        }
        match segment {
            "*" | ">" if !wildcards => {
                return invalid("wildcards are only allowed when subscribing");
            }
            "*" => {}
            ">" if segments.peek().is_some() => {
                return invalid("'>' must be the last segment");
            }
            ">" => {}
            _ => {
                if !segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return invalid("segments may contain only ASCII letters, digits, '_' and '-'");
                }
            }
        }
    }
    Ok(())
}

/// Whether `topic` is a valid name without wildcards.
fn is_plain_name(topic: &str) -> bool {
    if topic.len() > MAX_TOPIC_LEN {
        return false;
    }
    let mut segment_len = 0usize;
    for &b in topic.as_bytes() {
        if b == b'.' {
            if segment_len == 0 {
                return false;
            }
            segment_len = 0;
        } else if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            segment_len += 1;
        } else {
            return false;
        }
    }
    segment_len > 0
}

/// Whether the topic name `topic` matches `pattern`.
///
/// Both are assumed valid. A pattern without wildcards matches only itself.
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    let mut p = pattern.split('.');
    let mut t = topic.split('.');
    loop {
        match (p.next(), t.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(ps), Some(ts)) if ps == ts => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for t in ["orders", "orders.created", "a-b_c.D9", "x.dlq"] {
            validate_topic(t).unwrap();
        }
        for p in ["orders.*", "orders.>", "*.created", ">", "*"] {
            validate_pattern(p).unwrap();
        }
    }

    #[test]
    fn invalid_names_say_why() {
        let cases = [
            ("", "topic is empty"),
            ("a..b", "empty segment (leading, trailing or double '.')"),
            (".a", "empty segment (leading, trailing or double '.')"),
            ("a.", "empty segment (leading, trailing or double '.')"),
            (
                "a b",
                "segments may contain only ASCII letters, digits, '_' and '-'",
            ),
            (
                "é",
                "segments may contain only ASCII letters, digits, '_' and '-'",
            ),
            ("a.*", "wildcards are only allowed when subscribing"),
        ];
        for (topic, reason) in cases {
            match validate_topic(topic) {
                Err(Error::InvalidTopic { reason: r, .. }) => assert_eq!(r, reason, "{topic:?}"),
                other => panic!("{topic:?}: {other:?}"),
            }
        }
        assert!(validate_topic(&"a".repeat(250)).is_err());
        validate_topic(&"a".repeat(249)).unwrap();
        assert!(validate_pattern("a.>.b").is_err());
        assert!(validate_pattern("a.b*").is_err());
    }

    #[test]
    fn the_fast_path_agrees_with_the_segment_wise_check() {
        // Every string of up to four characters from an alphabet with
        // each kind of byte that matters.
        let alphabet = ['a', 'Z', '9', '_', '-', '.', '*', '>', ' ', 'é'];
        let mut strings = vec![String::new()];
        let mut last = strings.clone();
        for _ in 0..4 {
            last = last
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            strings.extend(last.iter().cloned());
        }
        assert_eq!(strings.len(), 1 + 10 + 100 + 1_000 + 10_000);
        for s in &strings {
            assert_eq!(
                is_plain_name(s),
                validate_segments(s, false).is_ok(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn matching() {
        assert!(topic_matches("orders.created", "orders.created"));
        assert!(!topic_matches("orders.created", "orders.created.eu"));
        assert!(topic_matches("orders.*", "orders.created"));
        assert!(!topic_matches("orders.*", "orders"));
        assert!(!topic_matches("orders.*", "orders.created.eu"));
        assert!(topic_matches("orders.>", "orders.created.eu"));
        assert!(!topic_matches("orders.>", "orders"));
        assert!(topic_matches("*.created", "invoices.created"));
        assert!(topic_matches(">", "anything.at.all"));
        assert!(is_pattern("a.*") && is_pattern("a.>") && !is_pattern("a.b"));
    }
}
