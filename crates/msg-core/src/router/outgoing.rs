//! What a handler asks the router to publish.

use serde::Serialize;

use super::error::HandlerError;
use super::extract::Json;
use crate::codec::{Encoder, JsonCodec};
use crate::{Event, Message, Result, headers};

/// Messages a handler asks the router to publish, to their topics, before
/// the input is acked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outgoing(Vec<(String, Message)>);

impl Outgoing {
    /// Nothing to publish.
    pub fn none() -> Self {
        Self::default()
    }

    /// A JSON message of `value` for `topic`, its content type set.
    ///
    /// ```
    /// #[derive(serde::Serialize)]
    /// struct Invoice { order_id: u64 }
    /// let out = msg_core::Outgoing::json("invoices.created", &Invoice { order_id: 7 })?;
    /// assert_eq!(out.len(), 1);
    /// # Ok::<_, msg_core::Error>(())
    /// ```
    pub fn json<T: Serialize>(topic: impl Into<String>, value: &T) -> Result<Self> {
        Ok(Self::none().with(topic, json_message(value)?))
    }

    /// A CloudEvent for `topic`, in structured content mode (one JSON
    /// document, `application/cloudevents+json`), which every protocol
    /// binding carries and any CloudEvents SDK reads. (For binary mode
    /// with the transport's header names, publish with
    /// [`PublisherExt::publish_event`](crate::PublisherExt::publish_event).)
    pub fn event<T: Serialize>(topic: impl Into<String>, event: &Event<T>) -> Result<Self> {
        Ok(Self::none().with(topic, event.to_structured_message()?))
    }

    /// Adds a message for `topic`.
    pub fn with(mut self, topic: impl Into<String>, message: Message) -> Self {
        self.push(topic, message);
        self
    }

    /// Adds a message for `topic`.
    pub fn push(&mut self, topic: impl Into<String>, message: Message) {
        self.0.push((topic.into(), message));
    }

    /// Whether there is nothing to publish.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of messages.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The topics and messages, to change in place (a layer adding headers,
    /// say).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut Message)> {
        self.0
            .iter_mut()
            .map(|(topic, message)| (topic.as_str(), message))
    }

    /// Adds all of `other`.
    pub fn extend(&mut self, other: Outgoing) {
        self.0.extend(other.0);
    }
}

impl IntoIterator for Outgoing {
    type Item = (String, Message);
    type IntoIter = std::vec::IntoIter<(String, Message)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl From<()> for Outgoing {
    fn from(_: ()) -> Self {
        Self::none()
    }
}

impl<T: Into<String>> From<(T, Message)> for Outgoing {
    fn from((topic, message): (T, Message)) -> Self {
        Self::none().with(topic, message)
    }
}

impl<T: Into<String>> From<Vec<(T, Message)>> for Outgoing {
    fn from(list: Vec<(T, Message)>) -> Self {
        Self(list.into_iter().map(|(t, m)| (t.into(), m)).collect())
    }
}

impl<T: Into<Outgoing>> From<Option<T>> for Outgoing {
    fn from(o: Option<T>) -> Self {
        o.map(Into::into).unwrap_or_default()
    }
}

/// What a handler function returns in `Ok`: anything that converts into
/// [`Outgoing`] (`()`, an `Outgoing`, `(topic, Message)`, ...), or
/// `Json(value)`, published as JSON to the route's topic
/// ([`HandlerOptions::publish_to`](crate::HandlerOptions::publish_to)), or
/// to the request's reply address on a route that answers requests
/// ([`HandlerOptions::reply`](crate::HandlerOptions::reply)); likewise a
/// [`Message`] as it is, and an [`Event`] as a structured-mode CloudEvent.
///
/// ```
/// use msg_core::{HandlerError, HandlerOptions, Json};
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64 }
/// #[derive(serde::Serialize)]
/// struct Invoice { order: u64 }
///
/// async fn bill(Json(order): Json<Order>) -> Result<Json<Invoice>, HandlerError> {
///     Ok(Json(Invoice { order: order.id }))
/// }
/// # let broker = msg_memory::MemoryBroker::new();
/// let router = msg_core::Router::new(broker.clone(), broker)
///     .handle_with(
///         msg_core::Subscription::new("orders").group("billing"),
///         HandlerOptions::default().publish_to("invoices"),
///         bill,
///     );
/// # let _ = router;
/// ```
pub trait IntoOutgoing {
    /// The messages to publish; `publish_to` is the route's topic, if it
    /// has one.
    fn into_outgoing(self, publish_to: Option<&str>) -> Result<Outgoing, HandlerError>;
}

impl<T: Into<Outgoing>> IntoOutgoing for T {
    fn into_outgoing(self, _: Option<&str>) -> Result<Outgoing, HandlerError> {
        Ok(self.into())
    }
}

