//! `kit-throughput`: argument parsing, telemetry and output; the measuring is in the library.
//! Exit codes: 0 success, 1 runtime failure (broker, timeout), 2 usage error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use spine_bench::report::{Report, table};
use spine_bench::{Options, run};
use spine_kit::log_format::{RecordContextLayer, TraceIdLayer, ansi_wanted, fmt_layer};
use spine_kit::settings::{KafkaSettings, LogFormat, TelemetrySettings};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// mimalloc rather than glibc's malloc: with a span, headers and a future per Kafka record,
/// glibc's arenas (their locks, their consolidation) took a third of the kit's CPU per record
/// (README, "Load testing").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const AFTER_HELP: &str = "\
Measures, on one broker in one run with one message size, the msgs/s of plain rdkafka clients \
(the physical limit) and of the kit doing the same work, and reports the kit's share of each: \
produce pre-encoded bytes (raw producer vs the relay's Publisher path), produce with an encode \
per event (both call spine_events::encode), consume without decoding (raw consumer vs a \
ConsumerRunner whose handler does nothing with the bytes) and consume with a decode per record \
(both call spine_events::decode), each consume work on the runner's per-record path (a Handler, \
as email runs) and on its batch path (Batched::new of a BatchHandler, as orders, inventory and \
analytics run). Rates are medians over --rounds; raw and kit alternate which \
runs first. Consume rates run from the first record received to the last, so group joins are \
not counted. Progress goes to stderr, the table to stdout.";

/// Throughput of the kit's producer and consumer runner against plain rdkafka clients.
#[derive(Debug, Parser)]
#[command(name = "kit-throughput", version, after_help = AFTER_HELP)]
struct Cli {
    /// Records per measurement.
    #[arg(long, default_value_t = 200_000, value_name = "N")]
    records: usize,
    /// Bootstrap servers [default: $KAFKA_BOOTSTRAP_SERVERS, else 127.0.0.1:9092].
    #[arg(long, value_name = "HOST:PORT,...")]
    bootstrap_servers: Option<String>,
    /// Run every path once on a few records before timing (`--warmup=false` to skip).
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    warmup: bool,
    /// Measured rounds; the report takes the median.
    #[arg(long, default_value_t = 3, value_name = "N")]
    rounds: usize,
    /// Sends the kit path keeps unacknowledged at once.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    window: usize,
    /// Telemetry installed around the kit, as in a service: `traced` (tracing on, spans built
    /// but not exported), `logs` (no OTLP endpoint) or `none` (the kit's code alone).
    #[arg(long, value_enum, default_value_t = Telemetry::Traced)]
    telemetry: Telemetry,
    /// The longest one measurement may take, in seconds.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    timeout: u64,
    /// Measure only these paths (both raw and kit); the other rows stay empty.
    #[arg(long, value_enum, value_name = "PATHS")]
    only: Option<Only>,
    /// The kit consumer's `max_in_flight` [default: the kit's default].
    #[arg(long, value_name = "N")]
    max_in_flight: Option<usize>,
    /// The kit consumer's `max_batch` on the batch path [default: the kit's default].
    #[arg(long, value_name = "N")]
    max_batch: Option<usize>,
    /// The kit consumer's `kafka.consumer.nice`: how many nice levels below this process its
    /// dispatcher and handlers run. 0, the default, runs them at the raw consumer's priority,
    /// like for like; a service runs them at the kit's default (10), which on a busy machine
    /// (the broker on the same cores) leaves them only the CPU the rest does not want.
    #[arg(long, default_value_t = 0, value_name = "N")]
    consumer_nice: i32,
    /// Also write the report as a JSON object to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// A subset of the paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Only {
    /// Raw and kit produce.
    Produce,
    /// Raw and kit consume (the topic is prefilled by the kit, untimed).
    Consume,
}

