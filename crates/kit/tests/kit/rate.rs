//! The steady drain rate (`max_rate`) changes when records start, never what is guaranteed:
//! every record is handled once and in key order, through retries and an outage's stall, and a
//! record waiting for a rate slot when its partition moves is left to the new owner. (The pace
//! itself is unit-tested with injected time in `kafka::consumer::rate`; no test here times
//! anything.)

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use spine_kit::kafka::consumer::{HandlerError, Record};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_group_handles_every_record_once_in_key_order() {
    const KEYS: usize = 8;
    const PER_KEY: usize = 15;
    let mut settings = settings();
    settings.consumer.max_rate = 200.0;
    // Below the records sent, so that records waiting for a slot also fill the in-flight
    // bound and the runner's backpressure holds the rest on the broker.
    settings.consumer.max_in_flight = 16;
    let fx = Fixture::new(settings).await;
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
    let calls = Arc::new(AtomicUsize::new(0));
    let state = (order.clone(), busy.clone(), overlaps.clone(), calls.clone());
    let running = fx.spawn(handler(
        state,
        |(order, busy, overlaps, calls), r: Record| async move {
            let key = r.key_str().unwrap().to_owned();
            if !busy.lock().unwrap().insert(key.clone()) {
                overlaps.fetch_add(1, Ordering::SeqCst);
            }
            // The first calls meet an outage: the group stalls while records wait for slots.
            let outage = calls.fetch_add(1, Ordering::SeqCst) < 6;
            let fail = r.attempt == 1 && rand::rng().random_bool(0.15);
            tokio::time::sleep(Duration::from_millis(2)).await;
            busy.lock().unwrap().remove(&key);
            if outage {
                return Err(HandlerError::unavailable(anyhow::anyhow!("down")));
            }
            if fail {
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
    let handled = || order.lock().unwrap().values().map(Vec::len).sum::<usize>();
    assert!(
        eventually(Duration::from_secs(60), || handled() >= KEYS * PER_KEY).await,
        "every record handled: {} of {}",
        handled(),
        KEYS * PER_KEY
    );
    running.stop().await.unwrap();

    let expected: Vec<usize> = (0..PER_KEY).collect();
    let order = order.lock().unwrap();
    assert_eq!(order.len(), KEYS);
    for (key, seqs) in order.iter() {
        assert_eq!(seqs, &expected, "{key}: each record once, in order");
    }
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "a key never ran twice at once"
    );
}

/// One handler call: which member, which record, when it started and ended.
#[derive(Debug, Clone)]
struct Call {
    member: usize,
    record: (i32, i64),
    start: Instant,
    end: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_waiting_for_a_rate_slot_are_left_to_the_new_owner_of_their_partition() {
    // The first member is limited to 2 records/s and holds every record it fetched, nearly all
    // of them waiting for a slot, when a second member takes some of its partitions; then the
    // first member leaves and the second (unlimited) takes the rest. A waiting record of a
    // partition that moved must never start on the first member: it would run beside, or
    // after, the new owner's run of it.
    let total = 60;
    let mut limited = settings();
    limited.consumer.max_rate = 2.0;
    let fx = Fixture::new(settings()).await;
    for i in 0..total {
        fx.send(
            &format!("key-{}", i % 12),
            format!("r{i}").as_bytes(),
            &format!("e{i}"),
        )
        .await;
    }
    let calls: Log<Call> = log();
    // Slow handlers, so that a record started on both members runs on both at once.
    let member = |id: usize| {
        handler(calls.clone(), move |calls, r: Record| async move {
            let start = Instant::now();
            tokio::time::sleep(Duration::from_secs(2)).await;
            calls.lock().unwrap().push(Call {
                member: id,
                record: (r.partition, r.offset),
                start,
                end: Instant::now(),
            });
            Ok(())
        })
    };
    let count = |id: usize| {
        calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.member == id)
            .count()
    };
    let first = fx.spawn_with(&limited, member(1));
    assert!(eventually(Duration::from_secs(30), || count(1) >= 3).await);
    let second = fx.spawn(member(2));
    assert!(
        eventually(Duration::from_secs(60), || count(2) >= 1).await,
        "the rebalance moved a partition to the second member"
    );
    first.stop().await.unwrap();
    let all_done = || {
        let calls = calls.lock().unwrap();
        calls.iter().map(|c| c.record).collect::<HashSet<_>>().len() >= total
    };
    assert!(
        eventually(Duration::from_secs(60), all_done).await,
        "every record handled"
    );
    // Taken before the second member stops: partitions only ever moved from 1 to 2.
    let calls = calls.lock().unwrap().clone();
    second.stop().await.unwrap();

    let mut by_record: HashMap<(i32, i64), Vec<&Call>> = HashMap::new();
    for call in &calls {
        by_record.entry(call.record).or_default().push(call);
    }
    for (record, runs) in &by_record {
        for (i, a) in runs.iter().enumerate() {
            for b in &runs[i + 1..] {
                assert!(
                    a.end <= b.start || b.end <= a.start,
                    "record {record:?} ran on members {} and {} at once",
                    a.member,
                    b.member
                );
            }
        }
    }
    // Once the second member ran a record of a partition, that partition was no longer the
    // first member's: nothing of it may start there afterwards.
    let mut taken_over: HashMap<i32, Instant> = HashMap::new();
    for call in calls.iter().filter(|c| c.member == 2) {
        let first_run = taken_over.entry(call.record.0).or_insert(call.start);
        *first_run = (*first_run).min(call.start);
    }
    for call in calls.iter().filter(|c| c.member == 1) {
        if let Some(&since) = taken_over.get(&call.record.0) {
            assert!(
                call.start < since,
                "member 1 started {:?} after its partition moved to member 2",
                call.record
            );
        }
    }
}

/// Skips records whose payload starts with `skip`; records what it handles.
struct Skipping(Log<Vec<u8>>);

impl spine_kit::kafka::consumer::Handler for Skipping {
    fn skips(&self, record: &Record) -> bool {
        record
            .payload
            .as_deref()
            .is_some_and(|p| p.starts_with(b"skip"))
    }

    async fn handle(&self, record: &Record) -> Result<(), HandlerError> {
        self.0
            .lock()
            .unwrap()
            .push(record.payload.clone().unwrap_or_default());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_a_handler_skips_take_no_rate_slot_and_are_committed() {
    let mut settings = settings();
    settings.consumer.max_rate = 20.0;
    let fx = Fixture::new(settings).await;
    for i in 0..60 {
        let payload = if i % 6 == 0 {
            format!("work-{i}")
        } else {
            format!("skip-{i}")
        };
        fx.send(&format!("k{}", i % 3), payload.as_bytes(), &unique("e"))
            .await;
    }
    let handled = log();
    let running = fx.spawn(Skipping(handled.clone()));
    assert!(
        eventually(Duration::from_secs(60), || handled.lock().unwrap().len()
            >= 10)
        .await
    );
    // Give the skipped records after the last worked one time to be stored and committed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    running.stop().await.unwrap();
    let seen: Vec<String> = handled
        .lock()
        .unwrap()
        .iter()
        .map(|p| String::from_utf8(p.clone()).unwrap())
        .collect();
    assert_eq!(
        seen.len(),
        10,
        "only the records it works on reach the handler: {seen:?}"
    );
    assert!(seen.iter().all(|p| p.starts_with("work-")), "{seen:?}");

    // Everything, skipped records included, was committed: the group's next member, which skips
    // nothing, gets only a record sent afterwards.
    fx.send("k0", b"after", &unique("e")).await;
    let again = log();
    let next = fx.spawn(recording(&again));
    assert!(
        eventually(Duration::from_secs(60), || !again
            .lock()
            .unwrap()
            .is_empty())
        .await
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    next.stop().await.unwrap();
    assert_eq!(
        *again.lock().unwrap(),
        [b"after".to_vec()],
        "nothing redelivered"
    );
}
