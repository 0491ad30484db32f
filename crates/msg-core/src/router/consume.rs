//! The consume loops behind the router.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::watch;
use tower::{Service, ServiceExt};

use super::error::HandlerError;
use super::handler::{BoxBatchHandler, BoxHandler};
use super::outgoing::{Inherited, Outgoing};
use super::{BatchOptions, HandlerOptions};
use crate::{
    Acker, Delivery, DeliveryStream, DynPublisher, Error, Received, Settlement, raw::AckFuture,
};

pub(super) struct Context {
    pub(super) publisher: Arc<dyn DynPublisher>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) shutdown_timeout: Duration,
}

/// Completes once shutdown is asked for; never if the router handle was
/// dropped (the loops then run until their streams end).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs `work` to completion, unless shutdown is asked for and the shutdown
/// timeout passes first. Returns whether it completed.
async fn until_deadline(ctx: &mut Context, work: impl Future<Output = ()>) -> bool {
    let timeout = ctx.shutdown_timeout;
    let deadline = async {
        stopped(&mut ctx.stop).await;
        tokio::time::sleep(timeout).await;
    };
    tokio::select! {
        biased;
        () = work => true,
        () = deadline => false,
    }
}

/// What a handler call ended with: its result, or the panic it raised.
type Outcome = std::thread::Result<Result<Outgoing, HandlerError>>;

/// One handler call: its future, or the panic `call` raised. Polling turns
/// a panic of the future into an `Err` outcome too. It is small and
/// `Unpin`, so the router polls it in place and boxes nothing more for a
/// handler that finishes at once.
enum Call {
    Running(BoxFuture<'static, Result<Outgoing, HandlerError>>),
    Panicked(Option<Box<dyn std::any::Any + Send>>),
}

impl Call {
    fn start<R>(
        handler: &mut tower::util::BoxCloneSyncService<R, Outgoing, HandlerError>,
        request: R,
    ) -> Self {
        match std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(request))) {
            Ok(future) => Call::Running(future),
            Err(panic) => Call::Panicked(Some(panic)),
        }
    }
}

impl Future for Call {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Outcome> {
        match self.get_mut() {
            Call::Running(future) => {
                match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                    Ok(Poll::Pending) => Poll::Pending,
                    Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
                    Err(panic) => Poll::Ready(Err(panic)),
                }
            }
            Call::Panicked(panic) => Poll::Ready(Err(panic
                .take()
                .unwrap_or_else(|| Box::new("handler call polled after it completed")))),
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "handler panicked".to_owned())
}

/// How a delivery is settled, and how many handler calls the message had
/// when a retry layer counted them (a dead letter's `msg-attempts`).
#[derive(Debug, Clone)]
struct Decision {
    settlement: Settlement,
    calls: Option<u32>,
}

impl From<Settlement> for Decision {
    fn from(settlement: Settlement) -> Self {
        Self {
            settlement,
            calls: None,
        }
    }
}

impl Decision {
    /// Starts settling `settle` as decided.
    fn start(self, settle: &mut Acker) -> AckFuture {
        if let Some(calls) = self.calls {
            settle.count_calls(calls);
        }
        settle.start(self.settlement)
    }
}

/// The settlement an outcome calls for, or the handler's messages, which
/// must be published before the input is acked.
fn settlement_now(outcome: Outcome, topic: &str) -> std::result::Result<Decision, Outgoing> {
    match outcome {
        Ok(Ok(outgoing)) if outgoing.is_empty() => Ok(Settlement::Ack.into()),
        Ok(Ok(outgoing)) => Err(outgoing),
        Ok(Err(e)) => {
            let settlement = e.settlement();
            match &settlement {
                Settlement::RetryAfter(delay) => {
                    tracing::debug!(topic, error = %e.chain(), ?delay, "handler failed; retrying later");
                }
                Settlement::DeadLetter(reason) => {
                    tracing::warn!(topic, error = %reason, "handler failed permanently; dead-lettering");
                }
                _ => tracing::debug!(topic, error = %e.chain(), "handler failed; retrying"),
            }
            Ok(Decision {
                settlement,
                calls: e.calls(),
            })
        }
        Err(panic) => {
            let text = panic_text(&*panic);
            tracing::error!(topic, panic = %text, "handler panicked; the message will be redelivered");
            Ok(Settlement::Retry.into())
        }
    }
}

