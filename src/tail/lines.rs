//! The one line splitter, used by `tail` (over a memory map) and `produce` (over stdin chunks).
//!
//! `\n` ends a line and is not part of it; a `\r` before it is dropped too. A line longer than
//! `max_line_bytes` is cut to that many bytes (the rest, up to its newline, is skipped, also across
//! chunks) and flagged, so callers count it. An incomplete line at the end of a chunk is left for the
//! caller: `tail` reads it again once its newline has arrived (the file is the buffer), `produce` carries
//! it over; with `last`, it is a line of its own (the input has ended). An incomplete line already longer
//! than the limit is not waited for: its head goes out at once and the rest is skipped.

use std::fs::File;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;

/// Where the line that the first `size` bytes of `file` end in begins: `size` when they end with a
/// newline (or are none), else just after the last newline before it, or 0. `None` when no newline is
/// within `limit` bytes before `size` (inside a line longer than the limit) or the file cannot be
/// read. Reads backwards from `size`, 64 KiB at a time.
pub fn line_start_before(file: &File, size: u64, limit: usize) -> Option<u64> {
    let floor = size.saturating_sub(limit as u64);
    let mut buf = vec![0u8; (size - floor).min(64 * 1024) as usize];
    let mut end = size;
    while end > floor {
        let from = end.saturating_sub(buf.len() as u64).max(floor);
        let chunk = &mut buf[..(end - from) as usize];
        file.read_exact_at(chunk, from).ok()?;
        if let Some(i) = memchr::memrchr(b'\n', chunk) {
            return Some(from + i as u64 + 1);
        }
        end = from;
    }
    (floor == 0).then_some(0)
}

/// One piece of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A line (without its `\n` or `\r\n`), cut to the limit if `truncated`. `end` is the offset in the
    /// chunk just after the line's newline (or the end of the chunk).
    Line {
        /// The line's bytes.
        bytes: &'a [u8],
        /// Offset after it.
        end: usize,
        /// Whether it was longer than the limit and cut.
        truncated: bool,
    },
    /// Bytes of an over-long line skipped, up to `end`.
    Skipped {
        /// Offset after them.
        end: usize,
    },
}

impl Piece<'_> {
    /// Offset in the chunk just after this piece.
    pub fn end(&self) -> usize {
        match self {
            Piece::Line { end, .. } | Piece::Skipped { end } => *end,
        }
    }
}

/// Splits chunks of input into lines; remembers, between chunks, whether it is inside an over-long line.
#[derive(Debug, Clone)]
pub struct LineSplitter {
    max_line_bytes: usize,
    skipping: bool,
}

impl LineSplitter {
    /// A splitter cutting lines at `max_line_bytes` (at least 1).
    pub fn new(max_line_bytes: usize) -> Self {
        LineSplitter {
            max_line_bytes: max_line_bytes.max(1),
            skipping: false,
        }
    }

    /// A splitter that continues a previous one which ended inside an over-long line (`skipping`).
    pub fn resume(max_line_bytes: usize, skipping: bool) -> Self {
        LineSplitter {
            max_line_bytes: max_line_bytes.max(1),
            skipping,
        }
    }

    /// The limit.
    pub fn max_line_bytes(&self) -> usize {
        self.max_line_bytes
    }

    /// Whether the last chunk ended inside an over-long line whose rest is being skipped.
    pub fn is_skipping(&self) -> bool {
        self.skipping
    }

