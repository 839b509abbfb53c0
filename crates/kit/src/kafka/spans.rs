//! The kit's Kafka spans, named and attributed per the OpenTelemetry messaging semantic
//! conventions, release [`SEMCONV_VERSION`] (the Kafka page, `docs/messaging/kafka.md`):
//!
//! - `send {topic}`, kind PRODUCER, one per record sent (the outbox relay, the dead letter,
//!   [`Publisher::publish`](super::Publisher::publish)). Its context is the record's creation
//!   context, written into the `traceparent` header, except for a dead letter, which keeps the
//!   original record's trace headers and links to them instead.
//! - `process {topic}`, kind CONSUMER, one per consumed record, around all its attempts. It
//!   links to the creation context carried in the record's `traceparent` and, since it covers
//!   a single message, also takes it as its parent (the conventions allow this for single
//!   messages), so that one order is one trace.
//!
//! Attributes: `messaging.system` (`kafka`), `messaging.operation.name` and
//! `messaging.operation.type` (`send` / `process`), `messaging.destination.name`,
//! `messaging.destination.partition.id` (a string), `messaging.kafka.offset`,
//! `messaging.kafka.message.key` (when the key is UTF-8), `messaging.message.id` (the
//! `event-id` header), `messaging.consumer.group.name` (consumer), `messaging.client.id`,
//! `server.address` and `server.port` (the first bootstrap server). On failure the span's
//! status is error and `error.type` names the class of the failure:
//!
//! - on a send: the librdkafka/broker error code in Kafka's spelling (`MESSAGE_TIMED_OUT`,
//!   `UNKNOWN_TOPIC_OR_PARTITION`, `MESSAGE_SIZE_TOO_LARGE`…), or `encode`, `canceled`,
//!   `_OTHER`;
//! - on a process: the handler's [`HandlerError`](super::consumer::HandlerError) kind that
//!   ended the record (`poison`, `retryable` once the attempts ran out, `fatal`), or `panic`.
//!   A record handled after retries is a success.
//!
//! Field values are only computed when a subscriber wants the span, so a process without one
//! pays a callsite check per record. A record whose trace was not sampled where it began (its
//! `traceparent` flags say so, e.g. under `OTEL_TRACES_SAMPLER=parentbased_traceidratio`) gets
//! a light span instead: it carries the unsampled context on (what the handler writes stays in
//! that trace, unsampled) and the fields the logs show, not the attributes no exporter sees.

use std::sync::Arc;

use opentelemetry::trace::TraceContextExt;
use rdkafka::error::KafkaError;
use tracing::Span;
use tracing::field::{Empty, display};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::consumer::Record;
use super::headers::EVENT_ID;
use super::producer::{Delivery, OutgoingRecord, PublishError};
use crate::settings::KafkaSettings;

/// The semantic-conventions release these spans follow. The messaging conventions are still
/// marked *Development*; moving to a newer release is a deliberate change here. (The attribute
/// registry on opentelemetry.io, seen 2026-11, already lists `kafka.offset` and
/// `kafka.message.key` outside the `messaging.` namespace; no tagged release up to 1.44.0
/// has them, so the names here stay 1.44.0's.)
pub const SEMCONV_VERSION: &str = "1.44.0";

/// What every span of one Kafka client says about the client: its `client.id` and the broker
/// it bootstraps from. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    client_id: Arc<str>,
    server_address: Arc<str>,
    server_port: u16,
}

impl ClientInfo {
    /// The client as librdkafka will be configured: `client.id` and `bootstrap.servers` from
    /// the `librdkafka` extras if set there (they win, see `kafka::config`), else from the
    /// settings, else `default_client_id`.
    pub fn new(settings: &KafkaSettings, default_client_id: &str) -> Self {
        let client_id = settings
            .librdkafka
            .get("client.id")
            .or(settings.client_id.as_ref())
            .map_or(default_client_id, String::as_str);
        let bootstrap = settings
            .librdkafka
            .get("bootstrap.servers")
            .unwrap_or(&settings.bootstrap_servers);
        let (address, port) = first_server(bootstrap);
        Self {
            client_id: Arc::from(client_id),
            server_address: Arc::from(address),
            server_port: port,
        }
    }

    /// The `messaging.client.id`.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// `server.address` and `server.port`.
    pub fn server(&self) -> (&str, u16) {
        (&self.server_address, self.server_port)
    }
}

