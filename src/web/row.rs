//! Records as the page receives them: one compact JSON object per record, every byte string made
//! displayable (valid UTF-8 kept, every other byte as `\xNN`), long values cut, and the filter that
//! picks which records a view receives.

use std::io::Write;

use crate::escape::json_str;
use crate::wire::records::Record;

/// The longest key, value or header shown in the page; the rest is counted, not sent.
pub const MAX_SHOWN: usize = 16 * 1024;

/// What a view wants: some partitions, records matching a pattern.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only these partitions (all when empty).
    pub partitions: Vec<i32>,
    /// Only records whose key or value matches (a literal text, or a regex).
    pub pattern: Option<regex::bytes::Regex>,
}

impl Filter {
    /// The filter from `p=0,3`, `q=TEXT` and `re=1` (q is then a regular expression).
    pub fn parse(p: Option<&str>, q: Option<&str>, re: bool) -> Result<Filter, String> {
        let mut f = Filter::default();
        if let Some(p) = p.filter(|p| !p.is_empty()) {
            for s in p.split(',') {
                let n: i32 = s
                    .trim()
                    .parse()
                    .map_err(|_| format!("partition '{s}' is not a number"))?;
                f.partitions.push(n);
            }
        }
        if let Some(q) = q.filter(|q| !q.is_empty()) {
            let src = if re { q.to_string() } else { regex::escape(q) };
            let r = regex::bytes::RegexBuilder::new(&src)
                .size_limit(1 << 20)
                .dfa_size_limit(1 << 20)
                .build()
                .map_err(|e| format!("bad regular expression: {e}"))?;
            f.pattern = Some(r);
        }
        Ok(f)
    }

    /// Whether the view wants this partition at all.
    pub fn wants_partition(&self, p: i32) -> bool {
        self.partitions.is_empty() || self.partitions.contains(&p)
    }

    /// Whether the view wants this record.
    pub fn wants(&self, r: &Record<'_>) -> bool {
        match &self.pattern {
            None => true,
            Some(re) => {
                r.value.is_some_and(|v| re.is_match(v)) || r.key.is_some_and(|k| re.is_match(k))
            }
        }
    }
}

/// Writes `b` as a JSON string for display, cut at [`MAX_SHOWN`] with the number of bytes left out:
/// valid UTF-8 as is; otherwise every byte that is not UTF-8 as `\xNN` and a backslash as `\\`, so
/// that the text `\xff` and the byte 0xFF differ. Returns whether `b` was not UTF-8 (the row says so).
fn shown<W: Write>(w: &mut W, b: &[u8]) -> std::io::Result<bool> {
    // The whole value decides (a byte past the cut that is not UTF-8 makes it bytes too, t26), and
    // text is cut between characters, so that the count of what is left out is exact.
    let (text, cut) = match std::str::from_utf8(b) {
        Ok(s) => {
            let mut cut = b.len().min(MAX_SHOWN);
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            (true, cut)
        }
        Err(_) => (false, b.len().min(MAX_SHOWN)),
    };
    let mut s = String::with_capacity(cut + 16);
    for chunk in b[..cut].utf8_chunks() {
        if text {
            s.push_str(chunk.valid());
            continue;
        }
        for c in chunk.valid().chars() {
            if c == '\\' {
                s.push('\\');
            }
            s.push(c);
        }
        for byte in chunk.invalid() {
            s.push_str(&format!("\\x{byte:02x}"));
        }
    }
    if cut < b.len() {
        s.push_str(&format!(" \u{2026} ({} more bytes)", b.len() - cut));
    }
    w.write_all(b"\"")?;
    json_str(w, &s)?;
    w.write_all(b"\"")?;
    Ok(!text)
}

fn shown_opt<W: Write>(w: &mut W, b: Option<&[u8]>) -> std::io::Result<bool> {
    match b {
        None => w.write_all(b"null").map(|_| false),
        Some(b) => shown(w, b),
    }
}

