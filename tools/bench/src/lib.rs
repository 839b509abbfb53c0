//! `kit-throughput`: what share of the physical limit the kit keeps, like for like.
//!
//! On one broker, in one run, with one message size, it measures four kinds of work
//! ([`report::Work`]), each through a plain rdkafka client (raw) and through the kit:
//! - **produce, pre-encoded**: both send stored records (value and headers encoded before the
//!   interval): raw, a plain `ThreadedProducer` with the kit's producer settings (acks=all,
//!   idempotence, linger, delivery timeout); kit, the outbox relay's per-row work
//!   (`kit::produce_stored`);
//! - **produce, encode each**: both encode each event with `spine_events::encode` inside the
//!   interval (kit: `OutgoingRecord::from_event`, then the relay's per-row work);
//! - **consume, no decode**: a plain `BaseConsumer`, and the `ConsumerRunner` with a handler
//!   that does nothing with the bytes, over the same prefilled topic, each as a fresh group;
//! - **consume, decode**: the same, both decoding each value with `spine_events::decode`;
//! - **consume batch, no decode / decode**: the same two, the kit's runner on its batch path
//!   (`Batched::new` of a batch handler, `kafka.consumer.max_batch` records of a partition
//!   per call), which orders, inventory and analytics use; the per-record rows are the path
//!   email uses. The raw side is the same plain consumer, measured again for these rows.
//!
//! The kit's share of raw is judged on these like-for-like pairs. Every measurement gets fresh
//! topics or groups; raw and kit alternate which goes first from round to round, and the
//! report takes medians over rounds (see [`report`]).
//!
//! The crate also holds `backlog-drain` ([`drain`]), the benchmark's observer of a queued
//! backlog's drain.
//!
//! # Layout
//! - [`drain`]: the backlog observer: what a record is, the tally, the drain report;
//! - [`kit`]: the kit's paths, used as the services use them;
//! - [`raw`]: the plain rdkafka clients;
//! - [`report`]: measurements, medians, the JSON report and the table;
//! - [`workload`]: the orders sent and the size of one record.

pub mod drain;
pub mod kit;
pub mod raw;
pub mod report;
pub mod workload;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use spine_events::orders::OrderPlaced;
use spine_kit::kafka::config::{base_config, producer_config};
use spine_kit::kafka::headers::EVENT_ID;
use spine_kit::kafka::{OutgoingRecord, Publisher, TopicSpec, ensure_topics};
use spine_kit::settings::KafkaSettings;

use crate::raw::RawProducer;
use crate::report::{Measurement, Rounds, Side, Work};
use crate::workload::MessageSize;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Kafka settings: the kit's defaults with the bootstrap servers to use.
    pub kafka: KafkaSettings,
    /// Records per measurement.
    pub records: usize,
    /// Measured rounds; every path runs once per round.
    pub rounds: usize,
    /// Whether a small untimed run of every path comes first.
    pub warmup: bool,
    /// Whether to measure the produce paths.
    pub produce: bool,
    /// Whether to measure the consume paths (over a topic the kit wrote).
    pub consume: bool,
    /// Unacknowledged sends the kit path keeps in flight.
    pub window: usize,
    /// The longest any one measurement may take.
    pub timeout: Duration,
}

/// What the run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The size of each record.
    pub size: MessageSize,
    /// Each path's rate per round.
    pub rounds: Rounds,
}

