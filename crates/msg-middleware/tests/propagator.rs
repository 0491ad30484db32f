//! The globally configured propagator carries the trace (its own test
//! binary: the global propagator is process-wide).

use msg_core::{Message, Publisher, headers};
use msg_memory::{MemoryBroker, MemoryConfig};
use msg_middleware::TracedPublisher;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, propagation::text_map_propagator::FieldIter};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;

/// Carries the trace id alone, in a header of its own.
#[derive(Debug)]
struct TraceIdOnly {
    fields: Vec<String>,
}

impl TextMapPropagator for TraceIdOnly {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let span_context = span.span_context();
        if span_context.is_valid() {
            injector.set("x-trace-id", span_context.trace_id().to_string());
        }
    }

    fn extract_with_context(&self, cx: &Context, _extractor: &dyn Extractor) -> Context {
        cx.clone()
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_global_propagator_is_used() {
    opentelemetry::global::set_text_map_propagator(TraceIdOnly {
        fields: vec!["x-trace-id".to_owned()],
    });
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let broker = MemoryBroker::with_config(MemoryConfig::default().retention(10)).unwrap();
    TracedPublisher::new(broker.clone())
        .publish("orders", Message::new("o-1"))
        .await
        .unwrap();
    provider.force_flush().unwrap();
    let sent = &broker.published("orders")[0];
    let send = &exporter.get_finished_spans().unwrap()[0];
    assert_eq!(
        sent.header("x-trace-id"),
        Some(send.span_context.trace_id().to_string().as_str())
    );
    assert_eq!(sent.header(headers::TRACEPARENT), None, "not W3C");
}
