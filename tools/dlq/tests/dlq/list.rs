//! Listing and showing: records found by original topic, error and key; unknown DLQs and
//! missing positions are the operator's errors.

use spine_dlq::{DlqError, Filter, Position, commands};
use spine_events::orders::{LineItem, OrderPlaced};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_finds_records_by_original_topic_error_and_key() {
    let fx = Fixture::new().await;
    let other = "inventory.events";
    fx.dead_letter(None, "order-1", b"a", "e-1", "stock service timed out", &[])
        .await;
    fx.dead_letter(
        Some(other),
        "order-2",
        b"b",
        "e-2",
        "decode: Unknown fingerprint 7",
        &[],
    )
    .await;
    fx.dead_letter(None, "order-3", b"c", "e-3", "invalid quantity", &[])
        .await;

    let everything = fx.select(&Filter::default()).await;
    let by_topic = fx
        .select(&Filter {
            topic: Some(fx.topic.clone()),
            ..Filter::default()
        })
        .await;
    let by_error = fx
        .select(&Filter {
            error: Some("UNKNOWN fingerprint".into()),
            ..Filter::default()
        })
        .await;
    let by_key = fx
        .select(&Filter {
            key: Some("order-3".into()),
            ..Filter::default()
        })
        .await;

    assert_eq!(everything.len(), 3);
    let keys = |records: &[spine_dlq::DlqRecord]| {
        let mut keys: Vec<String> = records.iter().map(|r| r.key_display()).collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(&by_topic), ["order-1", "order-3"]);
    assert_eq!(keys(&by_error), ["order-2"]);
    assert_eq!(by_error[0].original_topic(), Some(other));
    assert_eq!(keys(&by_key), ["order-3"]);

    let mut out = Vec::new();
    let n = commands::list(&fx.dlq, &Filter::default(), false, false, &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(n, 3);
    assert!(
        text.contains("key=order-1 reason=poison attempts=1 replays=0"),
        "{text}"
    );
    assert!(text.contains("undecodable"), "{text}");
    let mut out = Vec::new();
    commands::list(&fx.dlq, &Filter::default(), false, true, &mut out)
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines
            .iter()
            .any(|l| l["key"] == "order-2" && l["original_topic"] == other)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_decodes_a_known_event_and_dumps_anything_else_as_hex() {
    let fx = Fixture::new().await;
    let placed = OrderPlaced::new(
        uuid::Uuid::now_v7(),
        "customer-42",
        "ada@example.com",
        vec![LineItem::new("SKU-1", 2, 1_250)],
        "EUR",
    );
    let key = placed.order_id.to_string();
    fx.dead_letter(
        None,
        &key,
        &spine_events::encode(&placed).unwrap(),
        "e-1",
        "boom",
        &[],
    )
    .await;
    fx.dead_letter(None, &key, b"not avro", "e-2", "boom", &[])
        .await;
    let records = fx.select(&Filter::default()).await;
    assert_eq!(records.len(), 2);

    let mut shown = Vec::new();
    for record in &records {
        let mut out = Vec::new();
        commands::show(&fx.dlq, record.position, &mut out)
            .await
            .unwrap();
        shown.push(String::from_utf8(out).unwrap());
    }
    let decoded = shown.iter().find(|s| s.contains("event-id: e-1")).unwrap();
    assert!(decoded.contains("value (OrderPlaced.v"), "{decoded}");
    assert!(decoded.contains("\"customer-42\""), "{decoded}");
    assert!(decoded.contains("dlq-error: boom"), "{decoded}");
    let dumped = shown.iter().find(|s| s.contains("event-id: e-2")).unwrap();
    assert!(dumped.contains("undecodable"), "{dumped}");
    assert!(dumped.contains("6e 6f 74 20 61 76 72 6f"), "{dumped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_dlq_or_a_missing_position_is_a_usage_error() {
    let fx = Fixture::new().await;
    let unknown = spine_dlq::Dlq::with_settings(fx.settings.clone(), unique("nope.dlq"));
    let err = commands::list(&unknown, &Filter::default(), false, false, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(err, DlqError::UnknownTopic(_)), "{err}");
    assert_eq!(err.exit_code(), 2);

    let missing = Position {
        partition: 0,
        offset: 99,
    };
    let err = commands::show(&fx.dlq, missing, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(err, DlqError::NotFound { .. }), "{err}");
    assert_eq!(err.exit_code(), 2);
}
