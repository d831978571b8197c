//! TLS, mTLS and SASL against the real secured broker (`scripts/kafka-up --secure`): every command over
//! every listener and mechanism, checked with kcat; every failure with its message and exit code;
//! sessions renewed through a stream; secrets kept out of every printout.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

const SASL_SSL: &str = "127.0.0.1:9095";
const MTLS: &str = "127.0.0.1:9096";
const SASL_PLAINTEXT: &str = "127.0.0.1:9097";
const REAUTH: &str = "127.0.0.1:9098";
const PASSWORD: &str = "shipper-secret";

/// The secure broker's certificate directory, or `None` (skipped) outside CI when it is not running.
pub fn secure() -> Option<PathBuf> {
    let b = broker()?;
    let dir = PathBuf::from(std::env::var("SHIPPER_RUN").unwrap_or("/tmp/shipper-kafka".into()))
        .join("secure");
    let up = dir.join("ca.pem").exists() && std::net::TcpStream::connect(SASL_SSL).is_ok();
    if !up {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but the secure listeners are not up (scripts/test starts kafka-up --secure)");
        }
        eprintln!("SKIPPED: no secure broker (scripts/kafka-up --secure)");
        return None;
    }
    let _ = b;
    Some(dir)
}

fn password_file() -> PathBuf {
    let p = std::env::temp_dir().join(format!("shipper-pw-{}", std::process::id()));
    std::fs::write(&p, format!("{PASSWORD}\n")).unwrap();
    let mut perm = std::fs::metadata(&p).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o600);
    std::fs::set_permissions(&p, perm).unwrap();
    p
}

/// The flags for each way in.
pub fn ways(dir: &Path) -> Vec<(&'static str, Vec<String>)> {
    let ca = dir.join("ca.pem").display().to_string();
    let pw = password_file().display().to_string();
    let sasl = |mech: &str, protocol: &str, addr: &str| {
        let mut v: Vec<String> = vec![
            "-b",
            addr,
            "--security-protocol",
            protocol,
            "--sasl-mechanism",
            mech,
        ]
        .into_iter()
        .map(String::from)
        .collect();
        v.extend([
            "--sasl-username".into(),
            "shipper".into(),
            "--sasl-password-file".into(),
            pw.clone(),
        ]);
        if protocol == "sasl_ssl" {
            v.extend(["--ca-file".into(), ca.clone()]);
        }
        v
    };
    vec![
        ("sasl_ssl PLAIN", sasl("PLAIN", "sasl_ssl", SASL_SSL)),
        (
            "sasl_ssl SCRAM-SHA-256",
            sasl("SCRAM-SHA-256", "sasl_ssl", SASL_SSL),
        ),
        (
            "sasl_ssl SCRAM-SHA-512",
            sasl("SCRAM-SHA-512", "sasl_ssl", SASL_SSL),
        ),
        (
            "sasl_plaintext SCRAM-SHA-512",
            sasl("SCRAM-SHA-512", "sasl_plaintext", SASL_PLAINTEXT),
        ),
        (
            "ssl with a client certificate",
            vec![
                "-b".into(),
                MTLS.into(),
                "--security-protocol".into(),
                "ssl".into(),
                "--ca-file".into(),
                ca.clone(),
                "--cert-file".into(),
                dir.join("client.pem").display().to_string(),
                "--key-file".into(),
                dir.join("client.key").display().to_string(),
            ],
        ),
    ]
}

/// `shipper` with no `-b` of the harness's own.
fn run(args: &[String], stdin: &[u8]) -> std::process::Output {
    let mut c = Command::new(shipper_bin());
    c.args(args);
    run_with_input(c, stdin)
}

fn with(base: &[String], more: &[&str]) -> Vec<String> {
    base.iter()
        .cloned()
        .chain(more.iter().map(|s| s.to_string()))
        .collect()
}

