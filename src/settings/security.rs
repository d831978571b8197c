//! Security settings — TLS and SASL — from the dedicated flags, `-X key=value` and `-F FILE` (a
//! properties file), which take the names kcat (librdkafka) and the Java client use, so existing
//! client configurations work as they are. A `-F` file gives defaults, `-X` overrides it, and the
//! dedicated flags override both. An unknown key is a usage error naming it.
//!
//! Passwords come from `--sasl-password-file`, `SHIPPER_SASL_PASSWORD`, `sasl.password` or
//! `sasl.jaas.config`; they are kept in a [`Secret`] (never printed), a password given on the command
//! line is overwritten in the process title, and a password or properties file that other users may
//! read is warned about.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{usage, UsageError};
use crate::cli::{Common, MechanismArg, SecurityProtocolArg};

/// The security settings as given (flags, or a config file), before resolution.
#[derive(Debug, Clone, Default)]
pub struct SecurityFlags {
    /// `--security-protocol`.
    pub protocol: Option<Protocol>,
    /// `--sasl-mechanism`.
    pub mechanism: Option<Mechanism>,
    /// `--sasl-username`.
    pub username: Option<String>,
    /// `--sasl-password-file`.
    pub password_file: Option<PathBuf>,
    /// A password given directly (a config file's `sasl_password`, after `${VAR}` expansion).
    pub password: Option<Secret>,
    /// `--ca-file`.
    pub ca_file: Option<PathBuf>,
    /// `--cert-file`.
    pub cert_file: Option<PathBuf>,
    /// `--key-file`.
    pub key_file: Option<PathBuf>,
    /// `--tls-insecure`.
    pub insecure: bool,
    /// `-X key=value`.
    pub properties: Vec<String>,
    /// `-F FILE`.
    pub properties_file: Option<PathBuf>,
}

impl SecurityFlags {
    /// The flags of the command line.
    pub fn from_common(c: &Common) -> SecurityFlags {
        SecurityFlags {
            protocol: c.security_protocol.map(SecurityProtocolArg::protocol),
            mechanism: c.sasl_mechanism.map(MechanismArg::mechanism),
            username: c.sasl_username.clone(),
            password_file: c.sasl_password_file.clone(),
            password: None,
            ca_file: c.ca_file.clone(),
            cert_file: c.cert_file.clone(),
            key_file: c.key_file.clone(),
            insecure: c.tls_insecure,
            properties: c.properties.clone(),
            properties_file: c.config_file.clone(),
        }
    }

    /// These settings, with every one `over` gives replacing ours (the command line over a file).
    pub fn overridden_by(mut self, over: &SecurityFlags) -> SecurityFlags {
        macro_rules! take {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f.clone(); } )* };
        }
        take!(
            protocol,
            mechanism,
            username,
            password_file,
            password,
            ca_file,
            cert_file,
            key_file,
            properties_file
        );
        self.insecure |= over.insecure;
        self.properties.extend(over.properties.iter().cloned());
        self
    }
}
use crate::connection::{Mechanism, SaslSettings, TlsSettings};
use crate::escape::Esc;
use crate::secret::{hide_in_process_title, Secret};

/// How connections to brokers are secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// No TLS, no SASL.
    #[default]
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl Protocol {
    /// Parses `plaintext`, `ssl`, `sasl_plaintext`, `sasl_ssl` (any case).
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "plaintext" => Some(Protocol::Plaintext),
            "ssl" => Some(Protocol::Ssl),
            "sasl_plaintext" => Some(Protocol::SaslPlaintext),
            "sasl_ssl" => Some(Protocol::SaslSsl),
            _ => None,
        }
    }

    /// Kafka's name for it (`security.protocol`): `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`.
    pub fn kafka_name(self) -> &'static str {
        match self {
            Protocol::Plaintext => "PLAINTEXT",
            Protocol::Ssl => "SSL",
            Protocol::SaslPlaintext => "SASL_PLAINTEXT",
            Protocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether connections use TLS.
    pub fn tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::SaslSsl)
    }

    /// Whether connections authenticate with SASL.
    pub fn sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }
}

/// The resolved security settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// The protocol.
    pub protocol: Protocol,
    /// TLS settings, with a TLS protocol.
    pub tls: Option<TlsSettings>,
    /// SASL settings, with a SASL protocol.
    pub sasl: Option<SaslSettings>,
    /// Brokers named by the properties (`bootstrap.servers`, `metadata.broker.list`).
    pub brokers: Option<String>,
    /// `isolation.level` as the properties give it (for `consume`).
    pub isolation_level: Option<String>,
}

/// The keys `-X` and `-F` accept (librdkafka and Java names).
const KNOWN_KEYS: &[&str] = &[
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "sasl.jaas.config",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "enable.ssl.certificate.verification",
    "ssl.endpoint.identification.algorithm",
    "bootstrap.servers",
    "metadata.broker.list",
    // A consumer setting: `consume` takes it as its --isolation-level; other commands pass over it,
    // as librdkafka passes over a consumer property given to a producer.
    "isolation.level",
];

/// Parses a Java properties file: `key=value` or `key: value`, `#`/`!` comments, blank lines.
pub fn parse_properties(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, first)) = lines.next() {
        let line = first.trim_start();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        // A line ending in an odd number of backslashes goes on in the next one (Java's
        // `key=value \` continuations, as multi-line JAAS settings are written), whose leading
        // blanks are dropped.
        let mut logical = line.to_string();
        while logical.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1 {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let (key, value) = split_property(&logical)
            .ok_or_else(|| format!("line {}: expected key=value", n + 1))?;
        out.insert(key, value);
    }
    Ok(out)
}

