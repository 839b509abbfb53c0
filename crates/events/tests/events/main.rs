//! spine-events' integration tests: one binary, one module per concern.

mod catalog;
mod codec;
mod compat;
mod support;
