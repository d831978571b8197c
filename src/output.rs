//! How consumed records are printed: raw values, kcat-style format strings, or JSON lines that keep
//! non-UTF-8 bytes losslessly (base64 with an explicit `*_encoding` marker).

use std::io::{self, Write};

use crate::cluster::Metadata;
use crate::escape::{json_quoted, json_str, Esc};
use crate::wire::records::Record;

pub mod behind;
mod groups;
pub use groups::{write_describe_json, write_describe_text, write_list_json, write_list_text};

/// Standard output, whose write errors say they are standard output's ("cannot write to standard
/// output: No space left on device"), keeping their kind (a closed pipe is still told apart).
pub struct Stdout(io::StdoutLock<'static>);

/// Standard output, locked for this thread (see [`Stdout`]).
pub fn stdout() -> Stdout {
    Stdout(io::stdout().lock())
}

/// Whether standard descriptor `fd` (0, 1 or 2) was closed when shipper started (`>&-`, `<&-`).
/// Rust's runtime opens `/dev/null` read-write on a closed standard descriptor before `main`, so
/// every write would vanish without an error (a `consume -G` would commit records nobody received)
/// and a read would find an empty input. A shell's `>/dev/null` or `</dev/null` opens it one way
/// only, which stays a deliberate way to discard or to give nothing.
pub fn std_fd_closed(fd: i32) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    // Where either cannot be looked at (no /proc), nothing is said.
    let (Ok(null), Ok(it)) = (
        std::fs::metadata("/dev/null"),
        std::fs::metadata(format!("/proc/self/fd/{fd}")),
    ) else {
        return false;
    };
    // SAFETY: F_GETFL only reads the descriptor's status flags; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    it.file_type().is_char_device()
        && it.rdev() == null.rdev()
        && flags >= 0
        && flags & libc::O_ACCMODE == libc::O_RDWR
}

/// Whether descriptor `fd` is a pipe or socket whose reader went away: poll says an error or a
/// hang-up on it without a write. A file, a terminal still open, or a pipe still read says neither.
pub fn reader_gone(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: `p` is one valid, initialised pollfd that lives across the call, and the count
    // passed is 1; a timeout of 0 returns at once.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

fn on_stdout(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot write to standard output: {e}"))
}

impl Write for Stdout {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.write(b).map_err(on_stdout)
    }

    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        self.0.write_all(b).map_err(on_stdout)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(on_stdout)
    }
}

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
    /// `%R`: the value size as a 32-bit big-endian integer (-1 for null), for framing binary values.
    ValueSizeBinary,
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
                        Some('R') => Token::ValueSizeBinary,
                        Some('T') => Token::Timestamp,
                        Some('h') => Token::Headers,
                        Some('%') => {
                            lit.push(b'%');
                            continue;
                        }
                        other => {
                            return Err(format!(
                            "unknown format token '%{}' (known: %t %p %o %k %K %s %S %R %T %h %%)",
                            other.map(String::from).unwrap_or_default()
                        ))
                        }
                    };
                    flush(&mut lit, &mut toks);
                    toks.push(t);
                }
                '\\' => backslash(&mut chars, &mut lit),
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
                        Token::ValueSizeBinary => {
                            let n = r
                                .value
                                .map_or(-1, |v| i32::try_from(v.len()).unwrap_or(i32::MAX));
                            w.write_all(&n.to_be_bytes())?
                        }
                        Token::Timestamp => write!(w, "{}", r.timestamp)?,
                        Token::Headers => {
                            for (i, (k, v)) in r.headers().enumerate() {
                                if i > 0 {
                                    w.write_all(b",")?;
                                }
                                w.write_all(k)?;
                                w.write_all(b"=")?;
                                // A null value, as kcat shows it.
                                w.write_all(v.unwrap_or(b"NULL"))?;
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// Turns kcat's escapes into bytes: `\n \t \r \0 \\` and `\xN`/`\xNN` (one byte in hex). Anything
/// else after a backslash is kept as written, backslash included.
pub fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            backslash(&mut chars, &mut out);
        } else {
            let mut b = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
        }
    }
    out
}

/// One escape, its backslash already taken from `chars`.
fn backslash(chars: &mut std::str::Chars<'_>, out: &mut Vec<u8>) {
    match chars.next() {
        Some('n') => out.push(b'\n'),
        Some('t') => out.push(b'\t'),
        Some('r') => out.push(b'\r'),
        Some('0') => out.push(0),
        Some('\\') => out.push(b'\\'),
        Some('x') => {
            let digits = chars
                .as_str()
                .bytes()
                .take(2)
                .take_while(u8::is_ascii_hexdigit)
                .count();
            match u8::from_str_radix(&chars.as_str()[..digits], 16) {
                Ok(b) => {
                    out.push(b);
                    chars.nth(digits - 1);
                }
                Err(_) => out.extend_from_slice(b"\\x"),
            }
        }
        Some(o) => {
            out.push(b'\\');
            let mut b = [0u8; 4];
            out.extend_from_slice(o.encode_utf8(&mut b).as_bytes());
        }
        None => out.push(b'\\'),
    }
}

