//! The SVG of `kpis plot`: one panel per KPI over window end time, windows with alerts in red.
//! Pure: windows in, one SVG document out.
//!
//! Written by hand rather than with `plotters`: six line panels need rectangles, polylines,
//! circles and text, a few hundred lines here. `plotters` would add a dependency tree for no
//! more than that, and its default text support measures text with the system's fonts, which
//! a fresh machine may lack. Text here is SVG `<text>` in the generic `sans-serif` family,
//! which the browser resolves with whatever fonts it has, so the file needs none to be made.
//!
//! Each point carries what it shows, so a program (or a test) can read the plot back exactly:
//! `<circle class="point" data-kpi="avg_cpu_percent" data-end="<RFC 3339>" data-value="41.5">`,
//! with the value written by Rust's shortest round-trip formatting of the stored `f64`.
//! A window with alerts has red points and, at the foot of each panel, a red tick
//! `<rect class="alert" data-end="...">`: a tick rather than a shaded column because in a
//! simulated fleet most windows hold some reading past a threshold, and full-height shading
//! would cover the lines.

use std::fmt::Write;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::chart::range;
use crate::kpi_series::{Kpi, WindowKpis};

const WIDTH: f64 = 960.0;
const LEFT: f64 = 84.0;
const RIGHT: f64 = 24.0;
/// Title, caption and time range above the first panel.
const HEADER: f64 = 78.0;
/// A panel: its title line, its frame, and the gap to the next one.
const PANEL: f64 = 150.0;
const PANEL_TITLE: f64 = 22.0;
const FRAME: f64 = 100.0;
/// Room under the last panel for the time labels.
const FOOTER: f64 = 36.0;
/// Keeps the first and last points, and the extremes, off the frame's edges (and the lowest
/// points above the alert ticks).
const INSET_X: f64 = 10.0;
const INSET_Y: f64 = 8.0;
/// Height of the alert tick at the foot of a panel.
const ALERT_TICK: f64 = 5.0;
/// Vertical time grid lines (and labels) at most.
const TIME_TICKS: usize = 6;

const LINE_COLOUR: &str = "#1f77b4";
const ALERT_COLOUR: &str = "#d62728";

/// Windows and the words around them.
pub struct Plot<'a> {
    /// Plotted in order of end time; windows without one cannot be placed and are left out.
    pub windows: &'a [WindowKpis],
    pub title: &'a str,
    /// A line under the title, e.g. what the red marks mean.
    pub caption: &'a str,
}

