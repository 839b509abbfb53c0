//! HTTP server pieces every service shares: a server span per request that joins an incoming
//! W3C trace, the request-latency histogram by route and status, and the health routes.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use rdkafka::producer::{FutureProducer, Producer as _};
use serde_json::json;
use sqlx::AnyPool;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Middleware (`axum::middleware::from_fn(observe)`): a server span named `METHOD /route`,
/// child of the request's `traceparent` if any, and `http_server_request_duration_seconds`.
pub async fn observe(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let span = tracing::info_span!(
        "request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    let _ = span.set_parent(extract_context(request.headers()));
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    metrics::histogram!(
        "http_server_request_duration_seconds",
        "method" => method,
        "route" => route,
        "status" => status.to_string(),
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// The W3C trace context of an HTTP request (empty when it carries none).
pub fn extract_context(headers: &HeaderMap) -> opentelemetry::Context {
    opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// `GET /healthz` (200 while the process runs) and `GET /readyz` (200 when the database answers
/// and the broker's metadata can be fetched, 503 otherwise, with each check in the JSON body).
/// Merge it into any router: it carries its own state.
pub fn health_router<S: Clone + Send + Sync + 'static>(
    pool: AnyPool,
    producer: FutureProducer,
) -> Router<S> {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route(
            "/readyz",
            get(move || ready(pool.clone(), producer.clone())),
        )
}

async fn ready(pool: AnyPool, producer: FutureProducer) -> Response {
    let db_ok = sqlx::query("SELECT 1").execute(&pool).await.is_ok();
    // fetch_metadata blocks; keep it off the async workers.
    let broker_ok = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(None, Duration::from_secs(2))
            .is_ok()
    })
    .await
    .unwrap_or(false);
    let check = |ok: bool| if ok { "ok" } else { "unavailable" };
    let status = if db_ok && broker_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": check(db_ok && broker_ok),
        "checks": { "database": check(db_ok), "broker": check(broker_ok) },
    });
    (status, Json(body)).into_response()
}

/// The `healthcheck` subcommand every service binary has, for container healthchecks in
/// images without a shell or curl: GETs `path` on `127.0.0.1:port` and succeeds on a 2xx.
///
/// # Errors
/// A message naming what failed: connecting, the exchange, or the status line.
pub fn probe(port: u16, path: &str, timeout: Duration) -> Result<(), String> {
    use std::io::{Read, Write};
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)
        .map_err(|err| format!("connecting to {address}: {err}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .and_then(|()| {
            write!(
                stream,
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
        })
        .map_err(|err| format!("sending GET {path}: {err}"))?;
    let mut head = [0_u8; 12];
    stream
        .read_exact(&mut head)
        .map_err(|err| format!("reading the answer to GET {path}: {err}"))?;
    // "HTTP/1.1 200"
    let status = std::str::from_utf8(&head[9..12]).unwrap_or("???");
    if head.starts_with(b"HTTP/1.") && status.starts_with('2') {
        Ok(())
    } else {
        Err(format!("GET {path} answered {status}"))
    }
}

/// Runs [`probe`] on `/readyz` when the process was started as `<binary> healthcheck`, and
/// exits with 0 (ready) or 1 (not ready, with the reason on stderr); otherwise returns.
pub fn healthcheck_subcommand(port: u16) {
    if std::env::args().nth(1).as_deref() != Some("healthcheck") {
        return;
    }
    match probe(port, "/readyz", Duration::from_secs(3)) {
        Ok(()) => std::process::exit(0),
        Err(reason) => {
            eprintln!("not ready: {reason}");
            std::process::exit(1)
        }
    }
}

/// Why a JSON request body was refused; each service maps it to its own error response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The request is not `Content-Type: application/json`.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// The body exceeds the router's `DefaultBodyLimit`.
    #[error("the body is too large")]
    TooLarge,
    /// The body is not JSON at all.
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// A field is missing, unknown or of the wrong type.
    #[error("{field}: {message}")]
    InvalidField {
        /// Its JSON path, e.g. `items[0].quantity`.
        field: String,
        /// serde's message.
        message: String,
    },
}

