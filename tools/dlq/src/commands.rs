//! The four commands over one DLQ: what `main` calls once the arguments are parsed. Each writes
//! its human (or JSON) output to the writer it is given.

use std::collections::{BTreeSet, HashSet};
use std::io::Write;

use spine_kit::kafka::Publisher;
use spine_kit::settings::KafkaSettings;

use crate::error::DlqError;
use crate::filter::Filter;
use crate::position::{self, ReplayPosition};
use crate::read;
use crate::record::{DlqRecord, Position, now_millis, parked_topic};
use crate::replay::{self, ReplayOptions, ReplayReport};
use crate::show;

/// The default bootstrap servers when neither `--brokers` nor `KAFKA_BOOTSTRAP_SERVERS` is set.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// A DLQ topic on a cluster.
#[derive(Debug, Clone)]
pub struct Dlq {
    /// Client settings (the kit's defaults with the chosen bootstrap servers).
    pub settings: KafkaSettings,
    /// The DLQ topic.
    pub topic: String,
}

impl Dlq {
    /// The DLQ named by `--dlq <topic>` or `--group <group>` (meaning `<group>.dlq`), on
    /// `brokers`, else `KAFKA_BOOTSTRAP_SERVERS`, else [`DEFAULT_BROKERS`].
    pub fn new(
        brokers: Option<String>,
        dlq: Option<String>,
        group: Option<String>,
    ) -> Result<Self, DlqError> {
        let topic = match (dlq, group) {
            (Some(topic), None) => topic,
            (None, Some(group)) => format!("{group}.dlq"),
            (Some(_), Some(_)) => {
                return Err(DlqError::Usage(
                    "give either --dlq <topic> or --group <group>, not both".to_owned(),
                ));
            }
            (None, None) => {
                return Err(DlqError::Usage(
                    "which DLQ? give --dlq <topic> or --group <group> (meaning <group>.dlq)"
                        .to_owned(),
                ));
            }
        };
        if topic.trim().is_empty() {
            return Err(DlqError::Usage("the DLQ topic name is empty".to_owned()));
        }
        let bootstrap_servers = brokers
            .or_else(|| std::env::var("KAFKA_BOOTSTRAP_SERVERS").ok())
            .filter(|b| !b.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_BROKERS.to_owned());
        let settings = KafkaSettings {
            bootstrap_servers,
            ..KafkaSettings::default()
        };
        Ok(Self { settings, topic })
    }

    /// The same DLQ with other client settings (tests use their own).
    pub fn with_settings(settings: KafkaSettings, topic: impl Into<String>) -> Self {
        Self {
            settings,
            topic: topic.into(),
        }
    }

    /// The records matching `filter`, in DLQ order, each with whether it was parked already.
    /// Parked records are left out unless `include_parked`. Explicit positions must all exist.
    pub async fn select(
        &self,
        filter: &Filter,
        include_parked: bool,
    ) -> Result<Vec<(DlqRecord, bool)>, DlqError> {
        let (records, parked) = self.scan().await?;
        for record in &records {
            // Confluent-framed values name their schema by registry id: learn the ids first
            // (with `--registry`), so that the event type and the decoded value show.
            if let Err(err) = spine_kit::schemas::resolve(Some(&record.payload)).await {
                tracing::warn!(error = %err, "cannot resolve a schema id");
            }
        }
        select_from(&self.topic, records, &parked, filter, include_parked)
    }

    async fn scan(&self) -> Result<(Vec<DlqRecord>, HashSet<Position>), DlqError> {
        let settings = self.settings.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let records = read::scan(&settings, &topic)?;
            let parked = read::parked_positions(&settings, &topic)?;
            Ok((records, parked))
        })
        .await
        .map_err(|e| DlqError::Internal(format!("the scan task failed: {e}")))?
    }

    fn publisher(&self) -> Result<Publisher, DlqError> {
        Ok(Publisher::new(&self.settings, "spine-dlq")?)
    }
}

