//! Where a file's lines go: topic, key and headers from templates resolved once per file when it is
//! first followed. Placeholders: `{file_name}` (`app.log`), `{file_stem}` (`app`), `{dir}` (the
//! directory's path), `{path}` (the file's path) and `{hostname}`; `{{` and `}}` are literal braces.
//!
//! A topic name must be what Kafka allows (`[a-zA-Z0-9._-]`, at most 249 bytes): other bytes of a
//! resolved name become `_`, and that is said once per name.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    FileName,
    FileStem,
    Dir,
    Path,
    Hostname,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// The placeholders a template may use.
pub const PLACEHOLDERS: &str = "{file_name} {file_stem} {dir} {path} {hostname}";

impl Template {
    /// Parses a template; an unknown placeholder or an unclosed brace is an error naming it.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while let Some(i) = rest.find(['{', '}']) {
            lit.push_str(&rest[..i]);
            let c = rest.as_bytes()[i];
            let after = &rest[i + 1..];
            if after.as_bytes().first() == Some(&c) {
                lit.push(c as char);
                rest = &after[1..];
                continue;
            }
            if c == b'}' {
                return Err(format!(
                    "unmatched '}}' in '{s}' (write '}}}}' for a brace)"
                ));
            }
            let Some(end) = after.find('}') else {
                return Err(format!("unclosed '{{' in '{s}'"));
            };
            let part = match &after[..end] {
                "file_name" => Part::FileName,
                "file_stem" => Part::FileStem,
                "dir" => Part::Dir,
                "path" => Part::Path,
                "hostname" => Part::Hostname,
                other => {
                    // `${VAR}` here is a Filebeat or Vector habit: say where the environment is read.
                    let env = match lit.ends_with('$') {
                        true => "; ${VAR} from the environment is replaced only in brokers, the SASL settings, file paths and input paths",
                        false => "",
                    };
                    return Err(format!(
                        "unknown placeholder {{{other}}} in '{s}' (known: {PLACEHOLDERS}){env}"
                    ));
                }
            };
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(part);
            rest = &after[end + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template { parts })
    }

    /// A template that is just `s`.
    pub fn literal(s: &str) -> Template {
        Template {
            parts: vec![Part::Lit(s.to_string())],
        }
    }

    /// Whether the template uses no placeholder.
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    /// The template for `path` on host `hostname` (bytes: a path need not be UTF-8).
    pub fn render(&self, path: &Path, hostname: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.extend_from_slice(s.as_bytes()),
                Part::FileName => {
                    out.extend_from_slice(path.file_name().map_or(&[][..], |n| n.as_bytes()))
                }
                Part::FileStem => {
                    out.extend_from_slice(path.file_stem().map_or(&[][..], |n| n.as_bytes()))
                }
                Part::Dir => out
                    .extend_from_slice(path.parent().map_or(&[][..], |d| d.as_os_str().as_bytes())),
                Part::Path => out.extend_from_slice(path.as_os_str().as_bytes()),
                Part::Hostname => out.extend_from_slice(hostname.as_bytes()),
            }
        }
        out
    }
}

/// A topic name Kafka accepts: other bytes become `_`, at most 249 bytes, never empty, `.`, or `..`.
/// The second value says whether anything had to change.
pub fn topic_name(raw: &[u8]) -> (String, bool) {
    let mut s: String = raw
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                b as char
            } else {
                '_'
            }
        })
        .collect();
    s.truncate(249);
    if s.is_empty() || s == "." || s == ".." {
        s = "_".repeat(s.len().max(1));
    }
    let changed = s.as_bytes() != raw;
    (s, changed)
}

/// How an input routes its files' lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// The topic.
    pub topic: Template,
    /// The record key, if any.
    pub key: Option<Template>,
    /// Record headers.
    pub headers: Vec<(String, Template)>,
}

/// One file's route, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The topic (a valid name).
    pub topic: String,
    /// The record key.
    pub key: Option<Vec<u8>>,
    /// Record headers.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whether the topic name had to be made valid.
    pub renamed: bool,
}

impl RouteSpec {
    /// The route of one file.
    pub fn resolve(&self, path: &Path, hostname: &str) -> Resolved {
        let (topic, renamed) = topic_name(&self.topic.render(path, hostname));
        let key = self.key.as_ref().map(|k| k.render(path, hostname));
        let headers = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.render(path, hostname)))
            .collect();
        Resolved {
            topic,
            key,
            headers,
            renamed,
        }
    }
}

/// This host's name (from the kernel), for `{hostname}`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_resolve_every_placeholder() {
        let t =
            Template::parse("app-{file_stem}.{file_name}@{hostname}:{dir}|{path}{{x}}").unwrap();
        let out = t.render(Path::new("/var/log/app/web.log"), "h1");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "app-web.web.log@h1:/var/log/app|/var/log/app/web.log{x}"
        );
        assert!(Template::parse("plain").unwrap().is_constant());
    }

    #[test]
    fn bad_templates_are_errors_naming_the_problem() {
        assert!(Template::parse("{nope}")
            .unwrap_err()
            .contains("unknown placeholder {nope}"));
        let e = Template::parse("${HOME}").unwrap_err();
        assert!(e.contains("replaced only in brokers"), "{e}");
        assert!(!Template::parse("{nope}")
            .unwrap_err()
            .contains("environment"));
        assert!(Template::parse("a{file_stem")
            .unwrap_err()
            .contains("unclosed"));
        assert!(Template::parse("a}b").unwrap_err().contains("unmatched"));
    }

    #[test]
    fn topic_names_are_made_valid() {
        assert_eq!(topic_name(b"app-web.v1_2"), ("app-web.v1_2".into(), false));
        assert_eq!(topic_name(b"my app/\xff"), ("my_app__".into(), true));
        assert_eq!(topic_name(b""), ("_".into(), true));
        assert_eq!(topic_name(&[b'a'; 300]).0.len(), 249);
    }
}
