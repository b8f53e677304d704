//! Cleaning text that came from outside before people see it: in the PDF,
//! in the execution record (and so in emails, Slack messages and webhook
//! bodies), and in rejection reasons. Nothing is refused here; text is
//! cleaned and bounded.

/// Longest report name kept, in characters.
pub const MAX_REPORT_NAME: usize = 200;
/// Longest column name shown, in characters.
pub const MAX_COLUMN_NAME: usize = 200;
/// Longest parameter key shown, in characters.
pub const MAX_PARAMETER_KEY: usize = 100;
/// Longest parameter value shown, in characters.
pub const MAX_PARAMETER_VALUE: usize = 200;
/// Longest cell text kept before it is fitted to its column, in characters.
pub const MAX_CELL: usize = 1000;
/// Longest reason (rejections, errors) kept, in characters.
pub const MAX_REASON: usize = 500;

/// `s` made safe to show: control characters (C0, DEL, C1) removed, with
/// tabs and line breaks turned into spaces; bidi embeddings, overrides and
/// isolates and invisible formatting characters removed (zero-width joiner
/// and non-joiner stay, since scripts and emoji need them); then cut to
/// `max_chars` characters, the last one an ellipsis when cut.
pub fn display(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars.saturating_mul(4)));
    let mut count = 0;
    let mut chars = s.chars().filter_map(clean).peekable();
    while let Some(c) = chars.next() {
        if count + 1 == max_chars && chars.peek().is_some() {
            out.push('…');
            return out;
        }
        if count == max_chars {
            return out;
        }
        out.push(c);
        count += 1;
    }
    out
}

/// What `c` becomes: itself, a space, or nothing.
fn clean(c: char) -> Option<char> {
    match c {
        // Whitespace controls and Unicode line/paragraph separators.
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}' => Some(' '),
        // Remaining C0 controls, DEL and C1 controls.
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => None,
        // Bidi: embeddings and overrides (LRE, RLE, PDF, LRO, RLO), isolates
        // (LRI, RLI, FSI, PDI) and the invisible marks (LRM, RLM, ALM).
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{61c}' => {
            None
        }
        // Invisible formatting: zero-width space, word joiner and the
        // invisible operators, byte-order mark, Mongolian vowel separator,
        // interlinear annotation marks, soft hyphen.
        '\u{200b}'
        | '\u{2060}'..='\u{2064}'
        | '\u{feff}'
        | '\u{180e}'
        | '\u{fff9}'..='\u{fffb}'
        | '\u{ad}' => None,
        _ => Some(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_plain_text_within_the_limit_when_displayed_then_it_is_unchanged() {
        assert_eq!(
            display("Weekly sales Zürich 東京 👩‍💻", 200),
            "Weekly sales Zürich 東京 👩‍💻"
        );
        assert_eq!(display("", 10), "");
        assert_eq!(display("exactly10!", 10), "exactly10!");
    }

    #[test]
    fn given_controls_and_bidi_tricks_when_displayed_then_they_are_removed() {
        assert_eq!(
            display("a\u{0}b\u{7}c\u{1b}[31md\u{7f}e\u{9b}f", 100),
            "abc[31mdef"
        );
        assert_eq!(display("line1\nline2\r\n\tx", 100), "line1 line2   x");
        assert_eq!(
            display(
                "invoice\u{202e}fdp.exe\u{202c} \u{2066}x\u{2069}\u{200f}",
                100
            ),
            "invoicefdp.exe x"
        );
        assert_eq!(
            display("zero\u{200b}width\u{feff}\u{2060}", 100),
            "zerowidth"
        );
    }

    #[test]
    fn given_text_over_the_limit_when_displayed_then_it_is_cut_with_an_ellipsis() {
        let long = "x".repeat(250_000);
        let shown = display(&long, MAX_REPORT_NAME);
        assert_eq!(shown.chars().count(), MAX_REPORT_NAME);
        assert!(shown.ends_with('…'));
        assert_eq!(display("東京東京東京", 4), "東京東…");
        assert_eq!(display("abc", 0), "");
        assert_eq!(display("abcd", 1), "…");
    }

    #[test]
    fn given_removed_characters_when_counting_the_limit_then_only_shown_characters_count() {
        assert_eq!(display("\u{202e}\u{202e}\u{202e}abc", 3), "abc");
    }
}
