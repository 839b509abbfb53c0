//! Record headers: the names the kit writes, an owned header list, and OpenTelemetry
//! propagation over them.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId};
use rdkafka::message::{BorrowedHeaders, Header, Headers as _, OwnedHeaders};

/// The event's unique id (a UUID); the inbox key of idempotent consumers.
pub const EVENT_ID: &str = "event-id";
/// The event type, e.g. `OrderPlaced`.
pub const EVENT_TYPE: &str = "event-type";
/// The writer's schema version of the event, e.g. `2`.
pub const EVENT_VERSION: &str = "event-version";
/// How the value is encoded.
pub const CONTENT_TYPE: &str = "content-type";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace state.
pub const TRACESTATE: &str = "tracestate";

/// Headers the consumer runner adds to a dead-lettered record.
pub mod dlq {
    /// The handler's error message.
    pub const ERROR: &str = "dlq-error";
    /// `poison` or `retries-exhausted`.
    pub const REASON: &str = "dlq-reason";
    /// The topic the record was consumed from.
    pub const ORIGINAL_TOPIC: &str = "dlq-original-topic";
    /// The partition the record was consumed from.
    pub const ORIGINAL_PARTITION: &str = "dlq-original-partition";
    /// The record's offset in that partition.
    pub const ORIGINAL_OFFSET: &str = "dlq-original-offset";
    /// The consumer group that gave up on it.
    pub const CONSUMER_GROUP: &str = "dlq-consumer-group";
    /// How many times the handler ran on it.
    pub const ATTEMPTS: &str = "dlq-attempts";
    /// When it was dead-lettered, in Unix milliseconds.
    pub const FAILED_AT: &str = "dlq-failed-at";
}

/// The buffer [`Headers::from_borrowed`] starts with: the names and values of the kit's own
/// headers (event id, type and version, content type, `traceparent`) fit in it.
const BORROWED_BYTES: usize = 256;

/// An ordered, owned list of headers. Kafka allows repeated names; [`Headers::get`] returns the
/// last, so a later writer overrides an earlier one.
///
/// The names and values are kept back to back in one buffer (two allocations per list, not
/// two per header): the consumer runner copies every record's headers.
#[derive(Clone, Default)]
pub struct Headers {
    /// Each header's name, then its value.
    bytes: Vec<u8>,
    /// Per header, where its name ends and where its value ends in `bytes` (its name starts
    /// where the previous value ends).
    ends: Vec<(usize, usize)>,
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.iter()
                    .map(|(name, value)| (name, String::from_utf8_lossy(value))),
            )
            .finish()
    }
}

