//! The orders service's tests: the real service on port 0, a fresh database per test (SQLite
//! and PostgreSQL), the real broker (librdkafka's mock cluster for the outage).

mod support;

mod batch;
mod contract;
mod idempotency;
mod outage;
mod reactions;
