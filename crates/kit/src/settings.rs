//! Typed settings shared by every service. Services embed these structs in their own.
//!
//! Every struct denies unknown fields, so a typo in a key is an error that names the key, not a
//! silently ignored setting.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
pub use spine_events::Framing;

/// The kit's settings as one struct: what a consumer-only service or a test needs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KitSettings {
    /// Kafka connection, producer and consumer settings.
    pub kafka: KafkaSettings,
    /// Logs, traces and metrics.
    pub telemetry: TelemetrySettings,
    /// The service's own database (outbox, inbox, state).
    pub database: DatabaseSettings,
    /// The transactional outbox and its relay.
    pub outbox: OutboxSettings,
    /// Avro framing on the wire and the schema registry.
    pub schemas: SchemaSettings,
}

/// How events are framed on the wire, and the schema registry that Confluent framing needs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchemaSettings {
    /// What this service writes: `single_object` (default: the embedded catalog's fingerprint,
    /// no registry) or `confluent` (a registry's schema id, as Kafka Connect, ksqlDB, Flink
    /// and Confluent's serializers expect; needs `schemas.registry.url`). Reading accepts both.
    pub framing: Framing,
    /// Per-topic exceptions to `framing`, e.g. `{"orders.events": confluent}` while one topic
    /// migrates.
    pub topic_framing: BTreeMap<String, Framing>,
    /// The Confluent-compatible schema registry.
    pub registry: RegistrySettings,
}

impl SchemaSettings {
    /// True when some topic is written in Confluent framing.
    pub fn uses_confluent(&self) -> bool {
        self.framing == Framing::Confluent
            || self
                .topic_framing
                .values()
                .any(|f| *f == Framing::Confluent)
    }
}

/// A Confluent-compatible schema registry (Confluent, Karapace, Apicurio's ccompat API,
/// Redpanda), spoken to over its REST API.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrySettings {
    /// Base URL, e.g. `http://schema-registry:8081`; empty for none. With a URL, the service
    /// resolves schema ids of Confluent-framed records it reads even when it writes
    /// single-object encoding.
    pub url: Option<String>,
    /// Basic-auth user name, with `password`.
    pub username: Option<String>,
    /// Basic-auth password (from the environment or a Secret; never logged).
    pub password: Option<SecretString>,
    /// A PEM file of CA certificates to trust for an `https` URL, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// How a subject is named: `topic_record` (default, `<topic>-<record full name>`: several
    /// event types share a topic), `topic` (`<topic>-value`) or `record` (`<full name>`).
    pub subject_name_strategy: SubjectNameStrategy,
    /// At startup, register every catalog schema under its subject (true, the default), or
    /// only look the schemas up and refuse to start when the latest version of one is missing
    /// (false: for registries where only CI registers, via `schema-check --registry`).
    pub auto_register: bool,
    /// Timeout of one request to the registry.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            url: None,
            username: None,
            password: None,
            ca_file: None,
            subject_name_strategy: SubjectNameStrategy::TopicRecord,
            auto_register: true,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// How subjects are named in the registry (Confluent's `subject.name.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectNameStrategy {
    /// `<topic>-<record full name>` (Confluent's `TopicRecordNameStrategy`).
    #[default]
    TopicRecord,
    /// `<topic>-value` (`TopicNameStrategy`): one event type per topic.
    Topic,
    /// `<record full name>` (`RecordNameStrategy`).
    Record,
}

impl SubjectNameStrategy {
    /// The subject of a value schema named `full_name` on `topic`.
    pub fn subject(self, topic: &str, full_name: &str) -> String {
        match self {
            Self::TopicRecord => format!("{topic}-{full_name}"),
            Self::Topic => format!("{topic}-value"),
            Self::Record => full_name.to_owned(),
        }
    }
}