/// A properties line's key and value: the key ends at the first unescaped `=`, `:` or blank (then an
/// `=` or `:` after blanks is the separator); both have Java's escapes (`\t`, `\n`, `\uXXXX`, `\\`,
/// `\=`...), but a backslash before another character is kept, as in a kcat config, which has no
/// escapes (a password `ab\cd`). `None` for a key alone.
fn split_property(line: &str) -> Option<(String, String)> {
    let mut key_end = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '=' | ':' | ' ' | '\t' | '\x0c' => {
                key_end = Some(i);
                break;
            }
            _ => {}
        }
    }
    let i = key_end?;
    let rest = line[i..].trim_start_matches([' ', '\t', '\x0c']);
    let rest = rest
        .strip_prefix(['=', ':'])
        .unwrap_or(rest)
        .trim_start_matches([' ', '\t', '\x0c']);
    Some((
        unescape_property(&line[..i]),
        unescape_property(rest.trim_end()),
    ))
}

fn unescape_property(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let hex: String = chars.clone().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(u) if hex.len() == 4 => {
                        out.push(u);
                        chars.nth(3);
                    }
                    _ => out.push('u'),
                }
            }
            Some(c @ ('\\' | '=' | ':' | ' ' | '#' | '!')) => out.push(c),
            // Java drops the backslash; kept, as a kcat config (no escapes) means it.
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Warns when a file holding secrets may be read by other users.
pub fn warn_if_readable(path: &Path, what: &str) {
    // Only a regular file: reading anything else fails next, with its own error.
    if let Ok(m) = std::fs::metadata(path) {
        if m.is_file() && m.permissions().mode() & 0o077 != 0 {
            crate::log::warn(format_args!(
                "{what} {} is readable by other users (mode {:o}); chmod 600 it",
                Esc::path(path),
                m.permissions().mode() & 0o777
            ));
        }
    }
}

/// `path` as one word of a shell command, to paste: as it is when it holds only safe characters,
/// else in single quotes (a `'` in it as `'\''`), with bytes a terminal would act on escaped.
fn shell_word(path: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:,@%=".contains(c);
    if !path.is_empty() && path.chars().all(safe) {
        return path.to_string();
    }
    format!("'{}'", Esc::str(path).to_string().replace('\'', "'\\''"))
}

/// `username="..."` and `password="..."` out of a JAAS line (PlainLoginModule, ScramLoginModule):
/// an option of exactly that name, blanks allowed around its `=`, its value in double or single
/// quotes (Java's JAAS parser takes both).
fn jaas_field(jaas: &str, name: &str) -> Option<String> {
    let mut rest = jaas;
    while !rest.is_empty() {
        // The next word: the login module, the flag (`required`), or an option's name.
        let start = rest.find(|c: char| !c.is_whitespace() && c != ';')?;
        rest = &rest[start..];
        if let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
            // A quoted value of another option: skipped whole (it may hold `name=`).
            let end = rest[1..].find(q)?;
            rest = &rest[end + 2..];
            continue;
        }
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '=' || c == ';')
            .unwrap_or(rest.len());
        let word = &rest[..end];
        rest = rest[end..].trim_start();
        let Some(after) = rest.strip_prefix('=') else {
            continue;
        };
        rest = after.trim_start();
        let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'');
        let Some(q) = quote else {
            if word == name {
                return None;
            }
            continue;
        };
        let close = rest[1..].find(q)?;
        let value = &rest[1..close + 1];
        if word == name {
            return Some(value.to_string());
        }
        rest = &rest[close + 2..];
    }
    None
}

/// Whether a property is about how to connect (TLS, SASL): one shipper does not know is an error,
/// never passed over.
fn is_security_key(k: &str) -> bool {
    ["ssl.", "sasl.", "security."]
        .iter()
        .any(|p| k.starts_with(p))
}

/// The shipper flag that does the job of a Java or librdkafka client setting, if one does.
fn flag_for(key: &str) -> Option<String> {
    const PRODUCING: &str = "produce and tail";
    const READING: &str = "consume";
    let (flag, commands) = match key {
        "acks" | "request.required.acks" => ("--acks", PRODUCING),
        "compression.type" | "compression.codec" => ("--compression", PRODUCING),
        "compression.level" => ("--compression-level", PRODUCING),
        "linger.ms" | "queue.buffering.max.ms" => ("--linger-ms", PRODUCING),
        "batch.size" => ("--batch-bytes", PRODUCING),
        "client.id" => ("--client-id", ""),
        "enable.idempotence" => ("--no-idempotence", PRODUCING),
        "max.in.flight.requests.per.connection" | "max.in.flight" => ("--max-in-flight", PRODUCING),
        "max.request.size" | "message.max.bytes" => ("--max-message-bytes", PRODUCING),
        "request.timeout.ms" | "delivery.timeout.ms" | "message.timeout.ms" => ("--timeout", ""),
        "partitioner" | "partitioner.class" => ("--partitioner", PRODUCING),
        "group.id" => ("-G", READING),
        "auto.offset.reset" => ("-o", READING),
        "enable.auto.commit" => ("--commit / --no-commit", READING),
        "auto.commit.interval.ms" => ("--commit-interval-ms", READING),
        "session.timeout.ms" => ("--session-timeout-ms", READING),
        "group.protocol" => ("--group-protocol", READING),
        _ => return None,
    };
    Some(match commands {
        "" => flag.to_string(),
        c => format!("{flag} ({c})"),
    })
}

