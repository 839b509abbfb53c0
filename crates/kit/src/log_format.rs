//! Log lines a person can read, and the same facts as JSON for a log pipeline.
//!
//! A line holds the time, the level, the target, the message and the event's own fields, then
//! its context: inside a trace the `trace_id`, and inside a Kafka span (`send {topic}` or
//! `process {topic}`, see [`crate::kafka::spans`]) the record's `topic`, `partition`, `offset`
//! and `key`. Other span fields are not repeated on every line (the trace has them), which keeps
//! a consumer's line short:
//!
//! ```text
//! 2026-11-30T10:57:30.123Z  WARN spine_kit::kafka::consumer::process: retrying record attempt=1 class=unavailable trace_id=4bf92f3577b34da6a3ce929d0e0e4736 topic=orders.events partition=1 offset=42 key=0193a5c4-…
//! ```
//!
//! - [`PrettyWithIds`] writes that line, with ANSI colours only when asked to (see
//!   [`ansi_wanted`]: a terminal, and no `NO_COLOR`);
//! - [`JsonWithIds`] writes one JSON object a line with the same facts as keys;
//! - [`TraceIdLayer`] and [`RecordContextLayer`] keep, per span, what those lines need;
//!   [`NoSpanFields`] spares the fmt layer from formatting every span's fields.

use std::fmt::{self, Write as _};
use std::sync::OnceLock;

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::settings::LogFormat;

/// The span fields a line's record context comes from: the messaging conventions' names, so
/// any span that follows them (the kit's `send` and `process` spans) gets short lines.
const TOPIC: &str = "messaging.destination.name";
const PARTITION: &str = "messaging.destination.partition.id";
const OFFSET: &str = "messaging.kafka.offset";
const KEY: &str = "messaging.kafka.message.key";

/// Whether the pretty format should colour its output: only on a terminal, and never when the
/// `NO_COLOR` environment variable is set to a non-empty value (<https://no-color.org>).
pub fn ansi_wanted(is_terminal: bool) -> bool {
    ansi_for(is_terminal, std::env::var_os("NO_COLOR").as_deref())
}

fn ansi_for(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

/// The fmt layer for `format`, writing to `writer`: colours only if `ansi`, no span field
/// formatted wholesale. Install [`RecordContextLayer`] (and, with tracing, [`TraceIdLayer`])
/// beside it for the lines' context.
pub fn fmt_layer<S, W>(format: LogFormat, ansi: bool, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .fmt_fields(NoSpanFields)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Pretty => layer.event_format(PrettyWithIds::new(ansi)).boxed(),
        LogFormat::Json => layer.event_format(JsonWithIds).boxed(),
    }
}

/// The OpenTelemetry ids of a span, stored in its extensions by [`TraceIdLayer`] when the span
/// is entered (after `set_parent`, so the ids are final). Plain ids: nothing is formatted until
/// a line is written.
#[derive(Clone, Copy)]
struct TraceIds {
    trace_id: TraceId,
    span_id: SpanId,
}

/// Records each entered span's OpenTelemetry ids for the log formats. A formatter can't ask
/// the OpenTelemetry layer itself: it runs inside the dispatcher, which refuses re-entry.
/// Install it after `tracing_opentelemetry::layer()`.
#[derive(Default)]
pub struct TraceIdLayer {
    dispatch: OnceLock<WeakDispatch>,
}

impl<S> Layer<S> for TraceIdLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if span.extensions().get::<TraceIds>().is_some() {
            return;
        }
        let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade) else {
            return;
        };
        let Some(context) = tracing_opentelemetry::get_otel_context(id, &dispatch) else {
            return;
        };
        let otel_span = context.span();
        let ids = otel_span.span_context();
        if ids.is_valid() {
            span.extensions_mut().insert(TraceIds {
                trace_id: ids.trace_id(),
                span_id: ids.span_id(),
            });
        }
    }
}

/// The record a Kafka span is about, as its log lines show it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct RecordContext {
    topic: Option<String>,
    partition: Option<i64>,
    offset: Option<i64>,
    key: Option<String>,
}

