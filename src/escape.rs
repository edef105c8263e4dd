//! Client-supplied text made safe for a log line: [`Escaped`] writes control characters
//! (Unicode Cc), format characters (Cf, which include the bidirectional overrides and
//! isolates such as U+202E) and the line and paragraph separators as `\u{202e}`, and a
//! backslash as `\\`, so a request id, a subject value or a certificate's name can neither
//! end a log line, colour a terminal nor reverse the rest of the line, and every escaped
//! text still reads back to exactly what the client sent.

use std::fmt;

/// True for the characters [`Escaped`] rewrites: controls (Cc), format characters (Cf, the
/// bidirectional controls among them) and the line and paragraph separators, classified by
/// the same Unicode tables as the characters signet refuses in names ([`crate::pki::text`]).
pub fn is_unsafe_in_logs(c: char) -> bool {
    use icu_properties::props::GeneralCategory;
    matches!(
        crate::pki::text::general_category(c),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// A string that displays with every character unsafe in a log line escaped as `\u{hex}`
/// and every backslash doubled; log client-supplied values as `field = %Escaped(value)`.
#[derive(Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut start = 0;
        for (i, c) in self.0.char_indices() {
            let unsafe_char = is_unsafe_in_logs(c);
            if unsafe_char || c == '\\' {
                f.write_str(&self.0[start..i])?;
                if unsafe_char {
                    write!(f, "\\u{{{:x}}}", u32::from(c))?;
                } else {
                    f.write_str("\\\\")?;
                }
                start = i + c.len_utf8();
            }
        }
        f.write_str(&self.0[start..])
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_format_characters_and_separators_are_escaped() {
        let s = "id\u{202e}txt.exe\u{1b}[31m\nnext\u{2028}\u{200b}\u{feff}\u{e0041}\u{9b}";
        assert_eq!(
            Escaped(s).to_string(),
            "id\\u{202e}txt.exe\\u{1b}[31m\\u{a}next\\u{2028}\\u{200b}\\u{feff}\\u{e0041}\\u{9b}"
        );
    }

    #[test]
    fn ordinary_text_is_unchanged_and_backslashes_are_doubled() {
        for s in [
            "req-2026-0001",
            "宁津县精神卫生中心",
            "O=Acme, CN=a.example.cn",
            "",
        ] {
            assert_eq!(Escaped(s).to_string(), s);
        }
        // A client cannot forge an escape: its own backslash is doubled.
        assert_eq!(Escaped("a\\u{202e}b").to_string(), "a\\\\u{202e}b");
        assert_eq!(format!("{:?}", Escaped("x\u{7}")), "\"x\\u{7}\"");
    }

    #[test]
    fn bidi_controls_and_separators_are_unsafe_and_text_is_not() {
        for c in ['\u{61c}', '\u{200e}', '\u{2066}', '\u{2069}', '\u{2029}'] {
            assert!(is_unsafe_in_logs(c), "{c:?}");
        }
        for c in ['a', ' ', '名', '\u{2030}', '\u{fffd}'] {
            assert!(!is_unsafe_in_logs(c), "{c:?}");
        }
    }
}