/// The whole SVG document.
pub fn svg(plot: &Plot) -> String {
    let mut placed: Vec<(OffsetDateTime, &WindowKpis)> = plot
        .windows
        .iter()
        .filter_map(|w| Some((w.end?, w)))
        .collect();
    placed.sort_by_key(|(end, _)| *end);
    let time_axis = TimeAxis::new(&placed);

    let height = HEADER + PANEL * Kpi::ALL.len() as f64 + FOOTER;
    let mut out = String::new();
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12" data-windows="{}">"#,
        placed.len()
    );
    let _ = writeln!(
        out,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="24" font-size="16" font-weight="bold">{}</text>"#,
        escape(plot.title)
    );
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="44" fill="#444">{}</text>"##,
        escape(plot.caption)
    );
    let span = match (placed.first(), placed.last()) {
        (Some((first, _)), Some((last, _))) => format!(
            "{} windows, window end (UTC) from {} to {}",
            placed.len(),
            stamp(*first),
            stamp(*last)
        ),
        _ => "no windows".to_string(),
    };
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="62" fill="#444">{}</text>"##,
        escape(&span)
    );

    for (i, kpi) in Kpi::ALL.iter().enumerate() {
        let top = HEADER + PANEL * i as f64;
        panel(&mut out, *kpi, i, top, &placed, &time_axis);
    }

    // Time labels under the last panel.
    let below = HEADER + PANEL * (Kpi::ALL.len() - 1) as f64 + PANEL_TITLE + FRAME + 16.0;
    for (t, x) in time_axis.ticks() {
        let _ = writeln!(
            out,
            r##"<text x="{x:.1}" y="{below:.1}" text-anchor="middle" fill="#444">{}</text>"##,
            time_axis.label(t)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// One KPI's panel: title with min and max, frame, time grid, alert ticks, line and points.
fn panel(
    out: &mut String,
    kpi: Kpi,
    index: usize,
    top: f64,
    placed: &[(OffsetDateTime, &WindowKpis)],
    time_axis: &TimeAxis,
) {
    let values: Vec<Option<f64>> = placed.iter().map(|(_, w)| w.values[index]).collect();
    let d = kpi.decimals();
    let extremes = range(&values);
    let title = match extremes {
        Some((min, max)) => format!("{} (min {min:.d$}, max {max:.d$})", kpi.title()),
        None => format!("{} (no values)", kpi.title()),
    };
    let frame_top = top + PANEL_TITLE;
    let frame_width = WIDTH - LEFT - RIGHT;
    let _ = writeln!(out, r#"<g class="panel" data-kpi="{}">"#, kpi.field());
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{:.1}" font-weight="bold">{}</text>"#,
        top + 15.0,
        escape(&title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{frame_top:.1}" width="{frame_width:.1}" height="{FRAME}" fill="#fafafa" stroke="#ccc"/>"##
    );
    for (_, x) in time_axis.ticks() {
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{frame_top:.1}" x2="{x:.1}" y2="{:.1}" stroke="#e4e4e4"/>"##,
            frame_top + FRAME
        );
    }

    // Ticks as wide as a window's share of the frame (within limits), so neighbours touch
    // but do not overlap.
    let tick = (frame_width / placed.len().max(1) as f64 * 0.8).clamp(2.0, 24.0);
    for (end, _) in placed.iter().filter(|(_, w)| w.alerted) {
        let _ = writeln!(
            out,
            r#"<rect class="alert" data-end="{}" x="{:.1}" y="{:.1}" width="{tick:.1}" height="{ALERT_TICK}" fill="{ALERT_COLOUR}"/>"#,
            rfc3339(*end),
            time_axis.x(*end) - tick / 2.0,
            frame_top + FRAME - ALERT_TICK
        );
    }

    let Some((min, max)) = extremes else {
        out.push_str("</g>\n");
        return;
    };
    let value_axis = ValueAxis::new(min, max, frame_top);
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#444">{max:.d$}</text>"##,
        LEFT - 6.0,
        value_axis.y(max) + 4.0
    );
    if max > min {
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#444">{min:.d$}</text>"##,
            LEFT - 6.0,
            value_axis.y(min) + 4.0
        );
    }

    // A window without the value breaks the line rather than joining across it.
    let mut run: Vec<String> = Vec::new();
    let flush = |run: &mut Vec<String>, out: &mut String| {
        if run.len() > 1 {
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{LINE_COLOUR}" stroke-width="1.5"/>"#,
                run.join(" ")
            );
        }
        run.clear();
    };
    for ((end, _), value) in placed.iter().zip(&values) {
        match value {
            Some(v) => run.push(format!("{:.1},{:.1}", time_axis.x(*end), value_axis.y(*v))),
            None => flush(&mut run, out),
        }
    }
    flush(&mut run, out);

    let radius = if placed.len() > 200 { 1.5 } else { 2.5 };
    for ((end, w), value) in placed.iter().zip(&values) {
        let Some(v) = value else { continue };
        let (class, fill) = if w.alerted {
            ("point alert", ALERT_COLOUR)
        } else {
            ("point", LINE_COLOUR)
        };
        let _ = writeln!(
            out,
            r#"<circle class="{class}" data-kpi="{}" data-end="{}" data-value="{v}" cx="{:.1}" cy="{:.1}" r="{radius}" fill="{fill}"><title>{} UTC: {v:.d$} {}</title></circle>"#,
            kpi.field(),
            rfc3339(*end),
            time_axis.x(*end),
            value_axis.y(*v),
            stamp(*end),
            escape(kpi.label())
        );
    }
    out.push_str("</g>\n");
}

/// Window end time to x, shared by every panel.
struct TimeAxis {
    first: Option<OffsetDateTime>,
    span_s: f64,
}

impl TimeAxis {
    fn new(placed: &[(OffsetDateTime, &WindowKpis)]) -> TimeAxis {
        let first = placed.first().map(|(t, _)| *t);
        let last = placed.last().map(|(t, _)| *t);
        let span_s = match (first, last) {
            (Some(a), Some(b)) => (b - a).as_seconds_f64(),
            _ => 0.0,
        };
        TimeAxis { first, span_s }
    }

