//! The mail goes out once even when recording it fails after the SMTP server accepted it: the
//! runner's retry records without sending again.
//!
//! The first test drives the handler directly, attempt by attempt as the runner would, so that
//! each attempt's outcome is asserted rather than waited for; the second runs the whole service
//! with its runner. The SMTP server (aiosmtpd) and the database (SQLite and PostgreSQL) are
//! real: another transaction holds `sent_emails`, so the recording waits out
//! `database.lock_timeout` and fails with a real lock error (an outage).

use std::sync::Arc;
use std::time::Duration;

use lettre::message::Mailbox;
use spine_email::mailer;
use spine_email::reactions::OrderMails;
use spine_email::settings::{EmailSettings, TransportKind};
use spine_email::store::{EmailStore, Recorded};
use spine_email::templates;
use spine_events::Event;
use spine_events::email::EmailSent;
use spine_events::orders::OrderConfirmed;
use spine_kit::db::Backend;
use spine_kit::kafka::consumer::{Handler, HandlerError};
use spine_kit::outbox::Outbox;
use spine_kit::testing::fresh_database;
use sqlx::AnyPool;
use sqlx::pool::PoolConnection;

use crate::support::*;

spine_kit::on_sqlite_and_postgres!(
    a_mail_whose_recording_fails_is_recorded_by_the_retry_without_a_second_send,
    the_running_service_sends_once_through_a_database_outage_after_the_hand_over,
    recordings_queued_behind_a_commit_are_written_together_each_once,
);

/// Takes the write lock of `sent_emails` in an open transaction on a connection of its own.
async fn hold_sent_emails(pool: &AnyPool, backend: Backend) -> PoolConnection<sqlx::Any> {
    let mut conn = pool.acquire().await.unwrap();
    let sql = match backend {
        Backend::Sqlite => "BEGIN IMMEDIATE",
        Backend::Postgres => "BEGIN; LOCK TABLE sent_emails IN EXCLUSIVE MODE",
    };
    sqlx::raw_sql(sql).execute(&mut *conn).await.unwrap();
    conn
}

async fn count(pool: &AnyPool, sql: &'static str, bind: String) -> i64 {
    sqlx::query_scalar(sql)
        .bind(bind)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn a_mail_whose_recording_fails_is_recorded_by_the_retry_without_a_second_send(
    backend: Backend,
) {
    spine_kit::testing::init_test_log();
    let smtp = SmtpServer::start();
    let db = fresh_database(backend).await;
    let mut database = db.settings.clone();
    database.lock_timeout = Duration::from_millis(200);
    let (pool, backend) = spine_kit::db::connect(&database).await.unwrap();
    let store = EmailStore::new(Outbox::new(pool.clone(), backend).await.unwrap())
        .await
        .unwrap();
    let mailer = mailer::from_settings(
        &EmailSettings {
            transport: TransportKind::Smtp,
            smtp_host: "127.0.0.1".into(),
            smtp_port: smtp.port,
            smtp_timeout: Duration::from_secs(10),
            ..EmailSettings::default()
        },
        4,
    )
    .unwrap();
    let from: Mailbox = "Spine Shop <orders@spine.local>".parse().unwrap();
    let handler = OrderMails::new(store, Arc::clone(&mailer), from);
    let to = recipient("recorded-late");
    let fact = OrderConfirmed::of(&placed(&to));
    let order_id = fact.order_id.to_string();
    let sent_rows = "SELECT COUNT(*) FROM sent_emails WHERE order_id = $1";
    let email_sent_rows = "SELECT COUNT(*) FROM spine_outbox WHERE topic = $1";
    let mut lock = hold_sent_emails(&pool, backend).await;

    // The server accepts the mail; recording it waits for the lock and gives up.
    let first = handler.handle(&record_of(&fact, 1)).await;
    assert!(
        matches!(first, Err(HandlerError::Unavailable(_))),
        "a lock timeout is an outage: {first:?}"
    );
    assert_eq!(smtp.wait_for(&to, 1).await.len(), 1, "the mail went out");
    assert_eq!(count(&pool, sent_rows, order_id.clone()).await, 0);

    // The runner retries while the database is still unavailable: no second mail.
    let second = handler.handle(&record_of(&fact, 2)).await;
    assert!(
        matches!(second, Err(HandlerError::Unavailable(_))),
        "{second:?}"
    );
    sqlx::raw_sql("ROLLBACK").execute(&mut *lock).await.unwrap();
    drop(lock);

    // The database answers again: the retry records the mail, and sends nothing.
    handler
        .handle(&record_of(&fact, 3))
        .await
        .expect("the retry records the mail");
    // A redelivery after that finds the record.
    handler
        .handle(&record_of(&fact, 1))
        .await
        .expect("a redelivery is skipped");

    let mails = smtp.wait_for(&to, 1).await;
    assert_eq!(
        mails.len(),
        1,
        "one mail for three attempts and a redelivery"
    );
    assert!(
        mails[0]
            .to_lowercase()
            .contains(&format!("message-id: <{}@spine.email>", fact.event_id)),
        "{}",
        mails[0]
    );
    assert_eq!(count(&pool, sent_rows, order_id).await, 1, "recorded once");
    assert_eq!(
        count(&pool, email_sent_rows, EmailSent::TOPIC.to_owned()).await,
        1,
        "one EmailSent enqueued"
    );
}

/// The same through the real runner: the database stays unavailable for a while after the
/// SMTP server accepted the mail; the record is neither resent nor dead-lettered, although its
/// retry budget is one attempt.
async fn the_running_service_sends_once_through_a_database_outage_after_the_hand_over(
    backend: Backend,
) {
    let smtp = SmtpServer::start();
    let app = spawn_app_with(backend, |s| {
        s.email.transport = TransportKind::Smtp;
        s.email.smtp_host = "127.0.0.1".into();
        s.email.smtp_port = smtp.port;
        s.database.lock_timeout = Duration::from_millis(200);
        s.kafka.consumer.retry.max_attempts = 1;
        s.kafka.consumer.retry.max_backoff = Duration::from_millis(200);
    })
    .await;
    app.catch_up().await;
    let to = recipient("outage-after-send");
    let mut lock = hold_sent_emails(&app.pool, backend).await;

    let confirmed = app.confirm(&to).await;

    assert_eq!(smtp.wait_for(&to, 1).await.len(), 1, "the mail went out");
    // Several recording attempts time out on the lock meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        app.sent_for(confirmed.order_id).await,
        0,
        "not recorded yet"
    );
    sqlx::raw_sql("ROLLBACK").execute(&mut *lock).await.unwrap();
    drop(lock);

    let sent = app.wait_for_email_sent(confirmed.order_id, 1).await;
    assert_eq!(sent.len(), 1, "one EmailSent");
    assert_eq!(app.sent_for(confirmed.order_id).await, 1);
    assert_eq!(smtp.messages_to(&to).len(), 1, "one mail");
    let dlq = format!("{}.dlq", app.settings.email.consumer_group);
    let dead = facts_of(&app.settings.kafka, &dlq, confirmed.order_id, 0);
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
    app.stop().await;
}

