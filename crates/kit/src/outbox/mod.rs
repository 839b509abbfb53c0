//! The transactional outbox: an event is written in the same database transaction as the state
//! it describes, and a [`Relay`] publishes it afterwards. Either both the state and the event
//! exist or neither does; the relay then guarantees the event reaches Kafka at least once, in
//! order per key.
//!
//! - [`Outbox::enqueue`] (or [`Outbox::enqueue_many`]) adds rows inside the caller's
//!   transaction; [`Outbox::committed`] wakes the relay after the commit.
//! - [`Relay`] claims the oldest unpublished row of each key, publishes, and marks each row
//!   published as soon as the broker acknowledged it. A failing key backs off alone; a row
//!   the broker keeps rejecting is [`Quarantined`], holding its key's later rows behind it.
//! - [`Outbox::backlog`] tells the API when to shed load.
//!
//! # Layout
//! - `store`: the table, its migrations, enqueueing, backlog, pruning and the quarantine API;
//! - `claim`: the relay's row lifecycle (claim, mark, record a failure);
//! - `relay`: the relay loop and the choice of which failures count toward the quarantine.

mod claim;
mod relay;
mod store;

pub use relay::{ROW_REJECTION_CODES, Relay, SHUTDOWN_GRACE, rejects_the_row};
pub use store::{Backlog, ENQUEUE_CHUNK, Outbox, Quarantined};
