//! The report of a run: one [`Report`] value, written as a table for people ([`table`]), as
//! JSON for machines (the `Report` serialized, `report.json`), and as an SVG chart
//! ([`svg`], `chart.svg`).

pub mod svg;
pub mod table;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::drain::DrainTracker;
use crate::kafka::LagSample;
use crate::profile::Profile;
use crate::record::{Counts, E2ePhase, LatencySummary, PhaseRecord, Records, Tracker};
use crate::verdict::{self, Measurements, Thresholds, Verdict};

/// Everything a run measured, and its verdict. Serialized as `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `spine-spike`.
    pub tool: String,
    /// The tool's version.
    pub version: String,
    /// When the load started, UTC, RFC 3339.
    pub started_at: String,
    /// The API's base URL.
    pub base_url: String,
    /// The load shape.
    pub profile: ProfileReport,
    /// From the start of the load to the end of the run (drain wait included), in seconds.
    pub duration_s: f64,
    /// Whether Ctrl-C cut the run short.
    pub interrupted: bool,
    /// POST /orders results.
    pub http: HttpReport,
    /// Orders followed to their outcome and email; absent with `--no-e2e`.
    pub e2e: Option<E2eReport>,
    /// Consumer-group lag; absent with `--no-e2e`.
    pub lag: Option<LagReport>,
    /// Drain time; absent with `--no-e2e`.
    pub drain: Option<DrainReport>,
    /// One point per second from the start of the load.
    pub series: Vec<SeriesPoint>,
    /// One point per lag sample.
    pub lag_series: Vec<LagPoint>,
    /// The thresholds' outcome.
    pub verdict: Verdict,
}

/// The load shape as run.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileReport {
    /// `constant`, `ramp`, `spike` or `file`.
    pub kind: String,
    /// One line, e.g. `spike: baseline 50/s 10s, spike 500/s 10s, recovery 50/s 20s`.
    pub description: String,
    /// The phases with their bounds.
    pub phases: Vec<PhaseSpan>,
}

/// A phase's place in time.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseSpan {
    /// Its name.
    pub name: String,
    /// Start, in seconds from the start of the load.
    pub start_s: f64,
    /// End, in seconds from the start of the load.
    pub end_s: f64,
    /// Requests per second at its start.
    pub from_rate: f64,
    /// Requests per second at its end.
    pub to_rate: f64,
}

/// POST results per phase and in total.
#[derive(Debug, Clone, Serialize)]
pub struct HttpReport {
    /// Per phase, in profile order.
    pub phases: Vec<PhaseStats>,
    /// The whole run.
    pub total: PhaseStats,
}

/// One phase's (or the run's) POST results.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseStats {
    /// The phase, or `all`.
    pub name: String,
    /// The counts.
    pub counts: Counts,
    /// Errors, timeouts and 5xx (503 included) over sent.
    pub error_rate: f64,
    /// Latency of accepted requests from their intended start; absent when none.
    pub latency_ms: Option<LatencySummary>,
}

/// Orders followed to their outcome and email.
#[derive(Debug, Clone, Serialize)]
pub struct E2eReport {
    /// By the phase the order was placed in.
    pub phases: Vec<E2eStats>,
    /// The whole run.
    pub total: E2eStats,
    /// 202s without an order id in the body (not followed).
    pub untracked: u64,
}

/// End-to-end results of the orders placed in one phase (or the run).
#[derive(Debug, Clone, Serialize)]
pub struct E2eStats {
    /// The phase, or `all`.
    pub name: String,
    /// Orders accepted.
    pub accepted: u64,
    /// Confirmed.
    pub confirmed: u64,
    /// Rejected.
    pub rejected: u64,
    /// With an email sent.
    pub emails: u64,
    /// With an outcome and an email.
    pub complete: u64,
    /// `complete / accepted`; absent when nothing was accepted.
    pub completion: Option<f64>,
    /// From the POST's intended start to OrderConfirmed or OrderRejected.
    pub outcome_latency_ms: Option<LatencySummary>,
    /// From the POST's intended start to EmailSent.
    pub email_latency_ms: Option<LatencySummary>,
}

/// Lag per group over the run.
#[derive(Debug, Clone, Serialize)]
pub struct LagReport {
    /// One per watched group.
    pub groups: Vec<GroupReport>,
    /// Samples taken.
    pub samples: usize,
    /// Samples that failed (watermarks unreadable).
    pub failed_samples: u64,
}

/// One group's lag over the run.
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    /// The group id.
    pub group: String,
    /// The topics its lag was summed over.
    pub topics: Vec<String>,
    /// The largest lag seen.
    pub max: i64,
    /// When, in seconds from the start of the load.
    pub max_at_s: f64,
    /// The lag at the last sample.
    pub final_lag: Option<i64>,
}

