//! spine-events' integration tests: one binary, one module per concern.

mod catalog;
mod codec;
mod compat;
mod framing;
mod support;
