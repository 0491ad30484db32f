//! Dispatch by topic: one handler per topic name or pattern.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Service, ServiceExt};

use super::error::HandlerError;
use super::handler::{BoxHandler, Handler};
use super::outgoing::Outgoing;
use crate::raw::topic::{is_pattern, topic_matches, validate_pattern};
use crate::{Error, Received};

/// A handler that dispatches each message by its topic.
///
/// Exact topic names are looked up first, then patterns (`*` one segment,
/// `>` the rest) in the order they were added, then the fallback. A message
/// that matches nothing is dead-lettered with the reason "no route".
///
/// ```
/// use msg_core::{Json, Received, Routes};
/// #[derive(serde::Deserialize)]
/// struct Created { id: u64 }
/// let routes = Routes::new()
///     .route("orders.created", |Json(order): Json<Created>| async move {
///         println!("created {}", order.id);
///         Ok(())
///     })
///     .route("orders.*", |_m: Received| async { Ok(()) })
///     .fallback(|_m: Received| async { Ok(()) });
/// # let _ = routes;
/// ```
#[derive(Clone, Default)]
pub struct Routes {
    inner: Arc<Table>,
}

#[derive(Clone, Default)]
struct Table {
    exact: HashMap<String, BoxHandler>,
    patterns: Vec<(String, BoxHandler)>,
    fallback: Option<BoxHandler>,
}

impl Routes {
    /// No routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes messages whose topic is or matches `topic` to `handler` (a
    /// [`Handler`]; one that needs state takes it with
    /// [`Handler::with_state`]).
    ///
    /// # Panics
    ///
    /// If `topic` is not a valid topic name or pattern, or is routed twice:
    /// both are mistakes in the program, found on its first run.
    pub fn route<T, H: Handler<T, ()>>(mut self, topic: &str, handler: H) -> Self {
        if let Err(e) = validate_pattern(topic) {
            panic!("Routes::route: {e}");
        }
        let table = Arc::make_mut(&mut self.inner);
        let handler = BoxHandler::new(handler.with_state(()));
        let duplicate = if is_pattern(topic) {
            let dup = table.patterns.iter().any(|(p, _)| p == topic);
            table.patterns.push((topic.to_owned(), handler));
            dup
        } else {
            table.exact.insert(topic.to_owned(), handler).is_some()
        };
        assert!(!duplicate, "Routes::route: {topic:?} is routed twice");
        self
    }

    /// Handles messages that match no route.
    pub fn fallback<T, H: Handler<T, ()>>(mut self, handler: H) -> Self {
        Arc::make_mut(&mut self.inner).fallback = Some(BoxHandler::new(handler.with_state(())));
        self
    }

    fn find(&self, topic: &str) -> Option<&BoxHandler> {
        let t = &*self.inner;
        t.exact
            .get(topic)
            .or_else(|| {
                t.patterns
                    .iter()
                    .find(|(p, _)| topic_matches(p, topic))
                    .map(|(_, h)| h)
            })
            .or(t.fallback.as_ref())
    }
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.inner.exact.keys().map(String::as_str).collect();
        names.extend(self.inner.patterns.iter().map(|(p, _)| p.as_str()));
        f.debug_struct("Routes")
            .field("routes", &names)
            .field("fallback", &self.inner.fallback.is_some())
            .finish()
    }
}

impl Service<Received> for Routes {
    type Response = Outgoing;
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<Outgoing, HandlerError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        // Each route's own readiness is awaited when it is called.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, received: Received) -> Self::Future {
        match self.find(received.topic()) {
            Some(handler) => Box::pin(handler.clone().oneshot(received)),
            None => {
                let topic = received.topic().to_owned();
                Box::pin(async move {
                    Err(HandlerError::dead_letter(Error::invalid_config(format!(
                        "no route for topic {topic:?}"
                    ))))
                })
            }
        }
    }
}
