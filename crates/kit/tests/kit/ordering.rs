//! Per-key order under concurrency, retries included.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use spine_kit::kafka::consumer::{HandlerError, Record};

use crate::support::*;

const KEYS: usize = 12;
const PER_KEY: usize = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_one_key_are_handled_in_order_while_keys_run_concurrently() {
    let fx = Fixture::new(settings()).await;
    // Interleave the keys so that every partition holds several keys.
    for seq in 0..PER_KEY {
        for key in 0..KEYS {
            fx.send(
                &format!("key-{key}"),
                seq.to_string().as_bytes(),
                &unique("e"),
            )
            .await;
        }
    }
    let order: Arc<Mutex<HashMap<String, Vec<usize>>>> = Arc::default();
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let overlaps = Arc::new(AtomicUsize::new(0));
    let running_now = Arc::new(AtomicUsize::new(0));
    let max_running = Arc::new(AtomicUsize::new(0));
    let state = (
        order.clone(),
        busy.clone(),
        overlaps.clone(),
        running_now.clone(),
        max_running.clone(),
    );
    let running = fx.spawn(handler(
        state,
        |(order, busy, overlaps, running_now, max_running), r: Record| async move {
            let key = r.key_str().unwrap().to_owned();
            if !busy.lock().unwrap().insert(key.clone()) {
                overlaps.fetch_add(1, Ordering::SeqCst);
            }
            let now = running_now.fetch_add(1, Ordering::SeqCst) + 1;
            max_running.fetch_max(now, Ordering::SeqCst);
            let (pause, fail) = {
                let mut rng = rand::rng();
                (
                    rng.random_range(1..8),
                    r.attempt == 1 && rng.random_bool(0.15),
                )
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
            running_now.fetch_sub(1, Ordering::SeqCst);
            busy.lock().unwrap().remove(&key);
            if fail {
                // A retry must not let the next record of this key overtake this one.
                return Err(HandlerError::retryable(anyhow::anyhow!("transient")));
            }
            let seq = std::str::from_utf8(r.payload.as_deref().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            order.lock().unwrap().entry(key).or_default().push(seq);
            Ok(())
        },
    ));
    let all_done = || order.lock().unwrap().values().map(Vec::len).sum::<usize>() == KEYS * PER_KEY;
    assert!(
        eventually(Duration::from_secs(60), all_done).await,
        "all records handled"
    );
    running.stop().await.unwrap();

    let expected: Vec<usize> = (0..PER_KEY).collect();
    for (key, seqs) in order.lock().unwrap().iter() {
        assert_eq!(seqs, &expected, "order of {key}");
    }
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "a key never ran twice at once"
    );
    assert!(
        max_running.load(Ordering::SeqCst) > 1,
        "different keys ran concurrently"
    );
}
