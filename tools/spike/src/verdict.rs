//! The verdict: the run against its thresholds. Exit code 0 when every threshold holds (or
//! none was given), 1 when one is missed; usage and setup errors exit 2 (see `cli`).

use std::fmt::Write as _;

use serde::Serialize;

use crate::record::Counts;

/// The thresholds a run must meet; each is optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Thresholds {
    /// `--max-p99-ms`: the worst phase's POST p99, in milliseconds.
    pub max_p99_ms: Option<f64>,
    /// `--max-drain-s`: the drain time, in seconds ("not drained" misses it).
    pub max_drain_s: Option<f64>,
    /// `--max-error-rate`: (errors + timeouts + 5xx) / sent, 503 included unless `shed_ok`.
    pub max_error_rate: Option<f64>,
    /// `--min-e2e-completion`: the share of accepted orders with an outcome and an email.
    pub min_e2e_completion: Option<f64>,
    /// `--shed-ok`: 503 (load shed) answers are not errors.
    pub shed_ok: bool,
}

impl Thresholds {
    /// Whether no threshold was given.
    pub fn is_empty(&self) -> bool {
        self.max_p99_ms.is_none()
            && self.max_drain_s.is_none()
            && self.max_error_rate.is_none()
            && self.min_e2e_completion.is_none()
    }
}

/// What the verdict looks at, taken from the report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurements {
    /// The phase with the highest POST p99 and that p99 (ms); `None` when nothing was accepted.
    pub worst_p99: Option<(String, f64)>,
    /// Whether lag was measured at all (not with `--no-e2e`).
    pub drain_measured: bool,
    /// The drain time in seconds; `None` when not drained.
    pub drain_s: Option<f64>,
    /// The whole run's counts.
    pub counts: Counts,
    /// The share of accepted orders followed to an outcome and an email; `None` when not
    /// followed or nothing was accepted.
    pub e2e_completion: Option<f64>,
    /// Whether Ctrl-C (or SIGTERM) cut the run short: partial numbers pass no threshold.
    pub interrupted: bool,
}

/// One threshold's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// The flag that set it, e.g. `--max-p99-ms` (`interrupted` for a run cut short).
    pub flag: &'static str,
    /// The measured value, `None` when it could not be measured (which misses the threshold).
    pub measured: Option<f64>,
    /// The threshold.
    pub threshold: f64,
    /// Whether it holds.
    pub passed: bool,
    /// A sentence with both numbers, e.g. `worst phase p99 12.3 ms (spike) <= 100 ms`.
    pub detail: String,
}

/// Every check and the outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Whether every check holds (true when there are none).
    pub passed: bool,
    /// Whether no threshold was given.
    pub no_thresholds: bool,
    /// One per threshold given.
    pub checks: Vec<Check>,
}

impl Verdict {
    /// 0 when passed, 1 when a threshold was missed.
    pub fn exit_code(&self) -> u8 {
        if self.passed { 0 } else { 1 }
    }

    /// The verdict as text for the end of the report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.no_thresholds {
            out.push_str("verdict: PASS (no thresholds)\n");
            return out;
        }
        let _ = writeln!(
            out,
            "verdict: {}",
            if self.passed { "PASS" } else { "FAIL" }
        );
        for check in &self.checks {
            let mark = if check.passed { "ok    " } else { "MISSED" };
            let _ = writeln!(out, "  {mark} {}: {}", check.flag, check.detail);
        }
        out
    }
}

fn check(
    flag: &'static str,
    measured: Option<f64>,
    threshold: f64,
    passed: bool,
    detail: String,
) -> Check {
    Check {
        flag,
        measured,
        threshold,
        passed,
        detail,
    }
}

