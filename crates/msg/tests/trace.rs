//! One trace across three hops: a publish, a handler that returns a
//! message, and the handler of that message, on the in-process broker and
//! on a real one.

use std::time::Duration;

use msg::middleware::{TracedPublisher, TracingLayer};
use msg::{Connection, Message, Outgoing, Publisher, Received, Router, Subscription};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;

/// Runs the chain on `conn` and checks the spans: send a → process a →
/// send b → process b, one trace, each span the parent of the next.
async fn three_hops(conn: Connection, prefix: &str) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // Thread-local: the current-thread runtime runs everything on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let (a, b) = (format!("{prefix}.a"), format!("{prefix}.b"));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let to = b.clone();
    let publisher = TracedPublisher::new(conn.clone());
    let router =
        Router::new(conn.clone(), publisher.clone())
            .with_state(done_tx)
            .handle(Subscription::new(&a).group("hop1"), move |r: Received| {
                let to = to.clone();
                async move { Ok(Outgoing::none().with(to, Message::new(r.payload().clone()))) }
            })
            .handle(
                Subscription::new(&b).group("hop2"),
                |msg::State(done): msg::State<tokio::sync::mpsc::UnboundedSender<()>>,
                 _r: Received| async move {
                    let _ = done.send(());
                    Ok(())
                },
            )
            .layer(TracingLayer::new())
            .start()
            .await
            .unwrap();
    publisher.publish(&a, Message::new("o-1")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), done_rx.recv())
        .await
        .expect("the second hop ran in time");
    router.shutdown().await;
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let span = |name: String| -> SpanData {
        spans
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "no span {name:?} among {:?}",
                    spans.iter().map(|s| &s.name).collect::<Vec<_>>()
                )
            })
    };
    let chain = [
        span(format!("send {a}")),
        span(format!("process {a}")),
        span(format!("send {b}")),
        span(format!("process {b}")),
    ];
    for pair in chain.windows(2) {
        assert_eq!(
            pair[1].span_context.trace_id(),
            pair[0].span_context.trace_id(),
            "{} is in the trace of {}",
            pair[1].name,
            pair[0].name
        );
        assert_eq!(
            pair[1].parent_span_id,
            pair[0].span_context.span_id(),
            "the parent of {} is {}",
            pair[1].name,
            pair[0].name
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn one_trace_across_three_hops_in_process() {
    three_hops(msg::connect("memory://").await.unwrap(), "trace").await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "current_thread")]
async fn one_trace_across_three_hops_on_redis() {
    let url = msg_testkit::BrokerEnv::get("redis").url().to_owned();
    let prefix = format!("trace{}", msg::Uuid::now_v7().simple());
    three_hops(msg::connect(&url).await.unwrap(), &prefix).await;
}
