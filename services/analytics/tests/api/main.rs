//! The analytics service's tests, on SQLite and PostgreSQL, against the real broker.

mod aggregates;
