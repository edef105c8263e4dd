//! Characters signet refuses in names and identifiers: controls, format characters (the
//! invisible and bidirectional ones that make `张三\u{202E}gnp.exe` read as `张三exe.png`),
//! private-use characters, noncharacters and line or paragraph separators. What a relying
//! party reads in a certificate, and an operator in the store, must be what it says.

use icu_properties::CodePointMapData;
use icu_properties::props::GeneralCategory;

/// The Unicode general category of `c` (Unicode 16, from the ICU4X tables idna also uses).
pub fn general_category(c: char) -> GeneralCategory {
    CodePointMapData::<GeneralCategory>::new().get(c)
}

/// A noncharacter: U+FDD0..U+FDEF and the last two code points of every plane
/// (U+xFFFE, U+xFFFF). Permanently reserved for a program's internal use, never text.
pub fn is_noncharacter(c: char) -> bool {
    let v = u32::from(c);
    (0xFDD0..=0xFDEF).contains(&v) || v & 0xFFFE == 0xFFFE
}

/// Why `c` may not appear in a name or identifier, or `None` when it may: the kind of
/// character, as it is said in the refusal.
pub fn forbidden_kind(c: char) -> Option<&'static str> {
    if is_noncharacter(c) {
        return Some("noncharacter");
    }
    match general_category(c) {
        GeneralCategory::Control => Some("control character"),
        GeneralCategory::Format => Some("format character"),
        GeneralCategory::PrivateUse => Some("private-use character"),
        GeneralCategory::Surrogate => Some("surrogate"),
        GeneralCategory::LineSeparator => Some("line separator"),
        GeneralCategory::ParagraphSeparator => Some("paragraph separator"),
        _ => None,
    }
}

/// `U+202E RIGHT-TO-LEFT OVERRIDE` for the characters people meet in spoofed names,
/// `U+E000` for the rest.
pub fn describe(c: char) -> String {
    match char_name(c) {
        Some(name) => format!("U+{:04X} {name}", u32::from(c)),
        None => format!("U+{:04X}", u32::from(c)),
    }
}

/// The first forbidden character of `value`, as the sentence a refusal carries:
/// `U+202E RIGHT-TO-LEFT OVERRIDE (format character) is not allowed`.
pub fn check_chars(value: &str) -> Result<(), String> {
    match value
        .chars()
        .find_map(|c| forbidden_kind(c).map(|k| (c, k)))
    {
        Some((c, kind)) => Err(format!("{} ({kind}) is not allowed", describe(c))),
        None => Ok(()),
    }
}

/// Names of the controls and format characters that invisible-text and bidirectional
/// spoofing uses (Unicode's character names; the rest are shown by code point alone).
fn char_name(c: char) -> Option<&'static str> {
    Some(match u32::from(c) {
        0x0000 => "NULL",
        0x0009 => "CHARACTER TABULATION",
        0x000A => "LINE FEED",
        0x000D => "CARRIAGE RETURN",
        0x001B => "ESCAPE",
        0x007F => "DELETE",
        0x0085 => "NEXT LINE",
        0x00AD => "SOFT HYPHEN",
        0x061C => "ARABIC LETTER MARK",
        0x180E => "MONGOLIAN VOWEL SEPARATOR",
        0x200B => "ZERO WIDTH SPACE",
        0x200C => "ZERO WIDTH NON-JOINER",
        0x200D => "ZERO WIDTH JOINER",
        0x200E => "LEFT-TO-RIGHT MARK",
        0x200F => "RIGHT-TO-LEFT MARK",
        0x2028 => "LINE SEPARATOR",
        0x2029 => "PARAGRAPH SEPARATOR",
        0x202A => "LEFT-TO-RIGHT EMBEDDING",
        0x202B => "RIGHT-TO-LEFT EMBEDDING",
        0x202C => "POP DIRECTIONAL FORMATTING",
        0x202D => "LEFT-TO-RIGHT OVERRIDE",
        0x202E => "RIGHT-TO-LEFT OVERRIDE",
        0x2060 => "WORD JOINER",
        0x2061 => "FUNCTION APPLICATION",
        0x2062 => "INVISIBLE TIMES",
        0x2063 => "INVISIBLE SEPARATOR",
        0x2064 => "INVISIBLE PLUS",
        0x2066 => "LEFT-TO-RIGHT ISOLATE",
        0x2067 => "RIGHT-TO-LEFT ISOLATE",
        0x2068 => "FIRST STRONG ISOLATE",
        0x2069 => "POP DIRECTIONAL ISOLATE",
        0xFEFF => "ZERO WIDTH NO-BREAK SPACE",
        0xFFF9 => "INTERLINEAR ANNOTATION ANCHOR",
        0xFFFA => "INTERLINEAR ANNOTATION SEPARATOR",
        0xFFFB => "INTERLINEAR ANNOTATION TERMINATOR",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_invisible_private_use_and_noncharacters_are_refused_by_code_point() {
        let cases = [
            (
                "张三\u{202E}gnp.exe",
                "U+202E RIGHT-TO-LEFT OVERRIDE (format character)",
            ),
            (
                "示例\u{2067}公司\u{2069}",
                "U+2067 RIGHT-TO-LEFT ISOLATE (format character)",
            ),
            ("a\u{200B}b", "U+200B ZERO WIDTH SPACE (format character)"),
            ("a\u{FFFF}", "U+FFFF (noncharacter)"),
            ("a\u{FDD0}", "U+FDD0 (noncharacter)"),
            ("a\u{10FFFE}", "U+10FFFE (noncharacter)"),
            ("a\u{E000}", "U+E000 (private-use character)"),
            ("a\u{F0000}", "U+F0000 (private-use character)"),
            ("a\u{7}", "U+0007 (control character)"),
            ("a\u{85}", "U+0085 NEXT LINE (control character)"),
            ("a\u{2028}b", "U+2028 LINE SEPARATOR (line separator)"),
            ("a\u{E0041}", "U+E0041 (format character)"),
            (
                "\u{FEFF}a",
                "U+FEFF ZERO WIDTH NO-BREAK SPACE (format character)",
            ),
        ];
        for (value, want) in cases {
            let e = check_chars(value).unwrap_err();
            assert_eq!(e, format!("{want} is not allowed"), "{value:?}");
        }
    }

    #[test]
    fn ordinary_text_of_every_script_signet_sees_passes() {
        for ok in [
            "宁津县精神卫生中心",
            "Zhang San",
            "王芳 (RA-0001)",
            "ئۇيغۇر",
            "ᠮᠣᠩᠭᠣᠯ",
            "བོད་",
            "Müller-Lüdenscheidt",
            "한국",
            "葛\u{E0100}",
            "a\u{FE0F}",
        ] {
            check_chars(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
    }
}
