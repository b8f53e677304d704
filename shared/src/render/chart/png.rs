//! Rasterises a laid-out chart to PNG with tiny-skia, drawing text from
//! the embedded fonts' glyph outlines (ttf-parser), so no system fonts are
//! needed and the picture matches the PDF. Only the render function
//! builds this (the `chart` feature).

use super::{Drawing, Rgb, Shape};
use crate::render::fonts::{Face, fonts};
use tiny_skia::{FillRule, Paint, PathBuilder, Pixmap, Rect, Stroke, Transform};

/// Pixels per point: the PNG is drawn at twice its layout size, so it stays
/// sharp on high-density screens when shown at the layout width.
pub const SCALE: f32 = 2.0;

/// The chart as a PNG (white background, sRGB, `SCALE` × its size).
pub fn to_png(d: &Drawing) -> Result<Vec<u8>, String> {
    let (w, h) = (
        (d.width * SCALE).ceil() as u32,
        (d.height * SCALE).ceil() as u32,
    );
    let mut pixmap = Pixmap::new(w, h).ok_or("chart has no area")?;
    pixmap.fill(tiny_skia::Color::WHITE);
    let scale = Transform::from_scale(SCALE, SCALE);
    let faces = Faces::new()?;
    for shape in &d.shapes {
        match shape {
            Shape::Rect { x, y, w, h, color } => {
                if let Some(r) = Rect::from_xywh(*x, *y, *w, *h) {
                    pixmap.fill_rect(r, &paint(*color), scale, None);
                }
            }
            Shape::Line {
                points,
                width,
                color,
            } => {
                let mut pb = PathBuilder::new();
                for (i, &(x, y)) in points.iter().enumerate() {
                    if i == 0 {
                        pb.move_to(x, y);
                    } else {
                        pb.line_to(x, y);
                    }
                }
                if let Some(path) = pb.finish() {
                    let stroke = Stroke {
                        width: *width,
                        line_join: tiny_skia::LineJoin::Round,
                        ..Stroke::default()
                    };
                    pixmap.stroke_path(&path, &paint(*color), &stroke, scale, None);
                }
            }
            Shape::Text {
                x,
                y,
                size,
                bold,
                text,
                color,
            } => faces.draw(&mut pixmap, (*x, *y), *size, *bold, text, *color, scale),
        }
    }
    pixmap.encode_png().map_err(|e| e.to_string())
}

fn paint(c: Rgb) -> Paint<'static> {
    let mut p = Paint::default();
    p.set_color_rgba8(c.0, c.1, c.2, 255);
    p.anti_alias = true;
    p
}

/// The embedded faces, parsed for outlines.
struct Faces {
    regular: ttf_parser::Face<'static>,
    bold: ttf_parser::Face<'static>,
    fallback: Option<ttf_parser::Face<'static>>,
}

impl Faces {
    fn new() -> Result<Self, String> {
        let parse = |face| {
            ttf_parser::Face::parse(crate::render::fonts::bytes(face), 0)
                .map_err(|e| format!("embedded font: {e}"))
        };
        Ok(Self {
            regular: parse(Face::Regular)?,
            bold: parse(Face::Bold)?,
            fallback: None,
        })
    }

