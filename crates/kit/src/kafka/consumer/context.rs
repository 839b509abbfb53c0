//! The librdkafka callbacks of the runner's consumer: commit on revoke, note revoked
//! partitions for the dispatcher, and publish lag from librdkafka's statistics.

use std::sync::{Arc, Mutex};

use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;

use super::tracker::Partition;

/// Callbacks run on the thread that polls the consumer, i.e. inside the runner's `recv()`.
pub struct RunnerContext {
    group: String,
    revoked: Arc<Mutex<Vec<Partition>>>,
}

impl RunnerContext {
    pub(super) fn new(group: &str) -> (Self, Arc<Mutex<Vec<Partition>>>) {
        let revoked = Arc::new(Mutex::new(Vec::new()));
        (
            Self {
                group: group.to_owned(),
                revoked: revoked.clone(),
            },
            revoked,
        )
    }
}

impl ClientContext for RunnerContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                // librdkafka reports -1 for partitions it doesn't consume (and the internal -1).
                if *partition >= 0 && p.consumer_lag >= 0 {
                    metrics::gauge!(
                        "spine_consumer_lag",
                        "group" => self.group.clone(),
                        "topic" => topic.clone(),
                        "partition" => partition.to_string(),
                    )
                    .set(p.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for RunnerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(partitions) => {
                // Commit what is done before another member takes these partitions over, so
                // it redelivers as little as possible. Records still running are redelivered to
                // it: at-least-once, made idempotent by the handler's inbox.
                commit_sync(consumer, "revoke");
                let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
                revoked.extend(partition_list(partitions));
                tracing::info!(group = %self.group, partitions = partitions.count(), "partitions revoked");
            }
            Rebalance::Assign(partitions) => {
                tracing::info!(group = %self.group, partitions = partitions.count(), "partitions assigned");
            }
            Rebalance::Error(err) => {
                tracing::warn!(group = %self.group, error = %err, "rebalance failed");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(err) => {
                metrics::counter!("spine_consumer_commit_errors_total", "group" => self.group.clone())
                    .increment(1);
                tracing::warn!(group = %self.group, error = %err, "offset commit failed");
            }
        }
    }
}

/// Commits the stored offsets synchronously. "Nothing to commit" is not an error.
pub(super) fn commit_sync<C: Consumer<X>, X: ConsumerContext>(consumer: &C, why: &str) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(err) => tracing::warn!(error = %err, why, "synchronous commit failed"),
    }
}

pub(super) fn partition_list(list: &TopicPartitionList) -> impl Iterator<Item = Partition> + '_ {
    list.elements().into_iter().map(|e| Partition {
        topic: Arc::from(e.topic()),
        partition: e.partition(),
    })
}
