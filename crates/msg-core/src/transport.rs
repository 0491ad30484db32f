//! Publishers and subscribers: the traits every transport implements.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::Serialize;

use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use crate::codec::{Encoder, JsonCodec};
use crate::dead_letter::{DeadLetters, DynDeadLetterReader};
use crate::{
    BatchError, Capabilities, Delivery, Event, Message, PublishOptions, Receipt, Received,
    ReplyInbox, Requester, Result, StartPosition, Subscription,
};

/// The stream of deliveries of one subscription.
///
/// It ends when the subscriber is closed; dropping it cancels the
/// subscription, and unsettled deliveries are redelivered.
pub type DeliveryStream = BoxStream<'static, Result<Delivery>>;

/// Publishes messages to topics.
///
/// A publish returns once the broker has accepted the message, with the
/// broker's [`Receipt`].
pub trait Publisher: Send + Sync + 'static {
    /// Publishes one message to `topic` with `options`.
    ///
    /// An option the transport cannot honour (see its [`Capabilities`])
    /// fails the publish with [`Error::Unsupported`](crate::Error::Unsupported).
    fn publish_with(
        &self,
        topic: &str,
        message: Message,
        options: PublishOptions,
    ) -> impl Future<Output = Result<Receipt>> + Send;

    /// Publishes one message to `topic`, with no options.
    fn publish(
        &self,
        topic: &str,
        message: Message,
    ) -> impl Future<Output = Result<Receipt>> + Send {
        self.publish_with(topic, message, PublishOptions::default())
    }

    /// Publishes several messages to `topic`, in order, and returns their
    /// receipts in the same order.
    ///
    /// When not all were accepted, the [`BatchError`] says which were.
    /// This default publishes one at a time and stops at the first
    /// failure, so the accepted messages are the ones before it.
    fn publish_batch(
        &self,
        topic: &str,
        messages: Vec<Message>,
    ) -> impl Future<Output = Result<Vec<Receipt>, BatchError>> + Send {
        async move {
            let len = messages.len();
            let mut receipts = Vec::with_capacity(len);
            for message in messages {
                match self.publish(topic, message).await {
                    Ok(receipt) => receipts.push(Some(receipt)),
                    Err(error) => {
                        receipts.resize(len, None);
                        return Err(BatchError::new(receipts, error));
                    }
                }
            }
            Ok(receipts.into_iter().flatten().collect())
        }
    }

    /// Waits until everything published so far is accepted by the broker.
    fn flush(&self) -> impl Future<Output = Result<()>> + Send;

    /// Flushes, then refuses further publishes with [`Error::Closed`](crate::Error::Closed).
    fn close(&self) -> impl Future<Output = Result<()>> + Send;

    /// What the transport guarantees.
    fn capabilities(&self) -> Capabilities;
}

/// Consumes messages from topics.
pub trait Subscriber: Send + Sync + 'static {
    /// Starts a subscription.
    fn subscribe(
        &self,
        subscription: Subscription,
    ) -> impl Future<Output = Result<DeliveryStream>> + Send;

    /// Ends every stream of this subscriber and refuses new subscriptions.
    fn close(&self) -> impl Future<Output = Result<()>> + Send;

    /// What the transport guarantees.
    fn capabilities(&self) -> Capabilities;

    /// The topics the broker holds, sorted, where it can list them; else
    /// [`Error::Unsupported`](crate::Error::Unsupported) (this default).
    fn topics(&self) -> impl Future<Output = Result<Vec<String>>> + Send {
        let transport = self.capabilities().transport;
        async move {
            Err(crate::Error::Unsupported {
                operation: "listing topics",
                transport,
            })
        }
    }

    /// The broker's software and version (`"Redis 7.0.15"`), where the
    /// client learns it; `None` where it does not (this default).
    fn server_version(&self) -> impl Future<Output = Result<Option<String>>> + Send {
        async { Ok(None) }
    }

    /// Opens an inbox for one requester's replies (see [`Requester`]).
    ///
    /// This default subscribes to a new topic
    /// ([`new_reply_topic`](crate::raw::reply::new_reply_topic)) from its
    /// start, and leaves it on the broker. Transports override it with
    /// their native inbox, or to remove the topic when the requester
    /// closes.
    fn reply_inbox(&self) -> impl Future<Output = Result<ReplyInbox>> + Send {
        async move {
            let address = crate::raw::reply::new_reply_topic();
            let subscription = Subscription::new(address.clone()).start(StartPosition::Earliest);
            let replies = self.subscribe(subscription).await?;
            Ok(ReplyInbox::new(address, replies))
        }
    }
}

