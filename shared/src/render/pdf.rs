//! The PDF: A4 landscape; on every page a header (report name, execution
//! time in the report's zone, parameters) and the table's column headers;
//! numbers right-aligned, long text ellipsized to its column, a totals line
//! for numeric columns, and "Page X of Y" in the footer. Text uses embedded
//! Unicode fonts with a CJK fallback (see [`super::fonts`]).

use super::fonts::{Face, Fonts, fonts};
use super::{ReportMeta, format_cell, local_time, totals};
use crate::contract::{ColumnType, Table};
use printpdf::{
    Color, FontId, Line, LinePoint, Mm, Op, PaintMode, PdfDocument, PdfFontHandle, PdfPage,
    PdfSaveOptions, Point, Pt, Rect, Rgb, TextItem, TextMatrix,
};

const PAGE_W: f32 = 841.89; // A4 landscape, points
const PAGE_H: f32 = 595.28;
const MARGIN: f32 = 36.0;
const FONT_SIZE: f32 = 8.5;
const ROW_H: f32 = 14.0;
const HEADER_H: f32 = 64.0;
const FOOTER_H: f32 = 24.0;
const PAD: f32 = 3.0;

/// Table rows (data or totals) that fit on one page.
pub fn rows_per_page() -> usize {
    ((PAGE_H - 2.0 * MARGIN - HEADER_H - FOOTER_H - ROW_H) / ROW_H).floor() as usize
}

/// Pages for `rows` data rows, plus a totals line when `with_totals`.
pub fn page_count(rows: usize, with_totals: bool) -> usize {
    let lines = rows + usize::from(with_totals && rows > 0);
    lines.div_ceil(rows_per_page()).max(1)
}

/// Builds one page's operations: shapes first, then every piece of text in
/// a single text object, positioned absolutely and switching fonts only
/// when they change. Few operations per cell keep memory low for big reports.
struct Writer<'f> {
    fonts: &'f Fonts,
    regular: FontId,
    bold: FontId,
    fallback: Option<FontId>,
    shapes: Vec<Op>,
    text: Vec<Op>,
    current: Option<(Face, u32)>,
}

