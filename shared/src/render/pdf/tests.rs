//! Tests of the PDF writer: layout, fonts and the bytes it writes.

use super::*;
use crate::contract::Column;
use crate::contract::Table;
use crate::domain::Timestamp;
use printpdf::PdfDocument;
use serde_json::json;
use std::collections::BTreeMap;

fn table(rows: usize) -> Table {
    Table {
        columns: vec![
            Column::new("City", ColumnType::String),
            Column::new("Revenue", ColumnType::Decimal),
        ],
        rows: (0..rows)
            .map(|i| vec![json!(format!("City {i}")), json!(i as f64 * 1000.5)])
            .collect(),
    }
}

fn render_bytes(t: &Table, report_name: &str, params: &BTreeMap<String, String>) -> Vec<u8> {
    let tz = super::super::time_zone("Europe/Zurich").expect("tz");
    let meta = ReportMeta {
        report_name,
        execution_id: "e1",
        generated_at: Timestamp::parse("2026-11-26T07:00:00Z").expect("ts"),
        time_zone: &tz,
        time_zone_name: "Europe/Zurich",
        parameters: params,
        chart: None,
    };
    let summary = crate::contract::summarize(t).expect("a valid table");
    let pdf = render_pdf(&meta, t, &summary).expect("renders");
    assert!(pdf.starts_with(b"%PDF"));
    pdf
}

fn render(t: &Table) -> PdfDocument {
    let params = BTreeMap::from([("region".to_owned(), "EMEA".to_owned())]);
    let pdf = render_bytes(t, "Weekly sales", &params);
    PdfDocument::parse(&pdf, &printpdf::PdfParseOptions::default(), &mut Vec::new())
        .expect("the PDF parses")
}

/// A table of `columns` integer columns named `Column 1`… with `rows` rows.
fn wide(columns: usize, rows: usize) -> Table {
    Table {
        columns: (0..columns)
            .map(|i| {
                Column::new(
                    format!("Column {}", i + 1),
                    if i == 0 {
                        ColumnType::String
                    } else {
                        ColumnType::Integer
                    },
                )
            })
            .collect(),
        rows: (0..rows)
            .map(|r| {
                (0..columns)
                    .map(|c| {
                        if c == 0 {
                            json!(format!("Row {r}"))
                        } else {
                            json!(r * 1000 + c)
                        }
                    })
                    .collect()
            })
            .collect(),
    }
}

fn layout_of(t: &Table) -> (ColumnLayout, Vec<String>) {
    let tz = jiff::tz::TimeZone::UTC;
    let names: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
    let cells: Vec<Vec<String>> = t
        .rows
        .iter()
        .map(|r| {
            r.iter()
                .zip(&t.columns)
                .map(|(v, c)| format_cell(v, c, &tz))
                .collect()
        })
        .collect();
    (column_layout(fonts(), &t.columns, &names, &cells), names)
}

/// The text of every page, in order (the fonts map glyphs back to text).
fn page_texts(pdf: &[u8]) -> Vec<String> {
    let doc = lopdf::Document::load_mem(pdf).expect("lopdf loads it");
    let pages: Vec<u32> = doc.get_pages().into_keys().collect();
    pages
        .iter()
        .map(|p| doc.extract_text(&[*p]).expect("text extracts"))
        .collect()
}

fn page_count_of(doc: &PdfDocument) -> usize {
    doc.pages.len()
}

