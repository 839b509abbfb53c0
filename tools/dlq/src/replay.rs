//! Replaying and parking.
//!
//! **Replay** re-publishes a DLQ record to its original topic, with its original key, value
//! and headers (the `dlq-*` ones dropped) and `replay-count` set one higher than the record
//! carried. The same consumers, with their inboxes, handle it again: an effect that was
//! already applied is skipped by the inbox. The `replay` command also remembers what it
//! replayed (a committed position per DLQ partition, [`crate::position`]), so a rerun does
//! not publish the same records again.
//!
//! A record that already carries `replay-count` ≥ 1 failed again after a replay: replaying it
//! once more would loop, so [`replay`] skips it unless forced. **Park** copies such records to
//! `<dlq>.parked` (same key, value and headers, plus `parked-at` and where it came from); the
//! scan of a DLQ then leaves them out, so they stay visible only where a code fix is tracked.

use std::time::Duration;

use opentelemetry::trace::TraceContextExt;
use spine_kit::kafka::headers::dlq;
use spine_kit::kafka::spans::{self, ClientInfo};
use spine_kit::kafka::{Headers, OutgoingRecord, Publisher, TopicSpec, ensure_topics};
use spine_kit::settings::KafkaSettings;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::error::DlqError;
use crate::record::{
    DlqRecord, PARKED_AT, PARKED_FROM_OFFSET, PARKED_FROM_PARTITION, Position, REPLAY_COUNT,
    now_millis, parked_topic,
};

/// How to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Records per second, at most (at least 1).
    pub rate: u32,
    /// Plan only: publish nothing.
    pub dry_run: bool,
    /// Replay park candidates too.
    pub force: bool,
    /// Replay records below the replay position (already replayed) too.
    pub again: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            rate: 10,
            dry_run: false,
            force: false,
            again: false,
        }
    }
}

/// One record replayed (or, on a dry run, that would be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Where it was in the DLQ.
    pub from: Position,
    /// What was (or would be) published.
    pub record: OutgoingRecord,
    /// Where the broker stored it; `None` on a dry run.
    pub to: Option<Position>,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Replayed records, in order.
    pub replayed: Vec<Replayed>,
    /// Park candidates left alone (no `--force`).
    pub skipped_park_candidates: Vec<Position>,
    /// Records that cannot be replayed (no `dlq-original-topic`), with why.
    pub invalid: Vec<(Position, String)>,
    /// Chosen records left alone because an earlier replay replayed them (they lie below the
    /// replay position, see [`crate::position`]).
    pub already_replayed: Vec<Position>,
    /// Records replayed now that the replay position cannot cover (a filtered replay left
    /// out a record before them): a rerun with the same filter replays them again.
    pub replayed_beyond_position: usize,
}

/// The record that replays `record`: to its original topic, same key and value, original
/// headers without the `dlq-*` ones, and `replay-count` one higher.
pub fn replay_record(record: &DlqRecord) -> Result<OutgoingRecord, String> {
    let topic = record
        .original_topic()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("no {} header", dlq::ORIGINAL_TOPIC))?;
    let mut headers = Headers::new();
    for (name, value) in record.headers.iter() {
        if !name.starts_with("dlq-") && name != REPLAY_COUNT {
            headers.insert(name, value);
        }
    }
    headers.insert(REPLAY_COUNT, (record.replay_count() + 1).to_string());
    Ok(OutgoingRecord {
        topic: topic.to_owned(),
        key: record.key.clone(),
        payload: record.payload.clone(),
        headers,
    })
}

/// The record that parks `record` in `<dlq>.parked`: same key, value and headers, plus
/// `parked-at` and the DLQ position it came from.
pub fn park_record(dlq_topic: &str, record: &DlqRecord) -> OutgoingRecord {
    let headers = record
        .headers
        .clone()
        .with(PARKED_AT, now_millis().to_string())
        .with(PARKED_FROM_PARTITION, record.position.partition.to_string())
        .with(PARKED_FROM_OFFSET, record.position.offset.to_string());
    OutgoingRecord {
        topic: parked_topic(dlq_topic),
        key: record.key.clone(),
        payload: record.payload.clone(),
        headers,
    }
}

