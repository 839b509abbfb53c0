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

/// The work both sides do per record; each is measured raw and through the kit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Produce records whose value and headers are already encoded (the outbox relay's case).
    ProduceBytes,
    /// Encode each event with `spine_events::encode`, then produce it.
    ProduceEncode,
    /// Consume records and read only each value's length.
    ConsumeNoDecode,
    /// Consume records and decode each value with `spine_events::decode`.
    ConsumeDecode,
    /// [`Work::ConsumeNoDecode`] through the kit's batch path (`Batched`), as orders,
    /// inventory and analytics consume; the raw side does the same per-record work.
    ConsumeBatchNoDecode,
    /// [`Work::ConsumeDecode`] through the kit's batch path (`Batched`).
    ConsumeBatchDecode,
}

impl Work {
    /// All kinds of work, in table order.
    pub const ALL: [Work; 6] = [
        Work::ProduceBytes,
        Work::ProduceEncode,
        Work::ConsumeNoDecode,
        Work::ConsumeDecode,
        Work::ConsumeBatchNoDecode,
        Work::ConsumeBatchDecode,
    ];

    /// Whether this is a producing work.
    pub fn produces(self) -> bool {
        matches!(self, Work::ProduceBytes | Work::ProduceEncode)
    }

    /// Whether a consuming work decodes each value (`None` for a producing work).
    pub fn decodes(self) -> Option<bool> {
        match self {
            Work::ConsumeNoDecode | Work::ConsumeBatchNoDecode => Some(false),
            Work::ConsumeDecode | Work::ConsumeBatchDecode => Some(true),
            Work::ProduceBytes | Work::ProduceEncode => None,
        }
    }

    /// Whether the kit side of a consuming work runs the batch path.
    pub fn batched(self) -> bool {
        matches!(self, Work::ConsumeBatchNoDecode | Work::ConsumeBatchDecode)
    }

    /// The table's row label (without the side).
    pub fn label(self) -> &'static str {
        match self {
            Work::ProduceBytes => "produce, pre-encoded",
            Work::ProduceEncode => "produce, encode each",
            Work::ConsumeNoDecode => "consume, no decode",
            Work::ConsumeDecode => "consume, decode",
            Work::ConsumeBatchNoDecode => "consume batch, no decode",
            Work::ConsumeBatchDecode => "consume batch, decode",
        }
    }

    /// What both sides do, as the report states it.
    pub fn description(self) -> &'static str {
        match self {
            Work::ProduceBytes => {
                "both send stored bytes (value and headers encoded before timing); kit: the relay's per-row span, context injection and Publisher::send"
            }
            Work::ProduceEncode => {
                "both encode each event with spine_events::encode inside the interval; kit: OutgoingRecord::from_event, then the relay's per-row work"
            }
            Work::ConsumeNoDecode => {
                "both only read each value's length; kit: ConsumerRunner with a per-record handler that does nothing with the bytes (the path email uses)"
            }
            Work::ConsumeDecode => {
                "both decode each value as OrderPlaced with spine_events::decode; kit: ConsumerRunner with a decoding per-record handler"
            }
            Work::ConsumeBatchNoDecode => {
                "both only read each value's length; kit: ConsumerRunner with Batched::new(a batch handler that does nothing with the bytes), the path orders, inventory and analytics use"
            }
            Work::ConsumeBatchDecode => {
                "both decode each value as OrderPlaced with spine_events::decode; kit: ConsumerRunner with Batched::new(a batch handler decoding each record)"
            }
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Which client does the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A plain rdkafka client (the physical limit).
    Raw,
    /// The kit (`Publisher` relay style, or `ConsumerRunner`).
    Kit,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Raw => "raw",
            Side::Kit => "kit",
        }
    }
}

/// Rates in msgs/s per round, for each work and side.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rounds {
    rates: [[Vec<f64>; 2]; Work::ALL.len()],
}

impl Rounds {
    /// The rates of one work on one side.
    pub fn of(&self, work: Work, side: Side) -> &[f64] {
        &self.rates[work.index()][side as usize]
    }

    /// Adds a round's rate.
    pub fn push(&mut self, work: Work, side: Side, rate: f64) {
        self.rates[work.index()][side as usize].push(rate);
    }

    /// The median rate of a work on a side (0 with no rounds).
    pub fn median(&self, work: Work, side: Side) -> f64 {
        median(self.of(work, side)).unwrap_or(0.0)
    }
}

