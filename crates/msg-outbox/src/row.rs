//! A message as an outbox row, and back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use msg_core::raw::topic::validate_topic;
use msg_core::{Bytes, Error, Message, MessageParts, PublishOptions, Result, Uuid};

/// What `enqueue` writes: everything checked before anything is written.
#[derive(Debug)]
pub(crate) struct NewRow {
    pub(crate) id: String,
    pub(crate) topic: String,
    pub(crate) key: Option<String>,
    /// The headers as a JSON array of `[name, value]` pairs, in order.
    pub(crate) headers: String,
    pub(crate) payload: Vec<u8>,
    /// Milliseconds since the Unix epoch.
    pub(crate) deliver_at: Option<i64>,
    pub(crate) ttl_ms: Option<i64>,
    pub(crate) reply_to: Option<String>,
    pub(crate) enqueued_at: i64,
}

impl NewRow {
    /// The row for `message` to `topic`: an invalid topic or header is an
    /// error here, at enqueue, not a row that can never be published.
    pub(crate) fn new(topic: &str, message: Message, options: &PublishOptions) -> Result<Self> {
        validate_topic(topic)?;
        message.validate()?;
        if let Some(reply_to) = &options.reply_to {
            validate_topic(reply_to)?;
        }
        let MessageParts {
            id,
            key,
            payload,
            headers,
        } = message.into_parts();
        Ok(Self {
            id: id.to_string(),
            topic: topic.to_owned(),
            key,
            headers: serde_json::to_string(&headers).map_err(|e| Error::Encode(e.into()))?,
            payload: payload.to_vec(),
            deliver_at: options.deliver_at.map(millis),
            ttl_ms: options
                .ttl
                .map(|ttl| i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
            reply_to: options.reply_to.clone(),
            enqueued_at: millis(SystemTime::now()),
        })
    }
}

/// A row a relay claimed, to publish.
#[derive(Debug, Clone)]
pub(crate) struct ClaimedRow {
    pub(crate) seq: i64,
    pub(crate) id: String,
    pub(crate) topic: String,
    pub(crate) key: Option<String>,
    pub(crate) headers: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) deliver_at: Option<i64>,
    pub(crate) ttl_ms: Option<i64>,
    pub(crate) reply_to: Option<String>,
    /// Failed publishes so far.
    pub(crate) attempts: i64,
    /// Milliseconds since the Unix epoch.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) enqueued_at: i64,
}

impl ClaimedRow {
    /// The message and options as they were enqueued, moving the payload
    /// out of the row (it is published once; the row keeps what recording
    /// the outcome needs). A row that does not decode (edited by hand, say)
    /// is a permanent error: it goes to the failed state with the reason.
    pub(crate) fn take_message(&mut self) -> Result<(Message, PublishOptions)> {
        let corrupt = |what: &str, e: Box<dyn std::error::Error + Send + Sync>| {
            Error::Decode(format!("outbox row {}: {what}: {e}", self.seq).into())
        };
        let id = Uuid::parse_str(&self.id).map_err(|e| corrupt("id", e.into()))?;
        let headers: Vec<(String, String)> =
            serde_json::from_str(&self.headers).map_err(|e| corrupt("headers", e.into()))?;
        let message = Message::from_parts(MessageParts {
            id,
            key: self.key.clone(),
            payload: Bytes::from(std::mem::take(&mut self.payload)),
            headers,
        });
        let mut options = PublishOptions::new();
        if let Some(at) = self.deliver_at {
            options = options.deliver_at(from_millis(at));
        }
        if let Some(ttl) = self.ttl_ms {
            options = options.ttl(Duration::from_millis(u64::try_from(ttl).unwrap_or(0)));
        }
        if let Some(reply_to) = &self.reply_to {
            options = options.reply_to(reply_to.clone());
        }
        Ok((message, options))
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn millis(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
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

/// Now, in milliseconds since the Unix epoch.
pub(crate) fn now_millis() -> i64 {
    millis(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(row: NewRow) -> ClaimedRow {
        ClaimedRow {
            seq: 1,
            id: row.id,
            topic: row.topic,
            key: row.key,
            headers: row.headers,
            payload: row.payload,
            deliver_at: row.deliver_at,
            ttl_ms: row.ttl_ms,
            reply_to: row.reply_to,
            attempts: 0,
            enqueued_at: row.enqueued_at,
        }
    }

    #[test]
    fn a_message_and_its_options_come_back_as_they_went_in() {
        let message = Message::new(&b"\x00binary\xff"[..])
            .with_key("order-7")
            .with_header("b", "2")
            .with_header("a", "1");
        let at = UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        let options = PublishOptions::new()
            .deliver_at(at)
            .ttl(Duration::from_secs(60))
            .reply_to("replies");
        let row = NewRow::new("orders", message.clone(), &options).unwrap();
        let (back, back_options) = claimed(row).take_message().unwrap();
        assert_eq!(back, message, "id, key, payload, headers in order");
        assert_eq!(back_options, options);
    }

    #[test]
    fn an_invalid_topic_or_header_is_refused_at_enqueue() {
        assert!(matches!(
            NewRow::new("", Message::new("x"), &PublishOptions::new()),
            Err(Error::InvalidTopic { .. })
        ));
        let bad = Message::new("x").with_header("bad name", "v");
        assert!(matches!(
            NewRow::new("orders", bad, &PublishOptions::new()),
            Err(Error::InvalidHeader { .. })
        ));
    }

    #[test]
    fn a_row_that_does_not_decode_says_which_and_why() {
        let mut row = claimed(NewRow::new("t", Message::new("x"), &PublishOptions::new()).unwrap());
        row.headers = "not json".into();
        let err = row.take_message().unwrap_err();
        assert!(err.to_string().contains("outbox row 1: headers"), "{err}");
    }
}
