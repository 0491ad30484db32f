//! The router: runs handlers over subscriptions and owns acknowledgement.
//!
//! Each subscription runs in its own task. Up to
//! [`HandlerOptions::concurrency`] messages are handled at once; with
//! [`HandlerOptions::ordered_by_key`], messages with the same key never run
//! concurrently, so they complete in the order they arrived. When a handler
//! returns messages, they are published before the input is acked. A failed
//! handler's [`Disposition`](handler::Disposition) decides between nack, defer and reject; a panic
//! is a retryable failure and never ends the consume loop.

mod consume;
pub mod handler;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::{Layer, Service};

use self::handler::{BoxBatchHandler, BoxHandler, HandlerError, Outgoing, box_handler};
use crate::{DynPublisher, DynSubscriber, Publisher, Received, Result, Subscriber, Subscription};

/// How the router runs one handler.
///
/// It loads from a file with the same names as its builder:
///
/// ```
/// let options: msg_core::HandlerOptions =
///     serde_json::from_str(r#"{ "concurrency": 8, "ordered_by_key": true }"#).unwrap();
/// assert_eq!(options, msg_core::HandlerOptions::default().concurrency(8).ordered_by_key());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub struct HandlerOptions {
    concurrency: usize,
    ordered_by_key: bool,
}

impl<'de> serde::Deserialize<'de> for HandlerOptions {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let options = HandlerOptions::deserialize(deserializer)?;
        if options.concurrency == 0 {
            return Err(serde::de::Error::custom("concurrency must be at least 1"));
        }
        Ok(options)
    }
}

impl Default for HandlerOptions {
    fn default() -> Self {
        Self {
            concurrency: 64,
            ordered_by_key: false,
        }
    }
}

impl HandlerOptions {
    /// How many messages are handled at once (at least 1; default 64).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Messages with the same key are never handled concurrently.
    pub fn ordered_by_key(mut self) -> Self {
        self.ordered_by_key = true;
        self
    }
}

/// How the router groups messages for a batch handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    max_size: usize,
    max_wait: Duration,
}

impl BatchOptions {
    /// Flush a batch when it holds `max_size` messages, or `max_wait` after
    /// its first message arrived, whichever comes first.
    pub fn new(max_size: usize, max_wait: Duration) -> Self {
        Self {
            max_size: max_size.max(1),
            max_wait,
        }
    }
}

enum Handler {
    Single(BoxHandler, HandlerOptions),
    Batch(BoxBatchHandler, BatchOptions),
}

struct Entry {
    subscription: Subscription,
    handler: Handler,
}

