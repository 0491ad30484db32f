//! What a full middleware stack adds per message, around a no-op handler:
//! tracing + metrics + dedup + retry + timeout, called directly (no
//! broker), next to the bare handler. (Correlation ids need no layer: the
//! router carries them.) Goal: at most 0.5 µs added. No
//! tracing subscriber is installed, as in a service that exports no traces.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use msg_core::raw::box_handler;
use msg_core::{BoxHandler, Bytes, Message, Metadata, Received, service};
use msg_middleware::{
    DedupLayer, MemoryDedupStore, Metrics, RetryLayer, TimeoutLayer, TracingLayer,
};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

const BATCH: u64 = 10_000;

fn noop() -> BoxHandler {
    box_handler(service(|_r: Received| async { Ok(()) }))
}

fn stack() -> BoxHandler {
    let metrics = Metrics::new(&prometheus::Registry::new()).expect("metrics");
    box_handler(
        ServiceBuilder::new()
            .layer(TracingLayer::new())
            .layer(metrics.layer("bench"))
            .layer(DedupLayer::new(MemoryDedupStore::new(
                Duration::from_secs(60),
                100_000,
            )))
            .layer(RetryLayer::in_process())
            .layer(TimeoutLayer::new(Duration::from_secs(5)))
            .service(noop()),
    )
}

fn run(rt: &tokio::runtime::Runtime, mut handler: BoxHandler, iters: u64) -> Duration {
    rt.block_on(async {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            // Fresh ids each time, so that dedup records every message
            // rather than skipping it; a shared payload, as transports
            // hand out.
            let batch: Vec<Received> = (0..BATCH)
                .map(|_| Received {
                    message: Message::new(Bytes::from_static(&[0u8; 256])),
                    metadata: Metadata::new("orders").with_group(Some("billing".into())),
                })
                .collect();
            let started = Instant::now();
            for received in batch {
                handler.ready().await.expect("ready");
                handler.call(received).await.expect("handled");
            }
            total += started.elapsed();
        }
        total
    })
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("middleware");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("bare", |b| b.iter_custom(|iters| run(&rt, noop(), iters)));
    group.bench_function("full_stack", |b| {
        b.iter_custom(|iters| run(&rt, stack(), iters))
    });
    // Each layer alone, to see where the stack's time goes.
    let metrics = Metrics::new(&prometheus::Registry::new()).expect("metrics");
    let alone: [(&str, BoxHandler); 5] = [
        ("tracing", box_handler(TracingLayer::new().layer(noop()))),
        ("metrics", box_handler(metrics.layer("bench").layer(noop()))),
        (
            "dedup",
            box_handler(
                DedupLayer::new(MemoryDedupStore::new(Duration::from_secs(60), 100_000))
                    .layer(noop()),
            ),
        ),
        ("retry", box_handler(RetryLayer::in_process().layer(noop()))),
        (
            "timeout",
            box_handler(TimeoutLayer::new(Duration::from_secs(5)).layer(noop())),
        ),
    ];
    for (name, handler) in alone {
        group.bench_function(format!("only_{name}"), |b| {
            b.iter_custom(|iters| run(&rt, handler.clone(), iters))
        });
    }
    group.finish();
}

criterion_group!(stack_benches, benches);
criterion_main!(stack_benches);
