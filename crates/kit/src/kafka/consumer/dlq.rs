//! Dead-lettering: the original record, untouched, plus why and where it failed.

use crate::kafka::headers::{Headers, dlq};
use crate::kafka::producer::OutgoingRecord;

use super::handler::Record;

/// Why a record was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// The handler said it can never succeed.
    Poison,
    /// The handler kept failing with retryable errors until the attempts ran out.
    RetriesExhausted,
}

impl DeadLetterReason {
    /// The `dlq-reason` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Poison => "poison",
            Self::RetriesExhausted => "retries-exhausted",
        }
    }
}

/// The DLQ record for `record`: same key, same value, the original headers (trace context
/// included), then the `dlq-*` headers.
pub fn dead_letter(
    dlq_topic: &str,
    group: &str,
    record: &Record,
    reason: DeadLetterReason,
    error: &str,
) -> OutgoingRecord {
    let mut headers: Headers = record.headers.clone();
    headers
        .insert(dlq::ERROR, error)
        .insert(dlq::REASON, reason.as_str())
        .insert(dlq::ORIGINAL_TOPIC, record.topic.as_str())
        .insert(dlq::ORIGINAL_PARTITION, record.partition.to_string())
        .insert(dlq::ORIGINAL_OFFSET, record.offset.to_string())
        .insert(dlq::CONSUMER_GROUP, group)
        .insert(dlq::ATTEMPTS, record.attempt.to_string())
        .insert(dlq::FAILED_AT, now_millis().to_string());
    OutgoingRecord {
        topic: dlq_topic.to_owned(),
        key: record.key.clone(),
        payload: record.payload.clone().unwrap_or_default(),
        headers,
    }
}

fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}
