//! The kit's paths, used the way the services use them.
//!
//! - **Produce** does what the outbox relay does per row (`crates/kit/src/outbox/relay.rs`):
//!   a producer span per record, child of the context the stored record carries, its context
//!   injected into the headers, `Publisher::send` instrumented with it, all sends of a batch in
//!   flight at once. The stored record comes from `OutgoingRecord::from_event` (encode,
//!   standard headers, the current trace context), as the orders service builds it inside its
//!   request span. [`produce_stored`] starts from stored records (pre-encoded bytes, built
//!   untimed); [`produce_encoding`] builds each one inside the interval (encode per event).
//!   Only the database is left out.
//! - **Consume** runs a `ConsumerRunner` with production settings (offset storing behind
//!   completed records, background commits, per-key lanes, `max_in_flight`) and a handler
//!   that counts each record, after decoding its value into `OrderPlaced` or not: on the
//!   per-record path (a [`Handler`], as email runs), or on the batch path
//!   (`Batched::new` of a [`BatchHandler`], as orders, inventory and analytics run).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use spine_events::orders::OrderPlaced;
use spine_kit::kafka::consumer::{
    Batch, BatchHandler, Batched, ConsumerRunner, Handler, HandlerError, Record,
};
use spine_kit::kafka::spans;
use spine_kit::kafka::{OutgoingRecord, Publisher};
use spine_kit::settings::KafkaSettings;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::report::Measurement;

/// `event` as the orders service stores it in its outbox: built by `from_event` under
/// `request` (the request span it is written under), for `topic`.
pub fn stored(
    request: &tracing::Span,
    event: &OrderPlaced,
    topic: &str,
) -> Result<OutgoingRecord, spine_events::EncodeError> {
    let mut record = request.in_scope(|| OutgoingRecord::from_event(event))?;
    record.topic = topic.to_owned();
    Ok(record)
}

/// `stored` as the relay sends it to `topic`: with the kit's `send {topic}` span (child of the
/// context the stored record carries, `spans::send_span_in`), whose context the copy then
/// carries. Returns both.
pub fn relay_record(
    publisher: &Publisher,
    stored: &OutgoingRecord,
    topic: &str,
) -> (OutgoingRecord, tracing::Span) {
    let span = spans::send_span_in(
        publisher.client_info(),
        stored,
        stored.headers.extract_context(),
    );
    let mut record = stored.clone();
    topic.clone_into(&mut record.topic);
    record.headers.inject_context(&span.context());
    (record, span)
}

/// The relay's work for one row: [`relay_record`], then `Publisher::send` inside the span, and
/// the outcome recorded on it.
async fn relay_send(
    publisher: &Publisher,
    stored: &OutgoingRecord,
    topic: &str,
) -> anyhow::Result<()> {
    let (record, span) = relay_record(publisher, stored, topic);
    let result = publisher.send(&record).instrument(span.clone()).await;
    spans::record_send(&span, &result);
    result?;
    Ok(())
}

/// Publishes every stored record to `topic` as the relay does, at most `window`
/// unacknowledged at a time, and measures from the first send to the last acknowledgement:
/// the "pre-encoded bytes" work.
pub async fn produce_stored(
    publisher: &Publisher,
    topic: &str,
    records: &[OutgoingRecord],
    window: usize,
    timeout: Duration,
) -> anyhow::Result<Measurement> {
    let started = Instant::now();
    let sends = futures::stream::iter(records)
        .map(|record| relay_send(publisher, record, topic))
        .buffer_unordered(window.max(1));
    let acked = count_acks(sends, timeout).await?;
    Ok(Measurement {
        records: acked,
        elapsed: started.elapsed(),
    })
}

/// Builds each event's stored record ([`stored`], encoding included) and publishes it to
/// `topic` as the relay does, at most `window` unacknowledged at a time, and measures from
/// the first encode to the last acknowledgement: the "encode per event" work.
pub async fn produce_encoding(
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
            let record = stored(&request, event, topic);
            async move { relay_send(publisher, &record?, topic).await }
        })
        .buffer_unordered(window.max(1));
    let acked = count_acks(sends, timeout).await?;
    Ok(Measurement {
        records: acked,
        elapsed: started.elapsed(),
    })
}

/// Drives `sends` to the end and counts them; the first failure (or the timeout) fails all.
async fn count_acks(
    sends: impl futures::Stream<Item = anyhow::Result<()>>,
    timeout: Duration,
) -> anyhow::Result<u64> {
    let all = sends.fold(Ok(0u64), |acc, result| async move {
        match (acc, result) {
            (Ok(n), Ok(())) => Ok(n + 1),
            (Err(err), _) | (Ok(_), Err(err)) => Err(err),
        }
    });
    tokio::time::timeout(timeout, all)
        .await
        .context("kit produce timed out")?
        .context("kit produce")
}