/// Publishes a handler's messages: ack the input if all went out.
async fn publish_outgoing(
    outgoing: Outgoing,
    publisher: &dyn DynPublisher,
    topic: &str,
) -> Settlement {
    for (to, message) in outgoing {
        match publisher.publish_boxed(&to, message).await {
            Ok(_) => {}
            // Retrying cannot help a message that can never be published
            // (an invalid topic or header): dead-letter the input with why.
            Err(
                e @ (Error::InvalidTopic { .. }
                | Error::InvalidHeader { .. }
                | Error::MessageTooLarge { .. }),
            ) => {
                let reason = format!("a message for {to:?} cannot be published: {}", e.chain());
                tracing::warn!(topic, to, error = %e.chain(), "a handler's message cannot be published; dead-lettering the input");
                return Settlement::DeadLetter(reason);
            }
            Err(e) => {
                tracing::warn!(topic, to, error = %e.chain(), "publishing a handler's message failed; the input will be redelivered");
                return Settlement::Retry;
            }
        }
    }
    Settlement::Ack
}

/// Turns an outcome into a settlement, publishing the handler's messages
/// first.
async fn settlement_for(
    outcome: Outcome,
    inherited: Option<&Inherited>,
    publisher: &dyn DynPublisher,
    topic: &str,
) -> Decision {
    match settlement_now(outcome, topic) {
        Ok(decision) => decision,
        Err(mut outgoing) => {
            // A batch's messages come from many inputs: none is theirs.
            if let Some(inherited) = inherited {
                inherited.apply(&mut outgoing);
            }
            publish_outgoing(outgoing, publisher, topic).await.into()
        }
    }
}

fn settled(result: crate::Result<()>, topic: &str) {
    if let Err(e) = result {
        tracing::warn!(topic, error = %e.chain(), "settling a delivery failed; the broker will redeliver it");
    }
}

async fn apply(settle: &mut Acker, decision: impl Into<Decision>, topic: &str) {
    settled(decision.into().start(settle).await, topic);
}

/// The rest of one message's handling, when it could not finish at once;
/// yields the key it held, if any.
type Rest = BoxFuture<'static, Option<Arc<str>>>;

/// One message whose handler was called: what settling it needs.
struct Handled<'a> {
    settle: Acker,
    publisher: &'a Arc<dyn DynPublisher>,
    topic: Arc<str>,
    key: Option<Arc<str>>,
    /// What the handler's messages take from the input.
    inherited: Inherited,
}

impl Handled<'_> {
    /// The rest of the handling, once `outcome` is there.
    fn later(self, outcome: impl Future<Output = Outcome> + Send + 'static) -> Rest {
        let Handled {
            mut settle,
            publisher,
            topic,
            key,
            inherited,
        } = self;
        let publisher = publisher.clone();
        Box::pin(async move {
            let decision =
                settlement_for(outcome.await, Some(&inherited), &*publisher, &topic).await;
            apply(&mut settle, decision, &topic).await;
            key
        })
    }

    /// Finishes the handling as far as it goes without waiting: a
    /// transport that settles at once allocates nothing here. Returns the
    /// key it held, or [`Rest`], what has to wait.
    fn now(self, outcome: Outcome) -> std::result::Result<Option<Arc<str>>, Rest> {
        match settlement_now(outcome, &self.topic) {
            Ok(decision) => {
                let Handled {
                    mut settle,
                    topic,
                    key,
                    ..
                } = self;
                match decision.start(&mut settle) {
                    AckFuture::Ready(result) => {
                        settled(result.unwrap_or(Err(Error::AlreadySettled)), &topic);
                        Ok(key)
                    }
                    pending => Err(Box::pin(async move {
                        settled(pending.await, &topic);
                        key
                    })),
                }
            }
            Err(outgoing) => Err(self.later(std::future::ready(Ok(Ok(outgoing))))),
        }
    }
}

