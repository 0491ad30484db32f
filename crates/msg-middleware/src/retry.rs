//! Retries with exponential backoff and jitter, then dead-letters: one
//! policy, "N attempts, backoff between them, then the dead-letter topic".
//!
//! An attempt is a call of the handler, and the handler reads it in
//! [`Metadata::attempt`](msg_core::Metadata::attempt). Two ways to wait
//! between attempts:
//! - [`RetryLayer::in_process`]: the handler is called again after the
//!   backoff, within the same delivery, and sees the attempt go up. Quick,
//!   but the message holds its in-flight slot while waiting. A delivery
//!   that comes again (the process stopped) goes on from the delivery's
//!   attempt, so each earlier delivery counts as one attempt.
//! - [`RetryLayer::via_broker`]: the failure becomes a
//!   `retry_after(backoff)` for the delivery's attempt, so the transport
//!   delivers it again later and a long backoff holds no slot.
//!
//! When the last attempt fails, the message is dead-lettered with the
//! reason `gave up after N attempts: <the last error>`. Only failures the
//! predicate accepts are retried; by default every failure that is not
//! already a dead letter (a retryable `msg_core::Error`, any other error, a
//! timeout). A subscription's max deliveries still bounds the deliveries;
//! keep it at or above `max_attempts` for `via_broker`.
//!
//! Around a batch handler (`Router::batch_layer`) the whole batch is one
//! attempt: it is called again whole, every message's attempt going up
//! together, and dead-lettered message by message after the last.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::future::BoxFuture;
use msg_core::{BoxError, HandlerError, Outgoing, Received};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use crate::failed;

type Predicate = Arc<dyn Fn(&HandlerError) -> bool + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    InProcess,
    ViaBroker,
}

/// Retries failed handler calls; see the [module docs](self).
#[derive(Clone)]
pub struct RetryLayer {
    mode: Mode,
    max_attempts: u32,
    min_delay: Duration,
    max_delay: Duration,
    factor: f32,
    jitter: bool,
    max_elapsed: Option<Duration>,
    predicate: Predicate,
}

impl std::fmt::Debug for RetryLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryLayer")
            .field("mode", &self.mode)
            .field("max_attempts", &self.max_attempts)
            .field("min_delay", &self.min_delay)
            .field("max_delay", &self.max_delay)
            .field("factor", &self.factor)
            .field("jitter", &self.jitter)
            .field("max_elapsed", &self.max_elapsed)
            .finish_non_exhaustive()
    }
}

impl RetryLayer {
    /// Retries within the delivery: 3 attempts, 100 ms doubling to 10 s,
    /// with jitter.
    pub fn in_process() -> Self {
        Self::new(Mode::InProcess)
    }

    /// Hands each retry to the broker as a `retry_after` with the backoff
    /// of the delivery's attempt: 10 attempts, 1 s doubling to 5 min, with
    /// jitter.
    pub fn via_broker() -> Self {
        Self::new(Mode::ViaBroker)
            .max_attempts(10)
            .min_delay(Duration::from_secs(1))
            .max_delay(Duration::from_secs(300))
    }

    fn new(mode: Mode) -> Self {
        Self {
            mode,
            max_attempts: 3,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            factor: 2.0,
            jitter: true,
            max_elapsed: None,
            predicate: Arc::new(|e: &HandlerError| !e.is_dead_letter()),
        }
    }

    /// Attempts in all, the first one included (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// The first backoff.
    pub fn min_delay(mut self, d: Duration) -> Self {
        self.min_delay = d;
        self
    }

    /// The longest backoff.
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// How much each backoff grows (default 2).
    pub fn factor(mut self, factor: f32) -> Self {
        self.factor = factor.max(1.0);
        self
    }

    /// Whether to add random jitter to each backoff (default on), so that
    /// consumers failing together do not retry together.
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// In process: stop retrying within this delivery once this much time
    /// has passed since its first call, counting the next backoff; the
    /// failure is then retried through the broker, and the next delivery
    /// goes on counting attempts.
    pub fn max_elapsed(mut self, d: Duration) -> Self {
        self.max_elapsed = Some(d);
        self
    }

    /// Which failures to retry.
    pub fn retry_if(
        mut self,
        predicate: impl Fn(&HandlerError) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.predicate = Arc::new(predicate);
        self
    }

    /// The backoffs after attempts 1, 2, ...
    fn delays(&self) -> impl Iterator<Item = Duration> {
        let mut builder = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(self.factor)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize);
        if self.jitter {
            builder = builder.with_jitter();
        }
        builder.build()
    }
}

impl<S: Clone> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            shared: Arc::new(Shared {
                spare: inner.clone(),
                config: self.clone(),
            }),
            inner,
        }
    }
}

/// See [`RetryLayer`].
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    /// One reference count per call, not two.
    shared: Arc<Shared<S>>,
}