#[test]
fn produce_consume_and_metadata_work_over_every_listener_and_mechanism() {
    let Some(dir) = secure() else { return };
    for (name, flags) in ways(&dir) {
        let t = topic("sec");
        let input: Vec<u8> = (0..200)
            .flat_map(|i| format!("{name} line {i}\n").into_bytes())
            .collect();
        let out = run(
            &with(&flags, &["produce", &t, "--compression", "zstd"]),
            &input,
        );
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = run(
            &with(&flags, &["consume", &t, "--from-beginning", "-e"]),
            b"",
        );
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, input, "{name}");
        let out = run(&with(&flags, &["metadata", &t, "-J"]), b"");
        assert!(out.status.success(), "{name}");
        assert!(String::from_utf8_lossy(&out.stdout).contains(&t), "{name}");
    }
}

/// kcat's settings for the PLAIN and mTLS listeners (Debian's kcat is built on a librdkafka whose
/// SCRAM Kafka 4 refuses).
fn kcat_flags(dir: &Path, mtls: bool) -> Vec<String> {
    let ca = dir.join("ca.pem").display().to_string();
    let x = |kv: String| vec!["-X".to_string(), kv];
    let mut v = Vec::new();
    if mtls {
        v.extend(x("security.protocol=SSL".into()));
        v.extend(x(format!(
            "ssl.certificate.location={}",
            dir.join("client.pem").display()
        )));
        v.extend(x(format!(
            "ssl.key.location={}",
            dir.join("client.key").display()
        )));
    } else {
        v.extend(x("security.protocol=SASL_SSL".into()));
        v.extend(x("sasl.mechanisms=PLAIN".into()));
        v.extend(x("sasl.username=shipper".into()));
        v.extend(x(format!("sasl.password={PASSWORD}")));
    }
    v.extend(x(format!("ssl.ca.location={ca}")));
    v
}

