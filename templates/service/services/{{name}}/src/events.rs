//! The facts this service publishes, on `{{name}}.events`.
//!
//! `schemas/{{Fact}}.v1.avsc` is the source of truth: spine-events embeds every schema file at
//! build time, so [`spine_events::encode`] and [`spine_events::decode`] find this struct's
//! schema by its [`Event::NAME`] and [`Event::VERSION`], and its namespace `spine.{{name}}` is
//! what puts it on `{{name}}.events`. The struct is written by hand to match the schema, field
//! for field; the tests below fail if the two drift apart.
//!
//! To change a fact, add `schemas/{{Fact}}.v2.avsc` (fields with defaults only, see
//! `schemas/README.md`), bump [`Event::VERSION`] and update the struct; never edit v1.

use serde::{Deserialize, Serialize};
use spine_events::Event;
use spine_events::event::{new_event_id, now_millis};
use uuid::Uuid;

/// The topic every {{name}} fact is published on.
pub const TOPIC: &str = "{{name}}.events";

/// The {{name}} service recorded a placed order (schema `{{Fact}}.v1`).
// TODO(your domain): say what your fact states, and carry what its consumers need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct {{Fact}} {
    /// Unique id of this fact; consumers deduplicate on it.
    #[serde(with = "spine_events::event::uuid_string")]
    pub event_id: Uuid,
    /// When the order was recorded, in milliseconds since the Unix epoch.
    pub occurred_at: i64,
    /// The order; the Kafka key.
    #[serde(with = "spine_events::event::uuid_string")]
    pub order_id: Uuid,
    /// Who placed the order.
    pub customer_id: String,
    /// The order's total in minor units of `currency`.
    pub total_minor: i64,
    /// ISO 4217 currency code of `total_minor`.
    pub currency: String,
}

impl Event for {{Fact}} {
    const NAME: &'static str = "{{Fact}}";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn event_id(&self) -> Uuid {
        self.event_id
    }

    // The aggregate id is the Kafka key: every fact about one order lands on one partition, in
    // order, like orders' and inventory's facts.
    fn aggregate_id(&self) -> Uuid {
        self.order_id
    }

    fn occurred_at_millis(&self) -> i64 {
        self.occurred_at
    }
}

impl {{Fact}} {
    /// The fact, happening now, with a fresh event id.
    pub fn new(
        order_id: Uuid,
        customer_id: impl Into<String>,
        total_minor: i64,
        currency: impl Into<String>,
    ) -> Self {
        Self {
            event_id: new_event_id(),
            occurred_at: now_millis(),
            order_id,
            customer_id: customer_id.into(),
            total_minor,
            currency: currency.into(),
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fact_round_trips_through_its_embedded_schema() {
        let fact = {{Fact}}::new(Uuid::now_v7(), "customer-42", 2_500, "EUR");
        let bytes = spine_events::encode(&fact).unwrap();
        let entry = spine_events::peek(&bytes).unwrap();
        assert_eq!((entry.name(), entry.version()), ({{Fact}}::NAME, 1));
        assert_eq!(
            spine_events::decode::<{{Fact}}>(&bytes).unwrap(),
            fact
        );
    }

    #[test]
    fn the_schemas_namespace_puts_the_fact_on_this_services_topic() {
        let entry = spine_events::catalog()
            .latest({{Fact}}::NAME)
            .expect("schemas/{{Fact}}.v1.avsc is embedded");
        assert_eq!(entry.version(), {{Fact}}::VERSION);
        assert_eq!(entry.topic(), {{Fact}}::TOPIC);
    }
}