impl Writer<'_> {
    fn text(&mut self, x: f32, y: f32, size: f32, bold: bool, s: &str) {
        if s.is_empty() {
            return;
        }
        self.text.push(Op::SetTextMatrix {
            matrix: TextMatrix::Translate(Pt(x), Pt(y)),
        });
        for (face, run) in self.fonts.runs(s, bold) {
            let key = (face, size.to_bits());
            if self.current != Some(key) {
                let id = match face {
                    Face::Regular => &self.regular,
                    Face::Bold => &self.bold,
                    Face::Fallback => self.fallback.as_ref().unwrap_or(&self.regular),
                };
                self.text.push(Op::SetFont {
                    font: PdfFontHandle::External(id.clone()),
                    size: Pt(size),
                });
                self.current = Some(key);
            }
            self.text.push(Op::ShowText {
                items: vec![TextItem::Text(run)],
            });
        }
    }

    /// The page's operations, leaving the writer empty for the next page.
    fn take_page(&mut self) -> Vec<Op> {
        let mut ops = std::mem::take(&mut self.shapes);
        ops.reserve(self.text.len() + 2);
        ops.push(Op::StartTextSection);
        ops.append(&mut self.text);
        ops.push(Op::EndTextSection);
        self.current = None;
        ops
    }

    fn width(&self, s: &str, bold: bool, size: f32) -> f32 {
        self.fonts.width(s, bold, size)
    }

    /// `s` cut to fit `max` points, with an ellipsis when cut.
    fn fit(&self, s: &str, bold: bool, max: f32) -> String {
        if self.width(s, bold, FONT_SIZE) <= max {
            return s.to_owned();
        }
        let budget = max - self.width("…", bold, FONT_SIZE);
        let mut used = 0.0;
        let mut out = String::new();
        for c in s.chars() {
            used += self.fonts.advance(c, bold, FONT_SIZE);
            if used > budget {
                break;
            }
            out.push(c);
        }
        out.push('…');
        out
    }

    fn fill(&mut self, x: f32, y: f32, w: f32, h: f32, grey: f32) {
        self.shapes.extend([
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

    fn rule(&mut self, y: f32) {
        let p = |x| LinePoint {
            p: Point { x: Pt(x), y: Pt(y) },
            bezier: false,
        };
        self.shapes.extend([
            Op::SetOutlineThickness { pt: Pt(0.5) },
            Op::DrawLine {
                line: Line {
                    points: vec![p(MARGIN), p(PAGE_W - MARGIN)],
                    is_closed: false,
                },
            },
        ]);
    }

    /// Draws one table line: each cell fitted to its column, numbers right-aligned.
    fn row(&mut self, y: f32, cells: &[String], table: &Table, widths: &[f32], bold: bool) {
        let mut x = MARGIN;
        for ((cell, col), w) in cells.iter().zip(&table.columns).zip(widths) {
            let fitted = self.fit(cell, bold, w - 2.0 * PAD);
            let right = matches!(col.kind, ColumnType::Integer | ColumnType::Decimal);
            let tx = if right {
                x + w - PAD - self.width(&fitted, bold, FONT_SIZE)
            } else {
                x + PAD
            };
            self.text(tx, y - ROW_H + 4.0, FONT_SIZE, bold, &fitted);
            x += w;
        }
    }
}

/// Renders the PDF bytes. Fails only if merging the rendered parts fails.
pub fn render_pdf(meta: &ReportMeta<'_>, table: &Table) -> Result<Vec<u8>, String> {
    let f = fonts();
    let tz = meta.time_zone;
    // Cells are formatted page by page, never all at once, to keep memory flat.
    let format_row = |row: &[serde_json::Value]| -> Vec<String> {
        row.iter()
            .zip(&table.columns)
            .map(|(v, c)| format_cell(v, c.kind, tz))
            .collect()
    };
    let row_count = table.rows.len();
    let sums = totals(table);
    let has_totals = sums.iter().any(Option::is_some) && row_count > 0;
    let totals_line: Vec<String> = sums
        .iter()
        .enumerate()
        .map(|(i, s)| match s {
            Some(v) => v.clone(),
            None if i == 0 => "Total".to_owned(),
            None => String::new(),
        })
        .collect();

    // Only strings can hold characters the primary fonts lack.
    let needs_fallback = table
        .rows
        .iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .chain(table.columns.iter().map(|c| c.name.as_str()))
        .chain(meta.parameters.values().map(String::as_str))
        .chain(meta.parameters.keys().map(String::as_str))
        .chain([meta.report_name])
        .any(|s| s.chars().any(|c| f.face_for(c, false) == Face::Fallback));
    let pages = page_count(row_count, has_totals);
    let when = format!(
        "Generated {} ({})   ·   Execution {}",
        local_time(meta.generated_at, tz),
        meta.time_zone_name,
        meta.execution_id
    );
    let params = meta
        .parameters
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("   ");
    let mut widths = Vec::new();
    // Big reports are rendered CHUNK_PAGES at a time into separate documents
    // and merged, so memory stays flat however many rows there are.
    let mut chunks = Vec::new();
    for first in (0..pages).step_by(CHUNK_PAGES) {
        let mut doc = PdfDocument::new(meta.report_name);
        let regular = doc.add_font(&f.regular);
        let bold = doc.add_font(&f.bold);
        let fallback = needs_fallback.then(|| doc.add_font(f.fallback()));
        let mut w = Writer {
            fonts: f,
            regular,
            bold,
            fallback,
            shapes: Vec::new(),
            text: Vec::new(),
            current: None,
        };
        if widths.is_empty() {
            let sample: Vec<Vec<String>> = table
                .rows
                .iter()
                .take(1000)
                .map(|r| format_row(r))
                .collect();
            widths = column_widths(&w, table, &sample);
        }
        let mut out_pages = Vec::with_capacity(CHUNK_PAGES);
        for page in first..(first + CHUNK_PAGES).min(pages) {
            let spec = PageSpec {
                page,
                pages,
                row_count,
                when: &when,
                params: &params,
                totals: has_totals.then_some(totals_line.as_slice()),
            };
            draw_page(&mut w, meta, table, &widths, &format_row, spec);
            let ops = w.take_page();
            out_pages.push(PdfPage::new(
                Mm::from(Pt(PAGE_W)),
                Mm::from(Pt(PAGE_H)),
                ops,
            ));
        }
        chunks.push(
            doc.with_pages(out_pages)
                .save(&PdfSaveOptions::default(), &mut Vec::new()),
        );
    }
    if chunks.len() == 1
        && let Some(only) = chunks.pop()
    {
        return Ok(only);
    }
    merge(chunks).map_err(|e| format!("merging the rendered parts failed: {e}"))
}

/// Pages per intermediate document for big reports.
const CHUNK_PAGES: usize = 25;

/// What one page shows besides its rows.
struct PageSpec<'a> {
    page: usize,
    pages: usize,
    row_count: usize,
    when: &'a str,
    params: &'a str,
    totals: Option<&'a [String]>,
}

fn draw_page(
    w: &mut Writer<'_>,
    meta: &ReportMeta<'_>,
    table: &Table,
    widths: &[f32],
    format_row: &dyn Fn(&[serde_json::Value]) -> Vec<String>,
    spec: PageSpec<'_>,
) {
    let per_page = rows_per_page();
    // Header
    let top = PAGE_H - MARGIN;
    let title = w.fit(meta.report_name, true, PAGE_W - 2.0 * MARGIN);
    w.text(MARGIN, top - 16.0, 15.0, true, &title);
    w.text(MARGIN, top - 32.0, FONT_SIZE, false, spec.when);
    if !spec.params.is_empty() {
        let line = w.fit(
            &format!("Parameters   {}", spec.params),
            false,
            PAGE_W - 2.0 * MARGIN,
        );
        w.text(MARGIN, top - 46.0, FONT_SIZE, false, &line);
    }
    // Column headers, repeated on every page
    let mut y = top - HEADER_H;
    w.fill(MARGIN, y - ROW_H, PAGE_W - 2.0 * MARGIN, ROW_H, 0.85);
    let names: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
    w.row(y, &names, table, widths, true);
    w.rule(y - ROW_H);
    y -= ROW_H;
    // Rows
    let start = spec.page * per_page;
    let end = (start + per_page).min(spec.row_count);
    if spec.row_count == 0 {
        w.text(
            MARGIN + PAD,
            y - ROW_H + 4.0,
            FONT_SIZE,
            false,
            "No rows in this execution.",
        );
    }
    for (i, row) in table
        .rows
        .get(start..end)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if i % 2 == 1 {
            w.fill(MARGIN, y - ROW_H, PAGE_W - 2.0 * MARGIN, ROW_H, 0.95);
        }
        w.row(y, &format_row(row), table, widths, false);
        y -= ROW_H;
    }
    if let Some(totals) = spec.totals
        && spec.page == spec.pages - 1
    {
        w.rule(y);
        w.row(y, totals, table, widths, true);
    }
    // Footer
    w.rule(MARGIN + FOOTER_H - 8.0);
    let name = w.fit(meta.report_name, false, PAGE_W / 2.0);
    w.text(MARGIN, MARGIN, 8.0, false, &name);
    let label = format!("Page {} of {}", spec.page + 1, spec.pages);
    let x = PAGE_W - MARGIN - w.width(&label, false, 8.0);
    w.text(x, MARGIN, 8.0, false, &label);
}