/// The records of a scan matching `filter`, each with whether it was parked already. Parked
/// records are left out unless `include_parked`. Explicit positions must all exist.
fn select_from(
    topic: &str,
    records: Vec<DlqRecord>,
    parked: &HashSet<Position>,
    filter: &Filter,
    include_parked: bool,
) -> Result<Vec<(DlqRecord, bool)>, DlqError> {
    if let Some(missing) = filter
        .positions
        .iter()
        .find(|p| !records.iter().any(|r| r.position == **p))
    {
        return Err(DlqError::NotFound {
            topic: topic.to_owned(),
            position: missing.to_string(),
        });
    }
    Ok(records
        .into_iter()
        .filter(|r| filter.matches(r))
        .map(|r| {
            let is_parked = parked.contains(&r.position);
            (r, is_parked)
        })
        .filter(|(_, is_parked)| include_parked || !is_parked)
        .collect())
}

/// `list`: one line (or JSON object) per matching record; returns how many.
pub async fn list(
    dlq: &Dlq,
    filter: &Filter,
    include_parked: bool,
    json: bool,
    out: &mut impl Write,
) -> Result<usize, DlqError> {
    let records = dlq.select(filter, include_parked).await?;
    let now = now_millis();
    for (record, parked) in &records {
        let line = if json {
            let mut value = show::summary_json(record, now);
            value["parked"] = (*parked).into();
            value.to_string()
        } else if *parked {
            format!("{} PARKED", show::summary_line(record, now))
        } else {
            show::summary_line(record, now)
        };
        writeln!(out, "{line}")?;
    }
    if !json {
        writeln!(out, "{} record(s) in {}", records.len(), dlq.topic)?;
    }
    Ok(records.len())
}

/// `show`: one record in full.
pub async fn show(dlq: &Dlq, position: Position, out: &mut impl Write) -> Result<(), DlqError> {
    let filter = Filter {
        positions: vec![position],
        ..Filter::default()
    };
    let records = dlq.select(&filter, true).await?;
    for (record, parked) in &records {
        if *parked {
            writeln!(
                out,
                "parked:    yes, copied to {}",
                parked_topic(&dlq.topic)
            )?;
        }
        write!(out, "{}", show::render(record, now_millis()))?;
    }
    Ok(())
}

/// `replay`: re-publishes the chosen records to their original topics, except those the
/// replay position says were replayed already (unless `--again`), then moves the position
/// (see [`crate::position`]; a dry run moves nothing).
pub async fn replay(
    dlq: &Dlq,
    filter: &Filter,
    options: &ReplayOptions,
    out: &mut impl Write,
) -> Result<ReplayReport, DlqError> {
    if options.rate == 0 {
        return Err(DlqError::Usage("--rate must be at least 1".to_owned()));
    }
    let (all, parked) = dlq.scan().await?;
    let chosen = select_from(&dlq.topic, all.clone(), &parked, filter, false)?;
    let partitions: Vec<i32> = all
        .iter()
        .map(|r| r.position.partition)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let old = blocking({
        let (settings, topic) = (dlq.settings.clone(), dlq.topic.clone());
        move || position::read(&settings, &topic, &partitions)
    })
    .await?;
    let mut report = ReplayReport::default();
    let mut records = Vec::with_capacity(chosen.len());
    for (record, _) in chosen {
        // A park candidate or an unreplayable record an unfiltered replay passed over is not
        // "replayed": it goes on to be skipped again, for its own reason.
        let passed_over = (record.is_park_candidate() && !options.force)
            || replay::replay_record(&record).is_err();
        if !options.again && !passed_over && position::is_replayed(&old, record.position) {
            report.already_replayed.push(record.position);
        } else {
            records.push(record);
        }
    }
    let publisher = dlq.publisher()?;
    let published = replay::replay_into(&publisher, &records, options, &mut report).await;
    // Remember what went out even when a later publish failed.
    let remembered = if options.dry_run {
        Ok(())
    } else {
        remember(dlq, filter, &old, &all, &parked, &mut report).await
    };
    let verb = if options.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    for done in &report.replayed {
        let to = done.to.map_or_else(String::new, |to| {
            format!(" (now {}/{to})", done.record.topic)
        });
        let count = done
            .record
            .headers
            .get_str(crate::record::REPLAY_COUNT)
            .unwrap_or("?");
        let key = done
            .record
            .key
            .as_deref()
            .map_or_else(|| "-".into(), String::from_utf8_lossy);
        writeln!(
            out,
            "{verb} {} -> {} key={key} replay-count={count}{to}",
            done.from, done.record.topic
        )?;
    }
    for position in &report.skipped_park_candidates {
        writeln!(
            out,
            "skipped {position}: failed again after a replay (park it, or --force)"
        )?;
    }
    for (position, why) in &report.invalid {
        writeln!(out, "skipped {position}: cannot replay: {why}")?;
    }
    if !report.already_replayed.is_empty() {
        writeln!(
            out,
            "skipped {} already replayed (below the replay position kept by group {}; --again replays them)",
            report.already_replayed.len(),
            position::replay_group(&dlq.topic)
        )?;
    }
    if report.replayed_beyond_position > 0 {
        writeln!(
            out,
            "note: {} replayed record(s) lie past a record this filtered replay left out, so the \
             replay position cannot cover them: a rerun with the same filter replays them again \
             (their effects still apply once); an unfiltered replay covers them",
            report.replayed_beyond_position
        )?;
    }
    writeln!(
        out,
        "{verb} {}, skipped {} already replayed, skipped {} park candidate(s), {} invalid",
        report.replayed.len(),
        report.already_replayed.len(),
        report.skipped_park_candidates.len(),
        report.invalid.len()
    )?;
    published?;
    remembered?;
    Ok(report)
}

