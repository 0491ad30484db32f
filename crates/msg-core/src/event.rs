//! Typed domain events with CloudEvents 1.0 attributes.
//!
//! An [`Event`] travels in *binary content mode*: the data is the payload
//! (encoded by an [`Encoder`]), the attributes are headers named by the
//! protocol's CloudEvents binding ([`CloudEventsBinding`]), and
//! `datacontenttype` is the `content-type` header. Other CloudEvents clients
//! read what we publish, and we read theirs. *Structured content mode*
//! (`application/cloudevents+json`, attributes and data in one JSON
//! document) is read too, and written by [`Event::to_structured_message`].

use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::codec::{Decoder, Encoder};
use crate::{Error, Message, Result, headers};

mod binding;

pub use binding::CloudEventsBinding;
use binding::{Reader, header_ignoring_case};

/// The CloudEvents spec version written and accepted.
pub const SPEC_VERSION: &str = "1.0";

/// The media type of structured-mode CloudEvents in JSON.
pub const STRUCTURED_JSON: &str = "application/cloudevents+json";

/// A typed event with CloudEvents 1.0 attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<T> {
    /// Identifies the event; unique per `source`.
    pub id: String,
    /// Identifies the context in which the event happened (a URI-reference).
    pub source: String,
    /// The kind of event, e.g. `com.example.order.created`.
    pub ty: String,
    /// When it happened.
    pub time: Option<SystemTime>,
    /// What the event is about, within the source.
    pub subject: Option<String>,
    /// The media type of the data; the codec's when not set.
    pub datacontenttype: Option<String>,
    /// A URI of the schema the data adheres to.
    pub dataschema: Option<String>,
    /// Extension attributes, in order.
    pub extensions: Vec<(String, String)>,
    /// The event data.
    pub data: T,
}

impl<T> Event<T> {
    /// A new event with a UUID v7 id and the current time.
    pub fn new(source: impl Into<String>, ty: impl Into<String>, data: T) -> Self {
        Self {
            id: Uuid::now_v7().to_string(),
            source: source.into(),
            ty: ty.into(),
            time: Some(SystemTime::now()),
            subject: None,
            datacontenttype: None,
            dataschema: None,
            extensions: Vec::new(),
            data,
        }
    }

    /// Sets the id (unique per source), e.g. a business key.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the subject.
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Adds an extension attribute. CloudEvents names are lowercase ASCII
    /// letters and digits; others are rejected when the event is encoded.
    pub fn with_extension(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extensions.push((name.into(), value.into()));
        self
    }

    /// Encodes the event in binary content mode for `binding`.
    ///
    /// The message id is the event id when that is a UUID; otherwise one
    /// derived from source and id (a UUID v5), so that every encoding of
    /// the same event has the same message id and retries and relays are
    /// deduplicated.
    pub fn to_message(
        &self,
        codec: &impl Encoder<T>,
        binding: CloudEventsBinding,
    ) -> Result<Message> {
        let payload = codec.encode(&self.data)?;
        let mut message = Message::with_id(self.message_id(), payload);
        let p = binding.prefix();
        let h = message.headers_mut();
        let mut attr = |name: &str, value: &str| {
            h.insert(format!("{p}{name}"), binding.encode_value(value));
        };
        attr("specversion", SPEC_VERSION);
        attr("id", &self.id);
        attr("source", &self.source);
        attr("type", &self.ty);
        if let Some(time) = self.time {
            attr("time", &crate::raw::time::rfc3339(time));
        }
        if let Some(subject) = &self.subject {
            attr("subject", subject);
        }
        if let Some(schema) = &self.dataschema {
            attr("dataschema", schema);
        }
        for (name, value) in &self.extensions {
            validate_extension_name(name)?;
            attr(name, value);
        }
        let content_type = self
            .datacontenttype
            .as_deref()
            .unwrap_or(codec.content_type());
        let header = binding.content_type_header();
        let content_type = if header == headers::CONTENT_TYPE {
            content_type.into()
        } else {
            binding.encode_value(content_type)
        };
        h.insert(header, content_type);
        message.validate()?;
        Ok(message)
    }

