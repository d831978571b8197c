//! `shipper tail --config FILE`: the agent's TOML file — Kafka settings at the top, any number of
//! `[[input]]`s — read into the same [`TailSettings`] the flags make. Every mistake is an error naming
//! the file and line: an unknown key, a wrong type, a bad regex, a template with an unknown
//! placeholder, a topic name Kafka would refuse, an unset `${VARIABLE}`.
//!
//! ```toml
//! brokers = ["kafka1:9092", "kafka2:9092"]
//! sasl_password = "${KAFKA_PASSWORD}"
//! [[input]]
//! paths = ["/var/log/app/*.log"]
//! topic = "app-{file_stem}"
//! key = "{hostname}"
//! headers = { source = "{path}", env = "prod" }
//! multiline = { start = '^\d{4}-\d{2}-\d{2}', max_lines = 500, timeout_ms = 1000 }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::security::SecurityFlags;
use super::tail::{check_topic, tail_producer, TailSettings};
use super::{KafkaSettings, Protocol, UsageError};
use crate::cli::{parse_timeout, Common};
use crate::connection::Mechanism;
use crate::escape::Esc;
use crate::partitioner::Partitioner;
use crate::producer::ProducerConfig;
use crate::secret::Secret;
use crate::tail::discover::{resolve_owners, FilePolicy, Pattern};
use crate::tail::follower::ReadLimits;
use crate::tail::multiline::MultilineConfig;
use crate::tail::route::{RouteSpec, Template};
use crate::tail::{checkpoint, EngineConfig, Input, TailOptions};
use crate::wire::compression::Compression;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    brokers: Option<Spanned<OneOrMany>>,
    client_id: Option<String>,
    timeout: Option<Spanned<StrOrInt>>,
    security_protocol: Option<Spanned<String>>,
    sasl_mechanism: Option<Spanned<String>>,
    sasl_username: Option<Spanned<String>>,
    sasl_password: Option<Spanned<String>>,
    sasl_password_file: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    cert_file: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
    #[serde(default)]
    tls_insecure: bool,
    acks: Option<Spanned<StrOrInt>>,
    compression: Option<Spanned<String>>,
    compression_level: Option<i32>,
    linger_ms: Option<Spanned<u64>>,
    batch_bytes: Option<Spanned<u64>>,
    max_message_bytes: Option<Spanned<u64>>,
    max_in_flight: Option<Spanned<u64>>,
    partitioner: Option<Spanned<String>>,
    idempotence: Option<Spanned<bool>>,
    exactly_once: Option<Spanned<bool>>,
    auto_create_topics: Option<bool>,
    checkpoint: Option<Spanned<String>>,
    buffer_bytes: Option<Spanned<u64>>,
    scan_ms: Option<Spanned<u64>>,
    checkpoint_ms: Option<Spanned<u64>>,
    shutdown_timeout_ms: Option<Spanned<u64>>,
    stats: Option<Spanned<u64>>,
    max_line_bytes: Option<Spanned<u64>>,
    dead_letter: Option<Spanned<String>>,
    #[serde(default)]
    follow_symlinks: bool,
    #[serde(default)]
    symlink_roots: OneOrMany,
    owners: Option<Spanned<OneOrMany>>,
    metrics_listen: Option<Spanned<String>>,
    unhealthy_after: Option<Spanned<StrOrInt>>,
    #[serde(rename = "input", default)]
    inputs: Vec<Spanned<InputFile>>,
}

/// Whether a value holds anything but `${NAME}` references (text written in the file itself).
fn holds_literal(raw: &str) -> bool {
    let mut rest = raw;
    while let Some(i) = rest.find("${") {
        if i > 0 {
            return true;
        }
        match rest[2..].find('}') {
            Some(end) => rest = &rest[2 + end + 1..],
            None => return true,
        }
    }
    !rest.is_empty()
}

/// The key of the line holding byte `at`, when it is one whose value is a secret (`sasl_password`):
/// an error there must not quote the value.
fn secret_key_at(text: &str, at: usize) -> Option<&str> {
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    // That line only: the next one's text is not this key's (`[sasl_password]` above a line
    // was said as "[sasl_password]\nfile must be a string").
    let line = text[start..].lines().next().unwrap_or("").trim();
    let key = match line.strip_prefix('[') {
        // A table header (`[sasl_password]`, `[[sasl_password]]`).
        Some(header) => header
            .trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or(""),
        None => line.split_once('=')?.0,
    };
    let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
    key.contains("password").then_some(key)
}

