//! What a run records: POST outcomes and latencies per phase and per second
//! ([`http::Recorder`]), each accepted order's way to its outcome and email
//! ([`e2e::Tracker`]), and the HDR histograms both use ([`latency`]).

pub mod e2e;
pub mod http;
pub mod latency;

pub use e2e::{E2ePhase, Fact, Tracker};
pub use http::{Counts, PhaseRecord, Recorder, Records, RequestResult, SecondPoint};
pub use latency::LatencySummary;
