//! The inbox makes a redelivered or duplicated event's effect happen once.

use std::time::Duration;

use spine_kit::inbox::Inbox;
use spine_kit::kafka::consumer::{HandlerError, Record};
use spine_kit::settings::DatabaseSettings;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_event_is_applied_once_when_the_handler_uses_an_inbox() {
    let dir = tempfile::tempdir().unwrap();
    let database = DatabaseSettings {
        url: format!("sqlite://{}/inbox.db?mode=rwc", dir.path().display()).into(),
        ..DatabaseSettings::default()
    };
    let (pool, _) = spine_kit::db::connect(&database).await.unwrap();
    sqlx::query("CREATE TABLE effects (event_id TEXT NOT NULL, amount BIGINT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let fx = Fixture::new(settings()).await;
    let inbox = Inbox::new(pool.clone(), &fx.group).await.unwrap();

    // The same event twice (a producer retry, or a replay), then another one.
    fx.send("order-9", b"10", "event-a").await;
    fx.send("order-9", b"10", "event-a").await;
    fx.send("order-9", b"5", "event-b").await;
    let handled = log();
    let running = fx.spawn(handler(
        (inbox.clone(), handled.clone()),
        |(inbox, handled), r: Record| async move {
            handled.lock().unwrap().push(r.offset);
            let event_id = r
                .event_id()
                .ok_or_else(|| HandlerError::poison(anyhow::anyhow!("no event id")))?;
            let Some(mut tx) = inbox
                .begin(event_id)
                .await
                .map_err(HandlerError::retryable)?
            else {
                return Ok(()); // already applied
            };
            let amount: i64 = std::str::from_utf8(r.payload.as_deref().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            sqlx::query("INSERT INTO effects (event_id, amount) VALUES ($1, $2)")
                .bind(event_id)
                .bind(amount)
                .execute(&mut *tx)
                .await
                .map_err(HandlerError::retryable)?;
            tx.commit().await.map_err(HandlerError::retryable)?;
            Ok(())
        },
    ));
    assert!(
        eventually(Duration::from_secs(30), || handled.lock().unwrap().len()
            == 3)
        .await
    );
    running.stop().await.unwrap();

    let (rows, total): (i64, i64) = sqlx::query_as("SELECT COUNT(*), SUM(amount) FROM effects")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((rows, total), (2, 15), "event-a applied once, event-b once");
}