fn kcat_at(addr: &str, flags: &[String], args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut c = Command::new("kcat");
    c.arg("-b").arg(addr).args(flags).args(args);
    let out = run_with_input(c, stdin);
    assert!(
        out.status.success(),
        "kcat {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn kcat_reads_what_shipper_wrote_and_shipper_reads_what_kcat_wrote_over_tls() {
    let Some(dir) = secure() else { return };
    for (mtls, addr) in [(false, SASL_SSL), (true, MTLS)] {
        let ours = if mtls {
            &ways(&dir)[4].1
        } else {
            &ways(&dir)[0].1
        };
        let theirs = kcat_flags(&dir, mtls);
        let t = topic("sec-kcat");
        let input = b"alpha\nbeta\ngamma\n";
        assert!(run(&with(ours, &["produce", &t]), input).status.success());
        let got = kcat_at(addr, &theirs, &["-C", "-t", &t, "-e", "-q"], b"");
        assert_eq!(got, input, "kcat reading shipper (mtls={mtls})");
        let t2 = topic("sec-kcat2");
        kcat_at(addr, &theirs, &["-P", "-t", &t2], input);
        let out = run(
            &with(ours, &["consume", &t2, "--from-beginning", "-e"]),
            b"",
        );
        assert_eq!(out.stdout, input, "shipper reading kcat (mtls={mtls})");
    }
}

#[test]
fn kcat_style_properties_work_with_dash_x_and_dash_f() {
    let Some(dir) = secure() else { return };
    let t = topic("sec-props");
    let props = std::env::temp_dir().join(format!("shipper-props-{}", std::process::id()));
    std::fs::write(
        &props,
        format!(
            "# a kcat / Java client config\nbootstrap.servers={SASL_SSL}\nsecurity.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"shipper\" password=\"{PASSWORD}\";\nssl.ca.location={}\n",
            dir.join("ca.pem").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&props, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let f = props.display().to_string();
    let out = run(
        &["-F".into(), f.clone(), "produce".into(), t.clone()],
        b"from -F\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // -X overrides -F.
    let out = run(
        &[
            "-F".into(),
            f.clone(),
            "-X".into(),
            "sasl.mechanism=SCRAM-SHA-256".into(),
            "consume".into(),
            t.clone(),
            "--from-beginning".into(),
            "-e".into(),
        ],
        b"",
    );
    assert_eq!(
        out.stdout,
        b"from -F\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        &[
            "-F".into(),
            f,
            "-X".into(),
            "socket.timeout.ms=5".into(),
            "metadata".into(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("unknown configuration key 'socket.timeout.ms'"));
}

/// Runs one failing command and checks its exit code, message and time.
fn fails(args: &[String], want: &str) {
    let start = Instant::now();
    let out = run(args, b"x\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: want '{want}' in: {err}");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{args:?} took {:?}: {err}",
        start.elapsed()
    );
    assert!(
        !err.contains(PASSWORD) && !err.contains("wrong-pass"),
        "a password leaked: {err}"
    );
}

#[test]
fn every_security_failure_is_one_clear_line_and_exit_1() {
    let Some(dir) = secure() else { return };
    let ca = dir.join("ca.pem").display().to_string();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let wrong = std::env::temp_dir().join(format!("shipper-wrongpw-{}", std::process::id()));
    std::fs::write(&wrong, "wrong-pass\n").unwrap();
    let wrong = wrong.display().to_string();
    for mech in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        fails(
            &s(&[
                "-b",
                SASL_SSL,
                "--security-protocol",
                "sasl_ssl",
                "--sasl-mechanism",
                mech,
                "--sasl-username",
                "shipper",
                "--sasl-password-file",
                &wrong,
                "--ca-file",
                &ca,
                "produce",
                "t",
            ]),
            "authentication failed",
        );
    }
    let other = dir.join("other-ca.pem").display().to_string();
    fails(
        &s(&[
            "-b",
            MTLS,
            "--security-protocol",
            "ssl",
            "--ca-file",
            &other,
            "produce",
            "t",
        ]),
        // The CA file given is named (t28 F5: the same hint as with none).
        "other-ca.pem (--ca-file / ca_file): is it the CA that signed",
    );
    fails(
        &s(&[
            "-b",
            MTLS,
            "--security-protocol",
            "ssl",
            "--ca-file",
            &ca,
            "produce",
            "t",
        ]),
        "client certificate",
    );
    fails(
        &s(&[
            "-b",
            "127.0.0.1:9092",
            "--security-protocol",
            "ssl",
            "--ca-file",
            &ca,
            "produce",
            "t",
        ]),
        "plaintext listener",
    );
    fails(&s(&["-b", SASL_SSL, "produce", "t"]), "answered with TLS");
    // A SASL listener answers ApiVersions, then closes at the next request (retried until --timeout).
    fails(
        &s(&["--timeout", "3s", "-b", SASL_PLAINTEXT, "produce", "t"]),
        "a SASL listener? check --security-protocol",
    );
    // SASL asked of the plaintext listener: it offers no mechanism.
    fails(
        &s(&[
            "-b",
            "127.0.0.1:9092",
            "--security-protocol",
            "sasl_plaintext",
            "--sasl-username",
            "shipper",
            "--sasl-password-file",
            &wrong,
            "produce",
            "t",
        ]),
        "this listener offers no SASL mechanism (a plaintext or TLS listener without SASL?",
    );
    // The KRaft controller's listener of the single broker (scripts/kafka-up): not a broker.
    fails(
        &s(&["-b", "127.0.0.1:9093", "produce", "t"]),
        "does not offer the Metadata API (a KRaft controller's listener?",
    );
    fails(
        &s(&[
            "-b",
            SASL_SSL,
            "--security-protocol",
            "ssl",
            "--ca-file",
            "/nonexistent/ca.pem",
            "produce",
            "t",
        ]),
        "cannot read the CA file /nonexistent/ca.pem",
    );
    // A key that is not the certificate's, and an encrypted one: the key file is named.
    let mtls = |key: &str| {
        s(&[
            "-b",
            "127.0.0.1:9096",
            "--ca-file",
            &ca,
            "--cert-file",
            &dir.join("client.pem").display().to_string(),
            "--key-file",
            key,
            "metadata",
        ])
    };
    let other = dir.join("other-ca.key").display().to_string();
    fails(
        &mtls(&other),
        &format!("{other}: it is not the key of the certificate in"),
    );
    let enc = std::env::temp_dir().join(format!("shipper-enc-{}.key", std::process::id()));
    let made = Command::new("openssl")
        .args(["pkcs8", "-topk8", "-passout", "pass:x", "-in"])
        .arg(dir.join("client.key"))
        .arg("-out")
        .arg(&enc)
        .status()
        .unwrap();
    assert!(made.success());
    fails(
        &mtls(&enc.display().to_string()),
        "an encrypted private key; shipper reads unencrypted PEM keys",
    );
}

/// `shipper metadata` over mTLS to the broker as `wrong-host.test`, a name its certificate does not
/// hold, trusting `ca`: in a private mount namespace with its own /etc/hosts where that name is
/// 127.0.0.1 (as root, like CI; unshare is in util-linux).
fn metadata_as_wrong_host(dir: &Path, ca: &str, more: &str) -> std::process::Output {
    let hosts = std::env::temp_dir().join(format!("shipper-hosts-{}", std::process::id()));
    std::fs::write(&hosts, "127.0.0.1 localhost wrong-host.test\n").unwrap();
    let script = format!(
        "mount --bind {} /etc/hosts && exec {} -b wrong-host.test:9096 --security-protocol ssl --ca-file {} --cert-file {} --key-file {} {more} metadata",
        hosts.display(),
        shipper_bin().display(),
        dir.join(ca).display(),
        dir.join("client.pem").display(),
        dir.join("client.key").display()
    );
    Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap()
}

#[test]
fn a_certificate_for_another_name_is_refused() {
    let Some(dir) = secure() else { return };
    let out = metadata_as_wrong_host(&dir, "ca.pem", "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not valid for the name 'wrong-host.test'"),
        "{err}"
    );
}

#[test]
fn an_empty_endpoint_identification_algorithm_skips_only_the_host_name_check() {
    // As in Java and librdkafka (a common line in client.properties): any name, but a trusted CA.
    let Some(dir) = secure() else { return };
    let skip = "-X ssl.endpoint.identification.algorithm=";
    let out = metadata_as_wrong_host(&dir, "ca.pem", skip);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("host name verification is off"), "{err}");
    let out = metadata_as_wrong_host(&dir, "other-ca.pem", skip);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is not signed by the CA in"), "{err}");
    // --tls-insecure: any certificate (another CA, another name), warned.
    let out = metadata_as_wrong_host(&dir, "other-ca.pem", "--tls-insecure");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("TLS certificate verification is off (--tls-insecure, or tls_insecure"),
        "{err}"
    );
}

