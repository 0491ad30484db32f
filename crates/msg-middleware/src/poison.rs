//! Poison messages: quarantine a message that keeps failing.
//!
//! Failures are counted per message id across deliveries (in a
//! [`PoisonStore`]), so a message is caught even where the broker does not
//! count attempts, or when a copy with the same id is published again.
//! After `threshold` failures the message is quarantined: published to
//! `<topic>.quarantine` with the reserved dead-letter headers and acked;
//! later deliveries of a quarantined id are acked without calling the
//! handler. [`PoisonStore::release`] lets it through again, e.g. after a
//! fix, when it is republished from the quarantine topic. A success clears
//! the count. A panic counts as a failure. Permanent (dead-letter)
//! failures are left to the dead-letter path and not counted.

use crate::failed;
use msg_core::BoxError;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::BoxFuture;
use msg_core::raw::dead_letter_message;
use msg_core::{DynPublisher, HandlerError, Outgoing, Publisher, Received, Result, Uuid};
use tower::{Layer, Service};

/// Where failure counts and quarantined ids are kept.
///
/// An `Arc` of a store is a store too: give the layer an `Arc` and keep a
/// clone to list and release quarantined ids.
pub trait PoisonStore: Send + Sync + 'static {
    /// Counts one more failure of `id`; returns the count.
    fn record_failure(&self, id: Uuid) -> impl Future<Output = Result<u32>> + Send;
    /// Forgets the failures of `id` (it succeeded).
    fn clear(&self, id: Uuid) -> impl Future<Output = Result<()>> + Send;
    /// Marks `id` quarantined.
    fn quarantine(&self, id: Uuid) -> impl Future<Output = Result<()>> + Send;
    /// Whether `id` is quarantined.
    fn is_quarantined(&self, id: Uuid) -> impl Future<Output = Result<bool>> + Send;
    /// The quarantined ids.
    fn quarantined(&self) -> impl Future<Output = Result<Vec<Uuid>>> + Send;
    /// Lets `id` through again, with no failures counted; returns whether
    /// it was quarantined.
    fn release(&self, id: Uuid) -> impl Future<Output = Result<bool>> + Send;
}

impl<T: PoisonStore> PoisonStore for Arc<T> {
    fn record_failure(&self, id: Uuid) -> impl Future<Output = Result<u32>> + Send {
        (**self).record_failure(id)
    }
    fn clear(&self, id: Uuid) -> impl Future<Output = Result<()>> + Send {
        (**self).clear(id)
    }
    fn quarantine(&self, id: Uuid) -> impl Future<Output = Result<()>> + Send {
        (**self).quarantine(id)
    }
    fn is_quarantined(&self, id: Uuid) -> impl Future<Output = Result<bool>> + Send {
        (**self).is_quarantined(id)
    }
    fn quarantined(&self) -> impl Future<Output = Result<Vec<Uuid>>> + Send {
        (**self).quarantined()
    }
    fn release(&self, id: Uuid) -> impl Future<Output = Result<bool>> + Send {
        (**self).release(id)
    }
}

/// Failure counts and quarantined ids in memory.
#[derive(Debug, Default)]
pub struct MemoryPoisonStore {
    state: Mutex<(HashMap<Uuid, u32>, HashSet<Uuid>)>,
}

impl MemoryPoisonStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut HashMap<Uuid, u32>, &mut HashSet<Uuid>) -> T,
    ) -> std::future::Ready<Result<T>> {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (counts, quarantined) = &mut *guard;
        std::future::ready(Ok(f(counts, quarantined)))
    }
}

