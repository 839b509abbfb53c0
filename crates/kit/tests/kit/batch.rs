//! The batch path: a partition's waiting records go to a `BatchHandler` together, all or
//! nothing, in offset order; a poison record in a batch is dead-lettered alone and the rest
//! of its batch applied once; an outage retries the batch without dead-lettering.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use spine_kit::kafka::consumer::{Batch, BatchHandler, Batched, HandlerError};
use spine_kit::kafka::headers::dlq;

use crate::support::*;

/// Applies a batch by appending `(key, payload)` of every record to `applied`, all or
/// nothing: a payload starting with `poison` fails the whole batch as poison, and the first
/// `outages` calls fail as outages. Each call's size (and whether it held poison) is logged.
#[derive(Clone, Default)]
struct Recorder {
    applied: Log<(String, String)>,
    calls: Log<(usize, bool)>,
    outages: Arc<AtomicUsize>,
    /// A pause per call, so that records pile up behind a running batch.
    pause: Duration,
}

impl BatchHandler for Recorder {
    async fn handle_batch(&self, batch: &Batch<'_>) -> Result<(), HandlerError> {
        tokio::time::sleep(self.pause).await;
        let payloads: Vec<(String, String)> = batch
            .iter()
            .map(|r| {
                let key = r.key_str().unwrap_or_default().to_owned();
                let payload = String::from_utf8(r.payload.clone().unwrap_or_default()).unwrap();
                (key, payload)
            })
            .collect();
        let poison = payloads.iter().any(|(_, p)| p.starts_with("poison"));
        self.calls.lock().unwrap().push((batch.len(), poison));
        if self
            .outages
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(HandlerError::unavailable(anyhow::anyhow!("database down")));
        }
        if poison {
            return Err(HandlerError::poison(anyhow::anyhow!("a poison record")));
        }
        self.applied.lock().unwrap().extend(payloads);
        Ok(())
    }
}

impl Recorder {
    /// The payloads applied so far, in the order applied.
    fn payloads(&self) -> Vec<String> {
        let applied = self.applied.lock().unwrap();
        applied.iter().map(|(_, p)| p.clone()).collect()
    }

    /// Waits (up to a minute) until at least `n` records are applied.
    async fn applied_at_least(&self, n: usize) -> bool {
        eventually(Duration::from_secs(60), || {
            self.applied.lock().unwrap().len() >= n
        })
        .await
    }
}

fn per_key(applied: &[(String, String)]) -> HashMap<String, Vec<String>> {
    let mut keys: HashMap<String, Vec<String>> = HashMap::new();
    for (key, payload) in applied {
        keys.entry(key.clone()).or_default().push(payload.clone());
    }
    keys
}