/// What to do with an item of the delivery stream.
// It lives for one turn of the loop: boxing the delivery would allocate per
// message to save a move.
#[allow(clippy::large_enum_variant)]
enum Next {
    Delivery(Delivery),
    Skip,
    End,
}

#[inline]
fn next_item(item: Option<crate::Result<Delivery>>) -> Next {
    match item {
        None | Some(Err(Error::Closed)) => Next::End,
        Some(Err(e)) => {
            tracing::warn!(error = %e.chain(), "subscription error; consuming goes on");
            Next::Skip
        }
        Some(Ok(delivery)) => Next::Delivery(delivery),
    }
}

pub(super) async fn run_single(
    mut ctx: Context,
    mut stream: DeliveryStream,
    mut handler: BoxHandler,
    options: HandlerOptions,
) {
    // Futures of handled messages; each yields the key it held, if any.
    let mut in_flight: FuturesUnordered<Rest> = FuturesUnordered::new();
    // Keys with a message in flight, and the messages waiting for them.
    let mut busy: HashMap<Arc<str>, VecDeque<Delivery>> = HashMap::new();
    // Messages whose key was released, to start before fetching more.
    let mut ready: VecDeque<Delivery> = VecDeque::new();
    let mut waiting = 0usize;

    let release = |key: Option<Arc<str>>,
                   busy: &mut HashMap<Arc<str>, VecDeque<Delivery>>,
                   ready: &mut VecDeque<Delivery>| {
        if let Some(key) = key {
            match busy.get_mut(&key).and_then(VecDeque::pop_front) {
                Some(next) => ready.push_back(next),
                None => {
                    busy.remove(&key);
                }
            }
        }
    };

    // One stop future for the whole loop: a new one per message would
    // register with the watch channel (a lock) every time.
    let mut stop_rx = ctx.stop.clone();
    let stop = stopped(&mut stop_rx);
    tokio::pin!(stop);

    'consume: loop {
        // Start what was waiting for its key, or fetch the next message.
        // A delivery stays whole until the handler gets it: every move of
        // it is a copy of some 150 bytes, a cost per message.
        let delivery = if let Some(next) = ready.pop_front() {
            waiting -= 1;
            next
        } else {
            let room = in_flight.len() + waiting < options.concurrency;
            let delivery = tokio::select! {
                biased;
                () = &mut stop => break 'consume,
                Some(key) = in_flight.next(), if !in_flight.is_empty() => {
                    release(key, &mut busy, &mut ready);
                    continue;
                }
                item = stream.next(), if room => match next_item(item) {
                    Next::Delivery(delivery) => delivery,
                    Next::Skip => continue,
                    Next::End => break 'consume,
                },
            };
            if options.ordered_by_key
                && let Some(key) = delivery.message().key_arc()
            {
                if let Some(queue) = busy.get_mut(&key) {
                    queue.push_back(delivery);
                    waiting += 1;
                    continue;
                }
                busy.insert(key, VecDeque::new());
            }
            delivery
        };

        // Wait until the handler is ready, completing in-flight work meanwhile
        // (a concurrency-limit layer frees its permits only then).
        let ready_result = loop {
            tokio::select! {
                biased;
                r = handler.ready() => break r.map(|_| ()),
                Some(key) = in_flight.next(), if !in_flight.is_empty() => release(key, &mut busy, &mut ready),
                // A handler that never gets ready must not hold up shutdown;
                // the message in hand was not started: dropping it retries it.
                () = &mut stop => break 'consume,
            }
        };
        let key = if options.ordered_by_key {
            delivery.message().key_arc()
        } else {
            None
        };
        let topic = delivery.metadata().topic.clone();
        let (received, mut settle) = delivery.into_parts();
        match ready_result {
            Ok(()) => {
                let inherited = Inherited::from(&received.message);
                let mut call = Call::start(&mut handler, received);
                let handled = Handled {
                    settle,
                    publisher: &ctx.publisher,
                    topic,
                    key,
                    inherited,
                };
                // Most handlers finish without waiting: settle those at
                // once rather than through the in-flight set.
                match futures::poll!(&mut call) {
                    Poll::Pending => in_flight.push(handled.later(call)),
                    Poll::Ready(outcome) => match handled.now(outcome) {
                        Ok(key) => release(key, &mut busy, &mut ready),
                        Err(mut rest) => match futures::poll!(rest.as_mut()) {
                            Poll::Ready(key) => release(key, &mut busy, &mut ready),
                            Poll::Pending => in_flight.push(rest),
                        },
                    },
                }
            }
            Err(e) => {
                tracing::warn!(topic = &*topic, error = %e.chain(), "handler not ready; the message will be redelivered");
                apply(&mut settle, Settlement::Retry, &topic).await;
                release(key, &mut busy, &mut ready);
            }
        }
    }

    // Stop fetching; messages waiting for their key never started: retry
    // them (dropping an Acker retries). In-flight ones may finish until the
    // deadline; those still running then are dropped, which retries them too.
    drop(ready);
    drop(busy);
    let drain = async { while in_flight.next().await.is_some() {} };
    if !until_deadline(&mut ctx, drain).await {
        tracing::warn!("shutdown timeout passed; retrying messages still in flight");
    }
    drop(in_flight);
    // Only now drop the stream, so that transports can still settle above.
    drop(stream);
}

