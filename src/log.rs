//! Minimal leveled logging to stderr: `-q` shows errors only, `-v` adds debug lines.
//!
//! A log shipper's own log should be one line per event, prefixed with the program name, so it can be
//! read in a journal next to other services.

use std::fmt::Arguments;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

static LEVEL: AtomicU8 = AtomicU8::new(2);
static CONFIG_KEYS: AtomicBool = AtomicBool::new(false);

/// The tail flags a config file sets with a key of its own, and that key.
const FLAG_KEYS: &[(&str, &str)] = &[
    ("--acks", "acks"),
    ("--batch-bytes", "batch_bytes"),
    ("--buffer-bytes", "buffer_bytes"),
    ("--checkpoint", "checkpoint"),
    ("--checkpoint-ms", "checkpoint_ms"),
    ("--compression", "compression"),
    ("--dead-letter", "dead_letter"),
    ("--exactly-once", "exactly_once"),
    ("--follow-symlinks", "follow_symlinks"),
    ("--from-end", "from_end"),
    ("--linger-ms", "linger_ms"),
    ("--max-in-flight", "max_in_flight"),
    ("--max-line-bytes", "max_line_bytes"),
    ("--max-message-bytes", "max_message_bytes"),
    ("--owner", "owners"),
    ("--partitioner", "partitioner"),
    ("--scan-ms", "scan_ms"),
    ("--shutdown-timeout-ms", "shutdown_timeout_ms"),
    ("--stats", "stats"),
    ("--symlink-root", "symlink_roots"),
];

/// Sets the level: 0 errors only, 1 warnings, 2 info (default), 3 debug.
pub fn set_level(level: u8) {
    LEVEL.store(level, Ordering::Relaxed);
}

fn enabled(level: u8) -> bool {
    LEVEL.load(Ordering::Relaxed) >= level
}

/// From now on, messages name the config file's keys (`max_line_bytes`) where they would name a tail
/// flag (`--max-line-bytes`): the agent runs from a file, where those flags are refused.
pub fn speak_config_keys() {
    CONFIG_KEYS.store(true, Ordering::Relaxed);
}

/// `text` with each whole tail flag of [`FLAG_KEYS`] replaced by its config key.
pub fn in_config_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("--") {
        out.push_str(&rest[..at]);
        let flag_len = rest[at + 2..]
            .find(|c: char| !(c.is_ascii_lowercase() || c == '-'))
            .map_or(rest.len() - at, |n| n + 2);
        let flag = &rest[at..at + flag_len];
        // A flag starts a word: `a--b` is not one.
        let starts_word = out
            .chars()
            .last()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-'));
        match FLAG_KEYS.iter().find(|(f, _)| *f == flag) {
            Some((_, key)) if starts_word => out.push_str(key),
            _ => out.push_str(flag),
        }
        rest = &rest[at + flag_len..];
    }
    out.push_str(rest);
    out
}

/// Writes one line to stderr. A failed write is ignored: stderr may be a pipe whose reader is gone (a
/// `| logger` restarted, a closed terminal), and the agent must go on shipping, not abort as
/// `eprintln!` does.
pub fn line(prefix: &str, args: Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = match CONFIG_KEYS.load(Ordering::Relaxed) {
        true => writeln!(
            err,
            "shipper: {prefix}{}",
            in_config_keys(&args.to_string())
        ),
        false => writeln!(err, "shipper: {prefix}{args}"),
    };
}

/// An error line (always shown).
pub fn error(args: Arguments<'_>) {
    line("error: ", args);
}

/// A warning line.
pub fn warn(args: Arguments<'_>) {
    if enabled(1) {
        line("warning: ", args);
    }
}

/// An informational line.
pub fn info(args: Arguments<'_>) {
    if enabled(2) {
        line("", args);
    }
}

/// A debug line, shown with -v.
pub fn debug(args: Arguments<'_>) {
    if enabled(3) {
        line("debug: ", args);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_flags_become_config_keys_and_nothing_else_changes() {
        assert_eq!(
            in_config_keys(
                "a.log: 1 long line cut to fit (--max-line-bytes 100, or the largest record --max-message-bytes allows)"
            ),
            "a.log: 1 long line cut to fit (max_line_bytes 100, or the largest record max_message_bytes allows)"
        );
        // Whole flags only: a longer flag, one not in the file, a path or word with `--` inside.
        for same in [
            "--checkpoints",
            "--config",
            "--timeout 5",
            "/var/log/a--checkpoint.log",
            "x --max-line-bytesx",
            "--",
            "ends with --",
            "--Checkpoint",
        ] {
            assert_eq!(in_config_keys(same), same);
        }
        assert_eq!(
            in_config_keys("--checkpoint-ms and --checkpoint, --owner."),
            "checkpoint_ms and checkpoint, owners."
        );
        assert_eq!(in_config_keys("é --from-end é"), "é from_end é");
    }
}
