//! The router over the in-process broker.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use msg_core::{
    BatchOptions, BoxError, Handler, HandlerError, HandlerOptions, Json, Message, Outgoing,
    Publisher, PublisherExt, Received, Router, Routes, Subscriber, Subscription, headers,
};
use msg_memory::{MemoryBroker, MemoryConfig};

const WAIT: Duration = Duration::from_secs(10);

fn broker() -> MemoryBroker {
    MemoryBroker::with_config(
        MemoryConfig::default()
            .retention(1_000)
            .max_deliveries(Some(5)),
    )
    .unwrap()
}

fn ok() -> Result<(), HandlerError> {
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_output_is_published_before_the_input_is_acked() {
    /// Publishes through the broker, noting how many orders were acked
    /// when each message went out.
    struct Watching {
        broker: MemoryBroker,
        acked_when_published: Arc<Mutex<Vec<u64>>>,
    }
    impl Publisher for Watching {
        async fn publish_with(
            &self,
            topic: &str,
            message: Message,
            options: msg_core::PublishOptions,
        ) -> msg_core::Result<msg_core::Receipt> {
            let acked = self.broker.stats("orders").acked;
            self.acked_when_published.lock().unwrap().push(acked);
            self.broker.publish_with(topic, message, options).await
        }
        async fn flush(&self) -> msg_core::Result<()> {
            Ok(())
        }
        async fn close(&self) -> msg_core::Result<()> {
            Ok(())
        }
        fn capabilities(&self) -> msg_core::Capabilities {
            Publisher::capabilities(&self.broker)
        }
    }
    let b = broker();
    let acked_when_published = Arc::new(Mutex::new(Vec::new()));
    let publisher = Watching {
        broker: b.clone(),
        acked_when_published: acked_when_published.clone(),
    };
    let router = Router::new(b.clone(), publisher)
        .handle(
            Subscription::new("orders").group("svc"),
            |r: Received| async move {
                Ok(Outgoing::none().with("invoices", Message::new(r.payload().clone())))
            },
        )
        .start()
        .await
        .unwrap();
    b.publish("orders", Message::new("o-1")).await.unwrap();
    b.wait_for("orders", |s| s.acked == 1, WAIT).await.unwrap();
    router.shutdown().await;
    assert_eq!(
        *acked_when_published.lock().unwrap(),
        [0],
        "the invoice went out before the order was acked"
    );
    assert_eq!(&b.published("invoices")[0].payload()[..], b"o-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_payload_is_dead_lettered_with_the_reason() {
    #[derive(serde::Deserialize)]
    struct Order {
        #[allow(dead_code)]
        id: u64,
    }
    let b = broker();
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let router = Router::new(b.clone(), b.clone())
        .handle(
            Subscription::new("orders").group("svc"),
            move |Json(_o): Json<Order>| {
                let h = h.clone();
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    ok()
                }
            },
        )
        .start()
        .await
        .unwrap();
    b.publish("orders", Message::new("{not json"))
        .await
        .unwrap();
    b.publish_json("orders", &serde_json::json!({"id": 1}))
        .await
        .unwrap();
    b.wait_for("orders.dlq", |s| s.published == 1, WAIT)
        .await
        .unwrap();
    b.wait_for("orders", |s| s.acked == 1, WAIT).await.unwrap();
    router.shutdown().await;
    let dead = b.published("orders.dlq");
    let reason = dead[0].header(headers::DEAD_LETTER_REASON).unwrap();
    assert!(reason.starts_with("decode failed"), "{reason}");
    assert_eq!(&dead[0].payload()[..], b"{not json");
    assert_eq!(
        handled.load(Ordering::SeqCst),
        1,
        "only the valid payload reaches the handler"
    );
    assert_eq!(
        b.stats("orders").nacked,
        0,
        "a permanent error is never retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_that_can_never_be_published_dead_letters_the_input() {
    let b = broker();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let router = Router::new(b.clone(), b.clone())
        .handle(
            Subscription::new("orders").group("svc"),
            move |_r: Received| {
                c.fetch_add(1, Ordering::SeqCst);
                async move { Ok(Outgoing::none().with("not a topic", Message::new("x"))) }
            },
        )
        .start()
        .await
        .unwrap();
    b.publish("orders", Message::new("o-1")).await.unwrap();
    b.wait_for("orders.dlq", |s| s.published == 1, WAIT)
        .await
        .unwrap();
    router.shutdown().await;
    let dead = b.published("orders.dlq");
    let reason = dead[0].header(headers::DEAD_LETTER_REASON).unwrap();
    assert!(
        reason.contains("\"not a topic\"") && reason.contains("invalid topic"),
        "{reason}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "never retried");
    assert_eq!(b.stats("orders").nacked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispositions_map_to_nack_defer_and_reject() {
    let b = broker();
    let attempts: Arc<Mutex<HashMap<String, Vec<u32>>>> = Default::default();
    let a = attempts.clone();
    let router = Router::new(b.clone(), b.clone())
        .handle(
            Subscription::new("jobs").group("svc"),
            move |r: Received| {
                let a = a.clone();
                async move {
                    let kind = String::from_utf8(r.payload().to_vec()).unwrap();
                    a.lock()
                        .unwrap()
                        .entry(kind.clone())
                        .or_default()
                        .push(r.attempt());
                    match (kind.as_str(), r.attempt()) {
                        ("retry", 1) => Err(HandlerError::retry("transient")),
                        ("later", 1) => Err(HandlerError::retry_after(
                            "busy",
                            Duration::from_millis(200),
                        )),
                        ("poison", _) => Err(HandlerError::dead_letter("cannot ever work")),
                        _ => Ok(()),
                    }
                }
            },
        )
        .start()
        .await
        .unwrap();
    for kind in ["retry", "later", "poison"] {
        b.publish("jobs", Message::new(kind)).await.unwrap();
    }
    b.wait_for("jobs", |s| s.acked == 2 && s.dead_lettered == 1, WAIT)
        .await
        .unwrap();
    router.shutdown().await;
    let stats = b.stats("jobs");
    assert_eq!((stats.nacked, stats.deferred), (1, 1));
    let attempts = attempts.lock().unwrap();
    assert_eq!(attempts["retry"], vec![1, 2]);
    assert_eq!(attempts["later"], vec![1, 2]);
    assert_eq!(attempts["poison"], vec![1]);
    let dead = b.published("jobs.dlq");
    assert_eq!(
        dead[0].header(headers::DEAD_LETTER_REASON),
        Some("cannot ever work")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_does_not_stop_the_loop() {
    // A panic in the call itself, in the future's first poll, and in a
    // later poll (the router polls the first in place, the others in its
    // in-flight set): each is a retry, and the loop goes on.
    let b = broker();
    let router = Router::new(b.clone(), b.clone())
        .handle(Subscription::new("p").group("svc"), |r: Received| {
            let first = r.attempt() == 1;
            let payload = r.payload().clone();
            assert!(!(first && payload.as_ref() == b"in call"), "handler bug");
            async move {
                if first && payload.as_ref() == b"at once" {
                    panic!("handler bug");
                }
                if first && payload.as_ref() == b"later" {
                    tokio::task::yield_now().await;
                    panic!("handler bug");
                }
                ok()
            }
        })
        .start()
        .await
        .unwrap();
    for payload in ["in call", "at once", "later", "fine"] {
        b.publish("p", Message::new(payload)).await.unwrap();
    }
    let stats = b.wait_for("p", |s| s.acked == 4, WAIT).await.unwrap();
    router.shutdown().await;
    assert_eq!(stats.nacked, 3, "each panic was a retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_bounded_and_keys_are_never_concurrent() {
    let b = broker();
    let active_keys: Arc<Mutex<HashSet<String>>> = Default::default();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let order: Arc<Mutex<HashMap<String, Vec<usize>>>> = Default::default();
    let (ak, inf, pk, ord) = (
        active_keys.clone(),
        in_flight.clone(),
        peak.clone(),
        order.clone(),
    );
    let router = Router::new(b.clone(), b.clone())
        .handle_with(
            Subscription::new("keyed").group("svc"),
            HandlerOptions::default().concurrency(4).ordered_by_key(),
            move |r: Received| {
                let (ak, inf, pk, ord) = (ak.clone(), inf.clone(), pk.clone(), ord.clone());
                async move {
                    let key = r.key().unwrap().to_owned();
                    assert!(
                        ak.lock().unwrap().insert(key.clone()),
                        "key {key} ran concurrently"
                    );
                    let now = inf.fetch_add(1, Ordering::SeqCst) + 1;
                    pk.fetch_max(now, Ordering::SeqCst);
                    let seq: usize = r.header("seq").unwrap().parse().unwrap();
                    // Later messages are faster: without per-key order they would overtake.
                    tokio::time::sleep(Duration::from_millis(((40 - seq) % 7) as u64)).await;
                    ord.lock()
                        .unwrap()
                        .entry(key.clone())
                        .or_default()
                        .push(seq);
                    inf.fetch_sub(1, Ordering::SeqCst);
                    ak.lock().unwrap().remove(&key);
                    ok()
                }
            },
        )
        .start()
        .await
        .unwrap();
    for i in 0..40usize {
        let m = Message::new("x")
            .with_key(format!("k{}", i % 5))
            .with_header("seq", i.to_string());
        b.publish("keyed", m).await.unwrap();
    }
    b.wait_for("keyed", |s| s.acked == 40, WAIT).await.unwrap();
    router.shutdown().await;
    assert!(
        peak.load(Ordering::SeqCst) <= 4,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
    assert!(peak.load(Ordering::SeqCst) > 1, "no concurrency at all");
    for (key, seqs) in order.lock().unwrap().iter() {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{key}: {seqs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_flush_on_size_and_on_time() {
    let b = broker();
    let sizes: Arc<Mutex<Vec<usize>>> = Default::default();
    let s = sizes.clone();
    let batch_handler = move |batch: Vec<Received>| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(batch.len());
            Ok(())
        }
    };
    let router = Router::new(b.clone(), b.clone())
        .handle_batch(
            Subscription::new("b").group("svc"),
            BatchOptions::new(10, Duration::from_millis(150)),
            batch_handler,
        )
        .start()
        .await
        .unwrap();
    b.publish_batch("b", (0..23).map(|i| Message::new(format!("{i}"))).collect())
        .await
        .unwrap();
    b.wait_for("b", |s| s.acked == 23, WAIT).await.unwrap();
    router.shutdown().await;
    let sizes = sizes.lock().unwrap();
    assert_eq!(sizes.iter().sum::<usize>(), 23);
    assert!(sizes.iter().all(|n| *n <= 10), "{sizes:?}");
    assert!(sizes.contains(&10), "no batch flushed on size: {sizes:?}");
    assert_eq!(
        *sizes.last().unwrap(),
        3,
        "the rest flushed on time: {sizes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_dispatch_exact_then_pattern_then_fallback() {
    let b = broker();
    let seen: Arc<Mutex<Vec<(String, &'static str)>>> = Default::default();
    let record = |name: &'static str| {
        let seen = seen.clone();
        move |r: Received| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push((r.topic().to_owned(), name));
                ok()
            }
        }
    };
    let routes = Routes::new()
        .route("orders.created", record("exact"))
        .route("orders.*", record("pattern"))
        .fallback(record("fallback"));
    let no_fallback = Routes::new().route("audit.kept", record("audit"));
    let router = Router::new(b.clone(), b.clone())
        .handle(Subscription::new("orders.>").group("svc"), routes)
        .handle(Subscription::new("audit.*").group("svc"), no_fallback)
        .start()
        .await
        .unwrap();
    for t in [
        "orders.created",
        "orders.paid",
        "orders.eu.created",
        "audit.kept",
        "audit.other",
    ] {
        b.publish(t, Message::new("x")).await.unwrap();
    }
    b.wait_for("audit.other.dlq", |s| s.published == 1, WAIT)
        .await
        .unwrap();
    b.wait_for("orders.eu.created", |s| s.acked == 1, WAIT)
        .await
        .unwrap();
    router.shutdown().await;
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("audit.kept".to_owned(), "audit"),
            ("orders.created".to_owned(), "exact"),
            ("orders.eu.created".to_owned(), "fallback"),
            ("orders.paid".to_owned(), "pattern"),
        ]
    );
    let reason = b.published("audit.other.dlq")[0]
        .header(headers::DEAD_LETTER_REASON)
        .unwrap()
        .to_owned();
    assert!(reason.contains("no route"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_layers_stack_and_a_timeout_retries() {
    let b = broker();
    let router = Router::new(b.clone(), b.clone())
        .handle(
            Subscription::new("slow").group("svc"),
            tower::ServiceBuilder::new()
                .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(50)))
                .layer(tower::limit::ConcurrencyLimitLayer::new(1))
                .service(
                    (|r: Received| async move {
                        if r.attempt() == 1 {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                        ok()
                    })
                    .with_state(()),
                ),
        )
        .start()
        .await
        .unwrap();
    b.publish("slow", Message::new("x")).await.unwrap();
    let stats = b.wait_for("slow", |s| s.acked == 1, WAIT).await.unwrap();
    router.shutdown().await;
    assert_eq!(stats.nacked, 1, "the timed-out attempt was retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_layer_wraps_every_handler() {
    let b = broker();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let counting = tower::layer::layer_fn(move |inner: msg_core::BoxHandler| {
        let c = c.clone();
        tower::util::MapRequest::new(inner, move |r: Received| {
            c.fetch_add(1, Ordering::SeqCst);
            r
        })
    });
    let router = Router::new(b.clone(), b.clone())
        .handle(Subscription::new("a").group("g"), |_r: Received| async {
            ok()
        })
        .handle(Subscription::new("b").group("g"), |_r: Received| async {
            ok()
        })
        .layer(counting)
        .start()
        .await
        .unwrap();
    b.publish("a", Message::new("1")).await.unwrap();
    b.publish("b", Message::new("2")).await.unwrap();
    b.wait_for("b", |s| s.acked == 1, WAIT).await.unwrap();
    b.wait_for("a", |s| s.acked == 1, WAIT).await.unwrap();
    router.shutdown().await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_finish_then_nacks_past_the_deadline() {
    let b = broker();
    let finished = Arc::new(AtomicUsize::new(0));
    let f = finished.clone();
    let router = Router::new(b.clone(), b.clone())
        .handle(
            Subscription::new("work").group("svc"),
            move |r: Received| {
                let f = f.clone();
                async move {
                    let ms = if r.payload().as_ref() == b"short" {
                        100
                    } else {
                        10_000
                    };
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    f.fetch_add(1, Ordering::SeqCst);
                    ok()
                }
            },
        )
        .shutdown_timeout(Duration::from_millis(500))
        .start()
        .await
        .unwrap();
    b.publish("work", Message::new("short")).await.unwrap();
    b.publish("work", Message::new("long")).await.unwrap();
    b.wait_for("work", |s| s.delivered == 2, WAIT)
        .await
        .unwrap();
    router.shutdown().await;
    let stats = b.stats("work");
    assert_eq!(finished.load(Ordering::SeqCst), 1, "the short one finished");
    assert_eq!(stats.acked, 1);
    assert_eq!(stats.nacked, 1, "the long one was nacked at the deadline");
    // Nothing is lost: the nacked message waits for the next consumer of the group.
    let mut again = b
        .subscribe(Subscription::new("work").group("svc"))
        .await
        .unwrap();
    let d = tokio::time::timeout(WAIT, again.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&d.message().payload()[..], b"long");
    assert_eq!(d.metadata().attempt, 2);
}

#[tokio::test]
async fn start_fails_on_an_invalid_subscription_and_starts_nothing() {
    let b = broker();
    let err = Router::new(b.clone(), b.clone())
        .handle(Subscription::new("ok").group("g"), |_r: Received| async {
            ok()
        })
        .handle(Subscription::new("not valid"), |_r: Received| async {
            ok()
        })
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(err, msg_core::Error::InvalidTopic { .. }),
        "{err:?}"
    );
}

#[test]
#[should_panic(expected = "routed twice")]
fn routing_a_topic_twice_panics() {
    let h = || |_r: Received| async { ok() };
    let _ = Routes::new().route("a", h()).route("a", h());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_not_held_up_by_a_handler_that_never_gets_ready() {
    #[derive(Clone)]
    struct NeverReady;
    impl tower::Service<Received> for NeverReady {
        type Response = ();
        type Error = BoxError;
        type Future = std::future::Ready<Result<(), BoxError>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            std::task::Poll::Pending
        }
        fn call(&mut self, _: Received) -> Self::Future {
            std::future::ready(Ok(()))
        }
    }
    let b = broker();
    let router = Router::new(b.clone(), b.clone())
        .handle(Subscription::new("stuck").group("svc"), NeverReady)
        .shutdown_timeout(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    b.publish("stuck", Message::new("x")).await.unwrap();
    b.wait_for("stuck", |s| s.delivered == 1, WAIT)
        .await
        .unwrap();
    tokio::time::timeout(WAIT, router.shutdown())
        .await
        .expect("shutdown completed");
    let stats = b.wait_for("stuck", |s| s.nacked == 1, WAIT).await.unwrap();
    assert_eq!(stats.acked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_wrap_handlers_added_before_and_after_them_and_batch_handlers() {
    let b = broker();
    let single = Arc::new(AtomicUsize::new(0));
    let batched = Arc::new(AtomicUsize::new(0));
    let (s, t) = (single.clone(), batched.clone());
    let router = Router::new(b.clone(), b.clone())
        .layer(tower::util::MapRequestLayer::new(move |r: Received| {
            s.fetch_add(1, Ordering::SeqCst);
            r
        }))
        .batch_layer(tower::util::MapRequestLayer::new(
            move |batch: Vec<Received>| {
                t.fetch_add(batch.len(), Ordering::SeqCst);
                batch
            },
        ))
        .handle(
            Subscription::new("one").group("svc"),
            |_r: Received| async { ok() },
        )
        .handle_batch(
            Subscription::new("many").group("svc"),
            BatchOptions::new(10, Duration::from_millis(20)),
            |_batch: Vec<Received>| async { ok() },
        )
        .start()
        .await
        .unwrap();
    for _ in 0..3 {
        b.publish("one", Message::new("x")).await.unwrap();
        b.publish("many", Message::new("y")).await.unwrap();
    }
    b.wait_for("one", |s| s.acked == 3, Duration::from_secs(5))
        .await
        .unwrap();
    b.wait_for("many", |s| s.acked == 3, Duration::from_secs(5))
        .await
        .unwrap();
    router.shutdown().await;
    assert_eq!(single.load(Ordering::SeqCst), 3, "the layer came first");
    assert_eq!(batched.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_messages_carry_the_inputs_correlation_and_trace() {
    #[derive(serde::Serialize)]
    struct Invoice {
        order: u32,
    }
    let b = broker();
    let router = Router::new(b.clone(), b.clone())
        .handle(
            Subscription::new("orders").group("svc"),
            |Json(order): Json<serde_json::Value>| async move {
                let invoice = Invoice {
                    order: order["id"].as_u64().unwrap_or(0) as u32,
                };
                Ok(Outgoing::json("invoices", &invoice)?.with(
                    "audit",
                    Message::new("own").with_header(headers::CORRELATION_ID, "mine"),
                ))
            },
        )
        .start()
        .await
        .unwrap();
    b.publish(
        "orders",
        Message::new(r#"{"id":7}"#)
            .with_header(headers::CORRELATION_ID, "conv-1")
            .with_header(
                headers::TRACEPARENT,
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .with_header(headers::TRACESTATE, "vendor=1"),
    )
    .await
    .unwrap();
    b.wait_for("orders", |s| s.acked == 1, Duration::from_secs(5))
        .await
        .unwrap();
    router.shutdown().await;
    let invoice = &b.published("invoices")[0];
    assert_eq!(&invoice.payload()[..], br#"{"order":7}"#);
    assert_eq!(
        invoice.header(headers::CONTENT_TYPE),
        Some("application/json")
    );
    assert_eq!(invoice.header(headers::CORRELATION_ID), Some("conv-1"));
    assert_eq!(
        invoice.header(headers::TRACEPARENT),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(invoice.header(headers::TRACESTATE), Some("vendor=1"));
    let audit = &b.published("audit")[0];
    assert_eq!(
        audit.header(headers::CORRELATION_ID),
        Some("mine"),
        "its own wins"
    );
    assert_eq!(audit.header(headers::TRACESTATE), Some("vendor=1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_without_a_correlation_id_starts_one_conversation_across_redeliveries() {
    let b = broker();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (c, s) = (calls.clone(), seen.clone());
    let router = Router::new(b.clone(), b.clone())
        .handle(
            Subscription::new("orders").group("svc"),
            move |msg: Message| {
                let (c, s) = (c.clone(), s.clone());
                async move {
                    s.lock().unwrap().push(msg.correlation_id().into_owned());
                    // The first delivery publishes and then fails: the
                    // redelivery's message must join the same conversation.
                    let out = Outgoing::none().with("invoices", Message::new("invoice"));
                    if c.fetch_add(1, Ordering::SeqCst) == 0 {
                        return Err(HandlerError::retry("once"));
                    }
                    Ok(out)
                }
            },
        )
        .start()
        .await
        .unwrap();
    let order = Message::new("order");
    b.publish("orders", order.clone()).await.unwrap();
    b.wait_for("orders", |s| s.acked == 1, WAIT).await.unwrap();
    router.shutdown().await;
    let expected = order.id().to_string();
    assert_eq!(*seen.lock().unwrap(), [expected.clone(), expected.clone()]);
    let invoice = &b.published("invoices")[0];
    assert_eq!(
        invoice.header(headers::CORRELATION_ID),
        Some(expected.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_result_goes_to_the_routes_topic() {
    #[derive(serde::Deserialize)]
    struct Order {
        id: u64,
    }
    #[derive(serde::Serialize)]
    struct Invoice {
        order: u64,
    }
    async fn bill(Json(order): Json<Order>) -> Result<Json<Invoice>, HandlerError> {
        Ok(Json(Invoice { order: order.id }))
    }
    let b = broker();
    let router = Router::new(b.clone(), b.clone())
        .handle_with(
            Subscription::new("orders").group("billing"),
            HandlerOptions::default().publish_to("invoices"),
            bill,
        )
        // The same handler on a route that says nothing: a dead letter
        // that says why, not a loop.
        .handle(Subscription::new("orders").group("lost"), bill)
        .start()
        .await
        .unwrap();
    b.publish(
        "orders",
        Message::new(r#"{"id":7}"#).with_header(headers::CORRELATION_ID, "conv-7"),
    )
    .await
    .unwrap();
    b.wait_for("orders", |s| s.acked == 1 && s.dead_lettered == 1, WAIT)
        .await
        .unwrap();
    router.shutdown().await;
    let invoice = &b.published("invoices")[0];
    assert_eq!(&invoice.payload()[..], br#"{"order":7}"#);
    assert_eq!(
        invoice.header(headers::CONTENT_TYPE),
        Some("application/json")
    );
    assert_eq!(invoice.header(headers::CORRELATION_ID), Some("conv-7"));
    let dead = &b.published("orders.dlq")[0];
    assert!(
        dead.header(headers::DEAD_LETTER_REASON)
            .is_some_and(|r| r.contains("HandlerOptions::publish_to")),
        "{:?}",
        dead.header(headers::DEAD_LETTER_REASON)
    );
}

#[tokio::test]
async fn an_invalid_publish_to_topic_fails_start() {
    let b = broker();
    let err = Router::new(b.clone(), b.clone())
        .handle_with(
            Subscription::new("orders"),
            HandlerOptions::default().publish_to("not a topic"),
            |_r: Received| async { ok() },
        )
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, msg_core::Error::InvalidTopic { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returned_event_goes_to_the_routes_topic_as_a_structured_cloudevent() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Shipped {
        order: u64,
    }
    let b = broker();
    let router = Router::new(b.clone(), b.clone())
        .handle_with(
            Subscription::new("orders").group("shipping"),
            HandlerOptions::default().publish_to("shipments"),
            |Json(order): Json<serde_json::Value>| async move {
                let shipped = Shipped {
                    order: order["id"].as_u64().unwrap_or(0),
                };
                Ok(
                    msg_core::Event::new("/shipping", "com.example.shipped", shipped)
                        .with_id("ship-7"),
                )
            },
        )
        .start()
        .await
        .unwrap();
    b.publish("orders", Message::new(r#"{"id":7}"#))
        .await
        .unwrap();
    b.wait_for("orders", |s| s.acked == 1, WAIT).await.unwrap();
    router.shutdown().await;
    let sent = &b.published("shipments")[0];
    assert_eq!(
        sent.header(headers::CONTENT_TYPE),
        Some("application/cloudevents+json")
    );
    let event: msg_core::Event<Shipped> =
        msg_core::Event::from_message(sent, &msg_core::JsonCodec).unwrap();
    assert_eq!(event.id, "ship-7");
    assert_eq!(event.ty, "com.example.shipped");
    assert_eq!(event.data, Shipped { order: 7 });
}