/// Holds `measurements` against `thresholds`.
pub fn evaluate(measurements: &Measurements, thresholds: &Thresholds) -> Verdict {
    let mut checks = Vec::new();
    if let Some(max) = thresholds.max_p99_ms {
        checks.push(match &measurements.worst_p99 {
            Some((phase, p99)) => {
                let passed = *p99 <= max;
                let op = if passed { "<=" } else { ">" };
                check(
                    "--max-p99-ms",
                    Some(*p99),
                    max,
                    passed,
                    format!("worst phase p99 {p99:.1} ms ({phase}) {op} {max} ms"),
                )
            }
            None => check(
                "--max-p99-ms",
                None,
                max,
                false,
                format!("no accepted request to measure (threshold {max} ms)"),
            ),
        });
    }
    if let Some(max) = thresholds.max_drain_s {
        checks.push(match measurements.drain_s {
            Some(drain) => {
                let passed = drain <= max;
                let op = if passed { "<=" } else { ">" };
                check(
                    "--max-drain-s",
                    Some(drain),
                    max,
                    passed,
                    format!("drained in {drain:.1} s {op} {max} s"),
                )
            }
            None if measurements.drain_measured => check(
                "--max-drain-s",
                None,
                max,
                false,
                format!("not drained (threshold {max} s)"),
            ),
            None => check(
                "--max-drain-s",
                None,
                max,
                false,
                format!("drain not measured (threshold {max} s)"),
            ),
        });
    }
    if let Some(max) = thresholds.max_error_rate {
        let counts = &measurements.counts;
        let rate = counts.error_rate(thresholds.shed_ok);
        let passed = rate <= max;
        let op = if passed { "<=" } else { ">" };
        let shed = if thresholds.shed_ok {
            ", 503 not counted"
        } else {
            ""
        };
        checks.push(check(
            "--max-error-rate",
            Some(rate),
            max,
            passed,
            format!(
                "error rate {rate:.4} ({} of {} sent{shed}) {op} {max}",
                counts.failures(thresholds.shed_ok),
                counts.sent
            ),
        ));
    }
    if let Some(min) = thresholds.min_e2e_completion {
        checks.push(match measurements.e2e_completion {
            Some(completion) => {
                let passed = completion >= min;
                let op = if passed { ">=" } else { "<" };
                check(
                    "--min-e2e-completion",
                    Some(completion),
                    min,
                    passed,
                    format!(
                        "{completion:.4} of accepted orders got an outcome and an email {op} {min}"
                    ),
                )
            }
            None => check(
                "--min-e2e-completion",
                None,
                min,
                false,
                format!("no accepted order was followed (threshold {min})"),
            ),
        });
    }
    if measurements.interrupted && !thresholds.is_empty() {
        checks.push(check(
            "interrupted",
            None,
            0.0,
            false,
            "the run was cut short, so its numbers are partial".into(),
        ));
    }
    Verdict {
        passed: checks.iter().all(|c| c.passed),
        no_thresholds: thresholds.is_empty(),
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured() -> Measurements {
        Measurements {
            worst_p99: Some(("spike".into(), 42.0)),
            drain_measured: true,
            drain_s: Some(7.0),
            counts: Counts {
                sent: 1000,
                accepted: 980,
                shed: 15,
                timeouts: 5,
                ..Counts::default()
            },
            e2e_completion: Some(0.99),
            interrupted: false,
        }
    }

    #[test]
    fn without_thresholds_the_run_passes_and_says_so() {
        let verdict = evaluate(&measured(), &Thresholds::default());
        assert!(verdict.passed && verdict.no_thresholds);
        assert_eq!(verdict.exit_code(), 0);
        assert!(verdict.render().contains("no thresholds"));
    }

    #[test]
    fn every_threshold_met_passes_with_exit_code_0() {
        let thresholds = Thresholds {
            max_p99_ms: Some(50.0),
            max_drain_s: Some(10.0),
            max_error_rate: Some(0.02),
            min_e2e_completion: Some(0.95),
            shed_ok: false,
        };
        let verdict = evaluate(&measured(), &thresholds);
        assert_eq!(verdict.checks.len(), 4);
        assert!(verdict.passed, "{}", verdict.render());
        assert_eq!(verdict.exit_code(), 0);
        assert!(!verdict.render().contains("MISSED"));
    }

    #[test]
    fn a_missed_threshold_fails_with_exit_code_1_and_names_it() {
        let thresholds = Thresholds {
            max_p99_ms: Some(40.0),
            max_error_rate: Some(0.05),
            ..Thresholds::default()
        };
        let verdict = evaluate(&measured(), &thresholds);
        assert!(!verdict.passed);
        assert_eq!(verdict.exit_code(), 1);
        let text = verdict.render();
        assert!(
            text.contains("MISSED --max-p99-ms: worst phase p99 42.0 ms (spike) > 40 ms"),
            "{text}"
        );
        assert!(text.contains("ok     --max-error-rate"), "{text}");
    }

    #[test]
    fn shed_requests_are_errors_unless_shed_ok() {
        let strict = Thresholds {
            max_error_rate: Some(0.01),
            ..Thresholds::default()
        };
        assert!(!evaluate(&measured(), &strict).passed, "20 of 1000 > 1 %");
        let lenient = Thresholds {
            shed_ok: true,
            ..strict
        };
        let verdict = evaluate(&measured(), &lenient);
        assert!(verdict.passed, "5 of 1000 <= 1 %: {}", verdict.render());
        assert_eq!(verdict.checks[0].measured, Some(0.005));
    }

    #[test]
    fn what_was_not_measured_misses_its_threshold() {
        let nothing = Measurements {
            drain_measured: true,
            ..Measurements::default()
        };
        let thresholds = Thresholds {
            max_p99_ms: Some(100.0),
            max_drain_s: Some(60.0),
            min_e2e_completion: Some(0.5),
            ..Thresholds::default()
        };
        let verdict = evaluate(&nothing, &thresholds);
        assert!(
            verdict
                .checks
                .iter()
                .all(|c| !c.passed && c.measured.is_none())
        );
        assert!(verdict.render().contains("not drained"));
    }

    #[test]
    fn an_interrupted_run_passes_no_threshold() {
        let interrupted = Measurements {
            interrupted: true,
            ..measured()
        };
        let lenient = Thresholds {
            max_error_rate: Some(1.0),
            ..Thresholds::default()
        };
        let verdict = evaluate(&interrupted, &lenient);
        assert_eq!(verdict.exit_code(), 1);
        assert!(verdict.render().contains("MISSED interrupted"));
        assert!(evaluate(&interrupted, &Thresholds::default()).passed);
    }

    #[test]
    fn an_impossible_p99_threshold_is_missed() {
        let verdict = evaluate(
            &measured(),
            &Thresholds {
                max_p99_ms: Some(0.0),
                ..Thresholds::default()
            },
        );
        assert_eq!(verdict.exit_code(), 1);
    }
}
