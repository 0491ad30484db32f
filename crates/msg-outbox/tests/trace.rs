//! One trace through the outbox: the span that enqueued a message is the
//! parent of the relay's send span, whose child is the consumer's span; the
//! relay's claim and record are spans of their own.

use std::time::Duration;

use msg_core::{Message, Received, Router, Subscription};
use msg_memory::MemoryBroker;
use msg_middleware::{TracedPublisher, TracingLayer};
use msg_outbox::Outbox;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "current_thread")]
async fn a_trace_goes_on_through_the_outbox() {
    let (exporter, provider, _guard) = exporting();
    let (pool, path) = database().await;
    let outbox = Outbox::sqlite(pool.clone());
    outbox.migrate().await.unwrap();
    let broker = MemoryBroker::new();
    let router = Router::new(broker.clone(), broker.clone())
        .handle(
            Subscription::new("orders").group("billing"),
            |_r: Received| async { Ok(()) },
        )
        .layer(TracingLayer::new())
        .start()
        .await
        .unwrap();

    async {
        let mut tx = pool.begin().await.unwrap();
        outbox
            .enqueue(&mut tx, "orders", Message::new("o-1"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    .instrument(tracing::info_span!("place order"))
    .await;
    // The relay runs later, in no span of its own.
    outbox
        .relay(TracedPublisher::new(broker.clone()))
        .run_once()
        .await
        .unwrap();
    broker
        .wait_for("orders", |s| s.acked == 1, Duration::from_secs(5))
        .await
        .unwrap();
    router.shutdown().await;
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let find = |name: &str| {
        spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
            panic!(
                "no span {name}: {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
    };
    let (place, send, process) = (
        find("place order"),
        find("send orders"),
        find("process orders"),
    );
    let trace = place.span_context.trace_id();
    assert_eq!(send.span_context.trace_id(), trace, "one trace");
    assert_eq!(process.span_context.trace_id(), trace, "one trace");
    assert_eq!(
        send.parent_span_id,
        place.span_context.span_id(),
        "the enqueue is the send's parent"
    );
    assert_eq!(process.parent_span_id, send.span_context.span_id());

    // The relay's own work: a span for the claim and one for the record,
    // with their counts, beside the message's trace rather than in it.
    let count = |span: &opentelemetry_sdk::trace::SpanData, field: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == field)
            .map(|kv| kv.value.to_string())
            .unwrap_or_else(|| panic!("{} has no {field}: {:?}", span.name, span.attributes))
    };
    let (claim, record) = (find("outbox claim"), find("outbox record"));
    assert_eq!(count(claim, "claimed"), "1");
    assert_eq!(count(claim, "table"), "msg_outbox");
    assert_eq!(count(record, "published"), "1");
    assert_eq!(count(record, "failed"), "0");
    assert_ne!(
        claim.span_context.trace_id(),
        trace,
        "the claim is not in the message's trace"
    );
    pool.close().await;
    let _ = std::fs::remove_file(&path);
}

/// Each delivery the inbox looks at is a span that says whether it was a
/// duplicate, closed as soon as `begin` returns.
#[tokio::test(flavor = "current_thread")]
async fn the_inbox_records_each_delivery_in_a_span() {
    let (exporter, provider, _guard) = exporting();
    let (pool, path) = database().await;
    let inbox = msg_outbox::Inbox::sqlite(pool.clone(), "billing");
    inbox.migrate().await.unwrap();
    let received = Received {
        message: Message::new("o-1"),
        metadata: msg_core::Metadata::new("orders"),
    };
    let tx = inbox
        .begin(&received)
        .await
        .unwrap()
        .expect("first delivery");
    tx.commit().await.unwrap();
    assert!(
        inbox.begin(&received).await.unwrap().is_none(),
        "a duplicate"
    );
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let duplicates: Vec<String> = spans
        .iter()
        .filter(|s| s.name == "inbox record")
        .map(|s| {
            let attribute = |key: &str| {
                s.attributes
                    .iter()
                    .find(|kv| kv.key.as_str() == key)
                    .map(|kv| kv.value.to_string())
                    .unwrap_or_else(|| panic!("no {key}: {:?}", s.attributes))
            };
            assert_eq!(attribute("consumer"), "billing");
            assert_eq!(attribute("message.id"), received.message.id().to_string());
            attribute("duplicate")
        })
        .collect();
    assert_eq!(duplicates, ["false", "true"]);
    pool.close().await;
    let _ = std::fs::remove_file(&path);
}

/// Spans go to the returned exporter while the guard lives. Thread-local:
/// the current-thread runtime runs everything on this thread.
fn exporting() -> (
    InMemorySpanExporter,
    SdkTracerProvider,
    tracing::subscriber::DefaultGuard,
) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let guard = tracing::subscriber::set_default(subscriber);
    (exporter, provider, guard)
}

/// A fresh SQLite file, and its path.
async fn database() -> (SqlitePool, std::path::PathBuf) {
    let path =
        std::env::temp_dir().join(format!("msg-outbox-trace-{}.db", msg_core::Uuid::new_v4()));
    let pool = SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true),
    )
    .await
    .unwrap();
    (pool, path)
}