/// Whether a parse error's `message` may show the value on the line holding byte `at`: serde's
/// type errors quote it, and any message holding a piece of it is taken to.
fn quotes_value(message: &str, text: &str, at: usize) -> bool {
    if ["invalid type", "invalid value", "invalid length"]
        .iter()
        .any(|p| message.starts_with(p))
    {
        return true;
    }
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let value = line
        .split_once('=')
        .map_or("", |(_, v)| v)
        .trim()
        .trim_matches(|c| c == '"' || c == '\'');
    // Any three characters of it in the message: shown.
    let v: Vec<char> = value.chars().collect();
    v.windows(3)
        .any(|w| message.contains(&w.iter().collect::<String>()))
        || (!value.is_empty() && v.len() < 3 && message.contains(value))
}

/// serde's "unknown field `x`, expected one of `a`, `b`..." with the closest key put first, when one
/// is close (a typo: at most two edits, or one for short names), as clap does for flags.
/// The line of `text` that byte `at` is in.
fn line_at(text: &str, at: usize) -> &str {
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    text[start..].lines().next().unwrap_or("")
}

fn did_you_mean(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    // The tail flag `--path-header NAME` is a header template in a file (nothing is near it).
    if unknown == "path_header" {
        return "unknown field `path_header`: in a config file the path is a header like any other, \
                set in each [[input]]: headers = { source = \"{path}\" } (the header's name, and \
                the {path} template)"
            .to_string();
    }
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|k| (strsim::levenshtein(unknown, k), k))
        .min();
    match best {
        Some((d, k)) if d <= if unknown.len() <= 4 { 1 } else { 2 } => {
            format!("unknown field `{unknown}`: did you mean `{k}`?")
        }
        // A top-level setting written below an [[input]] belongs to that input in TOML (t22 F5:
        // appended at the end of the file, it was "unknown" with the input's keys listed).
        _ if expected.contains("`paths`") && is_top_level(unknown) => format!(
            "unknown field `{unknown}` in an [[input]]: `{unknown}` is a top-level setting, and \
             every key below an [[input]] line belongs to that input: move it above the first \
             [[input]]"
        ),
        _ => message.to_string(),
    }
}

/// A settings error worded for the command line ("--sasl-username"), in the config file's keys.
fn in_config_terms(message: &str) -> String {
    const TERMS: &[(&str, &str)] = &[
        ("--sasl-username or -X sasl.username=...", "sasl_username"),
        (
            "--security-protocol sasl_plaintext or sasl_ssl",
            "security_protocol = \"sasl_plaintext\" or \"sasl_ssl\"",
        ),
        (
            "--security-protocol ssl or sasl_ssl",
            "security_protocol = \"ssl\" or \"sasl_ssl\"",
        ),
        ("--sasl-password-file FILE", "sasl_password_file = \"FILE\""),
        ("-b host:port", "brokers = \"host:port\""),
        ("--sasl-password-file", "sasl_password_file"),
        ("--ca-file", "ca_file"),
        ("--cert-file", "cert_file"),
        ("--key-file", "key_file"),
        ("--tls-insecure", "tls_insecure"),
    ];
    TERMS
        .iter()
        .fold(message.to_string(), |m, (flag, key)| m.replace(flag, key))
}

/// Whether `key` is a setting of the file's top level (parsing it alone there is not "unknown").
fn is_top_level(key: &str) -> bool {
    if !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return false;
    }
    match toml::from_str::<File>(&format!("{key} = 0")) {
        Ok(_) => true,
        Err(e) => !e.message().starts_with("unknown field"),
    }
}

/// A string that may also be written as a number (`acks = 1`, as Kafka's own configs write it; t22
/// F6: refused as "expected a string").
#[derive(Debug, Clone)]
struct StrOrInt(String);