/// Runs the warm-up and the rounds. Progress goes to stderr.
pub async fn run(options: &Options) -> anyhow::Result<Outcome> {
    anyhow::ensure!(options.records >= 2, "--records must be at least 2");
    anyhow::ensure!(options.rounds >= 1, "--rounds must be at least 1");
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let bench = Bench::new(options, run_id)?;
    eprintln!(
        "building and encoding {} orders (untimed); message {} bytes",
        options.records,
        bench.size.total()
    );
    let events = workload::orders(options.records);
    // The outbox rows of the pre-encoded work, each built under a request span of its own as
    // a service builds them (one trace per order, so a ratio sampler samples some orders, not
    // all or none); their topic is set per send.
    let stored = events
        .iter()
        .map(|event| kit::stored(&tracing::info_span!("bench request"), event, ""))
        .collect::<Result<Vec<_>, _>>()
        .context("encoding the orders")?;
    let data = Data {
        events: &events,
        stored: &stored,
    };
    let rounds = measure(&bench, &data).await;
    // Also after a failure: the in-memory broker would keep every record otherwise.
    bench.delete_topics().await;
    Ok(Outcome {
        size: bench.size,
        rounds: rounds?,
    })
}

/// What the produce paths send: the events (encoded inside the interval) and their stored
/// records (encoded before it).
struct Data<'a> {
    events: &'a [OrderPlaced],
    stored: &'a [OutgoingRecord],
}

impl Data<'_> {
    fn first(&self, n: usize) -> Data<'_> {
        Data {
            events: &self.events[..n],
            stored: &self.stored[..n],
        }
    }
}

/// The warm-up, then the produce rounds, then the consume rounds over the first topic the kit
/// wrote (or over one prefilled untimed when only consumption is measured).
async fn measure(bench: &Bench<'_>, data: &Data<'_>) -> anyhow::Result<Rounds> {
    let options = bench.options;
    let works: Vec<Work> = Work::ALL
        .into_iter()
        .filter(|w| {
            if w.produces() {
                options.produce
            } else {
                options.consume
            }
        })
        .collect();
    if options.warmup {
        let n = options.records.min(10_000);
        eprintln!("warm-up: {n} records on every path");
        let warm = data.first(n);
        let mut topic = String::new();
        for work in Work::ALL.into_iter().filter(|w| w.produces()) {
            for side in [Side::Raw, Side::Kit] {
                topic = bench.topic(&format!("warmup-{}", name(work, side))).await?;
                bench.produce(work, side, &topic, &warm).await?;
            }
        }
        if options.consume {
            for work in Work::ALL.into_iter().filter(|w| !w.produces()) {
                for side in [Side::Raw, Side::Kit] {
                    let group = format!("warmup-{}", name(work, side));
                    bench.consume(work, side, &topic, &group, n).await?;
                }
            }
        }
        bench.delete_topics().await;
    }

    let mut rounds = Rounds::default();
    let mut consume_topic = None;
    for round in 1..=options.rounds {
        for work in works.iter().copied().filter(|w| w.produces()) {
            for side in order(round) {
                let topic = bench
                    .topic(&format!("r{round}-{}", name(work, side)))
                    .await?;
                let cpu = process_cpu();
                let measured = bench.produce(work, side, &topic, data).await?;
                let cpu = cpu_since(cpu);
                rounds.push(work, side, report_round(work, side, round, &measured, cpu));
                if side == Side::Kit && options.consume && consume_topic.is_none() {
                    // Kit-written records (trace context included) are what consumers read.
                    consume_topic = Some(topic);
                } else {
                    bench.delete_topic(&topic).await;
                }
            }
        }
    }
    if options.consume {
        let topic = match consume_topic {
            Some(topic) => topic,
            None => {
                eprintln!("prefilling with {} records (untimed)", options.records);
                let topic = bench.topic("prefill").await?;
                bench
                    .produce(Work::ProduceBytes, Side::Kit, &topic, data)
                    .await?;
                topic
            }
        };
        for round in 1..=options.rounds {
            for work in works.iter().copied().filter(|w| !w.produces()) {
                for side in order(round) {
                    let group = format!("r{round}-{}", name(work, side));
                    let cpu = process_cpu();
                    let measured = bench
                        .consume(work, side, &topic, &group, options.records)
                        .await?;
                    let cpu = cpu_since(cpu);
                    rounds.push(work, side, report_round(work, side, round, &measured, cpu));
                }
            }
        }
    }
    Ok(rounds)
}

