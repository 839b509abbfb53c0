//! The transactional outbox and its relay, on SQLite and PostgreSQL, against the real broker
//! (and librdkafka's mock cluster for the outage).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use spine_kit::db::Backend;
use spine_kit::kafka::{Headers, OutgoingRecord, Publisher};
use spine_kit::outbox::{Outbox, Quarantined, Relay};
use spine_kit::settings::{KafkaSettings, OutboxSettings};
use spine_kit::testing::{TestDatabase, fresh_database};
use tokio_util::sync::CancellationToken;

use crate::support::*;

spine_kit::on_sqlite_and_postgres!(
    committed_rows_are_published_once_in_order_per_key_and_rolled_back_ones_never,
    rows_wait_while_the_broker_is_down_and_are_published_in_order_after,
    published_rows_are_pruned_after_their_retention,
    an_oversize_row_is_quarantined_while_other_keys_flow_and_its_key_waits_behind_it,
    a_released_row_is_published_and_its_key_follows_in_order,
    a_relay_stopped_during_an_outage_leaves_its_rows_to_the_next_one_at_once,
    a_commit_through_the_spines_pool_counts_in_the_backlog_and_wakes_the_relay,
    keys_stuck_at_the_front_do_not_hide_the_keys_behind_them,
);

mod postgres_other_replica {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_row_committed_by_another_replica_is_published_by_the_next_poll() {
        super::a_commit_elsewhere_is_found_by_the_poll(spine_kit::db::Backend::Postgres).await
    }
}

mod two_relays_on_one_postgres_outbox {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publish_each_row_once_in_order_per_key() {
        super::two_relays_publish_each_row_once(spine_kit::db::Backend::Postgres).await
    }
}

fn relay_settings() -> OutboxSettings {
    OutboxSettings {
        batch_size: 50,
        poll_interval: Duration::from_millis(100),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        quarantine_after: QUARANTINE_AFTER,
        ..OutboxSettings::default()
    }
}

const QUARANTINE_AFTER: u32 = 3;

async fn open(backend: Backend) -> (TestDatabase, Outbox) {
    let db = fresh_database(backend).await;
    let (pool, backend) = spine_kit::db::connect(&db.settings).await.unwrap();
    let outbox = Outbox::new(pool, backend).await.unwrap();
    (db, outbox)
}

fn start_relay(
    outbox: &Outbox,
    kafka: &KafkaSettings,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    start_relay_with(outbox, kafka, relay_settings())
}

fn start_relay_with(
    outbox: &Outbox,
    kafka: &KafkaSettings,
    settings: OutboxSettings,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let publisher = Publisher::new(kafka, "relay").unwrap();
    let relay = Relay::new(outbox.clone(), publisher, settings);
    let token = CancellationToken::new();
    (token.clone(), tokio::spawn(relay.run(token)))
}

fn row(topic: &str, key: &str, seq: usize) -> OutgoingRecord {
    OutgoingRecord {
        topic: topic.to_owned(),
        key: Some(key.as_bytes().to_vec()),
        payload: seq.to_string().into_bytes(),
        headers: Headers::new().with("seq", seq.to_string()),
    }
}

/// Enqueues `row(key, seq)` in its own transaction, committing or rolling back.
async fn write(outbox: &Outbox, record: &OutgoingRecord, commit: bool) {
    let mut tx = outbox.begin().await.unwrap();
    outbox.enqueue(&mut tx, record).await.unwrap();
    if commit {
        tx.commit().await.unwrap();
        outbox.committed(1);
    } else {
        tx.rollback().await.unwrap();
    }
}

/// Sequence numbers per key, in the order the topic holds them.
fn per_key(received: &[Received]) -> BTreeMap<String, Vec<usize>> {
    let mut keys: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for r in received {
        let key = String::from_utf8(r.key.clone().unwrap()).unwrap();
        let seq = std::str::from_utf8(&r.payload).unwrap().parse().unwrap();
        keys.entry(key).or_default().push(seq);
    }
    keys
}