/// The object-safe form of [`Publisher`], for choosing a transport at run
/// time. Every `Publisher` is one; `Arc<dyn DynPublisher>` is a `Publisher`.
pub trait DynPublisher: Send + Sync + 'static {
    /// [`Publisher::publish_with`], boxed.
    fn publish_with_boxed<'a>(
        &'a self,
        topic: &'a str,
        message: Message,
        options: PublishOptions,
    ) -> BoxFuture<'a, Result<Receipt>>;
    /// [`Publisher::publish`], boxed.
    fn publish_boxed<'a>(
        &'a self,
        topic: &'a str,
        message: Message,
    ) -> BoxFuture<'a, Result<Receipt>>;
    /// [`Publisher::publish_batch`], boxed.
    fn publish_batch_boxed<'a>(
        &'a self,
        topic: &'a str,
        messages: Vec<Message>,
    ) -> BoxFuture<'a, Result<Vec<Receipt>, BatchError>>;
    /// [`Publisher::flush`], boxed.
    fn flush_boxed(&self) -> BoxFuture<'_, Result<()>>;
    /// [`Publisher::close`], boxed.
    fn close_boxed(&self) -> BoxFuture<'_, Result<()>>;
    /// [`Publisher::capabilities`].
    fn publisher_capabilities(&self) -> Capabilities;
}

impl<P: Publisher> DynPublisher for P {
    fn publish_with_boxed<'a>(
        &'a self,
        topic: &'a str,
        message: Message,
        options: PublishOptions,
    ) -> BoxFuture<'a, Result<Receipt>> {
        Box::pin(self.publish_with(topic, message, options))
    }
    fn publish_boxed<'a>(
        &'a self,
        topic: &'a str,
        message: Message,
    ) -> BoxFuture<'a, Result<Receipt>> {
        Box::pin(self.publish(topic, message))
    }
    fn publish_batch_boxed<'a>(
        &'a self,
        topic: &'a str,
        messages: Vec<Message>,
    ) -> BoxFuture<'a, Result<Vec<Receipt>, BatchError>> {
        Box::pin(self.publish_batch(topic, messages))
    }
    fn flush_boxed(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.flush())
    }
    fn close_boxed(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Publisher::close(self))
    }
    fn publisher_capabilities(&self) -> Capabilities {
        Publisher::capabilities(self)
    }
}

impl Publisher for Arc<dyn DynPublisher> {
    async fn publish_with(
        &self,
        topic: &str,
        message: Message,
        options: PublishOptions,
    ) -> Result<Receipt> {
        (**self).publish_with_boxed(topic, message, options).await
    }
    async fn publish(&self, topic: &str, message: Message) -> Result<Receipt> {
        (**self).publish_boxed(topic, message).await
    }
    async fn publish_batch(
        &self,
        topic: &str,
        messages: Vec<Message>,
    ) -> Result<Vec<Receipt>, BatchError> {
        (**self).publish_batch_boxed(topic, messages).await
    }
    fn flush(&self) -> impl Future<Output = Result<()>> + Send {
        (**self).flush_boxed()
    }
    fn close(&self) -> impl Future<Output = Result<()>> + Send {
        (**self).close_boxed()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).publisher_capabilities()
    }
}

/// The object-safe form of [`Subscriber`]. Every `Subscriber` is one;
/// `Arc<dyn DynSubscriber>` is a `Subscriber`.
pub trait DynSubscriber: Send + Sync + 'static {
    /// [`Subscriber::subscribe`], boxed.
    fn subscribe_boxed(&self, subscription: Subscription) -> BoxFuture<'_, Result<DeliveryStream>>;
    /// [`Subscriber::close`], boxed.
    fn close_boxed(&self) -> BoxFuture<'_, Result<()>>;
    /// [`Subscriber::capabilities`].
    fn subscriber_capabilities(&self) -> Capabilities;
    /// [`Subscriber::reply_inbox`], boxed.
    fn reply_inbox_boxed(&self) -> BoxFuture<'_, Result<ReplyInbox>>;
    /// [`Subscriber::topics`], boxed.
    fn topics_boxed(&self) -> BoxFuture<'_, Result<Vec<String>>>;
    /// [`Subscriber::server_version`], boxed.
    fn server_version_boxed(&self) -> BoxFuture<'_, Result<Option<String>>>;
}

