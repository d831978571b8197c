//! The config file: a full example, and every mistake with its line.

use clap::Parser;

use super::*;
use crate::cli::Cli;

fn common() -> Common {
    Cli::parse_from(["shipper", "metadata"]).common
}

fn write(name: &str, text: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("shipper-config-{name}-{}.toml", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

fn error(name: &str, text: &str) -> String {
    let p = write(name, text);
    let e = load(&p, &common(), None).unwrap_err();
    assert!(
        e.downcast_ref::<UsageError>().is_some(),
        "a config mistake is a usage error: {e}"
    );
    e.to_string()
}

const FULL: &str = r#"
brokers = ["kafka1:9092", "kafka2:9092"]
acks = "all"
compression = "zstd"
checkpoint = "/var/lib/shipper/agent.checkpoint"
sasl_username = "shipper"
sasl_password = "${SHIPPER_TEST_CONFIG_PW}"
security_protocol = "sasl_plaintext"
metrics_listen = "127.0.0.1:9898"

[[input]]
paths = ["/var/log/nginx/*.log"]
exclude = ["*.gz"]
topic = "nginx"

[[input]]
name = "app"
paths = ["/var/log/app/*.log"]
topic = "app-{file_stem}"
key = "{hostname}"
headers = { source = "{path}", env = "prod" }
multiline = { start = '^\d{4}-\d{2}-\d{2}', max_lines = 500, timeout_ms = 1000 }
"#;

#[test]
fn the_readme_example_loads() {
    std::env::set_var("SHIPPER_TEST_CONFIG_PW", "s3cret");
    let s = load(&write("full", FULL), &common(), None).unwrap();
    assert_eq!(s.kafka.brokers, vec!["kafka1:9092", "kafka2:9092"]);
    assert_eq!(
        s.kafka.security.sasl.as_ref().unwrap().password.expose(),
        "s3cret"
    );
    assert_eq!(s.engine.inputs.len(), 2);
    let app = &s.engine.inputs[1];
    assert_eq!(app.name, "app");
    let r = app.route.resolve(Path::new("/var/log/app/web.log"), "h1");
    assert_eq!(r.topic, "app-web");
    assert_eq!(r.key.as_deref(), Some(&b"h1"[..]));
    assert!(r.headers.contains(&(b"env".to_vec(), b"prod".to_vec())));
    assert_eq!(app.multiline.as_ref().unwrap().max_lines, 500);
    assert!(s.engine.inputs[0].patterns[0].matches(Path::new("/var/log/nginx/a.log")));
    assert!(!s.engine.inputs[0].patterns[0].matches(Path::new("/var/log/nginx/a.log.gz")));
    assert_eq!(s.options.metrics_listen.as_deref(), Some("127.0.0.1:9898"));
    assert!(
        !format!("{s:?}").contains("s3cret"),
        "the password must not print"
    );
}

#[test]
fn brokers_paths_and_exclude_may_each_be_one_string() {
    let text = "brokers = \"kafka1:9092,kafka2:9092\"\n[[input]]\npaths = \"/var/log/app/*.log\"\nexclude = \"*.gz\"\ntopic = \"t\"\n";
    let s = load(&write("strings", text), &common(), None).unwrap();
    assert_eq!(s.kafka.brokers, vec!["kafka1:9092", "kafka2:9092"]);
    let p = &s.engine.inputs[0].patterns[0];
    assert!(p.matches(Path::new("/var/log/app/a.log")));
    assert!(!p.matches(Path::new("/var/log/app/a.log.gz")));
    // Neither a string nor a list: an error on its line that says what is expected.
    let e = error("number", "[[input]]\npaths = 5\ntopic = \"t\"\n");
    assert!(
        e.contains(":2:") && e.contains("a string or a list of strings"),
        "{e}"
    );
    let e = error("empty", "[[input]]\npaths = []\ntopic = \"t\"\n");
    assert!(e.contains("at least one path"), "{e}");
}

#[test]
fn a_single_bracket_input_table_is_told_to_take_double_brackets() {
    let e = error(
        "single-bracket",
        "checkpoint = \"/tmp/c\"\n\n[input]\npaths = [\"/x\"]\ntopic = \"t\"\n",
    );
    assert!(
        e.contains(":3:") && e.contains("write [[input]] (double brackets)"),
        "{e}"
    );
}

#[test]
fn a_misspelt_key_suggests_the_closest_one() {
    let e = error(
        "typo",
        "compresion = \"zstd\"\n[[input]]\npaths = [\"/x\"]\ntopic = \"t\"\n",
    );
    assert!(
        e.contains(":1:") && e.contains("unknown field `compresion`: did you mean `compression`?"),
        "{e}"
    );
    let e = error("typo2", "[[input]]\npaths = [\"/x\"]\ntopik = \"t\"\n");
    assert!(e.contains("did you mean `topic`?"), "{e}");
    // Nothing close: the whole list, as before.
    let e = error(
        "far",
        "frobnicate = 1\n[[input]]\npaths = [\"/x\"]\ntopic = \"t\"\n",
    );
    assert!(e.contains("expected one of `brokers`"), "{e}");
}

#[test]
fn an_unknown_key_is_an_error_on_its_line() {
    let e = error(
        "unknown",
        "brokers = [\"a:1\"]\n\n[[input]]\npaths = [\"/x\"]\ntopic = \"t\"\ntopik = \"oops\"\n",
    );
    assert!(e.contains(":6:") && e.contains("topik"), "{e}");
}

#[test]
fn a_wrong_type_is_an_error_on_its_line() {
    let e = error(
        "type",
        "linger_ms = \"five\"\n[[input]]\npaths = [\"/x\"]\ntopic = \"t\"\n",
    );
    assert!(e.contains(":1:"), "{e}");
}

#[test]
fn a_password_of_the_wrong_type_is_not_quoted_in_the_error() {
    for (value, secret) in [
        ("20261129", "20261129"),
        ("0x5ec7e7", "6211559"),
        ("3.14159", "3.14159"),
    ] {
        let e = error(
            "pw-type",
            &format!(
                "brokers = [\"a:1\"]\nsasl_username = \"u\"\nsasl_password = {value}\n[[input]]\npaths = [\"/x\"]\ntopic = \"t\"\n"
            ),
        );
        assert!(
            e.contains(":3:") && e.contains("sasl_password must be a string in quotes"),
            "{e}"
        );
        assert!(!e.contains(secret), "{e}");
    }
}

/// `[sasl_password]` written as a table: the key is named from its own line, never with the text
/// of the next one (it was "[sasl_password]\nvalue must be a string").
#[test]
fn a_password_written_as_a_table_is_named_without_the_next_line() {
    let e = error(
        "pw-table",
        "brokers = [\"a:1\"]\n[[input]]\npaths = [\"/x\"]\ntopic = \"t\"\n[sasl_password]\nS3cretWord = \"x\"\n",
    );
    assert!(!e.contains("S3cretWord") && !e.contains("\\n"), "{e}");
    assert!(e.contains("sasl_password"), "{e}");
}

#[test]
fn a_password_with_a_bad_escape_says_so_without_its_value() {
    let e = error(
        "pw-escape",
        "brokers = [\"a:1\"]\nsasl_username = \"u\"\nsasl_password = \"Sup3r\\qSecret\"\n[[input]]\npaths = [\"/x\"]\ntopic = \"t\"\n",
    );
    assert!(
        e.contains(":3:") && e.contains("sasl_password: missing escaped value"),
        "{e}"
    );
    assert!(!e.contains("Sup3r") && !e.contains("Secret"), "{e}");
}

#[test]
fn a_bad_regex_is_an_error_on_its_line() {
    let e = error(
        "regex",
        "[[input]]\npaths = [\"/x\"]\ntopic = \"t\"\nmultiline = { start = '([' }\n",
    );
    assert!(e.contains(":4:") && e.contains("bad regex"), "{e}");
}

/// `path_header`, the tail flag's name, is shown the file's way to say it.
#[test]
fn path_header_in_a_file_is_shown_as_a_header_template() {
    for (name, text) in [
        (
            "ph-input",
            "[[input]]\npaths = [\"/x\"]\ntopic = \"t\"\npath_header = \"source\"\n",
        ),
        (
            "ph-top",
            "path_header = \"source\"\n[[input]]\npaths = [\"/x\"]\ntopic = \"t\"\n",
        ),
    ] {
        let e = error(name, text);
        assert!(
            e.contains("unknown field `path_header`")
                && e.contains("headers = { source = \"{path}\" }"),
            "{e}"
        );
    }
}

/// `continue` instead of `start`: lines matching it join the line before. Exactly one of the two.
#[test]
fn multiline_takes_start_or_continue_and_exactly_one_of_them() {
    use crate::tail::multiline::Rule;
    let input = "[[input]]\npaths = [\"/x\"]\ntopic = \"t\"\n";
    let s = load(
        &write(
            "ml-continue",
            &format!("{input}multiline = {{ continue = '^\\s', max_lines = 9 }}\n"),
        ),
        &common(),
        None,
    )
    .unwrap();
    let m = s.engine.inputs[0].multiline.as_ref().unwrap();
    assert_eq!((m.rule, m.max_lines), (Rule::Continue, 9));
    assert!(m.pattern.is_match(b"\tat x") && !m.pattern.is_match(b"ERROR"));
    let e = error(
        "ml-both",
        &format!("{input}multiline = {{ start = '^2', continue = '^\\s' }}\n"),
    );
    assert!(
        e.contains(":4: multiline: give start") && e.ends_with("not both"),
        "{e}"
    );
    let e = error(
        "ml-neither",
        &format!("{input}multiline = {{ max_lines = 5 }}\n"),
    );
    assert!(
        e.contains(":4: multiline: give start") && e.contains("or continue"),
        "{e}"
    );
    let e = error(
        "ml-bad",
        &format!("{input}multiline = {{ continue = '([' }}\n"),
    );
    assert!(e.contains(":4:") && e.contains("bad regex"), "{e}");
}

#[test]
fn a_template_that_cannot_resolve_is_an_error_on_its_line() {
    let e = error(
        "template",
        "[[input]]\npaths = [\"/x\"]\ntopic = \"app-{file_steam}\"\n",
    );
    assert!(
        e.contains(":3:") && e.contains("unknown placeholder {file_steam}"),
        "{e}"
    );
    let e = error(
        "topicname",
        "[[input]]\npaths = [\"/x\"]\ntopic = \"my topic\"\n",
    );
    assert!(e.contains(":3:") && e.contains("not a topic name"), "{e}");
    // Kafka's internal topics: no client may write to them (t36 F2: retried for ever).
    let e = error(
        "internal",
        "[[input]]\npaths = [\"/x\"]\ntopic = \"__consumer_offsets\"\n",
    );
    assert!(
        e.contains(":3:") && e.contains("one of Kafka's internal topics"),
        "{e}"
    );
}

#[test]
fn an_unset_variable_is_an_error_naming_it() {
    let e = error("env", "sasl_password = \"${SHIPPER_TEST_UNSET_VARIABLE}\"\n[[input]]\npaths = [\"/x\"]\ntopic = \"t\"\n");
    assert!(
        e.contains(":1:") && e.contains("SHIPPER_TEST_UNSET_VARIABLE is not set"),
        "{e}"
    );
}

#[test]
fn inputs_need_paths_a_topic_and_distinct_names() {
    assert!(error("noinput", "brokers = [\"a:1\"]\n").contains("no [[input]]"));
    assert!(error("notopic", "[[input]]\npaths = [\"/x\"]\n").contains("topic"));
    let e = error("dup", "[[input]]\nname = \"a\"\npaths = [\"/x\"]\ntopic = \"t\"\n[[input]]\nname = \"a\"\npaths = [\"/y\"]\ntopic = \"t\"\n");
    assert!(e.contains("two inputs are named 'a'"), "{e}");
}

#[test]
fn a_config_path_to_an_endless_or_huge_file_fails_at_once_without_filling_memory() {
    for (path, why) in [
        ("/dev/zero", "larger than 1 MiB"),
        ("/tmp", "is a directory"),
    ] {
        let e = load(Path::new(path), &common(), None).unwrap_err();
        assert!(e.downcast_ref::<UsageError>().is_some(), "{e}");
        let e = e.to_string();
        assert!(e.starts_with(&format!("cannot read {path}: ")), "{e}");
        assert!(e.contains(why), "{e}");
    }
    let binary = std::env::temp_dir().join(format!("shipper-config-bin-{}", std::process::id()));
    std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
    let e = load(&binary, &common(), None).unwrap_err().to_string();
    assert!(e.contains("not UTF-8 text"), "{e}");
    std::fs::remove_file(&binary).unwrap();
}

#[test]
fn numbers_outside_what_the_flags_take_are_refused_not_quietly_changed() {
    // `max_line_bytes = 0` used to ship every line as its first byte.
    let input = "[[input]]\npaths = [\"/tmp/x.log\"]\ntopic = \"t\"\n";
    for (line, want) in [
        (
            "max_line_bytes = 0",
            "max_line_bytes = 0: must be at least 1",
        ),
        (
            "buffer_bytes = 100",
            "buffer_bytes = 100: must be from 65536 to 1073741824",
        ),
        (
            "buffer_bytes = 2000000000000",
            "buffer_bytes = 2000000000000: must be from 65536 to 1073741824",
        ),
        ("scan_ms = 0", "scan_ms = 0: must be from 10 to 3600000"),
        (
            "checkpoint_ms = 1",
            "checkpoint_ms = 1: must be from 10 to 3600000",
        ),
        ("stats = 0", "stats = 0: must be from 1 to 86400"),
        (
            "batch_bytes = 0",
            "batch_bytes = 0: must be from 1024 to 67108864",
        ),
        (
            "max_message_bytes = 0",
            "max_message_bytes = 0: must be from 1024",
        ),
        (
            "max_in_flight = 101",
            "max_in_flight = 101: must be from 1 to 100",
        ),
        ("metrics_listen = \"9898\"", "expected host:port"),
        ("metrics_listen = \"127.0.0.1:99999\"", "expected host:port"),
        ("checkpoint = \"\"", "checkpoint is an empty path"),
        (
            "ca_file = \"/nonexistent/ca.pem\"",
            "ca_file: cannot read /nonexistent/ca.pem",
        ),
    ] {
        let e = error("range", &format!("\n{line}\n{input}"));
        assert!(e.contains(".toml:2: ") && e.contains(want), "{line}: {e}");
    }
    let e = error(
        "range-ml",
        &format!("{input}multiline = {{ start = '^x', max_bytes = 0 }}\n"),
    );
    assert!(
        e.contains(":4: multiline.max_bytes = 0: must be at least 1"),
        "{e}"
    );
}

/// The README's systemd unit: systemd takes only whole lines as comments, so a `# ...` after a value
/// becomes part of it (a unit that does not start: "Invalid user/group name").
#[test]
fn the_readme_systemd_unit_has_comments_on_their_own_lines_only() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("```ini\n[Unit]")
        .expect("the unit is in the README");
    let unit = &readme[start + 7..];
    let unit = &unit[..unit.find("```").unwrap()];
    let mut settings = 0;
    for line in unit.lines() {
        let line = line.trim();
        if line.is_empty()
            || line.starts_with('#')
            || line.starts_with(';')
            || line.starts_with('[')
        {
            continue;
        }
        let (key, value) = line.split_once('=').expect(line);
        assert!(key.chars().all(|c| c.is_ascii_alphanumeric()), "{line}");
        assert!(
            !value.contains('#'),
            "an inline comment is part of the value: {line}"
        );
        settings += 1;
    }
    assert!(settings >= 10, "{unit}");
}

#[test]
fn a_password_given_only_by_environment_variables_is_not_held_by_the_file() {
    assert!(!holds_literal("${KAFKA_PASSWORD}"));
    assert!(!holds_literal("${A}${B}"));
    assert!(!holds_literal(""));
    assert!(holds_literal("s3cret"));
    assert!(holds_literal("pre${A}"));
    assert!(holds_literal("${A}post"));
    assert!(holds_literal("${unclosed"));
    assert!(holds_literal("$$"));
}

#[test]
fn a_listen_address_is_checked_alike_from_the_flag_and_the_file() {
    use crate::settings::parse_listen;
    assert_eq!(parse_listen("127.0.0.1:9898").unwrap(), "127.0.0.1:9898");
    assert_eq!(parse_listen("[::1]:9898").unwrap(), "[::1]:9898");
    assert!(parse_listen("9898")
        .unwrap_err()
        .contains("expected host:port"));
    assert!(parse_listen("localhost:99999").is_err());
    let e = parse_listen(":9898").unwrap_err();
    assert!(e.contains("0.0.0.0:9898 for every address"), "{e}");
    let e = Cli::try_parse_from(["shipper", "tail", "--metrics-listen", "9898", "/x", "t"])
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.exit_code(), 2);
}

