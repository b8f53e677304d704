//! The PDF: A4 landscape; on every page a header (report name, execution
//! time in the report's zone, parameters) and the table's column headers;
//! numbers right-aligned, long text ellipsized to its column, a totals line
//! for numeric columns, and "Page X of Y" in the footer. Text uses embedded
//! Unicode fonts with a CJK fallback (see [`super::fonts`]).
//!
//! Wide reports (see [`column_layout`]): every column gets at least the
//! width its header and sampled cells need. When the columns do not fit
//! side by side, the table type shrinks from 8.5 pt to 7.5 pt and then
//! 6.5 pt; if they still do not fit, the columns are split into bands that
//! each fill a page, the first column repeated on every band as the key.
//! Each group of rows is then printed band after band.
//!
//! All text from the message is cleaned and bounded first
//! ([`super::display`]).

mod file;
mod font;

use super::display::{
    MAX_CELL, MAX_COLUMN_NAME, MAX_PARAMETER_KEY, MAX_PARAMETER_VALUE, MAX_REPORT_NAME, display,
};
use super::fonts::{Face, Fonts, fonts};
use super::{ReportMeta, format_cell, human_time, shown_totals};
use crate::contract::{Column, ColumnType, Rows, Summary};
use file::{PdfFile, text_string};
use font::{GlyphBook, resource};
use std::io::Write as _;
use std::ops::ControlFlow;

const PAGE_W: f32 = 841.89; // A4 landscape, points
const PAGE_H: f32 = 595.28;
const MARGIN: f32 = 36.0;
const FONT_SIZE: f32 = 8.5;
const ROW_H: f32 = 14.0;
const HEADER_H: f32 = 64.0;
const FOOTER_H: f32 = 24.0;
const PAD: f32 = 3.0;
/// Width available to the table.
const AVAIL: f32 = PAGE_W - 2.0 * MARGIN;
/// Table type sizes tried in turn before the columns are split into bands.
const TABLE_SIZES: [f32; 3] = [FONT_SIZE, 7.5, 6.5];
/// A column's narrowest width at [`FONT_SIZE`]; scaled with the type.
const MIN_COLUMN: f32 = 40.0;

/// Table rows (data or totals) that fit on one page.
pub fn rows_per_page() -> usize {
    ((PAGE_H - 2.0 * MARGIN - HEADER_H - FOOTER_H - ROW_H) / ROW_H).floor() as usize
}

/// Pages for `rows` data rows, plus a totals line when `with_totals`.
pub fn page_count(rows: usize, with_totals: bool) -> usize {
    page_count_with(rows, with_totals, 0)
}

/// Pages when the first page holds `short` rows fewer (a chart above it).
fn page_count_with(rows: usize, with_totals: bool, short: usize) -> usize {
    let lines = rows + usize::from(with_totals && rows > 0) + short;
    lines.div_ceil(rows_per_page()).max(1)
}

/// Rows a chart of `height` points takes from the first page (the chart
/// and a gap below it).
fn chart_rows(height: f32) -> usize {
    ((height + CHART_GAP) / ROW_H).ceil() as usize
}

/// Space between a chart and the table below it.
const CHART_GAP: f32 = 12.0;

/// Builds one page's content stream: shapes first, then every piece of text
/// in a single text object, positioned absolutely and switching fonts only
/// when they change. Text is written as glyph ids (see [`font`]).
struct Writer<'f> {
    book: GlyphBook<'f>,
    shapes: Vec<u8>,
    text: Vec<u8>,
    current: Option<(Face, u32)>,
    /// The table's type size (see [`column_layout`]).
    size: f32,
}