/// A topic or group name part for one work on one side, unique within a round.
fn name(work: Work, side: Side) -> String {
    let work = match work {
        Work::ProduceBytes => "bytes",
        Work::ProduceEncode => "encode",
        Work::ConsumeNoDecode => "nodecode",
        Work::ConsumeDecode => "decode",
        Work::ConsumeBatchNoDecode => "batch-nodecode",
        Work::ConsumeBatchDecode => "batch-decode",
    };
    let side = match side {
        Side::Raw => "raw",
        Side::Kit => "kit",
    };
    format!("{work}-{side}")
}

/// Raw first in odd rounds, kit first in even ones, so neither always runs on a warmer or a
/// more loaded broker.
fn order(round: usize) -> [Side; 2] {
    if round % 2 == 1 {
        [Side::Raw, Side::Kit]
    } else {
        [Side::Kit, Side::Raw]
    }
}

/// Prints a round's rate on stderr, with the CPU time the whole process used around the
/// measurement (group join and shutdown included) per record: on a shared machine the rate
/// moves with the neighbours' load, the CPU per record much less.
fn report_round(
    work: Work,
    side: Side,
    round: usize,
    measured: &Measurement,
    cpu: Option<Duration>,
) -> f64 {
    let rate = measured.per_second();
    let cpu = cpu.map_or_else(
        || "cpu n/a".to_owned(),
        |cpu| {
            format!(
                "cpu {:.2} s, {:.1} us/record",
                cpu.as_secs_f64(),
                cpu.as_secs_f64() * 1e6 / measured.records.max(1) as f64
            )
        },
    );
    eprintln!(
        "round {round}: {:<3} {:<24} {:>9.0} msgs/s ({} records in {:.3} s; {cpu})",
        match side {
            Side::Raw => "raw",
            Side::Kit => "kit",
        },
        work.label(),
        rate,
        measured.records,
        measured.elapsed.as_secs_f64()
    );
    rate
}

/// The CPU time (user and system, every thread, ended ones included) this process has used,
/// from `/proc/self/stat` (in USER_HZ ticks, 100 a second on Linux); `None` elsewhere.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The CPU time used since `before` (a [`process_cpu`] reading).
fn cpu_since(before: Option<Duration>) -> Option<Duration> {
    Some(process_cpu()?.saturating_sub(before?))
}

/// The clients kept across measurements and the run's naming.
struct Bench<'a> {
    options: &'a Options,
    prefix: String,
    raw: RawProducer,
    kit: Publisher,
    /// The headers the raw encoding path adds to each event's own `event-id`: those of a
    /// record as the relay sends it (type, version, content type, trace context), so both
    /// sides send records of one size.
    fixed_headers: Vec<(String, Vec<u8>)>,
    size: MessageSize,
    created: std::sync::Mutex<Vec<String>>,
}