impl<'de> Deserialize<'de> for StrOrInt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = StrOrInt;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<StrOrInt, E> {
                Ok(StrOrInt(s.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<StrOrInt, E> {
                Ok(StrOrInt(n.to_string()))
            }
            // Taken as written, for the key's own message (t24 F5: `acks = 1.0` was "invalid
            // type: floating point 1.0, expected a string or a number").
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<StrOrInt, E> {
                Ok(StrOrInt(format!("{n:?}")))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// A list of strings that may also be written as one string (`paths = "/var/log/*.log"`,
/// `brokers = "kafka1:9092,kafka2:9092"` as with -b).
#[derive(Debug, Clone, Default)]
struct OneOrMany(Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![s.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    v.push(s);
                }
                Ok(OneOrMany(v))
            }
        }
        d.deserialize_any(Visit)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputFile {
    name: Option<String>,
    paths: Spanned<OneOrMany>,
    #[serde(default)]
    exclude: OneOrMany,
    topic: Spanned<String>,
    key: Option<Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    multiline: Option<Spanned<MultilineFile>>,
    #[serde(default)]
    from_end: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MultilineFile {
    start: Option<Spanned<String>>,
    #[serde(rename = "continue")]
    continues: Option<Spanned<String>>,
    max_lines: Option<Spanned<u64>>,
    max_bytes: Option<Spanned<u64>>,
    timeout_ms: Option<u64>,
}

/// A mistake in a config file, with where it is.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {message}", Esc::path(.path))]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// Its line (1-based).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Says so when users besides the one shipper runs as (and root) may change the config file, or
/// replace it: whoever can decides which files the agent reads (with its access to the logs) and
/// where it sends them.
fn warn_if_anyone_may_write(path: &Path) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    for why in write_risks(path, me) {
        crate::log::warn(format_args!(
            "config file {}: {why}: they can change which files are read and where they are sent",
            Esc::path(path)
        ));
    }
}

/// Who besides user `me` and root may change the config file at `path`: writable by every user or
/// by its group, owned by another user, a link owned by another user, or in a directory others may
/// write to (without the sticky bit: they can put another file in its place) — the directory its
/// name is in and, the name being a link, every directory above the file it leads to (a link from
/// /etc into a directory anyone may write to hands the config to anyone).
fn write_risks(path: &Path, me: u32) -> Vec<String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut out = Vec::new();
    let Ok(m) = std::fs::metadata(path) else {
        return out;
    };
    if !m.is_file() {
        return out;
    }
    let mode = m.permissions().mode() & 0o7777;
    if mode & 0o002 != 0 {
        out.push(format!(
            "writable by every user (mode {mode:o}; chmod o-w it)"
        ));
    } else if mode & 0o020 != 0 && m.gid() != 0 {
        out.push(format!(
            "writable by group {} (mode {mode:o}; chmod g-w it)",
            m.gid()
        ));
    }
    if m.uid() != me && m.uid() != 0 {
        out.push(format!(
            "owned by user {}, not by root or the user shipper runs as ({me})",
            m.uid()
        ));
    }
    let link = std::fs::symlink_metadata(path)
        .ok()
        .filter(|l| l.is_symlink());
    if let Some(l) = link.as_ref().filter(|l| l.uid() != me && l.uid() != 0) {
        out.push(format!(
            "it is a link owned by user {}, who can point it elsewhere",
            l.uid()
        ));
    }
    // Nearest first: its own directory, then (through a link) the real file's and those above it.
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        dirs.push(d);
    }
    if link.is_some() {
        if let Ok(real) = std::fs::canonicalize(path) {
            for a in real.ancestors().skip(1) {
                if !dirs.iter().any(|d| d == a) {
                    dirs.push(a.to_path_buf());
                }
            }
        }
    }
    for (i, d) in dirs.iter().enumerate() {
        let Ok(dm) = std::fs::metadata(d) else {
            continue;
        };
        let which = match i {
            0 => format!("its directory {}", Esc::path(d)),
            _ => format!("the directory {} its link leads into", Esc::path(d)),
        };
        let dmode = dm.permissions().mode() & 0o7777;
        let others = dmode & 0o002 != 0 || (dmode & 0o020 != 0 && dm.gid() != 0);
        if others && dmode & 0o1000 == 0 {
            out.push(format!(
                "{which} may be written by other users (mode {dmode:o}), who can put another file in its place"
            ));
            break;
        } else if dm.uid() != me && dm.uid() != 0 {
            out.push(format!(
                "{which} is owned by user {}, who can put another file in its place",
                dm.uid()
            ));
            break;
        }
    }
    out
}

/// Reads and checks a config file, with command-line flags given explicitly taking precedence
/// (`-b`, `--timeout`, the security options, `--metrics-listen`).
pub fn load(
    path: &Path,
    common: &Common,
    metrics_listen: Option<String>,
) -> anyhow::Result<TailSettings> {
    // -X and -F name settings the file has keys for, and which of the two would win is a guess: a
    // value given there was dropped without a word when the file set the same (t22 F1: `-X
    // sasl.password=...` to override a credential was not used). The dedicated flags override.
    if !common.properties.is_empty() || common.config_file.is_some() {
        let flag = if common.properties.is_empty() {
            "-F"
        } else {
            "-X"
        };
        return Err(UsageError(format!(
            "{flag} cannot be combined with --config: set it in the config file (brokers, \
             security_protocol, sasl_mechanism, sasl_username, sasl_password_file, ca_file, \
             cert_file, key_file...), or override it with its own flag (--sasl-username, \
             --sasl-password-file, --ca-file...)"
        ))
        .into());
    }
    let text = super::read_text_bounded(path, super::MAX_SETTINGS_FILE)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", Esc::path(path))))?;
    // Said as such rather than as the first key it lacks (a process substitution read twice, or a
    // FIFO nobody writes to, reads as nothing).
    if text.trim().is_empty() {
        return Err(UsageError(format!(
            "{}: it is empty (a pipe with no writer?): nothing to run",
            Esc::path(path)
        ))
        .into());
    }
    warn_if_anyone_may_write(path);
    let mut s = Reader {
        path,
        text: &text,
        starts: Default::default(),
    }
    .settings(common)?;
    if metrics_listen.is_some() {
        s.options.metrics_listen = metrics_listen;
    }
    Ok(s)
}

struct Reader<'a> {
    path: &'a Path,
    text: &'a str,
    /// The multiline start patterns compiled so far (shared and budgeted).
    starts: std::cell::RefCell<crate::tail::multiline::StartPatterns>,
}