/// How long the system took to drain.
#[derive(Debug, Clone, Serialize)]
pub struct DrainReport {
    /// What started the clock, e.g. `spike end` or `load end`.
    pub reference: String,
    /// When, in seconds from the start of the load.
    pub reference_s: f64,
    /// `--drain-timeout`, in seconds.
    pub timeout_s: f64,
    /// Whether it drained in time.
    pub drained: bool,
    /// The drain time in seconds, when drained.
    pub drain_s: Option<f64>,
}

/// One second of the run.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesPoint {
    /// Seconds from the start of the load (the bucket is `[t, t + 1)`).
    pub t: u64,
    /// Requests due in this second.
    pub offered: u64,
    /// 202s received in this second.
    pub accepted: u64,
    /// Median latency of accepted requests due in this second.
    pub p50_ms: Option<f64>,
    /// 99th percentile of the same.
    pub p99_ms: Option<f64>,
    /// Requests waiting at the end of this second.
    pub in_flight: Option<u64>,
}

/// Every group's lag at one sample.
#[derive(Debug, Clone, Serialize)]
pub struct LagPoint {
    /// Seconds from the start of the load.
    pub t_s: f64,
    /// Group → lag (`null` when unreadable in this sample).
    pub groups: BTreeMap<String, Option<i64>>,
}

/// What [`Report::build`] needs from a finished run.
pub struct Inputs<'a> {
    /// The API's base URL.
    pub base_url: &'a str,
    /// The profile run.
    pub profile: &'a Profile,
    /// Wall-clock time of the start of the load.
    pub started_at: SystemTime,
    /// The start of the load.
    pub start: Instant,
    /// The end of the run.
    pub end: Instant,
    /// Whether Ctrl-C cut it short.
    pub interrupted: bool,
    /// POST results.
    pub records: Records,
    /// Followed orders, unless `--no-e2e`.
    pub tracker: Option<&'a Tracker>,
    /// Lag samples, failed samples and the watched groups' names, unless `--no-e2e`.
    pub lag: Option<(&'a [LagSample], u64, &'a [String])>,
    /// The drain clock, unless `--no-e2e`.
    pub drain: Option<&'a DrainTracker>,
    /// `--drain-timeout`.
    pub drain_timeout: Duration,
    /// Requests waiting at the end of each second.
    pub in_flight: &'a [(u64, u64)],
    /// The thresholds.
    pub thresholds: &'a Thresholds,
}

fn secs_between(start: Instant, at: Instant) -> f64 {
    if at >= start {
        (at - start).as_secs_f64()
    } else {
        0.0
    }
}

fn phase_stats(name: &str, record: &PhaseRecord) -> PhaseStats {
    PhaseStats {
        name: name.to_owned(),
        counts: record.counts,
        error_rate: record.counts.error_rate(false),
        latency_ms: record.summary(),
    }
}

fn e2e_stats(name: &str, phase: &E2ePhase) -> E2eStats {
    E2eStats {
        name: name.to_owned(),
        accepted: phase.accepted,
        confirmed: phase.confirmed,
        rejected: phase.rejected,
        emails: phase.emails,
        complete: phase.complete,
        completion: (phase.accepted > 0).then(|| phase.complete as f64 / phase.accepted as f64),
        outcome_latency_ms: LatencySummary::of(&phase.outcome_latency),
        email_latency_ms: LatencySummary::of(&phase.email_latency),
    }
}

