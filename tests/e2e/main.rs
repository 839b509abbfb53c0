//! End-to-end tests against the real broker (`scripts/broker start` runs a local one).

mod evolution;
mod flow;
mod traces;
