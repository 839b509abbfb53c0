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
            // A locked database or a dropped connection passes; a broken schema wouldn't, but
            // retries end in the DLQ, where nothing is lost.
            Err(err @ StoreError::Db(_)) => Err(HandlerError::retryable(err)),
            Err(err @ StoreError::Encode(_)) => Err(HandlerError::fatal(err)),
        }
    }
}
