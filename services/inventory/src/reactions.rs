//! Inventory reacts to orders' facts: OrderPlaced reserves stock for every line or none,
//! OrderRejected releases what an order holds. A batch of facts (the records of one partition)
//! is one transaction: the inbox rows, stock, reservations and outbox rows of all of them
//! commit together, or none do.

use std::collections::BTreeSet;

use spine_events::Event;
use spine_events::orders::{LineItem, OrderPlaced, OrderRejected};
use spine_kit::kafka::consumer::{Batch, BatchHandler, HandlerError, Record};
use tracing::Instrument;
use uuid::Uuid;

use crate::store::{InventoryStore, Release, Reservation, StoreError};

/// The handler of `orders.events`, run as `Batched::new(OrderReactions::new(store))`.
pub struct OrderReactions {
    store: InventoryStore,
}

impl OrderReactions {
    /// Reactions writing through `store`.
    pub fn new(store: InventoryStore) -> Self {
        Self { store }
    }
}

/// A record, decoded into what inventory does with it.
enum Reaction {
    Reserve {
        event_id: String,
        order_id: Uuid,
        items: Vec<LineItem>,
    },
    Release {
        event_id: String,
        order_id: Uuid,
    },
    /// Another fact on the topic (OrderConfirmed, …): not ours to handle, and not recorded.
    Ignore,
}

impl Reaction {
    fn decode(record: &Record) -> Result<Self, HandlerError> {
        let payload = record.payload.as_deref().unwrap_or_default();
        Ok(match spine_events::peek(payload)?.name() {
            OrderPlaced::NAME => {
                // Any writer version resolves to the latest reader.
                let placed: OrderPlaced = record.decode()?;
                Self::Reserve {
                    event_id: placed.event_id.to_string(),
                    order_id: placed.order_id,
                    items: placed.items,
                }
            }
            OrderRejected::NAME => {
                let rejected: OrderRejected = record.decode()?;
                Self::Release {
                    event_id: rejected.event_id.to_string(),
                    order_id: rejected.order_id,
                }
            }
            _ => Self::Ignore,
        })
    }

    fn event_id(&self) -> Option<&str> {
        match self {
            Self::Reserve { event_id, .. } | Self::Release { event_id, .. } => Some(event_id),
            Self::Ignore => None,
        }
    }
}

/// What a reaction did, reported once the batch has committed.
enum Done {
    Reserved(Uuid, Reservation),
    Released(Uuid, Release),
    Nothing,
}

impl BatchHandler for OrderReactions {
    /// Decodes every record first (one that does not decode fails the batch before anything is
    /// written: poison, which the runner isolates), claims every event id with one inbox
    /// insert, applies each claimed record's effect in offset order inside its own span (so
    /// the fact it enqueues joins its trace), and commits once.
    async fn handle_batch(&self, batch: &Batch<'_>) -> Result<(), HandlerError> {
        let reactions = batch
            .iter()
            .map(|item| Reaction::decode(item.record()))
            .collect::<Result<Vec<_>, _>>()?;
        let event_ids: Vec<&str> = reactions.iter().filter_map(Reaction::event_id).collect();
        if event_ids.is_empty() {
            return Ok(()); // nothing of ours: no transaction
        }
        let (mut effects, claimed) = self.store.begin_batch(&event_ids).await.map_err(db)?;
        // Pair each reaction with its claim; an ignored record claims nothing.
        let mut claims = claimed.into_iter();
        let fresh: Vec<bool> = reactions
            .iter()
            .map(|r| r.event_id().is_some() && claims.next().unwrap_or(false))
            .collect();
        let mut reserving = BTreeSet::new();
        let mut releasing = Vec::new();
        let mut placing = Vec::new();
        for (reaction, _) in reactions.iter().zip(&fresh).filter(|(_, fresh)| **fresh) {
            match reaction {
                Reaction::Reserve {
                    order_id, items, ..
                } => {
                    reserving.extend(items.iter().map(|i| i.sku.as_str()));
                    placing.push(*order_id);
                }
                Reaction::Release { order_id, .. } => releasing.push(*order_id),
                Reaction::Ignore => {}
            }
        }
        effects
            .lock_stock(reserving, &releasing, &placing)
            .await
            .map_err(db)?;
        let mut done = Vec::with_capacity(reactions.len());
        for ((item, reaction), fresh) in batch.iter().zip(&reactions).zip(fresh) {
            let outcome = match reaction {
                Reaction::Reserve {
                    order_id, items, ..
                } => Done::Reserved(
                    *order_id,
                    if fresh {
                        effects
                            .reserve(*order_id, items)
                            .instrument(item.span().clone())
                            .await
                            .map_err(classify)?
                    } else {
                        Reservation::Unchanged
                    },
                ),
                Reaction::Release { order_id, .. } => Done::Released(
                    *order_id,
                    if fresh {
                        effects
                            .release(*order_id)
                            .instrument(item.span().clone())
                            .await
                            .map_err(classify)?
                    } else {
                        Release::Unchanged
                    },
                ),
                Reaction::Ignore => Done::Nothing,
            };
            done.push(outcome);
        }
        effects.commit().await.map_err(db)?;
        // Logs and metrics only for what is durable, each in its record's span.
        for (item, outcome) in batch.iter().zip(done) {
            item.span().in_scope(|| report(outcome));
        }
        Ok(())
    }
}

/// The log line and metrics of one committed reaction.
fn report(done: Done) {
    match done {
        Done::Reserved(order_id, outcome) => {
            let label = match &outcome {
                Reservation::Reserved => "reserved",
                Reservation::Failed { short_skus } => {
                    tracing::info!(order.id = %order_id, short = ?short_skus, "reservation failed");
                    "failed"
                }
                Reservation::Unchanged => "duplicate",
            };
            metrics::counter!("inventory_reservations_total", "outcome" => label).increment(1);
        }
        Done::Released(order_id, Release::Released(lines)) => {
            tracing::info!(order.id = %order_id, lines, "reservation released");
            metrics::counter!("inventory_releases_total").increment(1);
        }
        Done::Released(_, Release::Unchanged) | Done::Nothing => {}
    }
}

/// A failed database call as the runner's error class.
fn db(err: sqlx::Error) -> HandlerError {
    classify(StoreError::Db(err))
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
