//! `spike`, spine's load generator: an open-model load on `POST /orders` (requests start on
//! an arrival schedule whether or not earlier ones finished, and are timed from their
//! intended start), with every accepted order followed through Kafka to its outcome and its
//! email, the consumer groups' lag sampled every second, the drain after the spike timed,
//! and the result held against thresholds (exit 0 pass, 1 a threshold missed, 2 usage or
//! setup error).
//!
//! ```no_run
//! # async fn example() {
//! let code = spine_spike::cli::execute(
//!     ["spike", "--profile", "spike", "--rate", "50", "--spike-factor", "10", "--max-p99-ms", "250"],
//!     tokio_util::sync::CancellationToken::new(),
//! )
//! .await;
//! # }
//! ```
//!
//! # Layout
//! - [`profile`]: load shapes (constant, ramp, spike, JSON file) and their arrival schedule;
//! - [`load`]: request bodies and the open-model driver;
//! - [`record`]: POST counts and HDR histograms per phase and per second; the end-to-end
//!   tracker matching orders with their facts;
//! - [`kafka`]: the tool's own reader of outcome and email facts, and the lag sampler;
//! - [`drain`]: when the system has worked off the spike;
//! - [`report`]: the report value, as a table, JSON and an SVG chart;
//! - [`verdict`]: thresholds, checks and the exit code;
//! - [`run`]: one run from start to report;
//! - [`cli`]: flags to a [`run::Config`], and [`cli::execute`], what `main` calls.

pub mod cli;
pub mod drain;
pub mod kafka;
pub mod load;
pub mod profile;
pub mod record;
pub mod report;
pub mod run;
pub mod verdict;

pub use cli::execute;
pub use run::{Config, run};