/// What every call of a [`Retry`] shares.
#[derive(Debug)]
pub struct Shared<S> {
    /// What later attempts call (a clone of it), so that a first attempt
    /// that succeeds clones no service.
    spare: S,
    config: RetryLayer,
}

/// What a retried call handles: one message, or a batch (retried whole,
/// every message's attempt going up together).
pub trait Attempted: Clone + Send + 'static {
    /// The attempt this is: for a batch, its latest message's.
    fn attempt(&self) -> u32;
    /// Sets the attempt the handler sees.
    fn set_attempt(&mut self, attempt: u32);
}

impl Attempted for Received {
    fn attempt(&self) -> u32 {
        self.metadata.attempt
    }
    fn set_attempt(&mut self, attempt: u32) {
        self.metadata.attempt = attempt;
    }
}

impl Attempted for Vec<Received> {
    fn attempt(&self) -> u32 {
        self.iter().map(|r| r.metadata.attempt).max().unwrap_or(1)
    }
    fn set_attempt(&mut self, attempt: u32) {
        for received in self {
            received.metadata.attempt = attempt;
        }
    }
}

impl<S, R> Service<R> for Retry<S>
where
    R: Attempted,
    S: Service<R> + Clone + Send + Sync + 'static,
    S::Response: Into<Outgoing>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Outgoing;
    type Error = HandlerError;
    type Future = RetryFuture<S, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx).map_err(failed)
    }

    fn call(&mut self, request: R) -> Self::Future {
        match self.shared.config.mode {
            Mode::InProcess => {
                let again = Again {
                    request: request.clone(),
                    shared: self.shared.clone(),
                    // Read the clock only when a limit needs it.
                    started: self.shared.config.max_elapsed.map(|_| Instant::now()),
                };
                RetryFuture::First {
                    call: self.inner.call(request),
                    again: Some(again),
                }
            }
            Mode::ViaBroker => RetryFuture::ViaBroker {
                attempt: request.attempt(),
                call: self.inner.call(request),
                shared: self.shared.clone(),
            },
        }
    }
}

/// What attempts after the first need.
#[derive(Debug)]
pub struct Again<S, R> {
    request: R,
    shared: Arc<Shared<S>>,
    started: Option<Instant>,
}

// pin-project-lite takes no docs on fields.
#[allow(missing_docs)]
mod future {
    use super::*;
    pin_project_lite::pin_project! {
        /// The future of a [`Retry`] call: the first attempt in place, the
        /// later ones (in process) boxed, so that a first attempt that
        /// succeeds allocates nothing.
        #[project = RetryProj]
        pub enum RetryFuture<S: Service<R>, R> {
            /// The first attempt, in process.
            First { #[pin] call: S::Future, again: Option<Again<S, R>> },
            /// The attempts after it.
            Again { later: BoxFuture<'static, Result<Outgoing, HandlerError>> },
            /// The one attempt of this delivery, via the broker.
            ViaBroker { #[pin] call: S::Future, attempt: u32, shared: Arc<Shared<S>> },
        }
    }
}
pub use future::RetryFuture;
use future::RetryProj;

impl<S, R> Future for RetryFuture<S, R>
where
    R: Attempted,
    S: Service<R> + Clone + Send + Sync + 'static,
    S::Response: Into<Outgoing>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Output = Result<Outgoing, HandlerError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let later = match self.as_mut().project() {
                RetryProj::First { call, again } => {
                    let error = match std::task::ready!(call.poll(cx)) {
                        Ok(out) => return Poll::Ready(Ok(out.into())),
                        Err(e) => failed(e),
                    };
                    let again = again.take().expect("polled after it completed");
                    if !(again.shared.config.predicate)(&error) {
                        return Poll::Ready(Err(error));
                    }
                    Box::pin(in_process(error, again))
                }
                RetryProj::Again { later } => return later.as_mut().poll(cx),
                RetryProj::ViaBroker {
                    call,
                    attempt,
                    shared,
                } => {
                    let result = std::task::ready!(call.poll(cx))
                        .map(Into::into)
                        .map_err(failed);
                    return Poll::Ready(via_broker(result, *attempt, &shared.config));
                }
            };
            self.set(RetryFuture::Again { later });
        }
    }
}

/// The attempts after a first that failed with `error`, in process.
async fn in_process<S, R>(
    mut error: HandlerError,
    again: Again<S, R>,
) -> Result<Outgoing, HandlerError>
where
    R: Attempted,
    S: Service<R> + Clone,
    S::Response: Into<Outgoing>,
    S::Error: Into<BoxError>,
{
    let Again {
        mut request,
        shared,
        started,
    } = again;
    let config = &shared.config;
    // Earlier deliveries count one attempt each.
    let mut delays = config
        .delays()
        .skip(request.attempt().saturating_sub(1) as usize);
    loop {
        if !(config.predicate)(&error) {
            return Err(error);
        }
        let Some(delay) = delays.next() else {
            return Err(give_up(error, request.attempt()));
        };
        if let (Some(max), Some(started)) = (config.max_elapsed, started)
            && started.elapsed() + delay > max
        {
            return Err(error);
        }
        tracing::debug!(error = %error, ?delay, "handler failed; retrying in process");
        tokio::time::sleep(delay).await;
        request.set_attempt(request.attempt() + 1);
        match shared
            .spare
            .clone()
            .oneshot(request.clone())
            .await
            .map(Into::into)
            .map_err(failed)
        {
            Ok(out) => return Ok(out),
            Err(e) => error = e,
        }
    }
}

