//! At-least-once delivery, one mail per event.

use spine_kit::db::Backend;

use crate::support::*;

spine_kit::on_sqlite_and_postgres!(the_same_event_delivered_twice_sends_one_email);

async fn the_same_event_delivered_twice_sends_one_email(backend: Backend) {
    let smtp = SmtpServer::start();
    let app = spawn_app(backend, smtp.port).await;
    let to = recipient("twice");

    let confirmed = app.confirm(&to).await;
    app.publisher.publish(&confirmed).await.unwrap();

    let mails = smtp.wait_for(&to, 1).await;
    // Both deliveries are consumed before we look again (the duplicate follows the first on
    // the same key, in order).
    let sent = app.wait_for_email_sent(confirmed.order_id, 1).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(mails.len(), 1, "one mail for two deliveries");
    assert_eq!(smtp.messages_to(&to).len(), 1);
    assert_eq!(sent.len(), 1, "one EmailSent");
    assert_eq!(app.sent_for(confirmed.order_id).await, 1);
    app.stop().await;
}