/// Shared between the handler (many tasks) and the measurement.
struct Progress {
    target: u64,
    handled: AtomicU64,
    /// Records handled by the first call (1, or the first batch): before the interval.
    first_count: AtomicU64,
    first: OnceLock<Instant>,
    last: OnceLock<Instant>,
    done: CancellationToken,
}

impl Progress {
    /// Counts `n` more handled records: the first marks the start, reaching the target the
    /// end (and stops the runner).
    fn handled(&self, n: u64) {
        let before = self.handled.fetch_add(n, Ordering::Relaxed);
        if before == 0 {
            let _ = self.first.set(Instant::now());
            self.first_count.store(n, Ordering::Relaxed);
        }
        if before < self.target && before + n >= self.target {
            let _ = self.last.set(Instant::now());
            self.done.cancel();
        }
    }
}

/// The work on one record: with `decode`, decodes its value as `OrderPlaced`
/// (`Record::decode`, which is `spine_events::decode`), without, only reads its length.
fn touch(record: &Record, decode: bool) -> Result<(), HandlerError> {
    if decode {
        let order = record.decode::<OrderPlaced>()?;
        std::hint::black_box(&order);
    } else {
        std::hint::black_box(record.payload.as_ref().map_or(0, Vec::len));
    }
    Ok(())
}

/// Counts each record and stops the runner at the target, after [`touch`]ing it.
struct CountingHandler {
    progress: Arc<Progress>,
    decode: bool,
}

impl Handler for CountingHandler {
    async fn handle(&self, record: &Record) -> Result<(), HandlerError> {
        touch(record, self.decode)?;
        self.progress.handled(1);
        Ok(())
    }
}

/// The batch path's [`CountingHandler`]: [`touch`]es each record of the batch, in order, then
/// counts them all.
struct CountingBatchHandler {
    progress: Arc<Progress>,
    decode: bool,
}

impl BatchHandler for CountingBatchHandler {
    async fn handle_batch(&self, batch: &Batch<'_>) -> Result<(), HandlerError> {
        for item in batch.iter() {
            touch(item.record(), self.decode)?;
        }
        self.progress.handled(batch.len() as u64);
        Ok(())
    }
}

/// Which of the runner's paths a consume measurement takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// A [`Handler`] called per record (email's path).
    PerRecord,
    /// `Batched::new` of a [`BatchHandler`], up to `kafka.consumer.max_batch` records of a
    /// partition per call (the path of orders, inventory and analytics).
    Batched,
}

/// Runs a `ConsumerRunner` on `path` as a fresh `group` over `topic` until `records` records
/// are handled (each value decoded as `OrderPlaced` with `decode`, only its length read
/// without), then cancels it, and measures from the first handled record (batch) to the last
/// (group join and shutdown are outside the interval, as for the raw consumer).
pub async fn consume(
    settings: &KafkaSettings,
    topic: &str,
    group: &str,
    records: u64,
    decode: bool,
    path: Path,
    timeout: Duration,
) -> anyhow::Result<Measurement> {
    let progress = Arc::new(Progress {
        target: records,
        handled: AtomicU64::new(0),
        first_count: AtomicU64::new(0),
        first: OnceLock::new(),
        last: OnceLock::new(),
        done: CancellationToken::new(),
    });
    let done = progress.done.clone();
    let watchdog = tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(timeout) => done.cancel(),
            () = done.cancelled() => {}
        }
    });
    let result = match path {
        Path::PerRecord => {
            let handler = CountingHandler {
                progress: progress.clone(),
                decode,
            };
            let runner = ConsumerRunner::new(settings, group, &[topic], handler)?;
            runner.run(progress.done.clone()).await
        }
        Path::Batched => {
            let handler = Batched::new(CountingBatchHandler {
                progress: progress.clone(),
                decode,
            });
            let runner = ConsumerRunner::new(settings, group, &[topic], handler)?;
            runner.run(progress.done.clone()).await
        }
    };
    watchdog.abort();
    result.context("kit consumer runner")?;
    let handled = progress.handled.load(Ordering::Relaxed);
    let (Some(first), Some(last)) = (progress.first.get(), progress.last.get()) else {
        bail!("kit consume: {handled} of {records} records in {timeout:?}");
    };
    Ok(Measurement {
        // The interval starts once the first record (or batch) is handled, so it covers the
        // others.
        records: records - progress.first_count.load(Ordering::Relaxed).min(records),
        elapsed: last.duration_since(*first),
    })
}
