//! Request/reply: ask a service over the broker and await its answer.
//!
//! A [`Requester`] has one reply inbox, opened by its transport
//! ([`Subscriber::reply_inbox`]), shared by all its requests in flight. A
//! request carries the inbox's address as `reply_to` and a correlation id;
//! the reader of the inbox hands each reply to the request with that id.
//! On the answering side, a route with
//! [`HandlerOptions::reply`](crate::HandlerOptions::reply) sends the
//! handler's result (or its error) to each request's `reply_to`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::codec::{Decoder, JsonCodec};
use crate::{
    DeliveryStream, DynPublisher, DynSubscriber, Error, Message, PublishOptions, Received, Result,
    headers,
};

/// Where one requester's replies arrive: an address for `reply_to`, and
/// the stream of what is sent there.
///
/// Transports open one with [`Subscriber::reply_inbox`](crate::Subscriber::reply_inbox).
pub struct ReplyInbox {
    address: String,
    replies: DeliveryStream,
    cleanup: Option<BoxFuture<'static, Result<()>>>,
}

impl ReplyInbox {
    /// An inbox at `address` whose replies arrive on `replies`.
    pub fn new(address: impl Into<String>, replies: DeliveryStream) -> Self {
        Self {
            address: address.into(),
            replies,
            cleanup: None,
        }
    }

    /// Runs `cleanup` when the requester closes: it removes what the inbox
    /// made on the broker (a stream, a topic).
    pub fn with_cleanup(
        mut self,
        cleanup: impl Future<Output = Result<()>> + Send + 'static,
    ) -> Self {
        self.cleanup = Some(Box::pin(cleanup));
        self
    }

    /// The address requests carry as `reply_to`.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl std::fmt::Debug for ReplyInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyInbox")
            .field("address", &self.address)
            .field("cleanup", &self.cleanup.is_some())
            .finish_non_exhaustive()
    }
}

/// Who waits for the replies with one correlation id.
enum Waiter {
    /// One request: the first reply.
    One(oneshot::Sender<Received>),
    /// A scatter-gather: every reply until its deadline.
    All(mpsc::UnboundedSender<Received>),
}

struct Shared {
    publisher: Arc<dyn DynPublisher>,
    address: String,
    /// The requests in flight by correlation id; `None` once the inbox
    /// ended, when no reply can arrive.
    waiting: Mutex<Option<HashMap<String, Waiter>>>,
    late: AtomicU64,
    cleanup: Mutex<Option<BoxFuture<'static, Result<()>>>>,
}

impl Shared {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Option<HashMap<String, Waiter>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `reply` to whoever waits for its correlation id.
    fn dispatch(&self, reply: Received) {
        let correlation = reply.header(headers::CORRELATION_ID).map(str::to_owned);
        let mut waiting = self.waiting();
        let Some(waiting) = waiting.as_mut() else {
            return;
        };
        let delivered = match correlation.as_deref() {
            None => false,
            Some(c) => match waiting.get(c) {
                Some(Waiter::All(gather)) => gather.send(reply).is_ok(),
                // One request takes one reply, and stops waiting.
                Some(Waiter::One(_)) => match waiting.remove(c) {
                    Some(Waiter::One(one)) => one.send(reply).is_ok(),
                    _ => false,
                },
                None => false,
            },
        };
        if !delivered {
            self.late.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                inbox = %self.address,
                correlation_id = correlation.as_deref().unwrap_or(""),
                "a reply no request waits for (it came after its timeout); dropped"
            );
        }
    }

    /// The inbox ended: fail every request in flight and refuse new ones.
    fn end(&self) {
        self.waiting().take();
    }
}

/// Removes a request from the waiting table when it finishes, times out
/// or is dropped, so that its late replies are counted, never delivered.
struct Waiting<'a> {
    shared: &'a Shared,
    correlation: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(waiting) = self.shared.waiting().as_mut() {
            waiting.remove(&self.correlation);
        }
    }
}

