//! Measurements, their medians over rounds, the JSON report and the table.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::workload::MessageSize;

/// Records counted over a measured interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Records the interval covers.
    pub records: u64,
    /// How long it took.
    pub elapsed: Duration,
}

impl Measurement {
    /// Records per second (0 for an empty interval).
    pub fn per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.records as f64 / secs
        } else {
            0.0
        }
    }
}

/// The median of `values` (the mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[mid]),
        _ => Some((sorted[mid - 1] + sorted[mid]) / 2.0),
    }
}

/// `part / whole`, or 0 when `whole` is 0.
pub fn share(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 0.0 }
}

/// The four paths measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// A plain rdkafka producer.
    RawProduce,
    /// The kit's `Publisher`, relay style.
    KitProduce,
    /// A plain rdkafka consumer.
    RawConsume,
    /// The kit's `ConsumerRunner` with a decoding no-op handler.
    KitConsume,
}

impl Path {
    /// All paths, in table order.
    pub const ALL: [Path; 4] = [
        Path::RawProduce,
        Path::KitProduce,
        Path::RawConsume,
        Path::KitConsume,
    ];

    /// The table's row label.
    pub fn label(self) -> &'static str {
        match self {
            Path::RawProduce => "raw produce",
            Path::KitProduce => "kit produce",
            Path::RawConsume => "raw consume",
            Path::KitConsume => "kit consume",
        }
    }
}

/// Rates in msgs/s per round, for each path.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rounds {
    /// Plain producer, one rate per round.
    pub raw_produce: Vec<f64>,
    /// Kit producer, one rate per round.
    pub kit_produce: Vec<f64>,
    /// Plain consumer, one rate per round.
    pub raw_consume: Vec<f64>,
    /// Kit consumer runner, one rate per round.
    pub kit_consume: Vec<f64>,
}

impl Rounds {
    /// The rates of one path.
    pub fn of(&self, path: Path) -> &[f64] {
        match path {
            Path::RawProduce => &self.raw_produce,
            Path::KitProduce => &self.kit_produce,
            Path::RawConsume => &self.raw_consume,
            Path::KitConsume => &self.kit_consume,
        }
    }

    /// Adds a round's rate to a path.
    pub fn push(&mut self, path: Path, rate: f64) {
        match path {
            Path::RawProduce => self.raw_produce.push(rate),
            Path::KitProduce => self.kit_produce.push(rate),
            Path::RawConsume => self.raw_consume.push(rate),
            Path::KitConsume => self.kit_consume.push(rate),
        }
    }

    /// The median rate of a path (0 with no rounds).
    pub fn median(&self, path: Path) -> f64 {
        median(self.of(path)).unwrap_or(0.0)
    }
}

/// The result, as written by `--json`: medians over rounds; a share is the kit's median over
/// the raw median (1.0 = the kit keeps all of it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Key, value and header bytes of one record.
    pub message_bytes: usize,
    /// Records per measurement.
    pub records: u64,
    /// Median msgs/s of the plain producer.
    pub raw_produce_per_s: f64,
    /// Median msgs/s of the kit's producer.
    pub kit_produce_per_s: f64,
    /// `kit_produce_per_s / raw_produce_per_s`.
    pub kit_produce_share: f64,
    /// Median msgs/s of the plain consumer.
    pub raw_consume_per_s: f64,
    /// Median msgs/s of the kit's consumer runner.
    pub kit_consume_per_s: f64,
    /// `kit_consume_per_s / raw_consume_per_s`.
    pub kit_consume_share: f64,
}

impl Report {
    /// Medians and shares of `rounds`.
    pub fn new(message_bytes: usize, records: u64, rounds: &Rounds) -> Self {
        let raw_produce = rounds.median(Path::RawProduce);
        let kit_produce = rounds.median(Path::KitProduce);
        let raw_consume = rounds.median(Path::RawConsume);
        let kit_consume = rounds.median(Path::KitConsume);
        Self {
            message_bytes,
            records,
            raw_produce_per_s: raw_produce,
            kit_produce_per_s: kit_produce,
            kit_produce_share: share(kit_produce, raw_produce),
            raw_consume_per_s: raw_consume,
            kit_consume_per_s: kit_consume,
            kit_consume_share: share(kit_consume, raw_consume),
        }
    }

