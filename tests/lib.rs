//! End-to-end tests across spine's crates (and, as they arrive, its services), run against the
//! real broker named by `KAFKA_BOOTSTRAP_SERVERS`. The tests live in `e2e/`; this library is
//! empty.
//!
//! # Layout
//! - `e2e/main.rs`: the one test binary;
//! - `e2e/evolution.rs`: typed facts across the wire, old and new readers;
//! - `e2e/traces.rs`: one trace per order across the four service processes, checked with an
//!   OTLP/HTTP collector the test runs itself;
//! - `e2e/flow.rs`: all four services on a broker of their own, one order confirmed and one
//!   rejected, followed to their emails and the analytics.
