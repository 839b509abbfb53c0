//! The inventory service's tests: the real service on port 0, a fresh database per test (SQLite
//! and PostgreSQL), the real broker; and the batch handler called directly (`batches`).

mod support;

mod batches;
mod poison;
mod reservations;
mod stock;