impl Reader<'_> {
    fn err(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> anyhow::Error {
        let line = self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1;
        UsageError(
            ConfigError {
                path: self.path.to_path_buf(),
                line,
                message: message.into(),
            }
            .to_string(),
        )
        .into()
    }

    /// `${NAME}` replaced by the environment variable (an error if unset); `$$` is a `$`.
    fn expand(&self, v: &Spanned<String>) -> anyhow::Result<String> {
        let s = v.get_ref();
        let mut out = String::with_capacity(s.len());
        let mut rest = s.as_str();
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(r) = after.strip_prefix('$') {
                out.push('$');
                rest = r;
            } else if let Some(r) = after.strip_prefix('{') {
                let end = r
                    .find('}')
                    .ok_or_else(|| self.err(v.span(), "unclosed ${ in a value"))?;
                let name = &r[..end];
                let val = std::env::var(name).map_err(|_| {
                    self.err(v.span(), format!("environment variable {name} is not set"))
                })?;
                out.push_str(&val);
                rest = &r[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A path of the file, relative ones taken from the config file's directory: not from the
    /// directory shipper happens to start in (t22 F2: a relative checkpoint went to each working
    /// directory the agent was started from, and every start elsewhere shipped all lines again;
    /// systemd starts it in /).
    fn beside(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        let file = std::path::absolute(self.path).unwrap_or_else(|_| self.path.to_path_buf());
        file.parent().unwrap_or(Path::new("/")).join(p)
    }

    fn path_of(&self, v: &Option<Spanned<String>>, key: &str) -> anyhow::Result<Option<PathBuf>> {
        v.as_ref()
            .map(|s| {
                let p = self.expand(s)?;
                if p.is_empty() {
                    return Err(self.err(s.span(), format!("{key} is an empty path")));
                }
                Ok(self.beside(&p))
            })
            .transpose()
    }

    /// A file setting (a CA, a certificate, a key, a password file): it must be there and readable
    /// now, so that check-config finds what would stop the agent at start.
    fn file_of(&self, v: &Option<Spanned<String>>, key: &str) -> anyhow::Result<Option<PathBuf>> {
        let p = self.path_of(v, key)?;
        if let (Some(p), Some(s)) = (&p, v) {
            use std::os::unix::fs::OpenOptionsExt;
            // Not blocking on a FIFO with no writer: only whether it opens is asked.
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(p);
            if let Err(e) = opened {
                return Err(self.err(
                    s.span(),
                    format!("{key}: cannot read {}: {e}", Esc::path(p)),
                ));
            }
        }
        Ok(p)
    }

    /// A number within what the matching flag accepts (`key = 0` must not mean "1" silently), if
    /// given.
    fn num(
        &self,
        v: &Option<Spanned<u64>>,
        key: &str,
        range: std::ops::RangeInclusive<u64>,
    ) -> anyhow::Result<Option<u64>> {
        let Some(v) = v else { return Ok(None) };
        let n = *v.get_ref();
        if range.contains(&n) {
            return Ok(Some(n));
        }
        let (lo, hi) = (*range.start(), *range.end());
        Err(self.err(
            v.span(),
            if hi == u64::MAX {
                format!("{key} = {n}: must be at least {lo}")
            } else {
                format!("{key} = {n}: must be from {lo} to {hi}")
            },
        ))
    }

    /// [`Reader::num`] for a size, else `default`.
    fn size(
        &self,
        v: &Option<Spanned<u64>>,
        key: &str,
        range: std::ops::RangeInclusive<u64>,
        default: usize,
    ) -> anyhow::Result<usize> {
        Ok(self.num(v, key, range)?.map_or(default, |n| n as usize))
    }

    fn template(&self, v: &Spanned<String>) -> anyhow::Result<Template> {
        Template::parse(v.get_ref()).map_err(|e| self.err(v.span(), e))
    }

    fn settings(&self, common: &Common) -> anyhow::Result<TailSettings> {
        let f: File = toml::from_str(self.text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            match secret_key_at(self.text, span.start) {
                // Names keys only, never a value: `sasl_password` below an [[input]] is told where
                // it belongs (t24 F4: "must be a string in quotes", for one that was).
                Some(_) if e.message().starts_with("unknown field") => {
                    self.err(span, did_you_mean(e.message().trim()))
                }
                // serde's message quotes the value ("invalid type: integer `1234`"): not a password.
                // A syntax error (a bad escape, an unclosed string, a key given twice) says what is
                // wrong without it (t17 F9: all were "must be a string in quotes").
                Some(key) if !quotes_value(e.message(), self.text, span.start) => self.err(
                    span,
                    format!("{key}: {} (its value is not shown)", e.message().trim()),
                ),
                Some(key) => self.err(
                    span,
                    format!("{key} must be a string in quotes (its value is not shown)"),
                ),
                // `[input]` for `[[input]]` (helper-67: "invalid type: map, expected a sequence").
                None if e.message().starts_with("invalid type: map, expected a sequence")
                    && line_at(self.text, span.start)
                        .trim_start()
                        .starts_with("[input]") =>
                {
                    self.err(
                        span,
                        "[input] is one table, but inputs are a list: write [[input]] (double brackets) above each input",
                    )
                }
                None => self.err(span, did_you_mean(e.message().trim())),
            }
        })?;
        if f.inputs.is_empty() {
            return Err(self.err(
                0..0,
                "no [[input]]: give at least one, with paths and a topic",
            ));
        }
        let kafka = self.kafka(&f, common)?;
        let mut producer = tail_producer(
            self.producer(&f)?,
            self.size(
                &f.buffer_bytes,
                "buffer_bytes",
                65536..=crate::cli::MAX_BUFFER_BYTES,
                4 << 20,
            )?,
        );
        let exactly_once = f.exactly_once.as_ref().is_some_and(|v| *v.get_ref());
        if let Some(v) = f.exactly_once.as_ref().filter(|v| *v.get_ref()) {
            super::tail::check_exactly_once(&mut producer).map_err(|e| self.err(v.span(), e))?;
        }
        let hostname = crate::tail::route::hostname();
        let inputs = f
            .inputs
            .iter()
            .map(|i| self.input(i))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut names = std::collections::BTreeSet::new();
        for (i, input) in inputs.iter().enumerate() {
            if !names.insert(input.name.clone()) {
                return Err(self.err(
                    f.inputs[i].span(),
                    format!(
                        "two inputs are named '{}'; names must differ",
                        Esc::str(&input.name)
                    ),
                ));
            }
        }
        let owners = match &f.owners {
            Some(o) if !o.get_ref().0.is_empty() => {
                Some(resolve_owners(&o.get_ref().0, "owners").map_err(|e| self.err(o.span(), e))?)
            }
            _ => None,
        };
        let stem = self
            .path
            .file_stem()
            .map_or("agent".into(), |s| s.to_string_lossy().into_owned());
        let unhealthy_after = match &f.unhealthy_after {
            Some(v) => parse_timeout(&v.get_ref().0)
                .map_err(|e| self.err(v.span(), e))?
                .0
                .unwrap_or(Duration::from_secs(60)),
            None => Duration::from_secs(60),
        };
        Ok(TailSettings {
            kafka,
            producer,
            engine: EngineConfig {
                inputs,
                policy: Arc::new(FilePolicy {
                    follow_symlinks: f.follow_symlinks,
                    // From the config file's directory, as its other paths (a relative root
                    // was taken from the working directory: `.` under systemd allowed all of /).
                    symlink_roots: f.symlink_roots.0.iter().map(|r| self.beside(r)).collect(),
                    owners,
                    // Known once the checkpoint is (tail::run sets it).
                    own: Default::default(),
                }),
                limits: ReadLimits {
                    max_line_bytes: self.size(
                        &f.max_line_bytes,
                        "max_line_bytes",
                        1..=u64::MAX,
                        1_000_000,
                    )?,
                    chunk_bytes: 1 << 20,
                },
                max_open_files: 0,
                exactly_once: exactly_once.then(|| hostname.clone()),
                hostname,
            },
            options: TailOptions {
                checkpoint: self
                    .path_of(&f.checkpoint, "checkpoint")?
                    .map_or_else(|| checkpoint::default_path(&stem).or_else(super::usage), Ok)?,
                scan_interval: Duration::from_millis(
                    self.num(&f.scan_ms, "scan_ms", 10..=crate::cli::MAX_INTERVAL_MS)?
                        .unwrap_or(1000),
                ),
                checkpoint_interval: Duration::from_millis(
                    self.num(
                        &f.checkpoint_ms,
                        "checkpoint_ms",
                        10..=crate::cli::MAX_INTERVAL_MS,
                    )?
                    .unwrap_or(250),
                ),
                stats_interval: self
                    .num(&f.stats, "stats", 1..=crate::cli::MAX_STATS_SECS)?
                    .map(Duration::from_secs),
                shutdown_timeout: Duration::from_millis(
                    self.num(
                        &f.shutdown_timeout_ms,
                        "shutdown_timeout_ms",
                        0..=crate::cli::MAX_SHUTDOWN_MS,
                    )?
                    .unwrap_or(10_000),
                ),
                dead_letter: self.path_of(&f.dead_letter, "dead_letter")?,
                metrics_listen: self.listen_address(&f.metrics_listen)?,
                unhealthy_after,
            },
            config_file: Some(self.path.to_path_buf()),
        })
    }

    fn kafka(&self, f: &File, common: &Common) -> anyhow::Result<KafkaSettings> {
        let protocol = match &f.security_protocol {
            Some(v) => Some(Protocol::parse(v.get_ref()).ok_or_else(|| {
                self.err(
                    v.span(),
                    format!(
                        "unknown security_protocol '{}' (plaintext, ssl, sasl_plaintext, sasl_ssl)",
                        v.get_ref()
                    ),
                )
            })?),
            None => None,
        };
        let mechanism = match &f.sasl_mechanism {
            Some(v) => Some(Mechanism::parse(v.get_ref()).ok_or_else(|| {
                self.err(
                    v.span(),
                    format!(
                        "unknown sasl_mechanism '{}' (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)",
                        v.get_ref()
                    ),
                )
            })?),
            None => None,
        };
        let from_file = SecurityFlags {
            protocol,
            mechanism,
            username: f
                .sasl_username
                .as_ref()
                .map(|v| self.expand(v))
                .transpose()?,
            password_file: self.file_of(&f.sasl_password_file, "sasl_password_file")?,
            password: f
                .sasl_password
                .as_ref()
                .map(|v| self.expand(v).map(Secret::new))
                .transpose()?,
            ca_file: self.file_of(&f.ca_file, "ca_file")?,
            cert_file: self.file_of(&f.cert_file, "cert_file")?,
            key_file: self.file_of(&f.key_file, "key_file")?,
            insecure: f.tls_insecure,
            properties: Vec::new(),
            properties_file: None,
        };
        let flags = from_file.overridden_by(&SecurityFlags::from_common(common));
        let brokers = match (&common.brokers, &f.brokers) {
            (Some(b), Some(list)) => {
                // Said: SHIPPER_BROKERS, exported for everyday commands, overrides the file as -b
                // does, and the agent shipped elsewhere than its file said without a word (t14).
                let file = list.get_ref().0.join(",");
                if *b != file {
                    crate::log::warn(format_args!(
                        "brokers {} from -b or SHIPPER_BROKERS override the config file's {}",
                        Esc::str(b),
                        Esc::str(&file)
                    ));
                }
                Some(b.clone())
            }
            (Some(b), None) => Some(b.clone()),
            (None, Some(list)) => Some(
                list.get_ref()
                    .0
                    .iter()
                    .map(|b| self.expand(&Spanned::new(list.span(), b.clone())))
                    .collect::<anyhow::Result<Vec<_>>>()?
                    .join(","),
            ),
            (None, None) => None,
        };
        let timeout = match (&common.timeout, &f.timeout) {
            (Some(t), _) => t.0,
            (None, Some(v)) => {
                parse_timeout(&v.get_ref().0)
                    .map_err(|e| self.err(v.span(), e))?
                    .0
            }
            (None, None) => None,
        };
        // Only a password written in the file: `${KAFKA_PASSWORD}` alone, as the README's agent
        // example has it, keeps it out (t17 F5: told to chmod 600 a file a User= unit must read).
        if f.sasl_password
            .as_ref()
            .is_some_and(|p| holds_literal(p.get_ref()))
        {
            super::security::warn_if_readable(self.path, "config file holding a password");
        }
        KafkaSettings::resolve(
            brokers,
            &flags,
            f.client_id
                .clone()
                .unwrap_or_else(|| common.client_id.clone()),
            timeout,
        )
        .map_err(|e| match e.downcast::<UsageError>() {
            // Said in the file's terms, on the line of the key it is about where one is (t22 F3:
            // "no brokers given (-b host:port)" for `brokers = []`, with no file named).
            Ok(UsageError(m)) => {
                let m = in_config_terms(&m);
                let span = if m.contains("broker") {
                    f.brokers.as_ref().map(|b| b.span())
                } else if m.contains("security_protocol") {
                    f.security_protocol.as_ref().map(|v| v.span())
                } else {
                    None
                };
                match span {
                    Some(span) => self.err(span, m),
                    None => UsageError(format!("{}: {m}", Esc::path(self.path))).into(),
                }
            }
            Err(e) => e,
        })
    }

    fn producer(&self, f: &File) -> anyhow::Result<ProducerConfig> {
        let mut p = ProducerConfig::default();
        if let Some(v) = &f.acks {
            // As Kafka's producer takes it: any case (t24 F5: "ALL" was refused).
            p.acks = match v.get_ref().0.to_ascii_lowercase().as_str() {
                "all" | "-1" => -1,
                "1" => 1,
                "0" => 0,
                _ => {
                    return Err(self.err(
                        v.span(),
                        format!(
                            "unknown acks '{}' (all or -1, 1, 0)",
                            Esc::str(&v.get_ref().0)
                        ),
                    ))
                }
            };
        }
        if let Some(v) = &f.compression {
            p.compression = Compression::parse(v.get_ref()).ok_or_else(|| {
                self.err(
                    v.span(),
                    format!(
                        "unknown compression '{}' (none, gzip, snappy, lz4, zstd)",
                        v.get_ref()
                    ),
                )
            })?;
        }
        if let Some(v) = &f.partitioner {
            p.partitioner = Partitioner::parse(v.get_ref()).ok_or_else(|| {
                self.err(
                    v.span(),
                    format!(
                        "unknown partitioner '{}' (default, sticky, random, murmur2)",
                        v.get_ref()
                    ),
                )
            })?;
        }
        p.compression_level = f.compression_level;
        if let Some(level) = f.compression_level {
            p.compression.check_level(level).map_err(|e| {
                UsageError(format!("{}: compression_level: {e}", Esc::path(self.path)))
            })?;
        }
        if let Some(ms) = self.num(&f.linger_ms, "linger_ms", 0..=crate::cli::MAX_LINGER_MS)? {
            p.linger = Duration::from_millis(ms);
        }
        p.batch_bytes = self.size(
            &f.batch_bytes,
            "batch_bytes",
            1024..=64 << 20,
            p.batch_bytes,
        )?;
        p.max_message_bytes = self.size(
            &f.max_message_bytes,
            "max_message_bytes",
            1024..=64 << 20,
            p.max_message_bytes,
        )?;
        p.max_in_flight = self.size(&f.max_in_flight, "max_in_flight", 1..=100, p.max_in_flight)?;
        p.idempotence = match &f.idempotence {
            // Asked for in so many words with acks that cannot have it: Kafka's producer refuses
            // that too (t26: taken without a word, and idempotence silently off).
            Some(v) if *v.get_ref() && p.acks != -1 => {
                return Err(self.err(
                    v.span(),
                    "idempotence = true needs acks = \"all\" (with acks 1 or 0 a batch sent again may be written twice; Kafka's producer refuses it too)",
                ))
            }
            Some(v) => *v.get_ref(),
            None => true,
        };
        p.auto_create_topics = f.auto_create_topics.unwrap_or(true);
        Ok(p)
    }

    fn input(&self, i: &Spanned<InputFile>) -> anyhow::Result<Input> {
        let inp = i.get_ref();
        if inp.paths.get_ref().0.is_empty() {
            return Err(self.err(inp.paths.span(), "an input needs at least one path"));
        }
        let mut patterns = Vec::new();
        for p in &inp.paths.get_ref().0 {
            // Empty, it would be made the config file's directory, and refused as a directory
            // (t28 F5: a message about the directory, not the empty path written).
            if p.trim().is_empty() {
                return Err(self.err(
                    inp.paths.span(),
                    "an empty path in paths: give a file or a glob such as '/var/log/app/*.log'",
                ));
            }
            let raw = self.expand(&Spanned::new(inp.paths.span(), p.clone()))?;
            let raw = self
                .beside(&raw)
                .into_os_string()
                .into_string()
                .map_err(|_| {
                    self.err(
                        inp.paths.span(),
                        "the config file's directory is not UTF-8: give absolute paths",
                    )
                })?;
            patterns.push(
                Pattern::new(&raw, &inp.exclude.0).map_err(|e| self.err(inp.paths.span(), e))?,
            );
        }
        let topic = self.template(&inp.topic)?;
        check_topic(&topic, inp.topic.get_ref()).map_err(|e| self.err(inp.topic.span(), e))?;
        let key = inp.key.as_ref().map(|k| self.template(k)).transpose()?;
        let headers = inp
            .headers
            .iter()
            .map(|(k, v)| Ok((k.clone(), self.template(v)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let multiline = inp
            .multiline
            .as_ref()
            .map(|m| self.multiline(m))
            .transpose()?;
        Ok(Input {
            name: inp
                .name
                .clone()
                .unwrap_or_else(|| inp.paths.get_ref().0.join(" ")),
            patterns,
            route: RouteSpec {
                topic,
                key,
                headers,
            },
            multiline: multiline.map(Arc::new),
            from_end: inp.from_end,
        })
    }

    /// `metrics_listen`: host:port (a bad one would stop the agent at start).
    fn listen_address(&self, v: &Option<Spanned<String>>) -> anyhow::Result<Option<String>> {
        let Some(v) = v else { return Ok(None) };
        let a = v.get_ref();
        super::check_listen(a)
            .map_err(|e| self.err(v.span(), format!("metrics_listen = '{}': {e}", Esc::str(a))))?;
        Ok(Some(a.clone()))
    }

    fn multiline(&self, m: &Spanned<MultilineFile>) -> anyhow::Result<MultilineConfig> {
        use crate::tail::multiline::Rule;
        let mf = m.get_ref();
        let (source, rule) = match (&mf.start, &mf.continues) {
            (Some(s), None) => (s, Rule::Start),
            (None, Some(c)) => (c, Rule::Continue),
            (both, _) => {
                let which = "start (a pattern for the lines that begin an event) or continue (one for the lines that join the line before)";
                return Err(self.err(
                    m.span(),
                    match both {
                        Some(_) => format!("multiline: give {which}, not both"),
                        None => format!("multiline: give {which}"),
                    },
                ));
            }
        };
        let pattern = self
            .starts
            .borrow_mut()
            .compile(source.get_ref())
            .map_err(|e| self.err(source.span(), e))?;
        Ok(MultilineConfig {
            pattern,
            rule,
            max_lines: self.size(&mf.max_lines, "multiline.max_lines", 1..=u64::MAX, 500)?,
            max_bytes: self.size(
                &mf.max_bytes,
                "multiline.max_bytes",
                1..=u64::MAX,
                1_000_000,
            )?,
            timeout: Duration::from_millis(mf.timeout_ms.unwrap_or(1000)),
        })
    }
}

#[cfg(test)]
mod tests;
