//! The request/reply cases: a route with `HandlerOptions::reply` answers
//! requests sent with `Connection::request`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::join_all;
use msg_core::{
    Connection, Error, HandlerError, HandlerOptions, Json, Message, Publisher, Received, Requester,
    Router, RunningRouter, StartPosition, Subscriber, Subscription, headers,
};
use tokio::time::Instant;

use crate::harness::{Harness, recv};

/// Starts a route that answers requests on `topic` with `handler`, in the
/// group `group` (or broadcast), reading from the earliest position so
/// that no request published while it joins is missed.
async fn responder<T, H>(
    c: &Connection,
    topic: &str,
    group: Option<String>,
    handler: H,
) -> RunningRouter
where
    H: msg_core::Handler<T, ()>,
{
    let mut subscription = Subscription::new(topic).start(StartPosition::Earliest);
    if let Some(group) = group {
        subscription = subscription.group(group);
    }
    answer(c, subscription, handler).await
}

async fn answer<T, H>(c: &Connection, subscription: Subscription, handler: H) -> RunningRouter
where
    H: msg_core::Handler<T, ()>,
{
    Router::new(c.clone(), c.clone())
        .shutdown_timeout(Duration::from_secs(1))
        .handle_with(subscription, HandlerOptions::default().reply(), handler)
        .start()
        .await
        .expect("start the responder")
}

/// Starts a route over `subscription` that answers each request with its
/// own payload.
pub async fn echo_responder(c: &Connection, subscription: Subscription) -> RunningRouter {
    answer(c, subscription, echo).await
}

async fn echo(m: Received) -> Result<Message, HandlerError> {
    Ok(Message::new(m.payload().clone()))
}

/// Sends `chunks` times 1,000 requests at once to `topic`, and checks
/// that each reply echoes its own request and that none came late.
pub async fn request_echoes(requester: &Requester, topic: &str, chunks: usize, timeout: Duration) {
    for chunk in 0..chunks {
        join_all((0..1_000).map(|i| async move {
            let body = format!("{chunk}-{i}");
            let reply = requester
                .request(topic, Message::new(body.clone()), timeout)
                .await
                .unwrap_or_else(|e| panic!("request {body}: {}", e.chain()));
            assert_eq!(
                reply.payload().as_ref(),
                body.as_bytes(),
                "another request's reply"
            );
        }))
        .await;
    }
    assert_eq!(requester.late_replies(), 0);
    assert_eq!(requester.in_flight(), 0);
}

/// 1,000 requests in flight at once each get their own reply, with the
/// request's correlation id; none is left waiting or counted late.
pub async fn request_reply_roundtrip(h: &Harness) {
    let topic = h.topic("request");
    let c = h.connect().await;
    let router = responder(
        &c,
        &topic,
        Some(h.group("answer")),
        |Json(n): Json<u64>| async move { Ok::<_, HandlerError>(Json(n * 2)) },
    )
    .await;
    let requester = c.requester().await.expect("open the reply inbox");
    let timeout = h.timeout() * 3;
    let answers = join_all((0..1_000u64).map(|n| {
        let requester = requester.clone();
        let topic = topic.clone();
        async move {
            let request = Message::new(n.to_string()).with_content_type("application/json");
            let id = request.id();
            let reply = requester
                .request(&topic, request, timeout)
                .await
                .unwrap_or_else(|e| panic!("request {n}: {}", e.chain()));
            assert_eq!(
                reply.header(headers::CORRELATION_ID),
                Some(id.to_string().as_str()),
                "the reply carries the request's correlation id"
            );
            let doubled: u64 = serde_json::from_slice(reply.payload()).expect("a JSON reply");
            (n, doubled)
        }
    }))
    .await;
    for (n, doubled) in answers {
        assert_eq!(doubled, n * 2, "request {n} got another request's reply");
    }
    let typed: u64 = c
        .request_json(&topic, &21u64, timeout)
        .await
        .expect("request_json");
    assert_eq!(typed, 42);
    assert_eq!(requester.in_flight(), 0);
    assert_eq!(requester.late_replies(), 0);
    router.shutdown().await;
    c.close().await.expect("close");
}

