//! Handlers: async functions of extractors, or any `tower::Service`.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

use super::error::HandlerError;
use super::extract::{FromReceived, FromReceivedOwned, State};
use super::outgoing::{IntoOutgoing, Outgoing, ResultTo};
use crate::{BoxError, Received, headers};

/// What the router runs for each message of a subscription.
///
/// It is implemented for async functions (and closures) whose arguments
/// are extractors ([`Json`](crate::Json), [`State`],
/// [`Metadata`](crate::Metadata), [`Received`], ...; see
/// [`FromReceived`]) and that return `Result<R, HandlerError>`, where `R`
/// converts into [`Outgoing`] (`()` does); and for every
/// `tower::Service<Received>` whose error converts into a `BoxError`.
/// `?` converts any error into a [`HandlerError`].
///
/// ```
/// use msg_core::{Json, Metadata, State, HandlerError};
///
/// #[derive(Clone)]
/// struct App { vat_percent: u64 }
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64, cents: u64 }
///
/// async fn bill(
///     State(app): State<App>,
///     meta: Metadata,
///     Json(order): Json<Order>,
/// ) -> Result<(), HandlerError> {
///     let total = order.cents * (100 + app.vat_percent) / 100;
///     println!("attempt {}: order {} costs {total}", meta.attempt, order.id);
///     Ok(())
/// }
/// # let router = msg_core::Router::new(msg_memory::MemoryBroker::new(), msg_memory::MemoryBroker::new())
/// #     .with_state(App { vat_percent: 20 })
/// #     .handle(msg_core::Subscription::new("orders"), bill);
/// ```
///
/// `T` says which of the implementations applies; it is inferred.
pub trait Handler<T, S>: Sized {
    /// The handler as a `tower` service, with its state.
    type Service: Service<Received, Response = Outgoing, Error = HandlerError, Future: Send + 'static>
        + Clone
        + Send
        + Sync
        + 'static;

    /// The handler as a `tower` service with `state`, to wrap in layers by
    /// hand (the router does this itself).
    fn with_state(self, state: S) -> Self::Service;

    /// As [`Handler::with_state`], with where a typed result goes
    /// ([`HandlerOptions::publish_to`](crate::HandlerOptions::publish_to),
    /// [`HandlerOptions::reply`](crate::HandlerOptions::reply)); the
    /// router calls this.
    fn with_route(self, state: S, result_to: ResultTo) -> Self::Service {
        let _ = result_to;
        self.with_state(state)
    }
}

/// A handler that needs no state as a `tower` service, to wrap in layers
/// by hand with `tower::ServiceBuilder` (the router wraps handlers in its
/// own layers, see [`Router::layer`](crate::Router::layer)).
///
/// ```
/// use std::time::Duration;
/// use msg_core::{Received, service};
/// let handler = tower::ServiceBuilder::new()
///     .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)))
///     .service(service(|msg: Received| async move {
///         println!("{}", msg.id());
///         Ok(())
///     }));
/// # let _ = handler;
/// ```
pub fn service<T, H: Handler<T, ()>>(handler: H) -> H::Service {
    handler.with_state(())
}

/// Marks the [`Handler`] implementation for `tower` services.
#[derive(Debug)]
pub enum IsService {}

impl<Svc, S> Handler<IsService, S> for Svc
where
    Svc: Service<Received> + Clone + Send + Sync + 'static,
    Svc::Response: Into<Outgoing>,
    Svc::Error: Into<BoxError>,
    Svc::Future: Send + 'static,
{
    type Service = ServiceHandler<Svc>;

    fn with_state(self, _: S) -> Self::Service {
        ServiceHandler { service: self }
    }
}

/// A `tower` service as a [`Handler`]: its response becomes [`Outgoing`],
/// its error a [`HandlerError`].
#[derive(Clone, Debug)]
pub struct ServiceHandler<Svc> {
    service: Svc,
}

impl<Svc, Req> Service<Req> for ServiceHandler<Svc>
where
    Svc: Service<Req>,
    Svc::Response: Into<Outgoing>,
    Svc::Error: Into<BoxError>,
{
    type Response = Outgoing;
    type Error = HandlerError;
    type Future = ServiceFuture<Svc::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.service
            .poll_ready(cx)
            .map_err(|e| HandlerError::from_boxed(e.into()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        ServiceFuture {
            future: self.service.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a [`ServiceHandler`].
    pub struct ServiceFuture<F> {
        #[pin]
        future: F,
    }
}

impl<F, R, E> Future for ServiceFuture<F>
where
    F: Future<Output = Result<R, E>>,
    R: Into<Outgoing>,
    E: Into<BoxError>,
{
    type Output = Result<Outgoing, HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().future.poll(cx).map(|r| {
            r.map(Into::into)
                .map_err(|e| HandlerError::from_boxed(e.into()))
        })
    }
}

/// An async function of extractors with its state, as a `tower` service.
pub struct FnHandler<F, T, S> {
    f: F,
    state: S,
    /// Where a typed result (see [`IntoOutgoing`]) is published.
    result_to: ResultTo,
    _args: PhantomData<fn() -> T>,
}

impl<F: Clone, T, S: Clone> Clone for FnHandler<F, T, S> {
    fn clone(&self) -> Self {
        Self {
            f: self.f.clone(),
            state: self.state.clone(),
            result_to: self.result_to.clone(),
            _args: PhantomData,
        }
    }
}

impl<F, T, S> fmt::Debug for FnHandler<F, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnHandler")
    }
}