impl<S: Subscriber> DynSubscriber for S {
    fn subscribe_boxed(&self, subscription: Subscription) -> BoxFuture<'_, Result<DeliveryStream>> {
        Box::pin(self.subscribe(subscription))
    }
    fn reply_inbox_boxed(&self) -> BoxFuture<'_, Result<ReplyInbox>> {
        Box::pin(self.reply_inbox())
    }
    fn topics_boxed(&self) -> BoxFuture<'_, Result<Vec<String>>> {
        Box::pin(self.topics())
    }
    fn server_version_boxed(&self) -> BoxFuture<'_, Result<Option<String>>> {
        Box::pin(self.server_version())
    }
    fn close_boxed(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Subscriber::close(self))
    }
    fn subscriber_capabilities(&self) -> Capabilities {
        Subscriber::capabilities(self)
    }
}

impl Subscriber for Arc<dyn DynSubscriber> {
    fn subscribe(
        &self,
        subscription: Subscription,
    ) -> impl Future<Output = Result<DeliveryStream>> + Send {
        (**self).subscribe_boxed(subscription)
    }
    fn close(&self) -> impl Future<Output = Result<()>> + Send {
        (**self).close_boxed()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).subscriber_capabilities()
    }
    fn reply_inbox(&self) -> impl Future<Output = Result<ReplyInbox>> + Send {
        (**self).reply_inbox_boxed()
    }
    fn topics(&self) -> impl Future<Output = Result<Vec<String>>> + Send {
        (**self).topics_boxed()
    }
    fn server_version(&self) -> impl Future<Output = Result<Option<String>>> + Send {
        (**self).server_version_boxed()
    }
}

/// A publisher and a subscriber of one transport, chosen at run time.
///
/// This is what `msg::connect(url)` returns. Cloning shares the
/// connection, and its [`Requester`], opened by the first request.
#[derive(Clone)]
pub struct Connection {
    publisher: Arc<dyn DynPublisher>,
    subscriber: Arc<dyn DynSubscriber>,
    requester: Arc<OnceCell<Requester>>,
    dead_letter_reader: Option<Arc<dyn DynDeadLetterReader>>,
}

impl Connection {
    /// Wraps a transport that both publishes and subscribes.
    pub fn new<T: Publisher + Subscriber>(transport: T) -> Self {
        let transport = Arc::new(transport);
        Self::from_parts(transport.clone(), transport)
    }

    /// Pairs a publisher with a subscriber, possibly of different transports.
    pub fn from_parts(
        publisher: Arc<dyn DynPublisher>,
        subscriber: Arc<dyn DynSubscriber>,
    ) -> Self {
        Self {
            publisher,
            subscriber,
            requester: Arc::new(OnceCell::new()),
            dead_letter_reader: None,
        }
    }

    /// Reads dead-letter topics through `reader` (the transport's own
    /// [`DeadLetterReader`](crate::dead_letter::DeadLetterReader)), for
    /// [`Connection::dead_letters`]. `msg::connect` sets it for every
    /// transport that has one.
    pub fn with_dead_letter_reader(mut self, reader: Arc<dyn DynDeadLetterReader>) -> Self {
        self.dead_letter_reader = Some(reader);
        self
    }

    /// The dead-letter manager over this connection's transport, or
    /// [`Error::Unsupported`](crate::Error::Unsupported) when it was made
    /// without a dead-letter reader.
    pub fn dead_letters(&self) -> Result<DeadLetters> {
        match &self.dead_letter_reader {
            Some(reader) => Ok(DeadLetters::new(reader.clone(), self.publisher.clone())),
            None => Err(crate::Error::Unsupported {
                operation: "reading dead letters",
                transport: self.publisher.publisher_capabilities().transport,
            }),
        }
    }

    /// The publisher.
    pub fn publisher(&self) -> Arc<dyn DynPublisher> {
        self.publisher.clone()
    }

    /// The subscriber.
    pub fn subscriber(&self) -> Arc<dyn DynSubscriber> {
        self.subscriber.clone()
    }

    /// The connection's requester: its reply inbox is opened by the first
    /// call and shared by every request of the connection and its clones.
    pub async fn requester(&self) -> Result<&Requester> {
        self.requester
            .get_or_try_init(|| Requester::open(self.publisher.clone(), &*self.subscriber))
            .await
    }

