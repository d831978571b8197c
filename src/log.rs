//! Minimal leveled logging to stderr: `-q` shows errors only, `-v` adds debug lines.
//!
//! A log shipper's own log should be one line per event, prefixed with the program name, so it can be
//! read in a journal next to other services.

use std::fmt::Arguments;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

static LEVEL: AtomicU8 = AtomicU8::new(2);

/// Sets the level: 0 errors only, 1 warnings, 2 info (default), 3 debug.
pub fn set_level(level: u8) {
    LEVEL.store(level, Ordering::Relaxed);
}

fn enabled(level: u8) -> bool {
    LEVEL.load(Ordering::Relaxed) >= level
}

/// Writes one line to stderr. A failed write is ignored: stderr may be a pipe whose reader is gone (a
/// `| logger` restarted, a closed terminal), and the agent must go on shipping, not abort as
/// `eprintln!` does.
pub fn line(prefix: &str, args: Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "shipper: {prefix}{args}");
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
