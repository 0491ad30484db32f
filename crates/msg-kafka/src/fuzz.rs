//! Entry points of the fuzz targets (`fuzz/`); not part of the API.

use msg_core::fuzz::{assert_same, message, pieces, read_event, text};
use rdkafka::Timestamp;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};

use crate::publisher::{record_headers, record_key};
use crate::subscriber::decode;

/// The record key (none when empty), then header name, value, ... (a
/// value of any bytes, as Kafka allows), then the value: a record as
/// another client could produce it, decoded as the subscriber does. The
/// same record has the same id every time; the message is then read as a
/// CloudEvent.
pub fn record(data: &[u8]) {
    let mut pieces = pieces(data);
    let payload = pieces.pop().unwrap_or_default().to_vec();
    let mut pieces = pieces.into_iter();
    let key = pieces.next().unwrap_or_default().to_vec();
    let rest: Vec<&[u8]> = pieces.collect();
    let mut headers = OwnedHeaders::new();
    for pair in rest.chunks(2) {
        headers = headers.insert(Header {
            key: &text(pair[0]),
            value: pair.get(1).copied(),
        });
    }
    let record = OwnedMessage::new(
        Some(payload),
        (!key.is_empty()).then_some(key),
        "fuzz".into(),
        Timestamp::NotAvailable,
        0,
        7,
        Some(headers),
    );
    let message = decode(&record);
    assert_eq!(decode(&record).id(), message.id());
    read_event(&message);
}

/// A message ([`msg_core::fuzz::message`]) written as the publisher
/// writes it and read back as the subscriber reads it: the same message.
pub fn round_trip(data: &[u8]) {
    let Some(sent) = message(data) else { return };
    let record = OwnedMessage::new(
        Some(sent.payload().to_vec()),
        record_key(&sent),
        "fuzz".into(),
        Timestamp::NotAvailable,
        0,
        7,
        Some(record_headers(&sent)),
    );
    // `msg-key-hex` comes back last: the subscriber writes it.
    assert_same(&decode(&record), &sent);
}
