//! How consumed records are printed: raw values, kcat-style format strings, or JSON lines that keep
//! non-UTF-8 bytes losslessly (base64 with an explicit `*_encoding` marker).

use std::io::{self, Write};

use crate::wire::records::Record;

/// One piece of a compiled format string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// Bytes printed as they are.
    Literal(Vec<u8>),
    /// `%t`
    Topic,
    /// `%p`
    Partition,
    /// `%o`
    Offset,
    /// `%k`
    Key,
    /// `%K`
    KeySize,
    /// `%s`
    Value,
    /// `%S`
    ValueSize,
    /// `%T`
    Timestamp,
    /// `%h`
    Headers,
}

/// How to print records.
#[derive(Debug, Clone)]
pub enum Format {
    /// The value, then a newline.
    Value,
    /// A kcat-style format.
    Custom(Vec<Token>),
    /// One JSON object per line.
    Json,
}

impl Format {
    /// Compiles a kcat format string (`%t %p %o %k %K %s %S %T %h %%`, `\n \t \\`).
    pub fn parse(fmt: &str) -> Result<Format, String> {
        let mut toks = Vec::new();
        let mut lit = Vec::new();
        let mut chars = fmt.chars();
        let flush = |lit: &mut Vec<u8>, toks: &mut Vec<Token>| {
            if !lit.is_empty() {
                toks.push(Token::Literal(std::mem::take(lit)));
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '%' => {
                    let t = match chars.next() {
                        Some('t') => Token::Topic,
                        Some('p') => Token::Partition,
                        Some('o') => Token::Offset,
                        Some('k') => Token::Key,
                        Some('K') => Token::KeySize,
                        Some('s') => Token::Value,
                        Some('S') => Token::ValueSize,
                        Some('T') => Token::Timestamp,
                        Some('h') => Token::Headers,
                        Some('%') => {
                            lit.push(b'%');
                            continue;
                        }
                        other => {
                            return Err(format!(
                                "unknown format token '%{}' (known: %t %p %o %k %K %s %S %T %h %%)",
                                other.map(String::from).unwrap_or_default()
                            ))
                        }
                    };
                    flush(&mut lit, &mut toks);
                    toks.push(t);
                }
                '\\' => match chars.next() {
                    Some('n') => lit.push(b'\n'),
                    Some('t') => lit.push(b'\t'),
                    Some('r') => lit.push(b'\r'),
                    Some('0') => lit.push(0),
                    Some('\\') => lit.push(b'\\'),
                    Some(o) => {
                        lit.push(b'\\');
                        lit.extend_from_slice(o.to_string().as_bytes());
                    }
                    None => lit.push(b'\\'),
                },
                c => {
                    let mut b = [0u8; 4];
                    lit.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        flush(&mut lit, &mut toks);
        Ok(Format::Custom(toks))
    }

    /// Writes one record.
    pub fn write<W: Write>(
        &self,
        w: &mut W,
        topic: &str,
        partition: i32,
        r: &Record<'_>,
    ) -> io::Result<()> {
        match self {
            Format::Value => {
                w.write_all(r.value.unwrap_or_default())?;
                w.write_all(b"\n")
            }
            Format::Json => write_json(w, topic, partition, r),
            Format::Custom(toks) => {
                for t in toks {
                    match t {
                        Token::Literal(l) => w.write_all(l)?,
                        Token::Topic => w.write_all(topic.as_bytes())?,
                        Token::Partition => write!(w, "{partition}")?,
                        Token::Offset => write!(w, "{}", r.offset)?,
                        Token::Key => w.write_all(r.key.unwrap_or_default())?,
                        Token::KeySize => write!(w, "{}", r.key.map_or(-1, |k| k.len() as i64))?,
                        Token::Value => w.write_all(r.value.unwrap_or_default())?,
                        Token::ValueSize => {
                            write!(w, "{}", r.value.map_or(-1, |v| v.len() as i64))?
                        }
                        Token::Timestamp => write!(w, "{}", r.timestamp)?,
                        Token::Headers => {
                            for (i, (k, v)) in r.headers().enumerate() {
                                if i > 0 {
                                    w.write_all(b",")?;
                                }
                                w.write_all(k)?;
                                w.write_all(b"=")?;
                                w.write_all(v.unwrap_or_default())?;
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// Writes `s` as a JSON string body (without quotes).
fn json_escape<W: Write>(w: &mut W, s: &str) -> io::Result<()> {
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
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

/// Writes `"name":value` for bytes: a JSON string if UTF-8, else base64 plus `"name_encoding":"base64"`.
fn json_bytes<W: Write>(w: &mut W, name: &str, b: Option<&[u8]>) -> io::Result<()> {
    match b {
        None => write!(w, "\"{name}\":null"),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => {
                write!(w, "\"{name}\":\"")?;
                json_escape(w, s)?;
                w.write_all(b"\"")
            }
            Err(_) => {
                write!(w, "\"{name}\":\"")?;
                w.write_all(base64(b).as_bytes())?;
                write!(w, "\",\"{name}_encoding\":\"base64\"")
            }
        },
    }
}

fn write_json<W: Write>(w: &mut W, topic: &str, partition: i32, r: &Record<'_>) -> io::Result<()> {
    w.write_all(b"{\"topic\":\"")?;
    json_escape(w, topic)?;
    write!(
        w,
        "\",\"partition\":{partition},\"offset\":{},\"timestamp\":{},",
        r.offset, r.timestamp
    )?;
    json_bytes(w, "key", r.key)?;
    w.write_all(b",")?;
    json_bytes(w, "value", r.value)?;
    w.write_all(b",\"headers\":[")?;
    for (i, (k, v)) in r.headers().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        w.write_all(b"{")?;
        json_bytes(w, "key", Some(k))?;
        w.write_all(b",")?;
        json_bytes(w, "value", v)?;
        w.write_all(b"}")?;
    }
    w.write_all(b"]}\n")
}

/// Standard base64 with padding.
pub fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        s.push(A[(n >> 18) as usize & 63] as char);
        s.push(A[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec<'a>(key: Option<&'a [u8]>, value: Option<&'a [u8]>) -> Record<'a> {
        Record {
            offset: 7,
            timestamp: 1000,
            key,
            value,
            header_count: 0,
            headers_raw: &[],
        }
    }

    #[test]
    fn kcat_format_tokens_expand() {
        let f = Format::parse("%t/%p/%o %k=%s (%S,%K) %T\\n").unwrap();
        let mut out = Vec::new();
        f.write(&mut out, "t", 2, &rec(Some(b"k"), Some(b"v")))
            .unwrap();
        assert_eq!(out, b"t/2/7 k=v (1,1) 1000\n");
    }

    #[test]
    fn unknown_format_token_is_an_error() {
        assert!(Format::parse("%x").is_err());
    }

    #[test]
    fn json_keeps_binary_values_losslessly() {
        let mut out = Vec::new();
        Format::Json
            .write(&mut out, "t", 0, &rec(None, Some(&[0xff, 0, b'"'])))
            .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("\"key\":null"), "{s}");
        assert!(
            s.contains("\"value\":\"/wAi\",\"value_encoding\":\"base64\""),
            "{s}"
        );
    }

    #[test]
    fn json_escapes_control_characters() {
        let mut out = Vec::new();
        Format::Json
            .write(&mut out, "t", 0, &rec(None, Some(b"a\"b\\c\n\x01")))
            .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains(r#""value":"a\"b\\c\n\u0001""#), "{s}");
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }
}