/// Relative paths are the config file's directory's, not the working directory's (t22 F2: a
/// relative checkpoint went wherever the agent was started, and each start elsewhere shipped
/// everything again).
#[test]
fn relative_paths_are_taken_from_the_config_files_directory() {
    let dir = std::env::temp_dir().join(format!("shipper-config-rel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("agent.toml");
    std::fs::write(
        &p,
        "brokers = \"k:9092\"\ncheckpoint = \"state/agent.checkpoint\"\nfollow_symlinks = true\nsymlink_roots = [\"shared\", \"/srv/logs\"]\n[[input]]\npaths = \"logs/*.log\"\ntopic = \"t\"\n",
    )
    .unwrap();
    let s = load(&p, &common(), None).unwrap();
    assert_eq!(s.options.checkpoint, dir.join("state/agent.checkpoint"));
    assert_eq!(
        s.engine.policy.symlink_roots,
        [dir.join("shared"), PathBuf::from("/srv/logs")]
    );
    let shown = format!("{:?}", s.engine.inputs[0].patterns[0]);
    assert!(
        shown.contains(&dir.join("logs").display().to_string()),
        "{shown}"
    );
}

/// -X and -F beside --config are refused, not dropped when the file sets the same (t22 F1).
#[test]
fn properties_beside_a_config_file_are_refused() {
    let p = write(
        "xf",
        "brokers = \"k:9092\"\n[[input]]\npaths = \"/x/*.log\"\ntopic = \"t\"\n",
    );
    let mut c = common();
    c.properties = vec!["sasl.password=x".into()];
    let e = load(&p, &c, None).unwrap_err();
    assert!(e.downcast_ref::<UsageError>().is_some(), "{e}");
    assert!(
        e.to_string()
            .contains("-X cannot be combined with --config"),
        "{e}"
    );
    assert!(!e.to_string().contains("=x"), "{e}");
}

/// `acks = 1` as Kafka's configs write it (t22 F6), and a top-level key below an input says where it
/// belongs (t22 F5).
#[test]
fn acks_may_be_a_number_and_a_top_level_key_below_an_input_says_so() {
    let input = "[[input]]\npaths = \"/x/*.log\"\ntopic = \"t\"\n";
    for (v, want) in [
        ("1", 1),
        ("-1", -1),
        ("0", 0),
        ("\"all\"", -1),
        ("\"ALL\"", -1),
        ("\"-1\"", -1),
    ] {
        let p = write(
            "acks",
            &format!("brokers = \"k:9092\"\nacks = {v}\n{input}"),
        );
        assert_eq!(
            load(&p, &common(), None).unwrap().producer.acks,
            want,
            "{v}"
        );
    }
    let e = error("acks2", &format!("brokers = \"k:9092\"\nacks = 2\n{input}"));
    assert!(e.contains("unknown acks '2' (all or -1, 1, 0)"), "{e}");
    // t26: idempotence asked for with acks that cannot have it is refused, naming its line.
    let e = error(
        "idem",
        &format!("brokers = \"k:9092\"\nacks = 1\nidempotence = true\n{input}"),
    );
    assert!(
        e.contains(":3:") && e.contains("idempotence = true needs acks"),
        "{e}"
    );
    let p = write(
        "idem2",
        &format!("brokers = \"k:9092\"\nacks = 1\nidempotence = false\n{input}"),
    );
    assert!(!load(&p, &common(), None).unwrap().producer.idempotence);
    // t24 F5: a float is refused by the key's own message, not as "invalid type".
    let e = error(
        "acks3",
        &format!("brokers = \"k:9092\"\nacks = 1.0\n{input}"),
    );
    assert!(e.contains(":2:") && e.contains("unknown acks '1.0'"), "{e}");
    let e = error(
        "late",
        &format!("brokers = \"k:9092\"\n{input}linger_ms = 50\n"),
    );
    assert!(
        e.contains(":5:")
            && e.contains("`linger_ms` is a top-level setting")
            && e.contains("move it above"),
        "{e}"
    );
    let e = error(
        "late3",
        &format!("brokers = \"k:9092\"\n{input}sasl_password = \"per-secret\"\n"),
    );
    assert!(e.contains("`sasl_password` is a top-level setting"), "{e}");
    assert!(!e.contains("per-secret"), "{e}");
    let e = error(
        "late2",
        &format!("brokers = \"k:9092\"\n{input}no_such = 50\n"),
    );
    assert!(!e.contains("top-level"), "{e}");
}

/// Mistakes found when the settings are put together name the file (and the key's line) and the
/// file's keys, not command-line flags (t22 F3: "no brokers given (-b host:port)" for `brokers = []`).
#[test]
fn settings_that_do_not_fit_together_are_said_in_the_files_terms() {
    let input = "checkpoint = \"/x/ck\"\n[[input]]\npaths = \"/x/*.log\"\ntopic = \"t\"\n";
    let e = error("nobrokers", &format!("brokers = []\n{input}"));
    assert!(
        e.contains(":1: no brokers given (brokers = \"host:port\")"),
        "{e}"
    );
    let e = error("noport", &format!("brokers = \"k:99999\"\n{input}"));
    assert!(e.contains(":1: broker address 'k:99999'"), "{e}");
    let e = error(
        "nouser",
        &format!("brokers = \"k:9092\"\nsecurity_protocol = \"sasl_ssl\"\n{input}"),
    );
    assert!(
        e.contains(".toml: SASL needs a user name (sasl_username)"),
        "{e}"
    );
    assert!(!e.contains("--"), "{e}");
}

/// `timeout = 30` as a number, as `--timeout 30` takes it (t28 F2: "expected a string"); one of
/// 1000 or more without a unit asks for one, naming its line.
#[test]
fn a_timeout_may_be_a_number_of_seconds() {
    let input = "[[input]]\npaths = \"/x/*.log\"\ntopic = \"t\"\n";
    for v in ["30", "\"30\"", "\"30s\""] {
        let p = write(
            "timeout",
            &format!("brokers = \"k:9092\"\ntimeout = {v}\nunhealthy_after = {v}\n{input}"),
        );
        let s = load(&p, &common(), None).unwrap();
        assert_eq!(s.kafka.timeout, Some(Duration::from_secs(30)), "{v}");
        assert_eq!(s.options.unhealthy_after, Duration::from_secs(30), "{v}");
    }
    let e = error(
        "timeout2",
        &format!("brokers = \"k:9092\"\ntimeout = 5000\n{input}"),
    );
    assert!(e.contains(":2:") && e.contains("give one"), "{e}");
}

/// `paths = [""]` is said as an empty path, on its line (t28 F5: refused as the config file's
/// directory, which the user never wrote).
#[test]
fn an_empty_path_in_paths_is_said_as_such() {
    let e = error(
        "emptypath",
        "brokers = \"k:9092\"\n[[input]]\npaths = [\"\"]\ntopic = \"t\"\n",
    );
    assert!(
        e.contains(":3:") && e.contains("an empty path in paths"),
        "{e}"
    );
}

/// Who else may change or replace the config file is said: every user, a group other than root's,
/// another owner, a directory others may write to (t49: only "every user" was).
#[test]
fn those_who_may_change_or_replace_the_config_file_are_named() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("shipper-config-perm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = dir.join("agent.toml");
    std::fs::write(&p, "").unwrap();
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let set = |mode| std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    set(0o600);
    assert!(write_risks(&p, me).is_empty(), "{:?}", write_risks(&p, me));
    set(0o666);
    assert!(write_risks(&p, me)[0].contains("every user"));
    set(0o660);
    let gid = std::fs::metadata(&p)
        .map(|m| std::os::unix::fs::MetadataExt::gid(&m))
        .unwrap();
    assert_eq!(write_risks(&p, me).len(), usize::from(gid != 0));
    set(0o600);
    // Owned by another user (root may give it away; anyone else sees root's files as root's).
    if me == 0 {
        std::os::unix::fs::chown(&p, Some(4242), None).unwrap();
        let risks = write_risks(&p, me);
        assert!(
            risks.iter().any(|r| r.contains("owned by user 4242")),
            "{risks:?}"
        );
        std::os::unix::fs::chown(&p, Some(0), None).unwrap();
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(write_risks(&p, me)
        .iter()
        .any(|r| r.contains("its directory")));
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    assert!(
        write_risks(&p, me).is_empty(),
        "the sticky bit keeps others' hands off"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A config reached through a link is judged where the file is too: a link in a safe directory
/// into one any user may write to (or a link another user owns) is said; it was not.
#[test]
fn a_config_linked_into_a_directory_anyone_may_write_to_is_said() {
    use std::os::unix::fs::PermissionsExt;
    let base = std::env::temp_dir().join(format!("shipper-config-link-{}", std::process::id()));
    let (safe, open) = (base.join("etc"), base.join("drop"));
    for (d, mode) in [(&base, 0o755), (&safe, 0o755), (&open, 0o777)] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let real = open.join("agent.toml");
    std::fs::write(&real, "").unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = safe.join("agent.toml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let risks = write_risks(&link, me);
    assert!(
        risks
            .iter()
            .any(|r| r.contains("its link leads into") && r.contains("drop")),
        "{risks:?}"
    );
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        write_risks(&link, me).is_empty(),
        "{:?}",
        write_risks(&link, me)
    );
    if me == 0 {
        std::os::unix::fs::lchown(&link, Some(4242), None).unwrap();
        let risks = write_risks(&link, me);
        assert!(
            risks
                .iter()
                .any(|r| r.contains("a link owned by user 4242")),
            "{risks:?}"
        );
    }
    std::fs::remove_dir_all(&base).unwrap();
}

/// Numbers with a meaning past which they are mistakes are refused on their line, up to the bound
/// the flag has too (`stats = 18446744073709551615` panicked, a linger of years overflowed a timer).
#[test]
fn settings_beyond_their_bounds_are_errors_on_their_line() {
    let input = "[[input]]\npaths = [\"/x\"]\ntopic = \"t\"\n";
    for (line, said) in [
        (
            "stats = 18446744073709551615",
            "stats = 18446744073709551615: must be from 1 to 86400",
        ),
        (
            "linger_ms = 900001",
            "linger_ms = 900001: must be from 0 to 900000",
        ),
        (
            "scan_ms = 3600001",
            "scan_ms = 3600001: must be from 10 to 3600000",
        ),
        (
            "checkpoint_ms = 5",
            "checkpoint_ms = 5: must be from 10 to 3600000",
        ),
        (
            "shutdown_timeout_ms = 99999999999",
            "must be from 0 to 86400000",
        ),
    ] {
        let e = error("bounds", &format!("brokers = \"k:9092\"\n{line}\n{input}"));
        assert!(e.contains(":2:") && e.contains(said), "{line}: {e}");
    }
    let e = error(
        "owners",
        &format!("brokers = \"k:9092\"\nowners = [\"\"]\n{input}"),
    );
    assert!(
        e.contains(":2:") && e.contains("owners: names no user"),
        "{e}"
    );
}

/// An empty file (a FIFO with no writer reads as one) says so, not which key it lacks.
#[test]
fn an_empty_config_file_says_it_is_empty() {
    let e = error("empty", " \n\n");
    assert!(e.contains("it is empty (a pipe with no writer?)"), "{e}");
}