impl Visit for RecordContext {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            TOPIC => self.topic = Some(value.to_owned()),
            KEY => self.key = Some(value.to_owned()),
            PARTITION => self.partition = value.parse().ok(),
            _ => {}
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        match field.name() {
            OFFSET => self.offset = Some(value),
            PARTITION => self.partition = Some(value),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_i64(field, i64::try_from(value).unwrap_or(i64::MAX));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            // The conventions want the partition id as a string, so spans record it with `%`:
            // read it back through a stack buffer rather than a String.
            PARTITION => {
                let mut digits = StackText::default();
                if write!(digits, "{value:?}").is_ok() {
                    self.partition = digits.as_str().parse().ok();
                }
            }
            TOPIC => self.topic = Some(format!("{value:?}")),
            KEY => self.key = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

/// Up to 24 bytes of text without a heap allocation (a partition number's digits).
#[derive(Default)]
struct StackText {
    bytes: [u8; 24],
    len: usize,
}

impl StackText {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        self.bytes
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Keeps, for each span with a `messaging.destination.name` field, the record's topic,
/// partition, offset and key (also when recorded later, as the relay does once the broker has
/// answered), so that its lines can show them. Other spans cost a field lookup.
#[derive(Default)]
pub struct RecordContextLayer;

impl<S> Layer<S> for RecordContextLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().fields().field(TOPIC).is_none() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut record = RecordContext::default();
        attrs.record(&mut record);
        span.extensions_mut().insert(record);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(record) = span.extensions_mut().get_mut::<RecordContext>() {
            values.record(record);
        }
    }
}

/// A span field formatter that formats nothing. The formats here never print span fields
/// wholesale, so the fmt layer (`.fmt_fields(NoSpanFields)`) need not format them per span.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSpanFields;

impl<'writer> FormatFields<'writer> for NoSpanFields {
    fn format_fields<R: RecordFields>(&self, _: Writer<'writer>, _: R) -> fmt::Result {
        Ok(())
    }
}

/// The trace and span id of the event's innermost span that has them.
fn event_ids<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<TraceIds>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    ctx.event_scope()?
        .find_map(|span| span.extensions().get::<TraceIds>().copied())
}

/// Calls `f` with the record context of the event's innermost Kafka span, if any.
fn with_record_context<S, N, T>(
    ctx: &FmtContext<'_, S, N>,
    f: impl FnOnce(&RecordContext) -> T,
) -> Option<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let span = ctx
        .event_scope()?
        .find(|span| span.extensions().get::<RecordContext>().is_some())?;
    let extensions = span.extensions();
    extensions.get::<RecordContext>().map(f)
}

/// The human format: `time LEVEL target: message fields… trace_id=… topic=… partition=…
/// offset=… key=…`. Values with spaces, quotes, `=` or control characters are quoted and
/// escaped, so a line stays one line and writes no terminal escapes of its own.
pub struct PrettyWithIds {
    ansi: bool,
}

impl PrettyWithIds {
    /// With or without ANSI colours (see [`ansi_wanted`]).
    pub fn new(ansi: bool) -> Self {
        Self { ansi }
    }
}

/// ANSI styles, or nothing.
struct Style {
    on: bool,
}

impl Style {
    fn paint(&self, w: &mut Writer<'_>, code: &str) -> fmt::Result {
        if self.on {
            write!(w, "\x1b[{code}m")?;
        }
        Ok(())
    }

    fn reset(&self, w: &mut Writer<'_>) -> fmt::Result {
        self.paint(w, "0")
    }

    fn level(level: Level) -> &'static str {
        match level {
            Level::ERROR => "31",
            Level::WARN => "33",
            Level::INFO => "32",
            Level::DEBUG => "34",
            Level::TRACE => "35",
        }
    }
}

impl<S, N> FormatEvent<S, N> for PrettyWithIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let style = Style { on: self.ansi };
        let w = &mut writer;
        let metadata = event.metadata();
        style.paint(w, "2")?;
        w.write_str(&timestamp())?;
        style.reset(w)?;
        w.write_char(' ')?;
        style.paint(w, Style::level(*metadata.level()))?;
        write!(w, "{:>5}", metadata.level().as_str())?;
        style.reset(w)?;
        let mut head = Head::default();
        event.record(&mut head);
        w.write_char(' ')?;
        style.paint(w, "2")?;
        w.write_str(head.log_target.as_deref().unwrap_or(metadata.target()))?;
        w.write_char(':')?;
        style.reset(w)?;
        if let Some(message) = &head.message {
            w.write_char(' ')?;
            write_escaped(w, message)?;
        }
        let mut fields = PrettyFields {
            writer: w,
            style: &style,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        if let Some(ids) = event_ids(ctx) {
            write_pair(w, &style, "trace_id", format_args!("{}", ids.trace_id))?;
        }
        with_record_context(ctx, |record| -> fmt::Result {
            if let Some(topic) = &record.topic {
                write_pair(w, &style, "topic", format_args!("{}", Quoted(topic)))?;
            }
            if let Some(partition) = record.partition {
                write_pair(w, &style, "partition", format_args!("{partition}"))?;
            }
            if let Some(offset) = record.offset {
                write_pair(w, &style, "offset", format_args!("{offset}"))?;
            }
            if let Some(key) = &record.key {
                write_pair(w, &style, "key", format_args!("{}", Quoted(key)))?;
            }
            Ok(())
        })
        .transpose()?;
        writeln!(w)
    }
}

