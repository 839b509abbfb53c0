//! [`DlqError`]: what can go wrong, split into the operator's mistakes (exit code 2) and
//! failures of the broker or the network (exit code 1).

use rdkafka::error::KafkaError;
use spine_kit::kafka::PublishError;
use spine_kit::kafka::admin::TopicError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// The DLQ topic does not exist on the cluster.
    #[error(
        "unknown DLQ topic `{0}` (not in the cluster metadata; check --dlq/--group and --brokers)"
    )]
    UnknownTopic(String),
    /// A position is not `<partition>:<offset>`.
    #[error("bad position `{0}`: expected <partition>:<offset>, e.g. 0:42")]
    BadPosition(String),
    /// A `--since`/`--until` value is neither RFC 3339, Unix milliseconds nor a duration.
    #[error(
        "bad time `{0}`: expected RFC 3339 in UTC (2026-11-23T02:00:00Z), Unix milliseconds, or a duration ago (2h)"
    )]
    BadTime(String),
    /// No record at a position the operator named.
    #[error("no record at {position} in `{topic}`")]
    NotFound {
        /// The DLQ topic.
        topic: String,
        /// The position asked for.
        position: String,
    },
    /// Any other invalid argument.
    #[error("{0}")]
    Usage(String),
    /// The broker could not be reached or refused a request.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// Reading the DLQ did not reach its end in time.
    #[error("timed out reading `{0}` up to its high watermarks")]
    ReadTimeout(String),
    /// A record could not be published.
    #[error("publish failed: {0}")]
    Publish(#[from] PublishError),
    /// Output could not be written.
    #[error("cannot write output: {0}")]
    Io(#[from] std::io::Error),
    /// A background task failed.
    #[error("{0}")]
    Internal(String),
    /// The parked topic could not be created.
    #[error("{0}")]
    Topic(#[from] TopicError),
}

impl DlqError {
    /// Whether the operator's input is at fault (exit code 2) rather than the system (1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::UnknownTopic(_)
                | Self::BadPosition(_)
                | Self::BadTime(_)
                | Self::NotFound { .. }
                | Self::Usage(_)
        )
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        if self.is_usage() { 2 } else { 1 }
    }
}
