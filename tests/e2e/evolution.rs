//! Typed facts across a real broker: a new writer and an old reader in one consumer group
//! flow, with the standard headers on the wire.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use spine_events::Event;
use spine_events::orders::{LineItem, OrderPlaced, v1};
use spine_kit::kafka::consumer::{ConsumerRunner, Handler, HandlerError, Record};
use spine_kit::kafka::{Publisher, TopicSpec, ensure_topics, headers};
use spine_kit::settings::KafkaSettings;
use tokio_util::sync::CancellationToken;

/// A service still pinned to OrderPlaced v1.
struct OldReader(Arc<Mutex<Vec<(v1::OrderPlaced, Record)>>>);

impl Handler for OldReader {
    async fn handle(&self, record: &Record) -> Result<(), HandlerError> {
        let placed: v1::OrderPlaced = record.decode()?;
        self.0.lock().unwrap().push((placed, record.clone()));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_reader_consumes_facts_written_by_a_new_writer() {
    let mut settings = KafkaSettings::default();
    if let Ok(servers) = std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        settings.bootstrap_servers = servers;
    }
    settings.consumer.max_poll_interval = Duration::from_secs(6);
    ensure_topics(&settings, &[TopicSpec::new(OrderPlaced::TOPIC, &settings)])
        .await
        .expect("a broker at KAFKA_BOOTSTRAP_SERVERS (scripts/broker start)");
    let mut placed = OrderPlaced::new(
        uuid::Uuid::now_v7(),
        "customer-7",
        "ada@example.com",
        vec![
            LineItem::new("SKU-1", 2, 1_250),
            LineItem::new("SKU-2", 1, 500),
        ],
        "EUR",
    );
    placed.sales_channel = Some("mobile".into());
    let publisher = Publisher::new(&settings, "e2e-producer").unwrap();
    publisher.publish(&placed).await.unwrap();

    let seen = Arc::new(Mutex::new(Vec::new()));
    // A unique group starting from the beginning of the shared topic: filter to our order.
    let group = format!("e2e-{}", uuid::Uuid::new_v4().simple());
    let runner = ConsumerRunner::new(
        &settings,
        &group,
        &[OrderPlaced::TOPIC],
        OldReader(seen.clone()),
    )
    .unwrap();
    let token = CancellationToken::new();
    let task = tokio::spawn(runner.run(token.clone()));
    let order_id = placed.order_id;
    let found = async {
        loop {
            if let Some(hit) = seen
                .lock()
                .unwrap()
                .iter()
                .find(|(p, _)| p.order_id == order_id)
            {
                return hit.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (old, record) = tokio::time::timeout(Duration::from_secs(30), found)
        .await
        .expect("the old reader received the order");
    token.cancel();
    task.await.unwrap().unwrap();

    assert_eq!(old.order_id, placed.order_id);
    assert_eq!(old.items.len(), 2);
    assert_eq!(old.total_minor, placed.total_minor);
    assert_eq!(
        record.key_str(),
        Some(order_id.to_string().as_str()),
        "keyed by order id"
    );
    let h = &record.headers;
    assert_eq!(
        h.get_str(headers::EVENT_ID),
        Some(placed.event_id.to_string().as_str())
    );
    assert_eq!(h.get_str(headers::EVENT_TYPE), Some("OrderPlaced"));
    assert_eq!(
        h.get_str(headers::EVENT_VERSION),
        Some("2"),
        "written as v2"
    );
    assert_eq!(
        h.get_str(headers::CONTENT_TYPE),
        Some(spine_events::CONTENT_TYPE)
    );
}
