//! The router: runs handlers over subscriptions and owns acknowledgement.
//!
//! Each subscription runs in its own task. Up to
//! [`HandlerOptions::concurrency`] messages are handled at once; with
//! [`HandlerOptions::ordered_by_key`], messages with the same key never run
//! concurrently, so they complete in the order they arrived. When a handler
//! returns messages, they are published before the input is acked, with
//! the input's correlation id and trace context unless they set their own.
//! A failed handler's [`HandlerError`](crate::HandlerError) says whether the message is retried,
//! retried after a delay, or dead-lettered; a panic is retried and never
//! ends the consume loop.

mod consume;
pub mod error;
pub mod extract;
pub mod handler;
pub mod outgoing;
mod reply;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::{Layer, Service};

use self::handler::{BatchHandler, BoxBatchHandler, BoxHandler, Handler, box_handler};
use self::outgoing::{Outgoing, ResultTo};
use crate::{
    BoxError, DynPublisher, DynSubscriber, Publisher, Received, Result, Subscriber, Subscription,
};

/// How the router runs one handler.
///
/// It loads from a file with the same names as its builder:
///
/// ```
/// let options: msg_core::HandlerOptions =
///     serde_json::from_str(r#"{ "concurrency": 8, "ordered_by_key": true }"#).unwrap();
/// assert_eq!(options, msg_core::HandlerOptions::default().concurrency(8).ordered_by_key());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub struct HandlerOptions {
    concurrency: usize,
    ordered_by_key: bool,
    publish_to: Option<String>,
    reply: bool,
}

impl<'de> serde::Deserialize<'de> for HandlerOptions {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let options = HandlerOptions::deserialize(deserializer)?;
        if options.concurrency == 0 {
            return Err(serde::de::Error::custom("concurrency must be at least 1"));
        }
        if let Err(e) = options.check() {
            return Err(serde::de::Error::custom(e));
        }
        Ok(options)
    }
}

