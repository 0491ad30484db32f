//! Entry points of the fuzz targets (`fuzz/`); not part of the API.

use bytes::Bytes;
use fred::types::Value;
use msg_core::fuzz::{message, pieces, read_event, text};

use crate::entry::{Entry, decode};
use crate::publisher::fields;

/// The stream's name, the entry id, then field, value, field, value ...:
/// an entry as `XREADGROUP` hands it over (fields of any bytes, ours or
/// another client's), decoded as the subscriber does. The same entry
/// decodes to the same message id every time; the message is then read
/// as a CloudEvent.
pub fn entry(data: &[u8]) {
    let mut pieces = pieces(data).into_iter();
    let stream = text(pieces.next().unwrap_or_default());
    let id = text(pieces.next().unwrap_or_default());
    let rest: Vec<&[u8]> = pieces.collect();
    let fields = rest
        .chunks(2)
        .map(|pair| {
            let value = pair.get(1).copied().unwrap_or_default();
            (
                Bytes::copy_from_slice(pair[0]),
                Bytes::copy_from_slice(value),
            )
        })
        .collect();
    let entry = Entry { id, fields };
    let message = decode(&stream, &entry);
    assert_eq!(
        decode(&stream, &entry).id(),
        message.id(),
        "{stream} {}",
        entry.id
    );
    read_event(&message);
}

/// A message ([`msg_core::fuzz::message`]) written as the publisher
/// writes it and read back as the subscriber reads it: the same message.
pub fn round_trip(data: &[u8]) {
    let Some(sent) = message(data) else { return };
    let fields = fields(&sent)
        .into_iter()
        .map(|(name, value)| {
            let value = match value {
                Value::Bytes(b) => b,
                Value::String(s) => s.into_inner(),
                other => panic!("a field value the publisher does not write: {other:?}"),
            };
            (Bytes::from(name), value)
        })
        .collect();
    let entry = Entry {
        id: "1-1".into(),
        fields,
    };
    assert_eq!(decode("fuzz", &entry), sent);
}
