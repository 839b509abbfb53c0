//! The email service's tests: the real service on port 0, a fresh database per test (SQLite
//! and PostgreSQL), the real broker, and a real SMTP server (aiosmtpd) per test, in `tls`
//! serving STARTTLS or implicit TLS with a certificate the test makes, and AUTH.

mod support;

mod delivery;
mod file_transport;
mod idempotency;
mod outage;
mod recording;
mod tls;
