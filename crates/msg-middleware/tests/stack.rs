//! A production-like stack through the router on the memory transport.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use msg_core::{HandlerError, Message, Metadata, Publisher, Router, State, Subscription, headers};
use msg_memory::{MemoryBroker, MemoryConfig};
use msg_middleware::{RetryLayer, TimeoutLayer};

/// What the handler saw.
#[derive(Clone)]
struct Seen {
    attempts: Arc<Mutex<Vec<u32>>>,
    calls: Arc<AtomicU32>,
}

/// Runs a handler that always fails under `retry` and the transport's
/// default max deliveries (10), and returns the attempts the handler saw
/// and the dead letter.
async fn always_failing(retry: RetryLayer) -> (Vec<u32>, Message) {
    let b = MemoryBroker::with_config(MemoryConfig::default().retention(10)).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicU32::new(0));
    let router = Router::new(b.clone(), b.clone())
        .with_state(Seen {
            attempts: seen.clone(),
            calls: calls.clone(),
        })
        .handle(
            Subscription::new("orders").group("svc"),
            |State(Seen { attempts, calls }): State<Seen>, meta: Metadata| async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                attempts.lock().unwrap().push(meta.attempt);
                if n == 2 {
                    // One attempt hangs: the timeout turns it into a failure.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                Err::<(), _>(HandlerError::retry(format!("cannot process, call {n}")))
            },
        )
        // The order of the layers' calls does not matter for which
        // handlers they wrap: the last one added is the outermost.
        .layer(TimeoutLayer::new(Duration::from_millis(200)))
        .layer(retry)
        .start()
        .await
        .unwrap();
    b.publish(
        "orders",
        Message::new("poison").with_header(headers::CORRELATION_ID, "conv-9"),
    )
    .await
    .unwrap();
    b.wait_for("orders", |s| s.dead_lettered == 1, Duration::from_secs(10))
        .await
        .unwrap();
    // Nothing more comes: a late call would show in `seen`.
    tokio::time::sleep(Duration::from_millis(100)).await;
    router.shutdown().await;
    let dead = b.published("orders.dlq");
    assert_eq!(dead.len(), 1);
    let seen = seen.lock().unwrap().clone();
    (seen, dead[0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_attempts_in_process_mean_three_calls_then_a_dead_letter() {
    let (seen, dead) = always_failing(
        RetryLayer::in_process()
            .max_attempts(3)
            .min_delay(Duration::from_millis(5)),
    )
    .await;
    assert_eq!(seen, [1, 2, 3], "the handler reads its attempt");
    assert_eq!(
        dead.header(headers::DEAD_LETTER_REASON),
        Some("gave up after 3 attempts: cannot process, call 3")
    );
    assert_eq!(
        dead.header(headers::ATTEMPTS),
        Some("3"),
        "the dead letter counts calls, not the one delivery"
    );
    assert_eq!(dead.header(headers::CORRELATION_ID), Some("conv-9"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_attempts_via_the_broker_mean_three_calls_then_a_dead_letter() {
    let (seen, dead) = always_failing(
        RetryLayer::via_broker()
            .max_attempts(3)
            .min_delay(Duration::from_millis(5)),
    )
    .await;
    assert_eq!(seen, [1, 2, 3]);
    assert_eq!(
        dead.header(headers::DEAD_LETTER_REASON),
        Some("gave up after 3 attempts: cannot process, call 3")
    );
    assert_eq!(dead.header(headers::ATTEMPTS), Some("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_that_need_no_message_wrap_batch_handlers() {
    use msg_core::{BatchOptions, Received};
    use msg_middleware::{CircuitBreakerLayer, RateLimitLayer};
    let b = MemoryBroker::new();
    let calls = Arc::new(AtomicU32::new(0));
    let router = Router::new(b.clone(), b.clone())
        .with_state(calls.clone())
        .handle_batch(
            Subscription::new("orders").group("svc"),
            BatchOptions::new(3, Duration::from_millis(20)),
            |State(calls): State<Arc<AtomicU32>>, _batch: Vec<Received>| async move {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    // The first call hangs: the timeout fails the batch.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                Ok(())
            },
        )
        .batch_layer(TimeoutLayer::new(Duration::from_millis(100)))
        .batch_layer(CircuitBreakerLayer::new())
        .batch_layer(RateLimitLayer::new(1_000.0, 10))
        .start()
        .await
        .unwrap();
    for i in 0..3 {
        b.publish("orders", Message::new(format!("o-{i}")))
            .await
            .unwrap();
    }
    let stats = b
        .wait_for("orders", |s| s.acked == 3, Duration::from_secs(10))
        .await
        .unwrap();
    router.shutdown().await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "timed out once, then handled"
    );
    assert!(
        stats.nacked >= 3,
        "the timed-out batch was retried: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_retried_whole_and_then_dead_lettered_message_by_message() {
    use msg_core::{BatchOptions, Received};
    let b = MemoryBroker::with_config(MemoryConfig::default().retention(10)).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let router = Router::new(b.clone(), b.clone())
        .with_state(seen.clone())
        .handle_batch(
            Subscription::new("orders").group("svc"),
            // Three messages make the batch; the wait only bounds a short one.
            BatchOptions::new(3, Duration::from_secs(1)),
            |State(seen): State<Arc<Mutex<Vec<Vec<u32>>>>>, batch: Vec<Received>| async move {
                seen.lock()
                    .unwrap()
                    .push(batch.iter().map(|r| r.attempt()).collect());
                Err::<(), _>(HandlerError::retry("downstream is down"))
            },
        )
        .batch_layer(
            RetryLayer::in_process()
                .max_attempts(3)
                .min_delay(Duration::from_millis(5)),
        )
        .start()
        .await
        .unwrap();
    for i in 0..3 {
        b.publish("orders", Message::new(format!("o-{i}")))
            .await
            .unwrap();
    }
    b.wait_for("orders", |s| s.dead_lettered == 3, Duration::from_secs(10))
        .await
        .unwrap();
    router.shutdown().await;
    assert_eq!(
        *seen.lock().unwrap(),
        [vec![1, 1, 1], vec![2, 2, 2], vec![3, 3, 3]],
        "one delivery, three calls of the whole batch"
    );
    let dead = b.published("orders.dlq");
    assert_eq!(dead.len(), 3);
    for message in &dead {
        assert_eq!(message.header(headers::ATTEMPTS), Some("3"));
        assert!(
            message
                .header(headers::DEAD_LETTER_REASON)
                .is_some_and(|r| r.starts_with("gave up after 3 attempts")),
            "{:?}",
            message.header(headers::DEAD_LETTER_REASON)
        );
    }
}
