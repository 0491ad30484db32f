//! Handlers: what they return, how they fail, and helpers to write them.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{Either, Ready};
use serde::de::DeserializeOwned;
use tower::Service;

use crate::codec::{Decoder, JsonCodec};
use crate::{BoxError, Error, Event, Message, Received};

/// What the router does with a message whose handler failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Deliver it again soon (nack).
    Retry,
    /// Deliver it again, not before the delay (defer).
    RetryAfter(Duration),
    /// Never again: dead-letter it with the error as the reason (reject).
    DeadLetter,
}

/// A handler's failure, and what to do about the message.
///
/// Errors converted with `?` retry, except a non-retryable
/// [`msg_core::Error`](crate::Error) (a payload that does not decode, say),
/// which dead-letters.
pub struct HandlerError {
    disposition: Disposition,
    source: BoxError,
}

impl HandlerError {
    /// Retry the message soon.
    pub fn retry(source: impl Into<BoxError>) -> Self {
        Self::new(Disposition::Retry, source)
    }

    /// Retry the message, not before `delay`.
    pub fn retry_after(source: impl Into<BoxError>, delay: Duration) -> Self {
        Self::new(Disposition::RetryAfter(delay), source)
    }

    /// Dead-letter the message: retrying cannot help.
    pub fn dead_letter(source: impl Into<BoxError>) -> Self {
        Self::new(Disposition::DeadLetter, source)
    }

    /// An error with the given disposition.
    pub fn new(disposition: Disposition, source: impl Into<BoxError>) -> Self {
        Self {
            disposition,
            source: source.into(),
        }
    }

    /// What to do with the message.
    pub fn disposition(&self) -> Disposition {
        self.disposition
    }

    /// The underlying error.
    pub fn into_source(self) -> BoxError {
        self.source
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("disposition", &self.disposition)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

impl From<Error> for HandlerError {
    fn from(e: Error) -> Self {
        if e.is_retryable() {
            Self::retry(e)
        } else {
            Self::dead_letter(e)
        }
    }
}

impl From<BoxError> for HandlerError {
    fn from(e: BoxError) -> Self {
        match e.downcast::<HandlerError>() {
            Ok(handler_error) => *handler_error,
            Err(e) => match e.downcast::<Error>() {
                Ok(error) => (*error).into(),
                Err(e) => Self::retry(e),
            },
        }
    }
}

/// Messages a handler asks the router to publish, to their topics, before
/// the input is acked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outgoing(Vec<(String, Message)>);

impl Outgoing {
    /// Nothing to publish.
    pub fn none() -> Self {
        Self::default()
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

type HandlerResult = Result<Outgoing, HandlerError>;

fn into_result<R: Into<Outgoing>, E: Into<HandlerError>>(r: Result<R, E>) -> HandlerResult {
    r.map(Into::into).map_err(Into::into)
}

/// A handler made from an async function of the received message.
///
/// ```
/// use msg_core::{handler_fn, Received, BoxError};
/// let handler = handler_fn(|msg: Received| async move {
///     println!("{} on {}", msg.id(), msg.topic());
///     Ok::<_, BoxError>(())
/// });
/// # let _ = handler;
/// ```
pub fn handler_fn<F>(f: F) -> HandlerFn<F> {
    HandlerFn { f }
}

/// See [`handler_fn`].
#[derive(Clone)]
pub struct HandlerFn<F> {
    f: F,
}

impl<F> fmt::Debug for HandlerFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HandlerFn")
    }
}

impl<F, Fut, R, E> Service<Received> for HandlerFn<F>
where
    F: Fn(Received) -> Fut,
    Fut: Future<Output = Result<R, E>>,
    R: Into<Outgoing>,
    E: Into<HandlerError>,
{
    type Response = Outgoing;
    type Error = HandlerError;
    type Future = futures::future::Map<Fut, fn(Result<R, E>) -> HandlerResult>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, received: Received) -> Self::Future {
        (self.f)(received).map(into_result as fn(_) -> _)
    }
}

/// A handler of typed values decoded by a [`Decoder`]. A payload that does not
/// decode is dead-lettered with the decode error as the reason; the
/// function is not called.
pub fn typed_handler<T, C, F, Fut>(codec: C, f: F) -> TypedHandler<T, C, F>
where
    F: Fn(T) -> Fut,
{
    TypedHandler {
        codec,
        f,
        _t: PhantomData,
    }
}

/// A handler of JSON payloads decoded into `T`.
///
/// ```
/// use msg_core::{json_handler, BoxError};
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64 }
/// let handler = json_handler(|order: Order| async move {
///     println!("order {}", order.id);
///     Ok::<_, BoxError>(())
/// });
/// # let _ = handler;
/// ```
pub fn json_handler<T, F, Fut>(f: F) -> TypedHandler<T, JsonCodec, F>
where
    F: Fn(T) -> Fut,
{
    typed_handler(JsonCodec, f)
}