/// The properties from `-F` then `-X` (later wins), checked against the known keys.
fn properties(c: &SecurityFlags) -> anyhow::Result<BTreeMap<String, String>> {
    let mut props = BTreeMap::new();
    // Where a key was set, for its error: the -F file's name, or -X (t28 F5: "unknown
    // configuration key 'ssl.foo'" named no file).
    let mut from_file: BTreeMap<String, String> = BTreeMap::new();
    if let Some(f) = &c.properties_file {
        let text = super::read_text_bounded(f, super::MAX_SETTINGS_FILE)
            .map_err(|e| UsageError(format!("cannot read -F {}: {e}", Esc::path(f))))?;
        let parsed =
            parse_properties(&text).map_err(|e| UsageError(format!("-F {}: {e}", Esc::path(f))))?;
        if parsed.contains_key("sasl.password") || parsed.contains_key("sasl.jaas.config") {
            warn_if_readable(f, "properties file");
        }
        // A Java client.properties shared with other tools holds their tuning too
        // (`request.timeout.ms`, `key.deserializer`): passed over, said once. Security settings
        // shipper does not know stay errors (below): passing over one would change how it connects.
        let (used, passed_over): (Vec<_>, Vec<_>) = parsed
            .into_iter()
            .partition(|(k, _)| KNOWN_KEYS.contains(&k.as_str()) || is_security_key(k));
        if !passed_over.is_empty() {
            let names: Vec<String> = passed_over
                .iter()
                .map(|(k, _)| match flag_for(k) {
                    Some(flag) => format!("{} (shipper's {flag})", Esc::str(k)),
                    None => Esc::str(k).to_string(),
                })
                .collect();
            crate::log::warn(format_args!(
                "-F {}: passing over settings shipper does not read: {}",
                Esc::path(f),
                names.join(", ")
            ));
        }
        for (k, _) in &used {
            from_file.insert(k.clone(), format!("-F {}", Esc::path(f)));
        }
        props.extend(used);
    }
    let mut password_on_command_line = false;
    for kv in &c.properties {
        let Some((k, v)) = kv.split_once('=') else {
            // Only what may be the key is shown: `sasl.password:SECRET` must not echo the secret.
            let key = kv.split([':', ' ', '\t']).next().unwrap_or("");
            let rest = if key.len() < kv.len() { "..." } else { "" };
            return usage(format!("-X {}{rest}: expected key=value", Esc::str(key)));
        };
        let secret = match k.trim() {
            "sasl.password" => Some(v.to_string()),
            "sasl.jaas.config" => jaas_field(v, "password"),
            _ => None,
        };
        // Hidden at once, whether it is the password used or not (a password file or the
        // environment may win, or the protocol may need none): `ps` must not show it either way.
        if let Some(s) = secret.filter(|s| !s.is_empty()) {
            hide_in_process_title(kv, &s);
            password_on_command_line = true;
        }
        // An empty value is a mistake (`-X ssl.ca.location=$CA` with CA unset fell back to the
        // system's CAs, `-X bootstrap.servers=` to the default broker), as kcat says; but for the
        // one setting whose empty value means something.
        if v.is_empty() && k.trim() != "ssl.endpoint.identification.algorithm" {
            return usage(format!(
                "-X {}=: an empty value (a variable not set?); leave the setting out for its default",
                Esc::str(k.trim())
            ));
        }
        from_file.remove(k.trim());
        props.insert(k.trim().to_string(), v.to_string());
    }
    if password_on_command_line {
        crate::log::warn(format_args!(
            "a password on the command line can be read by other users until shipper starts; use --sasl-password-file or SHIPPER_SASL_PASSWORD"
        ));
    }
    // Its value holds the password: said wrong, never shown.
    if let Some(j) = props.get("sasl.jaas.config") {
        if jaas_field(j, "username").is_none() || jaas_field(j, "password").is_none() {
            return usage(
                "sasl.jaas.config: expected username=\"...\" and password=\"...\" (as a Java client's PlainLoginModule or ScramLoginModule line has them; single quotes work too)",
            );
        }
    }
    if let Some(k) = props.keys().find(|k| !KNOWN_KEYS.contains(&k.as_str())) {
        let at = from_file.get(k).map_or(String::new(), |f| format!("{f}: "));
        // A Java client's stores: name the PEM settings that replace them.
        // The store's own path in the command, when the settings give it (not a password: only
        // the `.location` keys are shown).
        let store = |kind: &str, default: &str| {
            props
                .get(&format!("ssl.{kind}.location"))
                .map_or(default.to_string(), |p| shell_word(p))
        };
        const JKS: &str = "; a JKS store first becomes PKCS12 with keytool -importkeystore -srcstoretype JKS -deststoretype PKCS12";
        // With PEM files (librdkafka's and KIP-651's sense): the password of an encrypted key
        // (helper-66: called a keystore setting, with a keystore.p12 that did not exist).
        if k == "ssl.key.password" && !props.keys().any(|k| k.starts_with("ssl.keystore.")) {
            // The key as given: --key-file beats ssl.key.location, as for the key itself.
            let key = c
                .key_file
                .as_ref()
                .and_then(|p| p.to_str())
                .or(props.get("ssl.key.location").map(String::as_str))
                .map_or("client.key".to_string(), shell_word);
            // Where the decrypted key goes: where the encrypted one was given.
            let give = match c.key_file.is_some() {
                true => "with --key-file",
                false => "in ssl.key.location",
            };
            return usage(format!(
                "{at}'ssl.key.password' is the password of an encrypted key; shipper reads unencrypted PEM keys: decrypt it (openssl pkey -in {key} -out key.pem, then chmod 600 key.pem) and give that {give}"
            ));
        }
        let pem = if k.starts_with("ssl.truststore.") {
            Some(format!("the CA certificates as PEM in ssl.ca.location (openssl pkcs12 -in {} -nokeys -out ca.pem{JKS})", store("truststore", "truststore.p12")))
        } else if k.starts_with("ssl.keystore.") || k == "ssl.key.password" {
            Some(format!("the client certificate and key as PEM in ssl.certificate.location and ssl.key.location (openssl pkcs12 -in {} -nokeys -out client.pem, and -nocerts -nodes -out client.key{JKS})", store("keystore", "keystore.p12")))
        } else {
            None
        };
        if let Some(pem) = pem {
            return usage(format!(
                "{at}'{}' is a Java keystore setting (PKCS12/JKS); shipper reads PEM files: give {pem}",
                Esc::str(k)
            ));
        }
        if let Some(flag) = flag_for(k) {
            return usage(format!("-X {}: shipper sets this with {flag}", Esc::str(k)));
        }
        return usage(format!(
            "{at}unknown configuration key '{}' (shipper takes: {})",
            Esc::str(k),
            KNOWN_KEYS.join(", ")
        ));
    }
    Ok(props)
}

