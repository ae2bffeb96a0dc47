//! Text from a store or an input file made safe to print.
//!
//! Variable names, boot descriptions and certificate subjects are written by the guest (or
//! whoever made the file): printed raw, an `ESC ]0;…BEL` retitles the operator's terminal,
//! `ESC [2J` clears it, a right-to-left override (U+202E) makes `exe.txt` read `txt.exe`,
//! and zero-width characters make two different names look the same.
//!
//! [`terminal`] is the one escaping of the `nvram` command's human output: every string that
//! came from a store or an input file goes through it, and so does every line the command
//! prints as a safety net. [`to_json_pretty`] is the JSON output: exact (a JSON reader gets
//! the very same string back) and terminal-safe, as it writes the same characters as
//! `\uXXXX` escapes.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io;

/// Whether [`terminal`] escapes `c`: a character that controls the terminal or that cannot
/// be seen.
///
/// - C0 controls (U+0000–U+001F, newline and tab included), DEL (U+007F) and C1 controls
///   (U+0080–U+009F, where U+009B is a one-character `ESC [` on many terminals);
/// - Unicode bidirectional controls: U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069;
/// - the other invisible formatting characters: every character of the `Cf` (format)
///   category (zero-width space and joiners U+200B–U+200D, word joiner and invisible operators
///   U+2060–U+2064, byte-order mark U+FEFF, soft hyphen U+00AD, tags U+E0000–U+E007F, …),
///   the line and paragraph separators U+2028/U+2029, variation selectors, the combining
///   grapheme joiner, the blank Hangul and Khmer fillers, and the non-characters U+FFFE and
///   U+FFFF.
///
/// Everything else is printed as it is, including spaces, letters of every script and the
/// backslash (so the escaped form of a name that itself contains `\e` looks like the escape
/// of ESC: `--json` gives the exact text).
pub fn is_escaped(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00..=0x1f // C0 controls
            | 0x7f..=0x9f // DEL, C1 controls
            | 0xad // soft hyphen
            | 0x34f // combining grapheme joiner
            | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x890..=0x891 | 0x8e2 // Arabic format, ALM
            | 0x115f | 0x1160 | 0x17b4 | 0x17b5 // Hangul fillers, Khmer invisible vowels
            | 0x180b..=0x180f // Mongolian variation selectors and vowel separator
            | 0x200b..=0x200f // zero width space, non-joiner, joiner; LRM, RLM
            | 0x2028..=0x202e // line/paragraph separator; bidi embeddings and overrides
            | 0x2060..=0x206f // word joiner, invisible operators, bidi isolates, deprecated
            | 0x3164 | 0xffa0 // Hangul fillers
            | 0xfe00..=0xfe0f // variation selectors
            | 0xfeff // byte-order mark (zero width no-break space)
            | 0xfff9..=0xfffb // interlinear annotation
            | 0xfffe | 0xffff // non-characters
            | 0x110bd | 0x110cd | 0x13430..=0x1343f | 0x1bca0..=0x1bca3 | 0x1d173..=0x1d17a
            | 0xe0000..=0xe0fff // tags, variation selectors supplement
    )
}

/// `text` with every character of [`is_escaped`] written as a visible escape: `\t`, `\n`,
/// `\r`, `\e` (ESC), `\xNN` for the other C0 controls and DEL, `\u{NNNN}` for the rest.
/// Borrowed when there is nothing to escape.
///
/// ```
/// use nvram::escape::terminal;
///
/// assert_eq!(terminal("Boot0001"), "Boot0001");
/// assert_eq!(terminal("\x1b]0;pwned\x07\x1b[2J"), "\\e]0;pwned\\x07\\e[2J");
/// assert_eq!(terminal("abc\u{202e}txt.exe"), "abc\\u{202e}txt.exe");
/// assert_eq!(terminal("a\nb\tc\u{9b}"), "a\\nb\\tc\\u{9b}");
/// // Escaping is idempotent: an escaped text has nothing left to escape.
/// let once = terminal("\x1b[2J\u{200b}");
/// assert_eq!(terminal(&once), once);
/// ```
pub fn terminal(text: &str) -> Cow<'_, str> {
    // Printable ASCII, nearly all of what is printed (names, GUIDs, hex), is tested a byte at
    // a time; characters are decoded only from the first byte outside it.
    let Some(ascii_end) = text.bytes().position(|b| !matches!(b, b' '..=b'~')) else {
        return Cow::Borrowed(text);
    };
    let Some(first) = text[ascii_end..].find(is_escaped).map(|i| ascii_end + i) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 8);
    out.push_str(&text[..first]);
    for c in text[first..].chars() {
        match c {
            _ if !is_escaped(c) => out.push(c),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\x1b' => out.push_str("\\e"),
            '\0'..='\x7f' => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            _ => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
        }
    }
    Cow::Owned(out)
}