/// See [`typed_handler`].
pub struct TypedHandler<T, C, F> {
    codec: C,
    f: F,
    _t: PhantomData<fn() -> T>,
}

impl<T, C: Clone, F: Clone> Clone for TypedHandler<T, C, F> {
    fn clone(&self) -> Self {
        Self {
            codec: self.codec.clone(),
            f: self.f.clone(),
            _t: PhantomData,
        }
    }
}

impl<T, C, F> fmt::Debug for TypedHandler<T, C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TypedHandler")
    }
}

impl<T, C, F, Fut, R, E> Service<Received> for TypedHandler<T, C, F>
where
    C: Decoder<T>,
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<R, E>>,
    R: Into<Outgoing>,
    E: Into<HandlerError>,
{
    type Response = Outgoing;
    type Error = HandlerError;
    type Future =
        Either<Ready<HandlerResult>, futures::future::Map<Fut, fn(Result<R, E>) -> HandlerResult>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, received: Received) -> Self::Future {
        match self.codec.decode(received.message.payload()) {
            Ok(value) => Either::Right((self.f)(value).map(into_result as fn(_) -> _)),
            Err(e) => Either::Left(futures::future::ready(Err(HandlerError::dead_letter(e)))),
        }
    }
}

/// A handler of CloudEvents whose data is JSON, in binary or structured
/// mode. A message that is not a valid CloudEvent, or whose data does not
/// decode, is dead-lettered with the reason.
pub fn event_handler<T, F, Fut>(f: F) -> EventHandler<T, F>
where
    F: Fn(Event<T>) -> Fut,
{
    EventHandler { f, _t: PhantomData }
}

/// See [`event_handler`].
pub struct EventHandler<T, F> {
    f: F,
    _t: PhantomData<fn() -> T>,
}

impl<T, F: Clone> Clone for EventHandler<T, F> {
    fn clone(&self) -> Self {
        Self {
            f: self.f.clone(),
            _t: PhantomData,
        }
    }
}

impl<T, F> fmt::Debug for EventHandler<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventHandler")
    }
}

impl<T, F, Fut, R, E> Service<Received> for EventHandler<T, F>
where
    T: DeserializeOwned,
    F: Fn(Event<T>) -> Fut,
    Fut: Future<Output = Result<R, E>>,
    R: Into<Outgoing>,
    E: Into<HandlerError>,
{
    type Response = Outgoing;
    type Error = HandlerError;
    type Future =
        Either<Ready<HandlerResult>, futures::future::Map<Fut, fn(Result<R, E>) -> HandlerResult>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, received: Received) -> Self::Future {
        match Event::from_message(&received.message, &JsonCodec) {
            Ok(event) => Either::Right((self.f)(event).map(into_result as fn(_) -> _)),
            Err(e) => Either::Left(futures::future::ready(Err(HandlerError::dead_letter(e)))),
        }
    }
}

/// The router's handler type: any handler, boxed, cloneable.
pub type BoxHandler = tower::util::BoxCloneSyncService<Received, Outgoing, HandlerError>;

/// The router's batch handler type.
pub type BoxBatchHandler = tower::util::BoxCloneSyncService<Vec<Received>, Outgoing, HandlerError>;

/// Boxes any handler whose error converts into a [`HandlerError`] and whose
/// response converts into [`Outgoing`], so that `tower` layers such as
/// `tower::timeout` (error type `BoxError`) stack freely.
pub fn box_handler<S, Req>(
    service: S,
) -> tower::util::BoxCloneSyncService<Req, Outgoing, HandlerError>
where
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Response: Into<Outgoing>,
    S::Error: Into<HandlerError>,
    S::Future: Send + 'static,
    Req: 'static,
{
    use tower::ServiceExt;
    tower::util::BoxCloneSyncService::new(service.map_response(Into::into).map_err(Into::into))
}