/// The password: `--sasl-password-file`, else `SHIPPER_SASL_PASSWORD`, else the properties. A
/// password given in another place too is said to be left aside (named by where it was, never shown):
/// `SHIPPER_SASL_PASSWORD` over a `-X sasl.password` was taken without a word.
fn password(
    c: &SecurityFlags,
    props: &BTreeMap<String, String>,
    env: Option<&str>,
) -> anyhow::Result<Option<Secret>> {
    // Set but empty (a unit's `Environment=SHIPPER_SASL_PASSWORD=`, `export V="$UNSET"`): as if
    // unset, so the password given elsewhere is used. A line end at its end is not part of the
    // password, as in the file.
    let env = env
        .map(|v| {
            v.strip_suffix('\n')
                .map_or(v, |v| v.strip_suffix('\r').unwrap_or(v))
        })
        .filter(|v| !v.is_empty());
    let given = [
        (c.password_file.is_some(), "--sasl-password-file"),
        (env.is_some(), "SHIPPER_SASL_PASSWORD"),
        (c.password.is_some(), "the config's sasl_password"),
        (
            props.contains_key("sasl.password"),
            "sasl.password (-X or -F)",
        ),
        (
            props
                .get("sasl.jaas.config")
                .is_some_and(|j| jaas_field(j, "password").is_some()),
            "sasl.jaas.config's password",
        ),
    ];
    let mut places = given.iter().filter(|(set, _)| *set).map(|(_, name)| *name);
    if let Some(used) = places.next() {
        let unused: Vec<&str> = places.collect();
        if !unused.is_empty() {
            crate::log::warn(format_args!(
                "the SASL password is taken from {used}; the one in {} is not used",
                unused.join(" and ")
            ));
        }
    }
    if let Some(f) = &c.password_file {
        warn_if_readable(f, "password file");
        // A usage error, as for -F and an empty file (helper-66: exit 1 here, 2 there).
        let text = super::read_text_bounded(f, super::MAX_SETTINGS_FILE).map_err(|e| {
            UsageError(format!(
                "cannot read --sasl-password-file {}: {e}",
                Esc::path(f)
            ))
        })?;
        let pw = text.lines().next().unwrap_or_default().to_string();
        if pw.is_empty() {
            let what = if text.is_empty() {
                "is empty"
            } else {
                "has an empty first line (the password)"
            };
            return usage(format!("--sasl-password-file {} {what}", Esc::path(f)));
        }
        return Ok(Some(Secret::new(pw)));
    }
    if let Some(pw) = env {
        return Ok(Some(Secret::new(pw.to_string())));
    }
    if let Some(p) = &c.password {
        return Ok(Some(p.clone()));
    }
    let pw = props.get("sasl.password").cloned().or_else(|| {
        props
            .get("sasl.jaas.config")
            .and_then(|j| jaas_field(j, "password"))
    });
    Ok(pw.map(Secret::new))
}

/// A broker address split at its listener's prefix: (`Some("SASL_SSL")`, `"k:9095"`) for
/// `SASL_SSL://k:9095`, (`None`, the address) without one. The one parse of the prefix:
/// [`resolve`] checks it names a protocol, and the address is then taken without it.
pub(crate) fn split_listener(b: &str) -> (Option<&str>, &str) {
    match b.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, b),
    }
}

/// The security protocol the broker addresses name by a listener's prefix (`SASL_SSL://k:9095`),
/// if any: all of them the same one, and one Kafka has (t29 F7: dropped and ignored, `SASL_SSL://`
/// connected in plaintext and sent a PLAIN password in the clear).
fn listener_protocol(brokers: &str) -> anyhow::Result<Option<Protocol>> {
    let mut named: Option<(Protocol, &str)> = None;
    for b in brokers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        let (Some(scheme), _) = split_listener(b) else {
            continue;
        };
        let Some(p) = Protocol::parse(scheme) else {
            return usage(format!(
                "broker address '{}': '{}://' is no Kafka listener's protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)",
                Esc::str(b),
                Esc::str(scheme)
            ));
        };
        match named {
            Some((q, other)) if q != p => {
                return usage(format!(
                    "broker addresses '{}' and '{}' name different security protocols",
                    Esc::str(other),
                    Esc::str(b)
                ))
            }
            _ => named = Some((p, b)),
        }
    }
    Ok(named.map(|(p, _)| p))
}

