//! Records that can never be read go to the group's DLQ at once, with the reason and the
//! error, and the consumer goes on with the next record.

use spine_kit::db::Backend;
use spine_kit::kafka::{Headers, OutgoingRecord};
use spine_{{name}}::events::{{Fact}};
use uuid::Uuid;

use crate::support::*;

spine_kit::on_sqlite_and_postgres!(garbage_is_dead_lettered_and_the_consumer_goes_on);

async fn garbage_is_dead_lettered_and_the_consumer_goes_on(backend: Backend) {
    let app = spawn_app(backend).await;
    let garbage_key = Uuid::now_v7().to_string();
    let garbage = OutgoingRecord {
        topic: String::new(), // set by `send`
        key: Some(garbage_key.as_bytes().to_vec()),
        payload: b"definitely not avro".to_vec(),
        headers: Headers::new().with("event-type", "OrderPlaced"),
    };

    app.send(&garbage).await;
    let order = placed();
    app.publish(&order).await;

    let dlq = format!("{}.dlq", app.settings.{{name}}.consumer_group);
    let dead = records_keyed(&app.settings.kafka, &dlq, &garbage_key, 1);
    assert_eq!(dead.len(), 1, "the garbage is dead-lettered once");
    assert_eq!(dead[0].headers.get_str("dlq-reason"), Some("poison"));
    let error = dead[0].headers.get_str("dlq-error").unwrap();
    assert!(error.contains("not Avro single-object encoding"), "{error}");
    assert_eq!(dead[0].payload, b"definitely not avro");
    assert_eq!(
        dead[0].headers.get_str("dlq-original-topic"),
        Some(app.settings.{{name}}.orders_topic.as_str())
    );

    // The consumer went on.
    let facts: Vec<{{Fact}}> = app.facts(order.order_id, 1);
    assert_eq!(facts.len(), 1, "the next order is recorded");
    assert_eq!(app.count("{{name}}_orders").await, 1);
    app.stop().await;
}
