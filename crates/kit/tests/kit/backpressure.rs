//! Backpressure: the runner holds at most `max_in_flight` records, pausing its partitions
//! (and still polling) until handlers catch up.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use spine_kit::kafka::consumer::Record;
use tokio::sync::Semaphore;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_holds_no_more_than_max_in_flight_records() {
    const BOUND: usize = 4;
    const RECORDS: usize = 40;
    let mut settings = settings();
    settings.consumer.max_in_flight = BOUND;
    let fx = Fixture::new(settings).await;
    for i in 0..RECORDS {
        // Distinct keys: without the bound, every record could start at once.
        fx.send(&format!("key-{i}"), b"x", &unique("e")).await;
    }
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let running = fx.spawn(handler(
        (gate.clone(), started.clone(), finished.clone()),
        |(gate, started, finished), _r: Record| async move {
            started.fetch_add(1, Ordering::SeqCst);
            gate.acquire().await.unwrap().forget();
            finished.fetch_add(1, Ordering::SeqCst);
            Ok(())
        },
    ));
    assert!(
        eventually(Duration::from_secs(30), || started.load(Ordering::SeqCst)
            == BOUND)
        .await
    );
    // Longer than a poll interval's share: the paused consumer keeps polling and stays in the
    // group, but takes nothing more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        started.load(Ordering::SeqCst),
        BOUND,
        "no record beyond the bound started"
    );

    gate.add_permits(RECORDS);
    assert!(
        eventually(Duration::from_secs(60), || finished.load(Ordering::SeqCst)
            == RECORDS)
        .await,
        "after resuming, every record is handled ({} of {RECORDS})",
        finished.load(Ordering::SeqCst)
    );
    running.stop().await.unwrap();
}