/// A handler's error comes back as an error reply, at once (not a
/// timeout), saying whether trying again may help.
pub async fn request_error_reply(h: &Harness) {
    let topic = h.topic("request-error");
    let c = h.connect().await;
    let router = responder(
        &c,
        &topic,
        Some(h.group("answer")),
        |m: Received| async move {
            match m.payload().as_ref() {
                b"bad" => Err(HandlerError::dead_letter("no such price list")),
                _ => Err::<(), _>(HandlerError::retry("the database is busy")),
            }
        },
    )
    .await;
    let timeout = h.timeout() * 3;
    let started = Instant::now();
    let permanent = c.request(&topic, Message::new("bad"), timeout).await;
    match permanent {
        Err(Error::HandlerFailed {
            topic: t,
            reason,
            retryable: false,
        }) => {
            assert_eq!(t, topic);
            assert!(reason.contains("no such price list"), "{reason}");
        }
        other => panic!("expected a permanent HandlerFailed, got {other:?}"),
    }
    let transient = c.request(&topic, Message::new("busy"), timeout).await;
    assert!(
        matches!(transient, Err(Error::HandlerFailed { retryable: true, ref reason, .. }) if reason.contains("busy")),
        "expected a retryable HandlerFailed, got {transient:?}"
    );
    assert!(
        started.elapsed() < timeout,
        "error replies came at once, not at the timeout"
    );
    router.shutdown().await;
    c.close().await.expect("close");
}

/// With nobody answering, a request fails with a timeout that names the
/// topic, after the timeout and not much later.
pub async fn request_times_out_without_handler(h: &Harness) {
    let topic = h.topic("request-timeout");
    let c = h.connect().await;
    let timeout = Duration::from_millis(500);
    let started = Instant::now();
    let result = c.request(&topic, Message::new("anyone?"), timeout).await;
    let waited = started.elapsed();
    match result {
        Err(e @ Error::Timeout { .. }) => {
            assert!(e.is_retryable());
            assert!(e.to_string().contains(&topic), "{e}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(waited >= timeout, "gave up after {waited:?}");
    assert_eq!(c.requester().await.expect("requester").in_flight(), 0);
    c.close().await.expect("close");
}

/// A reply that comes after its request timed out is dropped and counted,
/// and never taken for the reply of a later request.
pub async fn late_reply_is_dropped_and_counted(h: &Harness) {
    let topic = h.topic("request-late");
    let c = h.connect().await;
    let router = responder(
        &c,
        &topic,
        Some(h.group("answer")),
        |m: Received| async move {
            if m.payload().as_ref() == b"slow" {
                tokio::time::sleep(Duration::from_millis(1_500)).await;
            }
            Ok::<_, HandlerError>(Message::new(m.payload().clone()))
        },
    )
    .await;
    let requester = c.requester().await.expect("requester").clone();
    // The first request may wait for the responder to join its group.
    let warm = requester
        .request(&topic, Message::new("warm"), h.timeout() * 3)
        .await
        .expect("a first request");
    assert_eq!(warm.payload().as_ref(), b"warm");
    let slow = requester
        .request(&topic, Message::new("slow"), Duration::from_millis(300))
        .await;
    assert!(matches!(slow, Err(Error::Timeout { .. })), "{slow:?}");
    let deadline = Instant::now() + h.timeout();
    while requester.late_replies() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(requester.late_replies(), 1, "the late reply was counted");
    let next = requester
        .request(&topic, Message::new("next"), h.timeout())
        .await
        .expect("the next request");
    assert_eq!(next.payload().as_ref(), b"next");
    assert_eq!(requester.late_replies(), 1);
    router.shutdown().await;
    c.close().await.expect("close");
}

/// Dropping a request's future withdraws it: nothing stays in flight.
pub async fn dropped_request_is_withdrawn(h: &Harness) {
    let topic = h.topic("request-dropped");
    let c = h.connect().await;
    let requester = c.requester().await.expect("requester").clone();
    let request = requester.request(&topic, Message::new("never mind"), h.timeout());
    let abandoned = tokio::time::timeout(Duration::from_millis(200), request).await;
    assert!(
        abandoned.is_err(),
        "nobody answers, so the request was still waiting"
    );
    assert_eq!(requester.in_flight(), 0);
    c.close().await.expect("close");
}

/// Scatter-gather: every broadcast subscriber's reply is collected until
/// the deadline.
pub async fn request_all_gathers_every_reply(h: &Harness) {
    let topic = h.topic("request-all");
    let c = h.connect().await;
    let mut routers = Vec::new();
    for name in ["north", "south", "east"] {
        routers.push(
            responder(&c, &topic, None, move |_: Received| async move {
                Ok::<_, HandlerError>(Message::new(name))
            })
            .await,
        );
    }
    let requester = c.requester().await.expect("requester").clone();
    let names = |replies: Vec<msg_core::Result<Received>>| {
        let mut names: Vec<String> = replies
            .into_iter()
            .map(|r| String::from_utf8(r.expect("a reply").payload().to_vec()).expect("utf-8"))
            .collect();
        names.sort();
        names
    };
    // The first gathering returns once all three answered (they may take
    // a while to join: they read from the start, so none misses it).
    let replies = requester
        .request_some(&topic, Message::new("who is there?"), 3, h.timeout() * 3)
        .await
        .expect("request_some");
    assert_eq!(names(replies), ["east", "north", "south"]);
    // request_all waits for the whole deadline, and gathers every reply.
    let deadline = Duration::from_secs(2);
    let started = Instant::now();
    let replies = requester
        .request_all(&topic, Message::new("still there?"), deadline)
        .await
        .expect("request_all");
    assert!(started.elapsed() >= deadline);
    assert_eq!(names(replies), ["east", "north", "south"]);
    for router in routers {
        router.shutdown().await;
    }
    c.close().await.expect("close");
}

/// A message without a reply address, sent to a route that answers
/// requests, is dead-lettered with the reason, and the handler never runs.
pub async fn request_without_reply_address_is_dead_lettered(h: &Harness) {
    let topic = h.topic("request-noreply");
    let c = h.connect().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let mut dead = c
        .subscribe(
            Subscription::new(msg_core::dead_letter_topic(&topic)).start(StartPosition::Earliest),
        )
        .await
        .expect("subscribe to the dead letters");
    let router = responder(&c, &topic, Some(h.group("answer")), move |_: Received| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, HandlerError>(Message::new("answer")) }
    })
    .await;
    c.publish(&topic, Message::new("fire and forget"))
        .await
        .expect("publish");
    let mut letter = recv(&mut dead, h.timeout() * 2)
        .await
        .expect("the message was dead-lettered");
    let reason = letter
        .message()
        .header(headers::DEAD_LETTER_REASON)
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("no reply address"), "{reason}");
    letter.ack().await.expect("ack");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the handler did not run");
    router.shutdown().await;
    c.close().await.expect("close");
}

