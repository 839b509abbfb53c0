//! On the Confluent framing (a schema registry; here the kit's in-process one), the service
//! registers its schemas at startup, reads orders' facts in either framing, and writes its own
//! in the Confluent framing with the registry's id.

use spine_events::codec::{CONFLUENT_HEADER_LEN, CONFLUENT_MAGIC};
use spine_events::orders::OrderPlaced;
use spine_events::{Event, Framing, catalog};
use spine_kit::db::Backend;
use spine_kit::kafka::OutgoingRecord;
use spine_kit::testing::registry::TestRegistry;
use spine_{{name}}::events::{{Fact}};

use crate::support::*;

spine_kit::on_sqlite_and_postgres!(
    on_the_confluent_framing_facts_are_read_in_either_framing_and_written_with_registry_ids,
);

async fn on_the_confluent_framing_facts_are_read_in_either_framing_and_written_with_registry_ids(
    backend: Backend,
) {
    let registry = TestRegistry::start().await;
    let app = spawn_app_with(backend, |settings| {
        settings.schemas.framing = Framing::Confluent;
        settings.schemas.registry.url = Some(registry.url());
    })
    .await;
    let subject = format!("{}-spine.{{name}}.{{Fact}}", {{Fact}}::TOPIC);
    let fact_id = registry
        .versions(&subject)
        .pop()
        .expect("the service registered its fact's schema at startup")
        .id;

    // This process writes the Confluent framing now (the app set it up); the second order
    // goes out in single-object encoding, as a producer not yet migrated writes it.
    let confluent = placed();
    app.publish(&confluent).await;
    let single = placed();
    let mut record = OutgoingRecord::from_event(&single).unwrap();
    assert_eq!(record.payload[0], CONFLUENT_MAGIC);
    let header = catalog()
        .get(OrderPlaced::NAME, OrderPlaced::VERSION)
        .unwrap()
        .header();
    record.payload = [&header[..], &record.payload[CONFLUENT_HEADER_LEN..]].concat();
    record.topic = app.settings.{{name}}.orders_topic.clone();
    app.send(&record).await;

    for order in [&confluent, &single] {
        let facts = records_keyed(
            &app.settings.kafka,
            {{Fact}}::TOPIC,
            &order.order_id.to_string(),
            1,
        );
        assert_eq!(facts.len(), 1, "one {{Fact}} for order {}", order.order_id);
        let payload = &facts[0].payload;
        assert_eq!(payload[0], CONFLUENT_MAGIC, "our fact is in the Confluent framing");
        assert_eq!(&payload[1..CONFLUENT_HEADER_LEN], &fact_id.to_be_bytes());
        let fact: {{Fact}} = spine_events::decode(payload).unwrap();
        assert_eq!(fact.order_id, order.order_id);
    }
    app.stop().await;
}
