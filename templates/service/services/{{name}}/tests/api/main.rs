//! The {{name}} service's tests: the real service on port 0, a fresh database per test (SQLite
//! and PostgreSQL), the real broker.

mod support;

mod batch;
mod framing;
mod orders;
mod poison;
mod read;
