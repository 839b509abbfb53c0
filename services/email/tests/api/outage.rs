//! An SMTP server that cannot take mail now is an outage, not a poison: the runner retries
//! without an attempt limit until the server takes the mail, once, and dead-letters nothing.

use std::time::Duration;

use spine_kit::db::Backend;

use crate::support::*;

spine_kit::on_sqlite_and_postgres!(
    a_mail_published_while_smtp_is_down_arrives_once_it_is_up,
    a_temporary_smtp_refusal_is_retried_until_accepted,
);

async fn a_mail_published_while_smtp_is_down_arrives_once_it_is_up(backend: Backend) {
    let port = free_port();
    let app = spawn_app_with(backend, |s| {
        s.email.transport = spine_email::settings::TransportKind::Smtp;
        s.email.smtp_port = port;
        // One attempt is the whole budget of a Retryable error; an outage ignores it.
        s.kafka.consumer.retry.max_attempts = 1;
        s.kafka.consumer.retry.max_backoff = Duration::from_millis(200);
    })
    .await;
    let to = recipient("patient");

    let confirmed = app.confirm(&to).await;
    // Nothing listens: connections are refused and the runner backs off and retries.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(app.sent_for(confirmed.order_id).await, 0);
    let smtp = SmtpServer::start_on(port, 0);

    let mails = smtp.wait_for(&to, 1).await;
    assert_eq!(mails.len(), 1, "the mail arrives exactly once");
    assert_eq!(
        app.wait_for_email_sent(confirmed.order_id, 1).await.len(),
        1
    );
    assert_eq!(app.sent_for(confirmed.order_id).await, 1);
    assert_nothing_dead_lettered(&app, confirmed.order_id);
    app.stop().await;
}

fn assert_nothing_dead_lettered(app: &TestApp, order_id: uuid::Uuid) {
    let dlq = format!("{}.dlq", app.settings.email.consumer_group);
    let dead = facts_of(&app.settings.kafka, &dlq, order_id, 0);
    assert!(
        dead.is_empty(),
        "an outage is never dead-lettered: {dead:?}"
    );
}

async fn a_temporary_smtp_refusal_is_retried_until_accepted(backend: Backend) {
    let smtp = SmtpServer::start_on(free_port(), 3);
    let app = spawn_app_with(backend, |s| {
        s.email.transport = spine_email::settings::TransportKind::Smtp;
        s.email.smtp_port = smtp.port;
        s.kafka.consumer.retry.max_attempts = 1;
        s.kafka.consumer.retry.max_backoff = Duration::from_millis(200);
    })
    .await;
    let to = recipient("busy");

    let rejected = app.reject(&to, "payment declined").await;

    let mails = smtp.wait_for(&to, 1).await;
    assert_eq!(smtp.refusals(&to), 3, "three 451 answers first");
    assert_eq!(mails.len(), 1, "then exactly one mail");
    assert_eq!(app.wait_for_email_sent(rejected.order_id, 1).await.len(), 1);
    assert_nothing_dead_lettered(&app, rejected.order_id);
    app.stop().await;
}
