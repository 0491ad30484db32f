//! How a handler fails, and what becomes of its message.

use std::fmt;
use std::time::Duration;

use crate::{BoxError, Error, Settlement};

/// A handler's failure, and what becomes of the message: retried (the
/// default), retried after a delay, or dead-lettered. These are the words
/// of [`Settlement`], which the router settles the delivery with.
///
/// `?` converts any error (`std::error::Error + Send + Sync + 'static`):
/// the message is retried, except that a non-retryable
/// [`msg_core::Error`](crate::Error) (a payload that does not decode, say)
/// is dead-lettered. A `BoxError` converts with [`HandlerError::from_boxed`].
///
/// ```
/// use msg_core::{HandlerError, Json};
///
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64 }
///
/// # fn parse(_: &str) -> Result<u64, std::num::ParseIntError> { Ok(1) }
/// let handler = |Json(order): Json<Order>| async move {
///     let limit = parse("100")?; // any error: retried
///     if order.id > limit {
///         return Err(HandlerError::dead_letter(format!("order {} is out of range", order.id)));
///     }
///     Ok(())
/// };
/// # let _ = handler;
/// ```
///
/// It is not itself a `std::error::Error` (as `anyhow::Error` is not):
/// that is what lets every error convert into it. It converts into a
/// [`BoxError`], keeping what becomes of the message, so that `tower`
/// layers whose error is `BoxError` stack on handlers.
pub struct HandlerError {
    then: Then,
    source: BoxError,
    calls: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    Retry,
    RetryAfter(Duration),
    DeadLetter,
}

impl HandlerError {
    /// Retry the message soon.
    pub fn retry(source: impl Into<BoxError>) -> Self {
        Self::new(Then::Retry, source.into())
    }

    /// Retry the message, not before `delay`.
    pub fn retry_after(source: impl Into<BoxError>, delay: Duration) -> Self {
        Self::new(Then::RetryAfter(delay), source.into())
    }

    /// Dead-letter the message: retrying cannot help.
    pub fn dead_letter(source: impl Into<BoxError>) -> Self {
        Self::new(Then::DeadLetter, source.into())
    }

    fn new(then: Then, source: BoxError) -> Self {
        Self {
            then,
            source,
            calls: None,
        }
    }

    /// Says the handler was called `n` times for this message, counting
    /// earlier deliveries (a retry layer calls it more than once per
    /// delivery); a dead letter's `msg-attempts` header then says `n`
    /// rather than the deliveries alone.
    pub fn with_calls(mut self, n: u32) -> Self {
        self.calls = Some(n);
        self
    }

    /// The handler calls for this message, when a retry layer counted them.
    pub fn calls(&self) -> Option<u32> {
        self.calls
    }

    /// A boxed error back as a handler error: one that was a
    /// `HandlerError` keeps what becomes of the message, a
    /// [`msg_core::Error`](crate::Error) keeps its classification, anything
    /// else is retried.
    pub fn from_boxed(error: BoxError) -> Self {
        match error.downcast::<Failed>() {
            Ok(failed) => failed.0,
            Err(error) => match error.downcast::<Error>() {
                Ok(error) if error.is_retryable() => Self::retry(error),
                Ok(error) => Self::dead_letter(error),
                Err(error) => Self::retry(error),
            },
        }
    }

    /// How the router settles the message: [`Settlement::Retry`],
    /// [`Settlement::RetryAfter`], or [`Settlement::DeadLetter`] with the
    /// error's chain as the reason.
    pub fn settlement(&self) -> Settlement {
        match self.then {
            Then::Retry => Settlement::Retry,
            Then::RetryAfter(delay) => Settlement::RetryAfter(delay),
            Then::DeadLetter => Settlement::DeadLetter(self.chain()),
        }
    }

    /// Whether the message is dead-lettered (retrying cannot help).
    pub fn is_dead_letter(&self) -> bool {
        self.then == Then::DeadLetter
    }

    /// The error and its sources on one line, each said once.
    pub fn chain(&self) -> String {
        crate::error_chain(&*self.source)
    }

    /// The underlying error.
    pub fn source(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }

    /// The underlying error, owned.
    pub fn into_source(self) -> BoxError {
        self.source
    }
}

impl<E> From<E> for HandlerError
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        Self::from_boxed(Box::new(error))
    }
}

impl From<HandlerError> for BoxError {
    fn from(error: HandlerError) -> Self {
        Box::new(Failed(error))
    }
}

/// A handler error as a `std::error::Error`, so that it travels through
/// `tower` layers as a `BoxError` and comes back whole.
struct Failed(HandlerError);

impl fmt::Debug for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Failed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source.source()
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("then", &self.then)
            .field("source", &self.source)
            .field("calls", &self.calls)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("database down")]
    struct DbError;

    fn db() -> Result<(), DbError> {
        Err(DbError)
    }

    #[test]
    fn any_error_converts_and_is_retried() {
        let e = (|| -> Result<(), HandlerError> {
            db()?;
            Ok(())
        })()
        .unwrap_err();
        assert_eq!(e.settlement(), Settlement::Retry);
        assert_eq!(e.to_string(), "database down");
    }

    #[test]
    fn a_permanent_msg_error_is_dead_lettered() {
        let e = HandlerError::from(Error::Decode("not json".into()));
        assert!(e.is_dead_letter());
        assert!(
            matches!(e.settlement(), Settlement::DeadLetter(reason) if reason.contains("not json"))
        );
        let e = HandlerError::from(Error::timeout(Duration::from_secs(1)));
        assert!(!e.is_dead_letter(), "a retryable msg error is retried");
    }

    #[test]
    fn what_becomes_of_the_message_survives_a_box() {
        let delay = Duration::from_secs(3);
        let boxed: BoxError = HandlerError::retry_after("busy", delay).into();
        assert_eq!(boxed.to_string(), "busy");
        let back = HandlerError::from_boxed(boxed);
        assert_eq!(back.settlement(), Settlement::RetryAfter(delay));
        let boxed: BoxError = HandlerError::dead_letter("bad").into();
        assert!(HandlerError::from_boxed(boxed).is_dead_letter());
        let boxed: BoxError = Box::new(Error::Decode("x".into()));
        assert!(HandlerError::from_boxed(boxed).is_dead_letter());
        assert_eq!(
            HandlerError::from_boxed("plain".into()).settlement(),
            Settlement::Retry
        );
    }
}
