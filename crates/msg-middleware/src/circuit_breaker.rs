//! A circuit breaker: stop calling a handler whose downstream is failing.
//!
//! Closed: calls go through; `failure_threshold` failures in a row open
//! the circuit. Open: messages are not handled but retried later
//! (`retry_after` the time left until the reset), so they come back
//! instead of failing. After `reset_timeout` the circuit is half-open: one
//! trial call goes through (others are retried later); its success closes the
//! circuit, its failure opens it again.
//!
//! Only failures that may heal count: a dead-letter failure (a bad
//! message, not a bad downstream) neither trips nor resets the breaker. A
//! panic counts as a failure; a call dropped unfinished (a shutdown)
//! counts as nothing, and ends a trial so that the next message tries.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use msg_core::{BoxError, HandlerError, Outgoing};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::failed;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial_running: bool },
}

/// The error of a message retried later while the circuit is open.
#[derive(Debug, Clone, Copy)]
pub struct CircuitOpen;

impl std::fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("circuit open: the handler is not called until it resets")
    }
}

impl std::error::Error for CircuitOpen {}

/// Opens after repeated failures; see the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct CircuitBreakerLayer {
    failure_threshold: u32,
    reset_timeout: Duration,
}

impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl CircuitBreakerLayer {
    /// Opens after 5 failures in a row; half-open after 30 s.
    pub fn new() -> Self {
        Self {
            failure_threshold: 5,
            reset_timeout: Duration::from_secs(30),
        }
    }

    /// Failures in a row that open the circuit (at least 1).
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n.max(1);
        self
    }

    /// How long the circuit stays open before a trial call.
    pub fn reset_timeout(mut self, d: Duration) -> Self {
        self.reset_timeout = d;
        self
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;
    fn layer(&self, inner: S) -> CircuitBreaker<S> {
        CircuitBreaker {
            inner,
            config: *self,
            state: Arc::new(Mutex::new(State::Closed { failures: 0 })),
        }
    }
}

/// See [`CircuitBreakerLayer`]. Clones share the circuit; each `layer`
/// call starts a circuit of its own.
#[derive(Debug, Clone)]
pub struct CircuitBreaker<S> {
    inner: S,
    config: CircuitBreakerLayer,
    state: Arc<Mutex<State>>,
}

/// May this call go through? If not, how long until it may.
fn admit(state: &Mutex<State>, reset_timeout: Duration) -> Result<bool, Duration> {
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    match *state {
        State::Closed { .. } => Ok(false),
        State::Open { until } if now < until => Err(until - now),
        State::Open { .. }
        | State::HalfOpen {
            trial_running: false,
        } => {
            *state = State::HalfOpen {
                trial_running: true,
            };
            Ok(true)
        }
        // A trial is running: come back when it may have ended.
        State::HalfOpen {
            trial_running: true,
        } => Err(reset_timeout.min(Duration::from_secs(1))),
    }
}

fn record(state: &Mutex<State>, config: &CircuitBreakerLayer, trial: bool, outcome: Option<bool>) {
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    let open = State::Open {
        until: Instant::now() + config.reset_timeout,
    };
    *state = match (outcome, *state) {
        // A failure that says nothing about the downstream.
        (None, State::HalfOpen { .. }) if trial => State::HalfOpen {
            trial_running: false,
        },
        (None, s) => s,
        (Some(true), _) => State::Closed { failures: 0 },
        (Some(false), State::HalfOpen { .. }) if trial => open,
        (Some(false), State::Closed { failures }) if failures + 1 >= config.failure_threshold => {
            open
        }
        (Some(false), State::Closed { failures }) => State::Closed {
            failures: failures + 1,
        },
        (Some(false), s) => s,
    };
}

impl<S, Req> Service<Req> for CircuitBreaker<S>
where
    S: Service<Req>,
    S::Response: Into<Outgoing>,
    S::Error: Into<BoxError>,
{
    type Response = Outgoing;
    type Error = HandlerError;
    type Future = BreakerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx).map_err(failed)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match admit(&self.state, self.config.reset_timeout) {
            Ok(trial) => BreakerFuture::Called {
                inner: self.inner.call(request),
                call: Call {
                    state: self.state.clone(),
                    config: self.config,
                    trial,
                    done: false,
                },
            },
            Err(wait) => BreakerFuture::Open { wait },
        }
    }
}

// pin-project-lite takes no docs on fields.
#[allow(missing_docs)]
mod future {
    use super::*;
    pin_project_lite::pin_project! {
        /// The future of a [`CircuitBreaker`] call.
        #[project = BreakerProj]
        pub enum BreakerFuture<F> {
            /// The circuit is open: retry after the wait.
            Open { wait: Duration },
            /// The handler was called.
            Called { #[pin] inner: F, call: Call },
        }
    }
}
pub use future::BreakerFuture;
use future::BreakerProj;

/// A call that went through: its outcome is recorded however it ends. A
/// panic is a failure; a call dropped unfinished (a shutdown) says nothing
/// about the downstream, but a trial's end lets the next message try.
#[derive(Debug)]
pub struct Call {
    state: Arc<Mutex<State>>,
    config: CircuitBreakerLayer,
    trial: bool,
    done: bool,
}

impl Call {
    fn end(&mut self, outcome: Option<bool>) {
        if !std::mem::replace(&mut self.done, true) {
            record(&self.state, &self.config, self.trial, outcome);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.end(None);
    }
}

/// Records a failure if polling the handler panics.
struct OnPanic<'a>(Option<&'a mut Call>);

impl Drop for OnPanic<'_> {
    fn drop(&mut self) {
        if let Some(call) = self.0.take()
            && std::thread::panicking()
        {
            call.end(Some(false));
        }
    }
}

