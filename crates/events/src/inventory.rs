//! Facts produced by the inventory service on `inventory.events`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{impl_event, new_event_id, now_millis, uuid_string};

/// The topic every inventory fact is published on.
pub const TOPIC: &str = "inventory.events";

/// Units of one SKU held for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservedLine {
    /// Stock-keeping unit: the product's id.
    pub sku: String,
    /// How many units are held.
    pub quantity: i32,
}

/// Inventory reserved stock for every line of an order (schema `StockReserved.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReserved {
    /// Unique id of this fact.
    #[serde(with = "uuid_string")]
    pub event_id: Uuid,
    /// When the stock was reserved, in milliseconds since the Unix epoch.
    pub occurred_at: i64,
    /// The order the stock is held for; the Kafka key.
    #[serde(with = "uuid_string")]
    pub order_id: Uuid,
    /// What was reserved: one entry per ordered SKU.
    pub lines: Vec<ReservedLine>,
}
impl_event!(StockReserved, "StockReserved", 1, "inventory.events");

impl StockReserved {
    /// Stock for `order_id` reserved now.
    pub fn new(order_id: Uuid, lines: Vec<ReservedLine>) -> Self {
        Self {
            event_id: new_event_id(),
            occurred_at: now_millis(),
            order_id,
            lines,
        }
    }
}

/// Inventory could not reserve stock for an order; nothing was reserved
/// (schema `StockReservationFailed.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReservationFailed {
    /// Unique id of this fact.
    #[serde(with = "uuid_string")]
    pub event_id: Uuid,
    /// When the reservation failed, in milliseconds since the Unix epoch.
    pub occurred_at: i64,
    /// The order; the Kafka key.
    #[serde(with = "uuid_string")]
    pub order_id: Uuid,
    /// Why the reservation failed, e.g. out of stock.
    pub reason: String,
    /// SKUs that did not have enough stock.
    pub short_skus: Vec<String>,
}
impl_event!(
    StockReservationFailed,
    "StockReservationFailed",
    1,
    "inventory.events"
);

impl StockReservationFailed {
    /// A reservation for `order_id` that failed now.
    pub fn new(order_id: Uuid, reason: impl Into<String>, short_skus: Vec<String>) -> Self {
        Self {
            event_id: new_event_id(),
            occurred_at: now_millis(),
            order_id,
            reason: reason.into(),
            short_skus,
        }
    }
}
