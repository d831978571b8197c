//! `shipper check-config FILE`: every mistake in a tail config with its line (exit 2), or the inputs
//! as they resolve and the files each glob matches now.

use std::io::Write;

use crate::cli::{CheckConfigArgs, Common};
use crate::escape::Esc;
use crate::settings::config;
use crate::tail::discover::{self, Pattern};

/// Runs the command; returns the exit code.
pub async fn run(common: &Common, args: &CheckConfigArgs) -> anyhow::Result<i32> {
    let s = config::load(&args.file, common, None)?;
    // The certificate, key and CA are read as the start reads them: a key that is not the
    // certificate's must fail here (ExecStartPre), not at the start.
    if let Some(tls) = &s.kafka.security.tls {
        crate::connection::client_config(tls).map_err(|e| {
            crate::settings::UsageError(format!("{}: TLS: {e}", Esc::path(&args.file)))
        })?;
    }
    // As the start does: a checkpoint path that is a directory, a device or another program's file
    // is a mistake now. One this user may not read (the agent's own, mode 0600) is the agent's to
    // judge at its start.
    let ck = &s.options.checkpoint;
    let mut ck_note = "";
    if let Err(e) = crate::tail::checkpoint::check_path(ck) {
        // Opened only when it is a regular file: opening a FIFO waits for a writer, and a device
        // may act on being opened.
        let denied = |e: &std::io::Error| e.kind() == std::io::ErrorKind::PermissionDenied;
        let unreadable = match std::fs::metadata(ck) {
            Ok(m) => m.is_file() && std::fs::File::open(ck).is_err_and(|e| denied(&e)),
            Err(e) => denied(&e),
        };
        if !unreadable {
            return Err(crate::settings::UsageError(format!(
                "{}: checkpoint {}: {e}",
                Esc::path(&args.file),
                Esc::path(ck)
            ))
            .into());
        }
        ck_note = " (not readable by this user: checked by the agent at its start)";
    }
    // `-q`: errors only, as everywhere: a good file says nothing, and the exit code is the answer.
    let mut out: Box<dyn Write> = match common.quiet {
        true => Box::new(std::io::sink()),
        false => Box::new(crate::output::stdout()),
    };
    writeln!(out, "{}: ok", Esc::path(&args.file))?;
    writeln!(
        out,
        "brokers: {} ({})",
        s.kafka.brokers.join(","),
        s.kafka.security.protocol.kafka_name()
    )?;
    writeln!(out, "checkpoint: {}{ck_note}", Esc::path(ck))?;
    let acks = match s.producer.acks {
        -1 => "all".to_string(),
        n => n.to_string(),
    };
    writeln!(
        out,
        "producer: acks={acks}, {}, compression={}, linger {} ms",
        if s.producer.idempotence && s.producer.acks == -1 {
            "idempotent"
        } else {
            "not idempotent"
        },
        s.producer.compression.name(),
        s.producer.linger.as_millis()
    )?;
    match &s.options.dead_letter {
        Some(d) => writeln!(out, "dead_letter: {}", Esc::path(d))?,
        None => writeln!(
            out,
            "dead_letter: none (a record Kafka refuses for good is counted and said, not kept)"
        )?,
    }
    if let Some(m) = &s.options.metrics_listen {
        // Tried as the start binds it: in use now is what a start would fail on (unless it is the
        // running agent's own, which a restart frees first).
        let busy = match std::net::TcpListener::bind(m.as_str()) {
            Ok(_) => String::new(),
            Err(e) => format!(
                " (cannot listen there now: {e}; a start would fail on it, unless it is this agent's, running)"
            ),
        };
        writeln!(out, "metrics: http://{m}/metrics{busy}")?;
    }
    // As the agent lowers it: a record must fit in --max-message-bytes (t32 F9: a raised
    // max_line_bytes was shown as given).
    let max_line = s
        .engine
        .limits
        .max_line_bytes
        .min(crate::producer::max_value_bytes(
            s.producer.max_message_bytes,
        ));
    let lowered = match max_line < s.engine.limits.max_line_bytes {
        true => format!(
            " (max_line_bytes {} lowered to what max_message_bytes {} lets a record carry)",
            s.engine.limits.max_line_bytes, s.producer.max_message_bytes
        ),
        false => String::new(),
    };
    writeln!(
        out,
        "lines: longer than {max_line} bytes are truncated{lowered}"
    )?;
    // Its own files (checkpoint, lock, temporary and dead-letter files) are never followed, as the
    // agent decides (t32 F4: they were listed as shipped).
    let mut policy = (*s.engine.policy).clone();
    policy.own = discover::OwnFiles::new(&s.options.checkpoint, s.options.dead_letter.as_deref());
    for (n, input) in s.engine.inputs.iter().enumerate() {
        writeln!(out, "input {} '{}':", n + 1, Esc::str(&input.name))?;
        let show = |t: &crate::tail::route::Template| {
            String::from_utf8_lossy(
                &t.render(std::path::Path::new("/DIR/FILE.log"), &s.engine.hostname),
            )
            .into_owned()
        };
        // A fixed topic as it is; a template with what it makes of an example file (t28 F5: a
        // fixed one was shown as if it were made "for /DIR/FILE.log").
        let example = match input.route.topic.is_constant() {
            true => "",
            false => " (for /DIR/FILE.log)",
        };
        writeln!(
            out,
            "  topic: {}{example}",
            Esc::str(&show(&input.route.topic))
        )?;
        if let Some(k) = &input.route.key {
            writeln!(out, "  key: {}", Esc::str(&show(k)))?;
        }
        for (h, v) in &input.route.headers {
            writeln!(out, "  header {}: {}", Esc::str(h), Esc::str(&show(v)))?;
        }
        if let Some(m) = &input.multiline {
            writeln!(
                out,
                "  multiline: {} /{}/, at most {} lines, {} bytes, complete after {} ms quiet",
                m.rule.key(),
                crate::escape::EscRegex(m.pattern.as_str()),
                m.max_lines,
                m.max_bytes.min(max_line),
                m.timeout.as_millis()
            )?;
        }
        for p in &input.patterns {
            let mut notices = Vec::new();
            let files = discover::expand(
                std::slice::from_ref::<Pattern>(p),
                &policy,
                false,
                &mut notices,
                &mut Vec::new(),
            );
            writeln!(
                out,
                "  {} matches {} file(s) now",
                Esc::str(&p.raw),
                files.len()
            )?;
            // What the agent would pass over and say so (a link, a FIFO, a device, another owner's
            // file, a directory it cannot read) is shown here too, not left out of the count silently.
            for n in &notices {
                let what = if n.key.starts_with("skip:") {
                    "not followed"
                } else {
                    "note"
                };
                // In the file's keys (`follow_symlinks`), not the flags a file refuses.
                let text = crate::log::in_config_keys(&n.text);
                writeln!(out, "    {what}: {text}")?;
            }
            for f in files {
                // A file belongs to the first input that matches it (as the agent decides).
                let first = s.engine.inputs[..n]
                    .iter()
                    .find(|i| i.patterns.iter().any(|q| q.matches(&f.path)));
                if let Some(owner) = first {
                    writeln!(
                        out,
                        "    {} -> not here: input '{}' matches it first and ships it",
                        Esc::path(&f.path),
                        Esc::str(&owner.name)
                    )?;
                    continue;
                }
                let r = input.route.resolve(&f.path, &s.engine.hostname);
                // What its key and headers leave of the largest record, as the agent cuts its
                // lines (t33: the limit above was shown for every file alike).
                let headers: Vec<crate::wire::records::Header<'_>> = r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_slice(), Some(v.as_slice())))
                    .collect();
                let room = crate::producer::max_value_beside(
                    s.producer.max_message_bytes,
                    r.key.as_deref(),
                    &headers,
                );
                let note = match room {
                    0 => " (its key and headers leave no room for a line in max_message_bytes: its lines would wait in it, not shipped)".to_string(),
                    n if n < max_line => format!(
                        " (lines cut to {n} bytes: its key and headers take the rest of max_message_bytes)"
                    ),
                    _ => String::new(),
                };
                writeln!(
                    out,
                    "    {} -> {}{note}",
                    Esc::path(&f.path),
                    Esc::str(&r.topic)
                )?;
            }
        }
    }
    out.flush()?;
    Ok(0)
}