/// Transactional outbox and relay settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxSettings {
    /// Sends the relay keeps in flight at most (each the oldest unpublished row of its key).
    /// As each is acknowledged, the row is marked and its key's next row claimed.
    pub batch_size: u32,
    /// How often the relay looks for rows when nothing woke it (a commit in this process wakes
    /// it at once): the longest a row committed by another replica waits for a relay.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Unpublished rows beyond which the API sheds load (503 with Retry-After) instead of
    /// accepting work it cannot hand on.
    pub max_backlog: i64,
    /// How long published rows are kept before they are pruned.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often pruning runs.
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
    /// Backoff of a row after its first failed send, doubling with each further failure up to
    /// `max_backoff`. Only the failing row's key waits; other keys keep flowing. Also the
    /// first wait after a failed database call.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// The longest wait before a failed row (or the database) is tried again.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Sends of a row that may fail with an error about the row itself (larger than
    /// `message.max.bytes`, invalid record…) before the row is quarantined: no longer
    /// retried, counted by `spine_outbox_quarantined_rows`, its key's later rows held behind
    /// it until an operator releases or discards it (docs/runbook.md). Broker outages and
    /// timeouts never count. 0 never quarantines.
    pub quarantine_after: u32,
    /// How long a relay holds the rows it is sending before another relay may take them: if a
    /// replica dies mid-send, its rows wait this long. Keep it above
    /// `kafka.producer.delivery_timeout`, or a slow send may be published twice. (On SQLite a
    /// restarted relay drops its old claims at once.)
    #[serde(with = "humantime_serde")]
    pub claim_timeout: Duration,
    /// How often the relay counts the unpublished rows. In between, the backlog is kept
    /// incrementally (this process's commits added, its relay's acknowledged rows taken off),
    /// so the count only corrects drift and takes in other replicas' rows.
    #[serde(with = "humantime_serde")]
    pub recount_interval: Duration,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            batch_size: 200,
            poll_interval: Duration::from_millis(500),
            max_backlog: 10_000,
            retention: Duration::from_secs(24 * 3600),
            prune_interval: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            quarantine_after: 5,
            claim_timeout: Duration::from_secs(60),
            recount_interval: Duration::from_secs(10),
        }
    }
}

/// Kafka settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port[,host:port]`. Filled from `KAFKA_BOOTSTRAP_SERVERS`.
    pub bootstrap_servers: String,
    /// The client id reported to the broker; defaults to the service name.
    pub client_id: Option<String>,
    /// How topics are created when they are missing.
    pub topics: TopicSettings,
    /// Producer tuning.
    pub producer: ProducerSettings,
    /// Consumer runner tuning.
    pub consumer: ConsumerSettings,
    /// Extra librdkafka properties passed through verbatim (e.g. `security.protocol`).
    pub librdkafka: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            client_id: None,
            topics: TopicSettings::default(),
            producer: ProducerSettings::default(),
            consumer: ConsumerSettings::default(),
            librdkafka: BTreeMap::new(),
        }
    }
}

/// Topic provisioning settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicSettings {
    /// Partitions of a topic created at startup. More partitions allow more parallel consumers.
    pub partitions: i32,
    /// Replication factor of a created topic (1 for a single local broker, 3 in production).
    pub replication_factor: i32,
    /// Whether to create missing topics at startup at all (production clusters often forbid it).
    pub create_missing: bool,
}

impl Default for TopicSettings {
    fn default() -> Self {
        Self {
            partitions: 6,
            replication_factor: 1,
            create_missing: true,
        }
    }
}

/// Producer settings. `acks=all` and idempotence are not settings: the kit always uses them.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProducerSettings {
    /// How long the producer waits to batch records (`linger.ms`).
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// How long a record may wait for delivery, retries included, before it fails.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// Pause before retrying when librdkafka's local queue is full.
    #[serde(with = "humantime_serde")]
    pub queue_full_backoff: Duration,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        Self {
            linger: Duration::from_millis(5),
            delivery_timeout: Duration::from_secs(30),
            queue_full_backoff: Duration::from_millis(20),
        }
    }
}

