//! Idempotent handling: skip messages whose id was already processed.
//!
//! Before the handler runs, the store is asked whether the message id was
//! processed within the window; if so the delivery is acked without calling
//! the handler. The id is recorded only after the handler succeeded, so a
//! failure is retried, never skipped. At-least-once delivery therefore
//! runs a handler once per id within the window (or twice, if two
//! deliveries of one id run at the very same time).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::BoxFuture;
use msg_core::{BoxError, HandlerError, Outgoing, Received, Result, Uuid};
use tower::{Layer, Service};

use crate::failed;

mod memory;
pub use memory::MemoryDedupStore;

/// Where processed message ids are remembered.
///
/// An `Arc` of a store is a store too, to keep a handle on one that a
/// layer uses.
pub trait DedupStore: Send + Sync + 'static {
    /// Whether `id` was marked processed within the window.
    fn contains(&self, id: Uuid) -> impl Future<Output = Result<bool>> + Send;
    /// Records `id` as processed.
    fn mark(&self, id: Uuid) -> impl Future<Output = Result<()>> + Send;

    /// Whether the store answers without waiting (it keeps the ids in this
    /// process): then the layer asks it inline and allocates nothing per
    /// message. `contains` and `mark` must then complete when first
    /// polled.
    fn answers_at_once(&self) -> bool {
        false
    }
}

impl<T: DedupStore> DedupStore for Arc<T> {
    fn contains(&self, id: Uuid) -> impl Future<Output = Result<bool>> + Send {
        (**self).contains(id)
    }
    fn mark(&self, id: Uuid) -> impl Future<Output = Result<()>> + Send {
        (**self).mark(id)
    }
    fn answers_at_once(&self) -> bool {
        (**self).answers_at_once()
    }
}

/// Skips messages already processed; see the [module docs](self).
pub struct DedupLayer<St> {
    store: Arc<St>,
}

impl<St> Clone for DedupLayer<St> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
        }
    }
}

impl<St> std::fmt::Debug for DedupLayer<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedupLayer").finish_non_exhaustive()
    }
}

impl<St: DedupStore> DedupLayer<St> {
    /// Remembers processed ids in `store`.
    pub fn new(store: St) -> Self {
        Self {
            store: Arc::new(store),
        }
    }
}

impl<S, St> Layer<S> for DedupLayer<St> {
    type Service = Dedup<S, St>;
    fn layer(&self, inner: S) -> Dedup<S, St> {
        Dedup {
            inner,
            store: self.store.clone(),
        }
    }
}

/// See [`DedupLayer`].
pub struct Dedup<S, St> {
    inner: S,
    store: Arc<St>,
}

impl<S: Clone, St> Clone for Dedup<S, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            store: self.store.clone(),
        }
    }
}

impl<S: std::fmt::Debug, St> std::fmt::Debug for Dedup<S, St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedup")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, St> Service<Received> for Dedup<S, St>
where
    S: Service<Received> + Clone + Send + 'static,
    S::Response: Into<Outgoing>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    St: DedupStore,
{
    type Response = Outgoing;
    type Error = HandlerError;
    type Future = DedupFuture<S::Future, St>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx).map_err(failed)
    }

    fn call(&mut self, received: Received) -> Self::Future {
        let id = received.message.id();
        if self.store.answers_at_once() {
            return match self.store.contains(id).now_or_never() {
                Some(Ok(true)) => {
                    tracing::debug!(%id, topic = received.topic(), "duplicate skipped");
                    DedupFuture::Done {
                        result: Some(Ok(Outgoing::none())),
                    }
                }
                Some(Ok(false)) => DedupFuture::Calling {
                    inner: self.inner.call(received),
                    store: self.store.clone(),
                    id,
                },
                Some(Err(e)) => DedupFuture::Done {
                    result: Some(Err(e.into())),
                },
                None => DedupFuture::Done {
                    result: Some(Err(HandlerError::retry(
                        "the dedup store said it answers at once, and did not",
                    ))),
                },
            };
        }
        // The store waits (Redis, ...): ask it first, then call a clone of
        // the service that was made ready.
        let mut inner = crate::take_ready(&mut self.inner);
        let store = self.store.clone();
        DedupFuture::Waiting {
            later: Box::pin(async move {
                if store.contains(id).await? {
                    tracing::debug!(%id, topic = received.topic(), "duplicate skipped");
                    return Ok(Outgoing::none());
                }
                let out: Outgoing = inner.call(received).await.map_err(failed)?.into();
                store.mark(id).await?;
                Ok(out)
            }),
        }
    }
}

/// A batch: the messages already processed (or twice in the batch) are
/// left out, and acked with the batch; the handler gets the rest, and the
/// batch's ids are marked when it succeeds. A batch of only duplicates
/// does not call the handler.
impl<S, St> Service<Vec<Received>> for Dedup<S, St>
where
    S: Service<Vec<Received>> + Clone + Send + 'static,
    S::Response: Into<Outgoing>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    St: DedupStore,
{
    type Response = Outgoing;
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<Outgoing, HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx).map_err(failed)
    }

    fn call(&mut self, batch: Vec<Received>) -> Self::Future {
        let mut inner = crate::take_ready(&mut self.inner);
        let store = self.store.clone();
        Box::pin(async move {
            let mut fresh = Vec::with_capacity(batch.len());
            let mut ids = std::collections::HashSet::with_capacity(batch.len());
            for received in batch {
                let id = received.message.id();
                // An id twice in one batch is a duplicate too.
                if !ids.insert(id) || store.contains(id).await? {
                    tracing::debug!(%id, topic = received.topic(), "duplicate skipped");
                } else {
                    fresh.push(received);
                }
            }
            if fresh.is_empty() {
                return Ok(Outgoing::none());
            }
            let handled: Vec<Uuid> = fresh.iter().map(|r| r.message.id()).collect();
            let out: Outgoing = inner.call(fresh).await.map_err(failed)?.into();
            for id in handled {
                store.mark(id).await?;
            }
            Ok(out)
        })
    }
}

