//! Consumer-group lag, sampled every second on a blocking thread.
//!
//! For each group the sampler reads its committed offsets (`committed_offsets` of a
//! `BaseConsumer` configured with the group's id, which never subscribes, so it never joins
//! or disturbs the group) and every partition's watermarks. A group's lag is the sum, over
//! the partitions of the topics it reads, of the high watermark minus its position: the
//! committed offset, or the low watermark where it has committed nothing yet (the services
//! start from `earliest`).
//!
//! Which topics a group reads: given with `--groups name:topic+topic`; else known for the
//! four services (orders → `inventory.events`; inventory and email → `orders.events`;
//! analytics → all three); else every event topic where the group has committed offsets.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use spine_kit::settings::KafkaSettings;

use super::{KafkaSetupError, Partition, client_config, client_error, partitions};

/// A consumer group to watch, and the topics it reads if they are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    /// The group id.
    pub name: String,
    /// The topics it reads; `None` to use [`known_topics`] or derive them.
    pub topics: Option<Vec<String>>,
}

impl GroupSpec {
    /// Parses `name` or `name:topic+topic`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, topics) = match text.split_once(':') {
            None => (text.trim(), None),
            Some((name, topics)) => {
                let topics: Vec<String> = topics
                    .split('+')
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect();
                if topics.is_empty() {
                    return Err(format!("`{text}`: no topics after `:`"));
                }
                (name.trim(), Some(topics))
            }
        };
        if name.is_empty() {
            return Err(format!("`{text}`: empty group name"));
        }
        Ok(Self {
            name: name.to_owned(),
            topics,
        })
    }

    /// The groups of the four services.
    pub fn defaults() -> Vec<Self> {
        ["orders", "inventory", "email", "analytics"]
            .into_iter()
            .map(|name| Self {
                name: name.into(),
                topics: None,
            })
            .collect()
    }
}

/// The topics each service's group reads by default.
pub fn known_topics(group: &str) -> Option<&'static [&'static str]> {
    match group {
        "orders" => Some(&["inventory.events"]),
        "inventory" | "email" => Some(&["orders.events"]),
        "analytics" => Some(&["orders.events", "inventory.events", "email.events"]),
        _ => None,
    }
}

/// One group's state in one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupLag {
    /// The group id.
    pub group: String,
    /// Where the group stands on each partition of its topics; empty when its committed
    /// offsets could not be read in this sample.
    pub positions: BTreeMap<Partition, i64>,
    /// Records behind, or `None` when its committed offsets could not be read.
    pub lag: Option<i64>,
}

impl GroupLag {
    /// Whether the group has consumed everything up to `target` (high watermarks taken
    /// earlier) on every partition it reads.
    pub fn caught_up(&self, target: &BTreeMap<Partition, i64>) -> bool {
        self.lag.is_some()
            && self
                .positions
                .iter()
                .all(|(p, position)| *position >= target.get(p).copied().unwrap_or(0))
    }
}

/// Every group's lag at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct LagSample {
    /// When the committed offsets were read.
    pub at: Instant,
    /// Every watched partition's high watermark.
    pub highs: BTreeMap<Partition, i64>,
    /// One entry per watched group, in `--groups` order.
    pub groups: Vec<GroupLag>,
}

impl LagSample {
    /// The sum of every group's lag (unreadable groups count 0).
    pub fn total(&self) -> i64 {
        self.groups.iter().filter_map(|g| g.lag).sum()
    }
}

/// Where a group stands on each partition of its topics, and its lag.
///
/// `topics` `None` derives them: the topics where the group has a committed offset.
pub fn group_lag(
    group: &str,
    topics: Option<&[String]>,
    watermarks: &BTreeMap<Partition, (i64, i64)>,
    committed: &BTreeMap<Partition, i64>,
) -> GroupLag {
    let reads = |topic: &str| match topics {
        Some(topics) => topics.iter().any(|t| t == topic),
        None => committed.keys().any(|(t, _)| t == topic),
    };
    let mut positions = BTreeMap::new();
    let mut lag = 0;
    for (partition, (low, high)) in watermarks {
        if !reads(&partition.0) {
            continue;
        }
        let position = committed.get(partition).copied().unwrap_or(*low);
        lag += (high - position).max(0);
        positions.insert(partition.clone(), position);
    }
    GroupLag {
        group: group.to_owned(),
        positions,
        lag: Some(lag),
    }
}

