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
}
