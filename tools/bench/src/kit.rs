//! The kit's paths, used the way the services use them.
//!
//! - **Produce** does what the outbox relay does per row (`crates/kit/src/outbox/relay.rs`):
//!   a producer span per record, its context injected into the headers, `Publisher::send`
//!   instrumented with it, all sends of a batch in flight at once. The record itself comes from
//!   `OutgoingRecord::from_event` (encode, standard headers, the current trace context), as the
//!   orders service builds it inside its request span. Only the database is left out.
//! - **Consume** runs a `ConsumerRunner` with production settings (offset storing behind
//!   completed records, background commits, per-key lanes, `max_in_flight`) and a handler
//!   that decodes each value into `OrderPlaced` and counts it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use spine_events::orders::OrderPlaced;
use spine_kit::kafka::consumer::{ConsumerRunner, Handler, HandlerError, Record};
use spine_kit::kafka::spans::{self, ClientInfo};
use spine_kit::kafka::{OutgoingRecord, Publisher};
use spine_kit::settings::KafkaSettings;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::report::Measurement;

/// `event` as the relay publishes it to `topic`: built by `from_event` under the current span,
/// with the kit's `send {topic}` span (`kafka::spans`, as the relay makes it, child of the
/// context the record carries) whose context the record then carries. Returns both.
pub fn prepare(
    client: &ClientInfo,
    event: &OrderPlaced,
    topic: &str,
) -> Result<(OutgoingRecord, tracing::Span), spine_events::EncodeError> {
    let mut record = OutgoingRecord::from_event(event)?;
    record.topic = topic.to_owned();
    let span = spans::send_span(client, &record);
    let _ = span.set_parent(record.headers.extract_context());
    record.headers.inject_context(&span.context());
    Ok((record, span))
}

/// Publishes every event to `topic` through `publisher`, at most `window` unacknowledged at a
/// time, and measures from the first encode to the last acknowledgement. Encoding happens
/// inside the interval: it is part of what the kit does per record.
pub async fn produce(
    publisher: &Publisher,
    topic: &str,
    events: &[OrderPlaced],
    window: usize,
    timeout: Duration,
) -> anyhow::Result<Measurement> {
    // Stands for the request span every event is written under in a service.
    let request = tracing::info_span!("bench produce");
    let started = Instant::now();
    let sends = futures::stream::iter(events)
        .map(|event| {
            let prepared = request.in_scope(|| prepare(publisher.client_info(), event, topic));
            async move {
                let (record, span) = prepared?;
                let result = publisher.send(&record).instrument(span.clone()).await;
                spans::record_send(&span, &result);
                result?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(window.max(1));
    let all = sends.fold(Ok(0u64), |acc, result| async move {
        match (acc, result) {
            (Ok(n), Ok(())) => Ok(n + 1),
            (Err(err), _) | (Ok(_), Err(err)) => Err(err),
        }
    });
    let acked = tokio::time::timeout(timeout, all)
        .await
        .context("kit produce timed out")?
        .context("kit produce")?;
    Ok(Measurement {
        records: acked,
        elapsed: started.elapsed(),
    })
}

/// Shared between the handler (many tasks) and the measurement.
struct Progress {
    target: u64,
    handled: AtomicU64,
    first: OnceLock<Instant>,
    last: OnceLock<Instant>,
    done: CancellationToken,
}

/// Decodes each value as `OrderPlaced`, counts it, and stops the runner at the target.
struct CountingHandler(Arc<Progress>);

impl Handler for CountingHandler {
    async fn handle(&self, record: &Record) -> Result<(), HandlerError> {
        let order = record.decode::<OrderPlaced>()?;
        std::hint::black_box(&order);
        let progress = &self.0;
        let handled = progress.handled.fetch_add(1, Ordering::Relaxed) + 1;
        if handled == 1 {
            let _ = progress.first.set(Instant::now());
        }
        if handled == progress.target {
            let _ = progress.last.set(Instant::now());
            progress.done.cancel();
        }
        Ok(())
    }
}

/// Runs a `ConsumerRunner` as a fresh `group` over `topic` until `records` records are handled,
/// then cancels it, and measures from the first handled record to the last (group join and
/// shutdown are outside the interval, as for the raw consumer).
pub async fn consume(
    settings: &KafkaSettings,
    topic: &str,
    group: &str,
    records: u64,
    timeout: Duration,
) -> anyhow::Result<Measurement> {
    let progress = Arc::new(Progress {
        target: records,
        handled: AtomicU64::new(0),
        first: OnceLock::new(),
        last: OnceLock::new(),
        done: CancellationToken::new(),
    });
    let runner = ConsumerRunner::new(settings, group, &[topic], CountingHandler(progress.clone()))?;
    let done = progress.done.clone();
    let watchdog = tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(timeout) => done.cancel(),
            () = done.cancelled() => {}
        }
    });
    let result = runner.run(progress.done.clone()).await;
    watchdog.abort();
    result.context("kit consumer runner")?;
    let handled = progress.handled.load(Ordering::Relaxed);
    let (Some(first), Some(last)) = (progress.first.get(), progress.last.get()) else {
        bail!("kit consume: {handled} of {records} records in {timeout:?}");
    };
    Ok(Measurement {
        // The interval starts at the first record, so it covers the others.
        records: records - 1,
        elapsed: last.duration_since(*first),
    })
}