struct Watched {
    spec: GroupSpec,
    consumer: BaseConsumer,
}

/// A running sampler; [`LagSampler::stop`] ends it and returns every sample.
pub struct LagSampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<LagSample>>>,
    failures: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl LagSampler {
    /// Starts sampling `groups` on `topics` every `interval`. Blocking: it waits (up to 15 s)
    /// for the topics and takes a first sample before it returns.
    pub fn start(
        settings: &KafkaSettings,
        groups: &[GroupSpec],
        topics: &[String],
        interval: Duration,
    ) -> Result<Self, KafkaSetupError> {
        let metadata: BaseConsumer = client_config(settings, "spine-spike-lag")
            .create()
            .map_err(client_error(settings))?;
        let mut all = Vec::new();
        for topic in topics {
            for partition in partitions(&metadata, settings, topic, Duration::from_secs(15))? {
                all.push((topic.clone(), partition));
            }
        }
        let mut watched = Vec::with_capacity(groups.len());
        for spec in groups {
            // Configured with the group's id, but never subscribed: it only asks for the
            // group's committed offsets.
            let consumer: BaseConsumer = client_config(settings, "spine-spike-lag")
                .set("group.id", &spec.name)
                .create()
                .map_err(client_error(settings))?;
            let topics = spec.topics.clone().or_else(|| {
                known_topics(&spec.name).map(|t| t.iter().map(|s| (*s).to_owned()).collect())
            });
            watched.push(Watched {
                spec: GroupSpec {
                    name: spec.name.clone(),
                    topics,
                },
                consumer,
            });
        }

        let samples = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(AtomicU64::new(0));
        let take = {
            let (samples, failures) = (samples.clone(), failures.clone());
            move || match sample(&metadata, &watched, &all) {
                Some(s) => samples.lock().unwrap_or_else(|e| e.into_inner()).push(s),
                None => {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        take();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("spike-lag".into())
                .spawn(move || {
                    let mut next = Instant::now() + interval;
                    while !stop.load(Ordering::Relaxed) {
                        let now = Instant::now();
                        if now < next {
                            std::thread::sleep((next - now).min(Duration::from_millis(50)));
                            continue;
                        }
                        take();
                        // A slow sample delays the next one rather than piling up.
                        next = (next + interval).max(Instant::now());
                    }
                })
                .expect("a thread for the lag sampler")
        };
        Ok(Self {
            stop,
            samples,
            failures,
            thread: Some(thread),
        })
    }

    /// The most recent sample.
    pub fn latest(&self) -> Option<LagSample> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .cloned()
    }

    /// Samples taken since the first `seen` (for incremental reading).
    pub fn since(&self, seen: usize) -> Vec<LagSample> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.get(seen..).map(<[_]>::to_vec).unwrap_or_default()
    }

    /// Stops sampling and returns every sample and how many attempts failed.
    pub fn stop(mut self) -> (Vec<LagSample>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let samples = std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()));
        (samples, self.failures.load(Ordering::Relaxed))
    }
}