/// Runs handlers over subscriptions.
///
/// ```
/// # async fn example() -> msg_core::Result<()> {
/// use msg_core::{handler_fn, Received, Router, Subscription, BoxError};
/// let broker = msg_memory::MemoryBroker::new();
/// let router = Router::new(broker.clone(), broker.clone())
///     .handle(
///         Subscription::new("orders.created").group("billing"),
///         handler_fn(|msg: Received| async move {
///             println!("billing {}", msg.id());
///             Ok::<_, BoxError>(())
///         }),
///     );
/// let running = router.start().await?;
/// // ...
/// running.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Router {
    subscriber: Arc<dyn DynSubscriber>,
    publisher: Arc<dyn DynPublisher>,
    entries: Vec<Entry>,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field(
                "subscriptions",
                &self
                    .entries
                    .iter()
                    .map(|e| &e.subscription)
                    .collect::<Vec<_>>(),
            )
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router that consumes from `subscriber` and publishes what handlers
    /// return through `publisher`.
    pub fn new(subscriber: impl Subscriber, publisher: impl Publisher) -> Self {
        Self {
            subscriber: Arc::new(subscriber),
            publisher: Arc::new(publisher),
            entries: Vec::new(),
            shutdown_timeout: Duration::from_secs(30),
        }
    }

    /// Runs `handler` over `subscription` with default [`HandlerOptions`].
    ///
    /// `handler` is any `tower::Service` over [`Received`] whose response
    /// converts into [`Outgoing`] (`()` does) and whose error converts into
    /// [`HandlerError`] (`BoxError` does, so `tower` layers stack).
    pub fn handle<S>(self, subscription: Subscription, handler: S) -> Self
    where
        S: Service<Received> + Clone + Send + Sync + 'static,
        S::Response: Into<Outgoing>,
        S::Error: Into<HandlerError>,
        S::Future: Send + 'static,
    {
        self.handle_with(subscription, HandlerOptions::default(), handler)
    }

    /// Runs `handler` over `subscription` with the given options.
    pub fn handle_with<S>(
        mut self,
        subscription: Subscription,
        options: HandlerOptions,
        handler: S,
    ) -> Self
    where
        S: Service<Received> + Clone + Send + Sync + 'static,
        S::Response: Into<Outgoing>,
        S::Error: Into<HandlerError>,
        S::Future: Send + 'static,
    {
        self.entries.push(Entry {
            subscription,
            handler: Handler::Single(box_handler(handler), options),
        });
        self
    }

    /// Runs a batch handler over `subscription`: it receives up to
    /// `max_size` messages at once; its result settles all of them.
    pub fn handle_batch<S>(
        mut self,
        subscription: Subscription,
        options: BatchOptions,
        handler: S,
    ) -> Self
    where
        S: Service<Vec<Received>> + Clone + Send + Sync + 'static,
        S::Response: Into<Outgoing>,
        S::Error: Into<HandlerError>,
        S::Future: Send + 'static,
    {
        self.entries.push(Entry {
            subscription,
            handler: Handler::Batch(box_handler(handler), options),
        });
        self
    }

    /// Wraps every (non-batch) handler added so far in `layer`.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<BoxHandler>,
        L::Service: Service<Received> + Clone + Send + Sync + 'static,
        <L::Service as Service<Received>>::Response: Into<Outgoing>,
        <L::Service as Service<Received>>::Error: Into<HandlerError>,
        <L::Service as Service<Received>>::Future: Send + 'static,
    {
        for entry in &mut self.entries {
            if let Handler::Single(handler, _) = &mut entry.handler {
                *handler = box_handler(layer.layer(handler.clone()));
            }
        }
        self
    }

    /// How long shutdown lets in-flight messages finish before nacking them
    /// (default 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Subscribes everything and starts consuming. Fails, and starts
    /// nothing, if any subscription fails.
    pub async fn start(self) -> Result<RunningRouter> {
        let mut streams = Vec::with_capacity(self.entries.len());
        for entry in &self.entries {
            entry.subscription.validate()?;
            streams.push(
                self.subscriber
                    .subscribe_boxed(entry.subscription.clone())
                    .await?,
            );
        }
        let (stop, stopped) = watch::channel(false);
        let tasks = self
            .entries
            .into_iter()
            .zip(streams)
            .map(|(entry, stream)| {
                let ctx = consume::Context {
                    publisher: self.publisher.clone(),
                    stop: stopped.clone(),
                    shutdown_timeout: self.shutdown_timeout,
                };
                match entry.handler {
                    Handler::Single(h, o) => tokio::spawn(consume::run_single(ctx, stream, h, o)),
                    Handler::Batch(h, o) => tokio::spawn(consume::run_batch(ctx, stream, h, o)),
                }
            })
            .collect();
        Ok(RunningRouter { stop, tasks })
    }

    /// Starts, runs until `signal` completes (e.g. `tokio::signal::ctrl_c()`),
    /// then shuts down gracefully.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) -> Result<()> {
        let running = self.start().await?;
        signal.await;
        running.shutdown().await;
        Ok(())
    }
}

/// A started router.
#[derive(Debug)]
pub struct RunningRouter {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningRouter {
    /// Stops fetching, lets in-flight messages finish until the shutdown
    /// timeout, nacks the rest, and returns once every consume loop ended.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.wait().await;
    }

    /// Waits until every consume loop ended by itself (its subscriber was
    /// closed).
    pub async fn wait(self) {
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a consume loop ended abnormally");
            }
        }
    }
}
