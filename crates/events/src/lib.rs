//! spine's facts: typed events, the schema catalog, and the Avro codec that puts them on Kafka.
//!
//! Schemas live in `schemas/<EventName>.v<N>.avsc` at the workspace root and are the source of
//! truth. This crate embeds every one of them at compile time, gives each event a typed Rust
//! struct for its latest version, and encodes events as Avro single-object encoding (magic,
//! CRC-64-AVRO fingerprint of the writer's schema, Avro binary datum) with no registry.
//! Readers resolve data written with any known version of the same event to their own version.
//!
//! ```
//! use spine_events::orders::{LineItem, OrderPlaced};
//! use spine_events::{Event, decode, encode, peek};
//!
//! let placed = OrderPlaced::new(
//!     uuid::Uuid::now_v7(),
//!     "customer-1",
//!     "ada@example.com",
//!     vec![LineItem::new("SKU-1", 2, 1_250)],
//!     "EUR",
//! );
//! let bytes = encode(&placed)?;
//! assert_eq!(peek(&bytes)?.name(), OrderPlaced::NAME);
//! assert_eq!(decode::<OrderPlaced>(&bytes)?, placed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! - [`event`]: the [`Event`] trait every fact implements, and id/clock helpers.
//! - [`orders`], [`inventory`], [`email`]: one module per producing service with its typed
//!   facts; [`orders::v1`] pins an old version for compatibility tests.
//! - [`catalog`](mod@catalog): the embedded schemas, parsed once, looked up by fingerprint or by
//!   (name, version).
//! - [`codec`]: [`encode`], [`decode`] and [`peek`] in Avro single-object encoding or
//!   Confluent's registry framing ([`Framing`]).
//! - [`compat`]: the schema gate (full compatibility between versions, naming, numbering),
//!   run by `tools/schema-check`.
//! - [`naming`]: the rule that an event name states a fact.
//! - [`file_name`]: `<EventName>.v<N>.avsc`, shared with `build.rs`.
//! - [`error`]: [`SchemaError`], [`EncodeError`] and [`DecodeError`].

pub mod catalog;
pub mod codec;
pub mod compat;
pub mod email;
pub mod error;
pub mod event;
pub mod file_name;
pub mod inventory;
pub mod naming;
pub mod orders;

pub use catalog::{Catalog, CatalogEntry, catalog};
pub use codec::{CONTENT_TYPE, Framing, decode, encode, peek};
pub use error::{DecodeError, EncodeError, SchemaError};
pub use event::Event;