/// The host and port of the first of `host:port[,host:port]` (an optional `scheme://` and an
/// IPv6 `[addr]:port` are understood; Kafka's port 9092 when none is given).
fn first_server(bootstrap: &str) -> (&str, u16) {
    let first = bootstrap.split(',').next().unwrap_or_default().trim();
    let first = first.split_once("://").map_or(first, |(_, rest)| rest);
    if let Some(rest) = first.strip_prefix('[')
        && let Some((host, tail)) = rest.split_once(']')
    {
        let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
        return (host, port.unwrap_or(9092));
    }
    match first.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().unwrap_or(9092)),
        _ => (first, 9092),
    }
}

/// A `send {topic}` PRODUCER span for `record`, child of the current span. The caller sets
/// another parent if it has one (the relay: the request that wrote the row), writes the span's
/// context into the record's headers when the span is the creation context, and reports the
/// result with [`record_send`].
pub fn send_span(client: &ClientInfo, record: &OutgoingRecord) -> Span {
    tracing::info_span!(
        "send",
        otel.name = %format_args!("send {}", record.topic),
        otel.kind = "producer",
        otel.status_code = Empty,
        messaging.system = "kafka",
        messaging.operation.name = "send",
        messaging.operation.type = "send",
        messaging.destination.name = record.topic.as_str(),
        messaging.destination.partition.id = Empty,
        messaging.kafka.offset = Empty,
        messaging.kafka.message.key = record.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()),
        messaging.message.id = record.headers.get_str(EVENT_ID),
        messaging.client.id = &*client.client_id,
        server.address = &*client.server_address,
        // As an i64: the OpenTelemetry layer would turn an unsigned value into a string.
        server.port = i64::from(client.server_port),
        error.type = Empty,
    )
}

/// The `send {topic}` span of a record sent on behalf of `parent` (the outbox relay: the
/// context stored with the row). When `parent`'s trace was not sampled where it began, the span
/// is a light one (a parent-based sampler drops it too) that carries that context on and keeps
/// only what the logs show (topic, key, and the partition and offset once recorded).
pub fn send_span_in(
    client: &ClientInfo,
    record: &OutgoingRecord,
    parent: opentelemetry::Context,
) -> Span {
    let context = parent.span().span_context().clone();
    let span = if context.is_valid() && !context.is_sampled() {
        tracing::info_span!(
            "send",
            messaging.destination.name = record.topic.as_str(),
            messaging.destination.partition.id = Empty,
            messaging.kafka.offset = Empty,
            messaging.kafka.message.key = record
                .key
                .as_deref()
                .and_then(|k| std::str::from_utf8(k).ok()),
        )
    } else {
        send_span(client, record)
    };
    if !span.is_disabled() {
        let _ = span.set_parent(parent);
    }
    span
}

/// Records how a send ended on its span: the partition and offset the broker chose, or the
/// error's class and an error status.
pub fn record_send(span: &Span, result: &Result<Delivery, PublishError>) {
    match result {
        Ok(delivery) => {
            span.record(
                "messaging.destination.partition.id",
                display(delivery.partition),
            );
            span.record("messaging.kafka.offset", delivery.offset);
        }
        Err(err) => record_error(span, &publish_error_type(err)),
    }
}