/// Runs `cmd` with sh in `dir`; fails the test when it fails; returns its standard output.
fn sh_in(dir: &std::path::Path, cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An X.509 v1 client certificate (what `openssl x509 -req` makes without extensions) is sent as
/// it is, and the broker takes it, as it does from kcat; it was refused before the handshake.
#[test]
fn a_version_1_client_certificate_is_sent_and_taken() {
    let Some(dir) = secure() else { return };
    let work = scratch_dir("v1-cert");
    let sh = |cmd: &str| sh_in(&work, cmd);
    sh("openssl req -new -newkey rsa:2048 -nodes -keyout k.pem -subj /CN=shipper-v1 -out r.csr");
    sh(&format!(
        "openssl x509 -req -in r.csr -CA {0}/ca.pem -CAkey {0}/ca.key -CAcreateserial -CAserial serial -days 2 -out c.pem",
        dir.display()
    ));
    assert!(sh("openssl x509 -in c.pem -noout -text").contains("Version: 1 (0x0)"));
    let t = topic("v1cert");
    let args = |more: &[&str]| {
        let mut a: Vec<String> = [
            "-b",
            MTLS,
            "--ca-file",
            &dir.join("ca.pem").display().to_string(),
            "--cert-file",
            &work.join("c.pem").display().to_string(),
            "--key-file",
            &work.join("k.pem").display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(more.iter().map(|s| s.to_string()));
        a
    };
    let out = run(&args(&["produce", &t]), b"through a v1 certificate\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let out = run(&args(&["consume", &t, "--from-beginning", "-e"]), b"");
    assert_eq!(out.stdout, b"through a v1 certificate\n");
}

#[test]
fn an_expired_certificate_is_refused() {
    let Some(dir) = secure() else { return };
    let work = scratch_dir("expired");
    let sh = |cmd: &str| sh_in(&work, cmd);
    sh("openssl req -new -newkey rsa:2048 -nodes -keyout k.pem -subj /CN=localhost -out r.csr");
    sh("printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext.cnf");
    sh(&format!(
        "openssl x509 -req -in r.csr -CA {0}/ca.pem -CAkey {0}/ca.key -CAcreateserial -CAserial serial -days -1 -extfile ext.cnf -out c.pem",
        dir.display()
    ));
    // A real TLS server (OpenSSL's) presenting the expired certificate.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
            "c.pem",
            "-key",
            "k.pem",
        ])
        .current_dir(&work)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let ca = dir.join("ca.pem").display().to_string();
    let addr = format!("127.0.0.1:{port}");
    let out = run(
        &[
            "-b".into(),
            addr,
            "--security-protocol".into(),
            "ssl".into(),
            "--ca-file".into(),
            ca,
            "metadata".into(),
        ],
        b"",
    );
    let _ = server.kill();
    let _ = server.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("certificate has expired"), "{err}");
}