/// Moves and commits the replay position after a (partial) replay, and counts the replayed
/// records it cannot cover.
async fn remember(
    dlq: &Dlq,
    filter: &Filter,
    old: &ReplayPosition,
    all: &[DlqRecord],
    parked: &HashSet<Position>,
    report: &mut ReplayReport,
) -> Result<(), DlqError> {
    let replayed: HashSet<Position> = report.replayed.iter().map(|r| r.from).collect();
    let unfiltered = filter.is_unfiltered();
    let passed_over: HashSet<Position> = report
        .skipped_park_candidates
        .iter()
        .copied()
        .chain(report.invalid.iter().map(|(p, _)| *p))
        .collect();
    let moved = position::advance(old, all, |r| {
        replayed.contains(&r.position)
            || parked.contains(&r.position)
            || (unfiltered && passed_over.contains(&r.position))
    });
    let mut new = old.clone();
    new.extend(moved.iter().map(|(p, o)| (*p, *o)));
    report.replayed_beyond_position = replayed
        .iter()
        .filter(|p| !position::is_replayed(&new, **p))
        .count();
    let (settings, topic) = (dlq.settings.clone(), dlq.topic.clone());
    blocking(move || position::commit(&settings, &topic, &moved)).await
}

/// Runs blocking librdkafka calls off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DlqError> + Send + 'static,
) -> Result<T, DlqError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DlqError::Internal(format!("a blocking task failed: {e}")))?
}

/// `park`: moves the chosen records to `<dlq>.parked`. Without explicit positions only park
/// candidates (records that failed again after a replay) are chosen.
pub async fn park(
    dlq: &Dlq,
    filter: &Filter,
    out: &mut impl Write,
) -> Result<Vec<Position>, DlqError> {
    let records: Vec<DlqRecord> = dlq
        .select(filter, false)
        .await?
        .into_iter()
        .map(|(r, _)| r)
        .filter(|r| filter.is_explicit() || r.is_park_candidate())
        .collect();
    let publisher = dlq.publisher()?;
    let parked = replay::park(&dlq.settings, &publisher, &dlq.topic, &records).await?;
    for position in &parked {
        writeln!(out, "parked {position} -> {}", parked_topic(&dlq.topic))?;
    }
    writeln!(out, "parked {} record(s)", parked.len())?;
    Ok(parked)
}
