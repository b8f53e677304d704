//! Fonts as the PDF embeds them: each face once per file, as a Type 0 font
//! (Identity-H) over a TrueType CID font. Content streams use the face's own
//! glyph ids as character codes, so pages can be written before the glyph
//! set is known; at the end each face is subset to the glyphs the pages
//! used (printpdf's subsetter), and a `/CIDToGIDMap` maps the codes to the
//! subset's renumbered glyphs. `/ToUnicode` keeps the text extractable.

use super::file::{PdfFile, Ref, name};
use crate::render::fonts::{Face, Fonts, Glyph};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Glyph lookups for one render, cached (ASCII in arrays), and the glyphs
/// each face has drawn.
pub struct GlyphBook<'f> {
    fonts: &'f Fonts,
    ascii: [[Option<Glyph>; 128]; 2],
    other: std::collections::HashMap<(char, bool), Glyph>,
    /// Per face (regular, bold, fallback), indexed by glyph id: the
    /// character it showed first (`'\0'`: not drawn).
    used: [Vec<char>; 3],
}

fn slot(face: Face) -> usize {
    match face {
        Face::Regular => 0,
        Face::Bold => 1,
        Face::Fallback => 2,
    }
}

/// The resource name pages use for a face.
pub fn resource(face: Face) -> &'static str {
    match face {
        Face::Regular => "/F1",
        Face::Bold => "/F2",
        Face::Fallback => "/F3",
    }
}

impl<'f> GlyphBook<'f> {
    pub fn new(fonts: &'f Fonts) -> Self {
        GlyphBook {
            fonts,
            ascii: [[None; 128]; 2],
            other: std::collections::HashMap::new(),
            used: Default::default(),
        }
    }

    /// How `c` is drawn (looked up once per render).
    pub fn glyph(&mut self, c: char, bold: bool) -> Glyph {
        let fonts = self.fonts;
        if c.is_ascii() {
            *self.ascii[usize::from(bold)][c as usize].get_or_insert_with(|| fonts.glyph(c, bold))
        } else {
            *self
                .other
                .entry((c, bold))
                .or_insert_with(|| fonts.glyph(c, bold))
        }
    }

    /// Width of `s` in points at `size`.
    pub fn width(&mut self, s: &str, bold: bool, size: f32) -> f32 {
        s.chars().map(|c| self.glyph(c, bold).advance).sum::<f32>() * size
    }

    /// Records that `g` (showing `c`) was drawn.
    pub fn mark(&mut self, c: char, g: Glyph) {
        let used = &mut self.used[slot(g.face)];
        let i = usize::from(g.gid);
        if i >= used.len() {
            used.resize(i + 1, '\0');
        }
        if used[i] == '\0' {
            used[i] = c;
        }
    }

    /// Writes every face that drew something, and returns the font
    /// resource dictionary's entries (`/F1 5 0 R …`).
    pub fn write_fonts(&self, file: &mut PdfFile) -> Result<String, String> {
        let mut entries = String::new();
        for face in [Face::Regular, Face::Bold, Face::Fallback] {
            let used: BTreeMap<u16, char> = self.used[slot(face)]
                .iter()
                .enumerate()
                .filter(|(_, c)| **c != '\0')
                .filter_map(|(g, c)| Some((u16::try_from(g).ok()?, *c)))
                .collect();
            if used.is_empty() {
                continue;
            }
            let id = write_face(file, self.fonts, face, &used)?;
            let _ = write!(entries, "{} {id} ", resource(face));
        }
        Ok(entries)
    }
}