    /// Decodes an event from a message in binary content mode (any binding)
    /// or structured JSON mode.
    pub fn from_message(message: &Message, codec: &impl Decoder<T>) -> Result<Self>
    where
        T: DeserializeOwned,
    {
        // Header names are case-insensitive in HTTP and NATS: a structured
        // event's `Content-Type` is as good as `content-type`.
        let content_type = header_ignoring_case(message, headers::CONTENT_TYPE);
        if content_type.is_some_and(|c| {
            c.get(..STRUCTURED_JSON.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(STRUCTURED_JSON))
        }) {
            return Self::from_structured(message.payload());
        }
        let reader = Reader::detect(message)
            .ok_or_else(|| decode_error("not a CloudEvent: no specversion header"))?;
        let attr = |name: &str| reader.attr(message, name);
        let spec = attr("specversion")?.unwrap_or_default();
        if spec != SPEC_VERSION {
            return Err(decode_error(format!(
                "unsupported CloudEvents specversion {spec:?}"
            )));
        }
        let required = |name: &'static str| {
            attr(name)?.ok_or_else(|| {
                decode_error(format!(
                    "CloudEvent without the required attribute {name:?}"
                ))
            })
        };
        let time = attr("time")?
            .map(|t| crate::raw::time::parse_rfc3339(&t))
            .transpose()?;
        let known = [
            "specversion",
            "id",
            "source",
            "type",
            "time",
            "subject",
            "dataschema",
            "datacontenttype",
        ];
        // NATS names it `ce-datacontenttype`; the others `content-type`.
        let datacontenttype = match attr("datacontenttype")? {
            Some(c) => Some(c),
            None => content_type.map(str::to_owned),
        };
        Ok(Self {
            id: required("id")?,
            source: required("source")?,
            ty: required("type")?,
            time,
            subject: attr("subject")?,
            datacontenttype,
            dataschema: attr("dataschema")?,
            extensions: reader.extensions(message, &known)?,
            data: codec.decode(message.payload())?,
        })
    }

    /// Encodes the event in structured content mode: one JSON document with
    /// the attributes and the data, content type `application/cloudevents+json`.
    pub fn to_structured_message(&self) -> Result<Message>
    where
        T: Serialize,
    {
        let mut doc = serde_json::Map::new();
        doc.insert("specversion".into(), SPEC_VERSION.into());
        doc.insert("id".into(), self.id.clone().into());
        doc.insert("source".into(), self.source.clone().into());
        doc.insert("type".into(), self.ty.clone().into());
        if let Some(time) = self.time {
            doc.insert("time".into(), crate::raw::time::rfc3339(time).into());
        }
        if let Some(subject) = &self.subject {
            doc.insert("subject".into(), subject.clone().into());
        }
        if let Some(schema) = &self.dataschema {
            doc.insert("dataschema".into(), schema.clone().into());
        }
        doc.insert(
            "datacontenttype".into(),
            self.datacontenttype
                .as_deref()
                .unwrap_or("application/json")
                .into(),
        );
        for (name, value) in &self.extensions {
            validate_extension_name(name)?;
            doc.insert(name.clone(), value.clone().into());
        }
        let data = serde_json::to_value(&self.data).map_err(|e| Error::Encode(Box::new(e)))?;
        doc.insert("data".into(), data);
        let payload = serde_json::to_vec(&doc).map_err(|e| Error::Encode(Box::new(e)))?;
        Ok(Message::with_id(self.message_id(), payload).with_content_type(STRUCTURED_JSON))
    }

    fn from_structured(payload: &Bytes) -> Result<Self>
    where
        T: DeserializeOwned,
    {
        let mut doc: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(payload).map_err(|e| Error::Decode(Box::new(e)))?;
        let mut take = |name: &str| match doc.remove(name) {
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(decode_error(format!(
                "CloudEvent attribute {name:?} is not a string: {other}"
            ))),
            None => Ok(None),
        };
        let spec = take("specversion")?.unwrap_or_default();
        if spec != SPEC_VERSION {
            return Err(decode_error(format!(
                "unsupported CloudEvents specversion {spec:?}"
            )));
        }
        let missing = |name: &'static str| {
            decode_error(format!(
                "CloudEvent without the required attribute {name:?}"
            ))
        };
        let id = take("id")?.ok_or_else(|| missing("id"))?;
        let source = take("source")?.ok_or_else(|| missing("source"))?;
        let ty = take("type")?.ok_or_else(|| missing("type"))?;
        let time = take("time")?
            .map(|t| crate::raw::time::parse_rfc3339(&t))
            .transpose()?;
        let subject = take("subject")?;
        let dataschema = take("dataschema")?;
        let datacontenttype = take("datacontenttype")?;
        if doc.contains_key("data_base64") {
            return Err(decode_error(
                "CloudEvent with data_base64 is not supported; use binary mode",
            ));
        }
        let data = doc.remove("data").unwrap_or(serde_json::Value::Null);
        let data = serde_json::from_value(data).map_err(|e| Error::Decode(Box::new(e)))?;
        let extensions = doc
            .into_iter()
            .map(|(n, v)| match v {
                serde_json::Value::String(s) => (n, s),
                other => (n, other.to_string()),
            })
            .collect();
        Ok(Self {
            id,
            source,
            ty,
            time,
            subject,
            datacontenttype,
            dataschema,
            extensions,
            data,
        })
    }

    fn message_id(&self) -> Uuid {
        Uuid::parse_str(&self.id).unwrap_or_else(|_| {
            crate::raw::stable_id(format!("cloudevents/\n{}\n{}", self.source, self.id))
        })
    }
}

