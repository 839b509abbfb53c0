//! The chart: three panels over time, written by hand as SVG.
//!
//! 1. offered and accepted requests per second;
//! 2. POST latency p50 and p99 per second (of the requests due in that second);
//! 3. consumer lag per group, one line per group.
//!
//! Dashed vertical lines mark the phase boundaries (named above the first panel); a green
//! line marks the moment the system drained.

use std::fmt::Write as _;

use super::Report;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 50.0;
const PANEL: f64 = 190.0;
const GAP: f64 = 60.0;
const PALETTE: [&str; 8] = [
    "#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf", "#555555",
];

/// Escapes text for an SVG text node or attribute.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Series {
    name: String,
    color: &'static str,
    points: Vec<(f64, f64)>,
}

struct Panel {
    title: &'static str,
    unit: &'static str,
    series: Vec<Series>,
}

/// A round number at or above `value` for the top of an axis.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    for step in [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0] {
        if step * magnitude >= value {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

/// A step between time ticks giving at most about ten ticks over `end` seconds.
fn time_step(end: f64) -> f64 {
    [
        1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0,
    ]
    .into_iter()
    .find(|step| end / step <= 10.0)
    .unwrap_or(3600.0)
}

fn number(value: f64) -> String {
    if value >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// Renders the chart of `report`.
pub fn render(report: &Report) -> String {
    let plot_width = WIDTH - LEFT - RIGHT;
    let last_second = report
        .series
        .last()
        .map(|s| s.t as f64 + 1.0)
        .unwrap_or(0.0);
    let last_lag = report.lag_series.last().map(|p| p.t_s).unwrap_or(0.0);
    let end = report
        .duration_s
        .max(last_second)
        .max(last_lag)
        .max(report.profile.phases.last().map(|p| p.end_s).unwrap_or(0.0))
        .max(1.0);
    let x = |t: f64| LEFT + t.clamp(0.0, end) / end * plot_width;

    let mid = |t: u64| t as f64 + 0.5;
    let rates = Panel {
        title: "requests per second",
        unit: "/s",
        series: vec![
            Series {
                name: "offered".into(),
                color: "#888888",
                points: report
                    .series
                    .iter()
                    .map(|s| (mid(s.t), s.offered as f64))
                    .collect(),
            },
            Series {
                name: "accepted (202)".into(),
                color: "#1b9e77",
                points: report
                    .series
                    .iter()
                    .map(|s| (mid(s.t), s.accepted as f64))
                    .collect(),
            },
        ],
    };
    let latency = Panel {
        title: "POST latency from intended start",
        unit: "ms",
        series: vec![
            Series {
                name: "p50".into(),
                color: "#377eb8",
                points: report
                    .series
                    .iter()
                    .filter_map(|s| s.p50_ms.map(|v| (mid(s.t), v)))
                    .collect(),
            },
            Series {
                name: "p99".into(),
                color: "#e41a1c",
                points: report
                    .series
                    .iter()
                    .filter_map(|s| s.p99_ms.map(|v| (mid(s.t), v)))
                    .collect(),
            },
        ],
    };
    let groups: Vec<String> = match &report.lag {
        Some(lag) => lag.groups.iter().map(|g| g.group.clone()).collect(),
        None => Vec::new(),
    };
    let lag = Panel {
        title: if report.lag.is_some() {
            "consumer lag (records)"
        } else {
            "consumer lag: not measured (--no-e2e)"
        },
        unit: "",
        series: groups
            .iter()
            .enumerate()
            .map(|(i, group)| Series {
                name: group.clone(),
                color: PALETTE[i % PALETTE.len()],
                points: report
                    .lag_series
                    .iter()
                    .filter_map(|p| {
                        let lag = p.groups.get(group).copied().flatten()?;
                        Some((p.t_s, lag as f64))
                    })
                    .collect(),
            })
            .collect(),
    };
    let panels = [rates, latency, lag];
    let height = TOP + panels.len() as f64 * (PANEL + GAP);

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        svg,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="18" font-size="14" font-weight="bold">{}</text>"#,
        escape(&format!(
            "spine-spike {}: {}",
            report.started_at, report.profile.description
        ))
    );

    // Phase names along the top of the first panel.
    for phase in &report.profile.phases {
        let centre = (x(phase.start_s) + x(phase.end_s)) / 2.0;
        let _ = writeln!(
            svg,
            r##"<text x="{centre:.1}" y="{:.1}" text-anchor="middle" fill="#666666">{}</text>"##,
            TOP + 13.0,
            escape(&phase.name)
        );
    }

    let drained_at = report
        .drain
        .as_ref()
        .and_then(|d| d.drain_s.map(|s| d.reference_s + s));
    for (i, panel) in panels.iter().enumerate() {
        let top = TOP + i as f64 * (PANEL + GAP);
        let bottom = top + PANEL;
        let max = panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max);
        let y_max = nice_ceiling(max);
        let y = |v: f64| bottom - (v / y_max).clamp(0.0, 1.0) * PANEL;

        let _ = writeln!(svg, r#"<g class="panel">"#);
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_width}" height="{PANEL}" fill="none" stroke="#cccccc"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{LEFT}" y="{:.1}" font-weight="bold">{}</text>"#,
            top - 6.0,
            escape(panel.title)
        );
        // Y axis: 0, half and top.
        for fraction in [0.0, 0.5, 1.0] {
            let value = y_max * fraction;
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#eeeeee"/>"##,
                y(value),
                LEFT + plot_width
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}{}</text>"#,
                LEFT - 6.0,
                y(value) + 4.0,
                number(value),
                escape(panel.unit)
            );
        }
        // X axis: about ten ticks on round seconds.
        let step = time_step(end);
        let mut t = 0.0;
        while t <= end + 1e-9 {
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}s</text>"#,
                x(t),
                bottom + 14.0,
                number(t)
            );
            t += step;
        }
        // Phase boundaries.
        for phase in report.profile.phases.iter().skip(1) {
            let _ = writeln!(
                svg,
                r##"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{bottom}" stroke="#999999" stroke-dasharray="4 3"/>"##,
                x(phase.start_s)
            );
        }
        if let Some(last) = report.profile.phases.last() {
            let _ = writeln!(
                svg,
                r##"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{bottom}" stroke="#999999" stroke-dasharray="4 3"/>"##,
                x(last.end_s)
            );
        }
        if let Some(at) = drained_at {
            let _ = writeln!(
                svg,
                r##"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{bottom}" stroke="#1b9e77" stroke-dasharray="2 2"/>"##,
                x(at)
            );
            if i == panels.len() - 1 {
                // Left of the line when the line is near the right edge, so the label
                // stays inside the plot and off the legend.
                let (label_x, anchor) = if x(at) > LEFT + plot_width - 60.0 {
                    (x(at) - 3.0, "end")
                } else {
                    (x(at) + 3.0, "start")
                };
                let _ = writeln!(
                    svg,
                    r##"<text x="{label_x:.1}" y="{:.1}" text-anchor="{anchor}" fill="#1b9e77">drained</text>"##,
                    top + 12.0
                );
            }
        }
        // The series and their legend.
        for (n, series) in panel.series.iter().enumerate() {
            let points: Vec<String> = series
                .points
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"><title>{}</title></polyline>"#,
                series.color,
                points.join(" "),
                escape(&series.name)
            );
            let ly = top + 14.0 + n as f64 * 16.0;
            let lx = LEFT + plot_width + 12.0;
            let _ = writeln!(
                svg,
                r#"<line x1="{lx}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="{2}" stroke-width="3"/>"#,
                ly - 4.0,
                lx + 16.0,
                series.color
            );
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{ly:.1}">{}</text>"#,
                lx + 22.0,
                escape(&series.name)
            );
        }
        let _ = writeln!(svg, "</g>");
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample_report;
    use crate::verdict::Thresholds;

    /// Checks that every tag is closed in order, without an XML parser: a stack of names.
    fn assert_balanced(svg: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let close = rest[open..].find('>').expect("an unterminated tag") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "a tag inside a tag: {tag}");
            let name = |t: &str| {
                t.split(|c: char| c.is_whitespace() || c == '/')
                    .find(|s| !s.is_empty())
                    .unwrap_or_default()
                    .to_owned()
            };
            if let Some(closing) = tag.strip_prefix('/') {
                assert_eq!(
                    stack.pop().as_deref(),
                    Some(closing),
                    "mismatched </{closing}>"
                );
            } else if !tag.ends_with('/') {
                stack.push(name(tag));
            }
            rest = &rest[close + 1..];
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
    }

    #[test]
    fn the_chart_is_well_formed_with_one_line_per_series() {
        let report = sample_report(&Thresholds::default());
        let svg = render(&report);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.ends_with("</svg>\n"));
        assert_balanced(&svg);
        // offered, accepted; p50, p99; four groups.
        assert_eq!(svg.matches("<polyline").count(), 2 + 2 + 4);
        assert_eq!(svg.matches("<g class=\"panel\">").count(), 3);
        for name in ["baseline", "spike", "recovery", "analytics", "drained"] {
            assert!(svg.contains(name), "no {name}");
        }
        // Two inner phase boundaries and the end of the load, in each of three panels.
        assert_eq!(svg.matches("stroke-dasharray=\"4 3\"").count(), 3 * 3);
        let lag_line = svg
            .split("<polyline")
            .find(|s| s.contains("<title>analytics</title>"))
            .unwrap();
        let points = lag_line.split("points=\"").nth(1).unwrap();
        let points = &points[..points.find('"').unwrap()];
        assert_eq!(points.split(' ').count(), 9, "one point per lag sample");
    }

    #[test]
    fn text_is_escaped() {
        let mut report = sample_report(&Thresholds::default());
        report.profile.phases[0].name = "a<b & \"c\"".into();
        let svg = render(&report);
        assert!(svg.contains("a&lt;b &amp; &quot;c&quot;"));
        assert_balanced(&svg);
    }

    #[test]
    fn time_ticks_are_round_seconds() {
        assert_eq!(time_step(9.0), 1.0);
        assert_eq!(time_step(69.0), 10.0);
        assert_eq!(time_step(3000.0), 300.0);
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 8.0);
        assert_eq!(nice_ceiling(120.0), 150.0);
        assert_eq!(nice_ceiling(552.0), 600.0);
        assert_eq!(nice_ceiling(2400.0), 2500.0);
        assert_eq!(nice_ceiling(9000.0), 10000.0);
    }
}