/// Resolves the security settings of the common flags, and of the broker addresses' listener
/// prefixes (`brokers`: those given by -b or a config file).
pub fn resolve(c: &SecurityFlags, brokers: Option<&str>) -> anyhow::Result<Security> {
    let props = properties(c)?;
    let prop = |k: &str| props.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let listed = brokers
        .or(prop("bootstrap.servers"))
        .or(prop("metadata.broker.list"));
    let listener = match listed {
        Some(b) => listener_protocol(b)?,
        None => None,
    };
    let mechanism = mechanism_of(
        c.mechanism,
        prop("sasl.mechanism").or(prop("sasl.mechanisms")),
    )?;
    let username = c
        .username
        .clone()
        .or_else(|| prop("sasl.username").map(str::to_string))
        .or_else(|| prop("sasl.jaas.config").and_then(|j| jaas_field(j, "username")));
    let path =
        |flag: &Option<PathBuf>, key: &str| flag.clone().or_else(|| prop(key).map(PathBuf::from));
    let ca_file = path(&c.ca_file, "ssl.ca.location");
    let cert_file = path(&c.cert_file, "ssl.certificate.location");
    let key_file = path(&c.key_file, "ssl.key.location");
    // A client certificate is its certificate and its key: one alone is a mistake in the command,
    // said before anything connects.
    match (&cert_file, &key_file) {
        (Some(_), None) => return usage(
            "a client certificate needs its key too: --key-file (ssl.key.location, or key_file in the config file)",
        ),
        (None, Some(_)) => return usage(
            "a client key needs its certificate too: --cert-file (ssl.certificate.location, or cert_file in the config file)",
        ),
        _ => {}
    }
    // A value that is neither on nor off is refused: `enable.ssl.certificate.verification=flase`
    // must not leave verification on while the user believes it off, nor the other way round.
    let verify = match props
        .get("enable.ssl.certificate.verification")
        .map(String::as_str)
    {
        None => true,
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" => true,
            "false" | "f" | "0" => false,
            _ => {
                return Err(UsageError(format!(
                    "enable.ssl.certificate.verification='{}': must be true or false",
                    Esc::str(v)
                ))
                .into())
            }
        },
    };
    let insecure = if c.insecure {
        Some("--tls-insecure, or tls_insecure in the config file")
    } else {
        (!verify).then_some("enable.ssl.certificate.verification=false")
    };
    // As in Java and librdkafka: an empty algorithm (or librdkafka's `none`) skips only the check that
    // the certificate names the broker's host; it must still be signed by a trusted CA. Anything but
    // `https` besides is refused (a typo would otherwise decide whether names are checked).
    let no_hostname_check = match props.get("ssl.endpoint.identification.algorithm") {
        None => false,
        Some(v) if v.is_empty() || v.eq_ignore_ascii_case("none") => true,
        Some(v) if v.eq_ignore_ascii_case("https") => false,
        Some(v) => {
            return Err(UsageError(format!(
                "ssl.endpoint.identification.algorithm='{}': must be https, none or empty",
                Esc::str(v)
            ))
            .into())
        }
    };
    // A password given on purpose (a file, a config key, a property) asks for SASL as a user name
    // does: ignoring it would connect without authenticating. SHIPPER_SASL_PASSWORD alone does not
    // (it may be set in an environment shared with commands that need none).
    let wants_sasl = username.is_some()
        || mechanism.is_some()
        || c.password_file.is_some()
        || c.password.is_some()
        || prop("sasl.password").is_some();
    let wants_tls = ca_file.is_some()
        || cert_file.is_some()
        || key_file.is_some()
        || insecure.is_some()
        || no_hostname_check;
    // First: an unknown security.protocol is refused, whatever the addresses say.
    let implied = protocol_of(c.protocol, prop("security.protocol"), wants_sasl, wants_tls)?;
    let given = c
        .protocol
        .map(|p| (p, "--security-protocol"))
        .or(prop("security.protocol")
            .and_then(Protocol::parse)
            .map(|p| (p, "security.protocol")));
    let protocol = match (listener, given) {
        // As kcat: a prefix that says otherwise than the setting is refused.
        (Some(l), Some((g, by))) if l != g => {
            return usage(format!(
                "the broker address names {} but {by} is {}: give one protocol",
                l.kafka_name(),
                g.kafka_name()
            ));
        }
        (Some(l), None) => l,
        _ => implied,
    };
    if wants_sasl && !protocol.sasl() {
        return usage("SASL settings need --security-protocol sasl_plaintext or sasl_ssl");
    }
    let sasl = if protocol.sasl() {
        let Some(username) = username else {
            return usage("SASL needs a user name (--sasl-username or -X sasl.username=...)");
        };
        if username.is_empty() {
            return usage("an empty SASL user name (a variable not set?)");
        }
        let env = std::env::var("SHIPPER_SASL_PASSWORD").ok();
        let Some(password) = password(c, &props, env.as_deref())? else {
            let empty = if env.is_some() {
                " (SHIPPER_SASL_PASSWORD is set but empty)"
            } else {
                ""
            };
            return usage(format!(
                "SASL needs a password: --sasl-password-file FILE or SHIPPER_SASL_PASSWORD{empty}"
            ));
        };
        Some(SaslSettings {
            mechanism: mechanism.unwrap_or(Mechanism::Plain),
            username,
            password,
        })
    } else {
        None
    };
    if wants_tls && !protocol.tls() {
        return usage("TLS settings need --security-protocol ssl or sasl_ssl");
    }
    warn_weak(protocol, insecure, no_hostname_check, sasl.as_ref());
    let tls = protocol.tls().then_some(TlsSettings {
        ca_file,
        cert_file,
        key_file,
        insecure: insecure.is_some(),
        no_hostname_check,
    });
    Ok(Security {
        protocol,
        tls,
        sasl,
        brokers: prop("bootstrap.servers")
            .or(prop("metadata.broker.list"))
            .map(str::to_string),
        isolation_level: prop("isolation.level").map(str::to_string),
    })
}

