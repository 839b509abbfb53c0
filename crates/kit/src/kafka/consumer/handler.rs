//! What a service writes: a [`Handler`] for [`Record`]s, returning a classified [`HandlerError`].

use std::future::Future;

use spine_events::{DecodeError, Event};

use crate::kafka::headers::{self, Headers};

/// A consumed record, owned, as the handler sees it.
#[derive(Debug, Clone)]
pub struct Record {
    /// The topic it came from.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key (the aggregate id for spine's events).
    pub key: Option<Vec<u8>>,
    /// Its value; `None` for a tombstone.
    pub payload: Option<Vec<u8>>,
    /// Its headers.
    pub headers: Headers,
    /// Its timestamp in Unix milliseconds, when the broker gave one.
    pub timestamp_ms: Option<i64>,
    /// Which attempt this is: 1 the first time, 2 on the first retry, and so on.
    pub attempt: u32,
}

impl Record {
    /// The key as UTF-8, if it is.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The `event-id` header: the key of an idempotent consumer's inbox.
    pub fn event_id(&self) -> Option<&str> {
        self.headers.get_str(headers::EVENT_ID)
    }

    /// Decodes the value as event `E`, resolving the writer's schema version to `E`'s.
    /// A missing value decodes as an error too; both are poison (`?` converts them).
    pub fn decode<E: Event>(&self) -> Result<E, DecodeError> {
        spine_events::decode(self.payload.as_deref().unwrap_or_default())
    }
}

/// How the runner should treat a failure. The runner decides what happens; handlers only
/// classify.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// A transient failure of this record that is not an outage (a deadlock, a serialization
    /// conflict, a busy row): retry with backoff, then dead-letter when the attempts run out.
    #[error("retryable: {0:#}")]
    Retryable(anyhow::Error),
    /// A dependency is down (database unreachable or its pool exhausted, SMTP connection refused
    /// or answering 4xx, broker unavailable): nothing is wrong with the record. The runner
    /// retries it without an attempt limit and never dead-letters it; while it lasts the group
    /// stalls (stops taking records, probes with one record at a time).
    #[error("unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    /// The record can never succeed (undecodable, invalid): dead-letter it now.
    #[error("poison: {0:#}")]
    Poison(anyhow::Error),
    /// The service itself is broken (lost its database, misconfigured): stop the runner without
    /// storing this offset, so that the record is redelivered after a restart.
    #[error("fatal: {0:#}")]
    Fatal(anyhow::Error),
}

impl HandlerError {
    /// A retryable error from anything printable.
    pub fn retryable(err: impl Into<anyhow::Error>) -> Self {
        Self::Retryable(err.into())
    }

    /// An outage ("a dependency is down") from anything printable.
    pub fn unavailable(err: impl Into<anyhow::Error>) -> Self {
        Self::Unavailable(err.into())
    }

    /// A poison error from anything printable.
    pub fn poison(err: impl Into<anyhow::Error>) -> Self {
        Self::Poison(err.into())
    }

    /// A fatal error from anything printable.
    pub fn fatal(err: impl Into<anyhow::Error>) -> Self {
        Self::Fatal(err.into())
    }

    /// The class as a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Retryable(_) => "retryable",
            Self::Unavailable(_) => "unavailable",
            Self::Poison(_) => "poison",
            Self::Fatal(_) => "fatal",
        }
    }
}

/// Bytes that do not decode never will: poison.
impl From<DecodeError> for HandlerError {
    fn from(err: DecodeError) -> Self {
        Self::Poison(err.into())
    }
}

/// A record handler. It runs concurrently for different keys, and never concurrently for two
/// records of one key. The runner retries, dead-letters and stores offsets around it.
pub trait Handler: Send + Sync + 'static {
    /// Applies the record's effect. Return only once the effect is durable.
    fn handle(&self, record: &Record) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Whether the handler does nothing with `record` (a fact on its topic it does not react
    /// to), decided from the record alone and cheaply (e.g. from [`spine_events::peek`]). The
    /// runner then completes it at once (counted as `outcome="skipped"` in
    /// `spine_consumer_records_total`): no task, no span, no `max_rate` slot, so that a rate
    /// limit paces only the records that do work. Say `false` for anything in doubt (an
    /// undecodable record must reach [`Handler::handle`] to be dead-lettered). The per-record
    /// path only; the default is `false`.
    fn skips(&self, record: &Record) -> bool {
        let _ = record;
        false
    }

    /// Whether the runner should hand this handler batches (see [`BatchHandler`]). Only
    /// [`Batched`] says yes.
    #[doc(hidden)]
    fn batches(&self) -> bool {
        false
    }

    /// Applies a batch, all or nothing. Called only when [`Handler::batches`] says so.
    #[doc(hidden)]
    fn handle_batch(
        &self,
        batch: &Batch<'_>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async move {
            for record in batch.iter() {
                self.handle(record.record()).await?;
            }
            Ok(())
        }
    }
}

