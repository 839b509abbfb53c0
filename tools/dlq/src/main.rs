//! `spine-dlq`: list, show, replay and park dead-lettered records. Argument parsing only; the
//! work is in the library. Exit codes: 0 success, 1 runtime failure, 2 usage error.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use spine_dlq::{Dlq, DlqError, Filter, Position, ReplayOptions, commands, filter};

const AFTER_HELP: &str = "\
Replaying is safe: a record goes back to its ORIGINAL topic with its original key and headers \
(event-id included) plus replay-count, so the same consumers and their inboxes handle it and an \
effect already applied is not applied twice. Replays are remembered: the committed offsets of the \
group spine-dlq.<dlq>.replay mark what was replayed, so a rerun skips it (\"skipped N already \
replayed\"; --again replays it anyway). An unfiltered replay moves that position over everything it \
handled; a filtered one only over records it replayed in a row, never past a record it left out. \
A record whose headers carry replay-count >= 1 \
failed again after a replay: list marks it PARKED-CANDIDATE, replay skips it unless --force, and \
park moves it to <dlq>.parked.

Times (--since/--until) are Unix milliseconds, RFC 3339 in UTC (2026-11-23T02:00:00Z), or a \
duration ago (90m, 2h). They compare with dlq-failed-at; --since is inclusive, --until exclusive.

Exit codes: 0 success, 1 runtime failure (broker, publish), 2 usage error (bad arguments, \
unknown DLQ topic, no record at a position).";

/// Inspect and replay dead-lettered records.
#[derive(Debug, Parser)]
#[command(name = "spine-dlq", version, after_help = AFTER_HELP)]
struct Cli {
    /// Bootstrap servers [default: $KAFKA_BOOTSTRAP_SERVERS, else 127.0.0.1:9092].
    #[arg(long, global = true, value_name = "HOST:PORT,...")]
    brokers: Option<String>,
    /// The DLQ topic.
    #[arg(long, global = true, value_name = "TOPIC")]
    dlq: Option<String>,
    /// The consumer group whose DLQ (`<group>.dlq`) to use.
    #[arg(long, global = true, value_name = "GROUP")]
    group: Option<String>,
    /// A Confluent-compatible schema registry, to decode records in Confluent framing
    /// [default: $SPINE__SCHEMAS__REGISTRY__URL].
    #[arg(long, global = true, value_name = "URL")]
    registry: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One line per record: position, origin, key, reason, attempts, replays, age, event, error.
    List {
        #[command(flatten)]
        filters: Filters,
        /// Also list records already parked.
        #[arg(long)]
        include_parked: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// One record in full: headers and the decoded value (hex when undecodable).
    Show {
        /// `<partition>:<offset>` in the DLQ.
        position: String,
    },
    /// Re-publish records to their original topics (explicit positions and/or filters).
    Replay {
        /// `<partition>:<offset>` positions in the DLQ (none: every record the filters match).
        positions: Vec<String>,
        #[command(flatten)]
        filters: Filters,
        /// Records per second, at most.
        #[arg(long, default_value_t = 10)]
        rate: u32,
        /// Print what would be replayed; publish nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replay records that already failed after a replay too.
        #[arg(long)]
        force: bool,
        /// Replay records an earlier replay already replayed too.
        #[arg(long)]
        again: bool,
    },
    /// Move records to `<dlq>.parked`: the given positions, else every PARKED-CANDIDATE the
    /// filters match.
    Park {
        /// `<partition>:<offset>` positions in the DLQ.
        positions: Vec<String>,
        #[command(flatten)]
        filters: Filters,
    },
}

#[derive(Debug, Args)]
struct Filters {
    /// Only records consumed from this original topic.
    #[arg(long)]
    topic: Option<String>,
    /// Only records whose dlq-error contains this (case-insensitive).
    #[arg(long, value_name = "SUBSTRING")]
    error: Option<String>,
    /// Only records with this key.
    #[arg(long)]
    key: Option<String>,
    /// Only records dead-lettered at or after this time.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only records dead-lettered before this time.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
}

impl Filters {
    fn build(self, positions: &[String]) -> Result<Filter, DlqError> {
        let now = spine_dlq::record::now_millis();
        let time = |t: Option<String>| t.map(|t| filter::parse_time(&t, now)).transpose();
        Ok(Filter {
            topic: self.topic,
            error: self.error,
            key: self.key,
            since_ms: time(self.since)?,
            until_ms: time(self.until)?,
            positions: positions
                .iter()
                .map(|p| p.parse())
                .collect::<Result<_, _>>()?,
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // clap exits 0 for --help/--version and 2 for bad arguments.
        Err(err) => err.exit(),
    };
    // Replays export a span linked to the original trace when OTLP is configured.
    let telemetry = spine_kit::settings::TelemetrySettings {
        log_filter: "warn".into(),
        otlp_endpoint: std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty()),
        ..Default::default()
    };
    let _telemetry = match spine_kit::telemetry::init_telemetry(
        "spine-dlq",
        env!("CARGO_PKG_VERSION"),
        &telemetry,
    ) {
        Ok(guard) => Some(guard),
        Err(err) => {
            eprintln!("spine-dlq: tracing disabled: {err}");
            None
        }
    };
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("spine-dlq: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), DlqError> {
    let registry = spine_kit::settings::RegistrySettings {
        url: cli
            .registry
            .or_else(|| std::env::var("SPINE__SCHEMAS__REGISTRY__URL").ok()),
        ..Default::default()
    };
    spine_kit::schemas::connect(&registry).map_err(|e| DlqError::Usage(e.to_string()))?;
    let dlq = Dlq::new(cli.brokers, cli.dlq, cli.group)?;
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::List {
            filters,
            include_parked,
            json,
        } => {
            let filter = filters.build(&[])?;
            commands::list(&dlq, &filter, include_parked, json, &mut out).await?;
        }
        Command::Show { position } => {
            let position: Position = position.parse()?;
            commands::show(&dlq, position, &mut out).await?;
        }
        Command::Replay {
            positions,
            filters,
            rate,
            dry_run,
            force,
            again,
        } => {
            let filter = filters.build(&positions)?;
            let options = ReplayOptions {
                rate,
                dry_run,
                force,
                again,
            };
            commands::replay(&dlq, &filter, &options, &mut out).await?;
        }
        Command::Park { positions, filters } => {
            let filter = filters.build(&positions)?;
            commands::park(&dlq, &filter, &mut out).await?;
        }
    }
    out.flush()?;
    Ok(())
}
