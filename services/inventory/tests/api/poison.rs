//! Records that can never be read go to the group's DLQ at once, with the reason and the
//! error, and the consumer goes on with the next record.

use spine_events::Event;
use spine_events::inventory::StockReserved;
use spine_events::orders::LineItem;
use spine_kit::db::Backend;
use spine_kit::kafka::{Headers, OutgoingRecord};
use uuid::Uuid;

use crate::support::*;

spine_kit::on_sqlite_and_postgres!(
    garbage_and_unknown_schemas_are_dead_lettered_and_the_consumer_goes_on,
);

async fn garbage_and_unknown_schemas_are_dead_lettered_and_the_consumer_goes_on(backend: Backend) {
    let app = spawn_app(backend).await;
    let [a, _, _] = app.skus.clone();
    let garbage_key = Uuid::now_v7().to_string();
    let unknown_key = Uuid::now_v7().to_string();
    let mut unknown_schema = vec![0xC3, 0x01];
    unknown_schema.extend_from_slice(&0xDEAD_BEEF_DEAD_BEEF_u64.to_le_bytes());
    unknown_schema.extend_from_slice(b"\x02\x04");
    let raw = |key: &str, payload: Vec<u8>| OutgoingRecord {
        topic: String::new(), // set by `send`
        key: Some(key.as_bytes().to_vec()),
        payload,
        headers: Headers::new().with("event-type", "OrderPlaced"),
    };

    app.send(&raw(&garbage_key, b"definitely not avro".to_vec()))
        .await;
    app.send(&raw(&unknown_key, unknown_schema)).await;
    let order = placed(vec![LineItem::new(&a, 1, 100)]);
    app.publish(&order).await;

    let dlq = format!("{}.dlq", app.settings.inventory.consumer_group);
    let dead = records_keyed(&app.settings.kafka, &dlq, &garbage_key, 1);
    assert_eq!(dead.len(), 1, "the garbage is dead-lettered once");
    assert_eq!(dead[0].headers.get_str("dlq-reason"), Some("poison"));
    let error = dead[0].headers.get_str("dlq-error").unwrap();
    assert!(error.contains("not Avro single-object encoding"), "{error}");
    assert_eq!(dead[0].payload, b"definitely not avro");
    assert_eq!(
        dead[0].headers.get_str("dlq-original-topic"),
        Some(app.settings.inventory.orders_topic.as_str())
    );

    let dead = records_keyed(&app.settings.kafka, &dlq, &unknown_key, 1);
    assert_eq!(dead.len(), 1, "the unknown schema is dead-lettered once");
    assert_eq!(dead[0].headers.get_str("dlq-reason"), Some("poison"));
    let error = dead[0].headers.get_str("dlq-error").unwrap();
    assert!(error.contains("fingerprint"), "{error}");

    // The consumer went on.
    let reserved = records_keyed(
        &app.settings.kafka,
        StockReserved::TOPIC,
        &order.order_id.to_string(),
        1,
    );
    assert_eq!(reserved.len(), 1, "the next order is reserved");
    assert_eq!(app.available(&a).await, 9);
    app.stop().await;
}
