//! Every fact, reduced to what the aggregates need and applied once. A batch of facts (the
//! records of one partition) is one transaction: one inbox insert, then the batch's rows with
//! a few multi-row statements (placements, then outcomes, then the summed counters).

use spine_events::Event;
use spine_events::orders::{OrderConfirmed, OrderPlaced, OrderRejected};
use spine_kit::kafka::consumer::{Batch, BatchHandler, HandlerError, Record};

use crate::store::{AnalyticsStore, Fact};

/// The handler of every topic analytics follows, run as `Batched::new(Aggregator::new(store))`.
pub struct Aggregator {
    store: AnalyticsStore,
}

impl Aggregator {
    /// Aggregates into `store`.
    pub fn new(store: AnalyticsStore) -> Self {
        Self { store }
    }
}

/// A record, decoded: its event id, its type and the fact.
fn decode(record: &Record) -> Result<(String, &'static str, Fact), HandlerError> {
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
            let id: uuid::Uuid = id.parse().map_err(HandlerError::poison)?;
            (id, Fact::Other)
        }
    };
    Ok((event_id.to_string(), entry.name(), fact))
}

impl BatchHandler for Aggregator {
    /// Decodes every record first (one that does not decode fails the batch before anything is
    /// written: poison, which the runner isolates), claims every event id with one inbox
    /// insert, applies each claimed fact in offset order, and writes and commits them once.
    async fn handle_batch(&self, batch: &Batch<'_>) -> Result<(), HandlerError> {
        let facts = batch
            .iter()
            .map(|item| decode(item.record()))
            .collect::<Result<Vec<_>, _>>()?;
        let event_ids: Vec<&str> = facts.iter().map(|(id, _, _)| id.as_str()).collect();
        // An outage (database down, pool exhausted, locked, timing out) is retried without
        // limit; any other database error a bounded number of times, then dead-lettered.
        let (mut aggregation, claimed) = self
            .store
            .begin_batch(&event_ids)
            .await
            .map_err(spine_kit::db::classify)?;
        let mut applied = Vec::with_capacity(facts.len());
        for ((_, event_type, fact), fresh) in facts.iter().zip(claimed) {
            if fresh {
                aggregation.apply(event_type, fact);
                applied.push(*event_type);
            }
        }
        let times_to_outcome = aggregation
            .commit()
            .await
            .map_err(spine_kit::db::classify)?;
        // Metrics only for what is durable.
        for event_type in applied {
            metrics::counter!("analytics_facts_total", "type" => event_type).increment(1);
        }
        for millis in times_to_outcome {
            metrics::histogram!("analytics_time_to_outcome_seconds").record(millis as f64 / 1000.0);
        }
        Ok(())
    }
}