impl Report {
    /// Builds the report and its verdict.
    pub fn build(inputs: Inputs<'_>) -> Self {
        let Inputs {
            base_url,
            profile,
            started_at,
            start,
            end,
            interrupted,
            records,
            tracker,
            lag,
            drain,
            drain_timeout,
            in_flight,
            thresholds,
        } = inputs;
        let names: Vec<&str> = profile.phases.iter().map(|p| p.name.as_str()).collect();
        let phases = profile
            .phases
            .iter()
            .zip(profile.bounds())
            .map(|(p, (from, to))| PhaseSpan {
                name: p.name.clone(),
                start_s: from.as_secs_f64(),
                end_s: to.as_secs_f64(),
                from_rate: p.from_rate,
                to_rate: p.to_rate,
            })
            .collect();
        let http = HttpReport {
            phases: records
                .phases
                .iter()
                .zip(&names)
                .map(|(r, name)| phase_stats(name, r))
                .collect(),
            total: phase_stats("all", &records.total),
        };
        let e2e = tracker.map(|tracker| E2eReport {
            phases: tracker
                .phases()
                .iter()
                .zip(&names)
                .map(|(p, name)| e2e_stats(name, p))
                .collect(),
            total: e2e_stats("all", &tracker.total()),
            untracked: tracker.untracked_count(),
        });
        let in_flight: BTreeMap<u64, u64> = in_flight.iter().copied().collect();
        let series = records
            .seconds
            .iter()
            .map(|s| SeriesPoint {
                t: s.t,
                offered: s.offered,
                accepted: s.accepted,
                p50_ms: s.p50_ms,
                p99_ms: s.p99_ms,
                in_flight: in_flight.get(&s.t).copied(),
            })
            .collect();
        let (lag, lag_series) = match lag {
            None => (None, Vec::new()),
            Some((samples, failed, groups)) => {
                let report = LagReport {
                    groups: groups
                        .iter()
                        .map(|group| group_report(group, samples, start))
                        .collect(),
                    samples: samples.len(),
                    failed_samples: failed,
                };
                let series = samples
                    .iter()
                    .map(|s| LagPoint {
                        t_s: secs_between(start, s.at),
                        groups: s.groups.iter().map(|g| (g.group.clone(), g.lag)).collect(),
                    })
                    .collect();
                (Some(report), series)
            }
        };
        let drain = drain.map(|d| {
            let (_, reference) = profile.drain_reference();
            let drain_s = d.drained_after().map(|d| d.as_secs_f64());
            DrainReport {
                reference,
                reference_s: secs_between(start, d.reference()),
                timeout_s: drain_timeout.as_secs_f64(),
                drained: drain_s.is_some(),
                drain_s,
            }
        });
        let mut report = Self {
            tool: "spine-spike".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: rfc3339(started_at),
            base_url: base_url.to_owned(),
            profile: ProfileReport {
                kind: profile.kind.clone(),
                description: profile.describe(),
                phases,
            },
            duration_s: secs_between(start, end),
            interrupted,
            http,
            e2e,
            lag,
            drain,
            series,
            lag_series,
            verdict: verdict::evaluate(&Measurements::default(), &Thresholds::default()),
        };
        report.verdict = verdict::evaluate(&report.measurements(), thresholds);
        report
    }

    /// What the verdict looks at.
    pub fn measurements(&self) -> Measurements {
        let worst_p99 = self
            .http
            .phases
            .iter()
            .filter_map(|p| p.latency_ms.map(|l| (p.name.clone(), l.p99_ms)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        Measurements {
            worst_p99,
            drain_measured: self.drain.is_some(),
            drain_s: self.drain.as_ref().and_then(|d| d.drain_s),
            counts: self.http.total.counts,
            e2e_completion: self.e2e.as_ref().and_then(|e| e.total.completion),
            interrupted: self.interrupted,
        }
    }

    /// Writes `report.json` and `chart.svg` into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let json = dir.join("report.json");
        let chart = dir.join("chart.svg");
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&json, text + "\n")?;
        std::fs::write(&chart, svg::render(self))?;
        Ok((json, chart))
    }
}

fn group_report(group: &str, samples: &[LagSample], start: Instant) -> GroupReport {
    let mut max = 0;
    let mut max_at_s = 0.0;
    let mut topics = BTreeSet::new();
    let mut final_lag = None;
    for sample in samples {
        if let Some(g) = sample.groups.iter().find(|g| g.group == group) {
            if let Some(lag) = g.lag {
                if lag > max {
                    max = lag;
                    max_at_s = secs_between(start, sample.at);
                }
                topics.extend(g.positions.keys().map(|(t, _)| t.clone()));
            }
            final_lag = g.lag;
        }
    }
    GroupReport {
        group: group.to_owned(),
        topics: topics.into_iter().collect(),
        max,
        max_at_s,
        final_lag,
    }
}

