//! Renders an execution's table to PDF with printpdf: a header with the
//! report name, time and parameters, a paginated table whose header repeats
//! on every page, and "page X of Y" in the footer.
//!
//! This renderer uses the builtin Helvetica (WinAnsi); characters outside
//! Latin-1 are replaced with `?` until a Unicode font is embedded.

use crate::contract::{ColumnType, Table};
use crate::domain::Timestamp;
use printpdf::{
    BuiltinFont, Color, Line, LinePoint, Mm, Op, PaintMode, PdfDocument, PdfFontHandle, PdfPage,
    PdfSaveOptions, Point, Pt, Rect, Rgb, TextItem,
};
use std::collections::BTreeMap;

/// What the header shows.
#[derive(Debug, Clone)]
pub struct ReportMeta<'a> {
    pub report_name: &'a str,
    pub execution_id: &'a str,
    pub generated_at: Timestamp,
    pub time_zone: &'a str,
    pub parameters: &'a BTreeMap<String, String>,
}

const PAGE_W: f32 = 841.89; // A4 landscape, points
const PAGE_H: f32 = 595.28;
const MARGIN: f32 = 36.0;
const FONT_SIZE: f32 = 9.0;
const ROW_H: f32 = 14.0;
const HEADER_H: f32 = 64.0;
const FOOTER_H: f32 = 24.0;

/// Rows that fit on one page.
pub fn rows_per_page() -> usize {
    ((PAGE_H - 2.0 * MARGIN - HEADER_H - FOOTER_H - ROW_H) / ROW_H).floor() as usize
}

/// Pages a table of `rows` rows needs (an empty table still gets one page).
pub fn page_count(rows: usize) -> usize {
    rows.div_ceil(rows_per_page()).max(1)
}

/// Renders the PDF bytes.
pub fn render_pdf(meta: &ReportMeta<'_>, table: &Table) -> Vec<u8> {
    let cells: Vec<Vec<String>> = table
        .rows
        .iter()
        .map(|row| {
            row.iter()
                .zip(&table.columns)
                .map(|(v, c)| format_cell(v, c.kind))
                .collect()
        })
        .collect();
    let widths = column_widths(table, &cells);
    let pages = page_count(cells.len());
    let mut doc = PdfDocument::new(meta.report_name);
    let mut out_pages = Vec::with_capacity(pages);
    for page in 0..pages {
        let mut ops = Vec::new();
        header(&mut ops, meta);
        let mut y = PAGE_H - MARGIN - HEADER_H;
        table_header(&mut ops, table, &widths, y);
        y -= ROW_H;
        let start = page * rows_per_page();
        let end = (start + rows_per_page()).min(cells.len());
        if cells.is_empty() {
            text(
                &mut ops,
                MARGIN,
                y - ROW_H + 4.0,
                FONT_SIZE,
                false,
                "No rows in this execution.",
            );
        }
        for (i, row) in cells[start..end].iter().enumerate() {
            if i % 2 == 1 {
                fill_rect(
                    &mut ops,
                    MARGIN,
                    y - ROW_H,
                    PAGE_W - 2.0 * MARGIN,
                    ROW_H,
                    0.95,
                );
            }
            let mut x = MARGIN;
            for ((cell, col), w) in row.iter().zip(&table.columns).zip(&widths) {
                let fitted = ellipsize(cell, *w - 6.0);
                let right = matches!(col.kind, ColumnType::Integer | ColumnType::Decimal);
                let tx = if right {
                    x + w - 3.0 - text_width(&fitted)
                } else {
                    x + 3.0
                };
                text(&mut ops, tx, y - ROW_H + 4.0, FONT_SIZE, false, &fitted);
                x += w;
            }
            y -= ROW_H;
        }
        footer(&mut ops, meta, page + 1, pages);
        out_pages.push(PdfPage::new(
            Mm::from(Pt(PAGE_W)),
            Mm::from(Pt(PAGE_H)),
            ops,
        ));
    }
    doc.with_pages(out_pages)
        .save(&PdfSaveOptions::default(), &mut Vec::new())
}

fn header(ops: &mut Vec<Op>, meta: &ReportMeta<'_>) {
    let top = PAGE_H - MARGIN;
    text(ops, MARGIN, top - 16.0, 16.0, true, meta.report_name);
    let when = format!(
        "Generated {} (report time zone: {})   Execution {}",
        meta.generated_at, meta.time_zone, meta.execution_id
    );
    text(ops, MARGIN, top - 32.0, FONT_SIZE, false, &when);
    if !meta.parameters.is_empty() {
        let params = meta
            .parameters
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("   ");
        let line = ellipsize(&format!("Parameters  {params}"), PAGE_W - 2.0 * MARGIN);
        text(ops, MARGIN, top - 46.0, FONT_SIZE, false, &line);
    }
}

