//! Dead-lettering: poison goes to the DLQ at once, exhausted retries after the last attempt,
//! both with the original record intact and the reason in the headers.

use std::time::Duration;

use spine_events::orders::OrderPlaced;
use spine_kit::kafka::consumer::{HandlerError, Record};
use spine_kit::kafka::headers::{EVENT_ID, dlq};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_record_goes_to_the_dlq_with_its_reason_and_origin() {
    let fx = Fixture::new(settings()).await;
    fx.send("order-1", b"this is not avro", "poison-1").await;
    fx.send("order-1", b"after the poison", "next-1").await;
    let handled = log();
    let running = fx.spawn(handler(handled.clone(), |handled, r: Record| async move {
        if r.event_id() == Some("poison-1") {
            r.decode::<OrderPlaced>()?; // bad bytes: a typed decode error, poison
        }
        handled.lock().unwrap().push(r.payload.unwrap());
        Ok(())
    }));
    let letters = fx.read(&fx.dlq, 1, Duration::from_secs(30));
    assert!(
        eventually(Duration::from_secs(30), || handled.lock().unwrap().len()
            == 1)
        .await,
        "the record after the poison is still handled"
    );
    running.stop().await.unwrap();

    assert_eq!(letters.len(), 1, "one record dead-lettered");
    let letter = &letters[0];
    assert_eq!(letter.key.as_deref(), Some(&b"order-1"[..]), "key kept");
    assert_eq!(
        letter.payload, b"this is not avro",
        "value kept byte for byte"
    );
    let h = &letter.headers;
    assert_eq!(
        h.get_str(EVENT_ID),
        Some("poison-1"),
        "original headers kept"
    );
    assert_eq!(h.get_str(dlq::REASON), Some("poison"));
    assert!(
        h.get_str(dlq::ERROR)
            .unwrap()
            .contains("not Avro single-object encoding"),
        "{:?}",
        h.get_str(dlq::ERROR)
    );
    assert_eq!(h.get_str(dlq::ORIGINAL_TOPIC), Some(fx.topic.as_str()));
    assert!(
        h.get_str(dlq::ORIGINAL_PARTITION)
            .unwrap()
            .parse::<i32>()
            .is_ok()
    );
    assert_eq!(h.get_str(dlq::ORIGINAL_OFFSET), Some("0"));
    assert_eq!(h.get_str(dlq::CONSUMER_GROUP), Some(fx.group.as_str()));
    assert_eq!(h.get_str(dlq::ATTEMPTS), Some("1"));
    assert_eq!(*handled.lock().unwrap(), vec![b"after the poison".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_keeps_failing_is_dead_lettered_after_the_last_attempt() {
    let mut settings = settings();
    settings.consumer.retry.max_attempts = 3;
    let fx = Fixture::new(settings).await;
    fx.send("order-2", b"smtp down", "e-2").await;
    let attempts = log();
    let running = fx.spawn(handler(
        attempts.clone(),
        |attempts, r: Record| async move {
            attempts.lock().unwrap().push(r.attempt);
            Err(HandlerError::retryable(anyhow::anyhow!(
                "connection refused"
            )))
        },
    ));
    let letters = fx.read(&fx.dlq, 1, Duration::from_secs(30));
    running.stop().await.unwrap();

    assert_eq!(*attempts.lock().unwrap(), vec![1, 2, 3]);
    assert_eq!(letters.len(), 1);
    let h = &letters[0].headers;
    assert_eq!(h.get_str(dlq::REASON), Some("retries-exhausted"));
    assert_eq!(h.get_str(dlq::ATTEMPTS), Some("3"));
    assert!(
        h.get_str(dlq::ERROR)
            .unwrap()
            .contains("connection refused")
    );
}