/// Parses a JSON request body into `T`, naming the field at fault (`items[0].quantity`) rather
/// than the line and column. Take the body as `Result<Bytes, BytesRejection>` so that an
/// oversized body arrives here too, instead of as axum's plain-text 413.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, BodyError> {
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(BodyError::UnsupportedMediaType);
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            BodyError::TooLarge
        } else {
            BodyError::Malformed(rejection.body_text())
        }
    })?;
    let mut deserializer = serde_json::Deserializer::from_slice(&body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return BodyError::Malformed(inner.to_string());
        }
        let message = inner.to_string();
        // `.` is the root: serde names the missing or unknown field in backticks.
        let field = if path == "." {
            message.split('`').nth(1).unwrap_or(".").to_owned()
        } else {
            path
        };
        BodyError::InvalidField { field, message }
    })?;
    deserializer
        .end()
        .map_err(|e| BodyError::Malformed(e.to_string()))?;
    Ok(value)
}

/// The JSON error every service answers with: `{"error": {"code", "message", "field"?}}`, where
/// `field` names the offending input (a body field such as `items[1].quantity`, or a header).
pub fn error_response(
    status: StatusCode,
    code: &str,
    message: impl std::fmt::Display,
    field: Option<&str>,
) -> Response {
    let mut body = json!({ "error": { "code": code, "message": message.to_string() } });
    if let Some(field) = field {
        body["error"]["field"] = json!(field);
    }
    (status, Json(body)).into_response()
}

/// The 503 a service answers while a dependency is down (see [`crate::db::is_outage`]): the
/// JSON error body with code `unavailable`, and `Retry-After: 1`, so that clients and load
/// balancers back off and retry instead of counting a failure.
pub fn unavailable_response(message: impl std::fmt::Display) -> Response {
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        message,
        None,
    );
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    response
}

/// Binds the service's HTTP listener; the error names the settings to change.
pub async fn bind(host: &str, port: u16) -> anyhow::Result<tokio::net::TcpListener> {
    let address = format!("{host}:{port}");
    tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|err| anyhow::anyhow!("binding {address} (http.host, http.port): {err}"))
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt;

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        quantity: i32,
    }

    fn json_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            "application/json; charset=utf-8".parse().unwrap(),
        );
        headers
    }

    fn field_of(body: &'static str) -> Result<Body, BodyError> {
        parse_json(
            &json_headers(),
            Ok(axum::body::Bytes::from_static(body.as_bytes())),
        )
    }

    #[test]
    fn a_bad_json_body_is_refused_naming_the_field() {
        let invalid = |body| match field_of(body) {
            Err(BodyError::InvalidField { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            invalid(r#"{"name":"a","items":[{"quantity":"two"}]}"#),
            "items[0].quantity"
        );
        assert_eq!(invalid(r#"{"name":"a","items":[],"extra":1}"#), "extra");
        assert_eq!(invalid(r#"{"items":[]}"#), "name");
        assert!(matches!(
            field_of(r#"{"name":"#),
            Err(BodyError::Malformed(_))
        ));
        assert!(matches!(
            field_of(r#"{"name":"a","items":[]} x"#),
            Err(BodyError::Malformed(_))
        ));
        assert!(field_of(r#"{"name":"a","items":[{"quantity":2}]}"#).is_ok());
        let plain =
            parse_json::<Body>(&HeaderMap::new(), Ok(axum::body::Bytes::from_static(b"{}")));
        assert_eq!(plain.unwrap_err(), BodyError::UnsupportedMediaType);
    }

    #[test]
    fn an_incoming_traceparent_becomes_the_request_spans_parent_context() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let context = extract_context(&headers);
        let span = context.span();
        let parent = span.span_context();
        assert!(parent.is_remote());
        assert_eq!(
            parent.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parent.span_id().to_string(), "00f067aa0ba902b7");
        assert!(
            !extract_context(&HeaderMap::new())
                .span()
                .span_context()
                .is_valid()
        );
    }

    #[tokio::test]
    async fn the_probe_passes_on_2xx_and_names_the_status_or_the_failure_otherwise() {
        let app = Router::new()
            .route("/readyz", get(|| async { StatusCode::OK }))
            .route("/down", get(|| async { StatusCode::SERVICE_UNAVAILABLE }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let probe_path = |path: &'static str| {
            tokio::task::spawn_blocking(move || probe(port, path, Duration::from_secs(3)))
        };

        assert_eq!(probe_path("/readyz").await.unwrap(), Ok(()));
        assert_eq!(
            probe_path("/down").await.unwrap(),
            Err("GET /down answered 503".to_owned())
        );
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let refused = tokio::task::spawn_blocking(move || {
            probe(closed_port, "/readyz", Duration::from_secs(3))
        })
        .await
        .unwrap();
        assert!(refused.unwrap_err().starts_with("connecting to"));
    }
}