/// Sends requests and awaits their replies over one reply inbox.
///
/// [`Connection::request`](crate::Connection::request) keeps one per
/// connection; make your own with [`Requester::open`]. Cloning shares it.
///
/// ```
/// # async fn example() -> msg_core::Result<()> {
/// use std::time::Duration;
/// use msg_core::{Connection, HandlerOptions, Json, HandlerError, Router, Subscription};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Quote { sku: String, cents: u64 }
///
/// let broker = msg_memory::MemoryBroker::new();
/// let conn = Connection::new(broker.clone());
/// // The answering side: the handler's result goes back to each requester.
/// let prices = Router::new(broker.clone(), broker.clone())
///     .handle_with(
///         Subscription::new("prices").group("pricing"),
///         HandlerOptions::default().reply(),
///         |Json(sku): Json<String>| async move {
///             Ok::<_, HandlerError>(Json(Quote { sku, cents: 1299 }))
///         },
///     )
///     .start()
///     .await?;
///
/// let quote: Quote = conn
///     .request_json("prices", &"book-1", Duration::from_secs(5))
///     .await?;
/// assert_eq!(quote.cents, 1299);
/// prices.shutdown().await;
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(example()).unwrap();
/// ```
#[derive(Clone)]
pub struct Requester {
    shared: Arc<Shared>,
    reader: Arc<Reader>,
}

/// The task reading the inbox; aborted when the last clone is dropped.
struct Reader(tokio::task::JoinHandle<()>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requester")
            .field("inbox", &self.shared.address)
            .field("in_flight", &self.in_flight())
            .field("late_replies", &self.late_replies())
            .finish()
    }
}

impl Requester {
    /// Opens a reply inbox on `subscriber` and sends requests through
    /// `publisher`. Must be called within a Tokio runtime.
    pub async fn open(
        publisher: Arc<dyn DynPublisher>,
        subscriber: &dyn DynSubscriber,
    ) -> Result<Self> {
        let ReplyInbox {
            address,
            replies,
            cleanup,
        } = subscriber.reply_inbox_boxed().await?;
        let shared = Arc::new(Shared {
            publisher,
            address,
            waiting: Mutex::new(Some(HashMap::new())),
            late: AtomicU64::new(0),
            cleanup: Mutex::new(cleanup),
        });
        let reader = tokio::spawn(read(Arc::downgrade(&shared), replies));
        Ok(Self {
            shared,
            reader: Arc::new(Reader(reader)),
        })
    }

    /// The address of the reply inbox (each request's `reply_to`).
    pub fn address(&self) -> &str {
        &self.shared.address
    }

    /// How many requests await a reply now.
    pub fn in_flight(&self) -> usize {
        self.shared.waiting().as_ref().map_or(0, HashMap::len)
    }

    /// How many replies came that no request waited for (they came after
    /// the request timed out or was dropped); they were dropped.
    pub fn late_replies(&self) -> u64 {
        self.shared.late.load(Ordering::Relaxed)
    }

    /// Sends `message` to `topic` and returns the first reply, or
    /// [`Error::Timeout`] (naming `topic`) when none came within `timeout`
    /// of the call.
    ///
    /// The request's correlation id is its `correlation-id` header, or its
    /// id when it has none; two requests in flight at once must not share
    /// one. A reply that says the handler failed is
    /// [`Error::HandlerFailed`]. Dropping the future withdraws the
    /// request: a reply that comes later is dropped and counted
    /// ([`Requester::late_replies`]).
    pub async fn request(
        &self,
        topic: &str,
        message: Message,
        timeout: Duration,
    ) -> Result<Received> {
        let deadline = Instant::now() + timeout;
        let (tx, rx) = oneshot::channel();
        let (message, _waiting) = self.wait(message, Waiter::One(tx))?;
        self.send(topic, message, deadline, timeout).await?;
        match tokio::time::timeout_at(deadline, rx).await {
            Err(_) => Err(Error::timeout_on(topic, timeout)),
            // The inbox ended: the subscriber was closed.
            Ok(Err(_)) => Err(Error::Closed),
            Ok(Ok(reply)) => answer(topic, reply),
        }
    }

    /// [`Requester::request`] with `request` as JSON, and the reply's
    /// payload decoded from JSON.
    pub async fn request_json<Req: Serialize + Sync, Resp: DeserializeOwned>(
        &self,
        topic: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp> {
        let message = crate::router::outgoing::json_message(request)?;
        let reply = self.request(topic, message, timeout).await?;
        Decoder::<Resp>::decode(&JsonCodec, reply.payload())
    }

    /// Scatter-gather: sends `message` to `topic` and collects every reply
    /// that comes within `timeout` (one per broadcast subscriber that
    /// answers), in the order they came; an error reply is an
    /// [`Error::HandlerFailed`] among them.
    pub async fn request_all(
        &self,
        topic: &str,
        message: Message,
        timeout: Duration,
    ) -> Result<Vec<Result<Received>>> {
        self.gather(topic, message, timeout, usize::MAX).await
    }

    /// [`Requester::request_all`] that returns as soon as `count` replies
    /// came.
    pub async fn request_some(
        &self,
        topic: &str,
        message: Message,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Result<Received>>> {
        self.gather(topic, message, timeout, count).await
    }

    async fn gather(
        &self,
        topic: &str,
        message: Message,
        timeout: Duration,
        count: usize,
    ) -> Result<Vec<Result<Received>>> {
        let deadline = Instant::now() + timeout;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (message, _waiting) = self.wait(message, Waiter::All(tx))?;
        self.send(topic, message, deadline, timeout).await?;
        let mut replies = Vec::new();
        while replies.len() < count {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(reply)) => replies.push(answer(topic, reply)),
                Ok(None) if replies.is_empty() => return Err(Error::Closed),
                Ok(None) | Err(_) => break,
            }
        }
        Ok(replies)
    }

