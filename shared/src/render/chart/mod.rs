//! Charts: the data a [`ChartSpec`] asks for, laid out once as a list of
//! shapes (rectangles, lines, text) that the PDF draws as vectors and
//! [`png`] rasterises for messages. Text is measured with the embedded
//! fonts, so both look the same. Layout is pure and deterministic.

#[cfg(feature = "chart")]
pub mod png;

use super::display::display;
use super::format_cell;
use crate::contract::{ChartKind, ChartSpec, Column, ColumnType, Rows, decimal_value};
use std::ops::ControlFlow;

/// Most categories a bar chart draws (the first ones; the title says so).
pub const MAX_BARS: usize = 60;
/// Most points a line chart draws.
pub const MAX_POINTS: usize = 1000;
/// Longest axis label, in characters.
const MAX_LABEL: usize = 24;

/// An sRGB colour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rgb(pub u8, pub u8, pub u8);

/// Series colours: blue, amber, green (distinct for the common colour
/// blindnesses, and readable on white and on dark backgrounds).
pub const SERIES: [Rgb; 3] = [Rgb(37, 99, 235), Rgb(217, 119, 6), Rgb(5, 150, 105)];
const INK: Rgb = Rgb(31, 41, 51);
const MUTED: Rgb = Rgb(95, 107, 122);
const GRID: Rgb = Rgb(229, 231, 235);
const AXIS: Rgb = Rgb(154, 165, 177);
/// Axis labels' and the legend's type size, in points (the PNG is shown at
/// about one pixel per point in email, so smaller is hard to read).
const AXIS_TEXT: f32 = 9.0;

/// What to draw, in points, from the top-left corner (y grows down).
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Rect {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        color: Rgb,
    },
    /// An open polyline.
    Line {
        points: Vec<(f32, f32)>,
        width: f32,
        color: Rgb,
    },
    /// Text whose baseline starts at (`x`, `y`).
    Text {
        x: f32,
        y: f32,
        size: f32,
        bold: bool,
        text: String,
        color: Rgb,
    },
}

/// A laid-out chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Drawing {
    pub width: f32,
    pub height: f32,
    pub shapes: Vec<Shape>,
}

/// One series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    /// One value per category; `None` for an empty cell.
    pub values: Vec<Option<f64>>,
}

/// The values a chart shows, read from the rows.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartData {
    pub kind: ChartKind,
    pub title: String,
    /// The x column's cells, formatted as in the table.
    pub labels: Vec<String>,
    pub series: Vec<Series>,
    /// Rows left out past [`MAX_BARS`] or [`MAX_POINTS`].
    pub left_out: usize,
}

impl ChartData {
    /// Reads the chart's columns from `rows` (already checked against the
    /// spec and the table). Reads no further than the chart can show, then
    /// only counts.
    pub fn collect(
        rows: &dyn Rows,
        spec: &ChartSpec,
        tz: &jiff::tz::TimeZone,
    ) -> Result<Self, String> {
        let columns = rows.columns();
        let at = spec.resolve(columns)?;
        let most = match spec.kind {
            ChartKind::Bar => MAX_BARS,
            ChartKind::Line => MAX_POINTS,
        };
        let mut labels = Vec::new();
        let mut series: Vec<Series> =
            at.y.iter()
                .map(|&i| Series {
                    name: display(&columns[i].name, MAX_LABEL),
                    values: Vec::new(),
                })
                .collect();
        let mut left_out = 0;
        rows.scan(&mut |row| {
            if labels.len() == most {
                left_out += 1;
                return ControlFlow::Continue(());
            }
            let x = row.get(at.x).unwrap_or(&serde_json::Value::Null);
            labels.push(display(&format_cell(x, &columns[at.x], tz), MAX_LABEL));
            for (s, &i) in series.iter_mut().zip(&at.y) {
                s.values
                    .push(row.get(i).and_then(|v| number(v, &columns[i])));
            }
            ControlFlow::Continue(())
        })
        .map_err(|e| e.to_string())?;
        Ok(Self {
            kind: spec.kind,
            title: display(&spec.title, crate::contract::MAX_CHART_TITLE),
            labels,
            series,
            left_out,
        })
    }
}