/// Writes `"name":value` for bytes: a JSON string if UTF-8, else base64 plus `"name_encoding":"base64"`.
pub fn json_bytes<W: Write>(w: &mut W, name: &str, b: Option<&[u8]>) -> io::Result<()> {
    match b {
        None => write!(w, "\"{name}\":null"),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => {
                write!(w, "\"{name}\":\"")?;
                json_str(w, s)?;
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
    json_str(w, topic)?;
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

fn ids(v: &[i32]) -> String {
    v.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn code_note(code: i16) -> String {
    match crate::error::code(code) {
        None => String::new(),
        Some(c) => format!(" error: {}", crate::error::name(c)),
    }
}

/// Writes cluster metadata as text, like `kcat -L`. Broker-supplied strings are escaped.
pub fn write_metadata_text(out: &mut impl Write, md: &Metadata) -> io::Result<()> {
    writeln!(
        out,
        "Metadata for cluster {}:",
        md.cluster_id
            .as_deref()
            .map_or("(unknown id)".to_string(), |c| Esc::str(c).to_string())
    )?;
    writeln!(out, " {} brokers:", md.brokers.len())?;
    for b in &md.brokers {
        let ctl = if b.id == md.controller {
            " (controller)"
        } else {
            ""
        };
        writeln!(out, "  broker {} at {}{ctl}", b.id, Esc::str(&b.addr()))?;
    }
    writeln!(out, " {} topics:", md.topics.len())?;
    for t in &md.topics {
        writeln!(
            out,
            "  topic \"{}\" with {} partitions:{}",
            Esc::str(&t.name),
            t.partitions.len(),
            code_note(t.error)
        )?;
        for p in &t.partitions {
            writeln!(
                out,
                "    partition {}, leader {}, replicas: {}, isrs: {}{}",
                p.id,
                p.leader,
                ids(&p.replicas),
                ids(&p.isr),
                code_note(p.error)
            )?;
        }
    }
    Ok(())
}

/// Writes cluster metadata as one JSON object.
pub fn write_metadata_json(out: &mut impl Write, md: &Metadata) -> io::Result<()> {
    let brokers: Vec<String> = md
        .brokers
        .iter()
        .map(|b| {
            format!(
                "{{\"id\":{},\"host\":{},\"port\":{}}}",
                b.id,
                json_quoted(&b.host),
                b.port
            )
        })
        .collect();
    let topics: Vec<String> = md
        .topics
        .iter()
        .map(|t| {
            let parts: Vec<String> = t
                .partitions
                .iter()
                .map(|p| {
                    format!(
                        "{{\"partition\":{},\"leader\":{},\"replicas\":[{}],\"isrs\":[{}],\"error\":{}}}",
                        p.id,
                        p.leader,
                        ids(&p.replicas),
                        ids(&p.isr),
                        p.error
                    )
                })
                .collect();
            format!(
                "{{\"topic\":{},\"error\":{},\"partitions\":[{}]}}",
                json_quoted(&t.name),
                t.error,
                parts.join(",")
            )
        })
        .collect();
    writeln!(
        out,
        "{{\"cluster_id\":{},\"controller\":{},\"brokers\":[{}],\"topics\":[{}]}}",
        md.cluster_id.as_deref().map_or("null".into(), json_quoted),
        md.controller,
        brokers.join(","),
        topics.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_without_its_reader_is_told_from_one_still_read_and_from_a_file() {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: pipe(2) just opened both; each is owned once, here.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        assert!(!reader_gone(write.as_raw_fd()), "its reader is there");
        drop(read);
        assert!(reader_gone(write.as_raw_fd()), "its reader closed the pipe");
        let file = std::fs::File::create(
            std::env::temp_dir().join(format!("shipper-reader-gone-{}", std::process::id())),
        )
        .unwrap();
        assert!(
            !reader_gone(file.as_raw_fd()),
            "a file has no reader to lose"
        );
    }

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
    fn hex_escapes_are_one_byte_and_others_stay_as_written() {
        let f = Format::parse("\\x41\\x0a|\\xZZ|\\x+4|\\x4|\\x4G|\\x414|\\q|\\é|\\").unwrap();
        let mut out = Vec::new();
        f.write(&mut out, "t", 0, &rec(None, None)).unwrap();
        assert_eq!(
            out,
            "A\n|\\xZZ|\\x+4|\x04|\x04G|\x414|\\q|\\é|\\".as_bytes()
        );
        assert_eq!(unescape("k\\tv\\x3a\\\\"), b"k\tv:\\");
    }

    #[test]
    fn binary_value_size_is_four_bytes_big_endian_and_minus_one_for_null() {
        let f = Format::parse("%R%s").unwrap();
        let mut out = Vec::new();
        f.write(&mut out, "t", 0, &rec(None, Some(b"abc"))).unwrap();
        f.write(&mut out, "t", 0, &rec(None, None)).unwrap();
        assert_eq!(out, b"\0\0\0\x03abc\xff\xff\xff\xff");
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
