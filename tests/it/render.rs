//! The PDF checked by tools nobody here wrote: qpdf validates its structure,
//! pdftotext gives back its text, pdfinfo counts its pages.

use shared::contract::{Column, ColumnType, Table};
use shared::domain::Timestamp;
use shared::render::{ReportMeta, page_count, render_pdf, rows_per_page, time_zone};
use std::collections::BTreeMap;
use std::process::Command;

const NAMES: [&str; 5] = ["Zürich", "Łódź", "東京", "Ελλάδα", "Москва"];

fn table(rows: usize) -> Table {
    let col = |name: &str, kind| Column::new(name, kind);
    Table {
        columns: vec![
            col("City", ColumnType::String),
            col("Orders", ColumnType::Integer),
            col("Revenue", ColumnType::Decimal),
            col("Last order", ColumnType::DateTime),
            col("Target met", ColumnType::Boolean),
        ],
        rows: (0..rows)
            .map(|i| {
                vec![
                    format!("{} #{i}", NAMES[i % NAMES.len()]).into(),
                    (i as i64 * 3).into(),
                    serde_json::json!(i as f64 + 0.25),
                    "2026-11-25T18:42:00Z".into(),
                    (i % 2 == 0).into(),
                ]
            })
            .collect(),
    }
}

fn render_to_file(t: &Table, name: &str) -> std::path::PathBuf {
    let tz = time_zone("Europe/Zurich").expect("tz");
    let params = BTreeMap::from([("region".to_owned(), "EMEA".to_owned())]);
    let meta = ReportMeta {
        report_name: "Weekly sales",
        execution_id: "exec-render-test",
        generated_at: Timestamp::parse("2026-11-26T07:00:00Z").expect("ts"),
        time_zone: &tz,
        time_zone_name: "Europe/Zurich",
        parameters: &params,
        chart: None,
    };
    let dir = report_delivery_tests::work_dir().join("render");
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(format!("{name}-{}.pdf", uuid::Uuid::new_v4().simple()));
    let summary = shared::contract::summarize(t).expect("a valid table");
    std::fs::write(&path, render_pdf(&meta, t, &summary).expect("renders")).expect("write");
    path
}

fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} runs (make test installs it): {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_multi_page_report_passes_qpdf_and_gives_back_every_row_and_the_unicode_names() {
    // Given a table that needs three pages
    let rows = rows_per_page() * 2 + 5;
    let path = render_to_file(&table(rows), "multi");
    let file = path.to_str().expect("utf-8 path");
    // Then qpdf finds no structural errors
    tool("qpdf", &["--check", file]);
    // And the page count is what the row count implies
    let info = tool("pdfinfo", &[file]);
    let pages = page_count(rows, true);
    assert_eq!(pages, 3);
    assert!(
        info.lines()
            .any(|l| l.split_whitespace().eq(["Pages:", "3"])),
        "{info}"
    );
    // And the text comes back: header on every page, every row, the totals, the footer
    let text = tool("pdftotext", &["-layout", file, "-"]);
    let page_texts: Vec<&str> = text
        .split('\u{c}')
        .filter(|p| !p.trim().is_empty())
        .collect();
    assert_eq!(page_texts.len(), 3);
    for (i, page) in page_texts.iter().enumerate() {
        assert!(page.contains("Weekly sales"), "header on page {}", i + 1);
        assert!(
            page.contains("Generated Thu 26 Nov 2026, 08:00 CET (Europe/Zurich)"),
            "local time as people write it on page {}",
            i + 1
        );
        assert!(
            page.matches("Thu 26 Nov 2026, 08:00 CET").count() >= 2,
            "and in the footer of page {}",
            i + 1
        );
        assert!(page.contains("region: EMEA"));
        assert!(
            page.contains("City") && page.contains("Target met"),
            "column headers repeat"
        );
        assert!(page.contains(&format!("Page {} of 3", i + 1)));
    }
    for i in 0..rows {
        let name = format!("{} #{i}", NAMES[i % NAMES.len()]);
        assert!(text.contains(&name), "row {i} ({name}) is in the text");
    }
    assert!(text.contains("Total"));
    assert!(
        text.contains("2026-11-25 19:42 CET"),
        "dates in the report's zone"
    );
}

#[test]
fn an_empty_report_renders_a_clear_no_rows_page() {
    let path = render_to_file(&table(0), "empty");
    let file = path.to_str().expect("utf-8 path");
    tool("qpdf", &["--check", file]);
    let text = tool("pdftotext", &[file, "-"]);
    assert!(text.contains("No rows in this execution."));
    assert!(text.contains("Page 1 of 1"));
    assert!(!text.contains("Total"));
}

#[test]
fn long_text_is_cut_to_its_column_not_overflowing() {
    let mut t = table(3);
    t.rows[0][0] = "A very long city name that keeps going ".repeat(20).into();
    let path = render_to_file(&t, "long");
    let text = tool("pdftotext", &["-layout", path.to_str().expect("path"), "-"]);
    let line = text
        .lines()
        .find(|l| l.contains("A very long"))
        .expect("row present");
    assert!(line.contains('…'), "ellipsized: {line}");
    assert!(
        line.contains("0.25"),
        "the next columns are still on the line: {line}"
    );
    assert!(!text.contains(&"A very long city name that keeps going ".repeat(20)));
}

#[test]
fn a_61_page_report_is_one_valid_pdf_with_each_font_embedded_once() {
    // Given enough rows for 60 pages (written out page by page)
    let rows = rows_per_page() * 60;
    let path = render_to_file(&table(rows), "long");
    let file = path.to_str().expect("utf-8 path");
    // Then the file is valid, has every page in order, and keeps the title
    tool("qpdf", &["--check", file]);
    // And each face is embedded once, subset (not once per group of pages)
    let fonts = tool("pdffonts", &[file]);
    let embedded: Vec<&str> = fonts.lines().skip(2).collect();
    assert!(
        embedded.len() <= 3 && embedded.iter().all(|l| l.contains("CID TrueType")),
        "{fonts}"
    );
    assert!(
        embedded.iter().all(|l| l
            .split_whitespace()
            .skip(4)
            .take(3)
            .eq(["yes", "yes", "yes"])),
        "embedded, subset, with ToUnicode: {fonts}"
    );
    let info = tool("pdfinfo", &[file]);
    assert!(
        info.lines()
            .any(|l| l.split_whitespace().eq(["Pages:", "61"])),
        "{info}"
    );
    assert!(info.contains("Weekly sales"), "document title kept: {info}");
    let text = tool("pdftotext", &["-layout", file, "-"]);
    let pages: Vec<&str> = text
        .split('\u{c}')
        .filter(|p| !p.trim().is_empty())
        .collect();
    assert_eq!(pages.len(), 61);
    for (i, page) in pages.iter().enumerate() {
        assert!(
            page.contains(&format!("Page {} of 61", i + 1)),
            "page {} in order",
            i + 1
        );
    }
    let last = format!("{} #{}", NAMES[(rows - 1) % NAMES.len()], rows - 1);
    assert!(pages[60].contains(&last) || pages[59].contains(&last));
    assert!(pages[60].contains("Total"));
}