impl PoisonStore for MemoryPoisonStore {
    fn record_failure(&self, id: Uuid) -> impl Future<Output = Result<u32>> + Send {
        self.with(|counts, _| {
            let n = counts.entry(id).or_default();
            *n += 1;
            *n
        })
    }
    fn clear(&self, id: Uuid) -> impl Future<Output = Result<()>> + Send {
        self.with(|counts, _| {
            counts.remove(&id);
        })
    }
    fn quarantine(&self, id: Uuid) -> impl Future<Output = Result<()>> + Send {
        self.with(|counts, quarantined| {
            counts.remove(&id);
            quarantined.insert(id);
        })
    }
    fn is_quarantined(&self, id: Uuid) -> impl Future<Output = Result<bool>> + Send {
        self.with(|_, quarantined| quarantined.contains(&id))
    }
    fn quarantined(&self) -> impl Future<Output = Result<Vec<Uuid>>> + Send {
        self.with(|_, quarantined| quarantined.iter().copied().collect())
    }
    fn release(&self, id: Uuid) -> impl Future<Output = Result<bool>> + Send {
        self.with(|counts, quarantined| {
            counts.remove(&id);
            quarantined.remove(&id)
        })
    }
}

/// Quarantines messages that keep failing; see the [module docs](self).
pub struct PoisonLayer<St> {
    store: Arc<St>,
    publisher: Arc<dyn DynPublisher>,
    threshold: u32,
}

impl<St> Clone for PoisonLayer<St> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            publisher: self.publisher.clone(),
            threshold: self.threshold,
        }
    }
}

impl<St> std::fmt::Debug for PoisonLayer<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoisonLayer")
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

impl<St: PoisonStore> PoisonLayer<St> {
    /// Quarantines a message after `threshold` failures (at least 1),
    /// publishing it to `<topic>.quarantine` through `publisher`.
    pub fn new(store: St, publisher: impl Publisher, threshold: u32) -> Self {
        Self {
            store: Arc::new(store),
            publisher: Arc::new(publisher),
            threshold: threshold.max(1),
        }
    }
}

impl<S, St> Layer<S> for PoisonLayer<St> {
    type Service = Poison<S, St>;
    fn layer(&self, inner: S) -> Poison<S, St> {
        Poison {
            inner,
            config: self.clone(),
        }
    }
}

/// See [`PoisonLayer`].
pub struct Poison<S, St> {
    inner: S,
    config: PoisonLayer<St>,
}

impl<S: Clone, St> Clone for Poison<S, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: std::fmt::Debug, St> std::fmt::Debug for Poison<S, St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poison")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, St> Service<Received> for Poison<S, St>
where
    St: PoisonStore,
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
            let id = received.message.id();
            if config.store.is_quarantined(id).await? {
                tracing::warn!(%id, topic = received.topic(), "quarantined message skipped");
                return Ok(Outgoing::none());
            }
            let original = received.clone();
            let called = AssertUnwindSafe(inner.call(received))
                .catch_unwind()
                .await
                .map(|r| r.map(Into::<Outgoing>::into).map_err(failed));
            // A panic is a failure too; below the threshold it goes on to
            // the router, which logs it and retries.
            let (error, panic) = match called {
                Ok(Ok(out)) => {
                    config.store.clear(id).await?;
                    return Ok(out);
                }
                Ok(Err(e)) => (e, None),
                Err(panic) => (
                    HandlerError::retry(format!("handler panicked: {}", panic_text(&*panic))),
                    Some(panic),
                ),
            };
            if error.is_dead_letter() {
                return Err(error);
            }
            let failures = config.store.record_failure(id).await?;
            if failures < config.threshold {
                if let Some(panic) = panic {
                    std::panic::resume_unwind(panic);
                }
                return Err(error);
            }
            let reason = format!("quarantined after {failures} failures: {error}");
            let message =
                dead_letter_message(&original, &reason, original.attempt(), Some(&error.chain()));
            let topic = format!("{}.quarantine", original.topic());
            // Published first: if that fails, the delivery is retried and
            // nothing is lost.
            config
                .publisher
                .publish_boxed(&topic, message)
                .await
                .map_err(HandlerError::retry)?;
            config.store.quarantine(id).await?;
            tracing::warn!(%id, topic = original.topic(), quarantine = topic, "message quarantined");
            Ok(Outgoing::none())
        })
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

#[cfg(test)]
mod tests {
    use super::*;
    use msg_core::{Message, Metadata, Settlement, headers, service};
    use msg_memory::{MemoryBroker, MemoryConfig};
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use tower::ServiceExt;

