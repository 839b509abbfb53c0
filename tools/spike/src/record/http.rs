//! POST outcomes: counts and latency histograms per phase, and a per-second series for the
//! chart.
//!
//! Latency is measured from the request's **intended** start (its arrival time in the
//! schedule), not from when it was actually sent, so a stall shows in full. The latency
//! histograms hold accepted (202) requests only; every other result is counted.
//!
//! In the per-second series, `offered` and the latency percentiles are bucketed by intended
//! start (what the requests due in that second experienced), `accepted` by completion
//! (the throughput the API delivered in that second).

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::latency::{self, LatencySummary};

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestResult {
    /// 202 Accepted.
    Accepted,
    /// Any other HTTP status.
    Status(u16),
    /// No answer within `--timeout`.
    Timeout,
    /// The connection failed or broke (refused, reset, a body that could not be read).
    Error,
}

/// Request counts of a phase or of the whole run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Requests the schedule made due.
    pub offered: u64,
    /// Requests sent (offered minus dropped).
    pub sent: u64,
    /// Requests not sent because `--max-in-flight` were already waiting: the client, not the
    /// API, was saturated.
    pub dropped: u64,
    /// 202 Accepted.
    pub accepted: u64,
    /// 4xx answers (validation, idempotency conflicts, …).
    pub client_errors: u64,
    /// 503 answers: the API shedding load.
    pub shed: u64,
    /// 5xx answers other than 503.
    pub server_errors: u64,
    /// Any other status (1xx, 2xx other than 202, 3xx).
    pub other_status: u64,
    /// Requests with no answer within the timeout.
    pub timeouts: u64,
    /// Connection and transport errors.
    pub errors: u64,
}

impl Counts {
    /// Requests that have ended one way or another.
    pub fn completed(&self) -> u64 {
        self.accepted
            + self.client_errors
            + self.shed
            + self.server_errors
            + self.other_status
            + self.timeouts
            + self.errors
    }

    /// Requests that failed: errors, timeouts and 5xx, with 503 (shed) included unless
    /// `shed_ok`.
    pub fn failures(&self, shed_ok: bool) -> u64 {
        self.errors + self.timeouts + self.server_errors + if shed_ok { 0 } else { self.shed }
    }

    /// [`Counts::failures`] over requests sent; 0 when nothing was sent.
    pub fn error_rate(&self, shed_ok: bool) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.failures(shed_ok) as f64 / self.sent as f64
        }
    }

    fn add(&mut self, other: &Counts) {
        self.offered += other.offered;
        self.sent += other.sent;
        self.dropped += other.dropped;
        self.accepted += other.accepted;
        self.client_errors += other.client_errors;
        self.shed += other.shed;
        self.server_errors += other.server_errors;
        self.other_status += other.other_status;
        self.timeouts += other.timeouts;
        self.errors += other.errors;
    }

    fn count(&mut self, result: &RequestResult) {
        match result {
            RequestResult::Accepted => self.accepted += 1,
            RequestResult::Status(503) => self.shed += 1,
            RequestResult::Status(s) if (400..500).contains(s) => self.client_errors += 1,
            RequestResult::Status(s) if *s >= 500 => self.server_errors += 1,
            RequestResult::Status(_) => self.other_status += 1,
            RequestResult::Timeout => self.timeouts += 1,
            RequestResult::Error => self.errors += 1,
        }
    }
}

/// One phase's counts and latency histogram (microseconds, accepted requests).
#[derive(Debug, Clone)]
pub struct PhaseRecord {
    /// The counts.
    pub counts: Counts,
    /// POST latency of accepted requests from their intended start, in microseconds.
    pub latency: Histogram<u64>,
}

impl PhaseRecord {
    fn new() -> Self {
        Self {
            counts: Counts::default(),
            latency: latency::histogram(),
        }
    }

    /// The latency percentiles, or `None` when nothing was accepted.
    pub fn summary(&self) -> Option<LatencySummary> {
        LatencySummary::of(&self.latency)
    }
}

/// One second of the run, for the chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecondPoint {
    /// Seconds from the start of the load (the bucket is `[t, t + 1)`).
    pub t: u64,
    /// Requests due in this second.
    pub offered: u64,
    /// 202 answers received in this second.
    pub accepted: u64,
    /// Median latency of the accepted requests due in this second.
    pub p50_ms: Option<f64>,
    /// 99th percentile of the same.
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone)]
struct Second {
    offered: u64,
    accepted: u64,
    latency: Histogram<u64>,
}

