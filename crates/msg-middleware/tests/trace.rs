//! One trace from producer to consumer, through the broker.

use std::time::Duration;

use msg_core::{Message, Publisher, Received, Router, Subscription, service};
use msg_memory::MemoryBroker;
use msg_middleware::{TracedPublisher, TracingLayer};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tower::ServiceBuilder;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "current_thread")]
async fn the_consumer_span_is_a_child_of_the_producer_span() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // Thread-local: the current-thread runtime runs everything on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let broker = MemoryBroker::new();
    let router = Router::new(broker.clone(), broker.clone())
        .handle(
            Subscription::new("orders").group("billing"),
            ServiceBuilder::new()
                .layer(TracingLayer::new())
                .service(service(|_r: Received| async { Ok(()) })),
        )
        .start()
        .await
        .unwrap();
    let publisher = TracedPublisher::new(broker.clone());
    publisher
        .publish("orders", Message::new("o-1"))
        .await
        .unwrap();
    broker
        .wait_for("orders", |s| s.acked == 1, Duration::from_secs(5))
        .await
        .unwrap();
    router.shutdown().await;
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let send = spans
        .iter()
        .find(|s| s.name == "send orders")
        .expect("a producer span");
    let process = spans
        .iter()
        .find(|s| s.name == "process orders")
        .expect("a consumer span");
    assert_eq!(
        process.span_context.trace_id(),
        send.span_context.trace_id(),
        "one trace"
    );
    assert_eq!(
        process.parent_span_id,
        send.span_context.span_id(),
        "the consumer's parent is the producer"
    );
    let attr = |name: &str| {
        process
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == name)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(
        attr("messaging.destination.name").as_deref(),
        Some("orders")
    );
    assert_eq!(
        attr("messaging.consumer.group.name").as_deref(),
        Some("billing")
    );
    assert_eq!(attr("messaging.operation.type").as_deref(), Some("process"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_batch_span_links_every_producer_span() {
    use msg_core::BatchOptions;
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let broker = MemoryBroker::new();
    let router = Router::new(broker.clone(), broker.clone())
        .handle_batch(
            Subscription::new("orders").group("billing"),
            BatchOptions::new(3, Duration::from_secs(1)),
            |_batch: Vec<Received>| async { Ok(()) },
        )
        .batch_layer(TracingLayer::new())
        .start()
        .await
        .unwrap();
    let publisher = TracedPublisher::new(broker.clone());
    for i in 0..3 {
        publisher
            .publish("orders", Message::new(format!("o-{i}")))
            .await
            .unwrap();
    }
    broker
        .wait_for("orders", |s| s.acked == 3, Duration::from_secs(5))
        .await
        .unwrap();
    router.shutdown().await;
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let ids = |c: &opentelemetry::trace::SpanContext| (c.trace_id(), c.span_id());
    let mut sends: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "send orders")
        .map(|s| format!("{:?}", ids(&s.span_context)))
        .collect();
    let process = spans
        .iter()
        .find(|s| s.name == "process orders")
        .expect("a batch span");
    let mut linked: Vec<_> = process
        .links
        .iter()
        .map(|l| format!("{:?}", ids(&l.span_context)))
        .collect();
    sends.sort();
    linked.sort();
    assert_eq!(sends.len(), 3);
    assert_eq!(linked, sends, "the batch span links each producer span");
    assert!(
        process
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "messaging.batch.message_count"
                && kv.value.to_string() == "3"),
        "{:?}",
        process.attributes
    );
}