impl<T: Serialize> IntoOutgoing for Json<T> {
    fn into_outgoing(self, publish_to: Option<&str>) -> Result<Outgoing, HandlerError> {
        match publish_to {
            Some(topic) => Ok(Outgoing::json(topic, &self.0)?),
            // A mistake in the program, which no retry fixes.
            None => Err(HandlerError::dead_letter(
                "the handler returned Json for the route's topic, but the route has none \
                 (HandlerOptions::publish_to)",
            )),
        }
    }
}

impl IntoOutgoing for Message {
    fn into_outgoing(self, publish_to: Option<&str>) -> Result<Outgoing, HandlerError> {
        match publish_to {
            Some(topic) => Ok(Outgoing::none().with(topic, self)),
            None => Err(HandlerError::dead_letter(
                "the handler returned a Message for the route's topic, but the route has none \
                 (HandlerOptions::publish_to)",
            )),
        }
    }
}

impl<T: Serialize> IntoOutgoing for Event<T> {
    fn into_outgoing(self, publish_to: Option<&str>) -> Result<Outgoing, HandlerError> {
        match publish_to {
            Some(topic) => Ok(Outgoing::event(topic, &self)?),
            None => Err(HandlerError::dead_letter(
                "the handler returned an Event for the route's topic, but the route has none \
                 (HandlerOptions::publish_to)",
            )),
        }
    }
}

/// Where a handler function's typed result ([`IntoOutgoing`]) is
/// published; set by [`HandlerOptions`](crate::HandlerOptions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ResultTo {
    /// Nowhere: a typed result is a mistake, and dead-letters the input.
    #[default]
    Nowhere,
    /// This topic ([`HandlerOptions::publish_to`](crate::HandlerOptions::publish_to)).
    Topic(std::sync::Arc<str>),
    /// The reply address of each message
    /// ([`HandlerOptions::reply`](crate::HandlerOptions::reply)).
    ReplyTo,
}

/// `value` as a JSON message.
pub(crate) fn json_message<T: Serialize>(value: &T) -> Result<Message> {
    let payload = JsonCodec.encode(value)?;
    Ok(Message::new(payload).with_content_type(Encoder::<T>::content_type(&JsonCodec)))
}

/// What a handler's messages take from the message it handled, unless
/// they set their own: the conversation (its `correlation-id`, or its own
/// id when it starts one) and the trace context, so that a conversation
/// and a trace go on through the handler.
///
/// Taken for every message, so it only keeps references (the id and a
/// reference-counted clone of the headers): nothing is copied unless the
/// handler returns messages.
#[derive(Debug)]
pub(crate) struct Inherited {
    /// The input's id and headers; its payload stays with the handler.
    input: Message,
}

impl Inherited {
    pub(crate) fn from(message: &Message) -> Self {
        let mut input = Message::with_id(message.id(), bytes::Bytes::new());
        *input.headers_mut() = message.headers().clone();
        Self { input }
    }

    /// Gives each message what it does not set itself.
    pub(crate) fn apply(&self, outgoing: &mut Outgoing) {
        for (_, message) in &mut outgoing.0 {
            if !message.headers().contains(headers::CORRELATION_ID) {
                let conversation = self.input.correlation_id().into_owned();
                message
                    .headers_mut()
                    .insert(headers::CORRELATION_ID, conversation);
            }
            for name in [headers::TRACEPARENT, headers::TRACESTATE] {
                if let Some(value) = self.input.header(name)
                    && !message.headers().contains(name)
                {
                    message.headers_mut().insert(name, value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_sets_the_content_type() {
        let out = Outgoing::json("t", &serde_json::json!({ "a": 1 })).unwrap();
        let (topic, message) = out.into_iter().next().unwrap();
        assert_eq!(topic, "t");
        assert_eq!(
            message.header(headers::CONTENT_TYPE),
            Some("application/json")
        );
        assert_eq!(&message.payload()[..], br#"{"a":1}"#);
    }

    #[test]
    fn correlation_and_trace_are_inherited_unless_set() {
        let input = Message::new("in")
            .with_header(headers::CORRELATION_ID, "conv-1")
            .with_header(headers::TRACEPARENT, "00-aa-bb-01");
        let mut out = Outgoing::none().with("a", Message::new("1")).with(
            "b",
            Message::new("2").with_header(headers::CORRELATION_ID, "own"),
        );
        Inherited::from(&input).apply(&mut out);
        let out: Vec<_> = out.into_iter().collect();
        assert_eq!(out[0].1.header(headers::CORRELATION_ID), Some("conv-1"));
        assert_eq!(out[0].1.header(headers::TRACEPARENT), Some("00-aa-bb-01"));
        assert_eq!(out[1].1.header(headers::CORRELATION_ID), Some("own"));
    }

    #[test]
    fn a_message_without_a_correlation_id_starts_a_conversation_named_by_its_id() {
        let input = Message::new("in");
        let mut out = Outgoing::none().with("a", Message::new("1"));
        Inherited::from(&input).apply(&mut out);
        let (_, message) = out.into_iter().next().unwrap();
        assert_eq!(
            message.header(headers::CORRELATION_ID),
            Some(input.id().to_string().as_str())
        );
        assert_eq!(message.header(headers::TRACEPARENT), None);
    }
}
