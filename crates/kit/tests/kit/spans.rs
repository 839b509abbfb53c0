//! The runner's spans on the failure path, through the real broker: a poison record's
//! `process` span ends failed with its class, and its dead letter is sent under a `send` span
//! of its own, child of the `process` span and linked to the record's creation context.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::{SpanKind, Status, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use spine_kit::kafka::consumer::{HandlerError, Record};
use spine_kit::kafka::headers::{EVENT_ID, TRACEPARENT};
use spine_kit::kafka::{Headers, OutgoingRecord};
use tracing_subscriber::layer::SubscriberExt;

use crate::support::*;

/// Keeps every finished span.
#[derive(Debug, Clone, Default)]
struct Collect(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collect {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        self.0.lock().unwrap().extend(batch);
        std::future::ready(Ok(()))
    }
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv: &&KeyValue| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CREATION: &str = "00f067aa0ba902b7";

// One thread, so that the subscriber set for this test is the one every task of the runner
// sees (a default subscriber is per thread).
#[tokio::test(flavor = "current_thread")]
async fn a_dead_lettered_record_ends_its_process_span_failed_and_sends_its_letter_under_it() {
    let collect = Collect::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(collect.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _default = tracing::subscriber::set_default(subscriber);

    let fx = Fixture::new(settings()).await;
    fx.publisher
        .send(&OutgoingRecord {
            topic: fx.topic.clone(),
            key: Some(b"order-1".to_vec()),
            payload: b"not avro".to_vec(),
            headers: Headers::new()
                .with(EVENT_ID, "poison-1")
                .with(TRACEPARENT, format!("00-{TRACE}-{CREATION}-01")),
        })
        .await
        .unwrap();
    let running = fx.spawn(handler((), |(), _: Record| async {
        Err(HandlerError::poison(anyhow::anyhow!("never valid")))
    }));
    let dlq_send = format!("send {}", fx.dlq);
    let process = format!("process {}", fx.topic);
    let ended = || {
        let spans = collect.0.lock().unwrap();
        [&dlq_send, &process]
            .iter()
            .all(|name| spans.iter().any(|s| s.name == name.as_str()))
    };
    assert!(
        eventually(Duration::from_secs(30), ended).await,
        "the process and the dead letter's send span ended"
    );
    running.stop().await.unwrap();

    let spans = collect.0.lock().unwrap().clone();
    let process = spans.iter().find(|s| s.name == process).unwrap();
    let send = spans.iter().find(|s| s.name == dlq_send).unwrap();
    assert_eq!(process.span_kind, SpanKind::Consumer);
    assert_eq!(process.status, Status::error(""));
    assert_eq!(
        attribute(process, "error.type"),
        Some(&Value::from("poison"))
    );
    assert_eq!(process.span_context.trace_id().to_string(), TRACE);
    assert_eq!(process.parent_span_id.to_string(), CREATION);

    assert_eq!(send.span_kind, SpanKind::Producer);
    assert_eq!(
        send.status,
        Status::Unset,
        "the dead letter itself went out"
    );
    assert_eq!(send.parent_span_id, process.span_context.span_id());
    let links: Vec<String> = send
        .links
        .iter()
        .map(|l| l.span_context.span_id().to_string())
        .collect();
    assert_eq!(
        links,
        [CREATION],
        "the letter keeps and links the creation context"
    );
    assert_eq!(
        attribute(send, "messaging.destination.name"),
        Some(&Value::from(fx.dlq.clone()))
    );
    assert!(
        matches!(
            attribute(send, "messaging.destination.partition.id"),
            Some(Value::String(p)) if p.as_str().parse::<u32>().is_ok()
        ),
        "{:?}",
        send.attributes
    );
}