/// Replays `records` in order (callers pass them in DLQ order, which keeps each key's order),
/// one at a time, each acknowledged by all in-sync replicas before the next, at most
/// `options.rate` per second.
pub async fn replay(
    publisher: &Publisher,
    records: &[DlqRecord],
    options: &ReplayOptions,
) -> Result<ReplayReport, DlqError> {
    let mut report = ReplayReport::default();
    replay_into(publisher, records, options, &mut report).await?;
    Ok(report)
}

/// [`replay`] into `report`, which keeps what was replayed before a publish failed.
pub async fn replay_into(
    publisher: &Publisher,
    records: &[DlqRecord],
    options: &ReplayOptions,
    report: &mut ReplayReport,
) -> Result<(), DlqError> {
    let mut limiter = RateLimiter::new(options.rate)?;
    for record in records {
        if record.is_park_candidate() && !options.force {
            report.skipped_park_candidates.push(record.position);
            continue;
        }
        let outgoing = match replay_record(record) {
            Ok(outgoing) => outgoing,
            Err(why) => {
                report.invalid.push((record.position, why));
                continue;
            }
        };
        let to = if options.dry_run {
            None
        } else {
            limiter.acquire().await;
            let span = replay_span(publisher.client_info(), &outgoing);
            let mut traced = outgoing.clone();
            // With tracing on, consumers continue the replay's trace, which links the original.
            traced.headers.inject_context(&span.context());
            let result = publisher.send(&traced).instrument(span.clone()).await;
            spans::record_send(&span, &result);
            let delivery = result?;
            Some(Position {
                partition: delivery.partition,
                offset: delivery.offset,
            })
        };
        report.replayed.push(Replayed {
            from: record.position,
            record: outgoing,
            to,
        });
    }
    Ok(())
}

/// A `send {topic}` span (the kit's, per the messaging conventions) per replayed record, the
/// root of a new trace linked to the trace the record was first part of (the DLQ keeps its
/// `traceparent`), so a replay is its own trace that leads back to the original.
fn replay_span(client: &ClientInfo, record: &OutgoingRecord) -> tracing::Span {
    let span = spans::send_span(client, record);
    // An empty parent context: a root, whatever span the replay runs in.
    let _ = span.set_parent(opentelemetry::Context::new());
    let original = record.headers.extract_context();
    // `add_link` ignores an invalid context (a record dead-lettered without tracing).
    span.add_link(original.span().span_context().clone());
    span
}

/// Copies `records` to `<dlq_topic>.parked` (creating it when missing) and returns their
/// positions. Records already parked are the caller's to leave out (see
/// [`crate::read::parked_positions`]).
pub async fn park(
    settings: &KafkaSettings,
    publisher: &Publisher,
    dlq_topic: &str,
    records: &[DlqRecord],
) -> Result<Vec<Position>, DlqError> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    ensure_topics(
        settings,
        &[TopicSpec::new(parked_topic(dlq_topic), settings)],
    )
    .await?;
    let mut parked = Vec::with_capacity(records.len());
    for record in records {
        publisher.send(&park_record(dlq_topic, record)).await?;
        parked.push(record.position);
    }
    Ok(parked)
}

/// Lets through at most `rate` acquisitions per second, evenly spaced (a token bucket of one
/// token, refilled every `1/rate` s), so a replay never floods the consumers.
#[derive(Debug)]
pub struct RateLimiter {
    interval: tokio::time::Interval,
}