#[test]
fn content_numbers_and_glyph_codes_are_written_plainly() {
    let mut out = Vec::new();
    for v in [0.0, 12.5, -3.0, 841.89, 0.05, -0.004, 595.28, 100.0] {
        number(&mut out, v);
        out.push(b' ');
    }
    for gid in [0x0041, 0x2829, 0x5C0D, 0xFF00] {
        code(&mut out, gid);
    }
    assert_eq!(
        out,
        b"0 12.5 -3 841.89 0.05 0 595.28 100 \0A\\(\\)\\\\\\r\xFF\0"
    );
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

#[test]
fn given_a_chart_when_rendered_then_it_sits_on_page_one_above_fewer_rows_and_no_row_is_lost() {
    use crate::contract::{ChartKind, ChartSpec};
    use crate::render::chart::{ChartData, font_measure, layout};
    let per = rows_per_page();
    let t = table(per * 2 - 1);
    let tz = super::super::time_zone("Europe/Zurich").expect("tz");
    let spec = ChartSpec {
        kind: ChartKind::Line,
        x: "City".into(),
        y: vec!["Revenue".into()],
        title: "Revenue over cities".into(),
    };
    let drawing = layout(
        &ChartData::collect(&t, &spec, &tz).expect("valid"),
        540.0,
        220.0,
        &font_measure,
    );
    let params = BTreeMap::new();
    let meta = ReportMeta {
        report_name: "Weekly sales",
        execution_id: "e1",
        generated_at: Timestamp::parse("2026-11-26T07:00:00Z").expect("ts"),
        time_zone: &tz,
        time_zone_name: "Europe/Zurich",
        parameters: &params,
        chart: Some(&drawing),
    };
    let summary = crate::contract::summarize(&t).expect("a valid table");
    let pdf = render_pdf(&meta, &t, &summary).expect("renders");
    let pages = page_texts(&pdf);
    // Without the chart the rows and totals fill two pages; the chart
    // pushes the rest of its page's rows onto a third.
    assert_eq!(page_count(t.rows.len(), true), 2);
    assert_eq!(pages.len(), 3);
    let short = chart_rows(220.0);
    let last_first = format!("City {}", per - short - 1);
    let first_second = format!("City {}", per - short);
    assert!(pages[0].contains("Revenue over cities"), "{}", pages[0]);
    assert!(pages[0].contains(&last_first), "{}", pages[0]);
    assert!(!pages[0].contains(&first_second), "{}", pages[0]);
    assert!(pages[1].contains(&first_second), "{}", pages[1]);
    assert!(!pages[1].contains("Revenue over cities"));
    assert!(
        pages[2].contains(&format!("City {}", per * 2 - 2)),
        "{}",
        pages[2]
    );
    assert!(pages[2].contains("Total"));
    // Times read like dates, in the report's zone, header and footer.
    assert!(
        pages[0].contains("Generated Thu 26 Nov 2026, 08:00 CET"),
        "{}",
        pages[0]
    );
    assert!(
        pages[2].contains("Thu 26 Nov 2026, 08:00 CET"),
        "{}",
        pages[2]
    );
    let doc = lopdf::Document::load_mem(&pdf).expect("loads");
    assert_eq!(doc.get_pages().len(), 3);
}

#[test]
fn given_a_long_report_with_cjk_when_rendered_then_each_face_is_embedded_once_and_the_text_extracts()
 {
    // Given enough rows for many pages, with CJK cells
    let mut t = table(rows_per_page() * 40);
    t.rows[0][0] = json!("東京");
    t.rows[rows_per_page() * 39][0] = json!("大阪");
    let params = BTreeMap::new();
    // When it is rendered twice
    let pdf = render_bytes(&t, "Weekly sales", &params);
    // Then the three faces are each embedded once, subset
    let doc = lopdf::Document::load_mem(&pdf).expect("loads");
    let programs = doc
        .objects
        .values()
        .filter_map(|o| o.as_dict().ok())
        .filter(|d| d.has(b"FontFile2"))
        .count();
    assert_eq!(programs, 3, "regular, bold and the CJK fallback, once each");
    assert_eq!(doc.get_pages().len(), page_count(t.rows.len(), true));
    // And the text of the first and the last pages extracts, CJK included
    let pages = page_texts(&pdf);
    assert!(pages[0].contains("東京"), "{}", pages[0]);
    assert!(pages[0].contains("Page 1 of 41"), "{}", pages[0]);
    assert!(pages[39].contains("大阪"), "{}", pages[39]);
    assert!(pages[40].contains("Total"), "{}", pages[40]);
    // And the same input gives the same bytes
    assert_eq!(pdf, render_bytes(&t, "Weekly sales", &params));
}

#[test]
fn given_latin_only_text_when_rendered_then_the_fallback_face_is_not_embedded() {
    let pdf = render_bytes(&table(3), "Weekly sales", &BTreeMap::new());
    let text = String::from_utf8_lossy(&pdf);
    assert!(text.contains("DejaVuSans"));
    assert!(!text.contains("DroidSansFallback"));
}

#[test]
fn given_a_200_column_report_when_laid_out_then_every_header_fits_its_column_whole() {
    // Given 200 columns
    let t = wide(200, 3);
    // When the columns are laid out
    let (layout, names) = layout_of(&t);
    // Then the type is the smallest size and the columns are split into bands
    assert_eq!(layout.size, 6.5);
    assert!(layout.bands.len() > 1, "{} bands", layout.bands.len());
    // And every band fits the page and starts with the key column
    for band in &layout.bands {
        assert_eq!(band.columns[0], 0);
        assert!(band.widths.iter().sum::<f32>() <= AVAIL + 0.01);
        // And every header in it fits whole, at the table's type size
        for (&i, &w) in band.columns.iter().zip(&band.widths) {
            let needed = fonts().width(&names[i], true, layout.size) + 2.0 * PAD;
            assert!(needed <= w, "{} needs {needed} pt, has {w}", names[i]);
        }
    }
    // And every other column is in exactly one band
    let shown: Vec<usize> = layout
        .bands
        .iter()
        .flat_map(|b| b.columns.iter().skip(1).copied())
        .collect();
    assert_eq!(shown, (1..200).collect::<Vec<_>>());
}

#[test]
fn given_a_report_slightly_too_wide_for_the_normal_type_when_laid_out_then_smaller_type_keeps_it_on_one_page()
 {
    for (columns, size) in [(16, 7.5), (18, 6.5)] {
        let (layout, _) = layout_of(&wide(columns, 3));
        assert_eq!(layout.size, size, "{columns} columns");
        assert_eq!(layout.bands.len(), 1, "{columns} columns");
        assert_eq!(layout.bands[0].columns, (0..columns).collect::<Vec<_>>());
    }
    let (narrow, _) = layout_of(&table(3));
    assert_eq!(
        narrow.size, FONT_SIZE,
        "a narrow report keeps the normal type"
    );
    let total: f32 = narrow.bands[0].widths.iter().sum();
    assert!((total - AVAIL).abs() < 0.01, "one band fills the page");
}

#[test]
fn given_a_200_column_report_when_rendered_then_every_header_is_legible_on_its_band_page() {
    // Given 200 columns over two groups of rows
    let rows = rows_per_page() + 1;
    let t = wide(200, rows);
    let (layout, _) = layout_of(&t);
    let bands = layout.bands.len();
    // When it is rendered
    let pdf = render_bytes(&t, "Wide", &BTreeMap::new());
    let pages = page_texts(&pdf);
    // Then there is a page per band for each group of rows
    assert_eq!(pages.len(), bands * page_count(rows, true));
    // And each band's page shows its headers whole and in order, never
    // cut to an ellipsis
    for (band, text) in layout.bands.iter().zip(&pages) {
        let headers: String = band
            .columns
            .iter()
            .map(|i| format!("Column {}", i + 1))
            .collect();
        assert!(text.contains(&headers), "{headers} in {text}");
        assert!(!text.contains('…'), "nothing is cut: {text}");
    }
    let shown: usize = layout.bands.iter().map(|b| b.columns.len() - 1).sum();
    assert_eq!(shown, 199, "every column after the key is on some band");
    // And the key column and the band are on every page
    for (p, text) in pages.iter().enumerate() {
        assert!(
            text.contains("Column 1Column"),
            "key header on page {}",
            p + 1
        );
        assert!(
            text.contains("of 200 (column 1 repeated)"),
            "band label on page {}",
            p + 1
        );
    }
    assert!(pages[bands].contains(&format!("Row {}", rows - 1)));
}

#[test]
fn given_a_huge_report_name_and_parameters_when_rendered_then_the_title_is_bounded_and_clean() {
    // Given a 250 KB name with control and bidi characters, and a long parameter
    let name = format!("Sales\u{202e}\u{1b}[2J{}", "x".repeat(250_000));
    let params = BTreeMap::from([("k\n".repeat(500), "v".repeat(100_000))]);
    // When it is rendered
    let pdf = render_bytes(&table(2), &name, &params);
    // Then the document title is at most 200 characters, without the controls
    let doc = lopdf::Document::load_mem(&pdf).expect("loads");
    let info = doc
        .trailer
        .get(b"Info")
        .and_then(|o| doc.dereference(o))
        .and_then(|(_, o)| o.as_dict())
        .expect("an info dictionary");
    let title = info
        .get(b"Title")
        .and_then(lopdf::Object::as_str)
        .expect("a title");
    let title = lopdf::decode_text_string(&lopdf::Object::string_literal(title.to_vec()))
        .unwrap_or_else(|_| String::from_utf8_lossy(title).into_owned());
    assert!(
        title.chars().count() <= 200,
        "{} chars",
        title.chars().count()
    );
    assert!(title.starts_with("Sales[2J"), "{title:.20}");
    // And the file stays small: the name is not carried whole
    assert!(pdf.len() < 200_000, "{} bytes", pdf.len());
}
