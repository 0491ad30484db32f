//! The message: id, key, payload, headers.

use std::sync::Arc;

use bytes::Bytes;
use uuid::Uuid;

use crate::{Error, Result, headers};

/// Header names and values, in insertion order.
///
/// Cloning is one reference-count increment; the first change after a clone
/// copies the list. Names are case-sensitive; a name appears at most once.
///
/// Names are visible ASCII without whitespace (every broker accepts those);
/// values are any UTF-8 text without control characters other than tab.
/// [`Headers::insert`] does not check them so that building a message stays
/// infallible; publishers call [`Message::validate`], and
/// [`Headers::try_insert`] checks at once.
#[derive(Clone, Default)]
pub struct Headers(Option<Arc<Vec<(String, String)>>>);

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.list() == other.list()
    }
}

impl Eq for Headers {}

/// No headers, and no allocation for them.
const NONE: &[(String, String)] = &[];

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    fn list(&self) -> &[(String, String)] {
        self.0.as_deref().map_or(NONE, Vec::as_slice)
    }

    /// Sets `name` to `value`, replacing an existing value in place.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        let list = Arc::make_mut(self.0.get_or_insert_with(Default::default));
        match list.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => list.push((name, value)),
        }
    }

    /// Like [`insert`](Self::insert), but checks the name and value first.
    pub fn try_insert(&mut self, name: impl Into<String>, value: impl Into<String>) -> Result<()> {
        let (name, value) = (name.into(), value.into());
        validate_header(&name, &value)?;
        self.insert(name, value);
        Ok(())
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.list()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let pos = self.list().iter().position(|(n, _)| n == name)?;
        let list = Arc::make_mut(self.0.as_mut()?);
        Some(list.remove(pos).1)
    }

    /// Whether `name` is set.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The number of headers.
    pub fn len(&self) -> usize {
        self.list().len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.list().is_empty()
    }

    /// The headers in insertion order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.list().iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Checks every name and value.
    pub fn validate(&self) -> Result<()> {
        self.iter().try_for_each(|(n, v)| validate_header(n, v))
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        for (n, v) in iter {
            headers.insert(n, v);
        }
        headers
    }
}

/// Checks one header name and value against the portable rules.
pub fn validate_header(name: &str, value: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidHeader {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("header name is empty");
    }
    if name.len() > 255 {
        return invalid("header name is longer than 255 bytes");
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return invalid("header names may contain only visible ASCII characters");
    }
    // The transports carry the id and the key in headers of these names:
    // a header of the message's own would be taken for them.
    if name.eq_ignore_ascii_case(crate::headers::MSG_ID)
        || name.eq_ignore_ascii_case(crate::headers::MSG_KEY)
    {
        return invalid("reserved: the message's id and key go there (Message::with_id, with_key)");
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return invalid("header value contains a control character");
    }
    Ok(())
}

/// Everything a [`Message`] is made of, for stores (outbox, scheduler,
/// dead letters) that persist a message and restore it exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageParts {
    /// The message id.
    pub id: Uuid,
    /// The ordering / partition key.
    pub key: Option<String>,
    /// The payload.
    pub payload: Bytes,
    /// The headers, in order.
    pub headers: Vec<(String, String)>,
}

/// A message: what is published and what a handler receives.
///
/// Cloning is cheap: the payload is [`Bytes`], the headers and key are
/// reference counted.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    id: Uuid,
    key: Option<Arc<str>>,
    payload: Bytes,
    headers: Headers,
}

