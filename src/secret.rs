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

/// Replaces `secret` with `***` in the argument `arg` of this process's command line (what `ps` and
/// `/proc/PID/cmdline` show: the argument as given, or an option ending in it, `-Xsasl.password=...`
/// or `--token=...`), the rest moved up and the end filled with NUL bytes (so not even its length
/// shows where it was), so that a password given as `-X sasl.password=...` does not stay visible to
/// other users for the life of the process. Only there: masking it in every argument would tell it
/// by elimination (`--client-id app-prod` shown as `app-***`). Best effort: needs `/proc`.
pub fn hide_in_process_title(arg: &str, secret: &str) {
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
        let masked = mask(area, arg.as_bytes(), secret.as_bytes());
        area.copy_from_slice(&masked);
    }
}

/// `area` (NUL-separated arguments) with `needle` replaced by `***` (a shorter needle: by as many
/// `*`) in the arguments that are `arg`, or an option ending in it; NUL-padded to the same length.
fn mask(area: &[u8], arg: &[u8], needle: &[u8]) -> Vec<u8> {
    let stars = &b"***"[..needle.len().min(3)];
    let mut out = Vec::with_capacity(area.len());
    for (i, elem) in area.split(|&b| b == 0).enumerate() {
        if i > 0 {
            out.push(0);
        }
        let holds = elem == arg || (elem.starts_with(b"-") && elem.ends_with(arg));
        if !holds || needle.is_empty() {
            out.extend_from_slice(elem);
            continue;
        }
        let mut j = 0;
        while j < elem.len() {
            if elem[j..].starts_with(needle) {
                out.extend_from_slice(stars);
                j += needle.len();
            } else {
                out.push(elem[j]);
                j += 1;
            }
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
        let want = b"shipper\0-X\0sasl.password=***\0tail\0hunter2x\0\0\0\0\0";
        assert_eq!(mask(area, b"sasl.password=hunter2", b"hunter2"), want);
        assert_eq!(mask(b"a=pw\0", b"a=pw", b"pw"), b"a=**\0");
        // Glued to its option, or given alone after it.
        assert_eq!(
            mask(b"-Xsasl.password=pw\0", b"sasl.password=pw", b"pw"),
            b"-Xsasl.password=**\0"
        );
        assert_eq!(
            mask(b"web\0--token\0t0k\0--token=t0k\0", b"t0k", b"t0k"),
            b"web\0--token\0***\0--token=***\0"
        );
    }

    #[test]
    fn other_arguments_holding_the_secret_are_left_as_they_are() {
        // Masked there too, they would tell the secret by elimination.
        let area = b"-X\0sasl.password=prod\0--client-id\0app-prod\0consume\0prod-logs\0";
        let want = b"-X\0sasl.password=***\0--client-id\0app-prod\0consume\0prod-logs\0\0";
        assert_eq!(mask(area, b"sasl.password=prod", b"prod"), want);
    }
}