/// The SASL mechanism: the flag, else the property (a usage error if it names none we know).
fn mechanism_of(flag: Option<Mechanism>, prop: Option<&str>) -> anyhow::Result<Option<Mechanism>> {
    match (flag, prop) {
        (Some(m), _) => Ok(Some(m)),
        (None, Some(m)) => Mechanism::parse(m).map(Some).ok_or_else(|| {
            UsageError(format!(
                "unknown SASL mechanism '{}' (use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)",
                Esc::str(m)
            ))
            .into()
        }),
        (None, None) => Ok(None),
    }
}

/// The security protocol: the flag, else the property, else what the other settings imply.
fn protocol_of(
    flag: Option<Protocol>,
    prop: Option<&str>,
    wants_sasl: bool,
    wants_tls: bool,
) -> anyhow::Result<Protocol> {
    Ok(match (flag, prop) {
        (Some(p), _) => p,
        (None, Some(p)) => Protocol::parse(p).ok_or_else(|| {
            UsageError(format!(
                "unknown security.protocol '{}' (use plaintext, ssl, sasl_plaintext or sasl_ssl)",
                Esc::str(p)
            ))
        })?,
        (None, None) => match (wants_sasl, wants_tls) {
            (true, true) => Protocol::SaslSsl,
            (true, false) => Protocol::SaslPlaintext,
            (false, true) => Protocol::Ssl,
            (false, false) => Protocol::Plaintext,
        },
    })
}

/// Says so when the settings authenticate nothing or send a password in the clear.
fn warn_weak(
    protocol: Protocol,
    insecure: Option<&str>,
    no_hostname_check: bool,
    sasl: Option<&SaslSettings>,
) {
    match insecure {
        Some(why) if protocol.tls() => crate::log::warn(format_args!(
            "TLS certificate verification is off ({why}): traffic is encrypted, but the broker is not authenticated"
        )),
        None if no_hostname_check && protocol.tls() => crate::log::warn(format_args!(
            "TLS host name verification is off (ssl.endpoint.identification.algorithm is empty or none): a certificate from a trusted CA is accepted for any broker name"
        )),
        _ => {}
    }
    if sasl.is_some_and(|s| s.mechanism == Mechanism::Plain) && !protocol.tls() {
        // A warning, as TLS without verification is (t22 F4: a debug line only, and agents
        // run without -v).
        crate::log::warn(format_args!(
            "SASL PLAIN without TLS sends the password in the clear: anyone on the path can read it (use sasl_ssl, or a SCRAM mechanism)"
        ));
    }
}

impl SecurityProtocolArg {
    /// The protocol this flag value names.
    pub fn protocol(self) -> Protocol {
        match self {
            SecurityProtocolArg::Plaintext => Protocol::Plaintext,
            SecurityProtocolArg::Ssl => Protocol::Ssl,
            SecurityProtocolArg::SaslPlaintext => Protocol::SaslPlaintext,
            SecurityProtocolArg::SaslSsl => Protocol::SaslSsl,
        }
    }
}

