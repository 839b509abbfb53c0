//! The kit's integration tests. Everything except `mock_faults` runs against the real broker
//! named by `KAFKA_BOOTSTRAP_SERVERS` (default 127.0.0.1:9092; `scripts/broker start` runs one).

mod support;

mod backpressure;
mod batch;
mod delivery;
mod dlq;
mod faults;
mod inbox;
mod mock_faults;
mod ordering;
mod outbox;
mod priority;
mod rate;
mod registry;
mod schemas;
mod spans;
