//! Faults: an outage is retried without limit and stalls the group instead of dead-lettering;
//! a panic stops the runner without losing its record; a rebalance never runs a record on two
//! members at once; a partition revoked while paused is consumed again when it comes back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use spine_kit::kafka::consumer::{HandlerError, Record, RunnerError};

use crate::support::*;

/// A dependency the handler calls: up or down, and how many calls of retried records (second
/// attempt or later) ran at once while it was down.
#[derive(Default)]
struct Dependency {
    down: AtomicBool,
    tries: AtomicUsize,
    retries_now: AtomicUsize,
    retries_at_once: AtomicUsize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_retry_budget_dead_letters_nothing_and_probes_one_at_a_time() {
    let mut settings = settings();
    settings.consumer.retry.max_attempts = 2;
    settings.consumer.retry.max_backoff = Duration::from_millis(50);
    let fx = Fixture::new(settings).await;
    let dependency = Arc::new(Dependency::default());
    dependency.down.store(true, Ordering::SeqCst);
    for i in 0..20 {
        fx.send(
            &format!("key-{i}"),
            format!("r{i}").as_bytes(),
            &format!("e{i}"),
        )
        .await;
    }
    let handled = log();
    let state = (dependency.clone(), handled.clone());
    let running = fx.spawn(handler(state, |(dep, handled), r: Record| async move {
        if dep.down.load(Ordering::SeqCst) {
            dep.tries.fetch_add(1, Ordering::SeqCst);
            if r.attempt > 1 {
                let now = dep.retries_now.fetch_add(1, Ordering::SeqCst) + 1;
                dep.retries_at_once.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                dep.retries_now.fetch_sub(1, Ordering::SeqCst);
            }
            return Err(HandlerError::unavailable(anyhow::anyhow!(
                "connection refused"
            )));
        }
        handled.lock().unwrap().push(r.payload.unwrap());
        Ok(())
    }));
    // Down for many times the retry budget (2 attempts, 50 ms backoff): until some record has
    // been tried 10 times, and a while longer.
    let attempts = dependency.clone();
    assert!(
        eventually(Duration::from_secs(60), || attempts
            .tries
            .load(Ordering::SeqCst)
            >= 30)
        .await,
        "records are retried while the dependency is down"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        handled.lock().unwrap().is_empty(),
        "nothing handled while down"
    );
    dependency.down.store(false, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(30), || handled.lock().unwrap().len()
            >= 20)
        .await,
        "every record handled once the dependency is back: {}",
        handled.lock().unwrap().len()
    );
    running.stop().await.unwrap();
    assert_eq!(
        dependency.retries_at_once.load(Ordering::SeqCst),
        1,
        "while stalled, retries probe one at a time"
    );
    let letters = fx.read(&fx.dlq, 1, Duration::from_secs(2));
    assert!(letters.is_empty(), "an outage is never dead-lettered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_timeout_is_an_outage_retried_until_the_handler_answers() {
    let mut settings = settings();
    settings.consumer.handler_timeout = Duration::from_millis(200);
    settings.consumer.retry.max_attempts = 1;
    let fx = Fixture::new(settings).await;
    fx.send("k", b"slow", "e1").await;
    let attempts = log();
    let running = fx.spawn(handler(
        attempts.clone(),
        |attempts, r: Record| async move {
            attempts.lock().unwrap().push(r.attempt);
            if r.attempt < 3 {
                std::future::pending::<()>().await; // hangs: a silently dead connection
            }
            Ok(())
        },
    ));
    assert!(
        eventually(Duration::from_secs(30), || attempts.lock().unwrap().len()
            >= 3)
        .await,
        "the hung attempts were dropped and retried"
    );
    running.stop().await.unwrap();
    assert_eq!(*attempts.lock().unwrap(), vec![1, 2, 3]);
    assert!(fx.read(&fx.dlq, 1, Duration::from_secs(2)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_stops_the_runner_promptly_and_its_record_is_redelivered() {
    let mut settings = settings();
    settings.consumer.shutdown_timeout = Duration::from_secs(20);
    let fx = Fixture::new(settings.clone()).await;
    fx.send("k", b"boom", "e1").await;
    let mut panicking = settings.clone();
    panicking.consumer.inject_panic_every = 1;
    let started = Instant::now();
    let crashed = fx.spawn_with(&panicking, recording(&log()));
    let result = tokio::time::timeout(Duration::from_secs(30), crashed.task)
        .await
        .expect("the runner stops by itself")
        .expect("the panic is caught, not propagated to the runner task");
    assert!(
        matches!(result, Err(RunnerError::Panic { ref message, .. }) if message.contains("injected panic")),
        "{result:?}"
    );
    // It did not sit out the 20 s shutdown timeout waiting for the panicked record's slot.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped after {:?}",
        started.elapsed()
    );

    let redelivered = log();
    let running = fx.spawn(recording(&redelivered));
    assert!(
        eventually(Duration::from_secs(30), || !redelivered
            .lock()
            .unwrap()
            .is_empty())
        .await,
        "the record whose handler panicked is redelivered"
    );
    running.stop().await.unwrap();
    assert_eq!(*redelivered.lock().unwrap(), vec![b"boom".to_vec()]);
}

/// One handler call: which member, which record, when.
#[derive(Debug, Clone)]
struct Call {
    member: usize,
    record: (i32, i64),
    start: Instant,
    end: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_under_load_never_runs_a_record_on_two_members_at_once() {
    let fx = Fixture::new(settings()).await;
    // Slow handlers (an SMTP server taking seconds), and enough work to outlast the new members'
    // group join (tansu's first join takes seconds).
    let total = 120;
    for i in 0..total {
        fx.send(
            &format!("key-{}", i % 12),
            format!("r{i}").as_bytes(),
            &format!("e{i}"),
        )
        .await;
    }
    let calls: Log<Call> = log();
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
    let first = fx.spawn(member(1));
    assert!(eventually(Duration::from_secs(30), || calls.lock().unwrap().len() >= 5).await);
    // A second and third member join mid-load, then leave again.
    let second = fx.spawn(member(2));
    let third = fx.spawn(member(3));
    let newcomers = || {
        calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.member > 1)
            .count()
    };
    assert!(
        eventually(Duration::from_secs(60), || newcomers() >= 6).await,
        "the rebalance moved partitions to the new members"
    );
    second.stop().await.unwrap();
    third.stop().await.unwrap();
    let all_done = || {
        let calls = calls.lock().unwrap();
        let distinct: std::collections::HashSet<_> = calls.iter().map(|c| c.record).collect();
        distinct.len() >= total
    };
    assert!(
        eventually(Duration::from_secs(60), all_done).await,
        "every record handled"
    );
    first.stop().await.unwrap();

    let calls = calls.lock().unwrap().clone();
    let mut by_record: HashMap<(i32, i64), Vec<&Call>> = HashMap::new();
    for call in &calls {
        by_record.entry(call.record).or_default().push(call);
    }
    for (record, runs) in &by_record {
        // Runs are logged when they finish: an attempt a revoke interrupted is not among them.
        assert_eq!(
            runs.len(),
            1,
            "record {record:?} ran to the end more than once: {runs:?}"
        );
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_paused_by_backpressure_are_consumed_again_after_a_rebalance() {
    // A member that pauses at once at its in-flight bound (patience zero), then loses and
    // regains its partitions: librdkafka would keep the pause flag across the reassignment.
    let mut settings = settings();
    settings.consumer.max_in_flight = 2;
    let fx = Fixture::new(settings.clone()).await;
    for i in 0..30 {
        fx.send(
            &format!("key-{i}"),
            format!("r{i}").as_bytes(),
            &format!("e{i}"),
        )
        .await;
    }
    let gate = Arc::new(AtomicBool::new(false));
    let seen = log();
    let state = (gate.clone(), seen.clone());
    let first = fx.spawn(handler(state, |(gate, seen), r: Record| async move {
        while !gate.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen.lock().unwrap().push(r.payload.unwrap());
        Ok(())
    }));
    // Held at the bound for longer than half of max_poll_interval: paused.
    tokio::time::sleep(settings.consumer.max_poll_interval / 2 + Duration::from_secs(1)).await;
    // A second member joins and leaves: the first one's partitions are revoked and come back.
    let second_seen = log();
    let second = fx.spawn(recording(&second_seen));
    tokio::time::sleep(Duration::from_secs(8)).await;
    second.stop().await.unwrap();
    gate.store(true, Ordering::SeqCst);
    let total = || seen.lock().unwrap().len() + second_seen.lock().unwrap().len();
    assert!(
        eventually(Duration::from_secs(60), || total() >= 30).await,
        "every record consumed after the rebalance: {} + {}",
        seen.lock().unwrap().len(),
        second_seen.lock().unwrap().len()
    );
    first.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_gets_an_assignment_stops_after_the_join_timeout() {
    init_test_log();
    // A "broker" that accepts connections and never answers: the group join cannot finish.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut settings = settings();
    settings.bootstrap_servers = format!("127.0.0.1:{}", silent.local_addr().unwrap().port());
    settings.consumer.join_timeout = Duration::from_secs(2);
    settings.consumer.shutdown_timeout = Duration::from_secs(1);
    let seen = log();
    let runner = spine_kit::kafka::consumer::ConsumerRunner::new(
        &settings,
        &unique("group"),
        &["never-joined"],
        recording(&seen),
    )
    .unwrap();

    let result = tokio::time::timeout(
        Duration::from_secs(60),
        runner.run(tokio_util::sync::CancellationToken::new()),
    )
    .await
    .expect("the join watchdog stops the runner");

    let err = result.expect_err("a member that never joined fails");
    assert!(
        matches!(
            err,
            spine_kit::kafka::consumer::RunnerError::NotJoined { .. }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("kafka.consumer.join_timeout"),
        "{err}"
    );
    drop(silent);
}
