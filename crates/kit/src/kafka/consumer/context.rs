//! The librdkafka callbacks of the runner's consumer: on revoke, stop the revoked partitions'
//! records, store what they finished and commit; on assign, apply the pause state; publish lag
//! from librdkafka's statistics.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;

use super::process::Outcome;
use super::runner::store_offset;
use super::shared::{Shared, lock};
use super::tracker::Partition;

/// Callbacks run on the thread that polls the consumer, i.e. inside the runner's `recv()`.
pub struct RunnerContext {
    shared: Arc<Shared>,
    /// How long a revoke lets running handlers finish before it aborts them.
    revoke_patience: Duration,
}

impl RunnerContext {
    pub(super) fn new(shared: Arc<Shared>, revoke_patience: Duration) -> Self {
        Self {
            shared,
            revoke_patience,
        }
    }

    /// Hands partitions back: no record of theirs runs any more when this returns, and what
    /// finished is stored and committed, so their next owner starts where this member stopped.
    fn revoke(&self, consumer: &BaseConsumer<Self>, list: &TopicPartitionList) {
        let partitions: Vec<Partition> = partition_list(list).collect();
        let completions = self.shared.revoke(&partitions, self.revoke_patience);
        {
            let mut tracker = lock(&self.shared.tracker);
            for done in completions {
                match done.outcome {
                    Outcome::Handled | Outcome::DeadLettered => {
                        if let (_, Some(offset)) = tracker.complete_many(&done.tickets, 0)
                            && let Some(ticket) = done.tickets.first()
                        {
                            store_offset(consumer, &ticket.partition, offset);
                        }
                    }
                    Outcome::Abandoned => {}
                    // Still the dispatcher's to act on: it stops the runner.
                    Outcome::Failed(_) => self.shared.finish(done),
                }
            }
            for partition in &partitions {
                tracker.revoke(partition);
            }
        }
        commit_sync(consumer, "revoke");
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
                        "group" => self.shared.group.to_string(),
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
        let group = &self.shared.group;
        match rebalance {
            Rebalance::Revoke(partitions) => {
                self.shared.awaiting_assignment();
                self.revoke(consumer, partitions);
                tracing::info!(group = %group, partitions = partitions.count(), "partitions revoked");
            }
            Rebalance::Assign(partitions) => {
                tracing::info!(group = %group, partitions = partitions.count(), "partitions assigned");
            }
            Rebalance::Error(err) => {
                tracing::warn!(group = %group, error = %err, "rebalance failed");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // librdkafka keeps an application's pause flag across unassign and reassign, so a
        // partition that comes back may still be paused from before: set it explicitly, to the
        // runner's current state, on every new assignment.
        if let Rebalance::Assign(partitions) = rebalance {
            self.shared.assigned();
            let paused = self.shared.paused();
            let result = if paused {
                consumer.pause(partitions)
            } else {
                consumer.resume(partitions)
            };
            if let Err(err) = result {
                tracing::warn!(group = %self.shared.group, error = %err, paused,
                    "cannot set the pause state of new partitions");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(err) => {
                metrics::counter!("spine_consumer_commit_errors_total", "group" => self.shared.group.to_string())
                    .increment(1);
                tracing::warn!(group = %self.shared.group, error = %err, "offset commit failed");
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