    /// The share column of a path's row: empty for the raw paths.
    fn share_of(&self, path: Path) -> Option<f64> {
        match path {
            Path::KitProduce => Some(self.kit_produce_share),
            Path::KitConsume => Some(self.kit_consume_share),
            Path::RawProduce | Path::RawConsume => None,
        }
    }
}

/// The table printed on stdout: a header line, then one row per path with each round's rate,
/// the median and the kit's share of the raw median.
pub fn table(report: &Report, rounds: &Rounds, size: &MessageSize, context: &str) -> String {
    let count = Path::ALL
        .iter()
        .map(|p| rounds.of(*p).len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} records/measurement, {} round(s), message {} bytes (key {} + value {} + {} headers {}); {context}",
        report.records,
        count,
        report.message_bytes,
        size.key,
        size.value,
        size.header_count,
        size.headers,
    );
    let _ = write!(out, "{:<12}", "msgs/s");
    for round in 1..=count {
        let _ = write!(out, " {:>10}", format!("round {round}"));
    }
    let _ = writeln!(out, " {:>10} {:>8}", "median", "share");
    for path in Path::ALL {
        let _ = write!(out, "{:<12}", path.label());
        let rates = rounds.of(path);
        for round in 0..count {
            match rates.get(round) {
                Some(rate) => {
                    let _ = write!(out, " {rate:>10.0}");
                }
                None => {
                    let _ = write!(out, " {:>10}", "-");
                }
            }
        }
        match median(rates) {
            Some(median) => {
                let _ = write!(out, " {median:>10.0}");
            }
            None => {
                let _ = write!(out, " {:>10}", "-");
            }
        }
        match report.share_of(path) {
            Some(share) => {
                let _ = writeln!(out, " {:>7.1}%", share * 100.0);
            }
            None => {
                let _ = writeln!(out, " {:>8}", "");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn a_measurement_rate_is_records_over_seconds() {
        let m = Measurement {
            records: 500,
            elapsed: Duration::from_millis(250),
        };
        assert_eq!(m.per_second(), 2000.0);
        let empty = Measurement {
            records: 5,
            elapsed: Duration::ZERO,
        };
        assert_eq!(empty.per_second(), 0.0);
    }

    fn rounds() -> Rounds {
        Rounds {
            raw_produce: vec![100.0, 300.0, 200.0],
            kit_produce: vec![50.0, 150.0, 100.0],
            raw_consume: vec![400.0, 400.0, 400.0],
            kit_consume: vec![100.0, 300.0, 200.0],
        }
    }

    #[test]
    fn the_report_has_medians_and_shares_of_medians() {
        let report = Report::new(300, 1000, &rounds());
        assert_eq!(report.raw_produce_per_s, 200.0);
        assert_eq!(report.kit_produce_per_s, 100.0);
        assert_eq!(report.kit_produce_share, 0.5);
        assert_eq!(report.kit_consume_share, 0.5);
        assert_eq!(Report::new(1, 1, &Rounds::default()).kit_produce_share, 0.0);
    }

    #[test]
    fn the_json_report_has_exactly_the_documented_fields() {
        let json = serde_json::to_value(Report::new(300, 1000, &rounds())).unwrap();
        let object = json.as_object().unwrap();
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "kit_consume_per_s",
                "kit_consume_share",
                "kit_produce_per_s",
                "kit_produce_share",
                "message_bytes",
                "raw_consume_per_s",
                "raw_produce_per_s",
                "records"
            ]
        );
        assert_eq!(json["message_bytes"], 300);
        assert_eq!(json["records"], 1000);
        assert_eq!(json["kit_produce_share"], 0.5);
    }

    #[test]
    fn the_table_has_a_row_per_path_with_rounds_median_and_share() {
        let size = MessageSize {
            key: 36,
            value: 200,
            headers: 64,
            header_count: 5,
        };
        let report = Report::new(size.total(), 1000, &rounds());
        let table = table(&report, &rounds(), &size, "test");
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 6, "{table}");
        assert!(lines[0].contains("message 300 bytes"), "{table}");
        assert!(lines[1].contains("round 3") && lines[1].contains("median"));
        assert!(lines[3].starts_with("kit produce") && lines[3].ends_with("50.0%"));
        assert!(lines[4].starts_with("raw consume") && lines[4].trim_end().ends_with("400"));
    }
}
