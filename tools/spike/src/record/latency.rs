//! HDR histograms of latencies in microseconds, and their summary in milliseconds.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// A histogram for latencies in microseconds: 3 significant digits (0.1 % error), growing
/// as needed, so no latency is ever out of range.
pub fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is a valid precision")
}

/// A smaller histogram (2 significant digits) for the per-second series.
pub fn coarse_histogram() -> Histogram<u64> {
    Histogram::new(2).expect("2 significant digits is a valid precision")
}

/// Records `latency` into `histogram` in microseconds (growing it as needed).
pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    // `record` resizes an auto-resizing histogram; `saturating_record` would clamp instead.
    if histogram.record(micros).is_err() {
        histogram.saturating_record(micros);
    }
}

/// Microseconds to milliseconds.
pub fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// How many latencies were recorded.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// The largest.
    pub max_ms: f64,
}

impl LatencySummary {
    /// The summary of `histogram`, or `None` when it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Option<Self> {
        if histogram.is_empty() {
            return None;
        }
        let q = |quantile: f64| ms(histogram.value_at_quantile(quantile));
        Some(Self {
            count: histogram.len(),
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: ms(histogram.max()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let mut h = histogram();
        for ms in 1..=1000 {
            record(&mut h, Duration::from_millis(ms));
        }
        let s = LatencySummary::of(&h).unwrap();
        assert_eq!(s.count, 1000);
        let near = |a: f64, b: f64| (a - b).abs() <= b * 0.002;
        assert!(near(s.p50_ms, 500.0), "{s:?}");
        assert!(near(s.p90_ms, 900.0), "{s:?}");
        assert!(near(s.p99_ms, 990.0), "{s:?}");
        assert!(near(s.p999_ms, 999.0), "{s:?}");
        assert!(near(s.max_ms, 1000.0), "{s:?}");
    }

    #[test]
    fn an_empty_histogram_has_no_summary_and_huge_latencies_fit() {
        let mut h = histogram();
        assert_eq!(LatencySummary::of(&h), None);
        record(&mut h, Duration::from_secs(3600));
        assert!(LatencySummary::of(&h).unwrap().max_ms >= 3_599_000.0);
    }
}
