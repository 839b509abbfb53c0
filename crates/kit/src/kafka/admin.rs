//! Topic provisioning: create what is missing at startup, leave what exists alone.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::config::base_config;
use crate::settings::KafkaSettings;

/// A topic the service needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partitions when created.
    pub partitions: i32,
    /// Replication factor when created.
    pub replication_factor: i32,
}

impl TopicSpec {
    /// A topic with the configured default partitions and replication.
    pub fn new(name: impl Into<String>, settings: &KafkaSettings) -> Self {
        Self {
            name: name.into(),
            partitions: settings.topics.partitions,
            replication_factor: settings.topics.replication_factor,
        }
    }
}

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The admin client could not be created or the request failed.
    #[error("cannot create topics: {0}")]
    Kafka(#[from] KafkaError),
    /// The broker refused to create a topic.
    #[error("broker refused to create topic `{topic}`: {code}")]
    Refused {
        /// The topic.
        topic: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
    /// The topic was created but never showed up in the metadata.
    #[error("topic `{0}` not visible in metadata after creation")]
    NotVisible(String),
}

/// Creates each missing topic and waits until all of them appear in the cluster metadata.
/// Topics that already exist are left as they are (their partition count is not changed).
#[tracing::instrument(skip_all, fields(topics = topics.len()))]
pub async fn ensure_topics(
    settings: &KafkaSettings,
    topics: &[TopicSpec],
) -> Result<(), TopicError> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = base_config(settings, "spine-admin").create()?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                &t.name,
                t.partitions,
                TopicReplication::Fixed(t.replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(topic) => tracing::info!(topic, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicError::Refused { topic, code }),
        }
    }
    // Metadata propagates asynchronously on a real cluster; wait so the caller can subscribe.
    let deadline = Instant::now() + Duration::from_secs(15);
    for topic in topics {
        loop {
            let metadata = admin
                .inner()
                .fetch_metadata(Some(&topic.name), Duration::from_secs(5))?;
            let visible = metadata.topics().iter().any(|t| {
                t.name() == topic.name && t.error().is_none() && !t.partitions().is_empty()
            });
            if visible {
                break;
            }
            if Instant::now() > deadline {
                return Err(TopicError::NotVisible(topic.name.clone()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Creates the named topics (with the configured partitions and replication) unless
/// `kafka.topics.create_missing` is off, as every service does at startup.
pub async fn provision(settings: &KafkaSettings, names: &[&str]) -> anyhow::Result<()> {
    if !settings.topics.create_missing {
        return Ok(());
    }
    let specs: Vec<TopicSpec> = names
        .iter()
        .map(|name| TopicSpec::new(*name, settings))
        .collect();
    ensure_topics(settings, &specs).await.map_err(|err| {
        anyhow::anyhow!(
            "provisioning topics on {}: {err}",
            settings.bootstrap_servers
        )
    })
}