impl Drop for LagSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One sample, or `None` when the watermarks could not be read.
fn sample(metadata: &BaseConsumer, watched: &[Watched], all: &[Partition]) -> Option<LagSample> {
    let mut watermarks = BTreeMap::new();
    for (topic, partition) in all {
        let marks = metadata
            .fetch_watermarks(topic, *partition, Duration::from_secs(3))
            .ok()?;
        watermarks.insert((topic.clone(), *partition), marks);
    }
    let mut groups = Vec::with_capacity(watched.len());
    let mut list = TopicPartitionList::new();
    for (topic, partition) in all {
        list.add_partition(topic, *partition);
    }
    for group in watched {
        let committed = group
            .consumer
            .committed_offsets(list.clone(), Duration::from_secs(5));
        let at_group = match committed {
            Ok(committed) => {
                let committed: BTreeMap<Partition, i64> = committed
                    .elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
                        _ => None,
                    })
                    .collect();
                group_lag(
                    &group.spec.name,
                    group.spec.topics.as_deref(),
                    &watermarks,
                    &committed,
                )
            }
            Err(_) => GroupLag {
                group: group.spec.name.clone(),
                positions: BTreeMap::new(),
                lag: None,
            },
        };
        groups.push(at_group);
    }
    Some(LagSample {
        at: Instant::now(),
        highs: watermarks
            .into_iter()
            .map(|(p, (_, high))| (p, high))
            .collect(),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(topic: &str, partition: i32) -> Partition {
        (topic.to_owned(), partition)
    }

    fn watermarks() -> BTreeMap<Partition, (i64, i64)> {
        BTreeMap::from([
            (p("orders.events", 0), (0, 100)),
            (p("orders.events", 1), (10, 50)),
            (p("inventory.events", 0), (0, 30)),
            (p("email.events", 0), (0, 7)),
        ])
    }

    #[test]
    fn lag_sums_the_distance_to_the_high_watermark_on_the_topics_read() {
        let committed = BTreeMap::from([
            (p("orders.events", 0), 90),
            (p("orders.events", 1), 50),
            (p("inventory.events", 0), 1),
        ]);
        let topics = vec!["orders.events".to_owned()];
        let lag = group_lag("inventory", Some(&topics), &watermarks(), &committed);
        assert_eq!(lag.lag, Some(10));
        assert_eq!(lag.positions.len(), 2, "only orders.events partitions");
    }

    #[test]
    fn a_partition_without_a_commit_counts_from_its_low_watermark() {
        let topics = vec!["orders.events".to_owned()];
        let lag = group_lag("inventory", Some(&topics), &watermarks(), &BTreeMap::new());
        assert_eq!(lag.lag, Some(100 + 40));
    }

    #[test]
    fn without_known_topics_the_group_reads_where_it_has_committed() {
        let committed = BTreeMap::from([(p("email.events", 0), 5)]);
        let lag = group_lag("audit", None, &watermarks(), &committed);
        assert_eq!(lag.lag, Some(2));
        assert_eq!(
            lag.positions.keys().collect::<Vec<_>>(),
            [&p("email.events", 0)]
        );
        let nothing = group_lag("typo", None, &watermarks(), &BTreeMap::new());
        assert_eq!(nothing.lag, Some(0));
    }

    #[test]
    fn caught_up_compares_positions_with_an_earlier_target() {
        let topics = vec!["inventory.events".to_owned()];
        let committed = BTreeMap::from([(p("inventory.events", 0), 25)]);
        let lag = group_lag("orders", Some(&topics), &watermarks(), &committed);
        assert!(lag.caught_up(&BTreeMap::from([(p("inventory.events", 0), 25)])));
        assert!(!lag.caught_up(&BTreeMap::from([(p("inventory.events", 0), 26)])));
        let unreadable = GroupLag {
            group: "orders".into(),
            positions: BTreeMap::new(),
            lag: None,
        };
        assert!(!unreadable.caught_up(&BTreeMap::new()));
    }

    #[test]
    fn group_specs_parse_names_and_topics() {
        assert_eq!(
            GroupSpec::parse("orders").unwrap(),
            GroupSpec {
                name: "orders".into(),
                topics: None
            }
        );
        assert_eq!(
            GroupSpec::parse("audit:orders.events+email.events")
                .unwrap()
                .topics,
            Some(vec!["orders.events".into(), "email.events".into()])
        );
        assert!(GroupSpec::parse("audit:").is_err());
        assert!(GroupSpec::parse(":orders.events").is_err());
        assert_eq!(known_topics("analytics").unwrap().len(), 3);
        assert_eq!(GroupSpec::defaults().len(), 4);
    }
}