/// A `process {topic}` CONSUMER span for a consumed `record`, linked to the creation context
/// in its `traceparent` header and child of it (single-message processing), else a root.
pub fn process_span(client: &ClientInfo, group: &str, record: &Record) -> Span {
    let creation = if tracing::dispatcher::has_been_set() {
        record.headers.extract_context()
    } else {
        opentelemetry::Context::new()
    };
    let parent = creation.span().span_context().clone();
    if parent.is_valid() && !parent.is_sampled() {
        return unsampled_process_span(record, creation);
    }
    let span = tracing::info_span!(
        parent: None,
        "process",
        otel.name = %format_args!("process {}", record.topic),
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = "kafka",
        messaging.operation.name = "process",
        messaging.operation.type = "process",
        messaging.destination.name = record.topic.as_str(),
        messaging.destination.partition.id = %record.partition,
        messaging.kafka.offset = record.offset,
        messaging.kafka.message.key = record.key_str(),
        messaging.message.id = record.event_id(),
        messaging.consumer.group.name = group,
        messaging.client.id = &*client.client_id,
        server.address = &*client.server_address,
        // As an i64: the OpenTelemetry layer would turn an unsigned value into a string.
        server.port = i64::from(client.server_port),
        error.type = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let _ = span.set_parent(creation);
    // `add_link` ignores an invalid context (a record written without tracing).
    span.add_link(parent);
    span
}

/// The `process` span of a record whose trace was not sampled where it began (its
/// `traceparent` says so; a parent-based sampler drops this span too): it carries that
/// context on, so that what the handler writes stays in the unsampled trace, and the record's
/// topic, partition, offset and key for the logs, but not the attributes no exporter will see.
fn unsampled_process_span(record: &Record, creation: opentelemetry::Context) -> Span {
    let span = tracing::info_span!(
        parent: None,
        "process",
        messaging.destination.name = record.topic.as_str(),
        messaging.destination.partition.id = %record.partition,
        messaging.kafka.offset = record.offset,
        messaging.kafka.message.key = record.key_str(),
    );
    if !span.is_disabled() {
        let _ = span.set_parent(creation);
    }
    span
}

/// Marks `span` failed: `error.type` set to `error_type` and the status to error. Call it
/// once per span, on the failure that ends the operation.
pub fn record_error(span: &Span, error_type: &str) {
    span.record("error.type", error_type);
    span.record("otel.status_code", "error");
}

/// The `error.type` of a failed send: the error code in Kafka's spelling when librdkafka
/// gave one, else the kit's class.
pub fn publish_error_type(err: &PublishError) -> std::borrow::Cow<'static, str> {
    match err {
        PublishError::Encode(_) => "encode".into(),
        PublishError::Canceled => "canceled".into(),
        PublishError::Delivery { source, .. } => kafka_error_type(source),
    }
}

