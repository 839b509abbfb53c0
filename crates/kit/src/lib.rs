//! spine's Kafka kit: what every service needs, written once.
//!
//! # Layout
//! - [`config`]: layered settings loading (defaults, YAML, `SPINE__…` and standard env vars);
//! - [`settings`]: the typed settings structs services embed;
//! - [`telemetry`]: logs, OTLP traces and the Prometheus `/metrics` router;
//! - [`shutdown`]: Ctrl-C/SIGTERM and the task [`shutdown::Supervisor`];
//! - [`kafka`]: client config, headers and trace propagation, topic provisioning, the
//!   [`kafka::Publisher`] and the [`kafka::consumer::ConsumerRunner`];
//! - [`db`]: SQLite or PostgreSQL pools behind one URL;
//! - [`inbox`]: the idempotency record that makes at-least-once delivery safe.

pub mod config;
pub mod db;
pub mod inbox;
pub mod kafka;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

pub use settings::KitSettings;