    fn face(&mut self, face: Face) -> Option<&ttf_parser::Face<'static>> {
        match face {
            Face::Regular => Some(&self.regular),
            Face::Bold => Some(&self.bold),
            Face::Fallback => {
                if self.fallback.is_none() {
                    self.fallback =
                        ttf_parser::Face::parse(crate::render::fonts::bytes(face), 0).ok();
                }
                self.fallback.as_ref()
            }
        }
    }

    /// Draws `text` with its baseline starting at `at`.
    #[allow(clippy::too_many_arguments)]
    fn draw(
        &self,
        pixmap: &mut Pixmap,
        at: (f32, f32),
        size: f32,
        bold: bool,
        text: &str,
        color: Rgb,
        scale: Transform,
    ) {
        let mut faces = Self {
            regular: self.regular.clone(),
            bold: self.bold.clone(),
            fallback: self.fallback.clone(),
        };
        let paint = paint(color);
        let mut x = at.0;
        for c in text.chars() {
            let g = fonts().glyph(c, bold);
            if let Some(face) = faces.face(g.face) {
                let em = size / f32::from(face.units_per_em().max(1));
                let mut outline = Outline(PathBuilder::new());
                if face
                    .outline_glyph(ttf_parser::GlyphId(g.gid), &mut outline)
                    .is_some()
                    && let Some(path) = outline.0.finish()
                {
                    // Font units, y up → points at the pen, y down.
                    let t = Transform::from_row(em, 0.0, 0.0, -em, x, at.1).post_concat(scale);
                    pixmap.fill_path(&path, &paint, FillRule::Winding, t, None);
                }
            }
            x += g.advance * size;
        }
    }
}

/// Collects a glyph outline as a path.
struct Outline(PathBuilder);

impl ttf_parser::OutlineBuilder for Outline {
    fn move_to(&mut self, x: f32, y: f32) {
        self.0.move_to(x, y);
    }
    fn line_to(&mut self, x: f32, y: f32) {
        self.0.line_to(x, y);
    }
    fn quad_to(&mut self, x1: f32, y1: f32, x: f32, y: f32) {
        self.0.quad_to(x1, y1, x, y);
    }
    fn curve_to(&mut self, x1: f32, y1: f32, x2: f32, y2: f32, x: f32, y: f32) {
        self.0.cubic_to(x1, y1, x2, y2, x, y);
    }
    fn close(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ChartData, font_measure, layout};
    use super::*;
    use crate::contract::{ChartKind, ChartSpec, Column, ColumnType, Table};
    use serde_json::json;

    #[test]
    fn given_a_chart_when_rasterised_then_the_png_decodes_at_twice_its_size_and_is_not_blank() {
        let t = Table {
            columns: vec![
                Column::new("City", ColumnType::String),
                Column::new("Revenue", ColumnType::Decimal),
            ],
            rows: ["Zurich", "Lodz", "Athens", "東京"]
                .iter()
                .enumerate()
                .map(|(i, c)| vec![json!(c), json!(1000.0 * (i + 1) as f64)])
                .collect(),
        };
        let spec = ChartSpec {
            kind: ChartKind::Bar,
            x: "City".into(),
            y: vec!["Revenue".into()],
            title: "Revenue by city".into(),
        };
        let data = ChartData::collect(&t, &spec, &jiff::tz::TimeZone::UTC).expect("valid");
        let png = to_png(&layout(&data, 540.0, 220.0, &font_measure)).expect("png");
        let decoder = ::png::Decoder::new(std::io::Cursor::new(png.as_slice()));
        let mut reader = decoder.read_info().expect("PNG header");
        let mut pixels = vec![0; reader.output_buffer_size().expect("size")];
        let frame = reader.next_frame(&mut pixels).expect("PNG data");
        assert_eq!((frame.width, frame.height), (1080, 440));
        let pixels = &pixels[..frame.buffer_size()];
        let px = |x: u32, y: u32| {
            let i = ((y * frame.width + x) * 4) as usize;
            (pixels[i], pixels[i + 1], pixels[i + 2])
        };
        // Not blank: plenty of bar colour, and dark text pixels.
        let blue = (0..frame.height)
            .flat_map(|y| (0..frame.width).map(move |x| (x, y)))
            .filter(|&(x, y)| px(x, y) == (37, 99, 235))
            .count();
        assert!(blue > 10_000, "{blue} bar pixels");
        let ink = pixels
            .chunks(4)
            .filter(|p| p[0] < 80 && p[1] < 80 && p[2] < 80)
            .count();
        assert!(ink > 200, "{ink} text pixels");
        assert_eq!(px(0, frame.height - 1), (255, 255, 255), "white background");
    }
}