/// The group commit: while one recording waits for the database (another transaction holds
/// `sent_emails`), the recordings of forty concurrent handlers queue up behind it and are then
/// written together; each is answered for its own mail, a second recording of the same event
/// is a duplicate, and every mail gets one row and one EmailSent.
async fn recordings_queued_behind_a_commit_are_written_together_each_once(backend: Backend) {
    let db = fresh_database(backend).await;
    let mut database = db.settings.clone();
    database.lock_timeout = Duration::from_secs(30);
    let (pool, backend) = spine_kit::db::connect(&database).await.unwrap();
    let store = EmailStore::new(Outbox::new(pool.clone(), backend).await.unwrap())
        .await
        .unwrap();
    let mails: Vec<_> = (0..40)
        .map(|i| {
            templates::order_confirmed(&OrderConfirmed::of(&placed(&recipient(&format!(
                "group-{i}"
            )))))
        })
        .collect();
    let mut lock = hold_sent_emails(&pool, backend).await;

    let mut recordings = tokio::task::JoinSet::new();
    for (i, mail) in mails.iter().enumerate() {
        // Mail 7 is recorded three times (a redelivery racing its first delivery).
        let times = if i == 7 { 3 } else { 1 };
        for _ in 0..times {
            let (store, mail) = (store.clone(), mail.clone());
            recordings.spawn(async move { (mail.event_id, store.record(&mail).await) });
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        recordings.try_join_next().is_none(),
        "all wait for the lock"
    );
    sqlx::raw_sql("ROLLBACK").execute(&mut *lock).await.unwrap();
    drop(lock);

    let mut new = std::collections::HashMap::new();
    while let Some(joined) = recordings.join_next().await {
        let (event_id, recorded) = joined.unwrap();
        if recorded.expect("recorded") == Recorded::New {
            *new.entry(event_id).or_insert(0) += 1;
        }
    }
    assert_eq!(new.len(), 40, "each mail recorded as new");
    assert!(new.values().all(|&n| n == 1), "once each: {new:?}");
    for mail in &mails {
        let order_id = mail.order_id.to_string();
        let sent_rows = "SELECT COUNT(*) FROM sent_emails WHERE order_id = $1";
        assert_eq!(count(&pool, sent_rows, order_id).await, 1);
    }
    let email_sent_rows = "SELECT COUNT(*) FROM spine_outbox WHERE topic = $1";
    assert_eq!(
        count(&pool, email_sent_rows, EmailSent::TOPIC.to_owned()).await,
        40,
        "one EmailSent a mail"
    );
}
