//! The consumer of orders' facts: every OrderPlaced (any schema version) is recorded once and
//! answered with {{Fact}}; the other facts on the topic are not ours and are skipped.
//!
//! It is a [`BatchHandler`], run as `Batched::new(reactions)`: the kit's runner hands it a
//! partition's records in offset order, a batch at a time, at least once each, and stores the
//! batch's offsets only after `handle_batch` returns `Ok`. So `handle_batch` must be
//! idempotent (the store's inbox makes it so), **all or nothing** (one transaction per batch)
//! and must say what kind of failure it hit; the runner, not the handler, decides what happens
//! next. On `Poison` or `Retryable` it runs the batch's records again one by one (batches of
//! one), so that a bad record is dead-lettered alone and the others are applied once; on
//! `Unavailable` it retries the whole batch.

use spine_events::Event;
use spine_events::orders::OrderPlaced;
use spine_kit::kafka::consumer::{Batch, BatchHandler, HandlerError};
use tracing::Instrument;

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

impl BatchHandler for OrderReactions {
    async fn handle_batch(&self, batch: &Batch<'_>) -> Result<(), HandlerError> {
        // 1. Decode every record before writing anything. `peek` reads the schema fingerprint
        // only. Bytes that are not Avro single-object encoding, or written with a schema this
        // build does not know, fail here, and `?` turns the DecodeError into `Poison`: the
        // runner then runs the records alone and dead-letters this one at once to
        // `<group>.dlq`; the rest of the batch is recorded.
        let mut orders = Vec::with_capacity(batch.len());
        for item in batch.iter() {
            let payload = item.payload.as_deref().unwrap_or_default();
            if spine_events::peek(payload)?.name() != OrderPlaced::NAME {
                continue; // OrderConfirmed, OrderRejected, …: not ours to handle
            }
            // Any writer version (v1, v2) resolves to the latest reader.
            let placed: OrderPlaced = item.decode()?;
            orders.push((item, placed));
        }
        if orders.is_empty() {
            return Ok(());
        }
        // 2. One transaction, with every event claimed in the inbox by one insert.
        let event_ids: Vec<String> = orders
            .iter()
            .map(|(_, placed)| placed.event_id.to_string())
            .collect();
        let event_ids: Vec<&str> = event_ids.iter().map(String::as_str).collect();
        let mut tx = self.store.begin_batch(&event_ids).await.map_err(classify)?;
        // 3. The new events' effects in offset order, each inside its record's `process`
        // span, so that the fact it enqueues joins that record's trace.
        let mut outcomes = Vec::with_capacity(orders.len());
        for (index, (item, placed)) in orders.iter().enumerate() {
            let outcome = if tx.claimed(index) {
                tx.record(placed)
                    .instrument(item.span().clone())
                    .await
                    .map_err(classify)?
            } else {
                Outcome::Unchanged // processed before (inbox hit), or repeated in this batch
            };
            outcomes.push(outcome);
        }
        // 4. One commit. An error above returned early and dropped `tx`: nothing was written.
        tx.commit().await.map_err(classify)?;
        // Counted once committed: a failed batch is run again, and would count twice.
        for outcome in outcomes {
            let label = match outcome {
                Outcome::Recorded => "recorded",
                Outcome::Unchanged => "duplicate",
            };
            metrics::counter!("{{name}}_orders_total", "outcome" => label).increment(1);
        }
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
