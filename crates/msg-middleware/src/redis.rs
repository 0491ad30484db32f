//! Stores and a rate limit shared by every instance of a service, on
//! Redis (feature `redis`). Each takes a connected fred `Client` and a key
//! prefix of yours.
//!
//! | type | keys |
//! |---|---|
//! | [`RedisDedupStore`] | `<prefix>:<id>`, expiring after the window |
//! | [`RedisPoisonStore`] | `<prefix>:failures:<id>` (a counter, expiring), `<prefix>:quarantined` (a set) |
//! | [`RedisRateLimitLayer`] | `<prefix>:<window number>` (a counter per window, expiring) |

use crate::failed;
use msg_core::BoxError;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use fred::prelude::{Client, Expiration, KeysInterface, SetsInterface};
use futures::future::BoxFuture;
use msg_core::{Error, HandlerError, Outgoing, Received, Result, Uuid};
use tower::{Layer, Service};

use crate::dedup::DedupStore;
use crate::poison::PoisonStore;

fn map(e: fred::error::Error) -> Error {
    match e.kind() {
        fred::error::ErrorKind::IO
        | fred::error::ErrorKind::Canceled
        | fred::error::ErrorKind::Timeout => Error::Connection(Box::new(e)),
        _ => Error::broker_retryable(e),
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Processed ids in Redis, each for the window; see the [module docs](self).
#[derive(Clone)]
pub struct RedisDedupStore {
    client: Client,
    prefix: String,
    window: Duration,
}

impl std::fmt::Debug for RedisDedupStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDedupStore")
            .field("prefix", &self.prefix)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl RedisDedupStore {
    /// Remembers ids under `prefix` for `window`.
    pub fn new(client: Client, prefix: impl Into<String>, window: Duration) -> Self {
        Self {
            client,
            prefix: prefix.into(),
            window,
        }
    }
}

impl DedupStore for RedisDedupStore {
    async fn contains(&self, id: Uuid) -> Result<bool> {
        {
            let n: i64 = self
                .client
                .exists(format!("{}:{id}", self.prefix))
                .await
                .map_err(map)?;
            Ok(n > 0)
        }
    }

    async fn mark(&self, id: Uuid) -> Result<()> {
        {
            let _: Option<String> = self
                .client
                .set(
                    format!("{}:{id}", self.prefix),
                    "1",
                    Some(Expiration::PX(millis(self.window))),
                    None,
                    false,
                )
                .await
                .map_err(map)?;
            Ok(())
        }
    }
}

/// Failure counts and quarantined ids in Redis; see the [module docs](self).
#[derive(Clone)]
pub struct RedisPoisonStore {
    client: Client,
    prefix: String,
    forget_after: Duration,
}

impl std::fmt::Debug for RedisPoisonStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPoisonStore")
            .field("prefix", &self.prefix)
            .field("forget_after", &self.forget_after)
            .finish_non_exhaustive()
    }
}

impl RedisPoisonStore {
    /// Keeps counts under `prefix`; a count not bumped for `forget_after`
    /// expires (quarantined ids stay until released).
    pub fn new(client: Client, prefix: impl Into<String>, forget_after: Duration) -> Self {
        Self {
            client,
            prefix: prefix.into(),
            forget_after,
        }
    }

    fn failures(&self, id: Uuid) -> String {
        format!("{}:failures:{id}", self.prefix)
    }

    fn set(&self) -> String {
        format!("{}:quarantined", self.prefix)
    }
}

impl PoisonStore for RedisPoisonStore {
    async fn record_failure(&self, id: Uuid) -> Result<u32> {
        {
            let n: i64 = self.client.incr(self.failures(id)).await.map_err(map)?;
            let _: i64 = self
                .client
                .pexpire(self.failures(id), millis(self.forget_after), None)
                .await
                .map_err(map)?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        }
    }

    async fn clear(&self, id: Uuid) -> Result<()> {
        {
            let _: i64 = self.client.del(self.failures(id)).await.map_err(map)?;
            Ok(())
        }
    }