    /// One window, or all at the same instant, sit in the middle.
    fn x(&self, t: OffsetDateTime) -> f64 {
        let usable = WIDTH - LEFT - RIGHT - 2.0 * INSET_X;
        match self.first {
            Some(first) if self.span_s > 0.0 => {
                LEFT + INSET_X + (t - first).as_seconds_f64() / self.span_s * usable
            }
            _ => LEFT + INSET_X + usable / 2.0,
        }
    }

    /// Evenly spaced instants across the range, with their x.
    fn ticks(&self) -> Vec<(OffsetDateTime, f64)> {
        let Some(first) = self.first else {
            return Vec::new();
        };
        if self.span_s <= 0.0 {
            return vec![(first, self.x(first))];
        }
        (0..TIME_TICKS)
            .map(|i| {
                let offset = self.span_s * i as f64 / (TIME_TICKS - 1) as f64;
                let t = first + time::Duration::seconds_f64(offset);
                (t, self.x(t))
            })
            .collect()
    }

    /// Clock time, with the date when the range spans more than a day.
    fn label(&self, t: OffsetDateTime) -> String {
        let clock = format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second());
        if self.span_s > 86_400.0 {
            format!("{:02}-{:02} {clock}", u8::from(t.month()), t.day())
        } else {
            clock
        }
    }
}

/// A value to y within one panel's frame, the max at the top.
struct ValueAxis {
    low: f64,
    high: f64,
    frame_top: f64,
}

impl ValueAxis {
    /// A flat series gets a range around its value, so its line runs mid-frame.
    fn new(min: f64, max: f64, frame_top: f64) -> ValueAxis {
        let (low, high) = if max > min {
            (min, max)
        } else {
            let half = (min.abs() * 0.1).max(1.0);
            (min - half, max + half)
        };
        ValueAxis {
            low,
            high,
            frame_top,
        }
    }