/// What a line shows before its fields: the message, and the real target of an event that
/// came through the `log` bridge.
#[derive(Default)]
struct Head {
    message: Option<String>,
    log_target: Option<String>,
}

impl Visit for Head {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = Some(value.to_owned()),
            "log.target" => self.log_target = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = Some(format!("{value:?}")),
            "log.target" => self.log_target = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

/// Writes an event's fields, but its message and the `log` bridge's bookkeeping, as
/// ` name=value`.
struct PrettyFields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    style: &'a Style,
    result: fmt::Result,
}

impl PrettyFields<'_, '_> {
    fn skip(field: &Field) -> bool {
        field.name() == "message" || field.name().starts_with("log.")
    }

    fn pair(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_ok() && !Self::skip(field) {
            self.result = write_pair(self.writer, self.style, field.name(), value);
        }
    }
}

impl Visit for PrettyFields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.pair(field, format_args!("{}", Quoted(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.pair(field, format_args!("{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.pair(field, format_args!("{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.pair(field, format_args!("{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.pair(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_ok() && !Self::skip(field) {
            let text = format!("{value:?}");
            self.pair(field, format_args!("{}", Quoted(&text)));
        }
    }
}

/// ` name=value`, the name dimmed on a terminal.
fn write_pair(
    w: &mut Writer<'_>,
    style: &Style,
    name: &str,
    value: fmt::Arguments<'_>,
) -> fmt::Result {
    w.write_char(' ')?;
    style.paint(w, "2")?;
    w.write_str(name)?;
    w.write_char('=')?;
    style.reset(w)?;
    w.write_fmt(value)
}

/// A value as is, or Debug-quoted (escapes included) when it would be ambiguous or unsafe on
/// a terminal: empty, or with whitespace, `=`, `"` or a control character.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.0.is_empty()
            && !self
                .0
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '=' || c == '"');
        if plain {
            f.write_str(self.0)
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

/// A message as is but for control characters, which are escaped (no terminal escapes, no
/// line breaks inside a line).
fn write_escaped(w: &mut Writer<'_>, text: &str) -> fmt::Result {
    for c in text.chars() {
        if c.is_control() {
            write!(w, "{}", c.escape_default())?;
        } else {
            w.write_char(c)?;
        }
    }
    Ok(())
}

/// One JSON object a line: `timestamp`, `level`, `target`, `trace_id`, `span_id` and `span`
/// (the current span's name) inside a trace, `topic`, `partition`, `offset` and `key` inside a
/// Kafka span, then the event's fields, `message` included.
pub struct JsonWithIds;

impl<S, N> FormatEvent<S, N> for JsonWithIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut object = serde_json::Map::new();
        object.insert("timestamp".into(), timestamp().into());
        object.insert("level".into(), event.metadata().level().as_str().into());
        object.insert("target".into(), event.metadata().target().into());
        if let Some(ids) = event_ids(ctx) {
            object.insert("trace_id".into(), ids.trace_id.to_string().into());
            object.insert("span_id".into(), ids.span_id.to_string().into());
        }
        if let Some(span) = ctx.lookup_current() {
            object.insert("span".into(), span.name().into());
        }
        with_record_context(ctx, |record| {
            if let Some(topic) = &record.topic {
                object.insert("topic".into(), topic.as_str().into());
            }
            if let Some(partition) = record.partition {
                object.insert("partition".into(), partition.into());
            }
            if let Some(offset) = record.offset {
                object.insert("offset".into(), offset.into());
            }
            if let Some(key) = &record.key {
                object.insert("key".into(), key.as_str().into());
            }
        });
        let mut fields = FieldsToJson(&mut object);
        event.record(&mut fields);
        let line = serde_json::to_string(&object).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

struct FieldsToJson<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl Visit for FieldsToJson<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

/// RFC 3339 UTC with milliseconds, without a date-time crate.
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::kafka::Headers;
    use crate::kafka::consumer::Record as KafkaRecord;
    use crate::kafka::headers::{EVENT_ID, TRACEPARENT};
    use crate::kafka::spans::{ClientInfo, process_span};
    use crate::settings::KafkaSettings;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn consumed() -> KafkaRecord {
        KafkaRecord {
            topic: "orders.events".into(),
            partition: 2,
            offset: 42,
            key: Some(b"order-1".to_vec()),
            payload: None,
            headers: Headers::new()
                .with(EVENT_ID, "event-1")
                .with(TRACEPARENT, format!("00-{TRACE}-00f067aa0ba902b7-01")),
            timestamp_ms: None,
            attempt: 1,
        }
    }

    /// The lines `f` logs in `format`, with tracing on; and the span id of the process span
    /// `f` gets to log in.
    fn lines(format: LogFormat, ansi: bool, f: impl FnOnce()) -> (Vec<String>, String) {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(TraceIdLayer::default())
            .with(RecordContextLayer)
            .with(fmt_layer(format, ansi, move || writer.clone()));
        let span_id = tracing::subscriber::with_default(subscriber, || {
            let client = ClientInfo::new(&KafkaSettings::default(), "inventory");
            let span = process_span(&client, "inventory", &consumed());
            let _entered = span.enter();
            f();
            span.context().span().span_context().span_id().to_string()
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        (text.lines().map(str::to_owned).collect(), span_id)
    }

    #[test]
    fn a_consumer_line_carries_the_trace_id_and_the_record_not_every_span_field() {
        let (lines, _) = lines(LogFormat::Pretty, false, || {
            tracing::info!(order = 7, error = "db down", "reserved");
        });
        let [line] = lines.as_slice() else {
            panic!("one line: {lines:?}")
        };
        let (_, rest) = line.split_once("  INFO ").expect("time, then level");
        assert_eq!(
            rest,
            format!(
                "spine_kit::log_format::tests: reserved order=7 error=\"db down\" \
                 trace_id={TRACE} topic=orders.events partition=2 offset=42 key=order-1"
            )
        );
        for absent in ["messaging.", "server.", "otel.", "group", "span_id"] {
            assert!(!line.contains(absent), "{absent} in {line}");
        }
    }

    #[test]
    fn nothing_but_the_line_is_written_without_a_terminal() {
        assert!(!ansi_for(false, None), "not a terminal");
        assert!(!ansi_for(true, Some("1".as_ref())), "NO_COLOR=1");
        assert!(
            ansi_for(true, Some("".as_ref())),
            "an empty NO_COLOR is unset"
        );
        assert!(ansi_for(true, None));
        let log = || tracing::warn!(error = "\x1b[31mred\x1b[0m", "a\nmessage");
        let (plain, _) = lines(LogFormat::Pretty, false, log);
        assert!(!plain.concat().contains('\x1b'), "{plain:?}");
        assert_eq!(plain.len(), 1, "one line per event: {plain:?}");
        assert!(
            plain[0].contains(r#"a\nmessage error="\u{1b}[31mred\u{1b}[0m""#),
            "{plain:?}"
        );
        // The same line on a terminal is coloured, so the absence above means something.
        let (coloured, _) = lines(LogFormat::Pretty, true, log);
        assert!(coloured[0].contains("\x1b[33m"), "{coloured:?}");
    }

    #[test]
    fn a_json_line_carries_the_trace_and_the_record_as_keys() {
        let (lines, span_id) = lines(LogFormat::Json, false, || {
            tracing::info!(order = 7, "reserved");
        });
        let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(line["trace_id"], TRACE, "{line}");
        assert_eq!(line["span_id"], span_id, "{line}");
        assert_eq!(line["span"], "process");
        assert_eq!(line["topic"], "orders.events");
        assert_eq!(line["partition"], 2);
        assert_eq!(line["offset"], 42);
        assert_eq!(line["key"], "order-1");
        assert_eq!(line["message"], "reserved");
        assert_eq!(line["order"], 7);
        assert_eq!(line["level"], "INFO");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
        let keys: Vec<&String> = line.as_object().unwrap().keys().collect();
        assert!(
            keys.iter().all(|k| !k.starts_with("messaging.")),
            "{keys:?}"
        );
    }

    #[test]
    fn a_partition_and_offset_recorded_after_the_send_show_on_later_lines() {
        let (lines, _) = lines(LogFormat::Pretty, false, || {
            let span = tracing::info_span!(
                "send",
                messaging.destination.name = "orders.events",
                messaging.destination.partition.id = tracing::field::Empty,
                messaging.kafka.offset = tracing::field::Empty,
            );
            let _entered = span.enter();
            tracing::info!("sending");
            span.record(
                "messaging.destination.partition.id",
                tracing::field::display(5),
            );
            span.record("messaging.kafka.offset", 9);
            tracing::info!("sent");
        });
        assert!(lines[0].ends_with("topic=orders.events"), "{lines:?}");
        assert!(
            lines[1].ends_with("topic=orders.events partition=5 offset=9"),
            "{lines:?}"
        );
    }
}
