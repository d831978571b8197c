//! The `shipper` binary: parse flags, run the command on a current-thread runtime (a CLI that moves
//! bytes between one input and the network gains nothing from a thread pool), map errors to exit codes.
//!
//! Exit codes: 0 success (also when stdout is closed early, `shipper consume t | head`); 1 a failure
//! the error line explains (a broker, a topic, a file, records not written); 2 a usage error (a bad
//! flag or value, from clap or from settings resolution).

use shipper::cli::{Cli, Command};
use shipper::cmd;

/// One malloc arena: shipper does its work on one thread, and glibc's per-thread arenas (the stdin
/// reader, the checkpoint writer) only multiply memory held (measured: tail's peak RssAnon 17 -> 10 MiB).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only adjusts glibc's allocator settings; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

/// A file-size limit (`ulimit -f`, systemd's `LimitFSIZE=`) reached by a write makes it fail with
/// EFBIG, which the writer reports (a checkpoint that cannot be written is said and retried), instead
/// of killing the process with SIGXFSZ: a tail killed at its first checkpoint write sent everything
/// again at every restart (t20 F3).
fn ignore_file_size_signal() {
    // SAFETY: setting a signal's disposition to SIG_IGN before any other thread exists; no handler
    // code runs.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// `tail` is a service: a SIGHUP (`systemctl reload`) that comes before its handler is installed
/// must not end it (its default action; t62: one 1 ms after the start, exit 129). Until then it
/// is ignored, which loses nothing: the config is read after this, and the handler, installed
/// before the wait for Kafka, takes every later one. Other commands end on a hangup, as a
/// terminal's programs do: theirs is given back its default once the flags are parsed.
fn hangup(ignored: bool) {
    let action = if ignored {
        libc::SIG_IGN
    } else {
        libc::SIG_DFL
    };
    // SAFETY: setting a signal's disposition to SIG_IGN or SIG_DFL before any other thread exists;
    // no handler code runs.
    unsafe {
        libc::signal(libc::SIGHUP, action);
    }
}

fn main() {
    tune_allocator();
    ignore_file_size_signal();
    hangup(true);
    let cli = Cli::parse_checked();
    if !matches!(cli.command, Command::Tail(_)) {
        hangup(false);
    }
    shipper::log::set_level(if cli.common.quiet {
        0
    } else {
        2 + cli.common.verbose
    });
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            shipper::log::error(format_args!("cannot start the runtime: {e}"));
            std::process::exit(1);
        }
    };
    if matches!(
        cli.command,
        Command::Produce(_) | Command::Consume(_) | Command::Metadata(_) | Command::Groups(_)
    ) {
        shipper::backoff::tell_waits();
    }
    let (prints, reads) = match &cli.command {
        Command::Consume(_) | Command::Metadata(_) | Command::Groups(_) => (true, false),
        Command::Produce(a) => (a.print_offsets, a.file.is_none()),
        _ => (false, false),
    };
    let closed = if prints && shipper::output::std_fd_closed(1) {
        Some("standard output is closed (>&-, or /dev/null opened read-write, as daemon(3) does): nothing could be printed; send it to a file, or >/dev/null to discard")
    } else if reads && shipper::output::std_fd_closed(0) {
        Some("standard input is closed (<&-, or /dev/null opened read-write): give the lines on standard input or with --file")
    } else {
        None
    };
    if let Some(problem) = closed {
        shipper::log::error(format_args!("{problem}"));
        std::process::exit(1);
    }
    let result = rt.block_on(async {
        match &cli.command {
            Command::Produce(a) => cmd::produce::run(&cli.common, a).await,
            Command::Consume(a) => cmd::consume::run(&cli.common, a).await,
            Command::Metadata(a) => cmd::metadata::run(&cli.common, a).await,
            Command::Groups(a) => cmd::groups::run(&cli.common, a).await,
            Command::Web(a) => cmd::web::run(&cli.common, a).await,
            Command::Tail(a) => cmd::tail::run(&cli.common, a).await,
            Command::CheckConfig(a) => cmd::check_config::run(&cli.common, a).await,
        }
    });
    let code = match result {
        Ok(code) => code,
        Err(e) if shipper::error::is_broken_pipe(&e) => 0,
        Err(e) if e.downcast_ref::<shipper::settings::UsageError>().is_some() => {
            shipper::log::error(format_args!("{e:#}"));
            2
        }
        Err(e) => {
            shipper::log::error(format_args!("{e:#}"));
            1
        }
    };
    // Background tasks (socket readers) need not finish: leave without waiting for them.
    rt.shutdown_background();
    std::process::exit(code);
}