    fn y(&self, v: f64) -> f64 {
        let usable = FRAME - 2.0 * INSET_Y;
        self.frame_top + INSET_Y + (self.high - v) / (self.high - self.low) * usable
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    // Only a year outside 0..=9999 cannot be written; a stored window's end never is.
    t.format(&Rfc3339).unwrap_or_default()
}

/// A UTC time as `YYYY-MM-DD hh:mm:ss`, as the table and the picture label windows.
pub fn stamp(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Text for element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn window(end: Option<OffsetDateTime>, cpu: Option<f64>, alerted: bool) -> WindowKpis {
        WindowKpis {
            end,
            values: [cpu, Some(50.0), Some(1.25), Some(2.5), Some(3.0), None],
            alerted,
        }
    }

    fn plot(windows: &[WindowKpis]) -> String {
        svg(&Plot {
            windows,
            title: "KPIs <test> & co",
            caption: "red: alerts",
        })
    }

    /// The `attr="..."` values of every element starting with `start` (e.g. `<circle`).
    fn attrs<'a>(svg: &'a str, start: &str, attr: &str) -> Vec<&'a str> {
        let key = format!(" {attr}=\"");
        svg.lines()
            .filter(|l| l.starts_with(start))
            .filter_map(|l| {
                let from = l.find(&key)? + key.len();
                Some(&l[from..from + l[from..].find('"')?])
            })
            .collect()
    }

    #[test]
    fn every_window_with_a_value_is_one_point_per_kpi_carrying_the_exact_value() {
        let t0 = datetime!(2026-12-03 02:00:00.25 UTC);
        let windows = [
            window(Some(t0), Some(41.234_567_890_123), false),
            window(
                Some(t0 + time::Duration::seconds(40)),
                Some(0.1 + 0.2),
                true,
            ),
        ];
        let svg = plot(&windows);
        assert!(svg.starts_with("<?xml"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        // Six KPIs, two windows, one missing rate each: 5 * 2 points.
        assert_eq!(attrs(&svg, "<circle", "data-value").len(), 10);
        let cpu: Vec<(&str, &str)> = svg
            .lines()
            .filter(|l| l.contains(r#"data-kpi="avg_cpu_percent" data-end"#))
            .map(|l| {
                let end = attrs(l, "<circle", "data-end")[0];
                let value = attrs(l, "<circle", "data-value")[0];
                (end, value)
            })
            .collect();
        assert_eq!(
            cpu,
            [
                ("2026-12-03T02:00:00.25Z", "41.234567890123"),
                ("2026-12-03T02:00:40.25Z", "0.30000000000000004")
            ]
        );
        for (_, value) in &cpu {
            let parsed: f64 = value.parse().unwrap();
            assert!(parsed == 41.234_567_890_123 || parsed == 0.1 + 0.2);
        }
        // The error count of 3 is written as a whole number.
        assert!(svg.contains(
            r#"data-kpi="total_error_count" data-end="2026-12-03T02:00:00.25Z" data-value="3""#
        ));
    }

    #[test]
    fn alerted_windows_get_a_tick_in_every_panel_and_red_points() {
        let t0 = datetime!(2026-12-03 02:00:00 UTC);
        let windows = [
            window(Some(t0), Some(10.0), false),
            window(Some(t0 + time::Duration::minutes(1)), Some(95.0), true),
            window(Some(t0 + time::Duration::minutes(2)), Some(20.0), false),
        ];
        let svg = plot(&windows);
        let ticks = attrs(&svg, "<rect class=\"alert\"", "data-end");
        assert_eq!(ticks, vec!["2026-12-03T02:01:00Z"; 6]);
        let red = attrs(&svg, "<circle class=\"point alert\"", "data-end");
        assert_eq!(red, vec!["2026-12-03T02:01:00Z"; 5]);
    }

    #[test]
    fn points_follow_end_time_left_to_right_and_value_bottom_to_top() {
        let t0 = datetime!(2026-12-03 02:00:00 UTC);
        // Given out of order: the plot sorts by end time.
        let windows = [
            window(Some(t0 + time::Duration::seconds(30)), Some(50.0), false),
            window(Some(t0), Some(0.0), false),
            window(Some(t0 + time::Duration::seconds(60)), Some(100.0), false),
        ];
        let svg = plot(&windows);
        let cpu = |attr| -> Vec<f64> {
            attrs(&svg, "<circle", attr)
                .into_iter()
                .take(3)
                .map(|v| v.parse().unwrap())
                .collect()
        };
        // x: the frame's inset edges and their middle; y: bottom, middle, top of the frame.
        assert_eq!(cpu("cx"), [94.0, 510.0, 926.0]);
        let top = HEADER + PANEL_TITLE;
        assert_eq!(
            cpu("cy"),
            [top + FRAME - INSET_Y, top + FRAME / 2.0, top + INSET_Y]
        );
    }

    #[test]
    fn a_gap_breaks_the_line_and_a_window_without_an_end_is_left_out() {
        let t0 = datetime!(2026-12-03 02:00:00 UTC);
        let minute = time::Duration::minutes(1);
        let windows = [
            window(Some(t0), Some(1.0), false),
            window(Some(t0 + minute), Some(2.0), false),
            window(Some(t0 + minute * 2), None, false),
            window(Some(t0 + minute * 3), Some(3.0), false),
            window(Some(t0 + minute * 4), Some(4.0), false),
            window(None, Some(99.0), true),
        ];
        let svg = plot(&windows);
        assert!(svg.contains(r#"data-windows="5""#));
        let cpu_panel = &svg[svg.find(r#"data-kpi="avg_cpu_percent">"#).unwrap()
            ..svg.find(r#"data-kpi="avg_memory_percent">"#).unwrap()];
        assert_eq!(cpu_panel.matches("<polyline").count(), 2);
        assert_eq!(cpu_panel.matches("<circle").count(), 4);
        assert!(!svg.contains(r#"data-value="99""#));
        assert!(!svg.contains("class=\"alert\""));
    }

    #[test]
    fn a_single_window_and_a_flat_series_sit_mid_frame() {
        let t0 = datetime!(2026-12-03 02:00:00 UTC);
        let svg = plot(&[window(Some(t0), Some(42.0), false)]);
        let top = HEADER + PANEL_TITLE;
        let cx: Vec<&str> = attrs(&svg, "<circle", "cx");
        let cy: Vec<&str> = attrs(&svg, "<circle", "cy");
        assert_eq!(cx[0], format!("{:.1}", LEFT + (WIDTH - LEFT - RIGHT) / 2.0));
        assert_eq!(cy[0], format!("{:.1}", top + FRAME / 2.0));
        assert!(svg.contains("CPU, average % (min 42.00, max 42.00)"));
    }

    #[test]
    fn text_is_escaped_and_uses_a_generic_font_family() {
        let svg = plot(&[]);
        assert!(svg.contains("KPIs &lt;test&gt; &amp; co"), "{svg}");
        assert!(svg.contains(r#"font-family="sans-serif""#));
        assert!(svg.contains("no windows"));
        assert!(svg.contains("(no values)"));
        assert!(!svg.contains("<circle"));
    }
}