#[derive(Debug)]
struct State {
    phases: Vec<PhaseRecord>,
    total: PhaseRecord,
    seconds: Vec<Second>,
}

impl State {
    fn second(&mut self, at: Duration) -> &mut Second {
        let index = at.as_secs() as usize;
        while self.seconds.len() <= index {
            self.seconds.push(Second {
                offered: 0,
                accepted: 0,
                latency: latency::coarse_histogram(),
            });
        }
        &mut self.seconds[index]
    }
}

/// Everything [`Recorder`] holds, copied out.
#[derive(Debug, Clone)]
pub struct Records {
    /// Per phase, in profile order.
    pub phases: Vec<PhaseRecord>,
    /// The whole run.
    pub total: PhaseRecord,
    /// One point per second from the start of the load.
    pub seconds: Vec<SecondPoint>,
}

/// Records POST outcomes from many tasks at once (a short lock per event; never held across
/// an await).
#[derive(Debug)]
pub struct Recorder {
    state: Mutex<State>,
}

impl Recorder {
    /// A recorder for a profile of `phases` phases.
    pub fn new(phases: usize) -> Self {
        Self {
            state: Mutex::new(State {
                phases: (0..phases).map(|_| PhaseRecord::new()).collect(),
                total: PhaseRecord::new(),
                seconds: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panicking recorder call can't leave the counters half-updated in a way that
        // matters more than losing the run's report.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request of `phase` came due at `intended`; `sent` is false when it was dropped.
    pub fn offered(&self, phase: usize, intended: Duration, sent: bool) {
        let mut guard = self.lock();
        let state = &mut *guard;
        state.second(intended).offered += 1;
        for counts in [&mut state.phases[phase].counts, &mut state.total.counts] {
            counts.offered += 1;
            if sent {
                counts.sent += 1;
            } else {
                counts.dropped += 1;
            }
        }
    }

    /// A request of `phase`, due at `intended`, ended at `done` with `result`.
    pub fn completed(
        &self,
        phase: usize,
        intended: Duration,
        done: Duration,
        result: &RequestResult,
    ) {
        let latency = done.saturating_sub(intended);
        let mut state = self.lock();
        if *result == RequestResult::Accepted {
            state.second(done).accepted += 1;
            latency::record(&mut state.second(intended).latency, latency);
            latency::record(&mut state.phases[phase].latency, latency);
            latency::record(&mut state.total.latency, latency);
        }
        state.phases[phase].counts.count(result);
        state.total.counts.count(result);
    }

    /// Counts of every phase so far.
    pub fn phase_counts(&self) -> Vec<Counts> {
        self.lock().phases.iter().map(|p| p.counts).collect()
    }

    /// Counts of the whole run so far.
    pub fn total_counts(&self) -> Counts {
        self.lock().total.counts
    }

    /// Requests sent but not yet ended in phases up to and including `phase`.
    pub fn in_flight_up_to(&self, phase: usize) -> u64 {
        let state = self.lock();
        let mut counts = Counts::default();
        for p in state.phases.iter().take(phase + 1) {
            counts.add(&p.counts);
        }
        counts.sent - counts.completed()
    }

    /// The p99 of every accepted request so far, in milliseconds.
    pub fn p99_so_far_ms(&self) -> Option<f64> {
        LatencySummary::of(&self.lock().total.latency).map(|s| s.p99_ms)
    }

    /// `(offered, accepted)` in second `t`.
    pub fn second_rates(&self, t: u64) -> (u64, u64) {
        let state = self.lock();
        state
            .seconds
            .get(t as usize)
            .map(|s| (s.offered, s.accepted))
            .unwrap_or_default()
    }

    /// A copy of everything recorded.
    pub fn snapshot(&self) -> Records {
        let state = self.lock();
        let seconds = state
            .seconds
            .iter()
            .enumerate()
            .map(|(t, s)| {
                let summary = LatencySummary::of(&s.latency);
                SecondPoint {
                    t: t as u64,
                    offered: s.offered,
                    accepted: s.accepted,
                    p50_ms: summary.map(|s| s.p50_ms),
                    p99_ms: summary.map(|s| s.p99_ms),
                }
            })
            .collect();
        Records {
            phases: state.phases.clone(),
            total: state.total.clone(),
            seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn each_result_lands_in_its_phase_and_in_the_total() {
        let recorder = Recorder::new(2);
        let results = [
            (0, RequestResult::Accepted),
            (0, RequestResult::Status(422)),
            (0, RequestResult::Status(503)),
            (1, RequestResult::Status(500)),
            (1, RequestResult::Status(302)),
            (1, RequestResult::Timeout),
            (1, RequestResult::Error),
            (1, RequestResult::Accepted),
        ];
        for (phase, result) in &results {
            recorder.offered(*phase, ms(0), true);
            recorder.completed(*phase, ms(0), ms(5), result);
        }
        recorder.offered(1, ms(0), false);

        let records = recorder.snapshot();
        let first = records.phases[0].counts;
        assert_eq!(
            (
                first.offered,
                first.sent,
                first.accepted,
                first.client_errors,
                first.shed
            ),
            (3, 3, 1, 1, 1)
        );
        let second = records.phases[1].counts;
        assert_eq!(
            (
                second.offered,
                second.sent,
                second.dropped,
                second.server_errors,
                second.other_status,
                second.timeouts,
                second.errors,
                second.accepted
            ),
            (6, 5, 1, 1, 1, 1, 1, 1)
        );
        let total = records.total.counts;
        assert_eq!((total.offered, total.sent, total.completed()), (9, 8, 8));
        assert_eq!(recorder.in_flight_up_to(1), 0);
        assert_eq!(records.total.latency.len(), 2, "only 202s are timed");
    }

    #[test]
    fn latency_is_measured_from_the_intended_start() {
        let recorder = Recorder::new(1);
        recorder.offered(0, ms(1000), true);
        // Sent late (say the client stalled for 300 ms) and answered in 10 ms: 310 ms.
        recorder.completed(0, ms(1000), ms(1310), &RequestResult::Accepted);
        let summary = recorder.snapshot().phases[0].summary().unwrap();
        assert!((summary.max_ms - 310.0).abs() < 0.5, "{summary:?}");
    }

    #[test]
    fn the_error_rate_counts_shed_requests_unless_shedding_is_ok() {
        let counts = Counts {
            sent: 100,
            accepted: 90,
            shed: 6,
            server_errors: 1,
            timeouts: 2,
            errors: 1,
            client_errors: 5,
            ..Counts::default()
        };
        assert_eq!(counts.failures(false), 10);
        assert!((counts.error_rate(false) - 0.10).abs() < 1e-12);
        assert!((counts.error_rate(true) - 0.04).abs() < 1e-12);
        assert_eq!(Counts::default().error_rate(false), 0.0);
    }

    #[test]
    fn in_flight_counts_sent_requests_not_yet_ended_per_phase() {
        let recorder = Recorder::new(2);
        recorder.offered(0, ms(0), true);
        recorder.offered(0, ms(10), true);
        recorder.offered(1, ms(2000), true);
        recorder.completed(0, ms(0), ms(20), &RequestResult::Accepted);
        assert_eq!(recorder.in_flight_up_to(0), 1);
        assert_eq!(recorder.in_flight_up_to(1), 2);
    }

    #[test]
    fn the_series_buckets_offers_by_due_second_and_accepts_by_answer_second() {
        let recorder = Recorder::new(1);
        recorder.offered(0, ms(900), true);
        recorder.completed(0, ms(900), ms(1200), &RequestResult::Accepted);
        recorder.offered(0, ms(2100), true);
        recorder.completed(0, ms(2100), ms(2110), &RequestResult::Status(422));
        let seconds = recorder.snapshot().seconds;
        assert_eq!(seconds.len(), 3);
        assert_eq!((seconds[0].offered, seconds[0].accepted), (1, 0));
        assert_eq!((seconds[1].offered, seconds[1].accepted), (0, 1));
        assert!((seconds[0].p99_ms.unwrap() - 300.0).abs() < 3.0);
        assert_eq!(seconds[1].p99_ms, None);
        assert_eq!((seconds[2].offered, seconds[2].accepted), (1, 0));
        assert_eq!(recorder.second_rates(0), (1, 0));
    }
}
