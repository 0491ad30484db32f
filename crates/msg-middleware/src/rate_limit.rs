//! A token bucket: at most `rate` handler calls per second, with bursts.
//!
//! A call that finds the bucket empty waits for the next token (it does not
//! fail), so the limit slows consumption down instead of causing retries.
//! Clones of the service share the bucket.

use crate::failed;
use msg_core::BoxError;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use msg_core::{HandlerError, Outgoing};
use tokio::time::Instant;
use tower::{Layer, Service};

/// Limits handler calls to a rate; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    per_second: f64,
    burst: f64,
}

impl RateLimitLayer {
    /// At most `per_second` calls a second on average, and up to `burst`
    /// at once after a quiet spell (both at least 1).
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second: per_second.max(f64::MIN_POSITIVE),
            burst: f64::from(burst.max(1)),
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            config: self.clone(),
            bucket: Arc::new(Mutex::new(Bucket {
                tokens: self.burst,
                refilled: Instant::now(),
            })),
        }
    }
}

/// See [`RateLimitLayer`].
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    config: RateLimitLayer,
    bucket: Arc<Mutex<Bucket>>,
}

/// Takes a token, or says how long until one is there.
fn take(bucket: &Mutex<Bucket>, config: &RateLimitLayer) -> Option<Duration> {
    let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    let earned = now.duration_since(b.refilled).as_secs_f64() * config.per_second;
    b.tokens = (b.tokens + earned).min(config.burst);
    b.refilled = now;
    if b.tokens >= 1.0 {
        b.tokens -= 1.0;
        None
    } else {
        Some(Duration::from_secs_f64(
            (1.0 - b.tokens) / config.per_second,
        ))
    }
}

impl<S, Req> Service<Req> for RateLimit<S>
where
    S: Service<Req> + Clone + Send + 'static,
    Req: Send + 'static,
    S::Response: Into<Outgoing>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Outgoing;
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<Outgoing, HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx).map_err(failed)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let mut inner = crate::take_ready(&mut self.inner);
        let (bucket, config) = (self.bucket.clone(), self.config.clone());
        Box::pin(async move {
            while let Some(wait) = take(&bucket, &config) {
                tokio::time::sleep(wait).await;
            }
            inner.call(request).await.map(Into::into).map_err(failed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msg_core::{Message, Metadata, Received, service};
    use tower::ServiceExt;

    fn received() -> Received {
        Received {
            message: Message::new("x"),
            metadata: Metadata::new("t"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_then_calls_are_spaced_by_the_rate() {
        let limited = RateLimitLayer::new(10.0, 3).layer(service(|_r: Received| async { Ok(()) }));
        let started = Instant::now();
        for _ in 0..3 {
            limited.clone().oneshot(received()).await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_millis(5),
            "the burst waits for nothing"
        );
        for _ in 0..5 {
            limited.clone().oneshot(received()).await.unwrap();
        }
        // Five more tokens at 10 a second: about half a second.
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(490) && waited < Duration::from_millis(520),
            "{waited:?}"
        );
    }
}
