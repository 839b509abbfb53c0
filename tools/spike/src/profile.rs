//! Load profiles and their arrival schedule.
//!
//! A [`Profile`] is a list of [`Phase`]s, each a duration with a rate that is constant or
//! changes linearly from `from_rate` to `to_rate`. The built-in shapes are phase lists too:
//! `constant` is one phase, `ramp` one linear phase, `spike` three (baseline, spike,
//! recovery). A JSON profile file writes the phase list out (see [`Profile::from_json`]).
//!
//! [`schedule`] turns a profile into arrival times, the k6 arrival-rate way: request `i` of a
//! phase starts when the phase's cumulative rate reaches `i`, whether or not earlier requests
//! have finished.

use std::time::Duration;

use serde::Deserialize;

/// One stretch of a profile: a duration and a rate (requests per second) that is constant or
/// goes linearly from `from_rate` to `to_rate`.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// Shown in the report and on the chart, e.g. `baseline`.
    pub name: String,
    /// How long the phase lasts.
    pub duration: Duration,
    /// Requests per second at the start of the phase.
    pub from_rate: f64,
    /// Requests per second at the end of the phase (equal to `from_rate` when constant).
    pub to_rate: f64,
}

impl Phase {
    /// A phase at a constant `rate`.
    pub fn constant(name: impl Into<String>, rate: f64, duration: Duration) -> Self {
        Self {
            name: name.into(),
            duration,
            from_rate: rate,
            to_rate: rate,
        }
    }

    /// A phase whose rate goes linearly from `from` to `to`.
    pub fn ramp(name: impl Into<String>, from: f64, to: f64, duration: Duration) -> Self {
        Self {
            name: name.into(),
            duration,
            from_rate: from,
            to_rate: to,
        }
    }

    /// How many requests the phase offers: the integral of its rate, rounded up, so a phase
    /// of 5/s for 2 s offers exactly 10 and one of 0.5/s for 1 s offers one (at its start).
    pub fn arrivals(&self) -> u64 {
        let total = (self.from_rate + self.to_rate) / 2.0 * self.duration.as_secs_f64();
        (total - 1e-9).ceil().max(0.0) as u64
    }

    /// When request `i` of the phase starts, from the phase's start: the time at which the
    /// cumulative rate `from·t + (to − from)·t²/(2T)` reaches `i`.
    pub fn arrival_at(&self, i: u64) -> Duration {
        if i == 0 {
            return Duration::ZERO;
        }
        let i = i as f64;
        let t_total = self.duration.as_secs_f64();
        let a = (self.to_rate - self.from_rate) / (2.0 * t_total);
        let b = self.from_rate;
        // The root of a·t² + b·t − i = 0 written as 2i / (b + √(b² + 4ai)): no cancellation,
        // and it stays right when a is 0 (constant rate) or negative (a ramp down).
        let root = (b * b + 4.0 * a * i).max(0.0).sqrt();
        let t = 2.0 * i / (b + root);
        Duration::from_secs_f64(t.clamp(0.0, t_total))
    }
}

/// A load shape: phases run one after the other.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// `constant`, `ramp`, `spike` or `file`.
    pub kind: String,
    /// The phases, in order.
    pub phases: Vec<Phase>,
    /// The phase whose end starts the drain clock; `None` means the end of the load.
    pub drain_after: Option<usize>,
}

impl Profile {
    /// `rate` requests a second for `duration`.
    pub fn constant(rate: f64, duration: Duration) -> Self {
        Self {
            kind: "constant".into(),
            phases: vec![Phase::constant("steady", rate, duration)],
            drain_after: None,
        }
    }

    /// From `from` to `to` requests a second, linearly over `duration`.
    pub fn ramp(from: f64, to: f64, duration: Duration) -> Self {
        Self {
            kind: "ramp".into(),
            phases: vec![Phase::ramp("ramp", from, to, duration)],
            drain_after: None,
        }
    }

    /// `rate` for `baseline`, `factor × rate` for `spike`, `rate` again for `recovery`; the
    /// drain clock starts when the spike ends.
    pub fn spike(
        rate: f64,
        factor: f64,
        baseline: Duration,
        spike: Duration,
        recovery: Duration,
    ) -> Self {
        let mut phases = Vec::with_capacity(3);
        if !baseline.is_zero() {
            phases.push(Phase::constant("baseline", rate, baseline));
        }
        phases.push(Phase::constant("spike", rate * factor, spike));
        if !recovery.is_zero() {
            phases.push(Phase::constant("recovery", rate, recovery));
        }
        let drain_after = phases.iter().position(|p| p.name == "spike");
        Self {
            kind: "spike".into(),
            phases,
            drain_after,
        }
    }