    /// Registers `message` as waiting for replies; its correlation id set.
    fn wait(&self, mut message: Message, waiter: Waiter) -> Result<(Message, Waiting<'_>)> {
        let correlation = message.correlation_id().into_owned();
        let mut waiting = self.shared.waiting();
        let Some(table) = waiting.as_mut() else {
            return Err(Error::Closed);
        };
        match table.entry(correlation.clone()) {
            Entry::Occupied(_) => {
                return Err(Error::invalid_config(format!(
                    "a request with correlation id {correlation:?} is already in flight: \
                     give each request its own"
                )));
            }
            Entry::Vacant(slot) => {
                slot.insert(waiter);
            }
        }
        drop(waiting);
        message
            .headers_mut()
            .insert(headers::CORRELATION_ID, correlation.clone());
        let guard = Waiting {
            shared: &self.shared,
            correlation,
        };
        Ok((message, guard))
    }

    async fn send(
        &self,
        topic: &str,
        message: Message,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<()> {
        let options = PublishOptions::new().reply_to(&self.shared.address);
        let publish = self
            .shared
            .publisher
            .publish_with_boxed(topic, message, options);
        match tokio::time::timeout_at(deadline, publish).await {
            Err(_) => Err(Error::timeout_on(topic, timeout)),
            Ok(receipt) => receipt.map(drop),
        }
    }

    /// Stops reading replies (requests in flight fail with
    /// [`Error::Closed`]) and removes the inbox from the broker where the
    /// transport made one. Other clones are closed too.
    pub async fn close(&self) -> Result<()> {
        self.reader.0.abort();
        self.shared.end();
        let cleanup = self
            .shared
            .cleanup
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match cleanup {
            Some(cleanup) => cleanup.await,
            None => Ok(()),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Dropped without close: remove the inbox in the background.
        let cleanup = self
            .cleanup
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let (Some(cleanup), Ok(runtime)) = (cleanup, tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                if let Err(e) = cleanup.await {
                    tracing::warn!(error = %e.chain(), "removing a reply inbox failed");
                }
            });
        }
    }
}

/// Reads the inbox until it ends or the requester is gone.
async fn read(shared: std::sync::Weak<Shared>, mut replies: DeliveryStream) {
    while let Some(item) = replies.next().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match item {
            Ok(delivery) => {
                let (reply, mut acker) = delivery.into_parts();
                shared.dispatch(reply);
                if let Err(e) = acker.ack().await {
                    tracing::debug!(inbox = %shared.address, error = %e.chain(), "acking a reply failed");
                }
            }
            Err(Error::Closed) => break,
            Err(e) => {
                tracing::warn!(inbox = %shared.address, error = %e.chain(), "reply inbox error; reading goes on");
            }
        }
    }
    if let Some(shared) = shared.upgrade() {
        shared.end();
    }
}

/// A reply as the requester's result: an error reply becomes
/// [`Error::HandlerFailed`].
fn answer(topic: &str, reply: Received) -> Result<Received> {
    match reply.header(headers::REPLY_ERROR) {
        None => Ok(reply),
        Some(reason) => Err(Error::HandlerFailed {
            topic: topic.to_owned(),
            reason: reason.to_owned(),
            retryable: reply.header(headers::REPLY_RETRYABLE) == Some("true"),
        }),
    }
}

/// The reply that tells a requester its handler failed with `reason`.
pub(crate) fn error_reply(reason: String, retryable: bool) -> Message {
    Message::new(bytes::Bytes::new())
        .with_header(headers::REPLY_ERROR, crate::delivery::one_line(&reason))
        .with_header(
            headers::REPLY_RETRYABLE,
            if retryable { "true" } else { "false" },
        )
}