/// Consumer runner settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerSettings {
    /// Records held at once (running, waiting behind their key or for a `max_rate` slot, or in
    /// retry). Above this the runner pauses its partitions: backpressure instead of unbounded
    /// memory.
    pub max_in_flight: usize,
    /// Most records of one partition handed to a batch handler at once
    /// ([`crate::kafka::consumer::BatchHandler`]): it applies them in one transaction. A
    /// batch is whatever is waiting when the previous batch of the partition ends, so under
    /// light load a batch is one record and adds no latency. Per-record handlers ignore it.
    pub max_batch: usize,
    /// Records per second this runner (one group member) starts at most, to drain a backlog
    /// at a steady pace rather than as fast as the handlers go: load levelling for a slow or
    /// shared dependency. After an idle spell a burst of a tenth of a second's worth (at least
    /// one record) may start at once. A retry of a started record takes no slot. A group of n
    /// members drains at up to n times this. 0, the default, turns the limit off.
    #[serde(deserialize_with = "records_per_second")]
    pub max_rate: f64,
    /// How many nice levels below the service's own priority the consumer runner runs (0 to
    /// 19): the runner and its handlers run on a runtime of their own, two threads named
    /// `spine-consumer` (librdkafka's threads, heartbeats included, keep the normal
    /// priority), so that the edge (HTTP, the outbox relay) keeps
    /// the CPU when the consumers drain a backlog ([`crate::runtime`]). Linux only: the
    /// priority is per thread there. 0 runs the runner on the caller's runtime.
    #[serde(deserialize_with = "nice_level")]
    pub nice: i32,
    /// `max.poll.interval.ms`. tansu needs 10 s or less, or the first group join stalls.
    #[serde(with = "humantime_serde")]
    pub max_poll_interval: Duration,
    /// Longest a member may wait for its partitions, after it subscribed or after a revoke,
    /// before the runner stops with an error (and the process exits for a restart). A group
    /// join answers within about `max_poll_interval` even when the member gets no partition;
    /// a longer wait is a join stuck in librdkafka (seen after the broker froze between
    /// JoinGroup and SyncGroup), which a fresh client clears. 0 turns the watchdog off.
    #[serde(with = "humantime_serde")]
    pub join_timeout: Duration,
    /// `session.timeout.ms`.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// How often stored offsets are committed in the background (`auto.commit.interval.ms`).
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Where a new group starts: `earliest` or `latest`.
    pub auto_offset_reset: String,
    /// How long shutdown waits for running handlers before it commits and leaves.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Retry policy: the attempt budget of `Retryable` errors, and the backoff of both
    /// `Retryable` errors and outages (`Unavailable`, retried without limit).
    pub retry: RetrySettings,
    /// Suffix of the dead-letter topic, appended to the group id (`inventory.dlq`).
    pub dlq_suffix: String,
    /// Longest a single handler attempt may take; a longer one is dropped and counted as an
    /// outage (`Unavailable`: a hung dependency), then retried.
    #[serde(with = "humantime_serde")]
    pub handler_timeout: Duration,
    /// `partition.assignment.strategy`. `cooperative-sticky` moves only the partitions that
    /// change owner in a rebalance, so the other members keep consuming.
    pub assignment_strategy: String,
    /// `group.instance.id`: static membership (KIP-345). A restarted member with the same id
    /// gets its partitions back without a rebalance, within `session_timeout`. Must be unique
    /// per member: the k8s manifests set it to the pod name. Unset: dynamic membership.
    pub group_instance_id: Option<String>,
    /// Test-only fault injection: every n-th record's first attempt panics inside the handler
    /// task (the runner then stops as on a fatal error). 0, the default, turns it off.
    pub inject_panic_every: u64,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            max_in_flight: 256,
            max_batch: 128,
            max_rate: 0.0,
            nice: 10,
            max_poll_interval: Duration::from_secs(10),
            join_timeout: Duration::from_secs(60),
            session_timeout: Duration::from_secs(6),
            commit_interval: Duration::from_secs(1),
            auto_offset_reset: "earliest".into(),
            shutdown_timeout: Duration::from_secs(10),
            retry: RetrySettings::default(),
            dlq_suffix: ".dlq".into(),
            handler_timeout: Duration::from_secs(30),
            assignment_strategy: "cooperative-sticky".into(),
            group_instance_id: None,
            inject_panic_every: 0,
        }
    }
}

/// A rate in records per second: a finite number, 0 or more.
fn records_per_second<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    let rate = f64::deserialize(deserializer)?;
    if rate.is_finite() && rate >= 0.0 {
        Ok(rate)
    } else {
        Err(serde::de::Error::custom(format!(
            "{rate} is not a rate: records per second, a finite number >= 0 (0 turns the limit off)"
        )))
    }
}

/// A nice increment: 0 to [`crate::runtime::MAX_NICE`] (a negative one would need privileges).
fn nice_level<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i32, D::Error> {
    let nice = i32::deserialize(deserializer)?;
    if (0..=crate::runtime::MAX_NICE).contains(&nice) {
        Ok(nice)
    } else {
        Err(serde::de::Error::custom(format!(
            "{nice} is not a nice increment: 0 (the service's own priority) to {}",
            crate::runtime::MAX_NICE
        )))
    }
}