#[test]
fn tail_ships_through_sessions_that_expire_every_three_seconds() {
    let Some(_dir) = secure() else { return };
    let dir = scratch_dir("reauth");
    let t = topic("reauth");
    let pw = password_file();
    let f = dir.join("a.log");
    let args: Vec<String> = vec![
        "-b".into(),
        REAUTH.into(),
        "--security-protocol".into(),
        "sasl_plaintext".into(),
        "--sasl-mechanism".into(),
        "SCRAM-SHA-512".into(),
        "--sasl-username".into(),
        "shipper".into(),
        "--sasl-password-file".into(),
        pw.display().to_string(),
        "-v".into(),
        "tail".into(),
        f.display().to_string(),
        t.clone(),
        "--checkpoint".into(),
        dir.join("ck").display().to_string(),
    ];
    let err = std::fs::File::create(dir.join("err")).unwrap();
    let mut child = Command::new(shipper_bin())
        .args(&args)
        .stderr(err)
        .spawn()
        .unwrap();
    let mut want = Vec::new();
    for i in 0..150 {
        let line = format!("reauth {i}\n");
        append(&f, line.as_bytes());
        want.push(line.trim_end().as_bytes().to_vec());
        std::thread::sleep(Duration::from_millis(80));
    }
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    let log = std::fs::read_to_string(dir.join("err")).unwrap();
    let renewals = log.matches("authenticating again").count();
    assert!(
        renewals >= 2,
        "{renewals} renewals in 12 s of 3 s sessions: {log}"
    );
    assert!(!log.contains(PASSWORD), "the password reached -v output");
    // Read back over the plaintext listener: every line, once, in order.
    let b = broker().unwrap();
    assert_eq!(topic_values(&b, &t), want, "{log}");
}