impl Headers {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty list with room for `headers` headers of `bytes` bytes of names and values.
    fn with_capacity(headers: usize, bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(headers),
        }
    }

    /// Appends a header.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.push(name.into().as_str(), &value.into());
        self
    }

    fn push(&mut self, name: &str, value: &[u8]) {
        self.bytes.extend_from_slice(name.as_bytes());
        let name_end = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.ends.push((name_end, self.bytes.len()));
    }

    /// The headers as (name, value) byte slices, in order.
    fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut start = 0;
        self.ends.iter().map(move |&(name_end, value_end)| {
            let entry = (
                &self.bytes[start..name_end],
                &self.bytes[name_end..value_end],
            );
            start = value_end;
            entry
        })
    }

    /// Appends a header, builder style.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.insert(name, value);
        self
    }

    /// The last value of `name`, as bytes.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        // The offsets run forwards: keep the last match.
        let mut found = None;
        for (n, v) in self.entries() {
            if n == name.as_bytes() {
                found = Some(v);
            }
        }
        found
    }

    /// The last value of `name`, if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// All headers in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        // Names only ever enter as `&str`, so they are UTF-8.
        self.entries()
            .map(|(n, v)| (std::str::from_utf8(n).unwrap_or_default(), v))
    }

    /// Copies librdkafka's borrowed headers. Null values become empty values.
    ///
    /// One pass: each `try_get` is a lookup in librdkafka (and a `strlen` of the name), so the
    /// buffer is not sized by a first pass but starts at [`BORROWED_BYTES`], which holds the
    /// headers the kit writes (trace context included) without growing.
    pub fn from_borrowed(headers: &BorrowedHeaders) -> Self {
        let count = headers.count();
        let mut out = Self::with_capacity(count, BORROWED_BYTES);
        for h in (0..count).filter_map(|i| headers.try_get(i)) {
            out.push(h.key, h.value.unwrap_or_default());
        }
        out
    }

    /// Converts to librdkafka's owned headers for a produce call.
    pub fn to_owned_headers(&self) -> OwnedHeaders {
        self.iter().fold(
            OwnedHeaders::new_with_capacity(self.ends.len()),
            |acc, (k, v)| {
                acc.insert(Header {
                    key: k,
                    value: Some(v),
                })
            },
        )
    }

    /// Writes the context of the current `tracing` span (its OpenTelemetry context) as
    /// `traceparent`/`tracestate`. Does nothing when there is no valid span context.
    pub fn inject_current_context(&mut self) {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let context = tracing::Span::current().context();
        self.inject_context(&context);
    }

    /// Writes `context` as `traceparent`/`tracestate`, replacing earlier ones, exactly as the
    /// SDK's `TraceContextPropagator` writes them (a test compares the two), but without its
    /// `format!`: every relayed row and every dead letter is written. Does nothing when the
    /// context has no valid span context.
    pub fn inject_context(&mut self, context: &opentelemetry::Context) {
        let span = context.span();
        let span = span.span_context();
        if !span.is_valid() {
            return;
        }
        // `00-{trace id}-{span id}-{flags}`, in lowercase hex, only the sampled flag kept.
        let mut parent = [b'-'; 55];
        parent[..2].copy_from_slice(b"00");
        hex(&span.trace_id().to_bytes(), &mut parent[3..35]);
        hex(&span.span_id().to_bytes(), &mut parent[36..52]);
        hex(
            &[(span.trace_flags() & TraceFlags::SAMPLED).to_u8()],
            &mut parent[53..],
        );
        self.replace(TRACEPARENT, &parent);
        self.replace(TRACESTATE, span.trace_state().header().as_bytes());
    }

    /// Removes every `name` header, then appends `name: value`.
    fn replace(&mut self, name: &str, value: &[u8]) {
        if self.get(name).is_some() {
            let mut kept = Self::with_capacity(self.ends.len(), self.bytes.len());
            for (n, v) in self.iter().filter(|(n, _)| *n != name) {
                kept.push(n, v);
            }
            *self = kept;
        }
        self.push(name, value);
    }

    /// Reads the W3C trace context carried in these headers into the current context (the
    /// current one unchanged when there is none or it is invalid), as the SDK's
    /// `TraceContextPropagator::extract` does.
    pub fn extract_context(&self) -> opentelemetry::Context {
        let current = opentelemetry::Context::current();
        match self.remote_span_context() {
            Some(span) => current.with_remote_span_context(span),
            None => current,
        }
    }

    /// The span context in `traceparent` (and `tracestate`), parsed by the rules of the SDK's
    /// `TraceContextPropagator` (a test compares the two), without its vector of the header's
    /// parts: every consumed record and every relayed row is parsed.
    fn remote_span_context(&self) -> Option<SpanContext> {
        let value = self.get_str(TRACEPARENT).unwrap_or_default().trim();
        let mut parts = value.split_terminator('-');
        let (Some(version), Some(trace_id), Some(span_id), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        // Versions up to 254; version 0 has exactly four parts, a later one may have more.
        let version = u8::from_str_radix(version, 16).ok()?;
        if version == u8::MAX || version == 0 && parts.next().is_some() {
            return None;
        }
        let lowercase = |part: &str| !part.bytes().any(|b| b.is_ascii_uppercase());
        if !(lowercase(trace_id) && lowercase(span_id) && lowercase(flags)) {
            return None;
        }
        let trace_id = TraceId::from_hex(trace_id).ok()?;
        let span_id = SpanId::from_hex(span_id).ok()?;
        // Only the sampled flag is kept; unknown flags are accepted and cleared.
        let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()?) & TraceFlags::SAMPLED;
        let state = self
            .get_str(TRACESTATE)
            .map(|state| state.parse().unwrap_or_default())
            .unwrap_or_default();
        let span = SpanContext::new(trace_id, span_id, flags, true, state);
        span.is_valid().then_some(span)
    }
}

