//! One run: the Kafka side positioned first, then the load, a tick every second (series,
//! progress line, drain bookkeeping), the wait for the drain, and the report.

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use spine_kit::settings::KafkaSettings;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::drain::DrainTracker;
use crate::kafka::{
    GroupSpec, KafkaSetupError, LagSample, LagSampler, OutcomeReader, event_topics,
};
use crate::load::{self, Bodies, Sinks, Target};
use crate::profile::{Phase, Profile};
use crate::record::{Recorder, Tracker};
use crate::report::{Inputs, Report};
use crate::verdict::Thresholds;

/// Everything a run needs, as the flags give it.
#[derive(Debug, Clone)]
pub struct Config {
    /// The orders API, e.g. `http://127.0.0.1:8080`.
    pub base_url: String,
    /// The broker (bootstrap servers and passthrough librdkafka properties).
    pub kafka: KafkaSettings,
    /// The schema registry whose ids the outcome reader learns (Confluent framing), if any.
    pub registry: Option<String>,
    /// The load shape.
    pub profile: Profile,
    /// Requests allowed to wait at once; beyond it, due requests are dropped.
    pub max_in_flight: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Whether to follow orders and lag on Kafka (`--no-e2e` turns it off).
    pub e2e: bool,
    /// The consumer groups whose lag is sampled.
    pub groups: Vec<GroupSpec>,
    /// How long after the reference the drain may take.
    pub drain_timeout: Duration,
    /// Where `report.json` and `chart.svg` go.
    pub out_dir: PathBuf,
    /// The SKUs ordered in rotation.
    pub skus: Vec<String>,
    /// The share of orders for the out-of-stock SKU.
    pub reject_share: f64,
    /// How many distinct customers place orders.
    pub customers: u64,
    /// The verdict's thresholds.
    pub thresholds: Thresholds,
    /// Whether to print the live progress line on stderr.
    pub progress: bool,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The Kafka side could not be set up.
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// The schema registry (`--registry`) could not be asked for the catalog's ids.
    #[error("--registry: {0}")]
    Registry(#[from] spine_kit::schemas::RegistryError),
}

struct KafkaSide {
    reader: OutcomeReader,
    sampler: LagSampler,
}

async fn start_kafka(
    config: &Config,
    tracker: Arc<Mutex<Tracker>>,
) -> Result<KafkaSide, KafkaSetupError> {
    let settings = config.kafka.clone();
    let groups = config.groups.clone();
    let mut topics = event_topics();
    for group in &groups {
        for topic in group.topics.iter().flatten() {
            if !topics.contains(topic) {
                topics.push(topic.clone());
            }
        }
    }
    tokio::task::spawn_blocking(move || {
        let sampler = LagSampler::start(&settings, &groups, &topics, Duration::from_secs(1))?;
        let reader = OutcomeReader::start(&settings, tracker)?;
        Ok(KafkaSide { reader, sampler })
    })
    .await
    .expect("the Kafka setup thread does not panic")
}

/// The live progress line on stderr: rewritten in place on a terminal, one line a second
/// otherwise (logs).
struct ProgressLine {
    enabled: bool,
    terminal: bool,
}

impl ProgressLine {
    fn show(&self, line: &str) {
        if !self.enabled {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.enabled && self.terminal {
            let _ = writeln!(std::io::stderr());
        }
    }
}

fn phase_at(profile: &Profile, elapsed: Duration) -> Option<&str> {
    profile
        .phases
        .iter()
        .zip(profile.bounds())
        .find(|(_, (from, to))| elapsed >= *from && elapsed < *to)
        .map(|(p, _)| p.name.as_str())
}

/// Runs the load and returns its report (verdict included). Ctrl-C (`cancel`) stops the
/// load early and skips the drain wait; the report says it was interrupted.
pub async fn run(config: &Config, cancel: CancellationToken) -> Result<Report, RunError> {
    let profile = config.profile.clone();
    let phases = profile.phases.len();
    let bodies = Bodies::new(config.skus.clone(), config.reject_share, config.customers);
    let target = Arc::new(Target::new(
        &config.base_url,
        bodies,
        config.timeout,
        config.max_in_flight,
    )?);
    let recorder = Arc::new(Recorder::new(phases));
    let tracker = config
        .e2e
        .then(|| Arc::new(Mutex::new(Tracker::new(phases))));
    let kafka = match &tracker {
        Some(tracker) => {
            if let Some(url) = &config.registry {
                // The outcome reader peeks at facts in Confluent framing by their registry ids.
                spine_kit::schemas::learn_catalog(&spine_kit::settings::RegistrySettings {
                    url: Some(url.clone()),
                    ..Default::default()
                })
                .await?;
            }
            Some(start_kafka(config, tracker.clone()).await?)
        }
        None => None,
    };
    let progress = ProgressLine {
        enabled: config.progress,
        terminal: std::io::stderr().is_terminal(),
    };
    if config.progress {
        eprintln!(
            "spike: {} against {}{}",
            profile.describe(),
            config.base_url,
            if kafka.is_some() {
                format!(
                    ", following orders and lag on {}",
                    config.kafka.bootstrap_servers
                )
            } else {
                String::new()
            }
        );
    }

    let started_at = SystemTime::now();
    let start = Instant::now();
    let load_end = start + profile.duration();
    let (reference_offset, _) = profile.drain_reference();
    let reference = start + reference_offset;
    let reference_phase = profile.drain_after.unwrap_or(phases - 1);
    let planned_by_reference: u64 = profile.phases[..=reference_phase]
        .iter()
        .map(Phase::arrivals)
        .sum();
    let mut drain = DrainTracker::new(reference, config.drain_timeout);

    let in_flight = Arc::new(AtomicUsize::new(0));
    let sinks = Sinks {
        recorder: recorder.clone(),
        tracker: tracker.clone(),
        in_flight: in_flight.clone(),
    };
    let mut driver = tokio::spawn(load::drive(
        profile.clone(),
        target,
        sinks,
        start,
        cancel.clone(),
    ));

    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::from_std(start + Duration::from_secs(1)),
        Duration::from_secs(1),
    );
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut in_flight_series = Vec::new();
    let mut samples_seen = 0;
    let mut latest: Option<LagSample> = None;
    let mut interrupted = false;
    let mut load_done_at: Option<Instant> = None;
    let mut finished = false;
    loop {
        let mut tick = false;
        tokio::select! {
            _ = ticks.tick() => tick = true,
            () = cancel.cancelled(), if !interrupted => interrupted = true,
            _ = &mut driver, if !finished => finished = true,
        }
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(start);
        let second = elapsed.as_secs();
        let waiting = in_flight.load(Ordering::Acquire) as u64;
        if tick && second > 0 {
            in_flight_series.push((second - 1, waiting));
        }

        if let (Some(kafka), Some(tracker)) = (&kafka, &tracker) {
            let offered: u64 = recorder.phase_counts()[..=reference_phase]
                .iter()
                .map(|c| c.offered)
                .sum();
            let orders_done = now >= reference
                && offered >= planned_by_reference
                && recorder.in_flight_up_to(reference_phase) == 0
                && lock(tracker).incomplete_up_to(reference_phase) == 0;
            drain.orders_done(now, orders_done);
            for sample in kafka.sampler.since(samples_seen) {
                samples_seen += 1;
                drain.observe(&sample, sample.at < load_end);
                latest = Some(sample);
            }
            lock(tracker).prune(now, Duration::from_secs(120));
        }

        let phase = match phase_at(&profile, elapsed) {
            Some(name) if !finished => name,
            _ if !finished => "finishing",
            _ if kafka.is_some() => "drain",
            _ => "done",
        };
        let (offered, accepted) = recorder.second_rates(second.saturating_sub(1));
        let p99 = recorder
            .p99_so_far_ms()
            .map(|p| format!("{p:.1} ms"))
            .unwrap_or_else(|| "-".into());
        let lag = latest
            .as_ref()
            .map(|s| s.total().to_string())
            .unwrap_or_else(|| "-".into());
        progress.show(&format!(
            "{:>5}s {phase:<10} offered {offered:>5}/s  accepted {accepted:>5}/s  p99 {p99:>9}  in flight {waiting:>5}  lag {lag}",
            second
        ));

        if !finished {
            continue;
        }
        let done_at = *load_done_at.get_or_insert(now);
        let Some(tracker) = &tracker else { break };
        if interrupted {
            break;
        }
        let everything_in = lock(tracker).incomplete_up_to(phases - 1) == 0
            && latest
                .as_ref()
                .is_some_and(|s| s.at >= done_at && s.groups.iter().all(|g| g.lag == Some(0)));
        if (drain.drained_after().is_some() && everything_in)
            || drain.expired(now)
            || now > done_at + config.drain_timeout
        {
            break;
        }
    }
    progress.finish();
    let end = Instant::now();

    let (samples, failed) = match kafka {
        Some(KafkaSide { reader, sampler }) => tokio::task::spawn_blocking(move || {
            reader.stop();
            sampler.stop()
        })
        .await
        .expect("stopping the Kafka side does not panic"),
        None => (Vec::new(), 0),
    };
    let group_names: Vec<String> = config.groups.iter().map(|g| g.name.clone()).collect();
    let tracker_guard = tracker.as_ref().map(|t| lock(t));
    Ok(Report::build(Inputs {
        base_url: &config.base_url,
        profile: &profile,
        started_at,
        start,
        end,
        interrupted,
        records: recorder.snapshot(),
        tracker: tracker_guard.as_deref(),
        lag: config
            .e2e
            .then_some((samples.as_slice(), failed, group_names.as_slice())),
        drain: config.e2e.then_some(&drain),
        drain_timeout: config.drain_timeout,
        in_flight: &in_flight_series,
        thresholds: &config.thresholds,
    }))
}

fn lock(tracker: &Mutex<Tracker>) -> std::sync::MutexGuard<'_, Tracker> {
    tracker.lock().unwrap_or_else(|e| e.into_inner())
}
