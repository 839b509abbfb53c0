//! The consumers run below the edge's priority (`kafka.consumer.nice`): handlers are
//! lowered; the caller's runtime and librdkafka's threads (heartbeats) are not.

use std::time::Duration;

use spine_kit::kafka::consumer::Record;
use spine_kit::runtime::{MAX_NICE, thread_nice};

use crate::support::*;

/// What a handler saw of the thread it ran on.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    nice: i32,
    thread: Option<String>,
}

async fn seen_by_a_handler(fx: &Fixture, settings: &spine_kit::settings::KafkaSettings) -> Seen {
    fx.send("k1", b"one", &unique("e")).await;
    let seen = log();
    let running = fx.spawn_with(
        settings,
        handler(seen.clone(), |seen, _: Record| async move {
            let thread = std::thread::current().name().map(str::to_owned);
            seen.lock().unwrap().push(Seen {
                nice: thread_nice().unwrap(),
                thread,
            });
            Ok(())
        }),
    );
    assert!(eventually(Duration::from_secs(30), || !seen.lock().unwrap().is_empty()).await);
    running.stop().await.unwrap();
    seen.lock().unwrap()[0].clone()
}

/// The nice values of this process's librdkafka threads (named `rdk:…`), from /proc.
fn librdkafka_nice_values() -> Vec<i32> {
    let mut values = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !comm.starts_with("rdk:") {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // After "pid (comm) ", field 3 (state) comes first; nice is field 19.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        values.push(rest.split(' ').nth(16).unwrap().parse().unwrap());
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_run_on_the_lowered_consumer_runtime_by_default() {
    let fx = Fixture::new(settings()).await;
    assert_eq!(fx.settings.consumer.nice, 10, "the default");
    let base = thread_nice().unwrap();
    let seen = seen_by_a_handler(&fx, &fx.settings).await;
    assert_eq!(seen.nice, (base + 10).min(MAX_NICE));
    assert_eq!(seen.thread.as_deref(), Some("spine-consumer"));
    assert_eq!(
        thread_nice().unwrap(),
        base,
        "the test's own thread is not lowered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nice_0_handlers_run_on_the_callers_runtime() {
    let fx = Fixture::new(settings()).await;
    let mut settings = fx.settings.clone();
    settings.consumer.nice = 0;
    let base = thread_nice().unwrap();
    let seen = seen_by_a_handler(&fx, &settings).await;
    assert_eq!(seen.nice, base);
    assert_ne!(seen.thread.as_deref(), Some("spine-consumer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_threads_keep_the_normal_priority() {
    let fx = Fixture::new(settings()).await;
    let base = thread_nice().unwrap();
    let lowered = (base + 10).min(MAX_NICE);
    assert_ne!(base, lowered, "run the tests below nice {MAX_NICE}");
    fx.send("k1", b"one", &unique("e")).await;
    let seen = log();
    let running = fx.spawn(recording(&seen));
    assert!(eventually(Duration::from_secs(30), || !seen.lock().unwrap().is_empty()).await);
    // The producers and the consumer were all made on the test's threads: a lowered
    // heartbeat thread would let a busy edge cost the member its partitions.
    let values = librdkafka_nice_values();
    running.stop().await.unwrap();
    assert!(!values.is_empty());
    assert!(values.iter().all(|v| *v == base), "{values:?}");
}