/// Writes one record for the page: `{"p":..,"o":..,"ts":..,"k":..,"v":..,"h":[[k,v],..]}`, with
/// `"b":N` when some of it is not UTF-8 (see [`shown`]): 1 the key, 2 the value, 4 a header (each
/// such header is `[k,v,N]`, 1 its key, 2 its value).
pub fn write_row<W: Write>(w: &mut W, partition: i32, r: &Record<'_>) -> std::io::Result<()> {
    write!(
        w,
        "{{\"p\":{partition},\"o\":{},\"ts\":{},\"k\":",
        r.offset, r.timestamp
    )?;
    let mut bytes = u8::from(shown_opt(w, r.key)?);
    w.write_all(b",\"v\":")?;
    bytes |= u8::from(shown_opt(w, r.value)?) << 1;
    w.write_all(b",\"h\":[")?;
    for (i, (k, v)) in r.headers().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        w.write_all(b"[")?;
        let mut h = u8::from(shown(w, k)?);
        w.write_all(b",")?;
        h |= u8::from(shown_opt(w, v)?) << 1;
        if h != 0 {
            write!(w, ",{h}")?;
            bytes |= 4;
        }
        w.write_all(b"]")?;
    }
    w.write_all(b"]")?;
    if bytes != 0 {
        write!(w, ",\"b\":{bytes}")?;
    }
    w.write_all(b"}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec<'a>(key: Option<&'a [u8]>, value: Option<&'a [u8]>) -> Record<'a> {
        Record {
            offset: 7,
            timestamp: 1,
            key,
            value,
            header_count: 0,
            headers_raw: &[],
        }
    }

    #[test]
    fn rows_escape_bytes_that_are_not_utf8_and_cut_long_values() {
        let mut out = Vec::new();
        write_row(&mut out, 2, &rec(None, Some(b"ok \xff\xfe <script>\"\n"))).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            "{\"p\":2,\"o\":7,\"ts\":1,\"k\":null,\"v\":\"ok \\\\xff\\\\xfe <script>\\\"\\n\",\"h\":[],\"b\":2}"
        );
        // t25 F5: the text `\xff` and the byte 0xFF read differently; text stays as it is.
        let row = |k: Option<&[u8]>, v: &[u8]| {
            let mut out = Vec::new();
            write_row(&mut out, 0, &rec(k, Some(v))).unwrap();
            String::from_utf8(out).unwrap()
        };
        let text = row(None, b"a \\xff b");
        assert!(text.ends_with("\"v\":\"a \\\\xff b\",\"h\":[]}"), "{text}");
        let bytes = row(Some(b"k\xfe"), b"a \\xff \xff b");
        assert!(
            bytes.contains("\"k\":\"k\\\\xfe\"")
                && bytes.contains("\"v\":\"a \\\\\\\\xff \\\\xff b\"")
                && bytes.ends_with(",\"b\":3}"),
            "{bytes}"
        );
        // A value cut inside a character is still text, cut before it, the rest counted exactly.
        let mut long = vec![b'a'; MAX_SHOWN - 1];
        long.extend_from_slice("\u{e9}\\".as_bytes());
        let cut = row(None, &long);
        assert!(
            !cut.contains("\"b\"") && cut.contains("(3 more bytes)"),
            "{cut}"
        );
        // A byte that is not UTF-8 past the cut makes the value bytes all the same.
        let mut late = vec![b'a'; MAX_SHOWN + 5];
        late.push(0xff);
        let late = row(None, &late);
        assert!(
            late.ends_with(",\"b\":2}") && late.contains("(6 more bytes)"),
            "{late}"
        );
        let big = vec![b'a'; MAX_SHOWN + 10];
        let mut out = Vec::new();
        write_row(&mut out, 0, &rec(Some(b"k"), Some(&big))).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("(10 more bytes)"));
    }

    #[test]
    fn filters_match_text_literally_or_as_a_regex() {
        let lit = Filter::parse(Some("0,2"), Some("a.c"), false).unwrap();
        assert!(lit.wants(&rec(None, Some(b"xa.cx"))));
        assert!(!lit.wants(&rec(None, Some(b"abc"))));
        assert!(lit.wants_partition(2) && !lit.wants_partition(1));
        let re = Filter::parse(None, Some("^ERR|a.c"), true).unwrap();
        assert!(re.wants(&rec(Some(b"abc"), Some(b"x"))));
        assert!(re.wants(&rec(None, Some(b"ERROR 1"))));
        assert!(!re.wants(&rec(None, None)));
        assert!(Filter::parse(None, Some("("), true).is_err());
        assert!(Filter::parse(Some("x"), None, false).is_err());
        // A byte that is not UTF-8, as the README tells.
        let bytes = Filter::parse(None, Some(r"(?-u:\xff)"), true).unwrap();
        assert!(bytes.wants(&rec(None, Some(b"a\xffb"))));
        assert!(!bytes.wants(&rec(None, Some("ÿ".as_bytes()))));
    }
}
