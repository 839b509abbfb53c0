//! `spine-dlq`: the operator's tool for dead-letter topics. It lists what a consumer group
//! gave up on, shows one record in full (its value decoded through the schema catalog),
//! replays records to their original topics once the cause is fixed, and parks those that
//! fail again after a replay.
//!
//! Replaying is safe because it goes back through the front door: the record returns to its
//! original topic with its original key and headers (`event-id` included), so the same
//! consumers and their inboxes handle it, and an effect already applied is not applied again.
//! A replay is also remembered: the committed offsets of the tool's own group
//! `spine-dlq.<dlq>.replay` mark what was replayed, so a rerun replays 0 and says it skipped
//! them (`--again` replays them anyway; the inbox still applies an effect once).
//!
//! # Layout
//! - [`record`]: [`DlqRecord`] (a DLQ record with typed `dlq-*` headers), [`Position`]
//!   (`<partition>:<offset>`), and the `replay-count`/`parked-*` header names;
//! - [`read`]: scanning a DLQ from its start up to its high watermarks with an assigned
//!   consumer (no group), and finding what was parked;
//! - [`filter`]: pure selection by original topic, error, key, time and position;
//! - [`show`]: the `list` line and JSON, the full `show` view, Avro-to-JSON and hex dumps;
//! - [`replay`]: building replayed and parked records, publishing them, the rate limiter;
//! - [`position`]: the replay position (what was already replayed) in a committed group;
//! - [`commands`]: the `list`, `show`, `replay` and `park` commands over a [`commands::Dlq`];
//! - [`error`]: [`DlqError`], usage errors (exit 2) versus runtime failures (exit 1).

pub mod commands;
pub mod error;
pub mod filter;
pub mod position;
pub mod read;
pub mod record;
pub mod replay;
pub mod show;

pub use commands::Dlq;
pub use error::DlqError;
pub use filter::Filter;
pub use record::{DlqRecord, Position};
pub use replay::{ReplayOptions, ReplayReport};
