//! At-least-once: nothing is lost across a crash, retries end in success, fatal errors stop.

use std::time::Duration;

use spine_kit::kafka::consumer::{HandlerError, Record, RunnerError};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_is_handled_and_its_offset_committed() {
    let fx = Fixture::new(settings()).await;
    fx.send("k1", b"one", "e1").await;
    let seen = log();
    let running = fx.spawn(handler(seen.clone(), |seen, r: Record| async move {
        seen.lock().unwrap().push(r.payload.unwrap());
        Ok(())
    }));
    assert!(eventually(Duration::from_secs(30), || seen.lock().unwrap().len() == 1).await);
    running.stop().await.unwrap();

    // A second member of the same group starts after the committed offset: nothing again.
    fx.send("k1", b"two", "e2").await;
    let again = log();
    let running = fx.spawn(handler(again.clone(), |again, r: Record| async move {
        again.lock().unwrap().push(r.payload.unwrap());
        Ok(())
    }));
    assert!(
        eventually(Duration::from_secs(30), || !again
            .lock()
            .unwrap()
            .is_empty())
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop().await.unwrap();
    assert_eq!(*again.lock().unwrap(), vec![b"two".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_unfinished_at_a_crash_are_redelivered() {
    let fx = Fixture::new(settings()).await;
    for (i, payload) in [b"a", b"b", b"c"].iter().enumerate() {
        fx.send("same-key", *payload, &format!("e{i}")).await;
    }
    // The first member finishes "a", then hangs in "b" and is killed (its task aborted, as a
    // crash would): "b" and "c" were never done, so their offsets were never stored.
    let done = log();
    let crashed = fx.spawn(handler(done.clone(), |done, r: Record| async move {
        if r.payload.as_deref() == Some(b"b") {
            std::future::pending::<()>().await;
        }
        done.lock().unwrap().push(r.payload.unwrap());
        Ok(())
    }));
    assert!(eventually(Duration::from_secs(30), || done.lock().unwrap().len() == 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    crashed.task.abort();
    let _ = crashed.task.await;

    let redelivered = log();
    let running = fx.spawn(recording(&redelivered));
    assert!(
        eventually(Duration::from_secs(30), || redelivered
            .lock()
            .unwrap()
            .ends_with(&[b"b".to_vec(), b"c".to_vec()]))
        .await,
        "b and c are redelivered, in order: {:?}",
        redelivered.lock().unwrap()
    );
    running.stop().await.unwrap();
    assert_eq!(*done.lock().unwrap(), vec![b"a".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_error_is_retried_until_it_succeeds() {
    let fx = Fixture::new(settings()).await;
    fx.send("k", b"flaky", "e1").await;
    let attempts = log();
    let running = fx.spawn(handler(
        attempts.clone(),
        |attempts, r: Record| async move {
            attempts.lock().unwrap().push(r.attempt);
            if r.attempt < 3 {
                Err(HandlerError::retryable(anyhow::anyhow!(
                    "SMTP 451, try later"
                )))
            } else {
                Ok(())
            }
        },
    ));
    assert!(
        eventually(Duration::from_secs(30), || attempts.lock().unwrap().len()
            == 3)
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.stop().await.unwrap();
    assert_eq!(*attempts.lock().unwrap(), vec![1, 2, 3]);
    assert!(
        fx.read(&fx.dlq, 1, Duration::from_secs(2)).is_empty(),
        "nothing dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_error_stops_the_runner_and_leaves_the_record_uncommitted() {
    let fx = Fixture::new(settings()).await;
    fx.send("k", b"needs-the-db", "e1").await;
    let running = fx.spawn(handler((), |(), _r: Record| async {
        Err(HandlerError::fatal(anyhow::anyhow!("database is gone")))
    }));
    let result = tokio::time::timeout(Duration::from_secs(30), running.task)
        .await
        .expect("the runner stops by itself")
        .unwrap();
    match result {
        Err(RunnerError::Fatal { offset, source, .. }) => {
            assert_eq!(offset, 0);
            assert!(source.to_string().contains("database is gone"));
        }
        other => panic!("expected a fatal error, got {other:?}"),
    }
    // After a restart the record comes back: it was never committed.
    let seen = log();
    let running = fx.spawn(recording(&seen));
    assert!(eventually(Duration::from_secs(30), || seen.lock().unwrap().len() == 1).await);
    running.stop().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![b"needs-the-db".to_vec()]);
}
