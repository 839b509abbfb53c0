//! The consumer of orders' facts: every OrderPlaced (any schema version) is recorded once and
//! answered with {{Fact}}; the other facts on the topic are not ours and are skipped.
//!
//! The kit's runner calls [`Handler::handle`] at least once per record, one record of a key at
//! a time, and stores the offset only after `handle` returns `Ok` (or the record was
//! dead-lettered). So `handle` must be idempotent (the store's inbox makes it so) and must say
//! what kind of failure it hit; the runner, not the handler, decides what happens next.

use spine_events::Event;
use spine_events::orders::OrderPlaced;
use spine_kit::kafka::consumer::{Handler, HandlerError, Record};

use crate::store::{{{Name}}Store, Outcome, StoreError};

/// The handler of `orders.events`.
pub struct OrderReactions {
    store: {{Name}}Store,
}

impl OrderReactions {
    /// Reactions writing through `store`.
    pub fn new(store: {{Name}}Store) -> Self {
        Self { store }
    }
}

impl Handler for OrderReactions {
    async fn handle(&self, record: &Record) -> Result<(), HandlerError> {
        let payload = record.payload.as_deref().unwrap_or_default();
        // `peek` reads the schema fingerprint only. Bytes that are not Avro single-object
        // encoding, or written with a schema this build does not know, fail here, and `?`
        // turns the DecodeError into `Poison`: dead-lettered at once to `<group>.dlq`, and the
        // consumer goes on with the next record.
        if spine_events::peek(payload)?.name() != OrderPlaced::NAME {
            return Ok(()); // OrderConfirmed, OrderRejected, …: not ours to handle
        }
        // Any writer version (v1, v2) resolves to the latest reader.
        let placed: OrderPlaced = record.decode()?;
        let outcome = self.store.record(&placed).await.map_err(classify)?;
        let label = match outcome {
            Outcome::Recorded => "recorded",
            Outcome::Unchanged => "duplicate",
        };
        metrics::counter!("{{name}}_orders_total", "outcome" => label).increment(1);
        Ok(())
    }
}

/// Classification: what the runner should do with each failure.
///
/// - `Unavailable`: a dependency is down (the database unreachable, its pool exhausted, a lock
///   or statement timeout): nothing is wrong with the record. Retried without limit and never
///   dead-lettered; the runner stalls the group until the dependency answers again.
/// - `Retryable`: this record failed in a way that may pass (a deadlock, a serialization
///   conflict): retried with backoff, then dead-lettered when the attempts run out.
/// - `Poison`: the record can never succeed (undecodable, invalid): dead-lettered at once.
/// - `Fatal`: this build is broken: the process stops uncommitted and restarts.
fn classify(err: StoreError) -> HandlerError {
    match err {
        // `db::classify` tells an outage (`Unavailable`) from a failure of this statement
        // (`Retryable`) with `db::is_outage`.
        StoreError::Db(err) => spine_kit::db::classify(err),
        // Our own fact not encoding is a bug in this build: stop uncommitted, restart, fix.
        err @ StoreError::Encode(_) => HandlerError::fatal(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_outage_is_unavailable_and_a_statement_failure_retryable() {
        let outage = StoreError::Db(sqlx::Error::PoolTimedOut);
        assert!(matches!(classify(outage), HandlerError::Unavailable(_)));
        let failure = StoreError::Db(sqlx::Error::RowNotFound);
        assert!(matches!(classify(failure), HandlerError::Retryable(_)));
    }
}
