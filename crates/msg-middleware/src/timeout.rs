//! A handler that takes too long fails with a retryable error.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use msg_core::{BoxError, Error, HandlerError, Outgoing};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use crate::failed;

/// Fails a handler call that takes longer than the timeout with a
/// retryable [`Error::Timeout`]; the message is then retried.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    /// Handler calls may take at most `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// See [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S, Req> Service<Req> for Timeout<S>
where
    S: Service<Req>,
    S::Response: Into<Outgoing>,
    S::Error: Into<BoxError>,
{
    type Response = Outgoing;
    type Error = HandlerError;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx).map_err(failed)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        TimeoutFuture {
            inner: self.inner.call(request),
            started: Instant::now(),
            timeout: self.timeout,
            sleep: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a [`Timeout`] call.
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        started: Instant,
        timeout: Duration,
        // Made only when the handler waits: a handler done at its first
        // poll never touches the timer wheel, and boxed so that the future
        // of every call stays small.
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<F, R, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<R, E>>,
    R: Into<Outgoing>,
    E: Into<BoxError>,
{
    type Output = Result<Outgoing, HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map(Into::into).map_err(failed));
        }
        let sleep = this.sleep.get_or_insert_with(|| {
            Box::pin(tokio::time::sleep_until(*this.started + *this.timeout))
        });
        std::task::ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Err(HandlerError::retry(Error::timeout(*this.timeout))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msg_core::{Message, Metadata, Received, Settlement, service};
    use tower::ServiceExt;

    fn received() -> Received {
        Received {
            message: Message::new("x"),
            metadata: Metadata::new("t"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_handler_times_out_as_a_retry() {
        let slow = service(|_r: Received| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        });
        let err = TimeoutLayer::new(Duration::from_secs(1))
            .layer(slow)
            .oneshot(received())
            .await
            .unwrap_err();
        assert_eq!(err.settlement(), Settlement::Retry);
        assert!(err.to_string().contains("timed out"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_that_waits_less_than_the_timeout_passes() {
        let waits = service(|_r: Received| async {
            tokio::time::sleep(Duration::from_millis(900)).await;
            Ok(())
        });
        TimeoutLayer::new(Duration::from_secs(1))
            .layer(waits)
            .oneshot(received())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_fast_handler_passes_through() {
        let fast = service(|_r: Received| async { Ok(()) });
        let out = TimeoutLayer::new(Duration::from_secs(1))
            .layer(fast)
            .oneshot(received())
            .await
            .unwrap();
        assert!(out.is_empty());
    }
}