/// One like-for-like comparison: medians over rounds; the share is the kit's median over the
/// raw median (1.0 = the kit keeps all of it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pair {
    /// What both sides do per record.
    pub work: &'static str,
    /// Median msgs/s of the plain client.
    pub raw_per_s: f64,
    /// Median msgs/s of the kit.
    pub kit_per_s: f64,
    /// `kit_per_s / raw_per_s` (0 when nothing was measured).
    pub kit_share: f64,
}

impl Pair {
    fn new(rounds: &Rounds, work: Work) -> Self {
        let raw = rounds.median(work, Side::Raw);
        let kit = rounds.median(work, Side::Kit);
        Self {
            work: work.description(),
            raw_per_s: raw,
            kit_per_s: kit,
            kit_share: share(kit, raw),
        }
    }
}

/// The result, as written by `--json`: one [`Pair`] per kind of work.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Key, value and header bytes of one record.
    pub message_bytes: usize,
    /// Records per measurement.
    pub records: u64,
    /// Producing stored (pre-encoded) records.
    pub produce_bytes: Pair,
    /// Producing with an encode per event.
    pub produce_encode: Pair,
    /// Consuming without decoding.
    pub consume_no_decode: Pair,
    /// Consuming with a decode per record.
    pub consume_decode: Pair,
    /// Consuming without decoding, the kit on its batch path.
    pub consume_batch_no_decode: Pair,
    /// Consuming with a decode per record, the kit on its batch path.
    pub consume_batch_decode: Pair,
}

impl Report {
    /// Medians and shares of `rounds`.
    pub fn new(message_bytes: usize, records: u64, rounds: &Rounds) -> Self {
        Self {
            message_bytes,
            records,
            produce_bytes: Pair::new(rounds, Work::ProduceBytes),
            produce_encode: Pair::new(rounds, Work::ProduceEncode),
            consume_no_decode: Pair::new(rounds, Work::ConsumeNoDecode),
            consume_decode: Pair::new(rounds, Work::ConsumeDecode),
            consume_batch_no_decode: Pair::new(rounds, Work::ConsumeBatchNoDecode),
            consume_batch_decode: Pair::new(rounds, Work::ConsumeBatchDecode),
        }
    }

    /// The comparison of one kind of work.
    pub fn pair(&self, work: Work) -> &Pair {
        match work {
            Work::ProduceBytes => &self.produce_bytes,
            Work::ProduceEncode => &self.produce_encode,
            Work::ConsumeNoDecode => &self.consume_no_decode,
            Work::ConsumeDecode => &self.consume_decode,
            Work::ConsumeBatchNoDecode => &self.consume_batch_no_decode,
            Work::ConsumeBatchDecode => &self.consume_batch_decode,
        }
    }
}

