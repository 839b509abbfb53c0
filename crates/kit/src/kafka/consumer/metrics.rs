//! The runner's per-record metrics, with their handles resolved once per topic: looking a
//! series up by name and labels (and allocating the label strings) for every record cost more
//! than the increment itself.

use std::sync::{Arc, PoisonError, RwLock};

use metrics::{Counter, Histogram};

use super::handler::HandlerError;

/// The series of one group and topic.
pub(super) struct TopicMetrics {
    /// `spine_consumer_handler_seconds`.
    pub handler_seconds: Histogram,
    /// `spine_consumer_retries_total`.
    pub retries: Counter,
    /// `spine_consumer_records_total{outcome="handled"}`.
    pub handled: Counter,
    /// `spine_consumer_records_total{outcome="dead_lettered"}`.
    pub dead_lettered: Counter,
    /// `spine_consumer_records_total{outcome="skipped"}`: records the handler said it does
    /// nothing with ([`super::Handler::skips`]), done at once without a task or rate slot.
    pub skipped: Counter,
    /// `spine_consumer_errors_total{class}`, one per class.
    errors: [Counter; 4],
}

impl TopicMetrics {
    fn new(group: &str, topic: &str) -> Self {
        let labels = [("group", group.to_owned()), ("topic", topic.to_owned())];
        let outcome = |outcome: &'static str| {
            metrics::counter!("spine_consumer_records_total",
                "group" => group.to_owned(), "topic" => topic.to_owned(), "outcome" => outcome)
        };
        let error = |class: &'static str| {
            metrics::counter!("spine_consumer_errors_total",
                "group" => group.to_owned(), "topic" => topic.to_owned(), "class" => class)
        };
        Self {
            handler_seconds: metrics::histogram!("spine_consumer_handler_seconds", &labels),
            retries: metrics::counter!("spine_consumer_retries_total", &labels),
            handled: outcome("handled"),
            dead_lettered: outcome("dead_lettered"),
            skipped: outcome("skipped"),
            errors: ["retryable", "unavailable", "poison", "fatal"].map(error),
        }
    }

    /// The error counter of `err`'s class.
    pub fn error(&self, err: &HandlerError) -> &Counter {
        let index = match err {
            HandlerError::Retryable(_) => 0,
            HandlerError::Unavailable(_) => 1,
            HandlerError::Poison(_) => 2,
            HandlerError::Fatal(_) => 3,
        };
        &self.errors[index]
    }
}

/// A group's [`TopicMetrics`], made on first use of each topic. A runner follows a few
/// topics, and every record looks its topic up: a scan of a short list beats hashing the name.
pub(super) struct ConsumerMetrics {
    group: Arc<str>,
    topics: RwLock<Vec<(Box<str>, Arc<TopicMetrics>)>>,
}

impl ConsumerMetrics {
    pub fn new(group: &str) -> Self {
        Self {
            group: Arc::from(group),
            topics: RwLock::default(),
        }
    }

    /// The handles of `topic`. Every outcome series exists from its first use at 0, so that
    /// `increase()` in an alert sees the first dead letter too.
    pub fn topic(&self, topic: &str) -> Arc<TopicMetrics> {
        // The maps are never left half-written: a poisoned lock is fine to use.
        let find = |topics: &[(Box<str>, Arc<TopicMetrics>)]| {
            topics
                .iter()
                .find(|(name, _)| **name == *topic)
                .map(|(_, metrics)| metrics.clone())
        };
        if let Some(found) = find(&self.topics.read().unwrap_or_else(PoisonError::into_inner)) {
            return found;
        }
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = find(&topics) {
            return found;
        }
        let made = TopicMetrics::new(&self.group, topic);
        made.handled.increment(0);
        made.dead_lettered.increment(0);
        let made = Arc::new(made);
        topics.push((Box::from(topic), made.clone()));
        made
    }
}