/// Pretty JSON of `value`, as `serde_json::to_string_pretty`, except that every character of
/// [`is_escaped`] inside a string is written as a `\uXXXX` escape (serde_json itself escapes
/// only U+0000–U+001F). The JSON means exactly the same strings, and is safe on a terminal.
///
/// ```
/// let json = nvram::escape::to_json_pretty(&["\u{202e}\x1b\u{9b}é"]).unwrap();
/// assert_eq!(json, "[\n  \"\\u202e\\u001b\\u009bé\"\n]");
/// let back: Vec<String> = serde_json::from_str(&json).unwrap();
/// assert_eq!(back, ["\u{202e}\x1b\u{9b}é"]);
/// ```
pub fn to_json_pretty<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let mut out = Vec::new();
    to_json_writer_pretty(&mut out, value)?;
    Ok(String::from_utf8(out).expect("serde_json writes UTF-8"))
}

/// [`to_json_pretty`] into a writer.
pub fn to_json_writer_pretty<W: io::Write, T: serde::Serialize + ?Sized>(
    writer: W,
    value: &T,
) -> serde_json::Result<()> {
    let formatter = SafeFormatter(serde_json::ser::PrettyFormatter::new());
    let mut serializer = serde_json::Serializer::with_formatter(writer, formatter);
    value.serialize(&mut serializer)
}

/// serde_json's pretty formatter, with the string fragments it leaves unescaped checked for
/// [`is_escaped`] characters.
struct SafeFormatter<'a>(serde_json::ser::PrettyFormatter<'a>);

impl serde_json::ser::Formatter for SafeFormatter<'_> {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (at, c) in fragment.char_indices().filter(|(_, c)| is_escaped(*c)) {
            writer.write_all(&fragment.as_bytes()[start..at])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = at + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.begin_array(writer)
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_array(writer)
    }

    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(writer, first)
    }

    fn end_array_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_array_value(writer)
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.begin_object(writer)
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_object(writer)
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(writer, first)
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.begin_object_value(writer)
    }

    fn end_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_object_value(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_bidi_and_invisibles() {
        for (input, escaped) in [
            ("\0\x01\x07\x08\x7f", "\\x00\\x01\\x07\\x08\\x7f"),
            ("\r\n\t\x1b", "\\r\\n\\t\\e"),
            ("\u{80}\u{9b}\u{9f}", "\\u{80}\\u{9b}\\u{9f}"),
            (
                "\u{61c}\u{200e}\u{200f}\u{202a}\u{202e}\u{2066}\u{2069}",
                "\\u{61c}\\u{200e}\\u{200f}\\u{202a}\\u{202e}\\u{2066}\\u{2069}",
            ),
            ("a\u{200b}b\u{feff}\u{ad}", "a\\u{200b}b\\u{feff}\\u{ad}"),
            ("\u{2028}\u{2029}\u{e0041}", "\\u{2028}\\u{2029}\\u{e0041}"),
        ] {
            assert_eq!(terminal(input), escaped, "{input:?}");
        }
    }

    #[test]
    fn keeps_printable_text_borrowed() {
        for text in [
            "Boot0001",
            "UEFI QEMU DVD-ROM QM00003 ",
            "\\EFI\\debian\\shimx64.efi",
            "Microsoft Corporation UEFI CA 2011",
            "Ünïcödé ελληνικά 日本語 עברית",
            "\u{fffd}",
        ] {
            assert!(matches!(terminal(text), Cow::Borrowed(_)), "{text:?}");
        }
    }

    #[test]
    fn json_is_exact_and_has_no_raw_escaped_characters() {
        let every: String = (0..0x11_0000)
            .filter_map(char::from_u32)
            .filter(|&c| is_escaped(c))
            .collect();
        let text = format!("name {every} \"quoted\" \\ end 😀");
        let json = to_json_pretty(&serde_json::json!({ text.clone(): [text.clone()] })).unwrap();
        assert!(!json.chars().any(|c| is_escaped(c) && c != '\n'), "{json}");
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back, serde_json::json!({ text.clone(): [text] }));
        assert_eq!(
            to_json_pretty(&serde_json::json!({"a": [1, "b"]})).unwrap(),
            serde_json::to_string_pretty(&serde_json::json!({"a": [1, "b"]})).unwrap()
        );
    }
}
