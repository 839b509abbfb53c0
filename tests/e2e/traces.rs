//! One trace per order: the four services run as their own processes (so each exports under its
//! own `service.name`), on a private broker, exporting OTLP/HTTP to a collector this test runs.
//! For one order placed over HTTP it checks that one trace holds spans of all four services,
//! that the spans form one tree rooted at the HTTP span, and that the Kafka spans follow the
//! OpenTelemetry messaging conventions exactly (`spine_kit::kafka::spans`): names, kinds,
//! attributes with their types, and the consumer's link to the creation context; then it
//! prints the tree and every Kafka span's attributes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::{Value, json};

use spine_kit::testing::broker::{Broker, free_port};

/// A span as the collector received it.
#[derive(Debug, Clone)]
struct Collected {
    service: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: i32,
    start: u64,
    end: u64,
    attributes: BTreeMap<String, Attr>,
    /// Linked spans, as (trace id, span id).
    links: Vec<(String, String)>,
    status_code: i32,
}

/// An attribute value with its OTLP type, since the conventions fix the types (the partition
/// id is a string, the offset an int).
#[derive(Debug, Clone, PartialEq)]
enum Attr {
    Str(String),
    Int(i64),
    Other(String),
}

impl Attr {
    fn of(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> Self {
        match value.and_then(|v| v.value.as_ref()) {
            Some(AnyValue::StringValue(s)) => Self::Str(s.clone()),
            Some(AnyValue::IntValue(i)) => Self::Int(*i),
            _ => Self::Other(text(value)),
        }
    }
}

impl std::fmt::Display for Attr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Str(s) => write!(f, "{s:?}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Other(o) => f.write_str(o),
        }
    }
}

fn s(value: &str) -> Attr {
    Attr::Str(value.to_owned())
}

type Spans = Arc<Mutex<Vec<Collected>>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// A minimal OTLP/HTTP (protobuf) trace receiver.
async fn start_collector(spans: Spans) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let spans = spans.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut spans = spans.lock().unwrap();
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|kv| kv.key == "service.name")
                        .map(|kv| text(kv.value.as_ref()))
                        .unwrap_or_default();
                    for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                        spans.push(Collected {
                            service: service.clone(),
                            trace_id: hex(&span.trace_id),
                            span_id: hex(&span.span_id),
                            parent_span_id: hex(&span.parent_span_id),
                            name: span.name.clone(),
                            kind: span.kind,
                            start: span.start_time_unix_nano,
                            end: span.end_time_unix_nano,
                            attributes: span
                                .attributes
                                .iter()
                                .map(|kv| (kv.key.clone(), Attr::of(kv.value.as_ref())))
                                .collect(),
                            links: span
                                .links
                                .iter()
                                .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                                .collect(),
                            status_code: span.status.as_ref().map_or(0, |s| s.code),
                        });
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// The service binaries, built next to this test's executable by `cargo build --workspace`.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first (scripts/test does)",
        path.display()
    );
    path
}

struct Service {
    name: &'static str,
    port: u16,
    child: Child,
    log: PathBuf,
}

/// Stops the process if the test did not. On a failure, prints the tail of the service's log
/// first: the log lives in the test's temporary directory, which goes with the test.
impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "--- the last {} lines of {}'s log:\n{}",
                tail.len(),
                self.name,
                tail.join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    name: &'static str,
    broker: &Broker,
    collector: u16,
    data: &Path,
    extra: &[(&str, String)],
) -> Service {
    let port = free_port();
    let log_path = data.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = Command::new(binary(name));
    command
        .current_dir(data)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap())
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/{name}.db?mode=rwc", data.display()),
        )
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{collector}"),
        )
        .env("RUST_LOG", "info,rdkafka=warn")
        .env("SPINE__TELEMETRY__LOG_FORMAT", "json")
        .env("SPINE__HTTP__PORT", port.to_string())
        .env("SPINE__KAFKA__TOPICS__PARTITIONS", "3")
        .env("SPINE__KAFKA__CONSUMER__MAX_POLL_INTERVAL", "6s")
        .env("SPINE__KAFKA__CONSUMER__SHUTDOWN_TIMEOUT", "3s")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log));
    for (key, value) in extra {
        command.env(key, value);
    }
    Service {
        name,
        port,
        child: command.spawn().expect("service starts"),
        log: log_path,
    }
}