/// After the connection closes, its requests fail with `Closed`.
pub async fn request_after_close_fails(h: &Harness) {
    let topic = h.topic("request-closed");
    let c = h.connect().await;
    let requester = c.requester().await.expect("requester").clone();
    c.close().await.expect("close");
    let result = requester
        .request(&topic, Message::new("too late"), h.timeout())
        .await;
    assert!(matches!(result, Err(Error::Closed)), "{result:?}");
}

/// A requester goes on after its broker restarts: requests in flight
/// during the restart get a reply or a retryable error, and requests sent
/// after it get their replies.
pub async fn requester_survives_restart(h: &Harness) {
    const CASE: &str = "requester_survives_restart";
    let topic = h.topic("request-restart");
    let c = h.connect().await;
    let router = responder(&c, &topic, Some(h.group("answer")), echo).await;
    let requester = c.requester().await.expect("requester").clone();
    requester
        .request(&topic, Message::new("before"), h.timeout() * 3)
        .await
        .expect("a request before the restart");
    let in_flight: Vec<_> = (0..20)
        .map(|i| {
            let (requester, topic) = (requester.clone(), topic.clone());
            tokio::spawn(async move {
                requester
                    .request(
                        &topic,
                        Message::new(format!("during {i}")),
                        Duration::from_secs(5),
                    )
                    .await
            })
        })
        .collect();
    match h.restart().await {
        None => {
            router.shutdown().await;
            return h.skip(CASE, "the harness has no restart command");
        }
        Some(Err(e)) => panic!("restart failed: {}", e.chain()),
        Some(Ok(())) => {}
    }
    for request in in_flight {
        if let Err(e) = request.await.expect("request task") {
            assert!(
                e.is_retryable(),
                "an in-flight request failed for good: {}",
                e.chain()
            );
        }
    }
    // After the restart, requests are answered again (the first ones may
    // fail while the clients reconnect).
    let deadline = Instant::now() + h.timeout() * 6;
    let mut answered = 0;
    while answered < 10 {
        let request = Message::new(format!("after {answered}"));
        match requester
            .request(&topic, request, Duration::from_secs(2))
            .await
        {
            Ok(reply) => {
                assert_eq!(
                    reply.payload().as_ref(),
                    format!("after {answered}").as_bytes()
                );
                answered += 1;
            }
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no reply after the restart: {}", e.chain()),
        }
    }
    router.shutdown().await;
    c.close().await.expect("close");
}
