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

/// What the runner does with a failed reaction.
fn classify(err: StoreError) -> HandlerError {
    match err {
        // The database down, unreachable, out of connections, locked or timing out is an
        // outage: retried without limit, never dead-lettered. Any other database error (a
        // deadlock, a broken schema) is retried a bounded number of times, then dead-lettered,
        // where nothing is lost.
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
        let outage = StoreError::Db(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(matches!(classify(outage), HandlerError::Unavailable(_)));
        let failure = StoreError::Db(sqlx::Error::RowNotFound);
        assert!(matches!(classify(failure), HandlerError::Retryable(_)));
    }
}
