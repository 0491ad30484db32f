//! A layer that passes a message straight through allocates nothing per
//! message: counted with a counting allocator (dhat), not timed.

use std::time::Duration;

use msg_core::{Bytes, HandlerError, Message, Metadata, Received, headers, service};
use msg_middleware::{CircuitBreakerLayer, Metrics, RetryLayer, TimeoutLayer, TracingLayer};
use tower::{Layer, Service, ServiceExt};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const CALLS: usize = 1_000;

fn messages() -> Vec<Received> {
    (0..CALLS + 100)
        .map(|_| Received {
            message: Message::new(Bytes::from_static(&[0; 256]))
                .with_header(headers::CORRELATION_ID, "conv-1"),
            metadata: Metadata::new("orders").with_group(Some("billing".into())),
        })
        .collect()
}

/// A handler that allocates nothing.
fn handler(_: Received) -> std::future::Ready<Result<(), HandlerError>> {
    std::future::ready(Ok(()))
}

/// Allocations per message of `layer` around `handler`, after a warm-up.
async fn per_message<L, H>(layer: L, handler: H) -> f64
where
    L: Layer<H>,
    L::Service: Service<Received>,
    <L::Service as Service<Received>>::Error: std::fmt::Debug,
{
    let mut stack = layer.layer(handler);
    let mut messages = messages().into_iter();
    for received in messages.by_ref().take(100) {
        stack.ready().await.unwrap().call(received).await.unwrap();
    }
    let before = dhat::HeapStats::get().total_blocks;
    for received in messages {
        stack.ready().await.unwrap().call(received).await.unwrap();
    }
    let after = dhat::HeapStats::get().total_blocks;
    (after - before) as f64 / CALLS as f64
}

#[test]
fn layers_that_pass_a_message_through_allocate_nothing() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    let h = || service(handler as fn(Received) -> _);
    rt.block_on(async {
        let results = [
            (
                "tracing (no subscriber)",
                per_message(TracingLayer::new(), h()).await,
            ),
            ("metrics", per_message(metrics.layer("bill"), h()).await),
            (
                "timeout",
                per_message(TimeoutLayer::new(Duration::from_secs(5)), h()).await,
            ),
            (
                "retry in process",
                per_message(RetryLayer::in_process(), h()).await,
            ),
            (
                "retry via the broker",
                per_message(RetryLayer::via_broker(), h()).await,
            ),
            (
                "circuit breaker (closed)",
                per_message(CircuitBreakerLayer::new(), h()).await,
            ),
        ];
        let allocating: Vec<_> = results.iter().filter(|(_, n)| *n > 0.0).collect();
        assert!(
            allocating.is_empty(),
            "allocations per message: {allocating:?}"
        );
    });
}
