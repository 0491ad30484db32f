//! A production-like stack through the router on the memory transport.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use msg_core::{BoxError, Message, Publisher, Received, Router, Subscription, handler_fn, headers};
use msg_memory::{MemoryBroker, MemoryConfig};
use msg_middleware::{CorrelationIdLayer, DeadLetterLayer, RetryLayer, TimeoutLayer};
use tower::ServiceBuilder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_message_is_retried_in_process_then_dead_lettered_and_acked() {
    let b = MemoryBroker::with_config(MemoryConfig::default().retention(10)).unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let handler = ServiceBuilder::new()
        .layer(CorrelationIdLayer::new())
        .layer(DeadLetterLayer::new(b.clone()).after_attempts(1))
        .layer(
            RetryLayer::in_process()
                .max_attempts(3)
                .min_delay(Duration::from_millis(5)),
        )
        .layer(TimeoutLayer::new(Duration::from_millis(200)))
        .service(handler_fn(move |r: Received| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if r.payload().as_ref() == b"poison" {
                    if n == 2 {
                        // One attempt hangs: the timeout turns it into a retry.
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    return Err::<(), BoxError>(format!("cannot process, attempt {n}").into());
                }
                Ok(())
            }
        }));
    let router = Router::new(b.clone(), b.clone())
        .handle(Subscription::new("orders").group("svc"), handler)
        .start()
        .await
        .unwrap();
    b.publish(
        "orders",
        Message::new("poison").with_header(headers::CORRELATION_ID, "conv-9"),
    )
    .await
    .unwrap();
    let stats = b
        .wait_for("orders", |s| s.acked == 1, Duration::from_secs(10))
        .await
        .unwrap();
    router.shutdown().await;
    assert_eq!(calls.load(Ordering::SeqCst), 3, "three attempts in process");
    assert_eq!(
        (stats.nacked, stats.dead_lettered),
        (0, 0),
        "the broker saw one delivery, acked"
    );
    let dead = b.published("orders.dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].header(headers::DEAD_LETTER_REASON),
        Some("cannot process, attempt 3")
    );
    assert_eq!(dead[0].header(headers::CORRELATION_ID), Some("conv-9"));
}
