//! Throughput of the in-process broker, on one core (a current-thread
//! runtime), next to a raw `tokio::sync::mpsc` channel moving the same
//! messages, so the ratio can be read in one run.
//!
//! - `router`: publish → router → no-op handler → ack, 256-byte payloads.
//! - `stream`: publish → subscription stream → ack, without the router.
//! - `raw_mpsc`: the same messages through a bounded mpsc channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use msg_core::{Bytes, Message, Publisher, Received, Router, Subscriber, Subscription};
use msg_memory::{MemoryBroker, MemoryConfig};

const BATCH: u64 = 50_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

fn broker() -> MemoryBroker {
    MemoryBroker::with_config(MemoryConfig::default().capacity(1 << 20)).expect("config")
}

fn message(payload: &Bytes) -> Message {
    Message::new(payload.clone())
}

fn benches(c: &mut Criterion) {
    let payload = Bytes::from(vec![7u8; 256]);
    let rt = runtime();
    let mut group = c.benchmark_group("memory_256B");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(20);

    group.bench_function("router", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let broker = broker();
                    // The handler says when the last message is in, so that
                    // nothing else polls during the run.
                    let handled = Arc::new(AtomicU64::new(0));
                    let all_in = Arc::new(tokio::sync::Notify::new());
                    let (h, done) = (handled.clone(), all_in.clone());
                    let router = Router::new(broker.clone(), broker.clone())
                        .handle(
                            Subscription::new("bench").group("g"),
                            move |_r: Received| {
                                if h.fetch_add(1, Ordering::Relaxed) + 1 == BATCH {
                                    done.notify_one();
                                }
                                async { Ok(()) }
                            },
                        )
                        .start()
                        .await
                        .expect("start");
                    let start = Instant::now();
                    for _ in 0..BATCH {
                        broker
                            .publish("bench", message(&payload))
                            .await
                            .expect("publish");
                    }
                    all_in.notified().await;
                    total += start.elapsed();
                    router.shutdown().await;
                }
                total
            })
        })
    });

    group.bench_function("stream", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let broker = broker();
                    let mut stream = broker
                        .subscribe(Subscription::new("bench").group("g"))
                        .await
                        .expect("subscribe");
                    let start = Instant::now();
                    for _ in 0..BATCH {
                        broker
                            .publish("bench", message(&payload))
                            .await
                            .expect("publish");
                    }
                    for _ in 0..BATCH {
                        let mut d = stream.next().await.expect("open").expect("delivery");
                        d.ack().await.expect("ack");
                    }
                    total += start.elapsed();
                }
                total
            })
        })
    });

    group.bench_function("raw_mpsc", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(1 << 16);
                    let start = Instant::now();
                    let consumer = async {
                        for _ in 0..BATCH {
                            std::hint::black_box(rx.recv().await.expect("message"));
                        }
                    };
                    let producer = async {
                        for _ in 0..BATCH {
                            tx.send(message(&payload)).await.expect("send");
                        }
                    };
                    futures::join!(producer, consumer);
                    total += start.elapsed();
                }
                total
            })
        })
    });
    group.finish();
}

criterion_group!(throughput, benches);
criterion_main!(throughput);