impl RateLimiter {
    /// A limiter of `per_second` ≥ 1.
    pub fn new(per_second: u32) -> Result<Self, DlqError> {
        if per_second == 0 {
            return Err(DlqError::Usage("--rate must be at least 1".to_owned()));
        }
        let period = Duration::from_secs(1) / per_second;
        let mut interval = tokio::time::interval_at(Instant::now(), period);
        // After a slow publish, do not burst to catch up.
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Self { interval })
    }

    /// Waits for the next slot.
    pub async fn acquire(&mut self) {
        self.interval.tick().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn dlq_record(headers: Headers) -> DlqRecord {
        DlqRecord {
            position: Position {
                partition: 0,
                offset: 3,
            },
            key: Some(b"order-1".to_vec()),
            payload: b"value".to_vec(),
            headers,
            timestamp_ms: None,
        }
    }

    #[test]
    fn a_replay_goes_to_the_original_topic_without_dlq_headers() {
        let record = dlq_record(
            Headers::new()
                .with("event-id", "e-1")
                .with(dlq::ERROR, "boom")
                .with(dlq::ORIGINAL_TOPIC, "orders.events")
                .with(dlq::ATTEMPTS, "1"),
        );
        let out = replay_record(&record).unwrap();
        assert_eq!(out.topic, "orders.events");
        assert_eq!(out.key.as_deref(), Some(&b"order-1"[..]));
        assert_eq!(out.payload, b"value");
        let names: Vec<&str> = out.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["event-id", REPLAY_COUNT]);
        assert_eq!(out.headers.get_str(REPLAY_COUNT), Some("1"));
    }

    #[test]
    fn a_second_replay_increments_the_count() {
        let record = dlq_record(
            Headers::new()
                .with(REPLAY_COUNT, "1")
                .with(dlq::ORIGINAL_TOPIC, "t"),
        );
        let out = replay_record(&record).unwrap();
        assert_eq!(out.headers.get_str(REPLAY_COUNT), Some("2"));
        assert_eq!(out.headers.iter().count(), 1, "one replay-count header");
    }

    #[test]
    fn a_record_without_an_original_topic_cannot_be_replayed() {
        assert!(replay_record(&dlq_record(Headers::new())).is_err());
    }

    #[test]
    fn a_parked_record_keeps_everything_and_says_where_it_came_from() {
        let record = dlq_record(Headers::new().with(dlq::ERROR, "boom"));
        let parked = park_record("g.dlq", &record);
        assert_eq!(parked.topic, "g.dlq.parked");
        assert_eq!(parked.payload, record.payload);
        assert_eq!(parked.headers.get_str(dlq::ERROR), Some("boom"));
        assert_eq!(parked.headers.get_str(PARKED_FROM_OFFSET), Some("3"));
        assert!(parked.headers.get_str(PARKED_AT).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limiter_lets_through_rate_per_second() {
        let mut limiter = RateLimiter::new(5).unwrap();
        let count = Arc::new(AtomicU32::new(0));
        let counter = count.clone();
        let task = tokio::spawn(async move {
            loop {
                limiter.acquire().await;
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        // Virtual time: the count after three simulated seconds is exact, not a timing.
        tokio::time::sleep(Duration::from_millis(3_010)).await;
        let passed = count.load(Ordering::SeqCst);
        task.abort();
        assert!(
            (15..=16).contains(&passed),
            "{passed} acquisitions in 3 s at 5/s"
        );
        assert!(RateLimiter::new(0).unwrap_err().is_usage());
    }

    #[test]
    fn a_replay_is_a_new_trace_linked_to_the_original() {
        use opentelemetry::trace::TracerProvider as _;
        use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
        use tracing_subscriber::layer::SubscriberExt;

        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let original_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let record = OutgoingRecord {
            topic: "orders.events".into(),
            key: Some(b"order-1".to_vec()),
            payload: vec![1],
            headers: Headers::new().with(
                "traceparent",
                format!("00-{original_trace}-00f067aa0ba902b7-01"),
            ),
        };
        let replay_trace = tracing::subscriber::with_default(subscriber, || {
            let client = ClientInfo::new(&KafkaSettings::default(), "spine-dlq");
            let span = replay_span(&client, &record);
            let trace = span.context().span().span_context().trace_id().to_string();
            drop(span);
            trace
        });
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].name, "send orders.events");
        assert_eq!(spans[0].span_kind, opentelemetry::trace::SpanKind::Producer);
        assert_ne!(replay_trace, original_trace, "a trace of its own");
        let links: Vec<String> = spans[0]
            .links
            .iter()
            .map(|l| l.span_context.trace_id().to_string())
            .collect();
        assert_eq!(links, [original_trace], "linked to the original trace");
    }
}
