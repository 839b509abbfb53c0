//! A dead-lettered record as read back from a DLQ, with typed access to the `dlq-*` headers
//! the consumer runner wrote, and [`Position`], the `<partition>:<offset>` operators type.

use std::fmt;
use std::str::FromStr;

use spine_kit::kafka::Headers;
use spine_kit::kafka::headers::dlq;

use crate::error::DlqError;

/// How many times a record was replayed from a DLQ. Added by `replay`, incremented when a
/// record that already carries it is replayed again.
pub const REPLAY_COUNT: &str = "replay-count";
/// When a record was parked, in Unix milliseconds.
pub const PARKED_AT: &str = "parked-at";
/// The DLQ partition a parked record came from.
pub const PARKED_FROM_PARTITION: &str = "parked-from-partition";
/// The DLQ offset a parked record came from.
pub const PARKED_FROM_OFFSET: &str = "parked-from-offset";
/// Suffix of the topic parked records move to: `<dlq>.parked`.
pub const PARKED_SUFFIX: &str = ".parked";

/// The parked topic of a DLQ.
pub fn parked_topic(dlq_topic: &str) -> String {
    format!("{dlq_topic}{PARKED_SUFFIX}")
}

/// Where a record sits in a topic: `<partition>:<offset>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Position {
    /// The partition.
    pub partition: i32,
    /// The offset in that partition.
    pub offset: i64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.partition, self.offset)
    }
}

impl FromStr for Position {
    type Err = DlqError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DlqError::BadPosition(s.to_owned());
        let (partition, offset) = s.trim().split_once(':').ok_or_else(bad)?;
        let partition: i32 = partition.parse().map_err(|_| bad())?;
        let offset: i64 = offset.parse().map_err(|_| bad())?;
        if partition < 0 || offset < 0 {
            return Err(bad());
        }
        Ok(Self { partition, offset })
    }
}

/// One record of a DLQ topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqRecord {
    /// Where it sits in the DLQ.
    pub position: Position,
    /// The original key.
    pub key: Option<Vec<u8>>,
    /// The original value.
    pub payload: Vec<u8>,
    /// The original headers followed by the `dlq-*` headers.
    pub headers: Headers,
    /// The DLQ record's broker timestamp, in Unix milliseconds.
    pub timestamp_ms: Option<i64>,
}

impl DlqRecord {
    /// The key as text (lossy for non-UTF-8 keys), or `-` when there is none.
    pub fn key_display(&self) -> String {
        self.key.as_deref().map_or_else(
            || "-".to_owned(),
            |k| String::from_utf8_lossy(k).into_owned(),
        )
    }

    /// The key, if it is UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }

    /// `dlq-original-topic`.
    pub fn original_topic(&self) -> Option<&str> {
        self.headers.get_str(dlq::ORIGINAL_TOPIC)
    }

    /// `dlq-original-partition`.
    pub fn original_partition(&self) -> Option<i32> {
        self.parsed(dlq::ORIGINAL_PARTITION)
    }

    /// `dlq-original-offset`.
    pub fn original_offset(&self) -> Option<i64> {
        self.parsed(dlq::ORIGINAL_OFFSET)
    }

    /// `dlq-error`.
    pub fn error(&self) -> Option<&str> {
        self.headers.get_str(dlq::ERROR)
    }

    /// `dlq-reason`: `poison` or `retries-exhausted`.
    pub fn reason(&self) -> Option<&str> {
        self.headers.get_str(dlq::REASON)
    }

    /// `dlq-consumer-group`.
    pub fn consumer_group(&self) -> Option<&str> {
        self.headers.get_str(dlq::CONSUMER_GROUP)
    }

    /// `dlq-attempts`.
    pub fn attempts(&self) -> Option<u32> {
        self.parsed(dlq::ATTEMPTS)
    }

    /// When it was dead-lettered (`dlq-failed-at`, else the broker timestamp), Unix ms.
    pub fn failed_at_ms(&self) -> Option<i64> {
        self.parsed(dlq::FAILED_AT).or(self.timestamp_ms)
    }

    /// How many times the record had been replayed before it failed this time (0 when the
    /// `replay-count` header is absent or unreadable).
    pub fn replay_count(&self) -> u32 {
        self.parsed(REPLAY_COUNT).unwrap_or(0)
    }

    /// It failed again after a replay: replaying it once more will not help without a code
    /// fix, so `replay` skips it (unless forced) and `park` is where it belongs.
    pub fn is_park_candidate(&self) -> bool {
        self.replay_count() >= 1
    }

    /// The event type and schema version from the value's single-object header, e.g.
    /// `OrderPlaced.v2`, or `undecodable` when the fingerprint is not in the catalog.
    pub fn event_type(&self) -> String {
        match spine_events::peek(&self.payload) {
            Ok(entry) => format!("{}.v{}", entry.name(), entry.version()),
            Err(_) => "undecodable".to_owned(),
        }
    }

    fn parsed<T: FromStr>(&self, name: &str) -> Option<T> {
        self.headers
            .get_str(name)
            .and_then(|v| v.trim().parse().ok())
    }
}

/// Now, in Unix milliseconds.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_parses_from_partition_colon_offset() {
        assert_eq!(
            "2:40".parse::<Position>().unwrap(),
            Position {
                partition: 2,
                offset: 40
            }
        );
        for bad in ["", "2", "2:", ":4", "a:1", "1:b", "-1:3", "1:2:3"] {
            let err = bad.parse::<Position>().unwrap_err();
            assert!(matches!(err, DlqError::BadPosition(_)), "{bad}: {err}");
            assert!(err.is_usage());
        }
    }

    #[test]
    fn a_record_replayed_before_is_a_park_candidate() {
        let mut record = DlqRecord {
            position: Position {
                partition: 0,
                offset: 0,
            },
            key: None,
            payload: vec![],
            headers: Headers::new(),
            timestamp_ms: None,
        };
        assert_eq!(record.replay_count(), 0);
        assert!(!record.is_park_candidate());
        assert_eq!(record.event_type(), "undecodable");
        record.headers.insert(REPLAY_COUNT, "1");
        assert!(record.is_park_candidate());
    }
}
