//! `backlog-drain`: follows a queued backlog of orders from its release to its last outcome
//! and email, and writes the drain report (see `spine_bench::drain`).
//! Exit codes: 0 drained, 1 not drained in time or a runtime failure, 2 usage error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use spine_bench::drain::{WatchFiles, watch};

/// mimalloc rather than glibc's malloc: with a span, headers and a future per Kafka record,
/// glibc's arenas (their locks, their consolidation) took a third of the kit's CPU per record
/// (README, "Load testing").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const AFTER_HELP: &str = "\
Start it before the backlog is queued (it follows orders.events, inventory.events and \
email.events from their current end), wait for --ready-file, queue the backlog with the \
downstream consumers stopped, wait until --status-file shows every accepted order placed, then \
write `<unix ms> <accepted>` to --release-file and start the consumers. Rates are timed by the \
records' own timestamps, from the release to each path's last fact.";

/// Measures the drain of a queued backlog: orders/s on the outcome path and the email path.
#[derive(Debug, Parser)]
#[command(name = "backlog-drain", version, after_help = AFTER_HELP)]
struct Cli {
    /// Bootstrap servers [default: $KAFKA_BOOTSTRAP_SERVERS, else 127.0.0.1:9092].
    #[arg(long, value_name = "HOST:PORT,...")]
    bootstrap_servers: Option<String>,
    /// Written (empty) once the observer is positioned.
    #[arg(long, value_name = "FILE")]
    ready_file: PathBuf,
    /// Rewritten every 200 ms with {placed, outcomes, emails} as JSON.
    #[arg(long, value_name = "FILE")]
    status_file: PathBuf,
    /// Read for `<release unix ms> <accepted orders>`.
    #[arg(long, value_name = "FILE")]
    release_file: PathBuf,
    /// The longest to wait for the release, in seconds.
    #[arg(long, default_value_t = 1800, value_name = "SECS")]
    release_timeout: u64,
    /// The longest the drain may take after the release, in seconds.
    #[arg(long, default_value_t = 900, value_name = "SECS")]
    timeout: u64,
    /// Where the report (JSON) goes.
    #[arg(long, value_name = "FILE")]
    json: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let bootstrap = cli
        .bootstrap_servers
        .clone()
        .or_else(|| std::env::var("KAFKA_BOOTSTRAP_SERVERS").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "127.0.0.1:9092".to_owned());
    let files = WatchFiles {
        ready: cli.ready_file,
        status: cli.status_file,
        release: cli.release_file,
    };
    let report = match watch(
        &bootstrap,
        &files,
        Duration::from_secs(cli.release_timeout),
        Duration::from_secs(cli.timeout),
    ) {
        Ok(report) => report,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let json = serde_json::to_string_pretty(&report).expect("a report serialises");
    if let Err(err) = std::fs::write(&cli.json, json + "\n") {
        eprintln!("error: cannot write {}: {err}", cli.json.display());
        return ExitCode::FAILURE;
    }
    if report.drained {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "not drained: {} of {} backlog orders with an outcome, {} with an email",
            report.outcome.orders, report.backlog, report.email.orders
        );
        ExitCode::FAILURE
    }
}