    /// Splits `data`, calling `f` for each piece in order until it breaks. Returns the offset after the
    /// last piece handed out: the start of an incomplete line, or where `f` stopped, or `data.len()`.
    /// With `last`, a final line without newline is a line.
    pub fn split<'a>(
        &mut self,
        data: &'a [u8],
        last: bool,
        mut f: impl FnMut(Piece<'a>) -> ControlFlow<()>,
    ) -> usize {
        let mut pos = 0;
        if self.skipping {
            let end = match memchr::memchr(b'\n', data) {
                Some(nl) => {
                    self.skipping = false;
                    nl + 1
                }
                None => data.len(),
            };
            if end > 0 && f(Piece::Skipped { end }).is_break() {
                return end;
            }
            pos = end;
        }
        while pos < data.len() {
            let rest = &data[pos..];
            let (line, end) = match memchr::memchr(b'\n', rest) {
                Some(nl) => (&rest[..nl], pos + nl + 1),
                None if last => (rest, data.len()),
                // (A `\r` at the end may be the first half of a CRLF: not counted, t49.)
                None if rest.strip_suffix(b"\r").unwrap_or(rest).len() > self.max_line_bytes => {
                    // Incomplete but already too long: send its head now, skip the rest to its newline.
                    self.skipping = true;
                    let piece = Piece::Line {
                        bytes: cut(rest, self.max_line_bytes),
                        end: data.len(),
                        truncated: true,
                    };
                    let _ = f(piece);
                    return data.len();
                }
                None => return pos,
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let truncated = line.len() > self.max_line_bytes;
            let bytes = if truncated {
                cut(line, self.max_line_bytes)
            } else {
                line
            };
            let piece = Piece::Line {
                bytes,
                end,
                truncated,
            };
            pos = end;
            if f(piece).is_break() {
                return pos;
            }
        }
        pos
    }
}

/// `line`'s first `max` bytes, or up to 3 fewer so as not to end inside a UTF-8 character: a cut
/// through `€` made valid UTF-8 text invalid, and strict consumers refuse the record (probe E). Only a
/// character that is whole and valid in `line` counts; other bytes are cut where the limit falls.
pub fn cut(line: &[u8], max: usize) -> &[u8] {
    if line.len() <= max {
        return line;
    }
    for back in 1..=3.min(max) {
        let at = max - back;
        let b = line[at];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: its lead is further back
        }
        let len = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return &line[..max],
        };
        let whole = line
            .get(at..at + len)
            .is_some_and(|c| std::str::from_utf8(c).is_ok());
        return if at + len > max && whole {
            &line[..at]
        } else {
            &line[..max]
        };
    }
    &line[..max]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` (carrying incomplete lines over, as produce does) and returns the lines.
    fn lines_of(chunks: &[&[u8]], max: usize) -> Vec<(Vec<u8>, bool)> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        let mut carry: Vec<u8> = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let mut data = std::mem::take(&mut carry);
            data.extend_from_slice(c);
            let used = s.split(&data, last, |p| {
                if let Piece::Line {
                    bytes, truncated, ..
                } = p
                {
                    out.push((bytes.to_vec(), truncated));
                }
                ControlFlow::Continue(())
            });
            carry = data[used..].to_vec();
        }
        out
    }

    fn plain(v: &[(Vec<u8>, bool)]) -> Vec<&[u8]> {
        v.iter().map(|(l, _)| l.as_slice()).collect()
    }

    #[test]
    fn empty_input_has_no_lines() {
        assert!(lines_of(&[b""], 10).is_empty());
    }

    #[test]
    fn a_lone_newline_is_one_empty_line() {
        assert_eq!(plain(&lines_of(&[b"\n"], 10)), vec![b"" as &[u8]]);
    }

    #[test]
    fn crlf_is_stripped() {
        assert_eq!(
            plain(&lines_of(&[b"a\r\nb\r\n"], 10)),
            vec![b"a" as &[u8], b"b"]
        );
    }

    #[test]
    fn a_cut_does_not_end_inside_a_utf8_character() {
        let euro = "€".repeat(10); // 3 bytes each
        assert_eq!(cut(euro.as_bytes(), 8), "€€".as_bytes());
        assert_eq!(cut(euro.as_bytes(), 9), "€€€".as_bytes());
        assert_eq!(cut("a😀".as_bytes(), 4), b"a");
        assert_eq!(cut("aé".as_bytes(), 2), b"a");
        // Not UTF-8 there: cut where the limit falls.
        assert_eq!(cut(b"\xE2\x82zzzz", 2), b"\xE2\x82");
        assert_eq!(cut(b"\xFF\xFF\xFF\xFF", 2), b"\xFF\xFF");
        assert_eq!(cut(b"abc", 1), b"a");
        let got = lines_of(&[format!("{euro}\n").as_bytes()], 8);
        assert_eq!(got, vec![("€€".as_bytes().to_vec(), true)]);
    }

    /// A line of exactly the limit whose CRLF is split between two reads is whole, not cut (t49: its
    /// `\r` counted as a byte over the limit).
    #[test]
    fn a_line_at_the_limit_with_its_crlf_split_is_not_cut() {
        assert_eq!(
            lines_of(&[b"0123456789\r", b"\nab\r\n"], 10),
            vec![(b"0123456789".to_vec(), false), (b"ab".to_vec(), false)]
        );
        assert_eq!(
            lines_of(&[b"0123456789x\r", b"\n"], 10),
            vec![(b"0123456789".to_vec(), true)]
        );
    }

    #[test]
    fn a_final_line_without_newline_is_a_line_only_at_the_end() {
        assert_eq!(plain(&lines_of(&[b"a\nb"], 10)), vec![b"a" as &[u8], b"b"]);
        let mut s = LineSplitter::new(10);
        let mut n = 0;
        let used = s.split(b"a\nb", false, |_| {
            n += 1;
            ControlFlow::Continue(())
        });
        assert_eq!((n, used), (1, 2), "the partial line is left for later");
    }

    #[test]
    fn one_byte_chunks_give_the_same_lines() {
        let input = b"one\r\ntwo\n\nthree\n";
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            plain(&lines_of(&chunks, 100)),
            vec![b"one" as &[u8], b"two", b"", b"three"]
        );
    }

    #[test]
    fn an_over_long_line_is_cut_and_flagged_and_its_rest_skipped_across_chunks() {
        let chunks: [&[u8]; 4] = [b"ok\nabcdef", b"ghij", b"klm\nnext\n", b""];
        let got = lines_of(&chunks, 4);
        assert_eq!(
            got,
            vec![
                (b"ok".to_vec(), false),
                (b"abcd".to_vec(), true),
                (b"next".to_vec(), false)
            ]
        );
    }

    #[test]
    fn a_complete_over_long_line_is_cut_in_place() {
        assert_eq!(
            lines_of(&[b"abcdefgh\nxy\n"], 3),
            vec![(b"abc".to_vec(), true), (b"xy".to_vec(), false)]
        );
    }

    #[test]
    fn capacity_one_still_makes_progress() {
        assert_eq!(
            plain(&lines_of(&[b"ab\nc\n"], 1)),
            vec![b"a" as &[u8], b"c"]
        );
    }

    #[test]
    fn breaking_stops_after_the_piece() {
        let mut s = LineSplitter::new(10);
        let used = s.split(b"a\nb\nc\n", false, |p| {
            if p.end() >= 4 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!(used, 4);
    }

    #[test]
    fn the_line_a_file_ends_in_begins_after_the_last_newline_within_the_limit() {
        let d = crate::testkit::scratch_dir("line-start");
        let case = |data: &[u8], limit: usize| {
            let p = d.join("f");
            std::fs::write(&p, data).unwrap();
            let f = File::open(&p).unwrap();
            line_start_before(&f, data.len() as u64, limit)
        };
        assert_eq!(case(b"", 100), Some(0));
        assert_eq!(case(b"a\nb\n", 100), Some(4), "ends with a newline");
        assert_eq!(case(b"old\nhalf-writ", 100), Some(4));
        assert_eq!(case(b"no newline at all", 100), Some(0));
        assert_eq!(case(b"x\nno newline within the limit", 5), None);
        let mut big = b"first\n".to_vec();
        big.extend(std::iter::repeat_n(b'y', 200_000));
        assert_eq!(case(&big, 1_000_000), Some(6), "across 64 KiB reads");
        assert_eq!(case(&big, 100_000), None);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
