//! Every fact, reduced to what the aggregates need and applied once.

use spine_events::Event;
use spine_events::orders::{OrderConfirmed, OrderPlaced, OrderRejected};
use spine_kit::kafka::consumer::{Handler, HandlerError, Record};

use crate::store::{AnalyticsStore, Fact};

/// The handler of every topic analytics follows.
pub struct Aggregator {
    store: AnalyticsStore,
}

impl Aggregator {
    /// Aggregates into `store`.
    pub fn new(store: AnalyticsStore) -> Self {
        Self { store }
    }
}

impl Handler for Aggregator {
    async fn handle(&self, record: &Record) -> Result<(), HandlerError> {
        let payload = record.payload.as_deref().unwrap_or_default();
        let entry = spine_events::peek(payload)?;
        let (event_id, fact) = match entry.name() {
            OrderPlaced::NAME => {
                let e: OrderPlaced = record.decode()?;
                let fact = Fact::Placed {
                    order_id: e.order_id.to_string(),
                    at: e.occurred_at,
                    currency: e.currency,
                    total_minor: e.total_minor,
                };
                (e.event_id, fact)
            }
            OrderConfirmed::NAME => {
                let e: OrderConfirmed = record.decode()?;
                let fact = Fact::Outcome {
                    order_id: e.order_id.to_string(),
                    at: e.occurred_at,
                    status: "CONFIRMED",
                    revenue: Some((e.currency, e.total_minor)),
                };
                (e.event_id, fact)
            }
            OrderRejected::NAME => {
                let e: OrderRejected = record.decode()?;
                let fact = Fact::Outcome {
                    order_id: e.order_id.to_string(),
                    at: e.occurred_at,
                    status: "REJECTED",
                    revenue: None,
                };
                (e.event_id, fact)
            }
            _ => {
                // Counted by type; the event id comes from the header every kit producer writes.
                let id = record
                    .event_id()
                    .ok_or_else(|| HandlerError::poison(anyhow::anyhow!("no event-id header")))?;
                (id.parse().map_err(HandlerError::poison)?, Fact::Other)
            }
        };
        self.store
            .apply(&event_id.to_string(), entry.name(), &fact)
            .await
            .map(|_| ())
            // An outage (database down, pool exhausted, locked, timing out) is retried without
            // limit; any other database error a bounded number of times, then dead-lettered.
            .map_err(spine_kit::db::classify)
    }
}