/// Concatenates the pages of several PDFs into one document. Each part keeps
/// its own (subset) font objects.
fn merge(parts: Vec<Vec<u8>>) -> Result<Vec<u8>, lopdf::Error> {
    use lopdf::{Document, Object, dictionary};
    let mut out = Document::with_version("1.7");
    let pages_id = out.new_object_id();
    let mut kids: Vec<lopdf::ObjectId> = Vec::new();
    let mut info = None;
    for bytes in parts {
        let mut doc = Document::load_mem(&bytes)?;
        doc.renumber_objects_with(out.max_id + 1);
        kids.extend(doc.get_pages().into_values());
        if info.is_none() {
            info = doc.trailer.get(b"Info").ok().cloned();
        }
        out.max_id = doc.max_id;
        for (id, object) in doc.objects {
            if matches!(object.type_name(), Ok(b"Catalog") | Ok(b"Pages")) {
                continue;
            }
            out.objects.insert(id, object);
        }
    }
    for id in &kids {
        if let Ok(page) = out.get_object_mut(*id).and_then(Object::as_dict_mut) {
            page.set("Parent", pages_id);
        }
    }
    let count = kids.len() as i64;
    out.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => kids.into_iter().map(Object::Reference).collect::<Vec<_>>(),
            "Count" => count,
        }),
    );
    let catalog = out.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    out.trailer.set("Root", catalog);
    if let Some(info) = info {
        out.trailer.set("Info", info);
    }
    let mut bytes = Vec::new();
    out.save_to(&mut bytes)?;
    Ok(bytes)
}

