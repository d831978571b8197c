//! Multiline events: a line matching `start` begins an event, the lines after it join it (with `\n`)
//! until the next start line, `max_lines` or `max_bytes` is reached, or the file has been quiet for
//! `timeout`. A Java stack trace under its log line becomes one record. Where the first line of an
//! event has no fixed form but its followers do (indented frames, `Caused by:`), `continue` says
//! which lines join the one before; any other line begins an event.
//!
//! Like single lines, events are never buffered: the file is the buffer. An event that may still grow
//! (its last line is the last complete line read) is left in the file, and read again next time; so
//! the checkpoint only ever moves past whole events, once they are acknowledged. Lines before the first
//! start line of a file form an event of their own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use regex_automata::meta;

/// Most bytes one compiled start pattern may take (regex's own limit is 10 MiB; a few hundred
/// inputs each with a Unicode-heavy pattern such as `^\w{100}`, 5 MiB compiled, took gigabytes).
pub const PATTERN_LIMIT: usize = 1 << 20;

/// Most bytes all the distinct start patterns of one config may take compiled together.
pub const PATTERNS_BUDGET: usize = 64 << 20;

/// Most bytes of lazy-DFA cache one start pattern grows (regex's default is 2 MiB: 1,000 inputs
/// with distinct small patterns over random lines took 820 MB); a pattern that needs more is
/// matched more slowly, never refused.
const CACHE_LIMIT: usize = 64 << 10;

/// A compiled `multiline.start` pattern. Clones share the program and its match cache.
#[derive(Clone)]
pub struct StartPattern(Arc<(meta::Regex, String)>);

impl StartPattern {
    /// Compiles `src` (bytes, not necessarily UTF-8, are matched); the error is one line, starting
    /// `bad regex:`.
    pub fn new(src: &str) -> Result<Self, String> {
        let re = meta::Regex::builder()
            .syntax(regex_automata::util::syntax::Config::new().utf8(false))
            .configure(
                meta::Config::new()
                    .utf8_empty(false)
                    .nfa_size_limit(Some(PATTERN_LIMIT))
                    .hybrid_cache_capacity(CACHE_LIMIT)
                    // Its visited set is up to 256 KiB a pattern; the PikeVM's cache, what is
                    // left when the lazy DFA gives up, grows with the pattern only.
                    .backtrack(false),
            )
            .build(src)
            .map_err(|e| {
                if e.size_limit().is_some() {
                    // The Unicode classes named only when the pattern has one (helper-65: said of
                    // `a{1000}{1000}`).
                    let why = match ["\\w", "\\d", "\\s", "\\b", "\\W", "\\D", "\\S", "\\p"]
                        .iter()
                        .any(|c| src.contains(c))
                    {
                        true => "\\w, \\d and \\s are Unicode classes: (?-u:\\w) or [0-9A-Za-z_] are far smaller",
                        false => "large counted repetitions such as {1000} multiply its size",
                    };
                    return format!(
                        "bad regex: it compiles to more than {} KiB ({why})",
                        PATTERN_LIMIT >> 10
                    );
                }
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    text = s.to_string();
                    source = s.source();
                }
                let last = text.lines().last().unwrap_or("");
                format!("bad regex: {}", last.trim_start_matches("error: "))
            })?;
        Ok(Self(Arc::new((re, src.to_string()))))
    }

    /// Whether `line` matches.
    pub fn is_match(&self, line: &[u8]) -> bool {
        self.0 .0.is_match(line)
    }

    /// The most memory it may take: its program, and its caches once used (the lazy DFA's
    /// [`CACHE_LIMIT`], and the PikeVM's, about the program's size).
    fn cost(&self) -> usize {
        2 * self.0 .0.memory_usage() + CACHE_LIMIT
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0 .1
    }
}

impl std::fmt::Debug for StartPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// The start patterns of one config: identical ones are compiled once, and all of them together
/// may take at most [`PATTERNS_BUDGET`] bytes, compiled and with their caches grown (thousands of inputs each with its own
/// pattern would otherwise take memory without bound).
#[derive(Default)]
pub struct StartPatterns {
    known: HashMap<String, StartPattern>,
    bytes: usize,
}

