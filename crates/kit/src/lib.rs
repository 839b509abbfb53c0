//! spine's Kafka kit: what every service needs, written once.
//!
//! # Layout
//! - [`config`]: layered settings loading (defaults, YAML, `SPINE__…` and standard env vars);
//! - [`settings`]: the typed settings structs services embed;
//! - [`telemetry`]: logs, OTLP traces and the Prometheus `/metrics` router;
//! - [`log_format`]: log lines (pretty or JSON) that carry the trace id and, inside a Kafka
//!   span, the record's topic, partition, offset and key;
//! - [`shutdown`]: Ctrl-C/SIGTERM and the task [`shutdown::Supervisor`];
//! - [`runtime`]: the lower-priority runtime the consumer runners run on
//!   (`kafka.consumer.nice`);
//! - [`kafka`]: client config, headers and trace propagation, topic provisioning, the
//!   [`kafka::Publisher`], the [`kafka::consumer::ConsumerRunner`] and their spans
//!   ([`kafka::spans`], the OpenTelemetry messaging conventions);
//! - [`http`]: the per-request server span and latency histogram;
//! - [`db`]: SQLite or PostgreSQL pools behind one URL, and the [`db::Writer`] every write
//!   goes through (SQLite's in-process write gate, the edge's writers first);
//! - [`inbox`]: the idempotency record that makes at-least-once delivery safe;
//! - [`outbox`]: the transactional outbox and its relay;
//! - [`schemas`]: the Avro framing on the wire and the Confluent-compatible schema registry;
//! - [`testing`]: a fresh SQLite or PostgreSQL database per test, a private broker per test,
//!   an in-process Confluent-compatible schema registry.

pub mod config;
pub mod db;
pub mod http;
pub mod inbox;
pub mod kafka;
pub mod log_format;
pub mod outbox;
pub mod runtime;
pub mod schemas;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod testing;

pub use settings::KitSettings;