impl Message {
    /// A message with a new UUID v7 id (time-ordered) and no key or headers.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self::with_id(Uuid::now_v7(), payload)
    }

    /// A message from its parts, as [`into_parts`](Self::into_parts) gave
    /// them. Nothing is checked, so that what was stored comes back as it
    /// was; a name given twice keeps its last value, in the first one's
    /// place.
    pub fn from_parts(parts: MessageParts) -> Self {
        let MessageParts {
            id,
            key,
            payload,
            headers,
        } = parts;
        let mut message = Self::with_id(id, payload);
        message.key = key.map(Arc::from);
        for (name, value) in headers {
            message.headers.insert(name, value);
        }
        message
    }

    /// The message's parts: id, key, payload, headers in order.
    pub fn into_parts(self) -> MessageParts {
        MessageParts {
            id: self.id,
            key: self.key.map(|k| k.to_string()),
            payload: self.payload,
            headers: self
                .headers
                .iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    /// A message with the given id.
    pub fn with_id(id: Uuid, payload: impl Into<Bytes>) -> Self {
        Self {
            id,
            key: None,
            payload: payload.into(),
            headers: Headers::new(),
        }
    }

    /// Sets the ordering / partition key.
    pub fn with_key(mut self, key: impl Into<Arc<str>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Sets the `content-type` header.
    pub fn with_content_type(self, content_type: impl Into<String>) -> Self {
        self.with_header(headers::CONTENT_TYPE, content_type)
    }

    /// The message id, stable across retries and relays.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The ordering key.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The ordering key, shared.
    pub(crate) fn key_arc(&self) -> Option<Arc<str>> {
        self.key.clone()
    }

    /// Sets or clears the ordering key.
    pub fn set_key(&mut self, key: Option<Arc<str>>) {
        self.key = key;
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Replaces the payload.
    pub fn set_payload(&mut self, payload: impl Into<Bytes>) {
        self.payload = payload.into();
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The headers, to change them.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// The value of one header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The conversation this message belongs to: its `correlation-id`
    /// header, or its own id when it has none (it starts a conversation).
    /// The router gives the messages a handler returns the same
    /// correlation id, unless they set their own.
    ///
    /// ```
    /// use msg_core::{Message, headers};
    /// let first = Message::new("order placed");
    /// assert_eq!(first.correlation_id(), first.id().to_string());
    /// let reply = Message::new("invoiced").with_header(headers::CORRELATION_ID, "conv-1");
    /// assert_eq!(reply.correlation_id(), "conv-1");
    /// ```
    pub fn correlation_id(&self) -> std::borrow::Cow<'_, str> {
        match self.header(headers::CORRELATION_ID) {
            Some(id) => std::borrow::Cow::Borrowed(id),
            None => std::borrow::Cow::Owned(self.id.to_string()),
        }
    }

    /// Checks the headers; publishers call this before sending.
    pub fn validate(&self) -> Result<()> {
        self.headers.validate()
    }

    /// The payload decoded from JSON. A payload that does not decode is a
    /// permanent [`Error::Decode`].
    ///
    /// ```
    /// let message = msg_core::Message::new(r#"{"id":7}"#);
    /// let value: serde_json::Value = message.json()?;
    /// assert_eq!(value["id"], 7);
    /// # Ok::<_, msg_core::Error>(())
    /// ```
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        crate::codec::Decoder::decode(&crate::JsonCodec, &self.payload)
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The payload may be large or binary: show its size, not its bytes.
        f.debug_struct("Message")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("payload_len", &self.payload.len())
            .field("headers", &self.headers)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip_losslessly() {
        let original = Message::new(vec![0u8, 255, 10, 13])
            .with_key("k-ü")
            .with_header("z-first", "1")
            .with_header("a-second", "grüß \t dich")
            .with_header("content-type", "application/octet-stream");
        let parts = original.clone().into_parts();
        assert_eq!(parts.id, original.id());
        assert_eq!(parts.key.as_deref(), Some("k-ü"));
        assert_eq!(
            parts
                .headers
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            ["z-first", "a-second", "content-type"]
        );
        let back = Message::from_parts(parts.clone());
        assert_eq!(back, original);
        assert_eq!(back.into_parts(), parts);
        let bare = Message::new("");
        assert_eq!(Message::from_parts(bare.clone().into_parts()), bare);
    }

    #[test]
    fn headers_keep_order_and_replace_in_place() {
        let mut h = Headers::new();
        h.insert("b", "1");
        h.insert("a", "2");
        h.insert("b", "3");
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![("b", "3"), ("a", "2")]);
        assert_eq!(h.remove("b").as_deref(), Some("3"));
        assert_eq!(h.len(), 1);
        h.remove("a");
        assert_eq!(h, Headers::new(), "emptied headers equal no headers");
        assert_eq!(h.remove("missing"), None);
    }

    #[test]
    fn clone_is_copy_on_write() {
        let m = Message::new("x").with_header("a", "1");
        let mut c = m.clone();
        c.headers_mut().insert("a", "2");
        assert_eq!(m.header("a"), Some("1"));
        assert_eq!(c.header("a"), Some("2"));
        assert_eq!(c.id(), m.id());
    }

    #[test]
    fn invalid_headers_are_reported() {
        assert!(Message::new("").with_header("", "v").validate().is_err());
        assert!(Message::new("").with_header("a b", "v").validate().is_err());
        assert!(
            Message::new("")
                .with_header("a", "line\nbreak")
                .validate()
                .is_err()
        );
        let mut h = Headers::new();
        assert!(h.try_insert("ok", "tab\tand ünïcödé ✓").is_ok());
        assert!(h.try_insert("bad\u{7f}", "v").is_err());
        assert_eq!(h.len(), 1);
        // Found by the fuzz target nats_round_trip: Kafka took such a
        // header for the id, NATS and AMQP for the key.
        for reserved in ["msg-id", "MSG-KEY"] {
            assert!(
                Message::new("")
                    .with_header(reserved, "x")
                    .validate()
                    .is_err(),
                "{reserved}"
            );
        }
    }

    #[test]
    fn ids_are_v7_and_unique() {
        let a = Message::new("");
        let b = Message::new("");
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id().get_version_num(), 7);
    }

    #[test]
    fn debug_hides_payload_bytes() {
        let m = Message::new(vec![0u8; 1024]);
        let s = format!("{m:?}");
        assert!(s.contains("payload_len: 1024"), "{s}");
    }
}