impl MechanismArg {
    /// The mechanism this flag value names.
    pub fn mechanism(self) -> Mechanism {
        match self {
            MechanismArg::Plain => Mechanism::Plain,
            MechanismArg::ScramSha256 => Mechanism::ScramSha256,
            MechanismArg::ScramSha512 => Mechanism::ScramSha512,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_files_parse_like_java_ones() {
        let p = parse_properties(
            "# comment\n! also\nsecurity.protocol=SASL_SSL\nsasl.mechanism : SCRAM-SHA-512\n\n",
        )
        .unwrap();
        assert_eq!(p.get("security.protocol").unwrap(), "SASL_SSL");
        assert_eq!(p.get("sasl.mechanism").unwrap(), "SCRAM-SHA-512");
        assert!(parse_properties("novalue").is_err());
    }

    #[test]
    fn a_password_without_a_user_name_is_refused_not_ignored() {
        let dir = crate::testkit::scratch_dir("pw-no-user");
        let file = dir.join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        for flags in [
            SecurityFlags {
                password_file: Some(file.clone()),
                ..SecurityFlags::default()
            },
            SecurityFlags {
                password: Some(Secret::new("s3cret")),
                ..SecurityFlags::default()
            },
            SecurityFlags {
                properties: vec!["sasl.password=s3cret".into()],
                ..SecurityFlags::default()
            },
        ] {
            let e = resolve(&flags, None).unwrap_err().to_string();
            assert!(e.contains("SASL needs a user name"), "{e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
        // A file that cannot be read is a usage error (exit 2), as an empty one is.
        for missing in [dir.join("none"), dir.clone()] {
            let flags = SecurityFlags {
                password_file: Some(missing),
                ..SecurityFlags::default()
            };
            let e = password(&flags, &BTreeMap::new(), None).unwrap_err();
            assert!(e.downcast_ref::<UsageError>().is_some(), "{e}");
            assert!(
                e.to_string().contains("cannot read --sasl-password-file"),
                "{e}"
            );
        }
    }

    /// A listener's prefix in a broker address is the protocol when none is set, and refused when
    /// it says otherwise or names no protocol (t29 F7: `SASL_SSL://` connected in plaintext and
    /// sent a PLAIN password in the clear).
    #[test]
    fn a_listener_prefix_is_the_protocol_and_a_conflict_is_refused() {
        let none = SecurityFlags::default();
        let p = |b: &str| resolve(&none, Some(b)).map(|s| s.protocol);
        assert_eq!(p("PLAINTEXT://k:9092").unwrap(), Protocol::Plaintext);
        assert_eq!(p("ssl://k:9093,SSL://j:9093").unwrap(), Protocol::Ssl);
        assert_eq!(p("k:9092").unwrap(), Protocol::Plaintext);
        // SASL named by the address needs its user, as --security-protocol sasl_ssl does.
        let e = p("SASL_SSL://k:9095").unwrap_err().to_string();
        assert!(e.contains("SASL"), "{e}");
        let e = p("HTTP://k:9092").unwrap_err().to_string();
        assert!(
            e.contains("'HTTP://' is no Kafka listener's protocol"),
            "{e}"
        );
        let e = p("SSL://k:1,PLAINTEXT://j:2").unwrap_err().to_string();
        assert!(e.contains("different security protocols"), "{e}");
        let plain = SecurityFlags {
            protocol: Some(Protocol::Plaintext),
            ..SecurityFlags::default()
        };
        let e = resolve(&plain, Some("SASL_SSL://k:9095"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("names SASL_SSL but --security-protocol is PLAINTEXT"),
            "{e}"
        );
        let tls = SecurityFlags {
            protocol: Some(Protocol::Ssl),
            ..SecurityFlags::default()
        };
        assert_eq!(
            resolve(&tls, Some("SSL://k:9093")).unwrap().protocol,
            Protocol::Ssl
        );
    }

    /// The TLS switches take only the values they name; a typo is refused instead of deciding
    /// silently whether certificates or host names are checked.
    #[test]
    fn tls_switches_refuse_values_they_do_not_name() {
        let with = |kv: &str| {
            let flags = SecurityFlags {
                properties: vec![kv.to_string()],
                ..SecurityFlags::default()
            };
            resolve(&flags, Some("k:9093"))
        };
        let tls = |kv: &str| with(kv).unwrap().tls.unwrap();
        assert!(tls("enable.ssl.certificate.verification=false").insecure);
        assert!(tls("enable.ssl.certificate.verification=0").insecure);
        let e = with("enable.ssl.certificate.verification=flase")
            .unwrap_err()
            .to_string();
        assert!(e.contains("'flase': must be true or false"), "{e}");
        assert!(with("enable.ssl.certificate.verification=yes").is_err());
        let e = with("enable.ssl.certificate.verification=")
            .unwrap_err()
            .to_string();
        assert!(e.contains("an empty value"), "{e}");
        for kv in [
            "ssl.ca.location=",
            "bootstrap.servers=",
            "security.protocol=",
        ] {
            assert!(with(kv).is_err(), "{kv}");
        }
        assert!(tls("ssl.endpoint.identification.algorithm=").no_hostname_check);
        let e = with("ssl.endpoint.identification.algorithm=htps")
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be https, none or empty"), "{e}");
    }

    /// A certificate without its key (or a key without its certificate), and a -F file that cannot
    /// be read, are mistakes in the command: usage errors (exit 2), said before anything connects.
    #[test]
    fn half_a_client_certificate_and_a_missing_properties_file_are_usage_errors() {
        let usage = |flags: SecurityFlags| {
            let e = resolve(&flags, Some("k:9093")).unwrap_err();
            let text = e.to_string();
            assert!(e.downcast_ref::<UsageError>().is_some(), "{text}");
            text
        };
        let e = usage(SecurityFlags {
            cert_file: Some("/c.pem".into()),
            ..SecurityFlags::default()
        });
        assert!(e.contains("needs its key too: --key-file"), "{e}");
        let e = usage(SecurityFlags {
            properties: vec!["ssl.key.location=/k.pem".into()],
            ..SecurityFlags::default()
        });
        assert!(e.contains("needs its certificate too: --cert-file"), "{e}");
        let e = usage(SecurityFlags {
            properties_file: Some("/nonexistent/client.properties".into()),
            ..SecurityFlags::default()
        });
        assert!(
            e.contains("cannot read -F /nonexistent/client.properties"),
            "{e}"
        );
    }

    #[test]
    fn a_java_client_file_s_tuning_is_passed_over_and_a_flag_setting_is_named() {
        let dir = crate::testkit::scratch_dir("props-tuning");
        let file = dir.join("client.properties");
        std::fs::write(
            &file,
            "bootstrap.servers=k:9092\nrequest.timeout.ms=20000\nkey.deserializer=org.x.StringDeserializer\n",
        )
        .unwrap();
        let flags = SecurityFlags {
            properties_file: Some(file.clone()),
            ..SecurityFlags::default()
        };
        let p = properties(&flags).unwrap();
        assert_eq!(p.keys().collect::<Vec<_>>(), ["bootstrap.servers"]);
        // A security setting shipper does not know is not passed over: it changes how to connect.
        std::fs::write(&file, "sasl.kerberos.service.name=kafka\n").unwrap();
        let e = properties(&flags).unwrap_err().to_string();
        assert!(
            e.contains("unknown configuration key 'sasl.kerberos.service.name'"),
            "{e}"
        );
        // Naming the file it is in (t28 F5).
        assert!(e.starts_with(&format!("-F {}: ", file.display())), "{e}");
        // On the command line a setting with a shipper flag names it.
        let flags = SecurityFlags {
            properties: vec!["acks=all".into()],
            ..SecurityFlags::default()
        };
        let e = properties(&flags).unwrap_err().to_string();
        assert_eq!(
            e,
            "-X acks: shipper sets this with --acks (produce and tail)"
        );
    }

    #[test]
    fn java_keystore_settings_name_the_pem_settings_instead() {
        for (key, want) in [
            (
                "ssl.truststore.location=/x.p12",
                "openssl pkcs12 -in /x.p12 -nokeys",
            ),
            (
                "ssl.keystore.location=/k.p12",
                "ssl.certificate.location and ssl.key.location (openssl pkcs12 -in /k.p12 -nokeys",
            ),
            (
                "ssl.keystore.location=/k.p12\nssl.key.password=s3cret",
                "ssl.key.location",
            ),
            (
                "ssl.truststore.location=/my dir/it's.jks",
                "openssl pkcs12 -in '/my dir/it'\\''s.jks' -nokeys",
            ),
            ("ssl.keystore.location=/k.jks", "-srcstoretype JKS"),
        ] {
            let flags = SecurityFlags {
                properties: key.split('\n').map(Into::into).collect(),
                ..SecurityFlags::default()
            };
            let e = properties(&flags).unwrap_err().to_string();
            assert!(
                e.contains("Java keystore setting") && e.contains(want) && !e.contains("s3cret"),
                "{e}"
            );
        }
        // Without a keystore: the password of an encrypted PEM key (librdkafka's sense).
        let flags = SecurityFlags {
            properties: vec![
                "ssl.key.location=/my keys/c.key".into(),
                "ssl.key.password=s3cret".into(),
            ],
            ..SecurityFlags::default()
        };
        let e = properties(&flags).unwrap_err().to_string();
        assert!(
            e.contains("the password of an encrypted key")
                && e.contains("openssl pkey -in '/my keys/c.key' -out key.pem")
                && !e.contains("s3cret")
                && !e.contains("keystore"),
            "{e}"
        );
        // The key given by --key-file is the one named (it was `client.key`).
        let flags = SecurityFlags {
            properties: vec!["ssl.key.password=s3cret".into()],
            key_file: Some("/etc/pki/agent.key".into()),
            ..SecurityFlags::default()
        };
        let e = properties(&flags).unwrap_err().to_string();
        assert!(
            e.contains("openssl pkey -in /etc/pki/agent.key -out key.pem")
                && e.ends_with("give that with --key-file")
                && !e.contains("s3cret"),
            "{e}"
        );
    }

    #[test]
    fn a_malformed_jaas_line_is_said_without_its_password() {
        let flags = SecurityFlags {
            properties: vec![
                "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=alice password=s3cret;".into(),
            ],
            ..SecurityFlags::default()
        };
        let e = properties(&flags).unwrap_err().to_string();
        assert!(e.contains("expected username=\"...\""), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn java_properties_continuations_blanks_and_escapes_are_read() {
        let p = parse_properties(concat!(
            "security.protocol SASL_PLAINTEXT\n",
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n",
            "    username = \"alice\" \\\n",
            "    password = \"s3cr=t\";\n",
            "path=C:\\\\logs\\\\x\n",
            "ends.in.escaped.backslash=a\\\\\n",
            "next=1\n",
            "uni=caf\\u00e9\n",
            "kcat.style=ab\\cd\n",
        ))
        .unwrap();
        assert_eq!(p["security.protocol"], "SASL_PLAINTEXT");
        let j = &p["sasl.jaas.config"];
        assert_eq!(jaas_field(j, "username").as_deref(), Some("alice"));
        assert_eq!(jaas_field(j, "password").as_deref(), Some("s3cr=t"));
        assert_eq!(p["path"], "C:\\logs\\x");
        assert_eq!(p["ends.in.escaped.backslash"], "a\\");
        assert_eq!(p["next"], "1");
        assert_eq!(p["uni"], "café");
        assert_eq!(p["kcat.style"], "ab\\cd");
    }

    #[test]
    fn an_empty_password_variable_is_as_if_unset_and_its_line_end_is_dropped() {
        let flags = SecurityFlags {
            properties: vec!["sasl.password=from-x".into()],
            ..SecurityFlags::default()
        };
        let props = properties(&flags).unwrap();
        let pw = |env| password(&flags, &props, env).unwrap().unwrap();
        assert_eq!(pw(Some("")).expose(), "from-x");
        assert_eq!(pw(Some("\n")).expose(), "from-x");
        assert_eq!(pw(None).expose(), "from-x");
        assert_eq!(pw(Some("env-pw\n")).expose(), "env-pw");
        assert_eq!(pw(Some("env-pw\r\n")).expose(), "env-pw");
        let none = SecurityFlags::default();
        assert!(password(&none, &BTreeMap::new(), Some(""))
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_jaas_option_is_matched_by_its_whole_name() {
        let j = r#"x.PlainLoginModule required serviceusername="x" username="shipper" password='p "username=y"';"#;
        assert_eq!(jaas_field(j, "username").as_deref(), Some("shipper"));
        assert_eq!(
            jaas_field(j, "password").as_deref(),
            Some("p \"username=y\"")
        );
        let j = r#"x.PlainLoginModule required note="username=evil" username="ok" password="p";"#;
        assert_eq!(jaas_field(j, "username").as_deref(), Some("ok"));
    }

    #[test]
    fn jaas_lines_give_user_and_password() {
        let j = r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" password="s3cr=t";"#;
        assert_eq!(jaas_field(j, "username").as_deref(), Some("alice"));
        assert_eq!(jaas_field(j, "password").as_deref(), Some("s3cr=t"));
        let j = r#"...PlainLoginModule required username='bob' password='it"s';"#;
        assert_eq!(jaas_field(j, "username").as_deref(), Some("bob"));
        assert_eq!(jaas_field(j, "password").as_deref(), Some("it\"s"));
    }
}