    /// Reads a profile file:
    ///
    /// ```json
    /// {
    ///   "drain_after": "spike",
    ///   "phases": [
    ///     { "name": "baseline", "duration": "10s", "rate": 50 },
    ///     { "name": "spike",    "duration": "10s", "rate": 500 },
    ///     { "name": "cooldown", "duration": "30s", "from": 500, "to": 50 }
    ///   ]
    /// }
    /// ```
    ///
    /// A phase has either `rate` (constant) or `from` and `to` (linear); durations are
    /// humantime (`500ms`, `10s`, `2m`). `drain_after` names the phase whose end starts the
    /// drain clock (default: the end of the load). Unknown fields are errors.
    pub fn from_json(text: &str) -> Result<Self, ProfileError> {
        let file: ProfileFile =
            serde_json::from_str(text).map_err(|e| ProfileError(format!("not a profile: {e}")))?;
        let mut phases = Vec::with_capacity(file.phases.len());
        for (i, phase) in file.phases.into_iter().enumerate() {
            let at = format!("phases[{i}]");
            let duration = humantime::parse_duration(&phase.duration)
                .map_err(|e| ProfileError(format!("{at}.duration: {e}")))?;
            let (from_rate, to_rate) = match (phase.rate, phase.from, phase.to) {
                (Some(rate), None, None) => (rate, rate),
                (None, Some(from), Some(to)) => (from, to),
                _ => {
                    return Err(ProfileError(format!(
                        "{at}: give either `rate` or both `from` and `to`"
                    )));
                }
            };
            let name = phase.name.unwrap_or_else(|| format!("phase-{}", i + 1));
            phases.push(Phase::ramp(name, from_rate, to_rate, duration));
        }
        let drain_after = match file.drain_after {
            None => None,
            Some(name) => Some(
                phases
                    .iter()
                    .position(|p| p.name == name)
                    .ok_or_else(|| ProfileError(format!("drain_after: no phase named `{name}`")))?,
            ),
        };
        let profile = Self {
            kind: "file".into(),
            phases,
            drain_after,
        };
        profile.validate()?;
        Ok(profile)
    }