fn validate_extension_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 20
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidHeader {
            name: name.to_owned(),
            reason: "CloudEvents extension names are 1-20 lowercase ASCII letters or digits",
        })
    }
}

fn decode_error(reason: impl Into<String>) -> Error {
    Error::Decode(reason.into().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_id_that_is_no_uuid_gives_a_stable_message_id() {
        let event = Event::new("/sensors/7", "reading", 1).with_id("reading-1");
        let a = event
            .to_message(&JsonCodec, CloudEventsBinding::Kafka)
            .unwrap();
        let b = event
            .to_message(&JsonCodec, CloudEventsBinding::Http)
            .unwrap();
        assert_eq!(a.id(), b.id());
        // Python: uuid5(uuid5(NAMESPACE_URL, "msg"), "cloudevents/\n/sensors/7\nreading-1")
        assert_eq!(a.id().to_string(), "07d822e8-d77e-5aee-b866-7652c1fd4b90");
        let other = Event::new("/sensors/8", "reading", 1).with_id("reading-1");
        assert_ne!(
            other
                .to_message(&JsonCodec, CloudEventsBinding::Kafka)
                .unwrap()
                .id(),
            a.id()
        );
    }
    use crate::codec::JsonCodec;

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Shipped {
        order: u32,
    }

    fn event() -> Event<Shipped> {
        Event::new("/shop", "com.example.shipped", Shipped { order: 1 })
            .with_subject("order-1")
            .with_extension("tenant", "acme")
    }

    #[test]
    fn binary_mode_round_trip_for_every_binding() {
        let e = event();
        for binding in CloudEventsBinding::ALL {
            let m = e.to_message(&JsonCodec, binding).unwrap();
            let p = binding.prefix();
            assert_eq!(m.header(&format!("{p}type")), Some("com.example.shipped"));
            assert_eq!(
                m.header(&binding.content_type_header()),
                Some("application/json")
            );
            assert_eq!(m.id().to_string(), e.id);
            let back = Event::<Shipped>::from_message(&m, &JsonCodec).unwrap();
            assert_eq!(back.data, e.data);
            assert_eq!(back.id, e.id);
            assert_eq!(back.subject.as_deref(), Some("order-1"));
            assert_eq!(
                back.extensions,
                vec![("tenant".to_owned(), "acme".to_owned())]
            );
            // RFC 3339 carries microseconds at most what SystemTime has: compare at ms.
            let ms = |t: SystemTime| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_millis()
            };
            assert_eq!(ms(back.time.unwrap()), ms(e.time.unwrap()));
        }
    }

    #[test]
    fn kafka_binding_uses_underscore_headers() {
        let m = event()
            .to_message(&JsonCodec, CloudEventsBinding::Kafka)
            .unwrap();
        assert_eq!(m.header("ce_specversion"), Some("1.0"));
        assert!(m.header("ce-specversion").is_none());
    }

    #[test]
    fn structured_mode_round_trip() {
        let e = event();
        let m = e.to_structured_message().unwrap();
        assert_eq!(m.header("content-type"), Some(STRUCTURED_JSON));
        let doc: serde_json::Value = serde_json::from_slice(m.payload()).unwrap();
        assert_eq!(doc["type"], "com.example.shipped");
        assert_eq!(doc["data"]["order"], 1);
        let back = Event::<Shipped>::from_message(&m, &JsonCodec).unwrap();
        assert_eq!(back.data, e.data);
        assert_eq!(
            back.extensions,
            vec![("tenant".to_owned(), "acme".to_owned())]
        );
    }

    #[test]
    fn foreign_event_from_other_client() {
        // As another client's Kafka binding writes it.
        let m = Message::new(r#"{"order":9}"#)
            .with_header("ce_specversion", "1.0")
            .with_header("ce_id", "A234-1234-1234")
            .with_header("ce_source", "/other")
            .with_header("ce_type", "t")
            .with_header("ce_time", "2018-04-05T17:31:00+02:00")
            .with_header("content-type", "application/json");
        let e = Event::<Shipped>::from_message(&m, &JsonCodec).unwrap();
        assert_eq!(e.id, "A234-1234-1234");
        assert_eq!(e.data.order, 9);
        assert!(e.extensions.is_empty());
    }

    #[test]
    fn bad_events_are_decode_errors() {
        let no_ce = Message::new("{}");
        assert!(matches!(
            Event::<Shipped>::from_message(&no_ce, &JsonCodec),
            Err(Error::Decode(_))
        ));
        let no_type = Message::new(r#"{"order":1}"#)
            .with_header("ce-specversion", "1.0")
            .with_header("ce-id", "1")
            .with_header("ce-source", "/s");
        let err = Event::<Shipped>::from_message(&no_type, &JsonCodec).unwrap_err();
        assert!(err.chain().contains("\"type\""), "{}", err.chain());
        let v02 = Message::new("{}").with_header("ce-specversion", "0.2");
        assert!(Event::<Shipped>::from_message(&v02, &JsonCodec).is_err());
        let bad_ext = event().with_extension("Bad-Name", "x");
        assert!(
            bad_ext
                .to_message(&JsonCodec, CloudEventsBinding::Http)
                .is_err()
        );
    }

    #[test]
    fn nats_binding_names_datacontenttype_and_percent_encodes_values() {
        let mut e = event().with_subject("order 1 \u{2713} 100%41");
        e.datacontenttype = Some("application/json".into());
        let m = e.to_message(&JsonCodec, CloudEventsBinding::Nats).unwrap();
        assert_eq!(m.header("ce-datacontenttype"), Some("application/json"));
        assert!(
            m.header("content-type").is_none(),
            "the binding has no content-type"
        );
        // NATS protocol binding §3.1.3.2: space, `%` and non-ASCII encoded.
        assert_eq!(
            m.header("ce-subject"),
            Some("order%201%20%E2%9C%93%20100%2541")
        );
        let back = Event::<Shipped>::from_message(&m, &JsonCodec).unwrap();
        assert_eq!(back.subject.as_deref(), Some("order 1 \u{2713} 100%41"));
        assert_eq!(back.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(
            back.extensions,
            vec![("tenant".to_owned(), "acme".to_owned())]
        );
    }

    #[test]
    fn a_foreign_nats_event_is_read_as_the_binding_says() {
        // The binding's own binary-mode example, with header names in
        // another case (NATS header names are case-insensitive) and an
        // encoded value.
        let m = Message::new(r#"{"order":3}"#)
            .with_header("CE-SpecVersion", "1.0")
            .with_header("ce-type", "com.example.someevent")
            .with_header("ce-time", "2018-04-05T03:56:24Z")
            .with_header("ce-id", "1234-1234-1234")
            .with_header("ce-source", "/mycontext/subcontext")
            .with_header("ce-datacontenttype", "application/json")
            .with_header("Ce-Subject", "Euro%20%E2%82%AC");
        let e = Event::<Shipped>::from_message(&m, &JsonCodec).unwrap();
        assert_eq!(e.ty, "com.example.someevent");
        assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(e.subject.as_deref(), Some("Euro \u{20AC}"));
        assert!(e.extensions.is_empty(), "{:?}", e.extensions);
        assert_eq!(e.data.order, 3);
        let bad = m.clone().with_header("ce-dataschema", "%C0%A0");
        assert!(matches!(
            Event::<Shipped>::from_message(&bad, &JsonCodec),
            Err(Error::Decode(_))
        ));
    }

    #[test]
    fn a_structured_event_is_recognised_by_any_case_of_content_type() {
        let doc = r#"{"specversion":"1.0","id":"x","source":"/s","type":"t","data":{"order":4}}"#;
        let m = Message::new(doc).with_header(
            "Content-Type",
            "application/cloudevents+json; charset=utf-8",
        );
        let e = Event::<Shipped>::from_message(&m, &JsonCodec).unwrap();
        assert_eq!(e.data.order, 4);
    }

    #[test]
    fn amqp_attributes_with_either_prefix_are_read() {
        for prefix in ["cloudEvents:", "cloudEvents_"] {
            let m = Message::new(r#"{"order":5}"#)
                .with_header(format!("{prefix}specversion"), "1.0")
                .with_header(format!("{prefix}id"), "a-1")
                .with_header(format!("{prefix}source"), "/py")
                .with_header(format!("{prefix}type"), "t")
                .with_header(format!("{prefix}tenant"), "acme");
            let e = Event::<Shipped>::from_message(&m, &JsonCodec)
                .unwrap_or_else(|err| panic!("{prefix}: {err}"));
            assert_eq!(e.id, "a-1");
            assert_eq!(e.extensions, vec![("tenant".to_owned(), "acme".to_owned())]);
        }
    }
}