// The fields are private in all but name: pin-project-lite takes no
// attributes on them, so they go without docs.
#[allow(missing_docs)]
mod fn_future {
    use super::*;
    pin_project_lite::pin_project! {
        /// The future of a [`FnHandler`]: the function's, or the extractor's
        /// error at once.
        #[project = FnFutureProj]
        pub enum FnFuture<Fut> {
            /// The function runs.
            Running { #[pin] future: Fut, publish_to: Option<Arc<str>> },
            /// An argument could not be extracted.
            Failed { error: Option<HandlerError> },
        }
    }
}
pub use fn_future::FnFuture;
use fn_future::FnFutureProj;

impl<Fut, R> Future for FnFuture<Fut>
where
    Fut: Future<Output = Result<R, HandlerError>>,
    R: IntoOutgoing,
{
    type Output = Result<Outgoing, HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            FnFutureProj::Running { future, publish_to } => future
                .poll(cx)
                .map(|r| r.and_then(|out| out.into_outgoing(publish_to.as_deref()))),
            FnFutureProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .expect("FnFuture polled after it completed"))),
        }
    }
}

macro_rules! fn_handler {
    ($($borrowed:ident),* ; $last:ident) => {
        #[allow(non_snake_case, unused_variables)]
        impl<F, Fut, R, S, M, $($borrowed,)* $last> Handler<(M, $($borrowed,)* $last), S> for F
        where
            F: Fn($($borrowed,)* $last) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
            R: IntoOutgoing,
            S: Clone + Send + Sync + 'static,
            $($borrowed: FromReceived<S>,)*
            $last: FromReceivedOwned<S, M>,
            M: 'static,
            $($borrowed: 'static,)*
            $last: 'static,
        {
            type Service = FnHandler<F, (M, $($borrowed,)* $last), S>;

            fn with_state(self, state: S) -> Self::Service {
                self.with_route(state, ResultTo::Nowhere)
            }

            fn with_route(self, state: S, result_to: ResultTo) -> Self::Service {
                FnHandler { f: self, state, result_to, _args: PhantomData }
            }
        }

        #[allow(non_snake_case, unused_variables, unused_parens)]
        impl<F, Fut, R, S, M, $($borrowed,)* $last> Service<Received>
            for FnHandler<F, (M, $($borrowed,)* $last), S>
        where
            F: Fn($($borrowed,)* $last) -> Fut,
            Fut: Future<Output = Result<R, HandlerError>>,
            R: IntoOutgoing,
            $($borrowed: FromReceived<S>,)*
            $last: FromReceivedOwned<S, M>,
        {
            type Response = Outgoing;
            type Error = HandlerError;
            type Future = FnFuture<Fut>;

            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, received: Received) -> Self::Future {
                let publish_to = match publish_to(&self.result_to, &received) {
                    Ok(publish_to) => publish_to,
                    Err(error) => return FnFuture::Failed { error: Some(error) },
                };
                let args = (|| {
                    $(let $borrowed = $borrowed::from_received(&received, &self.state)?;)*
                    let $last = $last::from_received_owned(received, &self.state)?;
                    Ok::<_, HandlerError>(($($borrowed,)* $last))
                })();
                match args {
                    Ok(($($borrowed,)* $last)) => FnFuture::Running {
                        future: (self.f)($($borrowed,)* $last),
                        publish_to,
                    },
                    Err(error) => FnFuture::Failed { error: Some(error) },
                }
            }
        }
    };
}

/// Where the typed result of the handler of `received` is published.
fn publish_to(result_to: &ResultTo, received: &Received) -> Result<Option<Arc<str>>, HandlerError> {
    match result_to {
        ResultTo::Nowhere => Ok(None),
        ResultTo::Topic(topic) => Ok(Some(topic.clone())),
        ResultTo::ReplyTo => match received.header(headers::REPLY_TO) {
            Some(to) => Ok(Some(Arc::from(to))),
            // Nobody waits for an answer: do not run the handler for it.
            None => Err(HandlerError::dead_letter(
                "the route answers requests, but this message has no reply address \
                 (msg-reply-to): send it with Connection::request",
            )),
        },
    }
}

