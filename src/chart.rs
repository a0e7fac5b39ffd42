//! Sparklines for `kpis show --chart`: one row per KPI across the windows shown, oldest to
//! newest, one block character per window, with the smallest and largest value. Pure: values
//! in, text out. The eight blocks U+2581..U+2588 are in every terminal font that draws box
//! characters, unlike braille or sextant characters.

use crate::kpi_series::{Kpi, WindowKpis};

/// From lowest to highest: a value's block is its place between the series' min and max.
pub const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// Where a window has no value (a missing field, a null rate, NaN), so the gap shows.
pub const GAP: char = ' ';

/// One character per value: the lowest block for the series' minimum, the highest for its
/// maximum, the rest in eight equal steps between, rounded to the nearest. A flat series
/// (one value, or all equal) is drawn on the lowest block: nothing rises.
pub fn sparkline(values: &[Option<f64>]) -> String {
    let Some((min, max)) = range(values) else {
        return values.iter().map(|_| GAP).collect();
    };
    let top = (BLOCKS.len() - 1) as f64;
    values
        .iter()
        .map(|v| match v {
            Some(v) if v.is_finite() => {
                let step = if max > min {
                    ((v - min) / (max - min) * top).round()
                } else {
                    0.0
                };
                // `step` is 0..=top by construction; the clamp keeps rounding honest.
                BLOCKS[step.clamp(0.0, top) as usize]
            }
            _ => GAP,
        })
        .collect()
}

/// The smallest and largest finite values, or `None` when there is none.
pub fn range(values: &[Option<f64>]) -> Option<(f64, f64)> {
    values
        .iter()
        .flatten()
        .filter(|v| v.is_finite())
        .fold(None, |acc, &v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((f64::min(lo, v), f64::max(hi, v))),
        })
}

/// The lines printed under the table: a heading, then per KPI its label, its sparkline over
/// `windows` (oldest first) and its min and max, e.g.
/// `  cpu %      ▁▃█  min 12.50  max 80.00`.
pub fn chart(windows: &[WindowKpis]) -> Vec<String> {
    let noun = if windows.len() == 1 {
        "window"
    } else {
        "windows"
    };
    let mut lines = vec![format!(
        "KPIs over {} {noun}, oldest → newest:",
        windows.len()
    )];
    for (i, kpi) in Kpi::ALL.iter().enumerate() {
        let values: Vec<Option<f64>> = windows.iter().map(|w| w.values[i]).collect();
        lines.push(kpi_line(*kpi, &values));
    }
    lines
}

/// One KPI's row: label, sparkline, min and max (or that it has no values).
pub fn kpi_line(kpi: Kpi, values: &[Option<f64>]) -> String {
    let line = sparkline(values);
    let d = kpi.decimals();
    match range(values) {
        Some((min, max)) => format!("  {:<9}  {line}  min {min:.d$}  max {max:.d$}", kpi.label()),
        None => format!("  {:<9}  {line}  no values", kpi.label()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(values: &[f64]) -> Vec<Option<f64>> {
        values.iter().copied().map(Some).collect()
    }

    #[test]
    fn eight_evenly_spaced_values_use_each_block_once_in_order() {
        assert_eq!(
            sparkline(&some(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])),
            "▁▂▃▄▅▆▇█"
        );
        assert_eq!(
            sparkline(&some(&[8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0])),
            "█▇▆▅▄▃▂▁"
        );
    }

    #[test]
    fn the_minimum_is_the_lowest_block_the_maximum_the_highest_and_between_rounds() {
        // Range 0..70: a step of 10 per block; 14 is 1.4 steps (rounds down), 15 is 1.5 (up),
        // 64.9 is 6.49 steps.
        assert_eq!(
            sparkline(&some(&[0.0, 70.0, 14.0, 15.0, 64.9, 35.0])),
            "▁█▂▃▇▅"
        );
        // Negative values and a tiny spread are scaled the same way.
        assert_eq!(sparkline(&some(&[-1.0, 0.0, 1.0])), "▁▅█");
        assert_eq!(sparkline(&some(&[0.5, 0.5000001])), "▁█");
    }

    #[test]
    fn a_flat_series_and_a_single_value_lie_on_the_lowest_block() {
        assert_eq!(sparkline(&some(&[42.0, 42.0, 42.0])), "▁▁▁");
        assert_eq!(sparkline(&some(&[7.5])), "▁");
        assert_eq!(sparkline(&some(&[0.0; 4])), "▁▁▁▁");
    }

    #[test]
    fn missing_nan_and_infinite_values_are_gaps_that_do_not_move_the_range() {
        let values = [
            Some(10.0),
            None,
            Some(f64::NAN),
            Some(20.0),
            Some(f64::INFINITY),
            Some(f64::NEG_INFINITY),
            Some(15.0),
        ];
        assert_eq!(sparkline(&values), "▁  █  ▅");
        assert_eq!(range(&values), Some((10.0, 20.0)));
        assert_eq!(sparkline(&[None, Some(f64::NAN)]), "  ");
        assert_eq!(range(&[None, Some(f64::NAN)]), None);
        assert_eq!(sparkline(&[]), "");
    }

    #[test]
    fn a_kpi_row_has_its_label_line_min_and_max_with_the_kpis_decimals() {
        assert_eq!(
            kpi_line(Kpi::Cpu, &some(&[12.5, 80.0, 46.25])),
            "  cpu %      ▁█▅  min 12.50  max 80.00"
        );
        assert_eq!(
            kpi_line(Kpi::Errors, &some(&[0.0, 7.0, 3.0])),
            "  errors     ▁█▄  min 0  max 7"
        );
        assert_eq!(
            kpi_line(Kpi::MessagesPerSecond, &[None, None]),
            "  msg/s          no values"
        );
    }

    #[test]
    fn the_chart_has_a_heading_and_one_row_per_kpi_in_order() {
        let window = |cpu: f64, rate: Option<f64>| WindowKpis {
            end: None,
            values: [Some(cpu), Some(50.0), Some(1.0), Some(2.0), Some(0.0), rate],
            alerted: false,
        };
        let lines = chart(&[window(10.0, Some(2.0)), window(30.0, None)]);
        assert_eq!(
            lines,
            [
                "KPIs over 2 windows, oldest → newest:",
                "  cpu %      ▁█  min 10.00  max 30.00",
                "  memory %   ▁▁  min 50.00  max 50.00",
                "  disk MB/s  ▁▁  min 1.00  max 1.00",
                "  net Mbps   ▁▁  min 2.00  max 2.00",
                "  errors     ▁▁  min 0  max 0",
                "  msg/s      ▁   min 2.00  max 2.00",
            ]
        );
        assert_eq!(
            chart(&[window(1.0, None)])[0],
            "KPIs over 1 window, oldest → newest:"
        );
    }
}