impl Writer<'_> {
    fn text(&mut self, x: f32, y: f32, size: f32, bold: bool, s: &str) {
        if s.is_empty() {
            return;
        }
        self.text.extend_from_slice(b"1 0 0 1 ");
        number(&mut self.text, x);
        self.text.push(b' ');
        number(&mut self.text, y);
        self.text.extend_from_slice(b" Tm\n");
        let mut open = false;
        for c in s.chars() {
            let g = self.book.glyph(c, bold);
            self.book.mark(c, g);
            let key = (g.face, size.to_bits());
            if self.current != Some(key) {
                if open {
                    self.text.extend_from_slice(b") Tj\n");
                    open = false;
                }
                self.text.extend_from_slice(resource(g.face).as_bytes());
                self.text.push(b' ');
                number(&mut self.text, size);
                self.text.extend_from_slice(b" Tf\n");
                self.current = Some(key);
            }
            if !open {
                self.text.push(b'(');
                open = true;
            }
            code(&mut self.text, g.gid);
        }
        if open {
            self.text.extend_from_slice(b") Tj\n");
        }
    }

    /// The page's content, leaving the writer empty for the next page.
    fn take_page(&mut self) -> Vec<u8> {
        let mut ops = std::mem::take(&mut self.shapes);
        ops.reserve(self.text.len() + 8);
        ops.extend_from_slice(b"BT\n");
        ops.append(&mut self.text);
        ops.extend_from_slice(b"ET\n");
        self.current = None;
        ops
    }

    fn width(&mut self, s: &str, bold: bool, size: f32) -> f32 {
        self.book.width(s, bold, size)
    }

    /// `s` cut to fit `max` points at `size`, with an ellipsis when cut.
    fn fit(&mut self, s: &str, bold: bool, size: f32, max: f32) -> String {
        if self.width(s, bold, size) <= max {
            return s.to_owned();
        }
        let budget = max - self.width("…", bold, size);
        let mut used = 0.0;
        let mut out = String::new();
        for c in s.chars() {
            used += self.book.glyph(c, bold).advance * size;
            if used > budget {
                break;
            }
            out.push(c);
        }
        out.push('…');
        out
    }

    /// Draws a laid-out chart with its top-left corner at (`left`, `top`):
    /// vector shapes, and text from the embedded fonts in the chart's
    /// colours. Leaves black as the fill and stroke colour.
    fn chart(&mut self, d: &crate::render::chart::Drawing, left: f32, top: f32) {
        use crate::render::chart::{Rgb, Shape};
        let rgb = |c: Rgb| {
            format!(
                "{:.3} {:.3} {:.3}",
                f32::from(c.0) / 255.0,
                f32::from(c.1) / 255.0,
                f32::from(c.2) / 255.0
            )
        };
        for shape in &d.shapes {
            match shape {
                Shape::Rect { x, y, w, h, color } => {
                    let _ = writeln!(
                        self.shapes,
                        "{} rg {:.2} {:.2} {w:.2} {h:.2} re f",
                        rgb(*color),
                        left + x,
                        top - y - h
                    );
                }
                Shape::Line {
                    points,
                    width,
                    color,
                } => {
                    let _ = write!(self.shapes, "{} RG {width:.2} w 1 j", rgb(*color));
                    for (i, (x, y)) in points.iter().enumerate() {
                        let op = if i == 0 { "m" } else { "l" };
                        let _ = write!(self.shapes, " {:.2} {:.2} {op}", left + x, top - y);
                    }
                    let _ = writeln!(self.shapes, " S 0 G 0 j");
                }
                Shape::Text {
                    x,
                    y,
                    size,
                    bold,
                    text,
                    color,
                } => {
                    let _ = writeln!(self.text, "{} rg", rgb(*color));
                    self.text(left + x, top - y, *size, *bold, text);
                    self.text.extend_from_slice(b"0 g\n");
                }
            }
        }
        self.shapes.extend_from_slice(b"0 g\n");
    }

    fn fill(&mut self, x: f32, y: f32, w: f32, h: f32, grey: f32) {
        let _ = writeln!(self.shapes, "{grey} g {x:.2} {y:.2} {w:.2} {h:.2} re f");
    }

    fn rule(&mut self, y: f32, width: f32) {
        let _ = writeln!(
            self.shapes,
            "0 g 0.5 w {MARGIN} {y:.2} m {:.2} {y:.2} l S",
            MARGIN + width
        );
    }

    /// Draws one table line of a band: each cell fitted to its column,
    /// numbers right-aligned.
    fn row(&mut self, y: f32, cells: &[String], columns: &[Column], band: &Band, bold: bool) {
        let mut x = MARGIN;
        let size = self.size;
        for (&i, w) in band.columns.iter().zip(&band.widths) {
            let (Some(cell), Some(col)) = (cells.get(i), columns.get(i)) else {
                continue;
            };
            let fitted = self.fit(cell, bold, size, w - 2.0 * PAD);
            let right = matches!(col.kind, ColumnType::Integer | ColumnType::Decimal);
            let tx = if right {
                x + w - PAD - self.width(&fitted, bold, size)
            } else {
                x + PAD
            };
            self.text(tx, y - ROW_H + 4.0, size, bold, &fitted);
            x += w;
        }
    }
}

