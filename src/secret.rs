//! A secret (a SASL password) that never prints: `Debug` and `Display` show `***`, so it cannot reach
//! a log line, an error message or `-v` output by accident. Only [`Secret::expose`] gives the text, at
//! the one place that sends it.

use std::fmt;

/// A password or key kept out of every printout.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Replaces every occurrence of `secret` in this process's command line (what `ps` and
/// `/proc/PID/cmdline` show) with `***`, the rest moved up and the end filled with NUL bytes (so not
/// even its length shows where it was), so that a password given as `-X sasl.password=...` does not
/// stay visible to other users for the life of the process. Best effort: needs `/proc`.
pub fn hide_in_process_title(secret: &str) {
    if secret.is_empty() {
        return;
    }
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name (which may hold spaces, inside parentheses): arg_start and
    // arg_end are fields 48 and 49 (proc(5)).
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (Some(start), Some(end)) = (
        fields.get(48 - 3).and_then(|s| s.parse::<usize>().ok()),
        fields.get(49 - 3).and_then(|s| s.parse::<usize>().ok()),
    ) else {
        return;
    };
    if start == 0 || end <= start || end - start > 1 << 20 {
        return;
    }
    // SAFETY: [arg_start, arg_end) is this process's own argument area (on its stack, written by the
    // kernel at exec, readable and writable for the life of the process); the standard library
    // copied the arguments out at startup (clap parsed those copies), so nothing reads this memory
    // as Rust data. We only write bytes inside it, and no longer than it is.
    unsafe {
        let area = std::slice::from_raw_parts_mut(start as *mut u8, end - start);
        let masked = mask(area, secret.as_bytes());
        area.copy_from_slice(&masked);
    }
}

/// `area` with every `needle` replaced by `***` (a shorter needle: by as many `*`), NUL-padded to
/// the same length.
fn mask(area: &[u8], needle: &[u8]) -> Vec<u8> {
    let stars = &b"***"[..needle.len().min(3)];
    let mut out = Vec::with_capacity(area.len());
    let mut i = 0;
    while i < area.len() {
        if area[i..].starts_with(needle) {
            out.extend_from_slice(stars);
            i += needle.len();
        } else {
            out.push(area[i]);
            i += 1;
        }
    }
    out.resize(area.len(), 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?} {:?}", Some(&s)), "*** *** Some(***)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn a_masked_secret_leaves_neither_itself_nor_its_length() {
        let area = b"shipper\0-X\0sasl.password=hunter2\0tail\0hunter2x\0";
        let want = b"shipper\0-X\0sasl.password=***\0tail\0***x\0\0\0\0\0\0\0\0\0";
        assert_eq!(mask(area, b"hunter2"), want);
        assert_eq!(mask(b"a=pw\0", b"pw"), b"a=**\0");
    }
}
