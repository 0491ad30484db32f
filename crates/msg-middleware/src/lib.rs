//! Handler middleware for **msg**, as `tower` layers.
//!
//! Each middleware is a [`tower::Layer`] over the router's handlers (any
//! `tower::Service<Received>` whose error converts into a `BoxError`), so
//! it stacks with `tower::timeout`, `tower::limit` and your own layers:
//!
//! ```
//! use std::time::Duration;
//! use msg_core::{Received, service};
//! use msg_middleware::{RetryLayer, TimeoutLayer};
//! use tower::ServiceBuilder;
//!
//! let handler = ServiceBuilder::new()
//!     .layer(RetryLayer::in_process().max_attempts(3))
//!     .layer(TimeoutLayer::new(Duration::from_secs(5)))
//!     .service(service(|msg: Received| async move {
//!         println!("{}", msg.id());
//!         Ok(())
//!     }));
//! # let _ = handler;
//! ```
//!
//! - [`retry`]: retries with exponential backoff and jitter, in process or
//!   handed to the broker (`retry_after`), then dead-letters: "N attempts,
//!   then the dead-letter topic" is one policy.
//! - `tracing` (feature `otel`): a span per handled message, child of the
//!   producer's span through the W3C `traceparent` header, and a publisher
//!   that writes it.
//! - [`timeout`]: a handler that takes too long fails with a retryable error.
//! - [`dedup`]: skips messages whose id was already processed within a
//!   window ([`DedupStore`]; [`MemoryDedupStore`] in memory).
//! - [`circuit_breaker`]: after repeated failures, retries messages later instead
//!   of calling a failing downstream, then tries again.
//! - [`poison`]: counts failures per message id across deliveries and
//!   quarantines a message after N, until released.
//! - [`rate_limit`]: a token bucket; calls wait for a token.
//! - `redis` (feature `redis`): a dedup store, a poison store and a rate
//!   limit shared by every instance, on Redis.
//! - `metrics` (feature `metrics`): Prometheus counters, histograms and a gauge of handling
//!   and publishing, in a registry you pass.
//!
//! Correlation ids need no layer: the router gives the messages a handler
//! returns the input's conversation (`Message::correlation_id`).
#![forbid(unsafe_code)]

pub mod circuit_breaker;
pub mod dedup;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod poison;
pub mod rate_limit;
#[cfg(feature = "redis")]
pub mod redis;
pub mod retry;
pub mod timeout;
#[cfg(feature = "otel")]
pub mod tracing;

pub use circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, CircuitOpen};
pub use dedup::{Dedup, DedupLayer, DedupStore, MemoryDedupStore};
#[cfg(feature = "metrics")]
pub use metrics::{Metered, MeteredPublisher, Metrics, MetricsLayer};
pub use poison::{MemoryPoisonStore, Poison, PoisonLayer, PoisonStore};
pub use rate_limit::{RateLimit, RateLimitLayer};
pub use retry::{Attempted, Retry, RetryLayer};
pub use timeout::{Timeout, TimeoutLayer};
#[cfg(feature = "otel")]
pub use tracing::{Traced, TracedPublisher, TracingLayer};

/// The service that was polled ready, for this call, leaving a clone in its
/// place for the next one (tower's clone-and-swap: the clone may not be
/// ready yet, the one returned is).
pub(crate) fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

/// A wrapped service's error as a handler error, keeping what becomes of
/// the message.
fn failed<E: Into<msg_core::BoxError>>(error: E) -> msg_core::HandlerError {
    msg_core::HandlerError::from_boxed(error.into())
}
