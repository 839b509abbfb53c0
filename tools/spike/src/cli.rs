//! The command line: flags to a [`Config`], and [`execute`], which runs, prints and writes
//! the report and returns the exit code (0 pass, 1 a threshold missed, 2 usage or setup
//! error).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Parser, ValueEnum};
use spine_kit::settings::KafkaSettings;
use tokio_util::sync::CancellationToken;

use crate::kafka::GroupSpec;
use crate::profile::Profile;
use crate::report::{compact_timestamp, table};
use crate::run::{self, Config};
use crate::verdict::Thresholds;

/// The built-in load shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileKind {
    /// `--rate` for `--duration`.
    Constant,
    /// From `--rate` to `--to-rate` over `--duration`.
    Ramp,
    /// `--rate` for `--baseline`, `--spike-factor` × `--rate` for `--spike`, `--rate` for
    /// `--recovery`.
    Spike,
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 500ms, 10s, 2m)"))
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    let d = duration(text)?;
    if d.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(d)
}

fn non_negative(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|_| "not a number".to_owned())?;
    if !value.is_finite() || value < 0.0 {
        return Err("must be a number of at least 0".into());
    }
    Ok(value)
}

fn positive(text: &str) -> Result<f64, String> {
    let value = non_negative(text)?;
    if value == 0.0 {
        return Err("must be more than 0".into());
    }
    Ok(value)
}

fn share(text: &str) -> Result<f64, String> {
    let value = non_negative(text)?;
    if value > 1.0 {
        return Err("must be between 0 and 1".into());
    }
    Ok(value)
}

fn group(text: &str) -> Result<GroupSpec, String> {
    GroupSpec::parse(text)
}

fn property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err("expected KEY=VALUE, e.g. security.protocol=SASL_SSL".into()),
    }
}

/// `spike`: an open-model load on POST /orders that follows every order to its outcome and
/// email, samples the consumer groups' lag, measures the drain after the spike and checks
/// the result against thresholds.
#[derive(Debug, Parser)]
#[command(
    name = "spike",
    version,
    about = "Open-model load on POST /orders, followed end to end through Kafka",
    after_help = "Exit codes: 0 all thresholds met (or none given), 1 a threshold missed, 2 usage or setup error."
)]
pub struct Args {
    /// The orders API.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    pub base_url: String,
    /// Kafka bootstrap servers [default: $KAFKA_BOOTSTRAP_SERVERS, else 127.0.0.1:9092].
    #[arg(long, value_name = "HOST:PORT")]
    pub bootstrap_servers: Option<String>,
    /// A librdkafka property for the tool's Kafka clients (repeatable), e.g.
    /// security.protocol=SASL_SSL.
    #[arg(long, value_name = "KEY=VALUE", value_parser = property)]
    pub kafka_property: Vec<(String, String)>,
    /// The schema registry, when the services write the Confluent framing
    /// [default: $SPINE__SCHEMAS__REGISTRY__URL].
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,

    /// The load shape.
    #[arg(long, value_enum, default_value_t = ProfileKind::Spike)]
    pub profile: ProfileKind,
    /// A JSON profile file instead of --profile and its flags.
    #[arg(long, value_name = "PATH")]
    pub profile_file: Option<PathBuf>,
    /// Requests per second: the constant rate, the ramp's start, or the spike's baseline
    /// [default: 10].
    #[arg(long, value_name = "PER_SECOND", value_parser = non_negative)]
    pub rate: Option<f64>,
    /// The ramp's final rate (ramp only).
    #[arg(long, value_name = "PER_SECOND", value_parser = non_negative)]
    pub to_rate: Option<f64>,
    /// How long a constant or ramp load lasts [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    pub duration: Option<Duration>,
    /// The spike's rate as a multiple of --rate (spike only) [default: 10].
    #[arg(long, value_name = "K", value_parser = positive)]
    pub spike_factor: Option<f64>,
    /// Time at --rate before the spike (spike only) [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub baseline: Option<Duration>,
    /// How long the spike lasts (spike only) [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    pub spike: Option<Duration>,
    /// Time at --rate after the spike (spike only) [default: 20s].
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub recovery: Option<Duration>,