/// Writes one face's objects and returns its Type 0 font.
fn write_face(
    file: &mut PdfFile,
    fonts: &Fonts,
    face: Face,
    used: &BTreeMap<u16, char>,
) -> Result<Ref, String> {
    let font = fonts.face(face);
    let wanted: BTreeMap<u16, String> = used.iter().map(|(g, c)| (*g, c.to_string())).collect();
    let subset = printpdf::subset_font(font, &wanted)
        .map_err(|e| format!("subsetting the {face:?} font failed: {e}"))?;
    let m = &font.pdf_font_metrics;
    let per_em = f32::from(m.units_per_em.max(1));
    let scale = |v: f32| (v * 1000.0 / per_em).round() as i64;
    let base = format!(
        "{}+{}",
        ["RDAAAA", "RDAAAB", "RDAAAC"][slot(face)],
        font.font_name.as_deref().unwrap_or("Font")
    );
    let base = name(&base);

    let program = file.reserve();
    file.stream(
        program,
        &format!("/Length1 {}", subset.bytes.len()),
        &subset.bytes,
        true,
    );

    // CIDToGIDMap: two bytes per code, the subset glyph for each face glyph.
    let top = used.keys().next_back().copied().unwrap_or(0);
    let mut map = vec![0u8; (usize::from(top) + 1) * 2];
    for (old, (new, _)) in &subset.glyph_mapping {
        if let Some(pair) = map.get_mut(usize::from(*old) * 2..usize::from(*old) * 2 + 2) {
            pair.copy_from_slice(&new.to_be_bytes());
        }
    }
    let cid_map = file.reserve();
    file.stream(cid_map, "", &map, true);

    let to_unicode = file.reserve();
    file.stream(to_unicode, "", to_unicode_cmap(used).as_bytes(), true);

    let descriptor = file.reserve();
    let cap = font
        .font_metrics
        .cap_height
        .map_or(scale(f32::from(m.ascender)), &scale);
    file.object(
        descriptor,
        format!(
            "<< /Type /FontDescriptor /FontName {base} /Flags 32 /FontBBox [{} {} {} {}] /ItalicAngle 0 /Ascent {} /Descent {} /CapHeight {cap} /StemV {} /FontFile2 {program} >>",
            scale(f32::from(m.x_min)),
            scale(f32::from(m.y_min)),
            scale(f32::from(m.x_max)),
            scale(f32::from(m.y_max)),
            scale(f32::from(m.ascender)),
            scale(f32::from(m.descender)),
            if face == Face::Bold { 165 } else { 88 },
        )
        .as_bytes(),
    );

    let mut widths = String::new();
    for gid in used.keys() {
        let w = scale(f32::from(font.get_horizontal_advance(*gid)));
        let _ = write!(widths, "{gid} [{w}] ");
    }
    let cid_font = file.reserve();
    file.object(
        cid_font,
        format!(
            "<< /Type /Font /Subtype /CIDFontType2 /BaseFont {base} /CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> /FontDescriptor {descriptor} /DW 1000 /W [{widths}] /CIDToGIDMap {cid_map} >>"
        )
        .as_bytes(),
    );

    let type0 = file.reserve();
    file.object(
        type0,
        format!(
            "<< /Type /Font /Subtype /Type0 /BaseFont {base} /Encoding /Identity-H /DescendantFonts [{cid_font}] /ToUnicode {to_unicode} >>"
        )
        .as_bytes(),
    );
    Ok(type0)
}

/// A ToUnicode CMap from each used code (glyph id) to its character.
fn to_unicode_cmap(used: &BTreeMap<u16, char>) -> String {
    let mut s = String::from(
        "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n\
         /CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n\
         /CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n\
         1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n",
    );
    let entries: Vec<(&u16, &char)> = used.iter().collect();
    for chunk in entries.chunks(100) {
        let _ = writeln!(s, "{} beginbfchar", chunk.len());
        for (gid, c) in chunk {
            let mut units = [0u16; 2];
            let hex: String = c
                .encode_utf16(&mut units)
                .iter()
                .map(|u| format!("{u:04X}"))
                .collect();
            let _ = writeln!(s, "<{gid:04X}> <{hex}>");
        }
        s.push_str("endbfchar\n");
    }
    s.push_str("endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n");
    s
}
