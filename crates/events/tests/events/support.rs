//! Sample events and paths shared by the tests.

use std::path::PathBuf;

use spine_events::email::{EmailSent, TEMPLATE_ORDER_CONFIRMED};
use spine_events::inventory::{ReservedLine, StockReservationFailed, StockReserved};
use spine_events::orders::{LineItem, OrderConfirmed, OrderPlaced, OrderRejected, v1};
use uuid::Uuid;

/// A path relative to the workspace root.
pub fn workspace_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

pub fn order_placed() -> OrderPlaced {
    let mut placed = OrderPlaced::new(
        Uuid::now_v7(),
        "customer-42",
        "ada@example.com",
        vec![
            LineItem::new("SKU-1", 2, 1_250),
            LineItem::new("SKU-2", 1, 999),
        ],
        "EUR",
    );
    placed.sales_channel = Some("web".into());
    placed
}

pub fn order_placed_v1() -> v1::OrderPlaced {
    let placed = order_placed();
    v1::OrderPlaced {
        event_id: placed.event_id,
        occurred_at: placed.occurred_at,
        order_id: placed.order_id,
        customer_id: placed.customer_id,
        email: placed.email,
        items: placed.items,
        total_minor: placed.total_minor,
        currency: placed.currency,
    }
}

pub fn order_confirmed() -> OrderConfirmed {
    OrderConfirmed::of(&order_placed())
}

pub fn order_rejected() -> OrderRejected {
    OrderRejected::of(&order_placed(), "SKU-2 is out of stock")
}

pub fn stock_reserved() -> StockReserved {
    let lines = vec![ReservedLine {
        sku: "SKU-1".into(),
        quantity: 2,
    }];
    StockReserved::new(Uuid::now_v7(), lines)
}

pub fn stock_reservation_failed() -> StockReservationFailed {
    StockReservationFailed::new(Uuid::now_v7(), "out of stock", vec!["SKU-2".into()])
}

pub fn email_sent() -> EmailSent {
    EmailSent::new(
        Uuid::now_v7(),
        "ada@example.com",
        TEMPLATE_ORDER_CONFIRMED,
        "msg-1",
    )
}
