//! What a handler takes as arguments: extractors, as in axum.
//!
//! A handler is an async function whose arguments each implement
//! [`FromReceived`], except the last, which may also take the whole
//! [`Received`] (see [`FromReceivedOwned`]). An argument that cannot be
//! extracted (a payload that does not decode) fails the message with the
//! extractor's error, and the function is not called.

use serde::de::DeserializeOwned;

use super::error::HandlerError;
use crate::codec::JsonCodec;
use crate::{Event, Headers, Message, Metadata, Received};

/// An argument a handler takes from the received message and the router's
/// state, without consuming the message.
pub trait FromReceived<S>: Sized {
    /// Takes the argument, or fails the message.
    fn from_received(received: &Received, state: &S) -> Result<Self, HandlerError>;
}

/// Marks how a [`FromReceivedOwned`] argument is taken; users never name it.
pub mod via {
    /// Taken from a borrowed message, through [`FromReceived`](super::FromReceived).
    #[derive(Debug)]
    pub enum Borrowed {}
    /// Taken from the owned message.
    #[derive(Debug)]
    pub enum Owned {}
}

/// An argument that may come last and take the message whole: every
/// [`FromReceived`], and [`Received`] itself.
pub trait FromReceivedOwned<S, M = via::Owned>: Sized {
    /// Takes the argument, or fails the message.
    fn from_received_owned(received: Received, state: &S) -> Result<Self, HandlerError>;
}

impl<S, T: FromReceived<S>> FromReceivedOwned<S, via::Borrowed> for T {
    fn from_received_owned(received: Received, state: &S) -> Result<Self, HandlerError> {
        T::from_received(&received, state)
    }
}

impl<S> FromReceivedOwned<S> for Received {
    fn from_received_owned(received: Received, _: &S) -> Result<Self, HandlerError> {
        Ok(received)
    }
}

/// The payload decoded from JSON. A payload that does not decode is
/// dead-lettered with the decode error as the reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<S, T: DeserializeOwned> FromReceived<S> for Json<T> {
    fn from_received(received: &Received, _: &S) -> Result<Self, HandlerError> {
        Ok(Json(received.json()?))
    }
}

/// A CloudEvent with JSON data, in binary or structured mode. A message
/// that is not a valid CloudEvent, or whose data does not decode, is
/// dead-lettered with the reason.
impl<S, T: DeserializeOwned> FromReceived<S> for Event<T> {
    fn from_received(received: &Received, _: &S) -> Result<Self, HandlerError> {
        Ok(Event::from_message(&received.message, &JsonCodec)?)
    }
}

/// The router's state, set with [`Router::with_state`](crate::Router::with_state).
#[derive(Debug, Clone, Copy, Default)]
pub struct State<S>(pub S);

impl<S: Clone> FromReceived<S> for State<S> {
    fn from_received(_: &Received, state: &S) -> Result<Self, HandlerError> {
        Ok(State(state.clone()))
    }
}

/// What the broker says about the message: topic, attempt, partition, ...
impl<S> FromReceived<S> for Metadata {
    fn from_received(received: &Received, _: &S) -> Result<Self, HandlerError> {
        Ok(received.metadata.clone())
    }
}

/// The message's headers.
impl<S> FromReceived<S> for Headers {
    fn from_received(received: &Received, _: &S) -> Result<Self, HandlerError> {
        Ok(received.message.headers().clone())
    }
}

/// The message (id, key, payload, headers), without its metadata.
impl<S> FromReceived<S> for Message {
    fn from_received(received: &Received, _: &S) -> Result<Self, HandlerError> {
        Ok(received.message.clone())
    }
}