    /// Requests allowed to wait at once; requests due beyond it are dropped, not delayed.
    #[arg(long, value_name = "N", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_in_flight: u64,
    /// Per-request timeout.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = positive_duration)]
    pub timeout: Duration,
    /// SKUs ordered in rotation (comma-separated or repeated). SKU-1 and SKU-2 hold 100 units
    /// each by default: once sold out, orders are rejected, a legitimate outcome.
    #[arg(
        long,
        value_name = "SKU",
        value_delimiter = ',',
        default_value = "SKU-1,SKU-2"
    )]
    pub sku: Vec<String>,
    /// The share of orders (0 to 1) for SKU-OUT, which no inventory holds, to exercise
    /// rejections.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0, value_parser = share)]
    pub reject_share: f64,
    /// How many distinct customers place the orders.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub customers: u64,

    /// API-only load: no Kafka, so no end-to-end latencies, lag or drain.
    #[arg(long)]
    pub no_e2e: bool,
    /// Consumer groups whose lag is sampled: NAME or NAME:TOPIC+TOPIC, comma-separated.
    #[arg(long, value_name = "GROUPS", value_delimiter = ',', value_parser = group,
          default_value = "orders,inventory,email,analytics")]
    pub groups: Vec<GroupSpec>,
    /// How long after the spike (or the load) the system may take to drain.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = positive_duration)]
    pub drain_timeout: Duration,
    /// Where report.json and chart.svg go [default: spike-report/<UTC timestamp>/].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long, short)]
    pub quiet: bool,

    /// Fail when the worst phase's POST p99 exceeds this many milliseconds.
    #[arg(long, value_name = "MS", value_parser = non_negative)]
    pub max_p99_ms: Option<f64>,
    /// Fail when draining takes longer than this many seconds, or does not happen.
    #[arg(long, value_name = "SECONDS", value_parser = non_negative)]
    pub max_drain_s: Option<f64>,
    /// Fail when (errors + timeouts + 5xx, 503 included) / sent exceeds this share (0 to 1).
    #[arg(long, value_name = "SHARE", value_parser = share)]
    pub max_error_rate: Option<f64>,
    /// Fail when a smaller share (0 to 1) of accepted orders got an outcome and an email.
    #[arg(long, value_name = "SHARE", value_parser = share)]
    pub min_e2e_completion: Option<f64>,
    /// 503 (load shed) answers are not errors for --max-error-rate.
    #[arg(long)]
    pub shed_ok: bool,
}

/// Why the flags make no run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    /// `--help` or `--version`: print this and exit 0.
    Help(String),
    /// A bad flag or combination; the message names the flag. Exit 2.
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> UsageError {
    UsageError::Invalid(format!("error: {}", message.into()))
}

/// Parses the command line (the first item is the program name) into a [`Config`].
pub fn parse<I, T>(args: I) -> Result<Config, UsageError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = Args::try_parse_from(args).map_err(|e| match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
            UsageError::Help(e.render().to_string())
        }
        _ => UsageError::Invalid(e.render().to_string()),
    })?;
    config(args)
}

