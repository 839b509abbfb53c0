//! The whole loop: a consumer runner dead-letters a record its handler rejects, the operator
//! replays it after the fix, and the effect happens once, even when the replay is repeated.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spine_dlq::record::REPLAY_COUNT;
use spine_dlq::{Filter, ReplayOptions, commands};
use spine_kit::kafka::consumer::{ConsumerRunner, Handler, HandlerError, Record};
use spine_kit::kafka::headers::EVENT_ID;
use spine_kit::kafka::{Headers, OutgoingRecord};
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// A handler whose bug is "fixed" by flipping `fixed`; its effect is idempotent through an
/// in-memory inbox keyed by event id.
#[derive(Default)]
struct Effects {
    fixed: AtomicBool,
    inbox: Mutex<HashSet<String>>,
    applied: AtomicU32,
    deliveries: AtomicU32,
    replay_counts: Mutex<Vec<Option<String>>>,
}

#[derive(Clone, Default)]
struct Flaky(Arc<Effects>);

impl Handler for Flaky {
    fn handle(&self, record: &Record) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let effects = self.0.clone();
        let record = record.clone();
        async move {
            if !effects.fixed.load(Ordering::SeqCst) {
                return Err(HandlerError::poison(anyhow::anyhow!(
                    "quantity must be positive"
                )));
            }
            effects.deliveries.fetch_add(1, Ordering::SeqCst);
            effects
                .replay_counts
                .lock()
                .unwrap()
                .push(record.headers.get_str(REPLAY_COUNT).map(str::to_owned));
            let event_id = record.event_id().unwrap_or_default().to_owned();
            if effects.inbox.lock().unwrap().insert(event_id) {
                effects.applied.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_record_replayed_after_the_fix_takes_effect_once() {
    let fx = Fixture::new().await;
    fx.publisher
        .send(&OutgoingRecord {
            topic: fx.topic.clone(),
            key: Some(b"order-1".to_vec()),
            payload: b"an order".to_vec(),
            headers: Headers::new().with(EVENT_ID, "e-1"),
        })
        .await
        .unwrap();
    let handler = Flaky::default();
    let effects = handler.0.clone();
    let runner = ConsumerRunner::new(&fx.settings, &fx.group, &[&fx.topic], handler).unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(runner.run(stop.clone()));

    let letters = fx.read(&fx.dlq.topic, 1);
    assert_eq!(letters.len(), 1, "the rejected record is dead-lettered");
    assert_eq!(effects.applied.load(Ordering::SeqCst), 0);

    effects.fixed.store(true, Ordering::SeqCst);
    let options = ReplayOptions {
        rate: 50,
        ..ReplayOptions::default()
    };
    commands::replay(&fx.dlq, &Filter::default(), &options, &mut Vec::new())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(30), || effects
            .applied
            .load(Ordering::SeqCst)
            == 1)
        .await,
        "the replayed record takes effect"
    );
    // An operator reruns the replay by mistake: the tool remembers, nothing is published.
    let rerun = commands::replay(&fx.dlq, &Filter::default(), &options, &mut Vec::new())
        .await
        .unwrap();
    assert_eq!(rerun.replayed.len(), 0, "{rerun:?}");
    assert_eq!(rerun.already_replayed.len(), 1);
    // Forced with --again: delivered twice, applied once.
    let again = ReplayOptions {
        again: true,
        ..options
    };
    commands::replay(&fx.dlq, &Filter::default(), &again, &mut Vec::new())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(30), || effects
            .deliveries
            .load(Ordering::SeqCst)
            == 2)
        .await,
        "the second replay is delivered"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("runner stops")
        .unwrap()
        .unwrap();

    assert_eq!(
        effects.applied.load(Ordering::SeqCst),
        1,
        "the effect happened once"
    );
    assert_eq!(
        *effects.replay_counts.lock().unwrap(),
        [Some("1".to_owned()), Some("1".to_owned())]
    );
}
