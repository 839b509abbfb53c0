//! `kit-throughput`: what share of the physical limit the kit keeps.
//!
//! On one broker, in one run, with one message size, it measures four paths:
//! - **raw produce**: a plain `ThreadedProducer` with the kit's producer settings (acks=all,
//!   idempotence, linger, delivery timeout), to the last acknowledgement;
//! - **kit produce**: `OutgoingRecord::from_event` and `Publisher::send` per event, relay
//!   style, to the last acknowledgement;
//! - **raw consume**: a plain `BaseConsumer` reading a prefilled topic;
//! - **kit consume**: the `ConsumerRunner` with a handler that decodes every value, over the
//!   same topic, each consumer as a fresh group.
//!
//! Every measurement gets fresh topics or groups; raw and kit alternate which goes first from
//! round to round, and the report takes medians over rounds (see [`report`]).

pub mod kit;
pub mod raw;
pub mod report;
pub mod workload;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::OwnedHeaders;
use spine_events::orders::OrderPlaced;
use spine_kit::kafka::config::{base_config, producer_config};
use spine_kit::kafka::{Publisher, TopicSpec, ensure_topics};
use spine_kit::settings::KafkaSettings;

use crate::raw::RawProducer;
use crate::report::{Measurement, Path, Rounds};
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
        "building {} orders; message {} bytes",
        options.records,
        bench.size.total()
    );
    let events = workload::orders(options.records);
    let keys: Vec<Vec<u8>> = events
        .iter()
        .map(|e| e.order_id.to_string().into_bytes())
        .collect();
    let rounds = measure(&bench, &events, &keys).await;
    // Also after a failure: the in-memory broker would keep every record otherwise.
    bench.delete_topics().await;
    Ok(Outcome {
        size: bench.size,
        rounds: rounds?,
    })
}

/// The warm-up, then the produce rounds, then the consume rounds over the first topic the kit
/// wrote (or over one prefilled untimed when only consumption is measured).
async fn measure(
    bench: &Bench<'_>,
    events: &[OrderPlaced],
    keys: &[Vec<u8>],
) -> anyhow::Result<Rounds> {
    let options = bench.options;
    if options.warmup {
        let n = options.records.min(10_000);
        eprintln!("warm-up: {n} records on every path");
        let topic = bench.topic("warmup-raw").await?;
        bench.raw_produce(&topic, &keys[..n]).await?;
        let topic = bench.topic("warmup-kit").await?;
        bench.kit_produce(&topic, &events[..n]).await?;
        if options.consume {
            bench.raw_consume(&topic, "warmup-raw", n).await?;
            bench.kit_consume(&topic, "warmup-kit", n).await?;
        }
        bench.delete_topics().await;
    }

    let mut rounds = Rounds::default();
    let mut consume_topic = None;
    if options.produce {
        for round in 1..=options.rounds {
            for path in order(round, Path::RawProduce, Path::KitProduce) {
                let kit = path == Path::KitProduce;
                let topic = bench.topic(&name(round, kit)).await?;
                let measured = if kit {
                    bench.kit_produce(&topic, events).await?
                } else {
                    bench.raw_produce(&topic, keys).await?
                };
                rounds.push(path, report_round(path, round, &measured));
                if kit && options.consume && consume_topic.is_none() {
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
                bench.kit_produce(&topic, events).await?;
                topic
            }
        };
        for round in 1..=options.rounds {
            for path in order(round, Path::RawConsume, Path::KitConsume) {
                let kit = path == Path::KitConsume;
                let group = name(round, kit);
                let measured = if kit {
                    bench.kit_consume(&topic, &group, options.records).await?
                } else {
                    bench.raw_consume(&topic, &group, options.records).await?
                };
                rounds.push(path, report_round(path, round, &measured));
            }
        }
    }
    Ok(rounds)
}

/// The name of a round's topic or group, unique within the run.
fn name(round: usize, kit: bool) -> String {
    format!("r{round}-{}", if kit { "kit" } else { "raw" })
}

/// Raw first in odd rounds, kit first in even ones, so neither always runs on a warmer or a
/// more loaded broker.
fn order(round: usize, raw: Path, kit: Path) -> [Path; 2] {
    if round % 2 == 1 {
        [raw, kit]
    } else {
        [kit, raw]
    }
}

fn report_round(path: Path, round: usize, measured: &Measurement) -> f64 {
    let rate = measured.per_second();
    eprintln!(
        "round {round}: {:<11} {:>9.0} msgs/s ({} records in {:.3} s)",
        path.label(),
        rate,
        measured.records,
        measured.elapsed.as_secs_f64()
    );
    rate
}

/// The clients kept across measurements and the run's naming.
struct Bench<'a> {
    options: &'a Options,
    prefix: String,
    raw: RawProducer,
    kit: Publisher,
    /// The sample record's value and headers, which the raw producer sends with every key.
    payload: Vec<u8>,
    headers: OwnedHeaders,
    size: MessageSize,
    created: std::sync::Mutex<Vec<String>>,
}