async fn committed_rows_are_published_once_in_order_per_key_and_rolled_back_ones_never(
    backend: Backend,
) {
    const KEYS: usize = 5;
    const ROWS: usize = 12;
    let fx = Fixture::new(settings()).await;
    let (_db, outbox) = open(backend).await;
    let (token, relay) = start_relay(&outbox, &fx.settings);

    // Writers for different keys commit concurrently with the relay's rounds; every third
    // transaction rolls back.
    let writers: Vec<_> = (0..KEYS)
        .map(|k| {
            let (outbox, topic) = (outbox.clone(), fx.topic.clone());
            tokio::spawn(async move {
                for seq in 0..ROWS {
                    write(
                        &outbox,
                        &row(&topic, &format!("key-{k}"), seq),
                        seq % 3 != 2,
                    )
                    .await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let expected: Vec<usize> = (0..ROWS).filter(|seq| seq % 3 != 2).collect();
    let received = read_settled(
        &fx.settings,
        &fx.topic,
        KEYS * expected.len(),
        Duration::from_secs(30),
    );
    token.cancel();
    relay.await.unwrap().unwrap();

    assert_eq!(
        received.len(),
        KEYS * expected.len(),
        "each committed row once, nothing else"
    );
    for (key, seqs) in per_key(&received) {
        assert_eq!(seqs, expected, "order of {key}");
    }
}

async fn two_relays_publish_each_row_once(backend: Backend) {
    const KEYS: usize = 20;
    const ROWS: usize = 8;
    let fx = Fixture::new(settings()).await;
    let (db, outbox) = open(backend).await;
    for seq in 0..ROWS {
        for k in 0..KEYS {
            write(&outbox, &row(&fx.topic, &format!("key-{k}"), seq), true).await;
        }
    }
    // Two replicas' relays race for the same rows.
    let (token_a, relay_a) = start_relay(&outbox, &fx.settings);
    let (_, second) = open_same(&db).await;
    let (token_b, relay_b) = start_relay(&second, &fx.settings);
    let received = read_settled(
        &fx.settings,
        &fx.topic,
        KEYS * ROWS,
        Duration::from_secs(30),
    );
    token_a.cancel();
    token_b.cancel();
    relay_a.await.unwrap().unwrap();
    relay_b.await.unwrap().unwrap();

    assert_eq!(received.len(), KEYS * ROWS, "every row exactly once");
    let expected: Vec<usize> = (0..ROWS).collect();
    for (key, seqs) in per_key(&received) {
        assert_eq!(seqs, expected, "order of {key}");
    }
}

/// A second pool on the same database: another replica.
async fn open_same(db: &TestDatabase) -> ((), Outbox) {
    let (pool, backend) = spine_kit::db::connect(&db.settings).await.unwrap();
    ((), Outbox::new(pool, backend).await.unwrap())
}

async fn rows_wait_while_the_broker_is_down_and_are_published_in_order_after(backend: Backend) {
    // Fault injection: librdkafka's mock cluster, because tansu can't be taken down per test.
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("outbox-outage", PARTITIONS, 1).unwrap();
    let mut kafka = settings();
    kafka.bootstrap_servers = mock.bootstrap_servers();
    kafka.producer.delivery_timeout = Duration::from_secs(2);
    let (_db, outbox) = open(backend).await;
    mock.broker_down(1).unwrap();
    // Every failed send would quarantine its row if an outage counted.
    let (token, relay) = start_relay_with(
        &outbox,
        &kafka,
        OutboxSettings {
            quarantine_after: 1,
            ..relay_settings()
        },
    );
    for seq in 0..5 {
        for k in 0..3 {
            write(
                &outbox,
                &row("outbox-outage", &format!("key-{k}"), seq),
                true,
            )
            .await;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    outbox.refresh_backlog().await.unwrap();
    assert_eq!(
        outbox.backlog().rows(),
        15,
        "rows wait while the broker is down"
    );
    assert!(outbox.backlog().oldest_age() >= Duration::from_secs(2));

    assert_eq!(
        outbox.quarantined().await.unwrap(),
        vec![],
        "an outage quarantines nothing"
    );

    mock.broker_up(1).unwrap();
    let received = read_settled(&kafka, "outbox-outage", 15, Duration::from_secs(30));
    assert!(eventually(Duration::from_secs(10), || outbox.backlog().rows() == 0).await);
    token.cancel();
    relay.await.unwrap().unwrap();

    assert_eq!(received.len(), 15, "none lost, none doubled");
    for (key, seqs) in per_key(&received) {
        assert_eq!(seqs, vec![0, 1, 2, 3, 4], "order of {key}");
    }
}

async fn published_rows_are_pruned_after_their_retention(backend: Backend) {
    let fx = Fixture::new(settings()).await;
    let (_db, outbox) = open(backend).await;
    for seq in 0..3 {
        write(&outbox, &row(&fx.topic, "key", seq), true).await;
    }
    let (token, relay) = start_relay(&outbox, &fx.settings);
    assert_eq!(fx.read(&fx.topic, 3, Duration::from_secs(15)).len(), 3);
    assert!(eventually(Duration::from_secs(5), || outbox.backlog().rows() == 0).await);
    token.cancel();
    relay.await.unwrap().unwrap();

    assert_eq!(
        outbox.prune(Duration::from_secs(3600)).await.unwrap(),
        0,
        "too young to prune"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(outbox.prune(Duration::from_millis(10)).await.unwrap(), 3);
}

async fn a_commit_elsewhere_is_found_by_the_poll(backend: Backend) {
    let fx = Fixture::new(settings()).await;
    let (db, outbox) = open(backend).await;
    if backend == Backend::Postgres {
        // No NOTIFY trigger: it serialised every commit that wrote an outbox row.
        let triggers: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_trigger WHERE tgname = 'spine_outbox_notify'",
        )
        .fetch_one(outbox.pool())
        .await
        .unwrap();
        assert_eq!(triggers, 0, "the NOTIFY trigger is dropped");
    }
    // Another replica's commit does not wake this relay: its poll finds the row.
    let publisher = Publisher::new(&fx.settings, "relay").unwrap();
    let polling = OutboxSettings {
        poll_interval: Duration::from_millis(300),
        ..relay_settings()
    };
    let relay = Relay::new(outbox.clone(), publisher, polling);
    let token = CancellationToken::new();
    let task = tokio::spawn(relay.run(token.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await; // first (empty) round done, now asleep
    // Another replica (its own pool and in-process wake-up) commits a row.
    let (_, other) = open_same(&db).await;
    write(&other, &row(&fx.topic, "key", 0), true).await;

    let received = read_topic(&fx.settings, &fx.topic, 1, Duration::from_secs(10));
    token.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(received.len(), 1, "published by a later poll");
}

/// A row over librdkafka's `message.max.bytes` (1,000,000 by default): rejected on every send.
fn oversize(topic: &str, key: &str) -> OutgoingRecord {
    OutgoingRecord {
        payload: vec![b'x'; 1_200_000],
        ..row(topic, key, 99)
    }
}

/// Polls the outbox until `n` rows are quarantined.
async fn wait_for_quarantined(outbox: &Outbox, n: usize) -> Vec<Quarantined> {
    for _ in 0..300 {
        let quarantined = outbox.quarantined().await.unwrap();
        if quarantined.len() >= n {
            return quarantined;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    outbox.quarantined().await.unwrap()
}

async fn an_oversize_row_is_quarantined_while_other_keys_flow_and_its_key_waits_behind_it(
    backend: Backend,
) {
    let fx = Fixture::new(settings()).await;
    let (_db, outbox) = open(backend).await;
    write(&outbox, &row(&fx.topic, "big", 0), true).await;
    write(&outbox, &oversize(&fx.topic, "big"), true).await;
    for seq in [2, 3] {
        write(&outbox, &row(&fx.topic, "big", seq), true).await;
    }
    for seq in 0..5 {
        write(&outbox, &row(&fx.topic, "small", seq), true).await;
    }
    let (token, relay) = start_relay(&outbox, &fx.settings);

    let quarantined = wait_for_quarantined(&outbox, 1).await;
    let received = read_settled(&fx.settings, &fx.topic, 6, Duration::from_secs(30));
    assert_eq!(quarantined.len(), 1, "the oversize row is quarantined");
    let row = &quarantined[0];
    assert_eq!(row.key.as_deref(), Some(&b"big"[..]));
    assert_eq!(row.rejections, i64::from(QUARANTINE_AFTER));
    assert!(
        row.last_error.contains("MessageSizeTooLarge"),
        "{}",
        row.last_error
    );
    let keys = per_key(&received);
    assert_eq!(keys["small"], vec![0, 1, 2, 3, 4], "the other key flows");
    assert_eq!(
        keys["big"],
        vec![0],
        "the quarantined key's later rows wait behind it"
    );
    outbox.refresh_backlog().await.unwrap();
    assert_eq!(
        outbox.backlog().rows(),
        3,
        "the quarantined row and the two held"
    );

    // Discarding it (the runbook's last resort) lets the held rows go, in order.
    assert!(outbox.discard(row.id).await.unwrap());
    let received = read_settled(&fx.settings, &fx.topic, 8, Duration::from_secs(30));
    assert!(eventually(Duration::from_secs(10), || outbox.backlog().rows() == 0).await);
    token.cancel();
    relay.await.unwrap().unwrap();
    assert_eq!(received.len(), 8, "each publishable row once");
    assert_eq!(per_key(&received)["big"], vec![0, 2, 3]);
}

/// The relay reads the unpublished rows in windows (of at most 2,000): a key held at the front
/// by a row it can't send, with more rows behind it than a window holds, must not stop the
/// keys behind them.
async fn keys_stuck_at_the_front_do_not_hide_the_keys_behind_them(backend: Backend) {
    const HELD: usize = 2_500;
    let fx = Fixture::new(settings()).await;
    let (_db, outbox) = open(backend).await;
    write(&outbox, &oversize(&fx.topic, "big"), true).await;
    let mut tx = outbox.begin().await.unwrap();
    for seq in 0..HELD {
        outbox
            .enqueue(&mut tx, &row(&fx.topic, "big", seq))
            .await
            .unwrap();
    }
    for seq in 0..3 {
        outbox
            .enqueue(&mut tx, &row(&fx.topic, "small", seq))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    outbox.committed(HELD as i64 + 3);
    let (token, relay) = start_relay(&outbox, &fx.settings);

    let received = read_settled(&fx.settings, &fx.topic, 3, Duration::from_secs(30));
    token.cancel();
    relay.await.unwrap().unwrap();
    let keys = per_key(&received);
    assert_eq!(keys["small"], vec![0, 1, 2], "the key behind flows");
    assert!(!keys.contains_key("big"), "the held key waits: {keys:?}");
}

async fn a_released_row_is_published_and_its_key_follows_in_order(backend: Backend) {
    let fx = Fixture::new(settings()).await;
    let (_db, outbox) = open(backend).await;
    write(&outbox, &oversize(&fx.topic, "key"), true).await;
    write(&outbox, &row(&fx.topic, "key", 1), true).await;
    let (token, relay) = start_relay(&outbox, &fx.settings);
    let quarantined = wait_for_quarantined(&outbox, 1).await;
    assert_eq!(quarantined.len(), 1);

    // The fix (here: a smaller payload; in production e.g. a larger message.max.bytes), then
    // the release.
    sqlx::query("UPDATE spine_outbox SET payload = $1 WHERE id = $2")
        .bind(b"0".to_vec())
        .bind(quarantined[0].id)
        .execute(outbox.pool())
        .await
        .unwrap();
    assert!(outbox.release(quarantined[0].id).await.unwrap());
    let received = read_settled(&fx.settings, &fx.topic, 2, Duration::from_secs(30));
    assert!(eventually(Duration::from_secs(10), || outbox.backlog().rows() == 0).await);
    token.cancel();
    relay.await.unwrap().unwrap();
    assert_eq!(
        per_key(&received)["key"],
        vec![0, 1],
        "released, then its key in order"
    );
    assert_eq!(outbox.quarantined().await.unwrap(), vec![]);
}

async fn a_relay_stopped_during_an_outage_leaves_its_rows_to_the_next_one_at_once(
    backend: Backend,
) {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("outbox-stop", PARTITIONS, 1).unwrap();
    let mut kafka = settings();
    kafka.bootstrap_servers = mock.bootstrap_servers();
    // Sends hang for the whole delivery timeout: longer than any shutdown may wait.
    kafka.producer.delivery_timeout = Duration::from_secs(120);
    let (_db, outbox) = open(backend).await;
    for k in 0..3 {
        write(&outbox, &row("outbox-stop", &format!("key-{k}"), 0), true).await;
    }
    mock.broker_down(1).unwrap();
    // Claims that would otherwise block the next relay for ten minutes.
    let held = OutboxSettings {
        claim_timeout: Duration::from_secs(600),
        ..relay_settings()
    };
    let (token, relay) = start_relay_with(&outbox, &kafka, held.clone());
    let claimed = async {
        loop {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM spine_outbox WHERE not_before IS NOT NULL",
            )
            .fetch_one(outbox.pool())
            .await
            .unwrap();
            if n == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), claimed)
        .await
        .expect("the relay claims the rows");
    token.cancel();
    tokio::time::timeout(Duration::from_secs(30), relay)
        .await
        .expect("the relay stops within its grace, not the delivery timeout")
        .unwrap()
        .unwrap();
    let still_claimed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM spine_outbox WHERE not_before IS NOT NULL")
            .fetch_one(outbox.pool())
            .await
            .unwrap();
    assert_eq!(still_claimed, 0, "the rows in flight were released");

    mock.broker_up(1).unwrap();
    let (token, relay) = start_relay_with(&outbox, &kafka, held);
    let received = read_settled(&kafka, "outbox-stop", 3, Duration::from_secs(30));
    token.cancel();
    relay.await.unwrap().unwrap();
    assert_eq!(received.len(), 3, "the next relay publishes them");
}

/// A consumer handler writes through the same outbox over the spine's pool
/// (`Outbox::with_pool`): the API's backlog counts its rows, and the relay wakes for them.
async fn a_commit_through_the_spines_pool_counts_in_the_backlog_and_wakes_the_relay(
    backend: Backend,
) {
    let fx = Fixture::new(settings()).await;
    let (db, outbox) = open(backend).await;
    let spine_pool = spine_kit::db::connect_spine(&db.settings, outbox.pool())
        .await
        .unwrap();
    let spine = outbox.with_pool(spine_pool);
    write(&spine, &row(&fx.topic, "key-0", 0), true).await;
    assert_eq!(outbox.backlog().rows(), 1, "counted in the edge's backlog");

    // A poll interval no test waits for: only a wake publishes the second row in time.
    let settings = OutboxSettings {
        poll_interval: Duration::from_secs(3600),
        ..relay_settings()
    };
    let (token, relay) = start_relay_with(&outbox, &fx.settings, settings);
    let first = read_topic(&fx.settings, &fx.topic, 1, Duration::from_secs(30));
    assert_eq!(first.len(), 1, "the row written before the relay started");
    write(&spine, &row(&fx.topic, "key-0", 1), true).await;
    let both = read_settled(&fx.settings, &fx.topic, 2, Duration::from_secs(30));
    token.cancel();
    relay.await.unwrap().unwrap();
    assert_eq!(per_key(&both)["key-0"], [0, 1]);
}
