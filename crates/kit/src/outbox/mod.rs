//! The transactional outbox: an event is written in the same database transaction as the state
//! it describes, and a [`Relay`] publishes it afterwards. Either both the state and the event
//! exist or neither does; the relay then guarantees the event reaches Kafka at least once, in
//! order per key.
//!
//! - [`Outbox::enqueue`] adds a row inside the caller's transaction; [`Outbox::committed`]
//!   wakes the relay after the commit.
//! - [`Relay`] claims the oldest unpublished row of each key, publishes, and marks rows
//!   published only after the broker acknowledged them.
//! - [`Outbox::backlog`] tells the API when to shed load.

mod relay;
mod store;

pub use relay::Relay;
pub use store::{Backlog, Outbox};