impl StartPatterns {
    /// The compiled `src`, shared with an identical one compiled before.
    pub fn compile(&mut self, src: &str) -> Result<StartPattern, String> {
        if let Some(p) = self.known.get(src) {
            return Ok(p.clone());
        }
        let p = StartPattern::new(src)?;
        let bytes = self.bytes + p.cost();
        if bytes > PATTERNS_BUDGET {
            return Err(format!(
                "too many multiline patterns: the {} distinct ones before this take up to {} KiB (compiled, with their match caches), and this one would pass the budget of {} MiB: share one pattern between inputs, or simplify them",
                self.known.len(),
                self.bytes >> 10,
                PATTERNS_BUDGET >> 20
            ));
        }
        self.bytes = bytes;
        self.known.insert(src.to_string(), p.clone());
        Ok(p)
    }
}

/// What a line matching the pattern of a [`MultilineConfig`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// It begins an event (`start`): the lines after it that do not match join it.
    Start,
    /// It joins the event before it (`continue`): a line that does not match begins an event.
    Continue,
}

impl Rule {
    /// Its key in a config file's `multiline` table.
    pub fn key(self) -> &'static str {
        match self {
            Rule::Start => "start",
            Rule::Continue => "continue",
        }
    }
}

/// How lines are joined into events.
#[derive(Debug, Clone)]
pub struct MultilineConfig {
    /// The pattern lines are matched against.
    pub pattern: StartPattern,
    /// Whether a matching line begins an event or joins the one before.
    pub rule: Rule,
    /// Most lines in one event; the next line starts another.
    pub max_lines: usize,
    /// Most bytes in one event (without the final newline): the line that would pass it starts the
    /// next event; a single line longer than this is cut.
    pub max_bytes: usize,
    /// Quiet time after which the last event is complete.
    pub timeout: Duration,
}

/// One line of the input: its bytes (without newline), where it starts and ends, and whether it was
/// cut.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// The line.
    pub bytes: &'a [u8],
    /// Offset of its first byte: after the line before it, or after the skipped rest of a long one.
    pub start: usize,
    /// Offset just after its newline.
    pub end: usize,
    /// Whether it was longer than the line limit and cut.
    pub truncated: bool,
}

/// One complete event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The lines joined with `\n`.
    pub value: Vec<u8>,
    /// Offset just after its last line.
    pub end: usize,
    /// How many lines it has.
    pub lines: usize,
    /// Whether a line in it was cut, or the event itself at `max_bytes`.
    pub truncated: bool,
}