fn via_broker(
    result: Result<Outgoing, HandlerError>,
    attempt: u32,
    config: &RetryLayer,
) -> Result<Outgoing, HandlerError> {
    let error = match result {
        Ok(out) => return Ok(out),
        Err(e) => e,
    };
    if !(config.predicate)(&error) {
        return Err(error);
    }
    match config.delays().nth(attempt.saturating_sub(1) as usize) {
        Some(delay) => Err(HandlerError::retry_after(error.into_source(), delay)),
        None => Err(give_up(error, attempt)),
    }
}

/// The last attempt failed: dead-letter, saying so.
fn give_up(error: HandlerError, attempts: u32) -> HandlerError {
    HandlerError::dead_letter(GaveUp {
        attempts,
        last: error.into_source(),
    })
    .with_calls(attempts)
}

/// The reason of a dead letter after the last attempt.
#[derive(Debug, thiserror::Error)]
#[error("gave up after {attempts} attempts")]
struct GaveUp {
    attempts: u32,
    #[source]
    last: BoxError,
}

#[cfg(test)]
mod tests {
    use super::*;
    use msg_core::{Message, Metadata, Settlement, service};
    use std::sync::atomic::{AtomicU32, Ordering};

    fn received(attempt: u32) -> Received {
        Received {
            message: Message::new("x"),
            metadata: Metadata::new("t").with_attempt(attempt),
        }
    }

    fn failing_until(ok_at: u32, calls: Arc<AtomicU32>) -> msg_core::BoxHandler {
        msg_core::raw::box_handler(service(move |_r: Received| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n >= ok_at {
                    Ok(())
                } else {
                    Err(HandlerError::retry(format!("failure {n}")))
                }
            }
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn in_process_retries_until_success_with_growing_backoff() {
        let calls = Arc::new(AtomicU32::new(0));
        let retry = RetryLayer::in_process()
            .max_attempts(4)
            .jitter(false)
            .layer(failing_until(3, calls.clone()));
        let started = Instant::now();
        retry.oneshot(received(1)).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // 100 ms, then 200 ms (the paused clock rounds each timer up to
        // the next millisecond).
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_millis(310),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn in_process_gives_up_after_max_attempts_with_the_last_error() {
        let calls = Arc::new(AtomicU32::new(0));
        let retry = RetryLayer::in_process()
            .max_attempts(3)
            .layer(failing_until(99, calls.clone()));
        let err = retry.oneshot(received(1)).await.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(err.is_dead_letter());
        assert_eq!(err.chain(), "gave up after 3 attempts: failure 3");
    }

    #[tokio::test(start_paused = true)]
    async fn in_process_respects_max_elapsed() {
        let calls = Arc::new(AtomicU32::new(0));
        let retry = RetryLayer::in_process()
            .max_attempts(10)
            .jitter(false)
            .max_elapsed(Duration::from_millis(350))
            .layer(failing_until(99, calls.clone()));
        retry.oneshot(received(1)).await.unwrap_err();
        // 100 + 200 = 300 ms fits; 300 + 400 does not.
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_errors_are_never_retried() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let permanent = service(move |_r: Received| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(HandlerError::dead_letter("bad input")) }
        });
        let err = RetryLayer::in_process()
            .layer(permanent)
            .oneshot(received(1))
            .await
            .unwrap_err();
        assert!(err.is_dead_letter());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn via_broker_turns_failures_into_growing_defers() {
        let layer = RetryLayer::via_broker()
            .max_attempts(4)
            .min_delay(Duration::from_secs(1))
            .jitter(false);
        let mut delays = Vec::new();
        for attempt in 1..=4 {
            let calls = Arc::new(AtomicU32::new(0));
            let err = layer
                .clone()
                .layer(failing_until(99, calls))
                .oneshot(received(attempt))
                .await
                .unwrap_err();
            delays.push(match err.settlement() {
                Settlement::RetryAfter(d) => Some(d),
                _ => None,
            });
        }
        let s = Duration::from_secs;
        assert_eq!(delays, vec![Some(s(1)), Some(s(2)), Some(s(4)), None]);
        let calls = Arc::new(AtomicU32::new(0));
        let last = layer
            .layer(failing_until(99, calls))
            .oneshot(received(4))
            .await
            .unwrap_err();
        assert_eq!(
            last.settlement(),
            Settlement::DeadLetter("gave up after 4 attempts: failure 1".into())
        );
    }
}