fn profile(args: &Args) -> Result<Profile, UsageError> {
    let given = |flag: &'static str, set: bool| set.then_some(flag);
    let shape_flags = [
        given("--rate", args.rate.is_some()),
        given("--to-rate", args.to_rate.is_some()),
        given("--duration", args.duration.is_some()),
        given("--spike-factor", args.spike_factor.is_some()),
        given("--baseline", args.baseline.is_some()),
        given("--spike", args.spike.is_some()),
        given("--recovery", args.recovery.is_some()),
    ];
    if let Some(path) = &args.profile_file {
        if let Some(flag) = shape_flags.iter().flatten().next() {
            return Err(invalid(format!(
                "{flag} can't be combined with --profile-file (the file gives the shape)"
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("--profile-file {}: {e}", path.display())))?;
        return Profile::from_json(&text)
            .map_err(|e| invalid(format!("--profile-file {}: {e}", path.display())));
    }
    let allowed: &[&str] = match args.profile {
        ProfileKind::Constant => &["--rate", "--duration"],
        ProfileKind::Ramp => &["--rate", "--to-rate", "--duration"],
        ProfileKind::Spike => &[
            "--rate",
            "--spike-factor",
            "--baseline",
            "--spike",
            "--recovery",
        ],
    };
    if let Some(flag) = shape_flags
        .iter()
        .flatten()
        .find(|flag| !allowed.contains(flag))
    {
        let name = format!("{:?}", args.profile).to_lowercase();
        return Err(invalid(format!(
            "{flag} does not apply to --profile {name} (it takes {})",
            allowed.join(", ")
        )));
    }
    let rate = args.rate.unwrap_or(10.0);
    let duration = args.duration.unwrap_or(Duration::from_secs(30));
    let profile = match args.profile {
        ProfileKind::Constant => Profile::constant(rate, duration),
        ProfileKind::Ramp => {
            let to = args
                .to_rate
                .ok_or_else(|| invalid("--profile ramp needs --to-rate"))?;
            Profile::ramp(rate, to, duration)
        }
        ProfileKind::Spike => Profile::spike(
            rate,
            args.spike_factor.unwrap_or(10.0),
            args.baseline.unwrap_or(Duration::from_secs(10)),
            args.spike.unwrap_or(Duration::from_secs(10)),
            args.recovery.unwrap_or(Duration::from_secs(20)),
        ),
    };
    profile.validate().map_err(|e| invalid(e.0))?;
    Ok(profile)
}

fn config(args: Args) -> Result<Config, UsageError> {
    let profile = profile(&args)?;
    if profile.arrivals() == 0 {
        return Err(invalid("the profile offers no request: raise --rate"));
    }
    if args.no_e2e {
        for (flag, set) in [
            ("--max-drain-s", args.max_drain_s.is_some()),
            ("--min-e2e-completion", args.min_e2e_completion.is_some()),
        ] {
            if set {
                return Err(invalid(format!(
                    "{flag} needs Kafka and can't be used with --no-e2e"
                )));
            }
        }
    }
    let skus: Vec<String> = args
        .sku
        .iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if skus.is_empty() && args.reject_share < 1.0 {
        return Err(invalid("--sku needs at least one SKU"));
    }
    let base_url = args.base_url.trim_end_matches('/').to_owned();
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        return Err(invalid(format!(
            "--base-url must start with http:// or https://, got `{}`",
            args.base_url
        )));
    }
    let mut kafka = KafkaSettings {
        bootstrap_servers: args
            .bootstrap_servers
            .or_else(|| std::env::var("KAFKA_BOOTSTRAP_SERVERS").ok())
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "127.0.0.1:9092".into()),
        ..KafkaSettings::default()
    };
    kafka.librdkafka.extend(args.kafka_property);
    let out_dir = args.out.unwrap_or_else(|| {
        PathBuf::from("spike-report").join(compact_timestamp(SystemTime::now()))
    });
    let registry = args
        .registry
        .or_else(|| std::env::var("SPINE__SCHEMAS__REGISTRY__URL").ok())
        .filter(|url| !url.trim().is_empty());
    Ok(Config {
        base_url,
        kafka,
        registry,
        profile,
        max_in_flight: args.max_in_flight as usize,
        timeout: args.timeout,
        e2e: !args.no_e2e,
        groups: args.groups,
        drain_timeout: args.drain_timeout,
        out_dir,
        skus,
        reject_share: args.reject_share,
        customers: args.customers,
        thresholds: Thresholds {
            max_p99_ms: args.max_p99_ms,
            max_drain_s: args.max_drain_s,
            max_error_rate: args.max_error_rate,
            min_e2e_completion: args.min_e2e_completion,
            shed_ok: args.shed_ok,
        },
        progress: !args.quiet,
    })
}

