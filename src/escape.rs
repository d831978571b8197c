//! Escaping untrusted text before it reaches a terminal, a journal or a JSON document.
//!
//! File names are chosen by whoever can write in a log directory, and broker strings (host names, topic
//! names, error messages) by whoever runs the broker: either may hold newlines, terminal escape sequences
//! or bytes that are not UTF-8. [`Esc`] prints such text on one line with every control character and
//! invalid byte made visible (`\n`, `\x1b`, `\xff`); [`json_str`] writes a JSON string body. These are
//! the only two escapers in shipper.

use std::fmt::{self, Display, Write as _};
use std::io;
use std::path::Path;

/// Displays bytes on one line, escaping control characters, backslashes and invalid UTF-8.
#[derive(Debug, Clone, Copy)]
pub struct Esc<'a>(pub &'a [u8]);

impl<'a> Esc<'a> {
    /// Escapes a path (its raw bytes: a Unix path need not be UTF-8).
    pub fn path(p: &'a Path) -> Esc<'a> {
        use std::os::unix::ffi::OsStrExt;
        Esc(p.as_os_str().as_bytes())
    }

    /// Escapes a string.
    #[allow(clippy::should_implement_trait)]
    pub fn str(s: &'a str) -> Esc<'a> {
        Esc(s.as_bytes())
    }
}

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    '\r' => f.write_str("\\r")?,
                    '\t' => f.write_str("\\t")?,
                    c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                    // Bidirectional overrides can make a name display as another.
                    '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                        write!(f, "\\u{{{:x}}}", c as u32)?
                    }
                    c => f.write_char(c)?,
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// Displays a regular expression on one line: as [`Esc`], except that a backslash stays one backslash
/// (the pattern's own escape). The control characters are shown as `\n`, `\t` or `\u{1b}`, which the
/// regex syntax reads as those characters, so what is shown is the same pattern.
#[derive(Debug, Clone, Copy)]
pub struct EscRegex<'a>(pub &'a str);

impl Display for EscRegex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.0.split('\\').enumerate() {
            if i > 0 {
                f.write_char('\\')?;
            }
            Esc::str(part).fmt(f)?;
        }
        Ok(())
    }
}

/// Partition numbers for a message: `1,2,5`.
pub fn partitions<'a>(ps: impl IntoIterator<Item = &'a i32>) -> String {
    let mut out = String::new();
    for (i, p) in ps.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&p.to_string());
    }
    out
}

/// An owned, escaped rendering of a path, for messages that outlive the path.
pub fn path(p: &Path) -> String {
    Esc::path(p).to_string()
}

/// Writes `s` as the body of a JSON string (without the quotes): `"` and `\` escaped, control
/// characters as `\n`, `\r`, `\t` or `\u00XX`.
pub fn json_str<W: io::Write>(w: &mut W, s: &str) -> io::Result<()> {
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => {
                w.write_all(&b[start..i])?;
                write!(w, "\\u{c:04x}")?;
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        w.write_all(&b[start..i])?;
        w.write_all(esc)?;
        start = i + 1;
    }
    w.write_all(&b[start..])
}

/// `s` as a quoted JSON string.
pub fn json_quoted(s: &str) -> String {
    let mut v = Vec::with_capacity(s.len() + 2);
    v.push(b'"');
    // Writing to a Vec cannot fail.
    let _ = json_str(&mut v, s);
    v.push(b'"');
    String::from_utf8(v).unwrap_or_default()
}

/// `n` and its noun, singular for one: `1 record`, `2 records`.
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_of_one_is_singular() {
        assert_eq!(count(1u64, "record", "records"), "1 record");
        assert_eq!(count(0u64, "record", "records"), "0 records");
        assert_eq!(count(2u64, "long line", "long lines"), "2 long lines");
    }

    #[test]
    fn esc_makes_newlines_escapes_and_bad_bytes_visible() {
        let s = Esc(b"a\nb\x1b[31mred\xff\\").to_string();
        assert_eq!(s, "a\\nb\\u{1b}[31mred\\xff\\\\");
        assert!(!s.contains('\n'));
    }

    #[test]
    fn a_regex_is_shown_as_the_same_pattern_on_one_line() {
        let src = "^\\d{4}-\\d\\d [\t]\u{1b}\\\\x";
        let shown = EscRegex(src).to_string();
        assert_eq!(shown, "^\\d{4}-\\d\\d [\\t]\\u{1b}\\\\x");
        let (a, b) = (
            regex::Regex::new(src).unwrap(),
            regex::Regex::new(&shown).unwrap(),
        );
        assert!(a.is_match("2024-01 \t\u{1b}\\x"));
        for s in ["2024-01 \t\u{1b}\\x", "2024-01  \u{1b}\\x", "x"] {
            assert_eq!(a.is_match(s), b.is_match(s), "{s:?}");
        }
    }

    #[test]
    fn esc_keeps_ordinary_unicode() {
        assert_eq!(
            Esc::str("/var/log/日志.log").to_string(),
            "/var/log/日志.log"
        );
        assert_eq!(Esc::str("a\u{202e}b").to_string(), "a\\u{202e}b");
    }

    #[test]
    fn json_escapes_quotes_and_controls() {
        assert_eq!(
            json_quoted("a\"b\\c\n\x01\x7f"),
            r#""a\"b\\c\n\u0001\u007f""#
        );
    }
}