fn table_header(ops: &mut Vec<Op>, table: &Table, widths: &[f32], y: f32) {
    fill_rect(ops, MARGIN, y - ROW_H, PAGE_W - 2.0 * MARGIN, ROW_H, 0.85);
    let mut x = MARGIN;
    for (col, w) in table.columns.iter().zip(widths) {
        let name = ellipsize(&col.name, *w - 6.0);
        text(ops, x + 3.0, y - ROW_H + 4.0, FONT_SIZE, true, &name);
        x += w;
    }
    rule(ops, y - ROW_H);
}

fn footer(ops: &mut Vec<Op>, meta: &ReportMeta<'_>, page: usize, pages: usize) {
    rule(ops, MARGIN + FOOTER_H - 8.0);
    text(ops, MARGIN, MARGIN, 8.0, false, meta.report_name);
    let label = format!("Page {page} of {pages}");
    let x = PAGE_W - MARGIN - text_width(&label) * 8.0 / FONT_SIZE;
    text(ops, x, MARGIN, 8.0, false, &label);
}

fn text(ops: &mut Vec<Op>, x: f32, y: f32, size: f32, bold: bool, s: &str) {
    let font = if bold {
        BuiltinFont::HelveticaBold
    } else {
        BuiltinFont::Helvetica
    };
    ops.extend([
        Op::StartTextSection,
        Op::SetFont {
            font: PdfFontHandle::Builtin(font),
            size: Pt(size),
        },
        Op::SetTextCursor {
            pos: Point { x: Pt(x), y: Pt(y) },
        },
        Op::ShowText {
            items: vec![TextItem::Text(latin1(s))],
        },
        Op::EndTextSection,
    ]);
}

fn fill_rect(ops: &mut Vec<Op>, x: f32, y: f32, w: f32, h: f32, grey: f32) {
    ops.extend([
        Op::SaveGraphicsState,
        Op::SetFillColor {
            col: Color::Rgb(Rgb::new(grey, grey, grey, None)),
        },
        Op::DrawRectangle {
            rectangle: Rect {
                mode: Some(PaintMode::Fill),
                ..Rect::from_xywh(Pt(x), Pt(y), Pt(w), Pt(h))
            },
        },
        Op::RestoreGraphicsState,
    ]);
}

fn rule(ops: &mut Vec<Op>, y: f32) {
    let p = |x| LinePoint {
        p: Point { x: Pt(x), y: Pt(y) },
        bezier: false,
    };
    ops.extend([
        Op::SetOutlineThickness { pt: Pt(0.5) },
        Op::DrawLine {
            line: Line {
                points: vec![p(MARGIN), p(PAGE_W - MARGIN)],
                is_closed: false,
            },
        },
    ]);
}

