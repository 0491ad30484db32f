//! How results are printed: text for people, JSON for scripts.

use msg::{Event, JsonCodec, Message, Received};
use serde_json::{Value, json};

/// The `--output` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Output {
    /// Lines for people.
    Text,
    /// One JSON document per result, for jq.
    Json,
}

/// Prints one JSON document on one line.
pub(crate) fn json(value: &Value) {
    println!("{value}");
}

/// `url` without the credentials it may hold: `scheme://***@host/...`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let tail = match tail.split_once('?') {
        // Query options may hold secrets too (a SASL password).
        Some((path, _)) => format!("{path}?…"),
        None => tail.to_owned(),
    };
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{tail}"),
        None => format!("{scheme}://{authority}{tail}"),
    }
}

/// A received message as JSON: id, topic, key, headers, the payload (as
/// text when it is UTF-8, else base64-free hex), and the CloudEvent it
/// holds, if it is one.
pub(crate) fn message_json(received: &Received) -> Value {
    let message = &received.message;
    let headers: serde_json::Map<String, Value> = message
        .headers()
        .iter()
        .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
        .collect();
    let mut value = json!({
        "id": message.id().to_string(),
        "topic": received.topic(),
        "key": message.key(),
        "attempt": received.attempt(),
        "headers": headers,
    });
    match std::str::from_utf8(message.payload()) {
        Ok(text) => value["payload"] = Value::String(text.to_owned()),
        Err(_) => value["payload_hex"] = Value::String(hex(message.payload())),
    }
    if let Some(event) = cloudevent(message) {
        value["cloudevent"] = event;
    }
    value
}

/// The CloudEvent in `message`, in any binding or structured, with JSON data.
fn cloudevent(message: &Message) -> Option<Value> {
    let event = Event::<Value>::from_message(message, &JsonCodec).ok()?;
    Some(json!({
        "id": event.id,
        "source": event.source,
        "type": event.ty,
        "subject": event.subject,
        "time": event.time.map(msg::raw::time::rfc3339),
        "datacontenttype": event.datacontenttype,
        "data": event.data,
    }))
}

/// A received message for people.
pub(crate) fn message_pretty(received: &Received) -> String {
    let message = &received.message;
    let mut out = format!("── {} {}", received.topic(), message.id());
    if let Some(key) = message.key() {
        out.push_str(&format!(" key={key}"));
    }
    out.push('\n');
    if let Some(event) = cloudevent(message) {
        out.push_str(&format!(
            "  cloudevent {} from {}\n  {}\n",
            event["type"].as_str().unwrap_or_default(),
            event["source"].as_str().unwrap_or_default(),
            event["data"]
        ));
        return out;
    }
    for (name, value) in message.headers().iter() {
        out.push_str(&format!("  {name}: {value}\n"));
    }
    match std::str::from_utf8(message.payload()) {
        Ok(text) => out.push_str(&format!("  {text}\n")),
        Err(_) => out.push_str(&format!(
            "  ({} bytes, not UTF-8)\n",
            message.payload().len()
        )),
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show() {
        assert_eq!(
            redact("amqp://guest:s3cret@rabbit:5672/%2f"),
            "amqp://***@rabbit:5672/%2f"
        );
        assert_eq!(
            redact("kafka://broker:9092?sasl.password=s3cret"),
            "kafka://broker:9092?…"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert!(!redact("nats://user:p@ss@host:4222").contains("p@ss"));
    }
}
