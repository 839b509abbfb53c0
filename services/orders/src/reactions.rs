//! Orders reacts to inventory's facts: StockReserved confirms an order, StockReservationFailed
//! rejects it. Each reaction is one transaction (inbox row, status, history, outbox row).

use spine_events::Event;
use spine_events::inventory::{StockReservationFailed, StockReserved};
use spine_kit::kafka::consumer::{Handler, HandlerError, Record};

use crate::store::{Applied, OrderStore, Outcome, StoreError};

/// The handler of `inventory.events`.
pub struct InventoryReactions {
    store: OrderStore,
}

impl InventoryReactions {
    /// Reactions writing through `store`.
    pub fn new(store: OrderStore) -> Self {
        Self { store }
    }
}

impl Handler for InventoryReactions {
    async fn handle(&self, record: &Record) -> Result<(), HandlerError> {
        let payload = record.payload.as_deref().unwrap_or_default();
        let (order_id, event_id, outcome) = match spine_events::peek(payload)?.name() {
            StockReserved::NAME => {
                let fact: StockReserved = record.decode()?;
                (fact.order_id, fact.event_id, Outcome::Confirmed)
            }
            StockReservationFailed::NAME => {
                let fact: StockReservationFailed = record.decode()?;
                let reason = if fact.short_skus.is_empty() {
                    fact.reason
                } else {
                    format!("{} (short: {})", fact.reason, fact.short_skus.join(", "))
                };
                (fact.order_id, fact.event_id, Outcome::Rejected(reason))
            }
            _ => return Ok(()), // another fact on the topic; not ours to handle
        };
        match self
            .store
            .apply(&event_id.to_string(), order_id, &outcome)
            .await
        {
            Ok(Applied::Changed | Applied::Unchanged) => Ok(()),
            Ok(Applied::UnknownOrder) => Err(HandlerError::poison(anyhow::anyhow!(
                "order {order_id} does not exist"
            ))),
            Err(err) => Err(classify(err)),
        }
    }
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