/// Replaces characters the builtin fonts cannot show.
fn latin1(s: &str) -> String {
    s.chars()
        .map(|c| {
            if (c as u32) < 256 && !c.is_control() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Approximate Helvetica advance width at [`FONT_SIZE`].
fn text_width(s: &str) -> f32 {
    s.chars()
        .map(|c| match c {
            'i' | 'j' | 'l' | '.' | ',' | ':' | ';' | '\'' | '|' | '!' => 0.28,
            'f' | 't' | 'r' | ' ' | '(' | ')' | '-' | 'I' => 0.34,
            'm' | 'w' | 'M' | 'W' | '@' => 0.85,
            c if c.is_ascii_uppercase() => 0.68,
            _ => 0.556,
        })
        .sum::<f32>()
        * FONT_SIZE
}

fn ellipsize(s: &str, max_width: f32) -> String {
    if text_width(s) <= max_width {
        return s.to_owned();
    }
    let mut out = String::new();
    for c in s.chars() {
        out.push(c);
        if text_width(&out) + text_width("...") > max_width {
            out.pop();
            break;
        }
    }
    out.push_str("...");
    out
}

fn format_cell(v: &serde_json::Value, kind: ColumnType) -> String {
    use serde_json::Value as V;
    match (kind, v) {
        (_, V::Null) => String::new(),
        (ColumnType::Decimal, V::Number(n)) => n
            .as_f64()
            .map(|f| group_thousands(&format!("{f:.2}")))
            .unwrap_or_else(|| n.to_string()),
        (ColumnType::Integer, V::Number(n)) => group_thousands(&n.to_string()),
        (ColumnType::DateTime, V::String(s)) => Timestamp::parse(s)
            .map(|t| {
                let t = t.inner();
                format!(
                    "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute()
                )
            })
            .unwrap_or_else(|_| s.clone()),
        (ColumnType::Boolean, V::Bool(b)) => if *b { "Yes" } else { "No" }.to_owned(),
        (_, V::String(s)) => s.clone(),
        (_, other) => other.to_string(),
    }
}

fn group_thousands(num: &str) -> String {
    let (sign, rest) = num.strip_prefix('-').map_or(("", num), |r| ("-", r));
    let (int, frac) = rest
        .split_once('.')
        .map_or((rest, None), |(i, f)| (i, Some(f)));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

/// Splits the page width across columns in proportion to their content,
/// with a floor so narrow columns stay readable.
fn column_widths(table: &Table, cells: &[Vec<String>]) -> Vec<f32> {
    let avail = PAGE_W - 2.0 * MARGIN;
    let natural: Vec<f32> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let widest = cells
                .iter()
                .take(500)
                .map(|r| text_width(&r[i]))
                .fold(text_width(&c.name), f32::max);
            (widest + 8.0).max(40.0)
        })
        .collect();
    let total: f32 = natural.iter().sum();
    natural.iter().map(|w| w * avail / total).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Column;
    use serde_json::json;

    fn table(rows: usize) -> Table {
        Table {
            columns: vec![
                Column {
                    name: "City".into(),
                    kind: ColumnType::String,
                },
                Column {
                    name: "Revenue".into(),
                    kind: ColumnType::Decimal,
                },
            ],
            rows: (0..rows)
                .map(|i| vec![json!(format!("City {i}")), json!(i as f64 * 1000.5)])
                .collect(),
        }
    }

    fn meta(params: &BTreeMap<String, String>) -> ReportMeta<'_> {
        ReportMeta {
            report_name: "Weekly sales",
            execution_id: "e1",
            generated_at: Timestamp::parse("2026-11-26T07:00:00Z").expect("ts"),
            time_zone: "UTC",
            parameters: params,
        }
    }

    #[test]
    fn renders_a_pdf_with_as_many_pages_as_rows_need() {
        let params = BTreeMap::new();
        let rows = rows_per_page() * 2 + 1;
        let pdf = render_pdf(&meta(&params), &table(rows));
        assert!(pdf.starts_with(b"%PDF"));
        let parsed = parse(&pdf);
        assert_eq!(parsed.pages.len(), 3);
        assert_eq!(page_count(rows), 3);
        let last = shown_text(&parsed.pages[2].ops);
        assert!(last.contains("Page 3 of 3"), "{last}");
        assert!(last.contains("Weekly sales"));
        assert!(last.contains(&format!("City {}", rows - 1)));
    }

    fn parse(pdf: &[u8]) -> PdfDocument {
        PdfDocument::parse(pdf, &printpdf::PdfParseOptions::default(), &mut Vec::new())
            .expect("the PDF parses")
    }

    fn shown_text(ops: &[Op]) -> String {
        ops.iter()
            .filter_map(|op| match op {
                Op::ShowText { items } => Some(
                    items
                        .iter()
                        .filter_map(|i| match i {
                            TextItem::Text(t) => Some(t.as_str()),
                            _ => None,
                        })
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn an_empty_table_still_renders_one_page() {
        let params = BTreeMap::new();
        assert_eq!(page_count(0), 1);
        let parsed = parse(&render_pdf(&meta(&params), &table(0)));
        assert_eq!(parsed.pages.len(), 1);
        assert!(shown_text(&parsed.pages[0].ops).contains("No rows in this execution."));
    }

    #[test]
    fn numbers_are_grouped_and_long_text_is_ellipsized() {
        assert_eq!(group_thousands("1234567.50"), "1,234,567.50");
        assert_eq!(group_thousands("-1000"), "-1,000");
        assert_eq!(
            format_cell(&json!(98231.5), ColumnType::Decimal),
            "98,231.50"
        );
        let long = "x".repeat(500);
        let cut = ellipsize(&long, 100.0);
        assert!(cut.ends_with("..."));
        assert!(text_width(&cut) <= 100.0 + 0.01);
    }
}