impl Default for HandlerOptions {
    fn default() -> Self {
        Self {
            concurrency: 64,
            ordered_by_key: false,
            publish_to: None,
            reply: false,
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

    /// Where the handler's typed result goes: a handler function that
    /// returns `Ok(Json(value))` has `value` published as JSON to `topic`
    /// (see [`IntoOutgoing`](crate::IntoOutgoing)).
    pub fn publish_to(mut self, topic: impl Into<String>) -> Self {
        self.publish_to = Some(topic.into());
        self
    }

    /// The handler answers requests ([`Connection::request`](crate::Connection::request)):
    /// its typed result (`Json(value)`, a `Message`, an `Event`) goes to
    /// each message's reply address with its correlation id, and its
    /// error goes back as an error reply, which the requester gets as
    /// [`Error::HandlerFailed`](crate::Error::HandlerFailed). The request
    /// is then acked: a failure is answered, not retried (put a retry
    /// layer on the route to retry in the handler first). A message
    /// without a reply address is dead-lettered without running the
    /// handler.
    pub fn reply(mut self) -> Self {
        self.reply = true;
        self
    }

    /// Where a typed result goes.
    fn result_to(&self) -> ResultTo {
        match (&self.publish_to, self.reply) {
            (_, true) => ResultTo::ReplyTo,
            (Some(topic), false) => ResultTo::Topic(Arc::from(topic.as_str())),
            (None, false) => ResultTo::Nowhere,
        }
    }

    /// Checks that the options agree with each other and name valid topics.
    fn check(&self) -> Result<()> {
        if let Some(topic) = &self.publish_to {
            if self.reply {
                return Err(crate::Error::invalid_config(format!(
                    "a route that answers requests (reply) sends its results to each request's \
                     reply address, so it cannot also publish them to {topic:?} (publish_to)"
                )));
            }
            crate::raw::topic::validate_topic(topic)?;
        }
        Ok(())
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

enum Entry {
    Single(Subscription, BoxHandler, HandlerOptions),
    Batch(Subscription, BoxBatchHandler, BatchOptions),
}

impl Entry {
    fn subscription(&self) -> &Subscription {
        match self {
            Entry::Single(subscription, ..) | Entry::Batch(subscription, ..) => subscription,
        }
    }
}

type Wrap<H> = Arc<dyn Fn(H) -> H + Send + Sync>;

/// Runs handlers over subscriptions.
///
/// ```
/// # async fn example() -> msg_core::Result<()> {
/// use msg_core::{Json, Router, State, Subscription};
///
/// #[derive(Clone)]
/// struct App { name: &'static str }
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64 }
///
/// let broker = msg_memory::MemoryBroker::new();
/// let running = Router::new(broker.clone(), broker.clone())
///     .with_state(App { name: "billing" })
///     .handle(
///         Subscription::new("orders.created").group("billing"),
///         |State(app): State<App>, Json(order): Json<Order>| async move {
///             println!("{} bills order {}", app.name, order.id);
///             Ok(())
///         },
///     )
///     .start()
///     .await?;
/// // ...
/// running.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Router<S = ()> {
    subscriber: Arc<dyn DynSubscriber>,
    publisher: Arc<dyn DynPublisher>,
    state: S,
    entries: Vec<Entry>,
    layers: Vec<Wrap<BoxHandler>>,
    batch_layers: Vec<Wrap<BoxBatchHandler>>,
    shutdown_timeout: Duration,
}

impl<S> std::fmt::Debug for Router<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field(
                "subscriptions",
                &self
                    .entries
                    .iter()
                    .map(Entry::subscription)
                    .collect::<Vec<_>>(),
            )
            .field("layers", &self.layers.len())
            .field("batch_layers", &self.batch_layers.len())
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
            state: (),
            entries: Vec::new(),
            layers: Vec::new(),
            batch_layers: Vec::new(),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Router<S> {
    /// Gives handlers added from now on `state`, which they take with the
    /// [`State`](crate::State) extractor (a database pool, a client, ...;
    /// cloned for each message that asks for it, so share it in an `Arc`
    /// or make its clone cheap).
    pub fn with_state<S2: Clone + Send + Sync + 'static>(self, state: S2) -> Router<S2> {
        Router {
            subscriber: self.subscriber,
            publisher: self.publisher,
            state,
            entries: self.entries,
            layers: self.layers,
            batch_layers: self.batch_layers,
            shutdown_timeout: self.shutdown_timeout,
        }
    }

    /// Runs `handler` over `subscription` with default [`HandlerOptions`].
    ///
    /// `handler` is an async function of extractors or a `tower::Service`
    /// (see [`Handler`]).
    pub fn handle<T, H: Handler<T, S>>(self, subscription: Subscription, handler: H) -> Self {
        self.handle_with(subscription, HandlerOptions::default(), handler)
    }

    /// Runs `handler` over `subscription` with the given options.
    pub fn handle_with<T, H: Handler<T, S>>(
        mut self,
        subscription: Subscription,
        options: HandlerOptions,
        handler: H,
    ) -> Self {
        let service = BoxHandler::new(handler.with_route(self.state.clone(), options.result_to()));
        self.entries
            .push(Entry::Single(subscription, service, options));
        self
    }

    /// Runs a batch handler over `subscription` (see [`BatchHandler`]):
    /// it receives up to `max_size` messages at once; its result settles
    /// all of them.
    pub fn handle_batch<T, H: BatchHandler<T, S>>(
        mut self,
        subscription: Subscription,
        options: BatchOptions,
        handler: H,
    ) -> Self {
        let service = BoxBatchHandler::new(handler.with_state(self.state.clone()));
        self.entries
            .push(Entry::Batch(subscription, service, options));
        self
    }

    /// Wraps every handler in `layer`: those added before and after this
    /// call alike (batch handlers take [`Router::batch_layer`]). A layer
    /// added later wraps the ones added earlier.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<BoxHandler> + Send + Sync + 'static,
        L::Service: Service<Received> + Clone + Send + Sync + 'static,
        <L::Service as Service<Received>>::Response: Into<Outgoing>,
        <L::Service as Service<Received>>::Error: Into<BoxError>,
        <L::Service as Service<Received>>::Future: Send + 'static,
    {
        self.layers
            .push(Arc::new(move |handler| box_handler(layer.layer(handler))));
        self
    }

    /// Wraps every batch handler in `layer`, those added before and after
    /// this call alike; a layer added later wraps the ones added earlier.
    /// Layers generic over the request, as `tower`'s own are, serve both.
    pub fn batch_layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<BoxBatchHandler> + Send + Sync + 'static,
        L::Service: Service<Vec<Received>> + Clone + Send + Sync + 'static,
        <L::Service as Service<Vec<Received>>>::Response: Into<Outgoing>,
        <L::Service as Service<Vec<Received>>>::Error: Into<BoxError>,
        <L::Service as Service<Vec<Received>>>::Future: Send + 'static,
    {
        self.batch_layers
            .push(Arc::new(move |handler| box_handler(layer.layer(handler))));
        self
    }

    /// How long shutdown lets in-flight messages finish before retrying
    /// them (default 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Subscribes everything and starts consuming. Fails, and starts
    /// nothing, if any subscription fails.
    pub async fn start(self) -> Result<RunningRouter> {
        let mut streams = Vec::with_capacity(self.entries.len());
        for entry in &self.entries {
            let subscription = entry.subscription();
            subscription.validate()?;
            if let Entry::Single(_, _, options) = entry {
                options.check()?;
            }
            streams.push(
                self.subscriber
                    .subscribe_boxed(subscription.clone())
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
                match entry {
                    Entry::Single(_, handler, options) => {
                        let mut handler = self.layers.iter().fold(handler, |h, wrap| wrap(h));
                        if options.reply {
                            handler = reply::answer_errors(handler);
                        }
                        tokio::spawn(consume::run_single(ctx, stream, handler, options))
                    }
                    Entry::Batch(_, handler, options) => {
                        let handler = self.batch_layers.iter().fold(handler, |h, wrap| wrap(h));
                        tokio::spawn(consume::run_batch(ctx, stream, handler, options))
                    }
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
    /// timeout, retries the rest, and returns once every consume loop ended.
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