    async fn quarantine(&self, id: Uuid) -> Result<()> {
        {
            let _: i64 = self
                .client
                .sadd(self.set(), id.to_string())
                .await
                .map_err(map)?;
            let _: i64 = self.client.del(self.failures(id)).await.map_err(map)?;
            Ok(())
        }
    }

    async fn is_quarantined(&self, id: Uuid) -> Result<bool> {
        {
            self.client
                .sismember(self.set(), id.to_string())
                .await
                .map_err(map)
        }
    }

    async fn quarantined(&self) -> Result<Vec<Uuid>> {
        {
            let ids: Vec<String> = self.client.smembers(self.set()).await.map_err(map)?;
            Ok(ids.iter().filter_map(|s| Uuid::parse_str(s).ok()).collect())
        }
    }

    async fn release(&self, id: Uuid) -> Result<bool> {
        {
            let removed: i64 = self
                .client
                .srem(self.set(), id.to_string())
                .await
                .map_err(map)?;
            let _: i64 = self.client.del(self.failures(id)).await.map_err(map)?;
            Ok(removed > 0)
        }
    }
}

/// At most `limit` handler calls per window, counted in Redis across every
/// instance (a fixed window: a burst of up to twice the limit can straddle
/// a window edge). A call over the limit waits for the next window.
#[derive(Clone)]
pub struct RedisRateLimitLayer {
    client: Client,
    prefix: String,
    limit: u64,
    window: Duration,
}

impl std::fmt::Debug for RedisRateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimitLayer")
            .field("prefix", &self.prefix)
            .field("limit", &self.limit)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl RedisRateLimitLayer {
    /// `limit` calls per `window` under `prefix`, shared by every instance.
    pub fn new(client: Client, prefix: impl Into<String>, limit: u64, window: Duration) -> Self {
        Self {
            client,
            prefix: prefix.into(),
            limit: limit.max(1),
            window: window.max(Duration::from_millis(1)),
        }
    }

    /// Takes one call of the current window, waiting for later windows
    /// while they are full.
    async fn acquire(&self) -> Result<()> {
        let window_ms = millis(self.window);
        loop {
            let now_ms = i64::try_from(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
            )
            .unwrap_or(i64::MAX);
            let window = now_ms / window_ms;
            let key = format!("{}:{window}", self.prefix);
            let n: i64 = self.client.incr(&key).await.map_err(map)?;
            if n == 1 {
                let _: i64 = self
                    .client
                    .pexpire(&key, window_ms * 2, None)
                    .await
                    .map_err(map)?;
            }
            if u64::try_from(n).unwrap_or(u64::MAX) <= self.limit {
                return Ok(());
            }
            let next = (window + 1) * window_ms;
            tokio::time::sleep(Duration::from_millis(
                u64::try_from(next - now_ms).unwrap_or(1),
            ))
            .await;
        }
    }
}

impl<S> Layer<S> for RedisRateLimitLayer {
    type Service = RedisRateLimit<S>;
    fn layer(&self, inner: S) -> RedisRateLimit<S> {
        RedisRateLimit {
            inner,
            config: self.clone(),
        }
    }
}

/// See [`RedisRateLimitLayer`].
#[derive(Clone)]
pub struct RedisRateLimit<S> {
    inner: S,
    config: RedisRateLimitLayer,
}

impl<S: std::fmt::Debug> std::fmt::Debug for RedisRateLimit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Service<Received> for RedisRateLimit<S>
where
    S: Service<Received> + Clone + Send + 'static,
    S::Response: Into<Outgoing>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Outgoing;
    type Error = HandlerError;
    type Future = BoxFuture<'static, std::result::Result<Outgoing, HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), HandlerError>> {
        self.inner.poll_ready(cx).map_err(failed)
    }

    fn call(&mut self, received: Received) -> Self::Future {
        let mut inner = crate::take_ready(&mut self.inner);
        let config = self.config.clone();
        Box::pin(async move {
            // Redis unreachable: retry the message rather than run unlimited.
            config.acquire().await.map_err(HandlerError::retry)?;
            inner.call(received).await.map(Into::into).map_err(failed)
        })
    }
}