/// Appends `v` with at most two decimals (`12.5`, `-3`, `841.89`): content
/// stream numbers, written without the formatting machinery (the writer's
/// hottest path).
fn number(out: &mut Vec<u8>, v: f32) {
    let hundredths = (f64::from(v) * 100.0).round() as i64;
    if hundredths < 0 {
        out.push(b'-');
    }
    let n = hundredths.unsigned_abs();
    let (whole, frac) = (n / 100, n % 100);
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut w = whole;
    loop {
        i -= 1;
        digits[i] = b'0' + (w % 10) as u8;
        w /= 10;
        if w == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    if frac != 0 {
        out.push(b'.');
        out.push(b'0' + (frac / 10) as u8);
        if frac % 10 != 0 {
            out.push(b'0' + (frac % 10) as u8);
        }
    }
}

/// Appends a glyph id as its two bytes inside a literal string: half the
/// size of hex, so less to deflate. `(`, `)` and `\` are escaped, and a
/// carriage return is written `\r` (readers turn a raw one into a line feed).
fn code(out: &mut Vec<u8>, v: u16) {
    for b in v.to_be_bytes() {
        match b {
            b'(' | b')' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// Renders the PDF bytes from rows that [`summarize`](crate::contract::summarize)
/// accepted (its `summary` gives the page count and the totals line, so the
/// rows are not read again for them): rows are read in order a page at a
/// time, pages are written out as they are drawn, and each font is embedded
/// once, subset to what the pages used. Fails only if a font cannot be subset.
pub fn render_pdf(
    meta: &ReportMeta<'_>,
    rows: &dyn Rows,
    summary: &Summary,
) -> Result<Vec<u8>, String> {
    let f = fonts();
    let tz = meta.time_zone;
    let columns = rows.columns();
    let format_row = |row: &[serde_json::Value]| -> Vec<String> {
        row.iter()
            .zip(columns)
            .map(|(v, c)| display(&format_cell(v, c, tz), MAX_CELL))
            .collect()
    };
    let title = display(meta.report_name, MAX_REPORT_NAME);
    let row_count = summary.rows;
    let sums = shown_totals(columns, Ok(summary.totals.clone()));
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
    let when = format!(
        "Generated {} ({})   ·   Execution {}",
        human_time(meta.generated_at, tz),
        display(meta.time_zone_name, 64),
        display(meta.execution_id, 128)
    );
    let footer = format!("{}   ·   {title}", human_time(meta.generated_at, tz));
    // The line is cut to the page width anyway; stop joining well before.
    let mut params = String::new();
    for (k, v) in meta.parameters {
        if params.chars().count() > 1000 {
            break;
        }
        if !params.is_empty() {
            params.push_str("   ");
        }
        params.push_str(&display(k, MAX_PARAMETER_KEY));
        params.push_str(": ");
        params.push_str(&display(v, MAX_PARAMETER_VALUE));
    }
    let names: Vec<String> = columns
        .iter()
        .map(|c| display(&c.name, MAX_COLUMN_NAME))
        .collect();
    let mut sample: Vec<Vec<String>> = Vec::new();
    let _ = rows.scan(&mut |row| {
        sample.push(format_row(row));
        if sample.len() < SAMPLE_ROWS {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    });
    let layout = column_layout(f, columns, &names, &sample);
    drop(sample);
    // A chart sits on the first page, above the table, when it leaves
    // room for a few rows there.
    let chart = meta
        .chart
        .filter(|c| chart_rows(c.height) + 4 <= rows_per_page() && c.width <= AVAIL);
    let short = chart.map_or(0, |c| chart_rows(c.height));
    let row_pages = page_count_with(row_count, has_totals, short);

    let mut file = PdfFile::new();
    let (pages_id, resources) = (file.reserve(), file.reserve());
    let mut doc = Doc {
        file,
        pages_id,
        resources,
        kids: String::new(),
        pages: 0,
        w: Writer {
            book: GlyphBook::new(f),
            shapes: Vec::new(),
            text: Vec::new(),
            current: None,
            size: layout.size,
        },
    };
    let frame = Frame {
        pages: row_pages * layout.bands.len(),
        row_pages,
        row_count,
        layout: &layout,
        title: &title,
        when: &when,
        footer: &footer,
        params: &params,
        names: &names,
        columns,
        totals: has_totals.then_some(totals_line.as_slice()),
        chart,
        short,
    };
    // Rows come in order; each full page of them is drawn band after band.
    let per_page = rows_per_page();
    let mut page_rows: Vec<Vec<String>> = Vec::with_capacity(per_page);
    let mut row_page = 0;
    let _ = rows.scan(&mut |row| {
        page_rows.push(format_row(row));
        let room = if row_page == 0 {
            per_page - short
        } else {
            per_page
        };
        if page_rows.len() == room && row_page < row_pages {
            doc.row_page(&frame, row_page, &page_rows);
            page_rows.clear();
            row_page += 1;
        }
        ControlFlow::Continue(())
    });
    // The last rows, and a page for the totals line alone when it spills.
    while row_page < row_pages {
        doc.row_page(&frame, row_page, &page_rows);
        page_rows.clear();
        row_page += 1;
    }
    doc.finish(meta, &title)
}

/// What every page shows besides its rows.
struct Frame<'a> {
    pages: usize,
    row_pages: usize,
    row_count: usize,
    layout: &'a ColumnLayout,
    title: &'a str,
    when: &'a str,
    footer: &'a str,
    params: &'a str,
    names: &'a [String],
    columns: &'a [Column],
    totals: Option<&'a [String]>,
    /// The chart on the first page, if any, and the rows it takes there.
    chart: Option<&'a crate::render::chart::Drawing>,
    short: usize,
}

/// The document being written.
struct Doc<'f> {
    file: PdfFile,
    pages_id: file::Ref,
    resources: file::Ref,
    kids: String,
    pages: usize,
    w: Writer<'f>,
}

impl Doc<'_> {
    /// Draws and writes one group of rows, a page per band.
    fn row_page(&mut self, frame: &Frame<'_>, row_page: usize, rows: &[Vec<String>]) {
        let bands = frame.layout.bands.len();
        for (b, band) in frame.layout.bands.iter().enumerate() {
            let spec = PageSpec {
                page: row_page * bands + b,
                pages: frame.pages,
                row_page,
                row_pages: frame.row_pages,
                band,
                bands,
                row_count: frame.row_count,
                title: frame.title,
                when: frame.when,
                footer: frame.footer,
                params: frame.params,
                names: frame.names,
                totals: frame.totals,
                // On every band of the first rows, so no band shows a gap.
                chart: frame.chart.filter(|_| row_page == 0),
                short: if row_page == 0 { frame.short } else { 0 },
            };
            draw_page(&mut self.w, frame.columns, rows, spec);
            let content = self.file.reserve();
            self.file.stream(content, "", &self.w.take_page(), true);
            let id = self.file.reserve();
            self.file.object(
                id,
                format!(
                    "<< /Type /Page /Parent {} /MediaBox [0 0 {PAGE_W} {PAGE_H}] /Resources {} /Contents {content} >>",
                    self.pages_id, self.resources
                )
                .as_bytes(),
            );
            self.kids.push_str(&format!("{id} "));
            self.pages += 1;
        }
    }

    /// Writes the fonts, the page tree, the catalog and the trailer.
    fn finish(mut self, meta: &ReportMeta<'_>, title: &str) -> Result<Vec<u8>, String> {
        let fonts = self.w.book.write_fonts(&mut self.file)?;
        let file = &mut self.file;
        file.object(
            self.resources,
            format!("<< /Font << {fonts}>> /ProcSet [/PDF /Text] >>").as_bytes(),
        );
        file.object(
            self.pages_id,
            format!(
                "<< /Type /Pages /Kids [{}] /Count {} >>",
                self.kids, self.pages
            )
            .as_bytes(),
        );
        let info = file.reserve();
        let created = creation_date(meta.generated_at);
        file.object(
            info,
            format!(
                "<< /Title {} /Producer (report-delivery) /CreationDate ({created}) /ModDate ({created}) >>",
                text_string(title)
            )
            .as_bytes(),
        );
        let catalog = file.reserve();
        file.object(
            catalog,
            format!("<< /Type /Catalog /Pages {} >>", self.pages_id).as_bytes(),
        );
        Ok(self.file.finish(catalog, info, &document_id(meta)))
    }
}

/// `D:YYYYMMDDHHmmSSZ`, the PDF date form, in UTC.
fn creation_date(t: crate::domain::Timestamp) -> String {
    jiff::Timestamp::from_millisecond(t.unix_millis())
        .ok()
        .and_then(|ts| {
            jiff::fmt::strtime::format(
                "D:%Y%m%d%H%M%SZ",
                &ts.to_zoned_datetime(jiff::tz::TimeZone::UTC),
            )
            .ok()
        })
        .unwrap_or_else(|| "D:19700101000000Z".to_owned())
}

/// The file identifier: the same execution renders the same bytes.
fn document_id(meta: &ReportMeta<'_>) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(meta.execution_id.as_bytes());
    h.update([0]);
    h.update(meta.generated_at.unix_millis().to_be_bytes());
    let digest = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// Rows sampled to size the columns.
const SAMPLE_ROWS: usize = 1000;

/// What one page shows besides its rows.
struct PageSpec<'a> {
    page: usize,
    pages: usize,
    /// Which group of rows this page shows, of `row_pages`.
    row_page: usize,
    row_pages: usize,
    /// Which columns this page shows, of `bands`.
    band: &'a Band,
    bands: usize,
    row_count: usize,
    title: &'a str,
    when: &'a str,
    /// The footer's left side: the report and when it was generated.
    footer: &'a str,
    params: &'a str,
    names: &'a [String],
    totals: Option<&'a [String]>,
    /// The chart to draw above the table (page 1 only).
    chart: Option<&'a crate::render::chart::Drawing>,
    /// Rows this page leaves for the chart.
    short: usize,
}

/// Draws one page: the header, the column headers, `rows` (this row
/// group's, already formatted), the totals on the last group, the footer.
fn draw_page(w: &mut Writer<'_>, columns: &[Column], rows: &[Vec<String>], spec: PageSpec<'_>) {
    let per_page = rows_per_page();
    let band = spec.band;
    let table_w = band.widths.iter().sum::<f32>().min(AVAIL);
    // Header
    let top = PAGE_H - MARGIN;
    let title = w.fit(spec.title, true, 15.0, AVAIL);
    w.text(MARGIN, top - 16.0, 15.0, true, &title);
    let when = w.fit(spec.when, false, FONT_SIZE, AVAIL);
    w.text(MARGIN, top - 32.0, FONT_SIZE, false, &when);
    if !spec.params.is_empty() {
        let line = w.fit(
            &format!("Parameters   {}", spec.params),
            false,
            FONT_SIZE,
            AVAIL,
        );
        w.text(MARGIN, top - 46.0, FONT_SIZE, false, &line);
    }
    // Column headers, repeated on every page
    let mut y = top - HEADER_H;
    if let Some(chart) = spec.chart {
        w.chart(chart, MARGIN, y);
    }
    y -= spec.short as f32 * ROW_H;
    w.fill(MARGIN, y - ROW_H, table_w, ROW_H, 0.85);
    w.row(y, spec.names, columns, band, true);
    w.rule(y - ROW_H, table_w);
    y -= ROW_H;
    // Rows
    if spec.row_count == 0 {
        w.text(
            MARGIN + PAD,
            y - ROW_H + 4.0,
            FONT_SIZE,
            false,
            "No rows in this execution.",
        );
    }
    for (i, row) in rows.iter().take(per_page - spec.short).enumerate() {
        if i % 2 == 1 {
            w.fill(MARGIN, y - ROW_H, table_w, ROW_H, 0.95);
        }
        w.row(y, row, columns, band, false);
        y -= ROW_H;
    }
    if let Some(totals) = spec.totals
        && spec.row_page + 1 == spec.row_pages
    {
        w.rule(y, table_w);
        w.row(y, totals, columns, band, true);
    }
    // Footer
    w.rule(MARGIN + FOOTER_H - 8.0, AVAIL);
    let name = w.fit(spec.footer, false, 8.0, PAGE_W / 2.0 - MARGIN);
    w.text(MARGIN, MARGIN, 8.0, false, &name);
    let label = format!("Page {} of {}", spec.page + 1, spec.pages);
    let x = PAGE_W - MARGIN - w.width(&label, false, 8.0);
    w.text(x, MARGIN, 8.0, false, &label);
    if spec.bands > 1 {
        let shown: Vec<usize> = band.columns.iter().map(|i| i + 1).collect();
        let first = shown.get(1).or(shown.first()).copied().unwrap_or(1);
        let last = shown.last().copied().unwrap_or(1);
        let columns = format!(
            "Columns {first}–{last} of {} (column 1 repeated)",
            columns.len()
        );
        let cx = x - 24.0 - w.width(&columns, false, 8.0);
        w.text(cx, MARGIN, 8.0, false, &columns);
    }
}

/// Columns shown side by side on one page, with their widths in points.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    /// Column indices, in order; after the first band, column 0 comes first
    /// as the key.
    pub columns: Vec<usize>,
    pub widths: Vec<f32>,
}

/// How a table's columns are laid out.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnLayout {
    /// The table's type size in points.
    pub size: f32,
    /// One band per page across; one band when everything fits.
    pub bands: Vec<Band>,
}