/// `RDKafkaErrorCode::UnknownTopicOrPartition` becomes `UNKNOWN_TOPIC_OR_PARTITION`, the
/// name Kafka's protocol gives the same error; an error without a code is `_OTHER`.
fn kafka_error_type(err: &KafkaError) -> std::borrow::Cow<'static, str> {
    let Some(code) = err.rdkafka_error_code() else {
        return "_OTHER".into();
    };
    let camel = format!("{code:?}");
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.char_indices() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState, TracerProvider as _,
    };
    use opentelemetry::{Context, Value};
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
    use rdkafka::Timestamp;
    use rdkafka::error::RDKafkaErrorCode;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::kafka::Headers;
    use crate::kafka::headers::TRACEPARENT;

    /// Keeps every finished span.
    #[derive(Debug, Clone, Default)]
    struct Collect(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Collect {
        fn export(
            &self,
            batch: Vec<SpanData>,
        ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
            self.0.lock().unwrap().extend(batch);
            std::future::ready(Ok(()))
        }
    }

    /// Runs `f` under a subscriber that exports to a `Collect`, and returns the spans.
    fn spans_of(f: impl FnOnce()) -> Vec<SpanData> {
        let collect = Collect::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(collect.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f);
        provider.force_flush().unwrap();
        collect.0.lock().unwrap().clone()
    }

    /// The span's attributes that the conventions define (the tracing layer adds code and
    /// thread attributes of its own).
    fn semconv(span: &SpanData) -> BTreeMap<String, Value> {
        span.attributes
            .iter()
            .filter(|kv| {
                ["messaging.", "server.", "error."]
                    .iter()
                    .any(|p| kv.key.as_str().starts_with(p))
            })
            .map(|kv| (kv.key.to_string(), kv.value.clone()))
            .collect()
    }

    fn attributes(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PRODUCER: &str = "00f067aa0ba902b7";

    fn client() -> ClientInfo {
        let settings = KafkaSettings {
            bootstrap_servers: "kafka-0.kafka:9093,kafka-1.kafka:9093".into(),
            ..KafkaSettings::default()
        };
        ClientInfo::new(&settings, "inventory")
    }

    fn consumed() -> Record {
        Record {
            topic: "orders.events".into(),
            partition: 2,
            offset: 42,
            key: Some(b"order-1".to_vec()),
            payload: Some(vec![1]),
            headers: Headers::new()
                .with(EVENT_ID, "event-1")
                .with(TRACEPARENT, format!("00-{TRACE}-{PRODUCER}-01")),
            timestamp_ms: None,
            attempt: 1,
        }
    }

    #[test]
    fn a_process_span_follows_the_conventions_and_links_to_the_creation_context() {
        let spans = spans_of(|| {
            let span = process_span(&client(), "inventory", &consumed());
            span.in_scope(|| {});
        });
        let [span] = spans.as_slice() else {
            panic!("one span: {spans:?}")
        };
        assert_eq!(span.name, "process orders.events");
        assert_eq!(span.span_kind, SpanKind::Consumer);
        assert_eq!(span.status, Status::Unset);
        assert_eq!(
            semconv(span),
            attributes(&[
                ("messaging.system", "kafka".into()),
                ("messaging.operation.name", "process".into()),
                ("messaging.operation.type", "process".into()),
                ("messaging.destination.name", "orders.events".into()),
                ("messaging.destination.partition.id", "2".into()),
                ("messaging.kafka.offset", 42i64.into()),
                ("messaging.kafka.message.key", "order-1".into()),
                ("messaging.message.id", "event-1".into()),
                ("messaging.consumer.group.name", "inventory".into()),
                ("messaging.client.id", "inventory".into()),
                ("server.address", "kafka-0.kafka".into()),
                ("server.port", 9093i64.into()),
            ])
        );
        // Single-message processing: the creation context is the parent and the link.
        let producer = SpanId::from_hex(PRODUCER).unwrap();
        assert_eq!(
            span.span_context.trace_id(),
            TraceId::from_hex(TRACE).unwrap()
        );
        assert_eq!(span.parent_span_id, producer);
        let [link] = span.links.links.as_slice() else {
            panic!("one link: {:?}", span.links)
        };
        assert_eq!(link.span_context.span_id(), producer);
        assert_eq!(
            link.span_context.trace_id(),
            TraceId::from_hex(TRACE).unwrap()
        );
    }

    #[test]
    fn a_record_of_an_unsampled_trace_is_processed_in_that_trace_and_exported_by_nobody() {
        let mut record = consumed();
        record.headers = Headers::new().with(TRACEPARENT, format!("00-{TRACE}-{PRODUCER}-00"));
        let mut carried = None;
        let spans = spans_of(|| {
            let span = process_span(&client(), "inventory", &record);
            carried = Some(span.context().span().span_context().clone());
        });
        assert!(
            spans.is_empty(),
            "a parent-based sampler drops it: {spans:?}"
        );
        let carried = carried.unwrap();
        assert_eq!(
            carried.trace_id(),
            TraceId::from_hex(TRACE).unwrap(),
            "what the handler writes stays in the order's trace"
        );
        assert!(!carried.is_sampled(), "and unsampled downstream");
    }

    #[test]
    fn a_row_of_an_unsampled_trace_is_sent_in_that_trace_and_exported_by_nobody() {
        let record = OutgoingRecord {
            topic: "orders.events".into(),
            key: Some(b"order-1".to_vec()),
            payload: vec![1],
            headers: Headers::new().with(TRACEPARENT, format!("00-{TRACE}-{PRODUCER}-00")),
        };
        let mut carried = None;
        let spans = spans_of(|| {
            let span = send_span_in(&client(), &record, record.headers.extract_context());
            carried = Some(span.context().span().span_context().clone());
        });
        assert!(
            spans.is_empty(),
            "a parent-based sampler drops it: {spans:?}"
        );
        let carried = carried.unwrap();
        assert_eq!(carried.trace_id(), TraceId::from_hex(TRACE).unwrap());
        assert_ne!(carried.span_id(), SpanId::from_hex(PRODUCER).unwrap());
        assert!(!carried.is_sampled());
    }

    #[test]
    fn a_record_without_trace_context_is_processed_under_a_root_span_without_link() {
        let mut record = consumed();
        record.headers = Headers::new();
        let spans = spans_of(|| process_span(&client(), "g", &record).in_scope(|| {}));
        assert_eq!(spans[0].parent_span_id, SpanId::INVALID);
        assert!(spans[0].links.links.is_empty());
    }

    #[test]
    fn a_failed_process_span_carries_the_error_type_and_an_error_status() {
        let spans = spans_of(|| {
            let span = process_span(&client(), "inventory", &consumed());
            span.in_scope(|| record_error(&tracing::Span::current(), "poison"));
        });
        assert_eq!(spans[0].status, Status::error(""));
        assert_eq!(
            semconv(&spans[0]).get("error.type"),
            Some(&Value::from("poison"))
        );
    }

    #[test]
    fn a_send_span_follows_the_conventions_and_records_where_the_broker_put_the_record() {
        let record = OutgoingRecord {
            topic: "orders.events".into(),
            key: Some(b"order-1".to_vec()),
            payload: vec![1],
            headers: Headers::new().with(EVENT_ID, "event-1"),
        };
        let failed = Err(PublishError::Delivery {
            topic: "orders.events".into(),
            source: KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
        });
        let spans = spans_of(|| {
            let parent = SpanContext::new(
                TraceId::from_hex(TRACE).unwrap(),
                SpanId::from_hex(PRODUCER).unwrap(),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            );
            let sent = send_span(&client(), &record);
            let _ = sent.set_parent(Context::new().with_remote_span_context(parent));
            record_send(
                &sent,
                &Ok(Delivery {
                    partition: 1,
                    offset: 7,
                    timestamp: Timestamp::NotAvailable,
                }),
            );
            drop(sent);
            let lost = send_span(&client(), &record);
            record_send(&lost, &failed);
        });
        let [sent, lost] = spans.as_slice() else {
            panic!("two spans: {spans:?}")
        };
        assert_eq!(sent.name, "send orders.events");
        assert_eq!(sent.span_kind, SpanKind::Producer);
        assert_eq!(sent.parent_span_id, SpanId::from_hex(PRODUCER).unwrap());
        assert_eq!(sent.status, Status::Unset);
        assert_eq!(
            semconv(sent),
            attributes(&[
                ("messaging.system", "kafka".into()),
                ("messaging.operation.name", "send".into()),
                ("messaging.operation.type", "send".into()),
                ("messaging.destination.name", "orders.events".into()),
                ("messaging.destination.partition.id", "1".into()),
                ("messaging.kafka.offset", 7i64.into()),
                ("messaging.kafka.message.key", "order-1".into()),
                ("messaging.message.id", "event-1".into()),
                ("messaging.client.id", "inventory".into()),
                ("server.address", "kafka-0.kafka".into()),
                ("server.port", 9093i64.into()),
            ])
        );
        assert_eq!(lost.status, Status::error(""));
        assert_eq!(
            semconv(lost).get("error.type"),
            Some(&Value::from("MESSAGE_TIMED_OUT"))
        );
        assert!(!semconv(lost).contains_key("messaging.kafka.offset"));
    }

    #[test]
    fn the_first_bootstrap_server_gives_the_server_address_and_port() {
        assert_eq!(first_server("127.0.0.1:9092"), ("127.0.0.1", 9092));
        assert_eq!(first_server("b1:19092, b2:9092"), ("b1", 19092));
        assert_eq!(
            first_server("SASL_SSL://kafka.example.com:9093"),
            ("kafka.example.com", 9093)
        );
        assert_eq!(first_server("[::1]:29092"), ("::1", 29092));
        assert_eq!(first_server("broker"), ("broker", 9092));
    }

    #[test]
    fn a_client_named_in_the_librdkafka_extras_is_the_one_the_spans_name() {
        let mut settings = KafkaSettings {
            bootstrap_servers: "a:1,b:2".into(),
            ..KafkaSettings::default()
        };
        let info = ClientInfo::new(&settings, "orders");
        assert_eq!((info.client_id(), info.server()), ("orders", ("a", 1)));
        settings.client_id = Some("orders-7".into());
        assert_eq!(ClientInfo::new(&settings, "orders").client_id(), "orders-7");
        settings
            .librdkafka
            .insert("client.id".into(), "from-extras".into());
        assert_eq!(
            ClientInfo::new(&settings, "orders").client_id(),
            "from-extras"
        );
    }

    #[test]
    fn a_failed_send_is_typed_by_its_kafka_error_code() {
        let err = |code| PublishError::Delivery {
            topic: "t".into(),
            source: KafkaError::MessageProduction(code),
        };
        assert_eq!(
            publish_error_type(&err(RDKafkaErrorCode::UnknownTopicOrPartition)),
            "UNKNOWN_TOPIC_OR_PARTITION"
        );
        assert_eq!(
            publish_error_type(&err(RDKafkaErrorCode::MessageTimedOut)),
            "MESSAGE_TIMED_OUT"
        );
        assert_eq!(publish_error_type(&PublishError::Canceled), "canceled");
    }
}
