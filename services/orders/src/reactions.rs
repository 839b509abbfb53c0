//! Orders reacts to inventory's facts: StockReserved confirms an order, StockReservationFailed
//! rejects it. The records of a batch (one partition's, in offset order) are applied in one
//! transaction: their inbox rows, and per new event the status, history and outbox rows.

use spine_events::Event;
use spine_events::inventory::{StockReservationFailed, StockReserved};
use spine_kit::kafka::consumer::{Batch, BatchHandler, BatchRecord, HandlerError};
use uuid::Uuid;

use crate::store::{ClaimedOutcome, OrderStore, Outcome, StoreError};

/// The handler of `inventory.events`; run it as `Batched::new(reactions)`.
pub struct InventoryReactions {
    store: OrderStore,
}

impl InventoryReactions {
    /// Reactions writing through `store`.
    pub fn new(store: OrderStore) -> Self {
        Self { store }
    }
}

/// One of inventory's facts about an order, decoded.
struct Reaction<'a> {
    item: BatchRecord<'a>,
    event_id: String,
    order_id: Uuid,
    outcome: Outcome,
}

impl BatchHandler for InventoryReactions {
    /// All or nothing (the kit's contract): every record is decoded before anything is written,
    /// so an undecodable one fails the batch at once (poison: the runner then runs each record
    /// alone and dead-letters that one only); the events are claimed with one inbox insert;
    /// the new ones are applied together, in offset order (`OutcomeBatch::apply_all`: a few
    /// multi-row statements per batch), each fact encoded inside its record's span so that it
    /// carries that record's trace; one commit. A fact for an unknown order fails the batch as
    /// poison too, with nothing committed.
    async fn handle_batch(&self, batch: &Batch<'_>) -> Result<(), HandlerError> {
        let mut reactions = Vec::with_capacity(batch.len());
        for item in batch.iter() {
            if let Some(reaction) = decode(item)? {
                reactions.push(reaction);
            }
        }
        if reactions.is_empty() {
            return Ok(()); // only other facts on the topic; not ours to handle
        }
        let event_ids: Vec<&str> = reactions.iter().map(|r| r.event_id.as_str()).collect();
        let mut tx = self
            .store
            .begin_outcomes(&event_ids)
            .await
            .map_err(classify)?;
        let claimed: Vec<ClaimedOutcome<'_>> = reactions
            .iter()
            .enumerate()
            .filter(|(index, _)| tx.claimed(*index)) // others were processed before
            .map(|(_, reaction)| ClaimedOutcome {
                order_id: reaction.order_id,
                outcome: &reaction.outcome,
                span: reaction.item.span(),
            })
            .collect();
        if let Some(unknown) = tx.apply_all(&claimed).await.map_err(classify)? {
            // Dropping `tx` rolls the whole batch back.
            return Err(HandlerError::poison(anyhow::anyhow!(
                "order {unknown} does not exist"
            )));
        }
        tx.commit().await.map_err(classify)
    }
}

/// The record's fact, or `None` for another fact on the topic (not ours to handle). Bytes that
/// do not decode are poison (`?` converts the DecodeError).
fn decode(item: BatchRecord<'_>) -> Result<Option<Reaction<'_>>, HandlerError> {
    let payload = item.payload.as_deref().unwrap_or_default();
    let (event_id, order_id, outcome) = match spine_events::peek(payload)?.name() {
        StockReserved::NAME => {
            let fact: StockReserved = item.decode()?;
            (fact.event_id, fact.order_id, Outcome::Confirmed)
        }
        StockReservationFailed::NAME => {
            let fact: StockReservationFailed = item.decode()?;
            let reason = if fact.short_skus.is_empty() {
                fact.reason
            } else {
                format!("{} (short: {})", fact.reason, fact.short_skus.join(", "))
            };
            (fact.event_id, fact.order_id, Outcome::Rejected(reason))
        }
        _ => return Ok(None),
    };
    Ok(Some(Reaction {
        item,
        event_id: event_id.to_string(),
        order_id,
        outcome,
    }))
}

/// What the runner does with a failed reaction.
fn classify(err: StoreError) -> HandlerError {
    match err {
        // The database down, unreachable, out of connections or timing out is an outage:
        // retried without limit, never dead-lettered. Any other database error (a deadlock, a
        // broken schema) is retried a bounded number of times, then dead-lettered, where
        // nothing is lost.
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
