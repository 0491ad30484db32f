//! Stream entries: parsing the replies of XREADGROUP and XRANGE, and the
//! message an entry holds (its layout is in the publisher module).

use bytes::Bytes;
use fred::types::Value;
use msg_core::raw::stable_id;
use msg_core::{Headers, Message, Uuid};

use crate::publisher::{FIELD_ID, FIELD_KEY, FIELD_PAYLOAD, HEADER_PREFIX};

/// One entry as read from a stream.
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) fields: Vec<(Bytes, Bytes)>,
}

fn bytes_of(v: Value) -> Option<Bytes> {
    match v {
        Value::Bytes(b) => Some(b),
        Value::String(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
        Value::Integer(i) => Some(Bytes::from(i.to_string())),
        _ => None,
    }
}

pub(crate) fn text_of(v: Value) -> Option<String> {
    bytes_of(v).and_then(|b| String::from_utf8(b.to_vec()).ok())
}

/// XREADGROUP (RESP2): [[stream, [entry, ...]], ...], or nil on timeout.
pub(crate) fn parse_read(reply: Value) -> Vec<(String, Vec<Entry>)> {
    let Value::Array(streams) = reply else {
        return Vec::new();
    };
    streams
        .into_iter()
        .filter_map(|s| match s {
            Value::Array(mut pair) if pair.len() == 2 => {
                let entries = pair.pop()?;
                let key = text_of(pair.pop()?)?;
                Some((key, parse_entries(entries)))
            }
            _ => None,
        })
        .collect()
}

/// [[id, [field, value, ...]], ...]; entries deleted meanwhile have nil fields.
pub(crate) fn parse_entries(entries: Value) -> Vec<Entry> {
    let Value::Array(entries) = entries else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(|e| match e {
            Value::Array(mut pair) if pair.len() == 2 => {
                let fields = pair.pop()?;
                let id = text_of(pair.pop()?)?;
                let Value::Array(flat) = fields else {
                    return None;
                };
                let mut fields = Vec::with_capacity(flat.len() / 2);
                let mut it = flat.into_iter();
                while let (Some(f), Some(v)) = (it.next(), it.next()) {
                    fields.push((bytes_of(f)?, bytes_of(v).unwrap_or_default()));
                }
                Some(Entry { id, fields })
            }
            _ => None,
        })
        .collect()
}

/// The message in an entry (layout in the publisher module).
pub(crate) fn decode(stream: &str, entry: &Entry) -> Message {
    let mut id = None;
    let mut key = None;
    let mut payload = Bytes::new();
    let mut headers = Headers::new();
    for (field, value) in &entry.fields {
        let text = || String::from_utf8_lossy(value).into_owned();
        match &field[..] {
            f if f == FIELD_ID.as_bytes() => id = Uuid::parse_str(&text()).ok(),
            f if f == FIELD_KEY.as_bytes() => key = Some(text()),
            f if f == FIELD_PAYLOAD.as_bytes() => payload = value.clone(),
            f => {
                if let Some(name) = f.strip_prefix(HEADER_PREFIX.as_bytes()) {
                    headers.insert(String::from_utf8_lossy(name).into_owned(), text());
                }
            }
        }
    }
    // An entry of another client: an id derived from the entry id stays the
    // same across redeliveries.
    let id = id.unwrap_or_else(|| stable_id(format!("redis/{stream}/{}", entry.id)));
    let mut message = Message::with_id(id, payload);
    if let Some(key) = key {
        message = message.with_key(key);
    }
    *message.headers_mut() = headers;
    message
}
