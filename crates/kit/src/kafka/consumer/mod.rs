//! The consumer runner and what handlers need: records, classified errors, the DLQ format.
//!
//! See [`ConsumerRunner`] for the delivery guarantee.

mod context;
pub mod dlq;
pub mod handler;
mod metrics;
mod process;
mod rate;
pub mod retry;
mod runner;
mod shared;
pub mod tracker;
mod workers;

pub use dlq::DeadLetterReason;
pub use handler::{Batch, BatchHandler, BatchRecord, Batched, Handler, HandlerError, Record};
pub use runner::{ConsumerRunner, RunnerError, dlq_topic};