#[test]
fn passwords_never_reach_help_verbose_output_or_the_process_title() {
    let Some(dir) = secure() else { return };
    let b = broker().unwrap();
    let dir2 = scratch_dir("title");
    let t = topic("title");
    let f = dir2.join("a.log");
    append(&f, b"x\n");
    let help = Command::new(shipper_bin())
        .arg("--help")
        .env("SHIPPER_SASL_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains(PASSWORD));
    let args = [
        "-b".to_string(),
        SASL_SSL.into(),
        "-X".into(),
        "security.protocol=SASL_SSL".into(),
        "-X".into(),
        "sasl.mechanism=SCRAM-SHA-256".into(),
        "-X".into(),
        "sasl.username=shipper".into(),
        "-X".into(),
        format!("sasl.password={PASSWORD}"),
        "-X".into(),
        format!("ssl.ca.location={}", dir.join("ca.pem").display()),
        "-vv".into(),
        "tail".into(),
        f.display().to_string(),
        t,
        "--checkpoint".into(),
        dir2.join("ck").display().to_string(),
    ];
    let err = std::fs::File::create(dir2.join("err")).unwrap();
    let mut child = Command::new(shipper_bin())
        .args(&args)
        .stderr(err)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir2.join("err")).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(PASSWORD),
        "ps shows the password"
    );
    // Not even its length shows: the rest of the arguments moved up.
    assert!(
        String::from_utf8_lossy(&cmdline).contains("sasl.password=***\0-X\0ssl.ca.location="),
        "{}",
        String::from_utf8_lossy(&cmdline)
    );
    // A password that is not the one used (the protocol needs none) is hidden all the same.
    let mut unused = Command::new(shipper_bin())
        .args(["-b", &b, "-X", &format!("sasl.password={PASSWORD}"), "tail"])
        .arg(&f)
        .args([&topic("title-unused"), "--checkpoint"])
        .arg(dir2.join("ck2"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", unused.id())).unwrap();
    let _ = unused.kill();
    let _ = unused.wait();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(PASSWORD),
        "ps shows the unused password"
    );
    assert!(
        !log.contains(PASSWORD),
        "the password reached the log: {log}"
    );
    assert!(log.contains("password on the command line"), "{log}");
    // A typo for the separator: the error names the key, not the rest.
    let typo = Command::new(shipper_bin())
        .args(["-X", &format!("sasl.password:{PASSWORD}"), "metadata"])
        .output()
        .unwrap();
    assert_eq!(typo.status.code(), Some(2));
    let err = String::from_utf8_lossy(&typo.stderr);
    assert!(
        err.contains("-X sasl.password...: expected key=value"),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");
}

/// A password given in two places: the one used is named, the other said to be left aside, neither
/// shown (`SHIPPER_SASL_PASSWORD` over `-X sasl.password` was taken without a word: a stale variable
/// in a unit made a right password on the command line fail).
#[test]
fn a_password_given_in_two_places_says_which_one_is_used() {
    if secure().is_none() {
        return;
    }
    let metadata = |env: &str, x: &str| {
        let mut c = Command::new(shipper_bin());
        c.args(["-b", SASL_PLAINTEXT, "--timeout", "10"])
            .args(["-X", "security.protocol=SASL_PLAINTEXT"])
            .args(["-X", "sasl.mechanism=SCRAM-SHA-256"])
            .args(["-X", "sasl.username=shipper"])
            .args(["-X", &format!("sasl.password={x}")])
            .arg("metadata")
            .env("SHIPPER_SASL_PASSWORD", env);
        let out = run_with_input(c, b"");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        (out.status.code(), err)
    };
    let said = "the SASL password is taken from SHIPPER_SASL_PASSWORD; the one in sasl.password (-X or -F) is not used";
    let (code, err) = metadata(PASSWORD, "not-this-one");
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains(said), "{err}");
    let (code, err) = metadata("stale-variable", PASSWORD);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(said), "{err}");
    for secret in [PASSWORD, "not-this-one", "stale-variable"] {
        assert!(!err.contains(secret), "{err}");
    }
}
