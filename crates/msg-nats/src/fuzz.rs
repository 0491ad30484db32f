//! Entry points of the fuzz targets (`fuzz/`); not part of the API.

use std::str::FromStr;

use async_nats::{HeaderMap, HeaderName};
use bytes::Bytes;
use msg_core::Uuid;
use msg_core::fuzz::{assert_same, message, pieces, read_event, text};

use crate::publisher::nats_headers;
use crate::subscriber::decode_parts;

/// Header name, value, name, value, ... then the payload: a message as
/// another client could send it (names and values the NATS protocol
/// cannot carry are left out), decoded as the subscriber does, then
/// read as a CloudEvent.
pub fn headers(data: &[u8]) {
    let mut pieces = pieces(data);
    let payload = Bytes::copy_from_slice(pieces.pop().unwrap_or_default());
    let mut map = HeaderMap::new();
    for pair in pieces.chunks(2) {
        let Ok(name) = HeaderName::from_str(&text(pair[0])) else {
            continue;
        };
        let value = text(pair.get(1).copied().unwrap_or_default());
        if value.contains(['\r', '\n']) {
            continue;
        }
        map.append(name, value);
    }
    let fallback = Uuid::from_u64_pair(7, 7);
    let message = decode_parts(Some(&map), &payload, || fallback);
    read_event(&message);
}

/// A message ([`msg_core::fuzz::message`]) written as the publisher
/// writes it and read back as the subscriber reads it: the same message,
/// or an error when NATS headers cannot carry it.
pub fn round_trip(data: &[u8]) {
    let Some(sent) = message(data) else { return };
    let Ok(map) = nats_headers("fuzz", &sent) else {
        return;
    };
    let read = decode_parts(Some(&map), sent.payload(), || {
        panic!("the id of {sent:?} is in its headers")
    });
    assert_same(&read, &sent);
}