/// `time` as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(time: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = utc(time);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `time` as `YYYYMMDDTHHMMSSZ`, for directory names.
pub fn compact_timestamp(time: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = utc(time);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// Civil UTC date and time (Howard Hinnant's days-to-civil algorithm).
fn utc(time: SystemTime) -> (i64, u32, u32, u32, u32, u32) {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    (y, m, d, h as u32, mi as u32, s as u32)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kafka::GroupLag;
    use crate::record::{Recorder, RequestResult};

    /// A small report of a spike run with e2e, lag and a drain, for the renderers' tests.
    pub(crate) fn sample_report(thresholds: &Thresholds) -> Report {
        let profile = Profile::spike(
            2.0,
            3.0,
            Duration::from_secs(2),
            Duration::from_secs(2),
            Duration::from_secs(2),
        );
        let recorder = Recorder::new(3);
        let start = Instant::now();
        let mut tracker = Tracker::new(3);
        for arrival in crate::profile::schedule(&profile) {
            recorder.offered(arrival.phase, arrival.at, true);
            let result = if arrival.index == 5 {
                RequestResult::Status(503)
            } else {
                RequestResult::Accepted
            };
            let latency = Duration::from_millis(5 + arrival.index);
            recorder.completed(arrival.phase, arrival.at, arrival.at + latency, &result);
            if result == RequestResult::Accepted {
                let id = uuid::Uuid::now_v7();
                tracker.accepted(id, arrival.phase, start + arrival.at);
                let outcome = start + arrival.at + Duration::from_millis(200);
                tracker.observed(id, crate::record::Fact::Confirmed, outcome);
                tracker.observed(id, crate::record::Fact::EmailSent, outcome);
            }
        }
        let groups: Vec<String> = ["orders", "inventory", "email", "analytics"]
            .map(String::from)
            .to_vec();
        // Lag builds up from 2 s to 5 s (analytics worst, 4 × t) and is gone at 6 s.
        let samples: Vec<LagSample> = (0..9u64)
            .map(|t| {
                let high = 10 * t as i64;
                LagSample {
                    at: start + Duration::from_secs(t),
                    highs: BTreeMap::from([(("orders.events".into(), 0), high)]),
                    groups: groups
                        .iter()
                        .enumerate()
                        .map(|(i, g)| {
                            let lag = if (2..6).contains(&t) {
                                (i as i64 + 1) * t as i64
                            } else {
                                0
                            };
                            GroupLag {
                                group: g.clone(),
                                positions: BTreeMap::from([(
                                    ("orders.events".into(), 0),
                                    high - lag,
                                )]),
                                lag: Some(lag),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        let mut drain = DrainTracker::new(start + Duration::from_secs(4), Duration::from_secs(60));
        drain.orders_done(start + Duration::from_secs(4), true);
        for s in &samples {
            drain.observe(s, s.at < start + Duration::from_secs(6));
        }
        Report::build(Inputs {
            base_url: "http://127.0.0.1:8080",
            profile: &profile,
            started_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            start,
            end: start + Duration::from_secs(9),
            interrupted: false,
            records: recorder.snapshot(),
            tracker: Some(&tracker),
            lag: Some((&samples, 0, &groups)),
            drain: Some(&drain),
            drain_timeout: Duration::from_secs(60),
            in_flight: &[(0, 1), (1, 0)],
            thresholds,
        })
    }

    #[test]
    fn the_json_has_the_documented_shape() {
        let report = sample_report(&Thresholds::default());
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        for key in [
            "tool",
            "version",
            "started_at",
            "base_url",
            "profile",
            "duration_s",
            "interrupted",
            "http",
            "e2e",
            "lag",
            "drain",
            "series",
            "lag_series",
            "verdict",
        ] {
            assert!(json.get(key).is_some(), "missing {key}: {json}");
        }
        assert_eq!(json["started_at"], "2023-11-14T22:13:20Z");
        assert_eq!(json["http"]["phases"].as_array().unwrap().len(), 3);
        assert_eq!(json["http"]["phases"][1]["name"], "spike");
        assert_eq!(json["http"]["total"]["counts"]["offered"], 20);
        assert_eq!(json["http"]["total"]["counts"]["shed"], 1);
        assert_eq!(json["http"]["total"]["counts"]["accepted"], 19);
        assert!(json["http"]["phases"][0]["latency_ms"]["p99_ms"].is_number());
        assert_eq!(json["e2e"]["total"]["complete"], 19);
        assert_eq!(json["e2e"]["total"]["completion"], 1.0);
        assert_eq!(json["lag"]["groups"][3]["group"], "analytics");
        assert_eq!(json["lag"]["groups"][3]["max"], 20);
        assert_eq!(json["lag"]["groups"][3]["max_at_s"], 5.0);
        assert_eq!(json["drain"]["reference"], "spike end");
        assert_eq!(json["drain"]["drained"], true);
        assert_eq!(json["drain"]["drain_s"], 2.0);
        assert_eq!(json["series"][0]["in_flight"], 1);
        assert_eq!(json["lag_series"].as_array().unwrap().len(), 9);
        assert_eq!(json["verdict"]["no_thresholds"], true);
    }

    #[test]
    fn the_verdict_uses_the_worst_phase_p99() {
        let report = sample_report(&Thresholds::default());
        let (phase, p99) = report.measurements().worst_p99.unwrap();
        // Latency grows with the request index, so the last phase is the slowest.
        assert_eq!(phase, "recovery");
        assert!((p99 - 24.0).abs() < 0.1, "{p99}");
    }

    #[test]
    fn report_files_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let report = sample_report(&Thresholds::default());
        let (json, chart) = report.write(&dir.path().join("run")).unwrap();
        let text = std::fs::read_to_string(json).unwrap();
        assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
        assert!(std::fs::read_to_string(chart).unwrap().starts_with("<svg"));
    }

    #[test]
    fn timestamps_are_utc_civil_time() {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(compact_timestamp(at(1_700_000_000)), "20231114T221320Z");
    }
}