/// What runs around the kit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Telemetry {
    /// A service with tracing on: `init_telemetry`'s layers (filter from `RUST_LOG`, default
    /// `info`; OpenTelemetry; trace ids for logs; the pretty log format) and the Prometheus
    /// recorder, with a tracer provider that has no exporter. Records carry a `traceparent`.
    Traced,
    /// A service with no OTLP endpoint: `init_telemetry`'s log layer and the Prometheus
    /// recorder, no OpenTelemetry (records carry no `traceparent`).
    Logs,
    /// No subscriber and no metrics recorder: spans and metrics are no-ops.
    None,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let _telemetry = match init_telemetry(cli.telemetry) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut kafka = KafkaSettings {
        bootstrap_servers: cli
            .bootstrap_servers
            .clone()
            .or_else(|| std::env::var("KAFKA_BOOTSTRAP_SERVERS").ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| KafkaSettings::default().bootstrap_servers),
        ..KafkaSettings::default()
    };
    if let Some(max_in_flight) = cli.max_in_flight {
        kafka.consumer.max_in_flight = max_in_flight;
    }
    if let Some(max_batch) = cli.max_batch {
        kafka.consumer.max_batch = max_batch;
    }
    if !(0..=spine_kit::runtime::MAX_NICE).contains(&cli.consumer_nice) {
        eprintln!(
            "error: --consumer-nice must be 0 to {}",
            spine_kit::runtime::MAX_NICE
        );
        return ExitCode::from(2);
    }
    kafka.consumer.nice = cli.consumer_nice;
    let options = Options {
        kafka,
        records: cli.records,
        rounds: cli.rounds,
        warmup: cli.warmup,
        produce: cli.only != Some(Only::Consume),
        consume: cli.only != Some(Only::Produce),
        window: cli.window,
        timeout: Duration::from_secs(cli.timeout),
    };
    let outcome = match run(&options).await {
        Ok(outcome) => outcome,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let report = Report::new(outcome.size.total(), cli.records as u64, &outcome.rounds);
    let context = format!(
        "{} partitions, kit window {}, max_in_flight {}, max_batch {}, consumer nice {}, telemetry {:?}, broker {}",
        options.kafka.topics.partitions,
        options.window,
        options.kafka.consumer.max_in_flight,
        options.kafka.consumer.max_batch,
        options.kafka.consumer.nice,
        cli.telemetry,
        options.kafka.bootstrap_servers
    )
    .to_lowercase();
    print!(
        "{}",
        table(&report, &outcome.rounds, &outcome.size, &context)
    );
    if let Some(path) = &cli.json {
        let json = serde_json::to_string_pretty(&report).expect("a report serialises");
        if let Err(err) = std::fs::write(path, json + "\n") {
            eprintln!("error: cannot write {}: {err}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Keeps the installed telemetry alive for the run.
struct TelemetryGuard {
    _provider: Option<SdkTracerProvider>,
}

/// Installs the chosen telemetry: `spine_kit::telemetry::init_telemetry`'s layers, one for
/// one, with two differences that do not change the per-record cost: logs go to stderr (stdout
/// is the table), and `Traced` gets a tracer provider with no exporter, which `init_telemetry`
/// cannot build (it adds OpenTelemetry only with an OTLP endpoint, and exporting is not what
/// is measured here).
fn init_telemetry(telemetry: Telemetry) -> anyhow::Result<TelemetryGuard> {
    if telemetry == Telemetry::None {
        return Ok(TelemetryGuard { _provider: None });
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(TelemetrySettings::default().log_filter)?,
    };
    let provider = (telemetry == Telemetry::Traced).then(|| SdkTracerProvider::builder().build());
    let otel = provider
        .as_ref()
        .map(|p| spine_kit::telemetry::otel_layer(p.tracer("spine-bench")));
    let ids = otel.is_some().then(TraceIdLayer::default);
    // The services' log layers, on stderr: a traced run pays what a service pays.
    let ansi = ansi_wanted(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let fmt = fmt_layer(LogFormat::Pretty, ansi, std::io::stderr);
    tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(ids)
        .with(RecordContextLayer)
        .with(fmt)
        .try_init()?;
    let _ = spine_kit::telemetry::metrics_handle();
    Ok(TelemetryGuard {
        _provider: provider,
    })
}
