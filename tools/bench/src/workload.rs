//! What is sent: realistic `OrderPlaced` events, and the size of one on the wire.

use spine_events::orders::{LineItem, OrderPlaced};
use spine_kit::kafka::OutgoingRecord;
use uuid::Uuid;

/// A realistic order: two lines, a customer id and e-mail of production-like length, and a
/// sales channel (schema v2). `i` only varies the ids; every order encodes to the same size.
pub fn order(i: usize) -> OrderPlaced {
    let customer = format!("customer-{:08}", i % 100_000_000);
    let mut order = OrderPlaced::new(
        Uuid::now_v7(),
        customer.as_str(),
        format!("{customer}@example.com"),
        vec![
            LineItem::new(format!("SKU-{:05}", i % 100_000), 2, 1250),
            LineItem::new(format!("SKU-{:05}", (i + 7) % 100_000), 1, 500),
        ],
        "EUR",
    );
    order.sales_channel = Some("web".to_owned());
    order
}

/// `n` orders with distinct order ids (the Kafka keys), built before any timing starts.
pub fn orders(n: usize) -> Vec<OrderPlaced> {
    (0..n).map(order).collect()
}

/// The bytes of one record that travel to the broker, by part (framing not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageSize {
    /// Key bytes (the order id as text).
    pub key: usize,
    /// Value bytes (the Avro single-object encoding).
    pub value: usize,
    /// Header name and value bytes, all headers together.
    pub headers: usize,
    /// How many headers.
    pub header_count: usize,
}

impl MessageSize {
    /// The size of `record`.
    pub fn of(record: &OutgoingRecord) -> Self {
        Self {
            key: record.key.as_ref().map_or(0, Vec::len),
            value: record.payload.len(),
            headers: record.headers.iter().map(|(n, v)| n.len() + v.len()).sum(),
            header_count: record.headers.iter().count(),
        }
    }

    /// Key, value and headers together: the message size the report names.
    pub fn total(&self) -> usize {
        self.key + self.value + self.headers
    }
}

#[cfg(test)]
mod tests {
    use spine_kit::kafka::Headers;

    use super::*;

    #[test]
    fn the_size_counts_key_value_and_header_names_and_values() {
        let record = OutgoingRecord {
            topic: "t".into(),
            key: Some(b"abc".to_vec()),
            payload: vec![0; 10],
            headers: Headers::new().with("ab", "cde").with("f", ""),
        };
        let size = MessageSize::of(&record);
        assert_eq!(
            size,
            MessageSize {
                key: 3,
                value: 10,
                headers: 6,
                header_count: 2
            }
        );
        assert_eq!(size.total(), 19);
    }

    #[test]
    fn every_order_encodes_to_the_same_size() {
        let sizes: Vec<usize> = [0, 1, 99_999, 123_456]
            .into_iter()
            .map(|i| spine_events::encode(&order(i)).unwrap().len())
            .collect();
        assert!(sizes.windows(2).all(|w| w[0] == w[1]), "{sizes:?}");
    }
}