    /// Checks that the profile can run: at least one phase, unique names, positive durations,
    /// finite non-negative rates.
    pub fn validate(&self) -> Result<(), ProfileError> {
        if self.phases.is_empty() {
            return Err(ProfileError("a profile needs at least one phase".into()));
        }
        for (i, phase) in self.phases.iter().enumerate() {
            let at = format!("phase `{}`", phase.name);
            if phase.name.trim().is_empty() {
                return Err(ProfileError(format!("phases[{i}]: empty name")));
            }
            if self.phases[..i].iter().any(|p| p.name == phase.name) {
                return Err(ProfileError(format!("{at}: the name is used twice")));
            }
            if phase.duration.is_zero() {
                return Err(ProfileError(format!("{at}: the duration must be positive")));
            }
            for rate in [phase.from_rate, phase.to_rate] {
                if !rate.is_finite() || rate < 0.0 {
                    return Err(ProfileError(format!(
                        "{at}: rates must be finite and at least 0, got {rate}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The whole load's duration.
    pub fn duration(&self) -> Duration {
        self.phases.iter().map(|p| p.duration).sum()
    }

    /// Each phase's start and end, from the start of the load.
    pub fn bounds(&self) -> Vec<(Duration, Duration)> {
        let mut start = Duration::ZERO;
        self.phases
            .iter()
            .map(|p| {
                let bounds = (start, start + p.duration);
                start += p.duration;
                bounds
            })
            .collect()
    }

    /// When the drain clock starts, from the start of the load, and what that moment is called.
    pub fn drain_reference(&self) -> (Duration, String) {
        match self.drain_after {
            Some(i) if i < self.phases.len() => {
                (self.bounds()[i].1, format!("{} end", self.phases[i].name))
            }
            _ => (self.duration(), "load end".into()),
        }
    }

    /// How many requests the whole profile offers.
    pub fn arrivals(&self) -> u64 {
        self.phases.iter().map(Phase::arrivals).sum()
    }

    /// A one-line description for the report, e.g. `spike: baseline 10/s 10s, spike 100/s 10s`.
    pub fn describe(&self) -> String {
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|p| {
                let duration = humantime::format_duration(p.duration);
                if p.from_rate == p.to_rate {
                    format!("{} {}/s {duration}", p.name, rate(p.from_rate))
                } else {
                    format!(
                        "{} {}→{}/s {duration}",
                        p.name,
                        rate(p.from_rate),
                        rate(p.to_rate)
                    )
                }
            })
            .collect();
        format!("{}: {}", self.kind, phases.join(", "))
    }
}

fn rate(r: f64) -> String {
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r}")
    }
}

/// A profile file or flags that don't make a runnable profile; the message names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ProfileError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    phases: Vec<PhaseFile>,
    drain_after: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhaseFile {
    name: Option<String>,
    duration: String,
    rate: Option<f64>,
    from: Option<f64>,
    to: Option<f64>,
}

/// One scheduled request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// Its number in the whole run, from 0.
    pub index: u64,
    /// The phase it belongs to (an index into [`Profile::phases`]).
    pub phase: usize,
    /// When it is due, from the start of the load.
    pub at: Duration,
}

/// Every arrival of `profile`, in time order, computed lazily (a long run at a high rate
/// needs no list in memory).
pub fn schedule(profile: &Profile) -> impl Iterator<Item = Arrival> + '_ {
    let bounds = profile.bounds();
    let mut index = 0u64;
    profile
        .phases
        .iter()
        .enumerate()
        .flat_map(move |(phase, p)| {
            let start = bounds[phase].0;
            (0..p.arrivals()).map(move |i| (phase, start + p.arrival_at(i)))
        })
        .map(move |(phase, at)| {
            let arrival = Arrival { index, phase, at };
            index += 1;
            arrival
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn per_phase(profile: &Profile) -> Vec<usize> {
        let mut counts = vec![0; profile.phases.len()];
        for arrival in schedule(profile) {
            counts[arrival.phase] += 1;
        }
        counts
    }

    fn assert_in_order_and_inside(profile: &Profile) {
        let bounds = profile.bounds();
        let arrivals: Vec<Arrival> = schedule(profile).collect();
        for pair in arrivals.windows(2) {
            assert!(pair[0].at <= pair[1].at, "{pair:?} out of order");
            assert_eq!(pair[1].index, pair[0].index + 1);
        }
        for a in &arrivals {
            let (start, end) = bounds[a.phase];
            assert!(
                a.at >= start && a.at < end,
                "{a:?} outside {start:?}..{end:?}"
            );
        }
    }

    #[test]
    fn a_constant_profile_spaces_requests_evenly() {
        let profile = Profile::constant(5.0, secs(2.0));
        let arrivals: Vec<Arrival> = schedule(&profile).collect();
        assert_eq!(arrivals.len(), 10);
        for (i, a) in arrivals.iter().enumerate() {
            assert!((a.at.as_secs_f64() - i as f64 * 0.2).abs() < 1e-9, "{a:?}");
        }
        assert_in_order_and_inside(&profile);
    }

    #[test]
    fn a_spike_profile_offers_the_factor_times_the_rate_during_the_spike() {
        let profile = Profile::spike(5.0, 3.0, secs(2.0), secs(2.0), secs(2.0));
        assert_eq!(per_phase(&profile), vec![10, 30, 10]);
        assert_eq!(profile.arrivals(), 50);
        assert_in_order_and_inside(&profile);
        let (at, label) = profile.drain_reference();
        assert_eq!((at, label.as_str()), (secs(4.0), "spike end"));
        // During the spike requests are a third as far apart.
        let spike: Vec<f64> = schedule(&profile)
            .filter(|a| a.phase == 1)
            .map(|a| a.at.as_secs_f64())
            .collect();
        assert!((spike[1] - spike[0] - 1.0 / 15.0).abs() < 1e-9);
        assert!((spike[0] - 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_ramp_up_offers_its_average_rate_and_accelerates() {
        let profile = Profile::ramp(0.0, 100.0, secs(10.0));
        let arrivals: Vec<Arrival> = schedule(&profile).collect();
        assert_eq!(arrivals.len(), 500);
        assert_in_order_and_inside(&profile);
        // Cumulative count at t is 5t²: 125 by 5 s (a quarter), the rest in the second half.
        let first_half = arrivals.iter().filter(|a| a.at < secs(4.99)).count();
        assert_eq!(first_half, 125);
        let gap = |i: usize| (arrivals[i + 1].at - arrivals[i].at).as_secs_f64();
        assert!(gap(10) > gap(400), "gaps shrink as the rate grows");
    }

    #[test]
    fn a_ramp_down_decelerates_and_ends_inside_its_phase() {
        let profile = Profile::ramp(10.0, 0.0, secs(10.0));
        let arrivals: Vec<Arrival> = schedule(&profile).collect();
        assert_eq!(arrivals.len(), 50);
        assert_in_order_and_inside(&profile);
        // Cumulative count is 10t − t²/2: 37.5 by 5 s.
        assert_eq!(arrivals.iter().filter(|a| a.at < secs(5.0)).count(), 38);
    }

    #[test]
    fn a_slow_rate_still_offers_a_request_at_the_phase_start() {
        let phase = Phase::constant("slow", 0.5, secs(1.0));
        assert_eq!(phase.arrivals(), 1);
        assert_eq!(phase.arrival_at(0), Duration::ZERO);
        assert_eq!(Phase::constant("pause", 0.0, secs(5.0)).arrivals(), 0);
    }

    #[test]
    fn a_profile_file_reads_constant_and_linear_phases() {
        let profile = Profile::from_json(
            r#"{"drain_after": "peak", "phases": [
                {"name": "warm", "duration": "1s", "rate": 10},
                {"name": "peak", "duration": "500ms", "rate": 40},
                {"name": "cool", "duration": "2s", "from": 40, "to": 0}
            ]}"#,
        )
        .unwrap();
        assert_eq!(profile.kind, "file");
        assert_eq!(per_phase(&profile), vec![10, 20, 40]);
        assert_eq!(profile.drain_reference(), (secs(1.5), "peak end".into()));
        assert_eq!(profile.duration(), secs(3.5));
    }

    #[test]
    fn a_profile_file_without_drain_after_drains_from_the_load_end() {
        let profile = Profile::from_json(r#"{"phases": [{"duration": "3s", "rate": 1}]}"#).unwrap();
        assert_eq!(profile.phases[0].name, "phase-1");
        assert_eq!(profile.drain_reference(), (secs(3.0), "load end".into()));
    }

    #[test]
    fn profile_file_errors_name_the_field() {
        let error = |json: &str| Profile::from_json(json).unwrap_err().0;
        assert!(
            error(r#"{"phases": [{"duration": "soon", "rate": 1}]}"#)
                .contains("phases[0].duration")
        );
        assert!(
            error(r#"{"phases": [{"duration": "1s", "rate": 1, "from": 2, "to": 3}]}"#)
                .contains("phases[0]: give either `rate`")
        );
        assert!(
            error(r#"{"phases": [{"duration": "1s", "rate": 1}], "drain_after": "x"}"#)
                .contains("drain_after")
        );
        assert!(
            error(r#"{"phases": [{"duration": "1s", "rate": 1, "speed": 2}]}"#)
                .contains("unknown field `speed`")
        );
        assert!(error(r#"{"phases": [{"duration": "1s", "rate": -1}]}"#).contains("at least 0"));
        assert!(error(r#"{"phases": [{"duration": "0s", "rate": 1}]}"#).contains("positive"));
        assert!(error(r#"{"phases": []}"#).contains("at least one phase"));
        assert!(
            error(r#"{"phases": [{"name": "a", "duration": "1s", "rate": 1}, {"name": "a", "duration": "1s", "rate": 1}]}"#)
                .contains("used twice")
        );
    }

    #[test]
    fn describe_names_every_phase() {
        let profile = Profile::spike(50.0, 10.0, secs(10.0), secs(10.0), secs(20.0));
        assert_eq!(
            profile.describe(),
            "spike: baseline 50/s 10s, spike 500/s 10s, recovery 50/s 20s"
        );
        assert_eq!(
            Profile::ramp(1.0, 2.5, secs(60.0)).describe(),
            "ramp: ramp 1→2.5/s 1m"
        );
    }
}