fn_handler!(; T1);
fn_handler!(T1; T2);
fn_handler!(T1, T2; T3);
fn_handler!(T1, T2, T3; T4);
fn_handler!(T1, T2, T3, T4; T5);
fn_handler!(T1, T2, T3, T4, T5; T6);

/// What the router runs for a batch of messages: an async function of
/// `Vec<Received>` (after [`State`] if it needs the state) returning
/// `Result<R, HandlerError>`, or any `tower::Service<Vec<Received>>` whose
/// error converts into a `BoxError`.
pub trait BatchHandler<T, S>: Sized {
    /// The handler as a `tower` service, with its state.
    type Service: Service<Vec<Received>, Response = Outgoing, Error = HandlerError, Future: Send + 'static>
        + Clone
        + Send
        + Sync
        + 'static;

    /// The handler as a `tower` service with `state`.
    fn with_state(self, state: S) -> Self::Service;
}

impl<Svc, S> BatchHandler<IsService, S> for Svc
where
    Svc: Service<Vec<Received>> + Clone + Send + Sync + 'static,
    Svc::Response: Into<Outgoing>,
    Svc::Error: Into<BoxError>,
    Svc::Future: Send + 'static,
{
    type Service = ServiceHandler<Svc>;

    fn with_state(self, _: S) -> Self::Service {
        ServiceHandler { service: self }
    }
}

impl<F, Fut, R, S> BatchHandler<(Vec<Received>,), S> for F
where
    F: Fn(Vec<Received>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
    R: IntoOutgoing,
    S: Clone + Send + Sync + 'static,
{
    type Service = FnHandler<F, (Vec<Received>,), S>;

    fn with_state(self, state: S) -> Self::Service {
        FnHandler {
            f: self,
            state,
            result_to: ResultTo::Nowhere,
            _args: PhantomData,
        }
    }
}

impl<F, Fut, R, S> Service<Vec<Received>> for FnHandler<F, (Vec<Received>,), S>
where
    F: Fn(Vec<Received>) -> Fut,
    Fut: Future<Output = Result<R, HandlerError>>,
    R: IntoOutgoing,
{
    type Response = Outgoing;
    type Error = HandlerError;
    type Future = FnFuture<Fut>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Vec<Received>) -> Self::Future {
        FnFuture::Running {
            future: (self.f)(batch),
            publish_to: None,
        }
    }
}

impl<F, Fut, R, S> BatchHandler<(State<S>, Vec<Received>), S> for F
where
    F: Fn(State<S>, Vec<Received>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
    R: IntoOutgoing,
    S: Clone + Send + Sync + 'static,
{
    type Service = FnHandler<F, (State<S>, Vec<Received>), S>;

    fn with_state(self, state: S) -> Self::Service {
        FnHandler {
            f: self,
            state,
            result_to: ResultTo::Nowhere,
            _args: PhantomData,
        }
    }
}

impl<F, Fut, R, S> Service<Vec<Received>> for FnHandler<F, (State<S>, Vec<Received>), S>
where
    F: Fn(State<S>, Vec<Received>) -> Fut,
    Fut: Future<Output = Result<R, HandlerError>>,
    R: IntoOutgoing,
    S: Clone,
{
    type Response = Outgoing;
    type Error = HandlerError;
    type Future = FnFuture<Fut>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Vec<Received>) -> Self::Future {
        FnFuture::Running {
            future: (self.f)(State(self.state.clone()), batch),
            publish_to: None,
        }
    }
}

/// The router's handler type: any handler, boxed, cloneable.
pub type BoxHandler = tower::util::BoxCloneSyncService<Received, Outgoing, HandlerError>;

/// The router's batch handler type.
pub type BoxBatchHandler = tower::util::BoxCloneSyncService<Vec<Received>, Outgoing, HandlerError>;

/// Boxes any service whose error converts into a `BoxError` and whose
/// response converts into [`Outgoing`], so that `tower` layers such as
/// `tower::timeout` (error type `BoxError`) stack freely.
pub fn box_handler<Svc, Req>(
    service: Svc,
) -> tower::util::BoxCloneSyncService<Req, Outgoing, HandlerError>
where
    Svc: Service<Req> + Clone + Send + Sync + 'static,
    Svc::Response: Into<Outgoing>,
    Svc::Error: Into<BoxError>,
    Svc::Future: Send + 'static,
    Req: 'static,
{
    tower::util::BoxCloneSyncService::new(ServiceHandler { service })
}