/// A handler that applies the records of one partition in batches: one transaction, one
/// multi-row inbox claim ([`crate::inbox::Inbox::begin_batch`]), one offset store per batch,
/// for handlers whose cost is a database write. Run it as `Batched::new(handler)`.
///
/// **The contract: all or nothing.** `handle_batch` returns `Ok` only once every record's
/// effect is durable, and on an error leaves none of them applied (roll the transaction back,
/// which dropping it does). The runner then classifies the error:
/// - `Unavailable`: the whole batch is retried, without limit, as a per-record outage is;
/// - `Poison` or `Retryable`: the batch is split and each record runs alone (a batch of one),
///   in offset order, with the per-record retries and dead letter, so a bad record goes to
///   the DLQ alone and the rest of its batch is applied once;
/// - `Fatal` (or a panic): the runner stops without storing the batch's offsets.
///
/// A batch holds records of one partition in offset order, so records of one key are in it
/// in order: apply them in the order given. Batches of one partition never overlap; batches
/// of different partitions run concurrently. Each record has its own `process` span: run its
/// part of the work inside it ([`BatchRecord::span`]) so that what it writes (an outbox row)
/// joins the record's trace.
pub trait BatchHandler: Send + Sync + 'static {
    /// Applies every record of `batch` in one transaction (see the trait's contract).
    fn handle_batch(
        &self,
        batch: &Batch<'_>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Runs a [`BatchHandler`] under the [`ConsumerRunner`](super::ConsumerRunner), batching up
/// to `kafka.consumer.max_batch` records of a partition.
pub struct Batched<B>(B);

impl<B: BatchHandler> Batched<B> {
    /// Wraps a batch handler for the runner.
    pub fn new(handler: B) -> Self {
        Self(handler)
    }

    /// The wrapped handler.
    pub fn inner(&self) -> &B {
        &self.0
    }
}

impl<B: BatchHandler> Handler for Batched<B> {
    /// A record alone: a batch of one, inside the current (the record's `process`) span.
    async fn handle(&self, record: &Record) -> Result<(), HandlerError> {
        let items = [(record.clone(), tracing::Span::current())];
        self.0.handle_batch(&Batch::new(&items)).await
    }

    fn batches(&self) -> bool {
        true
    }

    fn handle_batch(
        &self,
        batch: &Batch<'_>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self.0.handle_batch(batch)
    }
}

/// Records of one partition, in offset order, each with its `process` span.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    items: &'a [(Record, tracing::Span)],
}

impl<'a> Batch<'a> {
    /// A batch of `items`: records of one partition in offset order, with their spans.
    pub fn new(items: &'a [(Record, tracing::Span)]) -> Self {
        Self { items }
    }

    /// The records with their spans, in offset order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = BatchRecord<'a>> + 'a {
        self.items
            .iter()
            .map(|(record, span)| BatchRecord { record, span })
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none (the runner never hands over an empty batch).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// One record of a [`Batch`], with its span.
#[derive(Debug, Clone, Copy)]
pub struct BatchRecord<'a> {
    record: &'a Record,
    span: &'a tracing::Span,
}

impl<'a> BatchRecord<'a> {
    /// The record.
    pub fn record(&self) -> &'a Record {
        self.record
    }

    /// Its `process` span: instrument the record's part of the work with it
    /// (`.instrument(item.span().clone())`).
    pub fn span(&self) -> &'a tracing::Span {
        self.span
    }
}

impl std::ops::Deref for BatchRecord<'_> {
    type Target = Record;

    fn deref(&self) -> &Record {
        self.record
    }
}