/// A numeric cell's value.
fn number(v: &serde_json::Value, column: &Column) -> Option<f64> {
    match column.kind {
        ColumnType::Integer => v.as_i64().map(|n| n as f64),
        ColumnType::Decimal => decimal_value(v).ok().flatten(),
        _ => None,
    }
    .filter(|f| f.is_finite())
}

/// Measures text: width in points of `text` at `size`, bold or not.
pub type Measure<'a> = &'a dyn Fn(&str, bool, f32) -> f32;

/// The embedded fonts' measure.
pub fn font_measure(text: &str, bold: bool, size: f32) -> f32 {
    super::fonts::fonts().width(text, bold, size)
}

/// Axis ticks: evenly spaced round numbers covering `lo..=hi` (about
/// `most` intervals). Any finite input works: a flat range is widened, and
/// a range too wide or too narrow for round steps (near ±1.8e308, or
/// subnormal) falls back to its two ends. Never more than `4 × most + 1`.
pub fn ticks(lo: f64, hi: f64, most: usize) -> Vec<f64> {
    let most = most.max(1);
    let (mut lo, mut hi) = if lo.is_finite() && hi.is_finite() {
        (lo.min(hi), lo.max(hi))
    } else {
        (0.0, 1.0)
    };
    // Halves cannot overflow where `hi - lo` would.
    let scale = lo.abs().max(hi.abs());
    if hi / 2.0 - lo / 2.0 <= scale * 1e-9 {
        let pad = if scale > 0.0 { scale * 0.1 } else { 1.0 };
        lo = (lo - pad).max(f64::MIN);
        hi = (hi + pad).min(f64::MAX);
    }
    let fallback = vec![lo, hi];
    let raw = (hi / 2.0 - lo / 2.0) / most as f64 * 2.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    if !(raw.is_finite() && raw > 0.0 && magnitude.is_finite() && magnitude > 0.0) {
        return fallback;
    }
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let (first, last) = ((lo / step).floor(), (hi / step).ceil());
    if !(first.is_finite() && last.is_finite()) || last - first > (4 * most) as f64 {
        return fallback;
    }
    let ticks: Vec<f64> = (first as i64..=last as i64)
        .map(|i| i as f64 * step)
        .collect();
    if ticks.iter().all(|t| t.is_finite()) && ticks.len() >= 2 {
        ticks
    } else {
        fallback
    }
}

/// A tick label: compact for large magnitudes (`1.5M`, `2T`; scientific
/// from 10^15), grouped otherwise, with the decimals the step needs.
pub fn tick_label(v: f64, step: f64) -> String {
    let big = |div: f64, suffix: &str| {
        let d = decimals_for(step / div);
        format!("{}{suffix}", super::format_number(v / div, d))
    };
    let max = v.abs().max(step.abs());
    if max >= 1e15 {
        format!("{v:.1e}")
    } else if max >= 1e12 {
        big(1e12, "T")
    } else if max >= 1e9 {
        big(1e9, "B")
    } else if max >= 1e6 {
        big(1e6, "M")
    } else {
        super::format_number(v, decimals_for(step))
    }
}

/// The fewest decimals (at most 6) that show every multiple of `step`
/// exactly: 2.5 → 1, 0.25 → 2, 5 → 0.
fn decimals_for(step: f64) -> usize {
    let step = step.abs();
    if !step.is_finite() || step == 0.0 {
        return 0;
    }
    (0..=6)
        .find(|&d| {
            let scaled = step * 10f64.powi(d);
            (scaled - scaled.round()).abs() <= scaled.abs() * 1e-9
        })
        .unwrap_or(6) as usize
}

/// Space kept free around a chart, in points.
pub const PADDING: f32 = 6.0;

/// Lays out `data` in a `width` × `height` point box, [`PADDING`] inside
/// its edges.
pub fn layout(data: &ChartData, width: f32, height: f32, measure: Measure<'_>) -> Drawing {
    let mut d = layout_inner(data, width - 2.0 * PADDING, height - 2.0 * PADDING, measure);
    for shape in &mut d.shapes {
        match shape {
            Shape::Rect { x, y, .. } | Shape::Text { x, y, .. } => {
                *x += PADDING;
                *y += PADDING;
            }
            Shape::Line { points, .. } => {
                for (x, y) in points {
                    *x += PADDING;
                    *y += PADDING;
                }
            }
        }
    }
    d.width = width;
    d.height = height;
    // Whatever the values, nothing non-finite reaches a PDF or a PNG.
    d.shapes.retain(|shape| match shape {
        Shape::Rect { x, y, w, h, .. } => [*x, *y, *w, *h].iter().all(|v| v.is_finite()),
        Shape::Text { x, y, .. } => x.is_finite() && y.is_finite(),
        Shape::Line { points, .. } => points.iter().all(|(x, y)| x.is_finite() && y.is_finite()),
    });
    d
}