/// The table printed on stdout: a header line, then two rows (raw, kit) per kind of work with
/// each round's rate, the median and, on the kit's row, its share of the raw median; then what
/// each kind of work is.
pub fn table(report: &Report, rounds: &Rounds, size: &MessageSize, context: &str) -> String {
    let count = Work::ALL
        .iter()
        .flat_map(|w| {
            [
                rounds.of(*w, Side::Raw).len(),
                rounds.of(*w, Side::Kit).len(),
            ]
        })
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
    let _ = write!(out, "{:<30}", "msgs/s");
    for round in 1..=count {
        let _ = write!(out, " {:>10}", format!("round {round}"));
    }
    let _ = writeln!(out, " {:>10} {:>8}", "median", "kit/raw");
    for work in Work::ALL {
        for side in [Side::Raw, Side::Kit] {
            let _ = write!(out, "{:<30}", format!("{} {}", side.label(), work.label()));
            let rates = rounds.of(work, side);
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
            match side {
                Side::Kit if !rates.is_empty() => {
                    let _ = writeln!(out, " {:>7.1}%", report.pair(work).kit_share * 100.0);
                }
                _ => {
                    let _ = writeln!(out);
                }
            }
        }
    }
    for work in Work::ALL {
        let _ = writeln!(out, "{}: {}", work.label(), work.description());
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
        let mut rounds = Rounds::default();
        for (work, raw, kit) in [
            (
                Work::ProduceBytes,
                [100.0, 300.0, 200.0],
                [50.0, 150.0, 100.0],
            ),
            (Work::ProduceEncode, [80.0, 80.0, 80.0], [20.0, 20.0, 20.0]),
            (
                Work::ConsumeNoDecode,
                [400.0, 400.0, 400.0],
                [100.0, 300.0, 200.0],
            ),
            (Work::ConsumeDecode, [90.0, 90.0, 90.0], [45.0, 45.0, 45.0]),
            (
                Work::ConsumeBatchNoDecode,
                [400.0, 400.0, 400.0],
                [300.0, 300.0, 300.0],
            ),
            (
                Work::ConsumeBatchDecode,
                [90.0, 90.0, 90.0],
                [72.0, 72.0, 72.0],
            ),
        ] {
            for (r, k) in raw.into_iter().zip(kit) {
                rounds.push(work, Side::Raw, r);
                rounds.push(work, Side::Kit, k);
            }
        }
        rounds
    }

    #[test]
    fn the_report_has_medians_and_shares_of_medians_per_kind_of_work() {
        let report = Report::new(300, 1000, &rounds());
        assert_eq!(report.produce_bytes.raw_per_s, 200.0);
        assert_eq!(report.produce_bytes.kit_per_s, 100.0);
        assert_eq!(report.produce_bytes.kit_share, 0.5);
        assert_eq!(report.produce_encode.kit_share, 0.25);
        assert_eq!(report.consume_no_decode.kit_share, 0.5);
        assert_eq!(report.consume_decode.kit_share, 0.5);
        assert_eq!(report.consume_batch_no_decode.kit_share, 0.75);
        assert_eq!(report.consume_batch_decode.kit_share, 0.8);
        let empty = Report::new(1, 1, &Rounds::default());
        assert_eq!(empty.produce_bytes.kit_share, 0.0);
    }

    #[test]
    fn the_json_report_names_each_pair_and_what_both_sides_do() {
        let json = serde_json::to_value(Report::new(300, 1000, &rounds())).unwrap();
        let object = json.as_object().unwrap();
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "consume_batch_decode",
                "consume_batch_no_decode",
                "consume_decode",
                "consume_no_decode",
                "message_bytes",
                "produce_bytes",
                "produce_encode",
                "records"
            ]
        );
        assert_eq!(json["message_bytes"], 300);
        assert_eq!(json["records"], 1000);
        assert_eq!(json["produce_bytes"]["kit_share"], 0.5);
        assert_eq!(json["consume_decode"]["raw_per_s"], 90.0);
        assert!(
            json["consume_decode"]["work"]
                .as_str()
                .unwrap()
                .contains("both decode")
        );
        let pair = json["produce_encode"].as_object().unwrap();
        let mut fields: Vec<&str> = pair.keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(fields, ["kit_per_s", "kit_share", "raw_per_s", "work"]);
    }

    #[test]
    fn the_table_has_a_raw_and_a_kit_row_per_kind_of_work() {
        let size = MessageSize {
            key: 36,
            value: 200,
            headers: 64,
            header_count: 5,
        };
        let report = Report::new(size.total(), 1000, &rounds());
        let table = table(&report, &rounds(), &size, "test");
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2 + 12 + 6, "{table}");
        assert!(lines[0].contains("message 300 bytes"), "{table}");
        assert!(lines[1].contains("round 3") && lines[1].contains("median"));
        assert!(lines[2].starts_with("raw produce, pre-encoded"), "{table}");
        assert!(lines[3].starts_with("kit produce, pre-encoded") && lines[3].ends_with("50.0%"));
        assert!(lines[5].starts_with("kit produce, encode each") && lines[5].ends_with("25.0%"));
        assert!(
            lines[6].starts_with("raw consume, no decode") && lines[6].trim_end().ends_with("400")
        );
        assert!(lines[9].starts_with("kit consume, decode"), "{table}");
        assert!(
            lines[11].starts_with("kit consume batch, no decode") && lines[11].ends_with("75.0%"),
            "{table}"
        );
        assert!(lines[13].starts_with("kit consume batch, decode") && lines[13].ends_with("80.0%"));
        assert!(
            lines[17].starts_with("consume, decode: both decode"),
            "{table}"
        );
        assert!(lines[19].contains("Batched::new"), "{table}");
    }

    #[test]
    fn a_work_without_rounds_leaves_its_kit_share_blank() {
        let mut rounds = Rounds::default();
        rounds.push(Work::ProduceBytes, Side::Raw, 10.0);
        rounds.push(Work::ProduceBytes, Side::Kit, 5.0);
        let size = MessageSize {
            key: 1,
            value: 1,
            headers: 0,
            header_count: 0,
        };
        let report = Report::new(size.total(), 10, &rounds);
        let table = table(&report, &rounds, &size, "test");
        let line = table
            .lines()
            .find(|l| l.starts_with("kit consume, decode"))
            .unwrap();
        assert!(!line.contains('%'), "{table}");
    }
}
