//! Entry points of the fuzz targets (`fuzz/`); not part of the API.

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use msg_core::fuzz::{assert_same, message, pieces, read_event, text};

use crate::publisher::properties;
use crate::subscriber::decode;

/// A short string of at most 255 bytes, as AMQP carries it.
fn short(piece: &[u8]) -> ShortString {
    let mut s = text(piece);
    while s.len() > 255 {
        s.pop();
    }
    ShortString::from(s)
}

/// A header value of the kind the first byte picks.
fn value(piece: &[u8]) -> AMQPValue {
    let (kind, rest) = piece.split_first().unwrap_or((&0, &[]));
    // Big-endian, the low-order bytes last: a short piece is a small
    // number.
    let number = |rest: &[u8]| {
        let tail = &rest[rest.len().saturating_sub(8)..];
        let mut bytes = [0u8; 8];
        bytes[8 - tail.len()..].copy_from_slice(tail);
        u64::from_be_bytes(bytes)
    };
    match kind % 6 {
        0 => AMQPValue::LongString(LongString::from(rest.to_vec())),
        1 => AMQPValue::ShortString(short(rest)),
        2 => AMQPValue::Timestamp(number(rest)),
        3 => AMQPValue::LongLongInt(number(rest) as i64),
        4 => AMQPValue::LongUInt(number(rest) as u32),
        _ => AMQPValue::Boolean(rest.first().is_some_and(|b| b % 2 == 1)),
    }
}

/// The properties `message-id`, `content-type`, `correlation-id`, the
/// `timestamp` (8 bytes), the exchange and routing key; then header name,
/// typed value (first byte: long string, short string, timestamp,
/// integer, unsigned, boolean), ...; then the body: a delivery as another
/// client's publish could reach msg, decoded as the subscriber does. The
/// same delivery has the same id every time; the message is then read as
/// a CloudEvent.
pub fn delivery(data: &[u8]) {
    let mut pieces = pieces(data);
    let body = pieces.pop().unwrap_or_default().to_vec();
    let mut pieces = pieces.into_iter();
    let mut next = || pieces.next().unwrap_or_default();
    let (id, content_type, correlation) = (next(), next(), next());
    let timestamp = value(&[&[2], next()].concat());
    let (exchange, routing_key) = (short(next()), short(next()));
    let mut table = FieldTable::default();
    let rest: Vec<&[u8]> = std::iter::from_fn(|| pieces.next()).collect();
    for pair in rest.chunks(2) {
        table.insert(
            short(pair[0]),
            value(pair.get(1).copied().unwrap_or_default()),
        );
    }
    let mut props = BasicProperties::default().with_headers(table);
    if !id.is_empty() {
        props = props.with_message_id(short(id));
    }
    if !content_type.is_empty() {
        props = props.with_content_type(short(content_type));
    }
    if !correlation.is_empty() {
        props = props.with_correlation_id(short(correlation));
    }
    if let AMQPValue::Timestamp(t) = timestamp {
        props = props.with_timestamp(t);
    }
    let deliver = || {
        let mut d = Delivery::mock(
            1,
            exchange.clone(),
            routing_key.clone(),
            false,
            body.clone(),
        );
        d.properties = props.clone();
        d
    };
    let (message, ..) = decode(&deliver());
    assert_eq!(decode(&deliver()).0.id(), message.id());
    read_event(&message);
}

/// A message ([`msg_core::fuzz::message`]) written as the publisher
/// writes it and read back as the subscriber reads it: the same message.
pub fn round_trip(data: &[u8]) {
    let Some(sent) = message(data) else { return };
    let mut delivery = Delivery::mock(
        1,
        "msg".into(),
        "fuzz".into(),
        false,
        sent.payload().to_vec(),
    );
    delivery.properties = properties(&sent, 0, None);
    let (read, copies_before, _, topic) = decode(&delivery);
    assert_same(&read, &sent);
    assert_eq!((copies_before, topic), (0, None));
}
