//! Choosing records: pure predicates over [`DlqRecord`]s, shared by `list`, `replay` and
//! `park`. Every given criterion must hold.

use std::time::{Duration, UNIX_EPOCH};

use crate::error::DlqError;
use crate::record::{DlqRecord, Position};

/// What an operator asked for. The default matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The original topic, exactly.
    pub topic: Option<String>,
    /// A substring of `dlq-error`, case-insensitive.
    pub error: Option<String>,
    /// The key, exactly.
    pub key: Option<String>,
    /// Dead-lettered at or after, Unix ms.
    pub since_ms: Option<i64>,
    /// Dead-lettered before, Unix ms.
    pub until_ms: Option<i64>,
    /// Only these DLQ positions (none: any position).
    pub positions: Vec<Position>,
}

impl Filter {
    /// Whether `record` meets every criterion.
    pub fn matches(&self, record: &DlqRecord) -> bool {
        let topic = self
            .topic
            .as_deref()
            .is_none_or(|t| record.original_topic() == Some(t));
        let error = self.error.as_deref().is_none_or(|needle| {
            record
                .error()
                .is_some_and(|e| e.to_lowercase().contains(&needle.to_lowercase()))
        });
        let key = self
            .key
            .as_deref()
            .is_none_or(|k| record.key_str() == Some(k));
        let failed_at = record.failed_at_ms();
        let since = self
            .since_ms
            .is_none_or(|since| failed_at.is_some_and(|at| at >= since));
        let until = self
            .until_ms
            .is_none_or(|until| failed_at.is_some_and(|at| at < until));
        let position = self.positions.is_empty() || self.positions.contains(&record.position);
        topic && error && key && since && until && position
    }

    /// Whether nothing narrows the selection: every record is chosen. Only such a replay
    /// moves the replay position over records it passes over (see [`crate::position`]).
    pub fn is_unfiltered(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the operator named positions explicitly.
    pub fn is_explicit(&self) -> bool {
        !self.positions.is_empty()
    }
}

/// Parses a `--since`/`--until` value into Unix milliseconds: digits are Unix milliseconds;
/// `2026-11-23T02:00:00Z` (RFC 3339, UTC; fractional seconds allowed) is an instant; a
/// duration such as `90m` or `2h 30m` means that long before `now_ms`.
pub fn parse_time(value: &str, now_ms: i64) -> Result<i64, DlqError> {
    let value = value.trim();
    let bad = || DlqError::BadTime(value.to_owned());
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().map_err(|_| bad());
    }
    if let Ok(at) = humantime::parse_rfc3339_weak(value) {
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map_err(|_| bad())?
            .as_millis();
        return i64::try_from(ms).map_err(|_| bad());
    }
    let ago: Duration = humantime::parse_duration(value).map_err(|_| bad())?;
    let ago = i64::try_from(ago.as_millis()).map_err(|_| bad())?;
    Ok(now_ms.saturating_sub(ago))
}

#[cfg(test)]
mod tests {
    use spine_kit::kafka::Headers;
    use spine_kit::kafka::headers::dlq;

    use super::*;

    fn record(topic: &str, key: &str, error: &str, failed_at: i64) -> DlqRecord {
        DlqRecord {
            position: Position {
                partition: 1,
                offset: 7,
            },
            key: Some(key.as_bytes().to_vec()),
            payload: b"x".to_vec(),
            headers: Headers::new()
                .with(dlq::ORIGINAL_TOPIC, topic)
                .with(dlq::ERROR, error)
                .with(dlq::FAILED_AT, failed_at.to_string()),
            timestamp_ms: None,
        }
    }

    #[test]
    fn the_default_filter_matches_everything() {
        assert!(Filter::default().matches(&record("orders.events", "o-1", "boom", 5)));
    }

    #[test]
    fn each_criterion_narrows_the_match() {
        let r = record("orders.events", "o-1", "Unknown fingerprint 42", 1_000);
        let f = |f: Filter| f.matches(&r);
        assert!(f(Filter {
            topic: Some("orders.events".into()),
            ..Filter::default()
        }));
        assert!(!f(Filter {
            topic: Some("orders".into()),
            ..Filter::default()
        }));
        assert!(f(Filter {
            error: Some("unknown FINGERPRINT".into()),
            ..Filter::default()
        }));
        assert!(!f(Filter {
            error: Some("timeout".into()),
            ..Filter::default()
        }));
        assert!(f(Filter {
            key: Some("o-1".into()),
            ..Filter::default()
        }));
        assert!(!f(Filter {
            key: Some("o-2".into()),
            ..Filter::default()
        }));
        assert!(f(Filter {
            since_ms: Some(1_000),
            until_ms: Some(1_001),
            ..Filter::default()
        }));
        assert!(!f(Filter {
            since_ms: Some(1_001),
            ..Filter::default()
        }));
        assert!(!f(Filter {
            until_ms: Some(1_000),
            ..Filter::default()
        }));
        assert!(f(Filter {
            positions: vec!["1:7".parse().unwrap()],
            ..Filter::default()
        }));
        assert!(!f(Filter {
            positions: vec!["1:8".parse().unwrap()],
            ..Filter::default()
        }));
        assert!(!f(Filter {
            topic: Some("orders.events".into()),
            key: Some("o-2".into()),
            ..Filter::default()
        }));
    }

    #[test]
    fn times_are_unix_millis_rfc3339_or_a_duration_ago() {
        assert_eq!(parse_time("1700000000000", 0).unwrap(), 1_700_000_000_000);
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", 0).unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20.5Z", 0).unwrap(),
            1_700_000_000_500
        );
        assert_eq!(
            parse_time("2h", 10_000_000).unwrap(),
            10_000_000 - 7_200_000
        );
        for bad in ["", "yesterday", "2023-13-01T00:00:00Z", "-5"] {
            let err = parse_time(bad, 0).unwrap_err();
            assert!(err.is_usage(), "{bad}");
        }
    }
}