fn layout_inner(data: &ChartData, width: f32, height: f32, measure: Measure<'_>) -> Drawing {
    let mut shapes = Vec::new();
    let text = |shapes: &mut Vec<Shape>, x: f32, y: f32, size: f32, bold: bool, s: &str, color| {
        if !s.is_empty() {
            shapes.push(Shape::Text {
                x,
                y,
                size,
                bold,
                text: s.to_owned(),
                color,
            });
        }
    };
    // Title, with what was left out.
    let mut title = data.title.clone();
    if data.left_out > 0 {
        title.push_str(&format!(
            " (first {} of {} rows)",
            data.labels.len(),
            data.labels.len() + data.left_out
        ));
    }
    let title = fit(&title, true, 12.0, width * 0.6, measure);
    text(&mut shapes, 0.0, 12.0, 12.0, true, &title, INK);
    // Legend, right-aligned on the title's line.
    let mut x = width;
    for (s, color) in data.series.iter().zip(SERIES).rev() {
        let w = measure(&s.name, false, AXIS_TEXT);
        x -= w;
        text(&mut shapes, x, 12.0, AXIS_TEXT, false, &s.name, MUTED);
        x -= 13.0;
        shapes.push(Shape::Rect {
            x,
            y: 4.0,
            w: 9.0,
            h: 9.0,
            color,
        });
        x -= 10.0;
    }
    // The value axis.
    let values = data.series.iter().flat_map(|s| s.values.iter().flatten());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
        (lo.min(v), hi.max(v))
    });
    let (lo, hi) = if lo.is_finite() {
        match data.kind {
            ChartKind::Bar => (lo.min(0.0), hi.max(0.0)),
            ChartKind::Line => (lo, hi),
        }
    } else {
        (0.0, 1.0)
    };
    let ticks = ticks(lo, hi, 5);
    let step = ticks.get(1).zip(ticks.first()).map_or(1.0, |(b, a)| b - a);
    let labels: Vec<String> = ticks.iter().map(|t| tick_label(*t, step)).collect();
    let label_w = labels
        .iter()
        .map(|l| measure(l, false, AXIS_TEXT))
        .fold(0.0, f32::max);
    let (left, top, right, bottom) = (label_w + 6.0, 28.0, width - 2.0, height - 18.0);
    let (t_lo, t_hi) = (
        ticks.first().copied().unwrap_or(0.0),
        ticks.last().copied().unwrap_or(1.0),
    );
    // In halves, so that spans near ±1.8e308 do not overflow.
    let half_span = if t_hi > t_lo {
        t_hi / 2.0 - t_lo / 2.0
    } else {
        1.0
    };
    let y_of = |v: f64| bottom - ((v / 2.0 - t_lo / 2.0) / half_span) as f32 * (bottom - top);
    for (t, label) in ticks.iter().zip(&labels) {
        let y = y_of(*t);
        shapes.push(Shape::Line {
            points: vec![(left, y), (right, y)],
            width: if *t == 0.0 { 0.8 } else { 0.5 },
            color: if *t == 0.0 { AXIS } else { GRID },
        });
        let w = measure(label, false, AXIS_TEXT);
        text(
            &mut shapes,
            left - 4.0 - w,
            y + 2.5,
            AXIS_TEXT,
            false,
            label,
            MUTED,
        );
    }
    // Categories.
    let n = data.labels.len().max(1);
    let band = (right - left) / n as f32;
    let widest = data
        .labels
        .iter()
        .map(|l| measure(l, false, AXIS_TEXT))
        .fold(0.0, f32::max);
    let every = ((widest + 6.0) / band.max(0.1)).ceil().max(1.0) as usize;
    for (i, label) in data.labels.iter().enumerate().step_by(every) {
        let label = fit(label, false, AXIS_TEXT, band * every as f32 - 4.0, measure);
        let cx = left + band * (i as f32 + 0.5);
        let w = measure(&label, false, AXIS_TEXT);
        text(
            &mut shapes,
            cx - w / 2.0,
            height - 4.0,
            AXIS_TEXT,
            false,
            &label,
            MUTED,
        );
    }
    match data.kind {
        ChartKind::Bar => {
            let group = band * 0.8;
            let bar = group / data.series.len().max(1) as f32;
            let zero = y_of(0.0_f64.clamp(t_lo, t_hi));
            for (k, (s, color)) in data.series.iter().zip(SERIES).enumerate() {
                for (i, v) in s.values.iter().enumerate() {
                    let Some(v) = v else { continue };
                    let x = left + band * i as f32 + (band - group) / 2.0 + bar * k as f32;
                    let y = y_of(*v);
                    shapes.push(Shape::Rect {
                        x,
                        y: y.min(zero),
                        w: (bar - 0.5).max(0.5),
                        h: (zero - y).abs().max(0.5),
                        color,
                    });
                }
            }
        }
        ChartKind::Line => {
            for (s, color) in data.series.iter().zip(SERIES) {
                let mut run: Vec<(f32, f32)> = Vec::new();
                let mut runs = Vec::new();
                for (i, v) in s.values.iter().enumerate() {
                    match v {
                        Some(v) => run.push((left + band * (i as f32 + 0.5), y_of(*v))),
                        None => runs.push(std::mem::take(&mut run)),
                    }
                }
                runs.push(run);
                for run in runs {
                    if data.labels.len() <= 40 {
                        for &(x, y) in &run {
                            shapes.push(Shape::Rect {
                                x: x - 1.75,
                                y: y - 1.75,
                                w: 3.5,
                                h: 3.5,
                                color,
                            });
                        }
                    }
                    if run.len() > 1 {
                        shapes.push(Shape::Line {
                            points: run,
                            width: 1.5,
                            color,
                        });
                    }
                }
            }
        }
    }
    Drawing {
        width,
        height,
        shapes,
    }
}

