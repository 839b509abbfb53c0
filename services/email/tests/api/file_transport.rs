//! The embedded default: one `.eml` file per event, named by the event id.

use spine_email::settings::TransportKind;
use spine_kit::db::Backend;

use crate::support::*;

spine_kit::on_sqlite_and_postgres!(the_file_transport_writes_one_eml_per_event);

async fn the_file_transport_writes_one_eml_per_event(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let outbox_dir = dir.path().join("emails");
    let app = spawn_app_with(backend, |s| {
        s.email.transport = TransportKind::File;
        s.email.outbox_dir = outbox_dir.clone();
    })
    .await;
    let to = recipient("files");

    let confirmed = app.confirm(&to).await;
    let rejected = app.reject(&to, "fraud check failed").await;
    app.publisher.publish(&confirmed).await.unwrap(); // a redelivery

    let expected = [
        outbox_dir.join(format!("{}.eml", confirmed.event_id)),
        outbox_dir.join(format!("{}.eml", rejected.event_id)),
    ];
    assert!(
        spine_kit::testing::eventually(std::time::Duration::from_secs(30), || {
            expected.iter().all(|p| p.exists())
        })
        .await,
        "both files written: {:?}",
        eml_files(&outbox_dir)
    );
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let mine: Vec<String> = eml_files(&outbox_dir)
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .filter(|m| m.contains(&to))
        .collect();
    assert_eq!(mine.len(), 2, "one file per event, none for the redelivery");
    let confirmation = std::fs::read_to_string(&expected[0]).unwrap();
    assert!(confirmation.contains(&format!("<{}@spine.email>", confirmed.event_id)));
    let rejection = std::fs::read_to_string(&expected[1]).unwrap();
    assert!(
        rejection.contains("Reason: fraud check failed"),
        "{rejection}"
    );
    assert_eq!(
        app.wait_for_email_sent(confirmed.order_id, 1).await.len(),
        1
    );
    assert_eq!(app.wait_for_email_sent(rejected.order_id, 1).await.len(), 1);
    app.stop().await;
}