    fn received(message: &Message) -> Received {
        Received {
            message: message.clone(),
            metadata: Metadata::new("orders"),
        }
    }

    #[tokio::test]
    async fn quarantined_after_the_threshold_skipped_then_released() {
        let broker = MemoryBroker::with_config(MemoryConfig::default().retention(10)).unwrap();
        let store: Arc<MemoryPoisonStore> = Arc::new(MemoryPoisonStore::new());
        let fixed = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU32::new(0));
        let (f, c) = (fixed.clone(), calls.clone());
        let handler = service(move |_r: Received| {
            c.fetch_add(1, Ordering::SeqCst);
            let ok = f.load(Ordering::SeqCst);
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(HandlerError::retry("boom"))
                }
            }
        });
        let service = PoisonLayer::new(store.clone(), broker.clone(), 3).layer(handler);
        let m = Message::new("order 1");
        for _ in 0..2 {
            let e = service.clone().oneshot(received(&m)).await.unwrap_err();
            assert_eq!(e.settlement(), Settlement::Retry);
        }
        // The third failure quarantines it: published aside, acked.
        service.clone().oneshot(received(&m)).await.unwrap();
        let parked = broker.published("orders.quarantine");
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0].id(), m.id());
        assert_eq!(
            parked[0].header(headers::DEAD_LETTER_REASON),
            Some("quarantined after 3 failures: boom")
        );
        assert_eq!(store.quarantined().await.unwrap(), vec![m.id()]);
        // Further deliveries are skipped without calling the handler.
        service.clone().oneshot(received(&m)).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Released after a fix: handled again.
        fixed.store(true, Ordering::SeqCst);
        assert!(store.release(m.id()).await.unwrap());
        service.clone().oneshot(received(&m)).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert!(store.quarantined().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_success_clears_the_count_and_permanent_failures_are_not_counted() {
        let broker = MemoryBroker::new();
        let store: Arc<MemoryPoisonStore> = Arc::new(MemoryPoisonStore::new());
        let n = Arc::new(AtomicU32::new(0));
        let c = n.clone();
        let handler = service(move |r: Received| {
            let call = c.fetch_add(1, Ordering::SeqCst);
            async move {
                match (r.payload().as_ref(), call) {
                    (b"bad", _) => Err::<(), _>(HandlerError::dead_letter("bad payload")),
                    (_, 1) => Ok(()),
                    _ => Err(HandlerError::retry("flaky")),
                }
            }
        });
        let service = PoisonLayer::new(store.clone(), broker.clone(), 2).layer(handler);
        let m = Message::new("ok");
        assert!(service.clone().oneshot(received(&m)).await.is_err());
        service.clone().oneshot(received(&m)).await.unwrap();
        // Count cleared by the success: one more failure does not quarantine.
        assert!(service.clone().oneshot(received(&m)).await.is_err());
        assert!(store.quarantined().await.unwrap().is_empty());
        let bad = Message::new("bad");
        for _ in 0..3 {
            let e = service.clone().oneshot(received(&bad)).await.unwrap_err();
            assert!(e.is_dead_letter());
        }
        assert!(store.quarantined().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn panics_count_as_failures() {
        let broker = MemoryBroker::with_config(MemoryConfig::default().retention(10)).unwrap();
        let store: Arc<MemoryPoisonStore> = Arc::new(MemoryPoisonStore::new());
        let handler = service(|_r: Received| async move {
            if true {
                panic!("boom");
            }
            Ok(())
        });
        let service = PoisonLayer::new(store.clone(), broker.clone(), 3).layer(handler);
        let m = Message::new("order 1");
        for _ in 0..2 {
            let call = AssertUnwindSafe(service.clone().oneshot(received(&m)));
            assert!(
                call.catch_unwind().await.is_err(),
                "the panic goes on to the router"
            );
        }
        service.clone().oneshot(received(&m)).await.unwrap();
        let parked = broker.published("orders.quarantine");
        assert_eq!(parked.len(), 1);
        assert_eq!(
            parked[0].header(headers::DEAD_LETTER_REASON),
            Some("quarantined after 3 failures: handler panicked: boom")
        );
    }
}