/// Runs the command line `args` (the first item is the program name): parses, runs, prints
/// the report on stdout, writes `report.json` and `chart.svg`, and returns the exit code:
/// 0 when every threshold holds (or none was given), 1 when one is missed, 2 on a usage or
/// setup error (the message names the flag or what could not be reached).
pub async fn execute<I, T>(args: I, cancel: CancellationToken) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let config = match parse(args) {
        Ok(config) => config,
        Err(UsageError::Help(text)) => {
            print!("{text}");
            return 0;
        }
        Err(UsageError::Invalid(message)) => {
            eprintln!("{}", message.trim_end());
            return 2;
        }
    };
    let report = match run::run(&config, cancel).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let written = report.write(&config.out_dir);
    print!("{}", table::render(&report));
    match written {
        Ok((json, chart)) => println!("\nreport {}\nchart  {}", json.display(), chart.display()),
        Err(e) => {
            eprintln!(
                "error: cannot write the report into {}: {e}",
                config.out_dir.display()
            );
            return 2;
        }
    }
    report.verdict.exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(args: &[&str]) -> Config {
        parse(std::iter::once("spike").chain(args.iter().copied())).unwrap()
    }

    fn parse_err(args: &[&str]) -> String {
        match parse(std::iter::once("spike").chain(args.iter().copied())) {
            Err(UsageError::Invalid(message)) => message,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn the_defaults_make_a_spike_run_with_every_group() {
        let config = parse_ok(&[]);
        assert_eq!(config.profile.kind, "spike");
        assert_eq!(config.profile.arrivals(), 10 * 10 + 100 * 10 + 10 * 20);
        assert_eq!(config.base_url, "http://127.0.0.1:8080");
        assert_eq!(config.max_in_flight, 2000);
        assert_eq!(config.groups, GroupSpec::defaults());
        assert_eq!(config.skus, ["SKU-1", "SKU-2"]);
        assert!(config.e2e && config.progress && config.thresholds.is_empty());
        assert!(config.out_dir.starts_with("spike-report"));
    }

    #[test]
    fn the_spike_flags_from_the_issue_parse() {
        let config = parse_ok(&[
            "--profile",
            "spike",
            "--rate",
            "50",
            "--spike-factor",
            "10",
            "--baseline",
            "10s",
            "--spike",
            "10s",
            "--recovery",
            "20s",
            "--max-p99-ms",
            "250",
            "--max-drain-s",
            "30",
            "--max-error-rate",
            "0.01",
            "--min-e2e-completion",
            "0.99",
            "--shed-ok",
            "--groups",
            "orders,audit:orders.events+email.events",
            "--sku",
            "SKU-1",
            "--reject-share",
            "0.1",
            "--kafka-property",
            "security.protocol=SSL",
        ]);
        let rates: Vec<f64> = config.profile.phases.iter().map(|p| p.from_rate).collect();
        assert_eq!(rates, [50.0, 500.0, 50.0]);
        assert_eq!(config.thresholds.max_p99_ms, Some(250.0));
        assert_eq!(config.thresholds.max_drain_s, Some(30.0));
        assert!(config.thresholds.shed_ok);
        assert_eq!(config.groups[1].name, "audit");
        assert_eq!(config.kafka.librdkafka["security.protocol"], "SSL");
    }

    #[test]
    fn constant_and_ramp_profiles_parse() {
        let constant = parse_ok(&["--profile", "constant", "--rate", "5", "--duration", "2s"]);
        assert_eq!(constant.profile.arrivals(), 10);
        let ramp = parse_ok(&[
            "--profile",
            "ramp",
            "--rate",
            "0",
            "--to-rate",
            "100",
            "--duration",
            "10s",
        ]);
        assert_eq!(ramp.profile.arrivals(), 500);
    }

    #[test]
    fn a_bad_flag_value_names_the_flag() {
        assert!(parse_err(&["--rate", "fast"]).contains("--rate"));
        assert!(parse_err(&["--baseline", "10 parsecs"]).contains("--baseline"));
        assert!(parse_err(&["--reject-share", "1.5"]).contains("--reject-share"));
        assert!(parse_err(&["--max-error-rate=-1"]).contains("--max-error-rate"));
        assert!(parse_err(&["--max-in-flight", "0"]).contains("--max-in-flight"));
        assert!(parse_err(&["--profile", "sawtooth"]).contains("--profile"));
        assert!(parse_err(&["--groups", "audit:"]).contains("--groups"));
        assert!(parse_err(&["--kafka-property", "nonsense"]).contains("--kafka-property"));
        assert!(parse_err(&["--base-url", "localhost:8080"]).contains("--base-url"));
        assert!(parse_err(&["--frobnicate"]).contains("--frobnicate"));
    }

    #[test]
    fn flags_that_do_not_fit_the_profile_are_named() {
        assert!(
            parse_err(&["--profile", "constant", "--spike-factor", "3"])
                .contains("--spike-factor does not apply to --profile constant")
        );
        assert!(
            parse_err(&["--duration", "5s"])
                .contains("--duration does not apply to --profile spike")
        );
        assert!(parse_err(&["--profile", "ramp", "--rate", "1"]).contains("--to-rate"));
        assert!(parse_err(&["--no-e2e", "--max-drain-s", "5"]).contains("--max-drain-s"));
        assert!(
            parse_err(&["--no-e2e", "--min-e2e-completion", "0.9"])
                .contains("--min-e2e-completion")
        );
        assert!(parse_err(&["--profile", "constant", "--rate", "0"]).contains("--rate"));
    }

    #[test]
    fn a_profile_file_replaces_the_shape_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile.json");
        std::fs::write(
            &path,
            r#"{"drain_after": "peak", "phases": [
                {"name": "warm", "duration": "2s", "rate": 5},
                {"name": "peak", "duration": "1s", "rate": 20}]}"#,
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let config = parse_ok(&["--profile-file", file]);
        assert_eq!(config.profile.arrivals(), 30);
        assert!(
            parse_err(&["--profile-file", file, "--rate", "3"])
                .contains("--rate can't be combined with --profile-file")
        );
        std::fs::write(
            &path,
            r#"{"phases": [{"duration": "2 fortnights", "rate": 5}]}"#,
        )
        .unwrap();
        let message = parse_err(&["--profile-file", file]);
        assert!(message.contains("--profile-file") && message.contains("phases[0].duration"));
        assert!(parse_err(&["--profile-file", "/no/such/file.json"]).contains("--profile-file"));
    }

    #[test]
    fn help_is_not_an_error() {
        assert!(matches!(
            parse(["spike", "--help"]),
            Err(UsageError::Help(text)) if text.contains("--max-p99-ms")
        ));
    }

    #[tokio::test]
    async fn a_usage_error_exits_2() {
        let code = execute(["spike", "--rate", "-3"], CancellationToken::new()).await;
        assert_eq!(code, 2);
    }
}
