//! The analytics service's tests, on SQLite and PostgreSQL, against the real broker; and the
//! batch handler called directly (`batches`).

mod aggregates;
mod batches;
