//! The report as text tables for the terminal.

use std::fmt::Write as _;

use super::{E2eStats, PhaseStats, Report};
use crate::record::LatencySummary;

fn ms(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn latency_cells(latency: Option<&LatencySummary>) -> String {
    match latency {
        Some(l) => format!(
            "{:>8} {:>8} {:>8} {:>8} {:>8}",
            ms(l.p50_ms),
            ms(l.p90_ms),
            ms(l.p99_ms),
            ms(l.p999_ms),
            ms(l.max_ms)
        ),
        None => format!("{:>8} {:>8} {:>8} {:>8} {:>8}", "-", "-", "-", "-", "-"),
    }
}

fn http_row(out: &mut String, width: usize, phase: &PhaseStats) {
    let c = &phase.counts;
    let _ = writeln!(
        out,
        "{:<width$} {:>7} {:>7} {:>7} {:>7} {:>5} {:>5} {:>5} {:>7} {:>5} {}",
        phase.name,
        c.offered,
        c.sent,
        c.dropped,
        c.accepted,
        c.client_errors,
        c.shed,
        c.server_errors + c.other_status,
        c.timeouts,
        c.errors,
        latency_cells(phase.latency_ms.as_ref()),
    );
}

fn e2e_row(out: &mut String, width: usize, phase: &E2eStats) {
    let completion = phase
        .completion
        .map(|c| format!("{:.1}%", c * 100.0))
        .unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "{:<width$} {:>8} {:>9} {:>8} {:>7} {:>8}",
        phase.name, phase.accepted, phase.confirmed, phase.rejected, phase.emails, completion
    );
}

/// Renders `report` (verdict included) as the text printed at the end of a run.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let width = report
        .http
        .phases
        .iter()
        .map(|p| p.name.len())
        .chain([8])
        .max()
        .unwrap_or(8);
    let _ = writeln!(
        out,
        "{} {}: {}",
        report.tool, report.version, report.profile.description
    );
    let _ = writeln!(
        out,
        "target {}, started {}, ran {:.1} s{}",
        report.base_url,
        report.started_at,
        report.duration_s,
        if report.interrupted {
            " (interrupted)"
        } else {
            ""
        }
    );

    let _ = writeln!(
        out,
        "\nPOST /orders (latency in ms from the intended start, accepted requests)"
    );
    let _ = writeln!(
        out,
        "{:<width$} {:>7} {:>7} {:>7} {:>7} {:>5} {:>5} {:>5} {:>7} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "phase",
        "offered",
        "sent",
        "dropped",
        "202",
        "4xx",
        "503",
        "5xx",
        "timeout",
        "error",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max"
    );
    for phase in &report.http.phases {
        http_row(&mut out, width, phase);
    }
    http_row(&mut out, width, &report.http.total);
    if report.http.total.counts.dropped > 0 {
        let _ = writeln!(
            out,
            "note: {} requests were dropped: --max-in-flight requests were already waiting",
            report.http.total.counts.dropped
        );
    }

    if let Some(e2e) = &report.e2e {
        let _ = writeln!(
            out,
            "\nend to end (orders by the phase they were placed in)"
        );
        let _ = writeln!(
            out,
            "{:<width$} {:>8} {:>9} {:>8} {:>7} {:>8}",
            "phase", "accepted", "confirmed", "rejected", "emails", "complete"
        );
        for phase in &e2e.phases {
            e2e_row(&mut out, width, phase);
        }
        e2e_row(&mut out, width, &e2e.total);
        let _ = writeln!(
            out,
            "\n{:<37} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "latency (ms from intended POST start)", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        let rows = [
            ("placed → confirmed/rejected", &e2e.total.outcome_latency_ms),
            ("placed → email sent", &e2e.total.email_latency_ms),
        ];
        for (name, latency) in rows {
            let count = latency.map(|l| l.count).unwrap_or(0);
            let _ = writeln!(
                out,
                "{:<37} {:>7} {}",
                name,
                count,
                latency_cells(latency.as_ref())
            );
        }
        if e2e.untracked > 0 {
            let _ = writeln!(
                out,
                "note: {} accepted answers had no order id and were not followed",
                e2e.untracked
            );
        }
    }

    if let Some(lag) = &report.lag {
        let _ = writeln!(out, "\nconsumer lag (records behind)");
        let _ = writeln!(
            out,
            "{:<12} {:>8} {:>8} {:>8}  topics",
            "group", "max", "at (s)", "final"
        );
        for group in &lag.groups {
            let final_lag = group
                .final_lag
                .map(|l| l.to_string())
                .unwrap_or_else(|| "?".into());
            let topics = if group.topics.is_empty() {
                "(no committed offsets)".to_owned()
            } else {
                group.topics.join(", ")
            };
            let _ = writeln!(
                out,
                "{:<12} {:>8} {:>8.1} {:>8}  {}",
                group.group, group.max, group.max_at_s, final_lag, topics
            );
        }
        if lag.failed_samples > 0 {
            let _ = writeln!(
                out,
                "note: {} of {} lag samples failed",
                lag.failed_samples,
                lag.samples as u64 + lag.failed_samples
            );
        }
    }

    if report.interrupted && report.drain.as_ref().is_some_and(|d| !d.drained) {
        let _ = writeln!(out, "\ndrain: not measured (interrupted)");
    } else if let Some(drain) = &report.drain {
        match drain.drain_s {
            Some(s) => {
                let _ = writeln!(
                    out,
                    "\ndrain: {s:.1} s after {} (at {:.1} s): outcomes in, every group caught up",
                    drain.reference,
                    drain.reference_s + s
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "\ndrain: not drained within {:.0} s after {} (at {:.1} s)",
                    drain.timeout_s, drain.reference, drain.reference_s
                );
            }
        }
    } else {
        let _ = writeln!(out, "\ndrain: not measured (--no-e2e)");
    }
    out.push('\n');
    out.push_str(&report.verdict.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample_report;
    use crate::verdict::Thresholds;

    #[test]
    fn the_table_has_every_section() {
        let text = render(&sample_report(&Thresholds::default()));
        for needle in [
            "POST /orders",
            "baseline",
            "spike",
            "recovery",
            "all ",
            "end to end",
            "placed → confirmed/rejected",
            "placed → email sent",
            "consumer lag",
            "analytics",
            "drain: 2.0 s after spike end",
            "verdict: PASS (no thresholds)",
        ] {
            assert!(text.contains(needle), "no {needle:?} in\n{text}");
        }
    }

    #[test]
    fn the_table_ends_with_the_missed_threshold() {
        let text = render(&sample_report(&Thresholds {
            max_p99_ms: Some(0.0),
            ..Thresholds::default()
        }));
        assert!(text.contains("verdict: FAIL"), "{text}");
        assert!(text.contains("MISSED --max-p99-ms"), "{text}");
    }
}