impl Headers {
    /// A compact, lossless encoding for storage (the outbox): for each header, the name's and
    /// the value's lengths as little-endian u32, then their bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let size = 8 * self.ends.len() + self.bytes.len();
        let mut out = Vec::with_capacity(size);
        for (name, value) in self.entries() {
            for part in [name, value] {
                out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_le_bytes());
                out.extend_from_slice(part);
            }
        }
        out
    }

    /// Decodes [`Headers::to_bytes`]; `None` if the bytes are not such an encoding.
    pub fn from_bytes(mut bytes: &[u8]) -> Option<Self> {
        fn take<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
            let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
            let part = bytes.get(4..4 + len)?;
            *bytes = &bytes[4 + len..];
            Some(part)
        }
        let mut headers = Self::with_capacity(0, bytes.len());
        while !bytes.is_empty() {
            let name = std::str::from_utf8(take(&mut bytes)?).ok()?;
            let value = take(&mut bytes)?;
            headers.push(name, value);
        }
        Some(headers)
    }
}

/// Writes `bytes` into `out` (twice as long) as lowercase hex.
fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

impl Injector for Headers {
    fn set(&mut self, key: &str, value: String) {
        self.replace(key, value.as_bytes());
    }
}

impl Extractor for Headers {
    fn get(&self, key: &str) -> Option<&str> {
        self.get_str(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.iter().map(|(n, _)| n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{TraceContextExt, TraceState};

    #[test]
    fn trace_context_survives_a_round_trip_through_headers() {
        let span = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let mut headers = Headers::new().with(EVENT_ID, "e1");
        headers.inject_context(&opentelemetry::Context::new().with_remote_span_context(span));
        assert_eq!(
            headers.get_str(TRACEPARENT),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let extracted = headers.extract_context();
        assert_eq!(
            extracted.span().span_context().trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
    }

    #[test]
    fn headers_survive_their_storage_encoding() {
        let headers = Headers::new()
            .with("a", "1")
            .with("bin", vec![0u8, 255, 7])
            .with("a", "");
        assert_eq!(Headers::from_bytes(&headers.to_bytes()), Some(headers));
        assert_eq!(Headers::from_bytes(&[1, 0, 0]), None);
        assert_eq!(Headers::from_bytes(&[9, 0, 0, 0, b'x']), None);
    }

    #[test]
    fn injecting_a_context_again_replaces_the_old_one_and_keeps_the_others_in_order() {
        let context = |span: &str| {
            let span = SpanContext::new(
                TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
                SpanId::from_hex(span).unwrap(),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            );
            opentelemetry::Context::new().with_remote_span_context(span)
        };
        let mut headers = Headers::new().with(EVENT_ID, "e1");
        headers.inject_context(&context("00f067aa0ba902b7"));
        headers.insert("after", vec![1u8, 2]);
        headers.inject_context(&context("00f067aa0ba902b8"));
        let names: Vec<&str> = headers.iter().map(|(n, _)| n).collect();
        assert_eq!(names, [EVENT_ID, "after", TRACEPARENT, TRACESTATE]);
        assert_eq!(
            headers.get_str(TRACEPARENT),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b8-01")
        );
        assert_eq!(headers.get("after"), Some(&[1u8, 2][..]));
        assert_eq!(headers, headers.clone());
        assert_ne!(headers, Headers::new().with(EVENT_ID, "e1"));
    }

    #[test]
    fn trace_context_is_extracted_as_the_sdk_extracts_it() {
        use opentelemetry::propagation::TextMapPropagator as _;
        let sdk = opentelemetry_sdk::propagation::TraceContextPropagator::new();
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let parents = [
            format!("00-{id}-00f067aa0ba902b7-01"),
            format!("00-{id}-00f067aa0ba902b7-00"),
            format!("00-{id}-00f067aa0ba902b7-ff"),
            format!("  00-{id}-00f067aa0ba902b7-01 "),
            format!("00-{id}-00f067aa0ba902b7-01-"),
            format!("00-{id}-00f067aa0ba902b7-01-extra"),
            format!("01-{id}-00f067aa0ba902b7-01-extra"),
            format!("fe-{id}-00f067aa0ba902b7-01"),
            format!("ff-{id}-00f067aa0ba902b7-01"),
            format!("0g-{id}-00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", id.to_uppercase()),
            format!("00-{id}-00F067AA0BA902B7-01"),
            format!("00-{id}-00f067aa0ba902b7-0A"),
            format!("00-{id}-00f067aa0ba902b7"),
            format!("00-{id}-0000000000000000-01"),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_owned(),
            format!("00-{id}-00f067aa0ba902b-01"),
            format!("00-{id}-00f067aa0ba902b7-1"),
            String::new(),
            "garbage".to_owned(),
        ];
        for parent in &parents {
            for state in [None, Some("vendor=opaque,other=1"), Some("not a state")] {
                let mut headers = Headers::new().with(TRACEPARENT, parent.as_str());
                if let Some(state) = state {
                    headers.insert(TRACESTATE, state);
                }
                let ours = headers.extract_context();
                let theirs = sdk.extract(&headers);
                assert_eq!(
                    ours.span().span_context(),
                    theirs.span().span_context(),
                    "traceparent {parent:?}, tracestate {state:?}"
                );
                assert_eq!(ours.has_active_span(), theirs.has_active_span());
            }
        }
        assert!(
            !Headers::new()
                .extract_context()
                .span()
                .span_context()
                .is_valid()
        );
    }

    #[test]
    fn trace_context_is_injected_as_the_sdk_injects_it() {
        use opentelemetry::propagation::TextMapPropagator as _;
        let sdk = opentelemetry_sdk::propagation::TraceContextPropagator::new();
        let state: TraceState = "vendor=opaque,other=1".parse().unwrap();
        let spans = [
            (
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "00f067aa0ba902b7",
                1,
                TraceState::default(),
            ),
            (
                "0000000000000000000000000000000a",
                "a000000000000000",
                0,
                state.clone(),
            ),
            (
                "ffffffffffffffffffffffffffffffff",
                "ffffffffffffffff",
                0xff,
                state,
            ),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "0000000000000000",
                1,
                TraceState::default(),
            ),
        ];
        for (trace_id, span_id, flags, state) in spans {
            let span = SpanContext::new(
                TraceId::from_hex(trace_id).unwrap(),
                SpanId::from_hex(span_id).unwrap(),
                TraceFlags::new(flags),
                true,
                state,
            );
            let context = opentelemetry::Context::new().with_remote_span_context(span);
            let mut ours = Headers::new().with(EVENT_ID, "e1").with(TRACESTATE, "old");
            let mut theirs = ours.clone();
            ours.inject_context(&context);
            sdk.inject_context(&context, &mut theirs);
            assert_eq!(ours, theirs, "{trace_id}-{span_id}-{flags}");
        }
    }

    #[test]
    fn the_last_header_of_a_name_wins() {
        let headers = Headers::new().with("a", "1").with("a", "2");
        assert_eq!(headers.get_str("a"), Some("2"));
    }
}