/// Exponential backoff with full jitter, bounded in attempts and in delay.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySettings {
    /// Attempts in all for `Retryable` errors, the first included. After the last one the record
    /// goes to the DLQ. Outages (`Unavailable`) do not count.
    pub max_attempts: u32,
    /// The delay cap for the first retry.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// No retry waits longer than this.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, for a terminal.
    #[default]
    Pretty,
    /// One JSON object a line, for a log pipeline.
    Json,
}

/// Telemetry settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Log format: `pretty` locally, `json` in production.
    pub log_format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info,spine_kit=debug`. `RUST_LOG` wins when set.
    pub log_filter: String,
    /// OTLP/HTTP endpoint for traces. Filled from `OTEL_EXPORTER_OTLP_ENDPOINT`; no exporter
    /// (and no cost) when unset.
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Pretty,
            log_filter: "info".into(),
            otlp_endpoint: None,
        }
    }
}

/// Database settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://FILE?mode=rwc` (the embedded default) or `postgres://…`. Filled from
    /// `DATABASE_URL`. A secret, because Postgres URLs carry passwords.
    pub url: SecretString,
    /// Connection pool size of the edge: the HTTP handlers, the outbox relay and the
    /// service's own periodic reads.
    pub max_connections: u32,
    /// Connection pool size of the spine: the consumer handlers get a pool of their own
    /// ([`crate::db::connect_spine`]), so that an HTTP handler never waits for a connection
    /// behind them. 0 shares the edge's pool. On PostgreSQL a replica opens up to
    /// `max_connections + spine_max_connections` sessions.
    pub spine_max_connections: u32,
    /// SQLite: whether the writers of this process queue at an in-process write gate
    /// (`spine_kit::db::Writer`: one writer at a time, the relay first, then the API, then
    /// the consumers) instead of meeting in SQLite's lock and its busy handler. Unset, the
    /// service decides ([`DatabaseSettings::write_gate_or`]): orders, whose API and relay
    /// write, turns it on; the consumers-only services leave it off, where the benchmark
    /// measured it slower (README, "The benchmark"). No effect on PostgreSQL.
    pub write_gate: Option<bool>,
    /// How long a caller waits for a pooled connection, the health check (a ping) of an idle
    /// one included, before the call fails with a pool timeout (an outage). This is what
    /// bounds a wait on a connection that died silently while idle.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// PostgreSQL `statement_timeout`: the server cancels a statement that runs longer (SQLSTATE
    /// 57014, an outage to the consumer). `0s` leaves the server's own setting. Not used on
    /// SQLite. A migration that needs longer can `SET LOCAL statement_timeout` itself.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// How long a statement waits for a lock another transaction holds before it fails:
    /// PostgreSQL `lock_timeout` (SQLSTATE 55P03) and SQLite's `busy_timeout` (SQLITE_BUSY),
    /// both outages to the consumer. `0s` leaves PostgreSQL's own setting; on SQLite it means
    /// fail at once.
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
    /// PostgreSQL TCP keepalive, idle time before the first probe (`tcp_keepalives_idle`; then
    /// `tcp_keepalives_interval` of a third of it and `tcp_keepalives_count` of 3). sqlx does
    /// not set `SO_KEEPALIVE` on its own sockets nor expose them, so this is the server's
    /// keepalive: it finds a client that vanished and ends its session, releasing its locks.
    /// A client waiting on a dead server is bounded by `statement_timeout` only while the server
    /// lives, and otherwise by `acquire_timeout` (idle connections) and the consumer's
    /// per-attempt handler timeout. `0s` leaves the server's own setting. Not used on SQLite.
    #[serde(with = "humantime_serde")]
    pub tcp_keepalive: Duration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("sqlite://spine.db?mode=rwc"),
            max_connections: 5,
            spine_max_connections: 5,
            write_gate: None,
            acquire_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(5),
            tcp_keepalive: Duration::from_secs(30),
        }
    }
}

impl DatabaseSettings {
    /// These settings with `database.write_gate` set to `gated` unless the operator set it:
    /// a service's own default for the gate.
    #[must_use]
    pub fn write_gate_or(mut self, gated: bool) -> Self {
        self.write_gate.get_or_insert(gated);
        self
    }
}