    /// Sends `message` to `topic` and awaits the first reply, at most
    /// `timeout` (see [`Requester::request`]).
    pub async fn request(
        &self,
        topic: &str,
        message: Message,
        timeout: Duration,
    ) -> Result<Received> {
        self.requester()
            .await?
            .request(topic, message, timeout)
            .await
    }

    /// Sends `request` as JSON to `topic` and decodes the reply from JSON
    /// (see [`Requester::request_json`]).
    pub async fn request_json<Req: Serialize + Sync, Resp: DeserializeOwned>(
        &self,
        topic: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp> {
        self.requester()
            .await?
            .request_json(topic, request, timeout)
            .await
    }

    /// Sends `message` to `topic` and collects every reply that comes
    /// within `timeout` (see [`Requester::request_all`]).
    pub async fn request_all(
        &self,
        topic: &str,
        message: Message,
        timeout: Duration,
    ) -> Result<Vec<Result<Received>>> {
        self.requester()
            .await?
            .request_all(topic, message, timeout)
            .await
    }

    /// Closes both sides: the publisher flushes and refuses further
    /// publishes, the requester's inbox is removed, then the subscriber
    /// ends its streams. All are closed even when one fails; the first
    /// error is returned.
    pub async fn close(&self) -> Result<()> {
        let published = self.publisher.close_boxed().await;
        let requested = match self.requester.get() {
            Some(requester) => requester.close().await,
            None => Ok(()),
        };
        let subscribed = self.subscriber.close_boxed().await;
        published.and(requested).and(subscribed)
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("capabilities", &self.publisher.publisher_capabilities())
            .finish_non_exhaustive()
    }
}

impl Publisher for Connection {
    async fn publish_with(
        &self,
        topic: &str,
        message: Message,
        options: PublishOptions,
    ) -> Result<Receipt> {
        self.publisher
            .publish_with_boxed(topic, message, options)
            .await
    }
    async fn publish(&self, topic: &str, message: Message) -> Result<Receipt> {
        self.publisher.publish_boxed(topic, message).await
    }
    async fn publish_batch(
        &self,
        topic: &str,
        messages: Vec<Message>,
    ) -> Result<Vec<Receipt>, BatchError> {
        self.publisher.publish_batch_boxed(topic, messages).await
    }
    fn flush(&self) -> impl Future<Output = Result<()>> + Send {
        self.publisher.flush_boxed()
    }
    fn close(&self) -> impl Future<Output = Result<()>> + Send {
        self.publisher.close_boxed()
    }
    fn capabilities(&self) -> Capabilities {
        self.publisher.publisher_capabilities()
    }
}

impl Subscriber for Connection {
    fn subscribe(
        &self,
        subscription: Subscription,
    ) -> impl Future<Output = Result<DeliveryStream>> + Send {
        self.subscriber.subscribe_boxed(subscription)
    }
    fn close(&self) -> impl Future<Output = Result<()>> + Send {
        self.subscriber.close_boxed()
    }
    fn capabilities(&self) -> Capabilities {
        self.subscriber.subscriber_capabilities()
    }
    fn reply_inbox(&self) -> impl Future<Output = Result<ReplyInbox>> + Send {
        self.subscriber.reply_inbox_boxed()
    }
    fn topics(&self) -> impl Future<Output = Result<Vec<String>>> + Send {
        self.subscriber.topics_boxed()
    }
    fn server_version(&self) -> impl Future<Output = Result<Option<String>>> + Send {
        self.subscriber.server_version_boxed()
    }
}

/// Typed publishing on top of any [`Publisher`].
pub trait PublisherExt: Publisher {
    /// Publishes `value` as JSON with `content-type: application/json`.
    fn publish_json<T: Serialize + Sync>(
        &self,
        topic: &str,
        value: &T,
    ) -> impl Future<Output = Result<Receipt>> + Send {
        let message = Encoder::<T>::encode(&JsonCodec, value)
            .map(|payload| Message::new(payload).with_content_type("application/json"));
        async move { self.publish(topic, message?).await }
    }

    /// Publishes a CloudEvent in binary content mode, with the data as JSON
    /// and the attributes named by this transport's CloudEvents binding.
    fn publish_event<T: Serialize + Sync>(
        &self,
        topic: &str,
        event: &Event<T>,
    ) -> impl Future<Output = Result<Receipt>> + Send {
        let message = event.to_message(&JsonCodec, self.capabilities().cloudevents);
        async move { self.publish(topic, message?).await }
    }
}

impl<P: Publisher> PublisherExt for P {}