impl<'a> Bench<'a> {
    fn new(options: &'a Options, run_id: u128) -> anyhow::Result<Self> {
        let raw = RawProducer::new(&producer_config(&options.kafka, "spine-bench-raw"))?;
        let kit = Publisher::new(&options.kafka, "spine-bench-kit")
            .context("creating the kit publisher")?;
        // One record as the relay sends it, trace context included: its size is the message
        // size, and its headers other than the event id are what the raw encoding path sends.
        let request = tracing::info_span!("bench sample");
        let stored = kit::stored(&request, &workload::order(0), "sample")
            .context("encoding the sample event")?;
        let (record, _span) = kit::relay_record(&kit, &stored, "sample");
        let fixed_headers = record
            .headers
            .iter()
            .filter(|(name, _)| *name != EVENT_ID)
            .map(|(name, value)| (name.to_owned(), value.to_vec()))
            .collect();
        Ok(Self {
            options,
            prefix: format!("spine-bench.{run_id}"),
            raw,
            kit,
            fixed_headers,
            size: MessageSize::of(&record),
            created: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Produces `data` to `topic` doing `work` on `side`.
    async fn produce(
        &self,
        work: Work,
        side: Side,
        topic: &str,
        data: &Data<'_>,
    ) -> anyhow::Result<Measurement> {
        let (window, timeout) = (self.options.window, self.options.timeout);
        match (work, side) {
            // Blocking, on this worker thread: the raw path gets no help from the runtime.
            (Work::ProduceBytes, Side::Raw) => {
                tokio::task::block_in_place(|| self.raw.produce_stored(topic, data.stored, timeout))
            }
            (Work::ProduceEncode, Side::Raw) => tokio::task::block_in_place(|| {
                self.raw
                    .produce_encoding(topic, data.events, &self.fixed_headers, timeout)
            }),
            (Work::ProduceBytes, Side::Kit) => {
                kit::produce_stored(&self.kit, topic, data.stored, window, timeout).await
            }
            (Work::ProduceEncode, Side::Kit) => {
                kit::produce_encoding(&self.kit, topic, data.events, window, timeout).await
            }
            (_, _) => anyhow::bail!("{work:?} is not a produce work"),
        }
    }

    /// Consumes `records` records of `topic` as a fresh group doing `work` on `side`.
    async fn consume(
        &self,
        work: Work,
        side: Side,
        topic: &str,
        group: &str,
        records: usize,
    ) -> anyhow::Result<Measurement> {
        let Some(decode) = work.decodes() else {
            anyhow::bail!("{work:?} is not a consume work")
        };
        let path = if work.batched() {
            kit::Path::Batched
        } else {
            kit::Path::PerRecord
        };
        let group = format!("{}.{group}", self.prefix);
        let timeout = self.options.timeout;
        match side {
            Side::Raw => tokio::task::block_in_place(|| {
                raw::consume(
                    &self.options.kafka.bootstrap_servers,
                    topic,
                    &group,
                    records as u64,
                    decode,
                    timeout,
                )
            }),
            Side::Kit => {
                kit::consume(
                    &self.options.kafka,
                    topic,
                    &group,
                    records as u64,
                    decode,
                    path,
                    timeout,
                )
                .await
            }
        }
    }

    /// Creates a fresh topic with the kit's default partitions and replication.
    async fn topic(&self, name: &str) -> anyhow::Result<String> {
        let topic = format!("{}.{name}", self.prefix);
        ensure_topics(
            &self.options.kafka,
            &[TopicSpec::new(topic.clone(), &self.options.kafka)],
        )
        .await
        .with_context(|| format!("creating topic {topic}"))?;
        self.created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(topic.clone());
        Ok(topic)
    }

    /// Deletes a topic so the broker (in-memory tansu) does not keep every round's records.
    /// Best effort: a broker that refuses only keeps more.
    async fn delete_topic(&self, topic: &str) {
        let admin: AdminClient<DefaultClientContext> =
            match base_config(&self.options.kafka, "spine-bench-admin").create() {
                Ok(admin) => admin,
                Err(err) => {
                    eprintln!("cannot delete {topic}: {err}");
                    return;
                }
            };
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        match admin.delete_topics(&[topic], &options).await {
            Ok(results) => {
                for result in results {
                    if let Err((topic, code)) = result {
                        eprintln!("cannot delete {topic}: {code}");
                    }
                }
            }
            Err(err) => eprintln!("cannot delete {topic}: {err}"),
        }
        self.created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|t| t != topic);
    }

    /// Deletes every topic this run created and has not deleted yet.
    async fn delete_topics(&self) {
        let topics = self
            .created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for topic in topics {
            self.delete_topic(&topic).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_kit_alternate_which_goes_first() {
        let firsts: Vec<Side> = (1..=4).map(|r| order(r)[0]).collect();
        assert_eq!(firsts, [Side::Raw, Side::Kit, Side::Raw, Side::Kit]);
    }

    #[test]
    fn every_work_and_side_has_its_own_name() {
        let mut names: Vec<String> = Work::ALL
            .into_iter()
            .flat_map(|w| [name(w, Side::Raw), name(w, Side::Kit)])
            .collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 2 * Work::ALL.len());
    }
}