/// Lays out the columns: each column's natural width is what its header
/// (`names`, bold) and its widest sampled cell need, at least
/// [`MIN_COLUMN`] (scaled with the type) and at most half the page. At the
/// first size in [`TABLE_SIZES`] where they all fit, they share the page in
/// proportion; otherwise, at the smallest size, they are split into bands
/// that fit, each repeating column 0.
pub fn column_layout(
    fonts: &Fonts,
    columns: &[Column],
    names: &[String],
    cells: &[Vec<String>],
) -> ColumnLayout {
    let natural = |size: f32| -> Vec<f32> {
        (0..columns.len())
            .map(|i| {
                let header = names.get(i).map_or(0.0, |n| fonts.width(n, true, size));
                let widest = cells
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| fonts.width(c, false, size))
                    .fold(header, f32::max);
                (widest + 2.0 * PAD).clamp(MIN_COLUMN * size / FONT_SIZE, AVAIL / 2.0)
            })
            .collect()
    };
    let smallest = TABLE_SIZES[TABLE_SIZES.len() - 1];
    for size in TABLE_SIZES {
        let widths = natural(size);
        let total: f32 = widths.iter().sum();
        if total <= AVAIL {
            let scale = if total > 0.0 { AVAIL / total } else { 1.0 };
            return ColumnLayout {
                size,
                bands: vec![Band {
                    columns: (0..widths.len()).collect(),
                    widths: widths.iter().map(|w| w * scale).collect(),
                }],
            };
        }
    }
    ColumnLayout {
        size: smallest,
        bands: split_into_bands(&natural(smallest), AVAIL),
    }
}

/// Packs columns into bands no wider than `avail`, in order, each band after
/// the first starting with column 0. Every width must be at most `avail / 2`,
/// so that the key and any one column fit together.
fn split_into_bands(widths: &[f32], avail: f32) -> Vec<Band> {
    let Some(&key) = widths.first() else {
        return vec![Band {
            columns: Vec::new(),
            widths: Vec::new(),
        }];
    };
    let mut bands = Vec::new();
    let mut current = Band {
        columns: vec![0],
        widths: vec![key],
    };
    let mut used = key;
    for (i, &w) in widths.iter().enumerate().skip(1) {
        if used + w > avail && current.columns.len() > 1 {
            bands.push(std::mem::replace(
                &mut current,
                Band {
                    columns: vec![0],
                    widths: vec![key],
                },
            ));
            used = key;
        }
        current.columns.push(i);
        current.widths.push(w);
        used += w;
    }
    bands.push(current);
    bands
}

#[cfg(test)]
mod tests;