impl<'a> Bench<'a> {
    fn new(options: &'a Options, run_id: u128) -> anyhow::Result<Self> {
        // One record as the kit path builds it, trace context included: its value and headers
        // are what the raw path sends, so both send the same bytes.
        let sample: OrderPlaced = workload::order(0);
        let raw = RawProducer::new(&producer_config(&options.kafka, "spine-bench-raw"))?;
        let kit = Publisher::new(&options.kafka, "spine-bench-kit")
            .context("creating the kit publisher")?;
        let (record, _span) = tracing::info_span!("bench sample")
            .in_scope(|| kit::prepare(kit.client_info(), &sample, "sample"))
            .context("encoding the sample event")?;
        Ok(Self {
            options,
            prefix: format!("spine-bench.{run_id}"),
            raw,
            kit,
            payload: record.payload.clone(),
            headers: record.headers.to_owned_headers(),
            size: MessageSize::of(&record),
            created: std::sync::Mutex::new(Vec::new()),
        })
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

    async fn raw_produce(&self, topic: &str, keys: &[Vec<u8>]) -> anyhow::Result<Measurement> {
        // Blocking, on this worker thread: the raw path gets no help from the runtime.
        tokio::task::block_in_place(|| {
            self.raw.produce(
                topic,
                keys,
                &self.payload,
                &self.headers,
                self.options.timeout,
            )
        })
    }

    async fn kit_produce(
        &self,
        topic: &str,
        events: &[OrderPlaced],
    ) -> anyhow::Result<Measurement> {
        kit::produce(
            &self.kit,
            topic,
            events,
            self.options.window,
            self.options.timeout,
        )
        .await
    }

    async fn raw_consume(
        &self,
        topic: &str,
        group: &str,
        records: usize,
    ) -> anyhow::Result<Measurement> {
        let group = format!("{}.{group}", self.prefix);
        tokio::task::block_in_place(|| {
            raw::consume(
                &self.options.kafka.bootstrap_servers,
                topic,
                &group,
                records as u64,
                self.options.timeout,
            )
        })
    }

    async fn kit_consume(
        &self,
        topic: &str,
        group: &str,
        records: usize,
    ) -> anyhow::Result<Measurement> {
        let group = format!("{}.{group}", self.prefix);
        kit::consume(
            &self.options.kafka,
            topic,
            &group,
            records as u64,
            self.options.timeout,
        )
        .await
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
        let firsts: Vec<Path> = (1..=4)
            .map(|r| order(r, Path::RawProduce, Path::KitProduce)[0])
            .collect();
        assert_eq!(
            firsts,
            [
                Path::RawProduce,
                Path::KitProduce,
                Path::RawProduce,
                Path::KitProduce
            ]
        );
    }
}