/// Splits the page width across columns in proportion to their content
/// (sampled), with a floor so narrow columns stay readable.
fn column_widths(w: &Writer<'_>, table: &Table, cells: &[Vec<String>]) -> Vec<f32> {
    let avail = PAGE_W - 2.0 * MARGIN;
    let natural: Vec<f32> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let widest = cells
                .iter()
                .take(1000)
                .map(|r| w.width(&r[i], false, FONT_SIZE))
                .fold(w.width(&c.name, true, FONT_SIZE), f32::max);
            (widest + 2.0 * PAD).clamp(40.0, avail / 2.0)
        })
        .collect();
    let total: f32 = natural.iter().sum();
    natural.iter().map(|x| x * avail / total).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Column;
    use crate::domain::Timestamp;
    use serde_json::json;
    use std::collections::BTreeMap;

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

    fn render(t: &Table) -> PdfDocument {
        let params = BTreeMap::from([("region".to_owned(), "EMEA".to_owned())]);
        let tz = super::super::time_zone("Europe/Zurich").expect("tz");
        let meta = ReportMeta {
            report_name: "Weekly sales",
            execution_id: "e1",
            generated_at: Timestamp::parse("2026-11-26T07:00:00Z").expect("ts"),
            time_zone: &tz,
            time_zone_name: "Europe/Zurich",
            parameters: &params,
        };
        let pdf = render_pdf(&meta, t).expect("renders");
        assert!(pdf.starts_with(b"%PDF"));
        PdfDocument::parse(&pdf, &printpdf::PdfParseOptions::default(), &mut Vec::new())
            .expect("the PDF parses")
    }

    fn page_count_of(doc: &PdfDocument) -> usize {
        doc.pages.len()
    }

    #[test]
    fn page_count_follows_the_row_count_including_the_totals_line() {
        let per = rows_per_page();
        assert_eq!(page_count(0, true), 1);
        assert_eq!(page_count(per, false), 1);
        assert_eq!(
            page_count(per, true),
            2,
            "the totals line spills onto a new page"
        );
        assert_eq!(page_count(per * 2 + 1, true), 3);
        assert_eq!(page_count_of(&render(&table(per * 2 + 1))), 3);
        assert_eq!(page_count_of(&render(&table(0))), 1);
    }
}