/// `s` cut with `…` to fit `max` points.
fn fit(s: &str, bold: bool, size: f32, max: f32, measure: Measure<'_>) -> String {
    if measure(s, bold, size) <= max {
        return s.to_owned();
    }
    let mut out: String = s.to_owned();
    while !out.is_empty() && measure(&format!("{out}…"), bold, size) > max {
        out.pop();
    }
    format!("{out}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Table;
    use serde_json::json;

    fn spec(kind: ChartKind, y: &[&str]) -> ChartSpec {
        ChartSpec {
            kind,
            x: "City".into(),
            y: y.iter().map(|s| s.to_string()).collect(),
            title: "Revenue by city".into(),
        }
    }

    fn table(rows: usize) -> Table {
        Table {
            columns: vec![
                Column::new("City", ColumnType::String),
                Column::new("Orders", ColumnType::Integer),
                Column::new("Revenue", ColumnType::Decimal),
            ],
            rows: (0..rows)
                .map(|i| {
                    vec![
                        json!(format!("City {i}")),
                        json!(i * 10),
                        json!(format!("{}.5", i * 100)),
                    ]
                })
                .collect(),
        }
    }

    #[test]
    fn given_values_when_ticks_are_chosen_then_they_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 98.0, 5), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(
            ticks(-30.0, 70.0, 5),
            [-40.0, -20.0, 0.0, 20.0, 40.0, 60.0, 80.0]
        );
        let flat = ticks(5.0, 5.0, 5);
        assert!(flat[0] < 5.0 && flat[flat.len() - 1] > 5.0, "{flat:?}");
        assert_eq!(tick_label(2_500_000.0, 500_000.0), "2.5M");
        assert_eq!(tick_label(1500.0, 500.0), "1,500");
        assert_eq!(tick_label(0.25, 0.05), "0.25");
        assert_eq!(
            ticks(0.0, 12.0, 5)
                .iter()
                .map(|t| tick_label(*t, 2.5))
                .collect::<Vec<_>>(),
            ["0.0", "2.5", "5.0", "7.5", "10.0", "12.5"]
        );
        assert_eq!(tick_label(7_500_000.0, 2_500_000.0), "7.5M");
    }

    #[test]
    fn given_extreme_values_when_laid_out_then_ticks_stay_few_and_every_shape_is_finite() {
        for (lo, hi) in [
            (0.0, 1e-323),
            (-1e-323, 1e-323),
            (-1.7e308, 1.7e308),
            (1e20, 1e20),
            (0.0, 0.0),
            (-5.0, -5.0),
            (f64::MAX, f64::MAX),
        ] {
            let t = ticks(lo, hi, 5);
            assert!(t.len() >= 2 && t.len() <= 21, "{lo} {hi}: {t:?}");
            assert!(t.iter().all(|v| v.is_finite()), "{lo} {hi}: {t:?}");
            for kind in [ChartKind::Bar, ChartKind::Line] {
                let data = ChartData {
                    kind,
                    title: "t".into(),
                    labels: vec!["a".into(), "b".into()],
                    series: vec![Series {
                        name: "s".into(),
                        values: vec![Some(lo), Some(hi)],
                    }],
                    left_out: 0,
                };
                let d = layout(&data, 540.0, 220.0, &font_measure);
                assert!(!d.shapes.is_empty());
                for shape in &d.shapes {
                    if let Shape::Text { text, .. } = shape {
                        assert!(text.chars().count() < 40, "{text}");
                    }
                }
            }
        }
    }

    #[test]
    fn given_a_bar_chart_when_laid_out_then_every_value_is_a_bar_inside_the_box() {
        let t = table(6);
        let data = ChartData::collect(
            &t,
            &spec(ChartKind::Bar, &["Orders", "Revenue"]),
            &jiff::tz::TimeZone::UTC,
        )
        .expect("valid");
        assert_eq!(data.labels.len(), 6);
        assert_eq!(data.series[1].values[2], Some(200.5));
        let d = layout(&data, 500.0, 200.0, &font_measure);
        let bars = d
            .shapes
            .iter()
            .filter(|s| matches!(s, Shape::Rect { h, .. } if *h > 1.0))
            .count();
        // 12 values, 2 legend squares; the first value of each series is 0.
        assert!(bars >= 10, "{bars}");
        for s in &d.shapes {
            if let Shape::Rect { x, y, w, h, .. } = s {
                assert!(
                    *x >= 0.0 && *y >= 0.0 && x + w <= 500.5 && y + h <= 200.5,
                    "{s:?}"
                );
            }
        }
        assert!(
            d.shapes
                .iter()
                .any(|s| matches!(s, Shape::Text { text, .. } if text == "Revenue by city"))
        );
    }

    #[test]
    fn given_more_rows_than_a_chart_shows_when_collected_then_it_keeps_the_first_and_says_so() {
        let t = table(MAX_BARS + 7);
        let data = ChartData::collect(
            &t,
            &spec(ChartKind::Bar, &["Orders"]),
            &jiff::tz::TimeZone::UTC,
        )
        .expect("valid");
        assert_eq!(data.labels.len(), MAX_BARS);
        assert_eq!(data.left_out, 7);
        let d = layout(&data, 500.0, 200.0, &font_measure);
        let title = d.shapes.iter().find_map(|s| match s {
            Shape::Text {
                bold: true, text, ..
            } => Some(text.clone()),
            _ => None,
        });
        assert!(title.is_some_and(|t| t.contains("first 60 of 67")));
    }

    #[test]
    fn given_empty_cells_when_a_line_is_laid_out_then_the_line_breaks_there() {
        let mut t = table(6);
        t.rows[3][1] = json!(null);
        let data = ChartData::collect(
            &t,
            &spec(ChartKind::Line, &["Orders"]),
            &jiff::tz::TimeZone::UTC,
        )
        .expect("valid");
        let d = layout(&data, 400.0, 200.0, &font_measure);
        let lines: Vec<usize> = d
            .shapes
            .iter()
            .filter_map(|s| match s {
                Shape::Line { points, width, .. } if *width > 1.0 => Some(points.len()),
                _ => None,
            })
            .collect();
        assert_eq!(lines, [3, 2]);
    }

    #[test]
    fn given_a_bad_spec_when_collected_then_it_is_refused_with_the_column() {
        let t = table(2);
        let err = ChartData::collect(
            &t,
            &spec(ChartKind::Bar, &["City"]),
            &jiff::tz::TimeZone::UTC,
        )
        .expect_err("text column");
        assert!(err.contains("\"City\" is not numeric"), "{err}");
        let none = ChartData::collect(&t, &spec(ChartKind::Bar, &[]), &jiff::tz::TimeZone::UTC)
            .expect_err("no series");
        assert!(none.contains("1 to 3"), "{none}");
    }
}
