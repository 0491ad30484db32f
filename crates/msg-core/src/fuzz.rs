//! Entry points of the fuzz targets (`cargo xtask fuzz`, in `fuzz/`) and
//! of the test that replays their corpus. Not part of the API: it changes
//! with the decoders it reaches.
//!
//! Each entry point takes the fuzzer's bytes, builds what a broker could
//! hand over from them, runs the code under test and checks what must
//! hold for any input (a panic is a finding).

use std::path::PathBuf;

use bytes::Bytes;

use crate::raw::topic::{topic_matches, validate_pattern, validate_topic};
use crate::{CloudEventsBinding, Event, Message, RawCodec};

/// The four bindings, for round trips.
const BINDINGS: [CloudEventsBinding; 4] = [
    CloudEventsBinding::Kafka,
    CloudEventsBinding::Http,
    CloudEventsBinding::Nats,
    CloudEventsBinding::Amqp,
];

/// `data` split at NUL bytes: the pieces an entry point builds its input
/// from (libFuzzer finds the separator at once).
pub fn pieces(data: &[u8]) -> Vec<&[u8]> {
    data.split(|b| *b == 0).collect()
}

/// A piece as text, as a client library hands over a header (lossy).
pub fn text(piece: &[u8]) -> String {
    String::from_utf8_lossy(piece).into_owned()
}

/// A key (none when empty), headers name, value, name, value, ... and the
/// payload last: a message as an application could publish it, or `None`
/// when msg refuses it (`Message::validate`).
pub fn message(data: &[u8]) -> Option<Message> {
    let mut pieces = pieces(data);
    let payload = pieces.pop().unwrap_or_default();
    let mut pieces = pieces.into_iter();
    let key = text(pieces.next().unwrap_or_default());
    let mut message = Message::new(Bytes::copy_from_slice(payload));
    if !key.is_empty() {
        message = message.with_key(key);
    }
    let rest: Vec<&[u8]> = pieces.collect();
    for pair in rest.chunks(2) {
        let value = pair.get(1).copied().unwrap_or_default();
        message.headers_mut().insert(text(pair[0]), text(value));
    }
    message.validate().ok().map(|()| message)
}

/// Asserts that `read` is `sent` as a transport carries it: id, key,
/// payload and headers alike, the headers in any order (AMQP tables and
/// NATS header maps do not keep it).
pub fn assert_same(read: &Message, sent: &Message) {
    let sorted = |m: &Message| {
        let mut headers: Vec<(String, String)> = m
            .headers()
            .iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        headers.sort();
        (
            m.id(),
            m.key().map(str::to_owned),
            m.payload().clone(),
            headers,
        )
    };
    assert_eq!(sorted(read), sorted(sent), "read {read:?}, sent {sent:?}");
}

/// Headers name, value, name, value, ... then the payload: a message
/// with those headers, read as a CloudEvent ([`read_event`]).
pub fn cloudevents(data: &[u8]) {
    let mut pieces = pieces(data);
    let payload = pieces.pop().unwrap_or_default();
    let mut message = Message::new(Bytes::copy_from_slice(payload));
    for pair in pieces.chunks(2) {
        let value = pair.get(1).copied().unwrap_or_default();
        message.headers_mut().insert(text(pair[0]), text(value));
    }
    read_event(&message);
}

/// Reads `message` as a CloudEvent as a handler would. An event that
/// decodes is written again in every binding and must read back the same
/// (with the codec's content type where it had none).
pub fn read_event(message: &Message) {
    // As a JSON handler would: any outcome but a panic.
    let _ = Event::<serde_json::Value>::from_message(message, &crate::JsonCodec);
    let Ok(event) = Event::<Vec<u8>>::from_message(message, &RawCodec) else {
        return;
    };
    let mut expected = event.clone();
    if expected.datacontenttype.is_none() {
        expected.datacontenttype = Some("application/octet-stream".into());
    }
    for binding in BINDINGS {
        // Refused to write (an extension name CloudEvents does not allow,
        // a value no header can carry): an error, which is fine.
        let Ok(written) = event.to_message(&RawCodec, binding) else {
            continue;
        };
        let read = Event::<Vec<u8>>::from_message(&written, &RawCodec).unwrap_or_else(|e| {
            panic!("{binding:?} wrote {event:?} as {written:?}, which does not read back: {e}")
        });
        assert_eq!(read, expected, "{binding:?} round trip of {written:?}");
        let again = event.to_message(&RawCodec, binding).expect("wrote it once");
        assert_eq!(
            again.id(),
            written.id(),
            "the message id of an event is stable"
        );
    }
}

/// Two pieces, a pattern and a topic: validation's fast path and its
/// segment-wise path agree, a valid name matches itself, and matching
/// never panics.
pub fn topics(data: &[u8]) {
    let pieces = pieces(data);
    let pattern = text(pieces.first().copied().unwrap_or_default());
    let topic = text(pieces.get(1).copied().unwrap_or_default());
    for name in [&pattern, &topic] {
        let plain = validate_topic(name).is_ok();
        assert_eq!(
            plain,
            crate::raw::topic::validate_slowly(name, false).is_ok(),
            "{name:?}"
        );
        assert_eq!(
            validate_pattern(name).is_ok(),
            crate::raw::topic::validate_slowly(name, true).is_ok(),
            "{name:?}"
        );
        if plain {
            assert!(validate_pattern(name).is_ok(), "{name:?}");
            assert!(topic_matches(name, name), "{name:?} does not match itself");
        }
    }
    if validate_pattern(&pattern).is_ok() && validate_topic(&topic).is_ok() {
        let matched = topic_matches(&pattern, &topic);
        if !crate::raw::topic::is_pattern(&pattern) {
            assert_eq!(matched, pattern == topic, "{pattern:?} {topic:?}");
        }
    }
}

/// The inputs kept for `target` in `fuzz/corpus/<target>/`, each passed to
/// `run`; panics when there are none, so that a renamed target is not
/// silently left untested.
pub fn replay_corpus(target: &str, run: impl Fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus of {target} at {}: {e}", dir.display()))
    {
        let path = entry.expect("a corpus entry").path();
        let data = std::fs::read(&path).expect("a corpus file");
        run(&data);
        replayed += 1;
    }
    assert!(replayed > 0, "no inputs in {}", dir.display());
}
