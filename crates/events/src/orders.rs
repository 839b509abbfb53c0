//! Facts produced by the orders service on `orders.events`.
//!
//! [`OrderPlaced`] is the latest version (v2); [`v1::OrderPlaced`] pins v1 so tests can prove
//! that a reader built against an old schema still reads data written with the new one.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{impl_event, new_event_id, now_millis, uuid_string};

/// The topic every orders fact is published on.
pub const TOPIC: &str = "orders.events";

/// One line of an order: a product, how many of it, and at what unit price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    /// Stock-keeping unit: the product's id.
    pub sku: String,
    /// How many units were ordered; at least 1.
    pub quantity: i32,
    /// Price of one unit in minor units of the order's currency (e.g. cents).
    pub unit_price_minor: i64,
}

impl LineItem {
    /// A line of `quantity` units of `sku` at `unit_price_minor` each.
    pub fn new(sku: impl Into<String>, quantity: i32, unit_price_minor: i64) -> Self {
        Self {
            sku: sku.into(),
            quantity,
            unit_price_minor,
        }
    }

    /// `quantity * unit_price_minor`, in minor units.
    pub fn line_total_minor(&self) -> i64 {
        i64::from(self.quantity) * self.unit_price_minor
    }
}

/// A customer placed an order (schema `OrderPlaced.v2`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// Unique id of this fact.
    #[serde(with = "uuid_string")]
    pub event_id: Uuid,
    /// When the order was placed, in milliseconds since the Unix epoch.
    pub occurred_at: i64,
    /// The order; the Kafka key.
    #[serde(with = "uuid_string")]
    pub order_id: Uuid,
    /// Who placed the order.
    pub customer_id: String,
    /// Where the customer wants mail about this order.
    pub email: String,
    /// The ordered lines; never empty.
    pub items: Vec<LineItem>,
    /// Sum of the line totals, in minor units.
    pub total_minor: i64,
    /// ISO 4217 currency code of every amount in the order, e.g. `EUR`.
    pub currency: String,
    /// Where the order was placed (`web`, `mobile`, `pos`); `None` when unknown and for every
    /// order written as v1. Added in v2.
    pub sales_channel: Option<String>,
}
impl_event!(OrderPlaced, "OrderPlaced", 2, "orders.events");

impl OrderPlaced {
    /// An order placed now, with a fresh event id, the total summed from `items`, and no sales
    /// channel.
    pub fn new(
        order_id: Uuid,
        customer_id: impl Into<String>,
        email: impl Into<String>,
        items: Vec<LineItem>,
        currency: impl Into<String>,
    ) -> Self {
        let total_minor = items.iter().map(LineItem::line_total_minor).sum();
        Self {
            event_id: new_event_id(),
            occurred_at: now_millis(),
            order_id,
            customer_id: customer_id.into(),
            email: email.into(),
            items,
            total_minor,
            currency: currency.into(),
            sales_channel: None,
        }
    }
}

/// Stock was reserved for every line, so the order is confirmed (schema `OrderConfirmed.v1`).
///
/// Carries what a confirmation mail needs, so the email service keeps no order state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    /// Unique id of this fact.
    #[serde(with = "uuid_string")]
    pub event_id: Uuid,
    /// When the order was confirmed, in milliseconds since the Unix epoch.
    pub occurred_at: i64,
    /// The order; the Kafka key.
    #[serde(with = "uuid_string")]
    pub order_id: Uuid,
    /// Where the customer wants mail about this order.
    pub email: String,
    /// The order's total in minor units of `currency`.
    pub total_minor: i64,
    /// ISO 4217 currency code of `total_minor`.
    pub currency: String,
}
impl_event!(OrderConfirmed, "OrderConfirmed", 1, "orders.events");

impl OrderConfirmed {
    /// The confirmation of `placed`, happening now.
    pub fn of(placed: &OrderPlaced) -> Self {
        Self {
            event_id: new_event_id(),
            occurred_at: now_millis(),
            order_id: placed.order_id,
            email: placed.email.clone(),
            total_minor: placed.total_minor,
            currency: placed.currency.clone(),
        }
    }
}

/// The order cannot be fulfilled and was rejected (schema `OrderRejected.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRejected {
    /// Unique id of this fact.
    #[serde(with = "uuid_string")]
    pub event_id: Uuid,
    /// When the order was rejected, in milliseconds since the Unix epoch.
    pub occurred_at: i64,
    /// The order; the Kafka key.
    #[serde(with = "uuid_string")]
    pub order_id: Uuid,
    /// Where the customer wants mail about this order.
    pub email: String,
    /// Why the order was rejected, in words fit for the customer.
    pub reason: String,
}
impl_event!(OrderRejected, "OrderRejected", 1, "orders.events");

impl OrderRejected {
    /// The rejection of `placed` for `reason`, happening now.
    pub fn of(placed: &OrderPlaced, reason: impl Into<String>) -> Self {
        Self {
            event_id: new_event_id(),
            occurred_at: now_millis(),
            order_id: placed.order_id,
            email: placed.email.clone(),
            reason: reason.into(),
        }
    }
}

/// Old versions of orders facts, pinned so tests can read new data with old readers.
pub mod v1 {
    use serde::{Deserialize, Serialize};
    use uuid::Uuid;

    use super::LineItem;
    use crate::event::{impl_event, uuid_string};

    /// A customer placed an order, as schema `OrderPlaced.v1` (no `sales_channel`).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct OrderPlaced {
        /// Unique id of this fact.
        #[serde(with = "uuid_string")]
        pub event_id: Uuid,
        /// When the order was placed, in milliseconds since the Unix epoch.
        pub occurred_at: i64,
        /// The order; the Kafka key.
        #[serde(with = "uuid_string")]
        pub order_id: Uuid,
        /// Who placed the order.
        pub customer_id: String,
        /// Where the customer wants mail about this order.
        pub email: String,
        /// The ordered lines; never empty.
        pub items: Vec<LineItem>,
        /// Sum of the line totals, in minor units.
        pub total_minor: i64,
        /// ISO 4217 currency code of every amount in the order.
        pub currency: String,
    }
    impl_event!(OrderPlaced, "OrderPlaced", 1, "orders.events");
}
