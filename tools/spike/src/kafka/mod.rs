//! The Kafka side of a run: the tool's own reader of outcome and email facts
//! ([`outcomes`]) and the consumer-group lag sampler ([`lag`]). Both run on blocking threads
//! with rdkafka's `BaseConsumer`, built from the kit's client configuration.

pub mod lag;
pub mod outcomes;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use spine_kit::settings::KafkaSettings;

pub use lag::{GroupLag, GroupSpec, LagSample, LagSampler};
pub use outcomes::OutcomeReader;

/// A topic and partition.
pub type Partition = (String, i32);

/// Why the Kafka side could not start.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// A client could not be created or a request failed.
    #[error("kafka at {bootstrap}: {source}")]
    Client {
        /// The bootstrap servers.
        bootstrap: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// A topic the tool reads does not exist (or has no partitions).
    #[error(
        "topic `{topic}` not found on {bootstrap}: start the services first (they create their topics), or pass --no-e2e"
    )]
    TopicMissing {
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        bootstrap: String,
    },
}

/// The topics every event of the catalog is published on: `orders.events`,
/// `inventory.events`, `email.events`.
pub fn event_topics() -> Vec<String> {
    let topics: BTreeSet<&str> = spine_events::catalog()
        .entries()
        .iter()
        .map(|entry| entry.topic())
        .collect();
    topics.into_iter().map(str::to_owned).collect()
}

/// The kit's base client configuration (bootstrap servers, client id, passthrough
/// properties such as `security.protocol`), never committing anything.
pub fn client_config(settings: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut config = spine_kit::kafka::config::base_config(settings, client_id);
    config
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    config
}

fn client_error(settings: &KafkaSettings) -> impl Fn(KafkaError) -> KafkaSetupError + '_ {
    move |source| KafkaSetupError::Client {
        bootstrap: settings.bootstrap_servers.clone(),
        source,
    }
}

/// The partition numbers of `topic`, waiting up to `wait` for it to show up in the metadata.
pub fn partitions(
    consumer: &BaseConsumer,
    settings: &KafkaSettings,
    topic: &str,
    wait: Duration,
) -> Result<Vec<i32>, KafkaSetupError> {
    let deadline = Instant::now() + wait;
    loop {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5));
        match metadata {
            Ok(metadata) => {
                let found = metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic && t.error().is_none())
                    .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
                    .filter(|partitions| !partitions.is_empty());
                if let Some(partitions) = found {
                    return Ok(partitions);
                }
                if Instant::now() >= deadline {
                    return Err(KafkaSetupError::TopicMissing {
                        topic: topic.to_owned(),
                        bootstrap: settings.bootstrap_servers.clone(),
                    });
                }
            }
            Err(e) if Instant::now() >= deadline => return Err(client_error(settings)(e)),
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
