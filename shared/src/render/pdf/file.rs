//! A PDF file written front to back: objects are appended to the output as
//! soon as they are complete, and only their byte offsets are kept for the
//! cross-reference table. Page content is deflated as it is written, so a
//! page's operators are held only while that page is drawn.

use flate2::{Compression, write::ZlibEncoder};
use std::io::Write as _;

/// An indirect object number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ref(pub u32);

impl std::fmt::Display for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} 0 R", self.0)
    }
}

/// The file being written.
pub struct PdfFile {
    out: Vec<u8>,
    /// Byte offset of each object, by number - 1; `None` until written.
    offsets: Vec<Option<usize>>,
}

impl PdfFile {
    /// Starts a PDF 1.7 file (with the binary marker line readers expect).
    pub fn new() -> Self {
        let mut out = Vec::with_capacity(64 * 1024);
        out.extend_from_slice(b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n");
        PdfFile {
            out,
            offsets: Vec::new(),
        }
    }

    /// Reserves an object number to be written later (forward references).
    pub fn reserve(&mut self) -> Ref {
        self.offsets.push(None);
        Ref(self.offsets.len() as u32)
    }

    /// Writes a reserved object whose body is `body` (a dictionary, array…).
    pub fn object(&mut self, id: Ref, body: &[u8]) {
        self.begin(id);
        self.out.extend_from_slice(body);
        self.out.extend_from_slice(b"\nendobj\n");
    }

    /// Writes a reserved stream object: `dict` holds the entries besides
    /// `/Length` and `/Filter`; the data is deflated when `compress`.
    pub fn stream(&mut self, id: Ref, dict: &str, data: &[u8], compress: bool) {
        let packed;
        let (data, filter) = if compress {
            packed = deflate(data);
            (packed.as_slice(), " /Filter /FlateDecode")
        } else {
            (data, "")
        };
        self.begin(id);
        let _ = write!(
            self.out,
            "<< {dict} /Length {}{filter} >>\nstream\n",
            data.len()
        );
        self.out.extend_from_slice(data);
        self.out.extend_from_slice(b"\nendstream\nendobj\n");
    }

    fn begin(&mut self, id: Ref) {
        if let Some(slot) = self.offsets.get_mut(id.0 as usize - 1) {
            *slot = Some(self.out.len());
        }
        let _ = writeln!(self.out, "{} 0 obj", id.0);
    }

    /// Writes the cross-reference table and trailer and returns the bytes.
    /// Objects reserved but never written are listed as free.
    pub fn finish(mut self, root: Ref, info: Ref, id: &[u8; 16]) -> Vec<u8> {
        let xref = self.out.len();
        let _ = write!(
            self.out,
            "xref\n0 {}\n0000000000 65535 f\r\n",
            self.offsets.len() + 1
        );
        for offset in &self.offsets {
            let _ = match offset {
                Some(at) => writeln!(self.out, "{at:010} 00000 n\r"),
                None => writeln!(self.out, "0000000000 00001 f\r"),
            };
        }
        let id = hex::encode(id);
        let _ = write!(
            self.out,
            "trailer\n<< /Size {} /Root {root} /Info {info} /ID [<{id}> <{id}>] >>\nstartxref\n{xref}\n%%EOF\n",
            self.offsets.len() + 1
        );
        self.out
    }
}

impl Default for PdfFile {
    fn default() -> Self {
        Self::new()
    }
}

/// Deflates `data` at level 3: levels 1 and 2 are faster but make files 40%
/// and 17% larger, and these files are emailed (BENCHMARKS.md).
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut z = ZlibEncoder::new(Vec::with_capacity(data.len() / 4), Compression::new(3));
    let _ = z.write_all(data);
    z.finish().unwrap_or_default()
}

/// A PDF text string: UTF-16BE with a byte-order mark, as a hex string.
pub fn text_string(s: &str) -> String {
    let mut out = String::with_capacity(6 + s.len() * 4);
    out.push_str("<FEFF");
    for unit in s.encode_utf16() {
        out.push_str(&format!("{unit:04X}"));
    }
    out.push('>');
    out
}

/// A PDF name with every byte outside the regular characters `#`-escaped.
pub fn name(s: &str) -> String {
    let mut out = String::from("/");
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.+".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("#{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_file_has_a_cross_reference_entry_per_object_at_its_offset() {
        let mut f = PdfFile::new();
        let pages = f.reserve();
        let catalog = f.reserve();
        let unused = f.reserve();
        let info = f.reserve();
        f.object(pages, b"<< /Type /Pages /Kids [] /Count 0 >>");
        f.object(
            catalog,
            format!("<< /Type /Catalog /Pages {pages} >>").as_bytes(),
        );
        f.object(
            info,
            format!("<< /Title {} >>", text_string("Zürich")).as_bytes(),
        );
        let _ = unused;
        let bytes = f.finish(catalog, info, &[7; 16]);
        let doc = lopdf::Document::load_mem(&bytes).expect("lopdf reads it");
        assert_eq!(doc.get_pages().len(), 0);
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains("0000000000 00001 f"),
            "the unused number is free"
        );
        assert!(text.contains("<FEFF005A00FC0072006900630068>"));
        assert_eq!(name("Deja Vu#"), "/Deja#20Vu#23");
    }
}
