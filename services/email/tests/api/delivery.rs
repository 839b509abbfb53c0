//! Email mails each order outcome over SMTP and says so with EmailSent.

use spine_events::Event;
use spine_events::email::{EmailSent, TEMPLATE_ORDER_CONFIRMED, TEMPLATE_ORDER_REJECTED};
use spine_kit::db::Backend;

use crate::support::*;

spine_kit::on_sqlite_and_postgres!(
    a_confirmed_order_sends_one_confirmation_and_emits_email_sent,
    a_rejected_order_sends_a_rejection_with_the_reason,
    a_recipient_the_server_refuses_for_good_is_dead_lettered,
);

async fn a_confirmed_order_sends_one_confirmation_and_emits_email_sent(backend: Backend) {
    let smtp = SmtpServer::start();
    let app = spawn_app(backend, smtp.port).await;
    let to = recipient("ada");

    let confirmed = app.confirm(&to).await;

    let mails = smtp.wait_for(&to, 1).await;
    assert_eq!(mails.len(), 1, "exactly one mail: {mails:#?}");
    let mail = mails[0].to_lowercase();
    assert!(mail.contains(&format!("to: {to}")), "{mail}");
    assert!(
        mail.contains(&format!("message-id: <{}@spine.email>", confirmed.event_id)),
        "{mail}"
    );
    assert!(mail.contains("multipart/alternative"), "{mail}");
    assert!(
        mail.contains("text/plain") && mail.contains("text/html"),
        "{mail}"
    );
    assert!(mail.contains("30.00 eur"), "{mail}");
    assert!(mail.contains(&confirmed.order_id.to_string()), "{mail}");

    let sent = app.wait_for_email_sent(confirmed.order_id, 1).await;
    assert_eq!(sent.len(), 1, "one EmailSent: {sent:?}");
    let sent = &sent[0];
    let facts = facts_of(&app.settings.kafka, EmailSent::TOPIC, confirmed.order_id, 1);
    assert!(
        facts
            .iter()
            .any(|r| spine_events::decode::<EmailSent>(&r.payload).unwrap() == *sent),
        "EmailSent is on {} keyed by the order id",
        EmailSent::TOPIC
    );
    assert_eq!(sent.order_id, confirmed.order_id);
    assert_eq!(sent.recipient, to);
    assert_eq!(sent.template, TEMPLATE_ORDER_CONFIRMED);
    assert_eq!(
        sent.message_id,
        format!("<{}@spine.email>", confirmed.event_id)
    );
    assert_eq!(app.sent_for(confirmed.order_id).await, 1);
    app.stop().await;
}

async fn a_rejected_order_sends_a_rejection_with_the_reason(backend: Backend) {
    let smtp = SmtpServer::start();
    let app = spawn_app(backend, smtp.port).await;
    let to = recipient("grace");

    let rejected = app.reject(&to, "insufficient stock").await;

    let mails = smtp.wait_for(&to, 1).await;
    assert_eq!(mails.len(), 1, "exactly one mail: {mails:#?}");
    let mail = &mails[0];
    assert!(mail.contains("Reason: insufficient stock"), "{mail}");
    assert!(mail.contains("could not be completed"), "{mail}");
    assert!(mail.contains(&rejected.order_id.to_string()), "{mail}");
    let sent = app.wait_for_email_sent(rejected.order_id, 1).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].template, TEMPLATE_ORDER_REJECTED);
    app.stop().await;
}

async fn a_recipient_the_server_refuses_for_good_is_dead_lettered(backend: Backend) {
    let smtp = SmtpServer::start();
    let app = spawn_app_with(backend, |s| {
        s.email.transport = spine_email::settings::TransportKind::Smtp;
        s.email.smtp_port = smtp.port;
        // Poison is dead-lettered at once, whatever the retry budget.
        s.kafka.consumer.retry.max_attempts = 50;
    })
    .await;
    let to = recipient("bounce");

    let confirmed = app.confirm(&to).await;

    let dlq = format!("{}.dlq", app.settings.email.consumer_group);
    let dead = facts_of(&app.settings.kafka, &dlq, confirmed.order_id, 1);
    assert_eq!(dead.len(), 1, "the record is dead-lettered");
    assert_eq!(dead[0].headers.get_str("dlq-attempts"), Some("1"));
    assert!(smtp.messages_to(&to).is_empty());
    assert_eq!(app.sent_for(confirmed.order_id).await, 0);
    assert!(
        app.email_sent_for(confirmed.order_id).await.is_empty(),
        "no EmailSent for a mail never sent"
    );
    app.stop().await;
}
