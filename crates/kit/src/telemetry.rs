//! One `init_telemetry` for every service: logs (pretty or JSON, see [`crate::log_format`]),
//! traces over OTLP/HTTP when an endpoint is configured (the Kafka spans follow the messaging
//! conventions, see [`crate::kafka::spans`]), and a Prometheus recorder served on `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::settings::TelemetrySettings;

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (a malformed endpoint, usually).
    #[error("invalid telemetry.otlp_endpoint: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// The log filter does not parse.
    #[error("invalid telemetry.log_filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// A global subscriber was already installed by someone else.
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInstalled(#[from] tracing_subscriber::util::TryInitError),
}

/// Flushes and shuts the trace exporter down when dropped: keep it alive in `main`.
#[must_use = "dropping the guard shuts tracing down"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("trace exporter shutdown failed: {err}");
        }
    }
}

/// Installs the global subscriber, the W3C propagator and the metrics recorder.
/// With no `otlp_endpoint` no exporter exists, so spans cost only what `tracing` costs.
pub fn init_telemetry(
    service_name: &str,
    service_version: &str,
    settings: &TelemetrySettings,
) -> Result<TelemetryGuard, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(&settings.log_filter)?,
    };
    // Colours only for a person at a terminal; a file, a pipe or a container log gets none.
    let ansi = crate::log_format::ansi_wanted(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let fmt = crate::log_format::fmt_layer(settings.log_format, ansi, std::io::stdout);
    let provider = match &settings.otlp_endpoint {
        Some(endpoint) => Some(tracer_provider(service_name, service_version, endpoint)?),
        None => None,
    };
    let otel = provider
        .as_ref()
        .map(|p| otel_layer(p.tracer(service_name.to_owned())));
    // Lines carry the trace id (with tracing) and, inside a Kafka span, the record's topic,
    // partition, offset and key.
    let ids = otel
        .is_some()
        .then(crate::log_format::TraceIdLayer::default);
    tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(ids)
        .with(crate::log_format::RecordContextLayer)
        .with(fmt)
        .try_init()?;
    let _ = metrics_handle();
    Ok(TelemetryGuard { provider })
}

/// The OpenTelemetry layer as the services install it. Every record gets a span (a
/// consumer's `process`, the relay's `send`), so the layer adds neither the source location
/// and thread attributes nor busy/idle timings: they cost allocations and clock reads per span
/// and say nothing the messaging attributes don't.
pub fn otel_layer<S>(
    tracer: opentelemetry_sdk::trace::Tracer,
) -> OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_tracer(tracer)
}

fn tracer_provider(
    service_name: &str,
    service_version: &str,
    endpoint: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()?;
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attribute(KeyValue::new("service.version", service_version.to_owned()))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Histogram buckets in seconds, 0.5 ms to 60 s: HTTP, handler and publish latencies.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Real histograms (not summaries), so latencies aggregate across replicas.
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (in tests); ours then just renders
            // nothing, which is better than refusing to start.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// A router serving `GET /metrics` in the Prometheus text format.
pub fn metrics_router() -> axum::Router {
    let handle = metrics_handle();
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_in_the_prometheus_text_format() {
        let handle = metrics_handle();
        metrics::counter!("spine_test_records_total", "outcome" => "handled").increment(3);
        let text = handle.render();
        assert!(
            text.contains(r#"spine_test_records_total{outcome="handled"} 3"#),
            "{text}"
        );
    }
}