async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_across_the_four_services() {
    let broker = Broker::start();
    let spans: Spans = Arc::default();
    let collector = start_collector(spans.clone()).await;
    let data = tempfile::tempdir().unwrap();
    let emails = data.path().join("emails");
    let outbox = |_: ()| ("SPINE__OUTBOX__POLL_INTERVAL", "100ms".to_owned());
    let mut services = vec![
        spawn("orders", &broker, collector, data.path(), &[outbox(())]),
        spawn("inventory", &broker, collector, data.path(), &[outbox(())]),
        spawn(
            "email",
            &broker,
            collector,
            data.path(),
            &[
                outbox(()),
                ("SPINE__EMAIL__OUTBOX_DIR", emails.display().to_string()),
            ],
        ),
        spawn("analytics", &broker, collector, data.path(), &[]),
    ];
    let client = reqwest::Client::new();
    let url = |service: &Service, path: &str| format!("http://127.0.0.1:{}{path}", service.port);
    for service in &services {
        let ready = url(service, "/readyz");
        wait_for(&format!("{} ready", service.name), async || {
            let response = client.get(&ready).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
    }

    let response = client
        .post(url(&services[0], "/orders"))
        .json(&json!({
            "customer_id": "c-trace",
            "email": "trace@example.com",
            "currency": "EUR",
            "items": [{ "sku": "SKU-1", "quantity": 1, "unit_price_minor": 990 }]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let order_url = url(&services[0], &format!("/orders/{id}"));
    wait_for("the order confirmed", async || {
        let order: Value = client
            .get(&order_url)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (order["status"] == "CONFIRMED").then_some(())
    })
    .await;
    let stats_url = url(&services[3], "/stats");
    wait_for("analytics to count the EmailSent", async || {
        let stats: Value = client
            .get(&stats_url)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (stats["events"]["EmailSent"] == 1).then_some(())
    })
    .await;

    // SIGTERM: each service shuts down and flushes its spans.
    for service in &mut services {
        let status = Command::new("kill")
            .args(["-TERM", &service.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    for service in &mut services {
        let deadline = Instant::now() + Duration::from_secs(30);
        while service.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "{} did not stop on SIGTERM",
                service.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let spans = spans.lock().unwrap().clone();
    let root = spans
        .iter()
        .find(|s| s.service == "orders" && s.name == "POST /orders")
        .unwrap_or_else(|| panic!("no POST /orders span among {} spans", spans.len()));
    let trace: Vec<&Collected> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id)
        .collect();
    let ids: BTreeSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();

    println!("trace {} ({} spans):", root.trace_id, trace.len());
    print_tree(&trace, root, 0);

    let services_seen: BTreeSet<&str> = trace.iter().map(|s| s.service.as_str()).collect();
    for service in ["orders", "inventory", "email", "analytics"] {
        assert!(
            services_seen.contains(service),
            "no {service} span in the trace: {services_seen:?}"
        );
    }
    for span in &trace {
        if span.span_id == root.span_id {
            assert!(span.parent_span_id.is_empty(), "the HTTP span is the root");
        } else {
            assert!(
                ids.contains(span.parent_span_id.as_str()),
                "{} ({}) has a parent outside the trace",
                span.name,
                span.service
            );
        }
    }
    let producers: Vec<&&Collected> = trace
        .iter()
        .filter(|s| s.kind == SpanKind::Producer as i32)
        .collect();
    let consumers: Vec<&&Collected> = trace
        .iter()
        .filter(|s| s.kind == SpanKind::Consumer as i32)
        .collect();
    println!("Kafka spans:");
    for span in producers.iter().chain(&consumers) {
        print_messaging_span(span);
    }
    // OrderPlaced, StockReserved, OrderConfirmed and EmailSent each sent once, each consumed
    // by at least one service.
    assert!(producers.len() >= 4, "{} send spans", producers.len());
    assert!(consumers.len() >= 4, "{} process spans", consumers.len());
    let broker_port = broker
        .bootstrap()
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .map(Attr::Int)
        .expect("the broker's port");
    for span in &producers {
        let topic = destination(span);
        assert_eq!(span.name, format!("send {topic}"), "{span:?}");
        let mut expected = common(span, "send", &id, &broker_port);
        expected.insert("messaging.client.id", s(&span.service));
        assert_eq!(semconv(span), expected, "{} ({})", span.name, span.service);
        assert_eq!(span.status_code, 0, "{} succeeded: status unset", span.name);
    }
    for span in &consumers {
        let topic = destination(span);
        assert_eq!(span.name, format!("process {topic}"), "{span:?}");
        let mut expected = common(span, "process", &id, &broker_port);
        let group = match &span.attributes["messaging.consumer.group.name"] {
            Attr::Str(group) => group.clone(),
            other => panic!("a string group name: {other:?}"),
        };
        assert_eq!(
            group, span.service,
            "each service consumes as its own group"
        );
        expected.insert("messaging.consumer.group.name", s(&group));
        expected.insert("messaging.client.id", s(&group));
        assert_eq!(semconv(span), expected, "{} ({})", span.name, span.service);
        assert_eq!(span.status_code, 0, "{} succeeded: status unset", span.name);
        // Single-message processing: the creation context (the send span) is both the
        // parent and the one link.
        let parent = trace
            .iter()
            .find(|p| p.span_id == span.parent_span_id)
            .expect("a parent in the trace");
        assert_eq!(
            parent.name,
            format!("send {topic}"),
            "{} is a child of the send",
            span.name
        );
        assert_eq!(parent.kind, SpanKind::Producer as i32);
        assert_eq!(
            span.links,
            vec![(parent.trace_id.clone(), parent.span_id.clone())],
            "{} ({}) links to its creation context",
            span.name,
            span.service
        );
    }
    let email_send = trace
        .iter()
        .any(|s| s.service == "email" && s.name == "deliver");
    assert!(email_send, "the email's send is in the trace");
}

/// The attributes the conventions define (the tracing layer adds code and thread attributes).
fn semconv(span: &Collected) -> BTreeMap<&str, Attr> {
    span.attributes
        .iter()
        .filter(|(k, _)| {
            ["messaging.", "server.", "error."]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect()
}

fn destination(span: &Collected) -> String {
    match span.attributes.get("messaging.destination.name") {
        Some(Attr::Str(topic)) => topic.clone(),
        other => panic!("{} has no string destination: {other:?}", span.name),
    }
}

/// What every send or process span of this order carries: `operation` is `send` or
/// `process`; the key is the order id; the partition id a string and the offset an int;
/// the server the first bootstrap server (this test's broker).
fn common(
    span: &Collected,
    operation: &str,
    order: &str,
    port: &Attr,
) -> BTreeMap<&'static str, Attr> {
    let partition = match &span.attributes["messaging.destination.partition.id"] {
        Attr::Str(p) if p.parse::<u32>().is_ok() => s(p),
        other => panic!("{}: a partition id string, not {other:?}", span.name),
    };
    let offset = match &span.attributes["messaging.kafka.offset"] {
        Attr::Int(o) if *o >= 0 => Attr::Int(*o),
        other => panic!("{}: an int offset, not {other:?}", span.name),
    };
    let message_id = match &span.attributes["messaging.message.id"] {
        Attr::Str(id) if uuid::Uuid::parse_str(id).is_ok() => s(id),
        other => panic!("{}: the event id, not {other:?}", span.name),
    };
    BTreeMap::from([
        ("messaging.system", s("kafka")),
        ("messaging.operation.name", s(operation)),
        ("messaging.operation.type", s(operation)),
        ("messaging.destination.name", s(&destination(span))),
        ("messaging.destination.partition.id", partition),
        ("messaging.kafka.offset", offset),
        ("messaging.kafka.message.key", s(order)),
        ("messaging.message.id", message_id),
        ("server.address", s("127.0.0.1")),
        ("server.port", port.clone()),
    ])
}

fn print_messaging_span(span: &Collected) {
    let kind = if span.kind == SpanKind::Producer as i32 {
        "PRODUCER"
    } else {
        "CONSUMER"
    };
    println!(
        "  {} [{}] kind={kind} status_code={} span_id={} parent={}",
        span.name, span.service, span.status_code, span.span_id, span.parent_span_id
    );
    for (key, value) in semconv(span) {
        println!("    {key}={value}");
    }
    for (trace_id, span_id) in &span.links {
        println!("    link -> {trace_id}/{span_id}");
    }
}

fn print_tree(trace: &[&Collected], span: &Collected, depth: usize) {
    let millis = span.end.saturating_sub(span.start) as f64 / 1e6;
    println!(
        "{:indent$}{} [{}] {:.1} ms",
        "",
        span.name,
        span.service,
        millis,
        indent = depth * 2
    );
    let mut children: Vec<&&Collected> = trace
        .iter()
        .filter(|s| s.parent_span_id == span.span_id)
        .collect();
    children.sort_by_key(|s| s.start);
    for child in children {
        print_tree(trace, child, depth + 1);
    }
}