pub(super) async fn run_batch(
    mut ctx: Context,
    mut stream: DeliveryStream,
    mut handler: BoxBatchHandler,
    options: BatchOptions,
) {
    let publisher = ctx.publisher.clone();
    let mut batch: Vec<(Received, Acker)> = Vec::with_capacity(options.max_size);
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut stop_rx = ctx.stop.clone();
    let stop = stopped(&mut stop_rx);
    tokio::pin!(stop);
    let mut flush_now;
    loop {
        flush_now = false;
        tokio::select! {
            biased;
            () = &mut stop => break,
            () = &mut timer, if !batch.is_empty() => flush_now = true,
            item = stream.next() => match next_item(item) {
                Next::Delivery(delivery) => {
                    if batch.is_empty() {
                        timer.as_mut().reset(tokio::time::Instant::now() + options.max_wait);
                    }
                    batch.push(delivery.into_parts());
                    flush_now = batch.len() >= options.max_size;
                }
                Next::Skip => {}
                Next::End => {
                    if !batch.is_empty() {
                        let work = flush(&mut handler, std::mem::take(&mut batch), &publisher);
                        until_deadline(&mut ctx, work).await;
                    }
                    break;
                }
            },
        }
        if flush_now {
            let work = flush(&mut handler, std::mem::take(&mut batch), &publisher);
            if !until_deadline(&mut ctx, work).await {
                tracing::warn!("shutdown timeout passed; retrying the batch in flight");
                break;
            }
        }
    }
    // A batch still being gathered never started: dropping it retries it.
    drop(batch);
    drop(stream);
}

async fn flush(
    handler: &mut BoxBatchHandler,
    batch: Vec<(Received, Acker)>,
    publisher: &Arc<dyn DynPublisher>,
) {
    let (received, mut settles): (Vec<Received>, Vec<Acker>) = batch.into_iter().unzip();
    let topic = received
        .first()
        .map(|r| r.metadata.topic.clone())
        .unwrap_or_else(|| Arc::from(""));
    let decision = match handler.ready().await {
        Ok(_) => {
            let outcome = Call::start(handler, received).await;
            settlement_for(outcome, None, &**publisher, &topic).await
        }
        Err(e) => {
            tracing::warn!(topic = &*topic, error = %e.chain(), "batch handler not ready; the batch will be redelivered");
            Settlement::Retry.into()
        }
    };
    for settle in &mut settles {
        apply(settle, decision.clone(), &topic).await;
    }
}
