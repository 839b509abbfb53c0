//! Inventory reacts to orders' facts: OrderPlaced reserves stock for every line or none,
//! OrderRejected releases what an order holds. Each reaction is one transaction (inbox row,
//! stock, reservations, outbox row).

use spine_events::Event;
use spine_events::orders::{OrderPlaced, OrderRejected};
use spine_kit::kafka::consumer::{Handler, HandlerError, Record};

use crate::store::{InventoryStore, Release, Reservation, StoreError};

/// The handler of `orders.events`.
pub struct OrderReactions {
    store: InventoryStore,
}

impl OrderReactions {
    /// Reactions writing through `store`.
    pub fn new(store: InventoryStore) -> Self {
        Self { store }
    }
}

impl Handler for OrderReactions {
    async fn handle(&self, record: &Record) -> Result<(), HandlerError> {
        let payload = record.payload.as_deref().unwrap_or_default();
        match spine_events::peek(payload)?.name() {
            OrderPlaced::NAME => {
                // Any writer version resolves to the latest reader.
                let placed: OrderPlaced = record.decode()?;
                let outcome = self
                    .store
                    .reserve(&placed.event_id.to_string(), placed.order_id, &placed.items)
                    .await
                    .map_err(classify)?;
                let label = match &outcome {
                    Reservation::Reserved => "reserved",
                    Reservation::Failed { short_skus } => {
                        tracing::info!(order.id = %placed.order_id, short = ?short_skus, "reservation failed");
                        "failed"
                    }
                    Reservation::Unchanged => "duplicate",
                };
                metrics::counter!("inventory_reservations_total", "outcome" => label).increment(1);
                Ok(())
            }
            OrderRejected::NAME => {
                let rejected: OrderRejected = record.decode()?;
                let released = self
                    .store
                    .release(&rejected.event_id.to_string(), rejected.order_id)
                    .await
                    .map_err(classify)?;
                if let Release::Released(lines) = released {
                    tracing::info!(order.id = %rejected.order_id, lines, "reservation released");
                    metrics::counter!("inventory_releases_total").increment(1);
                }
                Ok(())
            }
            _ => Ok(()), // another fact on the topic (OrderConfirmed, …); not ours to handle
        }
    }
}

fn classify(err: StoreError) -> HandlerError {
    match err {
        // A locked database or a dropped connection passes; a broken schema wouldn't, but
        // retries end in the DLQ, where nothing is lost.
        err @ StoreError::Db(_) => HandlerError::retryable(err),
        err @ StoreError::Encode(_) => HandlerError::fatal(err),
    }
}
