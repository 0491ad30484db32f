//! Routes that answer requests: a handler's error goes back as a reply.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::Service;

use super::error::HandlerError;
use super::handler::BoxHandler;
use super::outgoing::Outgoing;
use crate::request::error_reply;
use crate::{Received, headers};

/// Wraps a reply route's handler, with its layers, so that a failure is
/// answered: the requester learns at once why, instead of waiting for its
/// timeout while the request is retried.
pub(super) fn answer_errors(handler: BoxHandler) -> BoxHandler {
    BoxHandler::new(AnswerErrors { handler })
}

#[derive(Clone)]
struct AnswerErrors {
    handler: BoxHandler,
}

impl Service<Received> for AnswerErrors {
    type Response = Outgoing;
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<Outgoing, HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.handler.poll_ready(cx)
    }

    fn call(&mut self, request: Received) -> Self::Future {
        let reply_to = request.header(headers::REPLY_TO).map(str::to_owned);
        let topic = request.topic().to_owned();
        let outcome = self.handler.call(request);
        Box::pin(async move {
            match (outcome.await, reply_to) {
                (Err(error), Some(reply_to)) => {
                    let reason = error.chain();
                    tracing::debug!(topic, error = %reason, "a request's handler failed; answering with the error");
                    let reply = error_reply(reason, !error.is_dead_letter());
                    Ok(Outgoing::none().with(reply_to, reply))
                }
                (outcome, _) => outcome,
            }
        })
    }
}