impl MultilineConfig {
    /// Groups complete lines into events. With `last`, the final event is complete too (the file has
    /// been quiet long enough, or is finished). Returns the complete events and the offset where the
    /// unfinished event begins (`None`: every line is in an event).
    pub fn group(&self, lines: &[Line<'_>], last: bool) -> (Vec<Event>, Option<usize>) {
        let mut events = Vec::new();
        let mut cur: Option<(Event, usize)> = None; // the event and the offset where it begins
        for l in lines {
            let starts = match self.rule {
                Rule::Start => self.pattern.is_match(l.bytes),
                Rule::Continue => !self.pattern.is_match(l.bytes),
            };
            // A line that would take the event past max_bytes starts the next one (a line longer
            // than max_bytes on its own is cut).
            let full = cur.as_ref().is_some_and(|(e, _)| {
                e.lines >= self.max_lines || e.value.len() + 1 + l.bytes.len() > self.max_bytes
            });
            if starts || full {
                if let Some((e, _)) = cur.take() {
                    events.push(e);
                }
            }
            let (e, _) = cur.get_or_insert_with(|| {
                (
                    Event {
                        value: Vec::new(),
                        end: l.start,
                        lines: 0,
                        truncated: false,
                    },
                    l.start,
                )
            });
            if e.lines > 0 {
                e.value.push(b'\n');
            }
            let room = self.max_bytes.saturating_sub(e.value.len());
            e.value
                .extend_from_slice(&l.bytes[..l.bytes.len().min(room)]);
            e.truncated |= l.truncated || l.bytes.len() > room;
            e.lines += 1;
            e.end = l.end;
            // A cut fills the event (`max_bytes` is at most the line limit): it is complete now.
            // Left to wait for the next line, it waited for ever when the cut line's rest ran past
            // the region read (t36 F5: a 2 MB line stalled its file, nothing after it shipped).
            if e.truncated {
                if let Some((e, _)) = cur.take() {
                    events.push(e);
                }
            }
        }
        match cur {
            Some((e, _)) if last => {
                events.push(e);
                (events, None)
            }
            Some((_, begins)) => (events, Some(begins)),
            None => (events, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_start_patterns_are_compiled_once_and_all_of_them_are_budgeted() {
        let mut ps = StartPatterns::default();
        let a = ps.compile(r"^\d{4}-\d{2}-\d{2} \w+").unwrap();
        let b = ps.compile(r"^\d{4}-\d{2}-\d{2} \w+").unwrap();
        assert!(Arc::ptr_eq(&a.0, &b.0), "shared");
        assert_eq!(ps.known.len(), 1);
        assert!(a.is_match(b"2024-01-02 main started") && !a.is_match(b"  at x.y(Z.java:1)"));
        // Bytes that are not UTF-8 are matched, not refused.
        assert!(ps.compile(r"^(?-u:\xff)").unwrap().is_match(b"\xff\xfe"));
        let mut i = 0;
        let e = loop {
            match ps.compile(&format!(r"^\d{{4}}-\d{{2}}-\d{{2}} \w+ {i}")) {
                Ok(_) => i += 1,
                Err(e) => break e,
            }
        };
        assert!(e.starts_with("too many multiline patterns"), "{e}");
        assert!(ps.bytes <= PATTERNS_BUDGET && i > 100, "{i} {}", ps.bytes);
    }

    #[test]
    fn a_start_pattern_too_big_or_malformed_is_refused_in_one_line() {
        let e = StartPattern::new(r"^\w{100}").unwrap_err();
        assert!(
            e.starts_with("bad regex: it compiles to more than 1024 KiB"),
            "{e}"
        );
        assert!(e.contains("Unicode classes"), "{e}");
        assert!(StartPattern::new(r"^(?-u:\w){100}").is_ok());
        let e = StartPattern::new("a{1000}{1000}").unwrap_err();
        assert!(
            e.contains("counted repetitions") && !e.contains("Unicode"),
            "{e}"
        );
        let e = StartPattern::new("^(ab").unwrap_err();
        assert_eq!(e, "bad regex: unclosed group");
    }

    fn cfg(max_lines: usize, max_bytes: usize) -> MultilineConfig {
        MultilineConfig {
            pattern: StartPattern::new(r"^\d{4}-\d{2}-\d{2}").unwrap(),
            rule: Rule::Start,
            max_lines,
            max_bytes,
            timeout: Duration::from_secs(1),
        }
    }

    fn lines(text: &[u8]) -> Vec<Line<'_>> {
        let mut out = Vec::new();
        let mut pos = 0;
        for l in text.split_inclusive(|&b| b == b'\n') {
            let start = pos;
            pos += l.len();
            out.push(Line {
                bytes: l.strip_suffix(b"\n").unwrap_or(l),
                start,
                end: pos,
                truncated: false,
            });
        }
        out
    }

    const TRACE: &[u8] = b"2026-11-27 ERROR boom\njava.lang.IllegalStateException: x\n\tat a.B.c(B.java:1)\n\tat a.B.d(B.java:2)\n2026-11-27 INFO next\n";

    #[test]
    fn a_stack_trace_joins_its_log_line_and_the_last_event_waits() {
        let ls = lines(TRACE);
        let (events, pending) = cfg(500, 1 << 20).group(&ls, false);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].lines, 4);
        assert!(events[0]
            .value
            .starts_with(b"2026-11-27 ERROR boom\njava.lang"));
        assert!(events[0].value.ends_with(b"(B.java:2)"));
        assert_eq!(
            pending,
            Some(events[0].end),
            "the last event may still grow"
        );
        let (events, pending) = cfg(500, 1 << 20).group(&ls, true);
        assert_eq!((events.len(), pending), (2, None));
        assert_eq!(events[1].value, b"2026-11-27 INFO next");
    }

    #[test]
    fn max_lines_and_max_bytes_cut_an_event() {
        let ls = lines(TRACE);
        let (events, _) = cfg(2, 1 << 20).group(&ls, true);
        assert_eq!(
            events.iter().map(|e| e.lines).collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
        let (events, _) = cfg(500, 30).group(&ls, true);
        assert!(events.iter().all(|e| e.value.len() <= 30));
        // Lines that do not fit start the next event; only the one line over 30 bytes is cut.
        let cut: Vec<bool> = events.iter().map(|e| e.truncated).collect();
        assert_eq!(cut, vec![false, true, false, false, false]);
        assert_eq!(events[2].value, b"\tat a.B.c(B.java:1)");
    }

    /// An event with a cut line is complete at once: nothing more fits in it.
    #[test]
    fn an_event_with_a_cut_line_is_complete_at_once() {
        let ls = [
            Line {
                bytes: b"2026-11-27 start",
                start: 0,
                end: 17,
                truncated: false,
            },
            Line {
                bytes: &[b'y'; 30],
                start: 17,
                end: 47,
                truncated: true,
            },
        ];
        let (events, pending) = cfg(500, 30).group(&ls, false);
        assert_eq!(pending, None);
        assert_eq!(events.len(), 2);
        assert!(events[1].truncated);
        assert_eq!(events[1].end, 47);
        // Cut by the event's room, not the line limit: the same.
        let (events, pending) = cfg(500, 10).group(&ls[..1], false);
        assert_eq!((events.len(), pending), (1, None));
        assert_eq!(events[0].value, b"2026-11-27");
    }

    /// An event waiting for more begins at its first line, not before the skipped rest of a long
    /// line that came first (read again from there, that rest was shipped as a line of its own).
    #[test]
    fn a_waiting_event_begins_at_its_first_line_after_a_skipped_rest() {
        let ls = [Line {
            bytes: b"2026-11-27 next",
            start: 40,
            end: 56,
            truncated: false,
        }];
        let (events, pending) = cfg(500, 1 << 20).group(&ls, false);
        assert!(events.is_empty());
        assert_eq!(pending, Some(40));
    }

    #[test]
    fn lines_before_the_first_start_are_an_event_of_their_own() {
        let ls = lines(b"orphan 1\norphan 2\n2026-11-27 first\n");
        let (events, pending) = cfg(500, 1 << 20).group(&ls, false);
        assert_eq!(events[0].value, b"orphan 1\norphan 2");
        assert_eq!(pending, Some(18));
    }

    /// `continue`: lines matching it join the line before, whatever that line looks like (a
    /// Python traceback's first line has no date); a line that does not match begins an event.
    #[test]
    fn continuation_lines_join_the_line_before_them() {
        let c = MultilineConfig {
            pattern: StartPattern::new(r"^[ \t]|^Caused by:").unwrap(),
            rule: Rule::Continue,
            max_lines: 500,
            max_bytes: 1 << 20,
            timeout: Duration::from_secs(1),
        };
        let text = b"Traceback (most recent call last):\n  File \"a.py\", line 1\n    boom()\nplain line\nERROR x\n\tat a.B(B.java:1)\nCaused by: y\n\tat c.D(D.java:2)\nlast\n";
        let ls = lines(text);
        let (events, pending) = c.group(&ls, false);
        let values: Vec<&[u8]> = events.iter().map(|e| &e.value[..]).collect();
        assert_eq!(
            values,
            vec![
                &b"Traceback (most recent call last):\n  File \"a.py\", line 1\n    boom()"[..],
                b"plain line",
                b"ERROR x\n\tat a.B(B.java:1)\nCaused by: y\n\tat c.D(D.java:2)",
            ]
        );
        assert_eq!(events[2].lines, 4);
        // "last" may still be followed by continuation lines: it waits.
        assert_eq!(pending, Some(text.len() - 5));
        // A continuation line first in a file is an event of its own, as lines before the first
        // start line are.
        let (events, _) = c.group(&lines(b"  orphan\nhead\n  tail\n"), true);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].value, b"  orphan");
        assert_eq!(events[1].value, b"head\n  tail");
        // max_lines still cuts: the next continuation line begins the next event.
        let short = MultilineConfig { max_lines: 2, ..c };
        let (events, _) = short.group(&lines(b"head\n  a\n  b\n  c\n"), true);
        assert_eq!(
            events.iter().map(|e| e.lines).collect::<Vec<_>>(),
            vec![2, 2]
        );
    }
}