const KEYS: usize = 10;
const PER_KEY: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_backlog_is_applied_in_batches_once_each_in_key_order() {
    let fx = Fixture::new(settings()).await;
    for seq in 0..PER_KEY {
        for key in 0..KEYS {
            fx.send(
                &format!("k{key}"),
                format!("{seq:03}").as_bytes(),
                &unique("e"),
            )
            .await;
        }
    }
    let recorder = Recorder {
        pause: Duration::from_millis(20),
        ..Recorder::default()
    };
    let running = fx.spawn(Batched::new(recorder.clone()));
    let total = KEYS * PER_KEY;
    assert!(
        recorder.applied_at_least(total).await,
        "every record applied"
    );
    running.stop().await.unwrap();

    let applied = recorder.applied.lock().unwrap().clone();
    assert_eq!(applied.len(), total, "each record applied once");
    let expected: Vec<String> = (0..PER_KEY).map(|seq| format!("{seq:03}")).collect();
    for (key, seqs) in per_key(&applied) {
        assert_eq!(seqs, expected, "key {key} applied in offset order");
    }
    let calls = recorder.calls.lock().unwrap().clone();
    let largest = calls.iter().map(|(n, _)| *n).max().unwrap();
    assert!(
        largest > 1,
        "a queued backlog is handed over in batches (calls: {calls:?})"
    );
    assert!(
        calls.len() < total,
        "fewer handler calls than records ({} for {total})",
        calls.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_fetched_together_start_as_one_batch_not_a_batch_of_one_first() {
    let fx = Fixture::new(settings()).await;
    // One key, so that every record is on one partition and one fetch brings them together.
    for seq in 0..30 {
        fx.send("one-key", format!("{seq:03}").as_bytes(), &unique("e"))
            .await;
    }
    let recorder = Recorder::default();
    let running = fx.spawn(Batched::new(recorder.clone()));
    assert!(recorder.applied_at_least(30).await, "every record applied");
    running.stop().await.unwrap();
    let calls = recorder.calls.lock().unwrap().clone();
    assert!(
        calls[0].0 > 1,
        "the first records of an idle partition start as a batch (calls: {calls:?})"
    );
    let applied = recorder.payloads();
    let expected: Vec<String> = (0..30).map(|seq| format!("{seq:03}")).collect();
    assert_eq!(applied, expected, "applied once each, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_in_a_batch_is_dead_lettered_alone_and_the_rest_applied_once() {
    let fx = Fixture::new(settings()).await;
    // One key, so that every record is on one partition and they batch together.
    let mut good = 0;
    for seq in 0..30 {
        let payload = if seq % 10 == 5 {
            format!("poison-{seq}")
        } else {
            good += 1;
            format!("{seq:03}")
        };
        fx.send("one-key", payload.as_bytes(), &unique("e")).await;
    }
    let recorder = Recorder {
        pause: Duration::from_millis(30),
        ..Recorder::default()
    };
    let running = fx.spawn(Batched::new(recorder.clone()));
    let letters = fx.read(&fx.dlq, 3, Duration::from_secs(60));
    assert!(
        recorder.applied_at_least(good).await,
        "the good records are applied"
    );
    running.stop().await.unwrap();

    let calls = recorder.calls.lock().unwrap().clone();
    assert!(
        calls.iter().any(|(n, poison)| *n > 1 && *poison),
        "some poison arrived inside a batch of several (calls: {calls:?})"
    );
    let mut dead: Vec<String> = letters
        .iter()
        .map(|l| String::from_utf8(l.payload.clone()).unwrap())
        .collect();
    dead.sort();
    assert_eq!(
        dead,
        ["poison-15", "poison-25", "poison-5"],
        "only the poison"
    );
    assert!(
        letters
            .iter()
            .all(|l| l.headers.get_str(dlq::REASON) == Some("poison"))
    );
    let applied = recorder.payloads();
    let expected: Vec<String> = (0..30)
        .filter(|seq| seq % 10 != 5)
        .map(|seq| format!("{seq:03}"))
        .collect();
    assert_eq!(applied, expected, "the rest applied once each, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_retries_the_batch_and_dead_letters_nothing() {
    let fx = Fixture::new(settings()).await;
    for seq in 0..40 {
        fx.send(
            &format!("k{}", seq % 4),
            format!("{seq:03}").as_bytes(),
            &unique("e"),
        )
        .await;
    }
    let recorder = Recorder {
        outages: Arc::new(AtomicUsize::new(4)),
        pause: Duration::from_millis(10),
        ..Recorder::default()
    };
    let running = fx.spawn(Batched::new(recorder.clone()));
    assert!(
        recorder.applied_at_least(40).await,
        "every record applied after the outage"
    );
    running.stop().await.unwrap();
    assert_eq!(
        recorder.outages.load(Ordering::SeqCst),
        0,
        "the outage happened"
    );
    assert_eq!(recorder.applied.lock().unwrap().len(), 40, "once each");
    let letters = fx.read(&fx.dlq, 1, Duration::from_secs(3));
    assert!(
        letters.is_empty(),
        "nothing dead-lettered: {}",
        letters.len()
    );
}

/// Logs, per record of every batch that returned `Ok`, which member applied it.
#[derive(Clone)]
struct Member {
    id: usize,
    applied: Log<(usize, i32, i64)>,
}

impl BatchHandler for Member {
    async fn handle_batch(&self, batch: &Batch<'_>) -> Result<(), HandlerError> {
        // Slow batches, so that the rebalance finds some running.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut applied = self.applied.lock().unwrap();
        for record in batch.iter() {
            applied.push((self.id, record.partition, record.offset));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_under_load_applies_every_batched_record_once() {
    let mut settings = settings();
    // Small batches, so that the backlog outlasts the new members' group join.
    settings.consumer.max_batch = 3;
    let fx = Fixture::new(settings).await;
    let total = 150;
    for i in 0..total {
        fx.send(
            &format!("key-{}", i % 15),
            format!("r{i}").as_bytes(),
            &format!("e{i}"),
        )
        .await;
    }
    let applied: Log<(usize, i32, i64)> = log();
    let member = |id| {
        Batched::new(Member {
            id,
            applied: applied.clone(),
        })
    };
    let first = fx.spawn(member(1));
    assert!(
        eventually(Duration::from_secs(30), || applied.lock().unwrap().len()
            >= 5)
        .await
    );
    let second = fx.spawn(member(2));
    let third = fx.spawn(member(3));
    let newcomers = || {
        applied
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, ..)| *m > 1)
            .count()
    };
    assert!(
        eventually(Duration::from_secs(60), || newcomers() >= 6).await,
        "the rebalance moved partitions to the new members"
    );
    second.stop().await.unwrap();
    third.stop().await.unwrap();
    let distinct = || {
        let applied = applied.lock().unwrap();
        applied
            .iter()
            .map(|(_, p, o)| (*p, *o))
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    assert!(
        eventually(Duration::from_secs(90), || distinct() >= total).await,
        "every record applied"
    );
    first.stop().await.unwrap();
    let applied = applied.lock().unwrap().clone();
    let mut times: HashMap<(i32, i64), Vec<usize>> = HashMap::new();
    for (member, partition, offset) in &applied {
        times
            .entry((*partition, *offset))
            .or_default()
            .push(*member);
    }
    let twice: Vec<_> = times
        .iter()
        .filter(|(_, members)| members.len() > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "records applied more than once: {twice:?}"
    );
}