impl<F, R, E> Future for BreakerFuture<F>
where
    F: Future<Output = Result<R, E>>,
    R: Into<Outgoing>,
    E: Into<BoxError>,
{
    type Output = Result<Outgoing, HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            BreakerProj::Open { wait } => {
                Poll::Ready(Err(HandlerError::retry_after(CircuitOpen, *wait)))
            }
            BreakerProj::Called { inner, call } => {
                let mut guard = OnPanic(Some(call));
                let polled = inner.poll(cx);
                let call = guard.0.take().expect("the guard holds the call");
                let result = std::task::ready!(polled).map(Into::into).map_err(failed);
                call.end(match &result {
                    Ok(_) => Some(true),
                    // A bad message, not a bad downstream.
                    Err(e) if e.is_dead_letter() => None,
                    Err(_) => Some(false),
                });
                Poll::Ready(result)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msg_core::{Message, Metadata, Received, Settlement, service};
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use tower::ServiceExt;

    fn received() -> Received {
        Received {
            message: Message::new("x"),
            metadata: Metadata::new("t"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_defers_while_open_and_closes_after_a_good_trial() {
        let healthy = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU32::new(0));
        let (h, c) = (healthy.clone(), calls.clone());
        let handler = service(move |_r: Received| {
            c.fetch_add(1, Ordering::SeqCst);
            let ok = h.load(Ordering::SeqCst);
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(HandlerError::retry("downstream down"))
                }
            }
        });
        let breaker = CircuitBreakerLayer::new()
            .failure_threshold(3)
            .reset_timeout(Duration::from_secs(10))
            .layer(handler);
        for _ in 0..3 {
            let e = breaker.clone().oneshot(received()).await.unwrap_err();
            assert_eq!(e.settlement(), Settlement::Retry);
        }
        // Open: the handler is not called; the message is retried later.
        let e = breaker.clone().oneshot(received()).await.unwrap_err();
        assert_eq!(
            e.settlement(),
            Settlement::RetryAfter(Duration::from_secs(10))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Half-open after the reset timeout: a failed trial opens it again.
        tokio::time::advance(Duration::from_secs(10)).await;
        breaker.clone().oneshot(received()).await.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert!(matches!(
            breaker
                .clone()
                .oneshot(received())
                .await
                .unwrap_err()
                .settlement(),
            Settlement::RetryAfter(_)
        ));
        // A good trial closes it.
        tokio::time::advance(Duration::from_secs(10)).await;
        healthy.store(true, Ordering::SeqCst);
        breaker.clone().oneshot(received()).await.unwrap();
        breaker.clone().oneshot(received()).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn bad_messages_do_not_trip_the_breaker() {
        let handler = service(|_r: Received| async {
            Err::<(), _>(HandlerError::dead_letter("bad payload"))
        });
        let breaker = CircuitBreakerLayer::new()
            .failure_threshold(1)
            .layer(handler);
        for _ in 0..3 {
            let e = breaker.clone().oneshot(received()).await.unwrap_err();
            assert!(e.is_dead_letter(), "still closed");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_trial_that_panics_or_is_dropped_does_not_hold_the_circuit_half_open() {
        use futures::FutureExt;
        let mode = Arc::new(AtomicU32::new(0));
        let m = mode.clone();
        let handler = service(move |_r: Received| {
            let mode = m.load(Ordering::SeqCst);
            async move {
                match mode {
                    0 => Err(HandlerError::retry("downstream down")),
                    1 => panic!("handler bug"),
                    2 => std::future::pending().await,
                    _ => Ok(()),
                }
            }
        });
        let mut breaker = CircuitBreakerLayer::new()
            .failure_threshold(1)
            .reset_timeout(Duration::from_secs(10))
            .layer(handler);
        breaker.clone().oneshot(received()).await.unwrap_err();

        // The trial panics: a failure, so the circuit opens again.
        tokio::time::advance(Duration::from_secs(10)).await;
        mode.store(1, Ordering::SeqCst);
        let trial = std::panic::AssertUnwindSafe(breaker.call(received()));
        assert!(trial.catch_unwind().await.is_err());
        let e = breaker.clone().oneshot(received()).await.unwrap_err();
        assert_eq!(
            e.settlement(),
            Settlement::RetryAfter(Duration::from_secs(10)),
            "open again, for a full reset timeout"
        );

        // The trial's call is dropped (a shutdown): it says nothing about
        // the downstream, and the next message is the next trial.
        tokio::time::advance(Duration::from_secs(10)).await;
        mode.store(2, Ordering::SeqCst);
        let mut trial = Box::pin(breaker.call(received()));
        assert!(futures::poll!(trial.as_mut()).is_pending());
        drop(trial);
        mode.store(3, Ordering::SeqCst);
        breaker.clone().oneshot(received()).await.unwrap();
        breaker.clone().oneshot(received()).await.unwrap();
    }
}