// pin-project-lite takes no docs on fields.
#[allow(missing_docs)]
mod future {
    use super::*;
    pin_project_lite::pin_project! {
        /// The future of a [`Dedup`] call.
        #[project = DedupProj]
        pub enum DedupFuture<F, St> {
            /// Decided without calling the handler.
            Done { result: Option<Result<Outgoing, HandlerError>> },
            /// The handler runs; its id is marked when it succeeds.
            Calling { #[pin] inner: F, store: Arc<St>, id: Uuid },
            /// A store that waits: everything in one boxed future.
            Waiting { later: BoxFuture<'static, Result<Outgoing, HandlerError>> },
        }
    }
}
pub use future::DedupFuture;
use future::DedupProj;

impl<F, R, E, St> Future for DedupFuture<F, St>
where
    F: Future<Output = std::result::Result<R, E>>,
    R: Into<Outgoing>,
    E: Into<BoxError>,
    St: DedupStore,
{
    type Output = Result<Outgoing, HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            DedupProj::Done { result } => {
                Poll::Ready(result.take().expect("polled after it completed"))
            }
            DedupProj::Calling { inner, store, id } => {
                let out: Outgoing = std::task::ready!(inner.poll(cx)).map_err(failed)?.into();
                Poll::Ready(match store.mark(*id).now_or_never() {
                    Some(marked) => marked.map(|()| out).map_err(Into::into),
                    None => Err(HandlerError::retry(
                        "the dedup store said it answers at once, and did not",
                    )),
                })
            }
            DedupProj::Waiting { later } => later.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msg_core::{Message, Metadata, service};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;
    use tower::ServiceExt;

    fn received(message: &Message) -> Received {
        Received {
            message: message.clone(),
            metadata: Metadata::new("t"),
        }
    }

    #[tokio::test]
    async fn a_processed_id_is_skipped_and_a_failed_one_is_not() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let handler = service(move |r: Received| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if r.payload().as_ref() == b"fails once" && n == 0 {
                    return Err(HandlerError::retry("transient"));
                }
                Ok(())
            }
        });
        let layer = DedupLayer::new(MemoryDedupStore::new(Duration::from_secs(60), 100));
        let flaky = Message::new("fails once");
        assert!(
            layer
                .layer(handler.clone())
                .oneshot(received(&flaky))
                .await
                .is_err()
        );
        layer
            .layer(handler.clone())
            .oneshot(received(&flaky))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2, "a failure is not recorded");
        layer
            .layer(handler.clone())
            .oneshot(received(&flaky))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2, "the duplicate was skipped");
        layer
            .layer(handler)
            .oneshot(received(&Message::new("other")))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_batch_handler_gets_only_what_it_has_not_processed() {
        let got = Arc::new(std::sync::Mutex::new(Vec::<Vec<Uuid>>::new()));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, f) = (got.clone(), fail.clone());
        let handler = tower::service_fn(move |batch: Vec<Received>| {
            g.lock()
                .unwrap()
                .push(batch.iter().map(|r| r.message.id()).collect());
            let fails = f.load(Ordering::SeqCst);
            async move {
                if fails {
                    return Err(HandlerError::retry("down"));
                }
                Ok::<_, HandlerError>(Outgoing::none())
            }
        });
        let layer = DedupLayer::new(MemoryDedupStore::new(Duration::from_secs(60), 100));
        let (a, b, c, d) = (
            Message::new("a"),
            Message::new("b"),
            Message::new("c"),
            Message::new("d"),
        );
        let batch = |ms: &[&Message]| ms.iter().map(|m| received(m)).collect::<Vec<_>>();
        let mut svc = layer.layer(handler);
        svc.ready()
            .await
            .unwrap()
            .call(batch(&[&a, &b, &a]))
            .await
            .unwrap();
        svc.ready()
            .await
            .unwrap()
            .call(batch(&[&a, &c]))
            .await
            .unwrap();
        svc.ready()
            .await
            .unwrap()
            .call(batch(&[&b, &c]))
            .await
            .unwrap();
        fail.store(true, Ordering::SeqCst);
        svc.ready()
            .await
            .unwrap()
            .call(batch(&[&d]))
            .await
            .unwrap_err();
        fail.store(false, Ordering::SeqCst);
        svc.ready().await.unwrap().call(batch(&[&d])).await.unwrap();
        assert_eq!(
            *got.lock().unwrap(),
            [
                vec![a.id(), b.id()],
                vec![c.id()],
                vec![d.id()],
                vec![d.id()]
            ],
            "duplicates left out, an all-duplicate batch not called, a failed one not marked"
        );
    }
}
