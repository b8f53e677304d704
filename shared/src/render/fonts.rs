//! The embedded fonts: DejaVu Sans (Latin, Greek, Cyrillic; regular and
//! bold) with Droid Sans Fallback for CJK. Parsed once per process; PDFs
//! embed only the glyphs they use (subsetting). Licences are in
//! `shared/assets/fonts/`.

use printpdf::ParsedFont;
use std::sync::OnceLock;

static REGULAR: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
static BOLD: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-Bold.ttf");
static FALLBACK: &[u8] = include_bytes!("../../assets/fonts/DroidSansFallback.ttf");

/// A face's font program, as embedded.
pub fn bytes(face: Face) -> &'static [u8] {
    match face {
        Face::Regular => REGULAR,
        Face::Bold => BOLD,
        Face::Fallback => FALLBACK,
    }
}

/// Which face a run of text uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Face {
    Regular,
    Bold,
    Fallback,
}

/// One character as drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Glyph {
    pub face: Face,
    /// Glyph id in `face`'s font program.
    pub gid: u16,
    /// Advance width in ems.
    pub advance: f32,
}

/// The parsed faces. The CJK fallback (the largest) is parsed only when a
/// report needs it.
pub struct Fonts {
    pub regular: ParsedFont,
    pub bold: ParsedFont,
    fallback: OnceLock<ParsedFont>,
}

fn parse(bytes: &[u8], name: &str) -> ParsedFont {
    ParsedFont::from_bytes(bytes, 0, &mut Vec::new())
        .unwrap_or_else(|| panic!("embedded font {name} does not parse"))
}

/// The fonts, parsed on first use.
pub fn fonts() -> &'static Fonts {
    static FONTS: OnceLock<Fonts> = OnceLock::new();
    FONTS.get_or_init(|| Fonts {
        regular: parse(REGULAR, "DejaVuSans"),
        bold: parse(BOLD, "DejaVuSans-Bold"),
        fallback: OnceLock::new(),
    })
}

impl Fonts {
    /// The CJK fallback face, parsed on first use.
    pub fn fallback(&self) -> &ParsedFont {
        self.fallback
            .get_or_init(|| parse(FALLBACK, "DroidSansFallback"))
    }

    /// The parsed face.
    pub fn face(&self, face: Face) -> &ParsedFont {
        match face {
            Face::Regular => &self.regular,
            Face::Bold => &self.bold,
            Face::Fallback => self.fallback(),
        }
    }

    /// The face that can draw `c`: the primary (regular or bold) when it has
    /// a glyph, else the CJK fallback when it has one, else the primary.
    pub fn face_for(&self, c: char, bold: bool) -> Face {
        let primary = if bold { Face::Bold } else { Face::Regular };
        if self.face(primary).lookup_glyph_index(c as u32).is_some() {
            primary
        } else if self.fallback().lookup_glyph_index(c as u32).is_some() {
            Face::Fallback
        } else {
            primary
        }
    }

    /// How `c` is drawn: its face, glyph id there (0, `.notdef`, when no
    /// face has it) and advance in ems.
    pub fn glyph(&self, c: char, bold: bool) -> Glyph {
        let face = self.face_for(c, bold);
        let font = self.face(face);
        let per_em = font.font_metrics.units_per_em.max(1);
        let gid = font.lookup_glyph_index(c as u32);
        let units = gid.map_or(per_em / 2, |g| font.get_horizontal_advance(g));
        Glyph {
            face,
            gid: gid.unwrap_or(0),
            advance: f32::from(units) / f32::from(per_em),
        }
    }

    /// Advance width of `c` in points at `size`.
    pub fn advance(&self, c: char, bold: bool, size: f32) -> f32 {
        self.glyph(c, bold).advance * size
    }

    /// Width of `s` in points.
    pub fn width(&self, s: &str, bold: bool, size: f32) -> f32 {
        s.chars().map(|c| self.advance(c, bold, size)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_script_has_a_face_with_glyphs() {
        let f = fonts();
        let faces = |text: &str, bold: bool| -> Vec<Face> {
            text.chars().map(|c| f.glyph(c, bold).face).collect()
        };
        for text in ["Zürich", "Łódź", "Ελλάδα", "Москва", "€…"] {
            assert!(
                faces(text, false).iter().all(|face| *face == Face::Regular),
                "{text}"
            );
        }
        assert_eq!(faces("東京", false), [Face::Fallback; 2]);
        assert_eq!(
            faces("Tokyo 東", true),
            [
                Face::Bold,
                Face::Bold,
                Face::Bold,
                Face::Bold,
                Face::Bold,
                Face::Bold,
                Face::Fallback
            ]
        );
        assert!(f.glyph('東', false).gid != 0, "the fallback has the glyph");
        assert!(f.width("WWW", false, 10.0) > f.width("iii", false, 10.0));
    }
}
