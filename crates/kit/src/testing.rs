//! Helpers for tests of the kit and of services built on it: a fresh database per test, on
//! SQLite or on the PostgreSQL server named by `SPINE_TEST_POSTGRES_URL` (which
//! `scripts/test` starts), reading topics back, waiting for a condition, and a private
//! broker per test ([`broker::Broker`]).

pub mod broker;
pub mod registry;

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use secrecy::ExposeSecret;

use crate::db::Backend;
use crate::kafka::{Headers, TopicSpec, ensure_topics};
use crate::settings::{DatabaseSettings, KafkaSettings};

/// A fresh, empty database. Keep it alive for the test: a SQLite file lives in a temporary
/// directory that is removed on drop (a PostgreSQL database is left for the throwaway server).
pub struct TestDatabase {
    /// Settings pointing at it.
    pub settings: DatabaseSettings,
    /// Its backend.
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

/// Creates a fresh database on `backend`.
///
/// # Panics
/// When PostgreSQL is asked for and `SPINE_TEST_POSTGRES_URL` is unset or unreachable: a test
/// that cannot reach its database must fail loudly, not pass by skipping.
pub async fn fresh_database(backend: Backend) -> TestDatabase {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let url = format!("sqlite://{}/test.db?mode=rwc", dir.path().display());
            TestDatabase {
                settings: DatabaseSettings {
                    url: url.into(),
                    ..DatabaseSettings::default()
                },
                backend,
                _dir: Some(dir),
            }
        }
        Backend::Postgres => {
            let admin_url = std::env::var("SPINE_TEST_POSTGRES_URL").expect(
                "SPINE_TEST_POSTGRES_URL is unset: run the tests with scripts/test, which starts PostgreSQL",
            );
            let admin = DatabaseSettings {
                url: admin_url.clone().into(),
                max_connections: 1,
                ..DatabaseSettings::default()
            };
            let (pool, _) = crate::db::connect(&admin).await.unwrap_or_else(|e| {
                panic!("cannot reach PostgreSQL at SPINE_TEST_POSTGRES_URL: {e}")
            });
            let name = format!("spine_test_{}", uuid::Uuid::new_v4().simple());
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&pool)
                .await
                .expect("CREATE DATABASE");
            pool.close().await;
            let url = match admin_url.rsplit_once('/') {
                Some((server, _db)) => format!("{server}/{name}"),
                None => panic!("SPINE_TEST_POSTGRES_URL has no database path: {admin_url}"),
            };
            TestDatabase {
                settings: DatabaseSettings {
                    url: url.into(),
                    ..DatabaseSettings::default()
                },
                backend,
                _dir: None,
            }
        }
    }
}

impl TestDatabase {
    /// The URL, for tools that need it in the clear.
    pub fn url(&self) -> &str {
        self.settings.url.expose_secret()
    }
}

/// A record as read back from a topic.
#[derive(Debug, Clone)]
pub struct Received {
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub payload: Vec<u8>,
    /// Its headers.
    pub headers: Headers,
}

/// Kafka settings for tests against the broker named by `KAFKA_BOOTSTRAP_SERVERS` (else the
/// default): 3 partitions per topic, tansu-friendly group timeouts (its first join waits for
/// `max.poll.interval.ms`), quick commits, a short shutdown, and fast, few retries.
pub fn kafka_settings() -> KafkaSettings {
    let mut settings = KafkaSettings::default();
    if let Ok(servers) = std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        settings.bootstrap_servers = servers;
    }
    settings.topics.partitions = 3;
    let consumer = &mut settings.consumer;
    consumer.max_poll_interval = Duration::from_secs(6);
    consumer.session_timeout = Duration::from_secs(6);
    consumer.commit_interval = Duration::from_millis(200);
    consumer.shutdown_timeout = Duration::from_secs(3);
    consumer.retry.initial_backoff = Duration::from_millis(10);
    consumer.retry.max_backoff = Duration::from_millis(50);
    consumer.retry.max_attempts = 2;
    settings
}

/// Creates `topics` (with the settings' partitions) on the test broker; panics with a hint
/// when no broker answers.
pub async fn create_topics(settings: &KafkaSettings, topics: &[&str]) {
    let specs: Vec<TopicSpec> = topics
        .iter()
        .map(|topic| TopicSpec::new(*topic, settings))
        .collect();
    ensure_topics(settings, &specs).await.unwrap_or_else(|err| {
        panic!(
            "cannot create topics on {}: {err} (is a broker running? `scripts/broker start`)",
            settings.bootstrap_servers
        )
    });
}

/// The records of `topic` keyed by `key`, read from the beginning (other tests' records
/// share the topic), once at least `expected` are there or 30 s passed.
pub fn records_keyed(
    settings: &KafkaSettings,
    topic: &str,
    key: &str,
    expected: usize,
) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = read_settled(settings, topic, usize::MAX, Duration::from_secs(2));
        let mine: Vec<Received> = all
            .into_iter()
            .filter(|r| r.key.as_deref() == Some(key.as_bytes()))
            .collect();
        if mine.len() >= expected || Instant::now() > deadline {
            return mine;
        }
    }
}

/// Reads `expected` records (or until `timeout`), then keeps reading for another second so
/// that a duplicate or stray record would show up too.
pub fn read_settled(
    settings: &KafkaSettings,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<Received> {
    read_topic_until(settings, topic, expected, timeout, Duration::from_secs(1))
}

/// Reads a topic from the beginning of every partition, without a group.
pub fn read_topic(
    settings: &KafkaSettings,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> Vec<Received> {
    read_topic_until(settings, topic, count, timeout, Duration::ZERO)
}

fn read_topic_until(
    settings: &KafkaSettings,
    topic: &str,
    count: usize,
    timeout: Duration,
    settle: Duration,
) -> Vec<Received> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions(settings, topic) {
        list.add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut deadline = Instant::now() + timeout;
    let mut settled = false;
    let mut received = Vec::new();
    while Instant::now() < deadline {
        if received.len() >= count && !settled {
            if settle.is_zero() {
                break;
            }
            settled = true;
            deadline = Instant::now() + settle;
        }
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            received.push(Received {
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().unwrap_or_default().to_vec(),
                headers: message
                    .headers()
                    .map(Headers::from_borrowed)
                    .unwrap_or_default(),
            });
        }
    }
    received
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    condition()
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn partitions(settings: &KafkaSettings, topic: &str) -> i32 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .create()
        .expect("a metadata client");
    consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()
        .and_then(|m| m.topics().first().map(|t| t.partitions().len() as i32))
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

/// Logs to the test output only when `TEST_LOG` is set: tests are quiet by default.
pub fn init_test_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                std::env::var("RUST_LOG").unwrap_or_else(|_| "debug,rdkafka=info".into()),
            )
            .with_test_writer()
            .try_init();
    }
}

/// Runs each `async fn name(backend: Backend)` as two tests, `name::sqlite` and
/// `name::postgres`: the conformance suite of everything with a database. The calling crate
/// needs tokio (with `macros` and `rt-multi-thread`).
#[macro_export]
macro_rules! on_sqlite_and_postgres {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::db::Backend::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::db::Backend::Postgres).await
                }
            }
        )*
    };
}
