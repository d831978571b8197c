//! TLS to brokers with rustls (pure Rust, so the static binary has it too): TLS 1.2 and 1.3, host
//! names (and IP addresses) always verified against the trust anchors — `--ca-file`, else the
//! system's CA bundle, else the Mozilla roots built in — unless `--tls-insecure` says otherwise
//! (loudly). A client certificate and key make it mutual TLS. SNI is sent for host names.
//!
//! Handshake failures become one line saying what to do: an untrusted certificate, a name it is not
//! for, an expired one, a broker that wants a client certificate, or a listener that does not speak
//! TLS at all.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::time::Instant;

use super::transport::{tcp_connect, BoxFuture, BoxIo, Transport};
use super::ConnError;
use crate::escape::Esc;

/// Where TLS trust and identity come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file of trusted CA certificates; `None`: the system's bundle, else the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain (mutual TLS).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key_file: Option<PathBuf>,
    /// Accept any certificate for any name (an explicit opt-out, warned about at every start).
    pub insecure: bool,
    /// Accept a trusted certificate whatever names it holds (an empty
    /// `ssl.endpoint.identification.algorithm`, as in Java and librdkafka).
    pub no_hostname_check: bool,
}

/// Where systems keep their CA bundle.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// A PEM file's bytes, read whole but bounded (a path to /dev/zero must not fill memory). `role`
/// names the file in errors ("CA file", "client certificate", "private key").
fn read_pem(path: &Path, role: &str) -> Result<Vec<u8>, String> {
    crate::settings::read_bounded(path, crate::settings::MAX_PEM_FILE)
        .map_err(|e| format!("cannot read the {role} {}: {e}", Esc::path(path)))
}

/// What is wrong with a PEM file, in words (the parser's own text prints the marker as a list of
/// byte values).
fn pem_problem(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    let text = |b: &[u8]| Esc(b).to_string();
    match e {
        Error::MissingSectionEnd { end_marker } => format!(
            "a section has no end line (-----END {}-----): the file is cut short",
            text(end_marker)
        ),
        Error::IllegalSectionStart { line } => {
            format!("a malformed section start line ({})", text(line))
        }
        Error::Base64Decode(why) => format!("a section's base64 text is damaged ({why})"),
        other => other.to_string(),
    }
}

fn load_certs(path: &Path, role: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_pem(path, role)?;
    let shown = Esc::path(path);
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "{role} {shown}: not a PEM certificate file: {}",
                pem_problem(&e)
            )
        })?;
    if certs.is_empty() {
        return Err(format!("{role} {shown} holds no PEM certificate"));
    }
    Ok(certs)
}

/// Where the last configuration's trust anchors came from (`CA file ca.pem`), for the error that
/// says a broker's certificate is not signed by them.
static ANCHORS: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// The trust anchors: the CA file, or the system bundle, or the built-in Mozilla roots.
fn roots(ca_file: Option<&Path>) -> Result<(RootCertStore, String), String> {
    let mut store = RootCertStore::empty();
    if let Some(p) = ca_file {
        let (added, _) = store.add_parsable_certificates(load_certs(p, "CA file")?);
        if added == 0 {
            return Err(format!(
                "CA file {}: no usable CA certificate",
                Esc::path(p)
            ));
        }
        return Ok((store, format!("CA file {}", Esc::path(p))));
    }
    // SSL_CERT_FILE, as OpenSSL takes it, replaces the system bundle: one that cannot be used is an
    // error, not a silent fall back to every public CA (an operator who pinned trust to a private
    // CA this way would have trusted them all).
    if let Some(p) = std::env::var_os("SSL_CERT_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
    {
        let certs = load_certs(&p, "SSL_CERT_FILE")?;
        let (added, _) = store.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "SSL_CERT_FILE {}: no usable CA certificate (unset it to use the system CA bundle)",
                Esc::path(&p)
            ));
        }
        return Ok((store, format!("SSL_CERT_FILE {}", Esc::path(&p))));
    }
    for p in SYSTEM_BUNDLES.iter().map(Path::new) {
        if let Ok(certs) = load_certs(p, "CA bundle") {
            let (added, _) = store.add_parsable_certificates(certs);
            if added > 0 {
                return Ok((store, format!("system CA bundle {}", Esc::path(p))));
            }
        }
    }
    store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok((store, "built-in Mozilla roots".into()))
}

/// The rustls client configuration for these settings.
pub fn client_config(s: &TlsSettings) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = if s.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Relaxed {
                chain: None,
                provider: provider.clone(),
            }))
    } else {
        let (store, from) = roots(s.ca_file.as_deref())?;
        crate::log::debug(format_args!("TLS trust anchors: {from}"));
        *ANCHORS.lock().unwrap_or_else(|e| e.into_inner()) = from;
        if s.no_hostname_check {
            let chain =
                WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                    .build()
                    .map_err(|e| format!("TLS: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Relaxed {
                    chain: Some(chain),
                    provider: provider.clone(),
                }))
        } else {
            builder.with_root_certificates(store)
        }
    };
    let config = match (&s.cert_file, &s.key_file) {
        (Some(cert), Some(key_file)) => {
            let chain = load_certs(cert, "client certificate")?;
            // Said before the broker answers it with a bare alert (t22 F7: "CertificateUnknown"
            // for an expired certificate, and check-config said ok). A warning, not an error:
            // the broker judges by its own clock.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            if let Some(p) = super::x509::date_problem(&chain[0], now) {
                crate::log::warn(format_args!(
                    "client certificate {} {p} (by this machine's clock): the broker will refuse it",
                    Esc::path(cert)
                ));
            }
            crate::settings::security::warn_if_readable(key_file, "private key file");
            let pem = read_pem(key_file, "private key")?;
            let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                let shown = Esc::path(key_file);
                if pem.windows(9).any(|w| w == b"ENCRYPTED") {
                    format!("private key {shown}: an encrypted private key; shipper reads unencrypted PEM keys (openssl pkey -in {shown} -out key.pem, then chmod 600 key.pem)")
                } else if matches!(e, rustls::pki_types::pem::Error::NoItemsFound) {
                    format!("private key {shown}: holds no PEM private key")
                } else {
                    format!("private key {shown}: not a PEM private key: {}", pem_problem(&e))
                }
            })?;
            // A key rustls cannot use, or one that is not the certificate's: name the key file.
            let signing = provider
                .key_provider
                .load_private_key(key.clone_key())
                .map_err(|e| format!("private key {}: unusable: {e}", Esc::path(key_file)))?;
            let certified = rustls::sign::CertifiedKey::new(chain, signing);
            match certified.keys_match() {
                Ok(()) => {}
                Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                    return Err(format!(
                        "private key {}: it is not the key of the certificate in {}",
                        Esc::path(key_file),
                        Esc::path(cert)
                    ));
                }
                // Not checkable here: an X.509 v1 certificate (`openssl x509 -req` without
                // extensions), which webpki does not read, or a key that cannot tell its public
                // key. Sent as it is; the broker judges it, as it does for kcat and Java.
                Err(e) => crate::log::debug(format_args!(
                    "client certificate {}: not checked against its key here ({e}); the broker judges it",
                    Esc::path(cert)
                )),
            }
            builder.with_client_cert_resolver(Arc::new(OneCert(Arc::new(certified))))
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("a client certificate needs both --cert-file and --key-file".into()),
    };
    Ok(Arc::new(config))
}

/// The one client certificate, sent whenever the broker asks for one. rustls's own
/// `with_client_auth_cert` refuses a certificate it cannot parse (X.509 v1) that brokers accept.
#[derive(Debug)]
struct OneCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for OneCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// TCP, then TLS.
#[derive(Clone)]
pub struct TlsTransport {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsTransport")
    }
}

impl TlsTransport {
    /// A transport using `config` for every connection.
    pub fn new(config: Arc<ClientConfig>) -> Self {
        TlsTransport { config }
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl Transport for TlsTransport {
    fn connect<'a>(
        &'a self,
        addr: &'a str,
        until: Instant,
    ) -> BoxFuture<'a, Result<BoxIo, ConnError>> {
        Box::pin(async move {
            let tls_err = |detail: String| ConnError::Tls {
                addr: addr.to_string(),
                detail,
            };
            let host = host_of(addr);
            let name = ServerName::try_from(host.to_string())
                .map_err(|_| tls_err(format!("'{}' is not a valid host name", Esc::str(host))))?;
            let tcp = tcp_connect(addr, until).await?;
            let connector = tokio_rustls::TlsConnector::from(self.config.clone());
            match tokio::time::timeout_at(until, connector.connect(name, tcp)).await {
                Ok(Ok(s)) => Ok(Box::new(s) as BoxIo),
                Ok(Err(e)) => Err(tls_err(describe(&e, host))),
                Err(_) => Err(tls_err(
                    "no TLS handshake before the timeout (is this a TLS listener?)".into(),
                )),
            }
        })
    }
}

/// A read error that is really the broker refusing us over TLS (with TLS 1.3 a missing client
/// certificate is refused after the handshake, on the first read).
pub(super) fn read_error(addr: &str, e: &std::io::Error) -> Option<ConnError> {
    let r = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(ConnError::Tls {
        addr: addr.to_string(),
        detail: describe_rustls(r, host_of(addr)),
    })
}

/// One line saying what a failed handshake means and what to do.
fn describe(e: &std::io::Error, host: &str) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(r) => describe_rustls(r, host),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the broker closed the connection during the TLS handshake (a plaintext listener? check --security-protocol)".into()
        }
        None => format!("handshake failed: {e}"),
    }
}

/// The broker's certificate is signed by no CA shipper trusts: said with where the CAs came from
/// (`from`, as [`roots`] names them).
fn unknown_issuer(from: &str) -> String {
    if let Some(f) = from.strip_prefix("CA file ") {
        format!("the broker's certificate is not signed by the CA in {f} (--ca-file / ca_file): is it the CA that signed the broker's certificate?")
    } else if let Some(f) = from.strip_prefix("SSL_CERT_FILE ") {
        // The environment chose the CAs: named, or the hint sends the user to a flag while a
        // variable they may not know is set decides.
        format!("the broker's certificate is not signed by a CA in SSL_CERT_FILE {f} (set in the environment; give the broker's CA with --ca-file, or ca_file in a config file, or fix SSL_CERT_FILE)")
    } else {
        let trusted = match from.is_empty() {
            true => String::new(),
            false => format!("the {from}; "),
        };
        format!("the broker's certificate is not signed by a trusted CA ({trusted}give its CA with --ca-file, or ca_file in a config file)")
    }
}

fn describe_rustls(e: &rustls::Error, host: &str) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            // A CA file given that signed nothing here is named, not asked for (t28 F5: the same
            // hint as with none).
            CertificateError::UnknownIssuer => {
                let from = ANCHORS.lock().map(|a| a.clone()).unwrap_or_default();
                unknown_issuer(&from)
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                "the broker's certificate is not valid for the name '{}' (connect with a name it holds, or fix the certificate)",
                Esc::str(host)
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the broker's certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the broker's certificate is not valid yet (is this machine's clock right?)".into()
            }
            other => format!("the broker's certificate was refused: {other:?}"),
        },
        rustls::Error::AlertReceived(a) => format!(
            "the broker refused the connection ({a:?}): does it require a client certificate (--cert-file, --key-file), or one it trusts?"
        ),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the broker does not speak TLS here (a plaintext listener? check --security-protocol)".into()
        }
        other => format!("handshake failed: {other}"),
    }
}

/// A verifier looser than webpki's, for what the operator asked for. With a chain (an empty
/// `ssl.endpoint.identification.algorithm`) the certificate must lead to a trusted CA but may name
/// any host; without one (`--tls-insecure`) any certificate is taken. Handshake signatures are always
/// checked, so the connection is at least encrypted to whoever holds the presented key.
#[derive(Debug)]
struct Relaxed {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Relaxed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the CAs came from is named: a CA file, SSL_CERT_FILE (the environment decided, and
    /// was not named), the system bundle or the built-in roots.
    #[test]
    fn an_unknown_issuer_names_where_the_trusted_cas_came_from() {
        assert!(unknown_issuer("CA file ca.pem").contains("not signed by the CA in ca.pem"));
        let env = unknown_issuer("SSL_CERT_FILE /opt/other.pem");
        assert!(
            env.contains("a CA in SSL_CERT_FILE /opt/other.pem (set in the environment"),
            "{env}"
        );
        let sys = unknown_issuer("system CA bundle /etc/ssl/certs/ca-certificates.crt");
        assert!(
            sys.contains("(the system CA bundle /etc/ssl/certs/ca-certificates.crt; give its CA"),
            "{sys}"
        );
        assert!(unknown_issuer("").contains("trusted CA (give its CA with --ca-file"));
    }

    #[test]
    fn hosts_come_out_of_addresses() {
        assert_eq!(host_of("kafka1:9093"), "kafka1");
        assert_eq!(host_of("[::1]:9093"), "::1");
        assert_eq!(host_of("127.0.0.1:9095"), "127.0.0.1");
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_a_clear_error() {
        let e = client_config(&TlsSettings {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsSettings::default()
        })
        .unwrap_err();
        assert!(
            e.contains("cannot read the CA file /nonexistent/ca.pem"),
            "{e}"
        );
        for path in ["/dev/zero", "/tmp"] {
            let e = client_config(&TlsSettings {
                ca_file: Some(path.into()),
                ..TlsSettings::default()
            })
            .unwrap_err();
            assert!(
                e.starts_with(&format!("cannot read the CA file {path}: it is")),
                "{e}"
            );
        }
        let e = client_config(&TlsSettings {
            cert_file: Some("/dev/zero".into()),
            key_file: Some("/dev/zero".into()),
            ..TlsSettings::default()
        })
        .unwrap_err();
        assert!(e.contains("larger than"), "{e}");
        let e = client_config(&TlsSettings {
            cert_file: Some("/x".into()),
            ..TlsSettings::default()
        })
        .unwrap_err();
        assert!(e.contains("--key-file"), "{e}");
    }

    #[test]
    fn a_damaged_pem_file_is_named_by_its_role_and_said_in_words() {
        let dir = crate::testkit::scratch_dir("tls-pem");
        let cut = dir.join("cut.pem");
        std::fs::write(&cut, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
        let e = client_config(&TlsSettings {
            ca_file: Some(cut.clone()),
            ..TlsSettings::default()
        })
        .unwrap_err();
        assert!(
            e.starts_with(&format!("CA file {}: ", cut.display()))
                && e.contains("no end line (-----END CERTIFICATE-----)"),
            "{e}"
        );
        let empty = dir.join("empty.key");
        std::fs::write(&empty, "not a key\n").unwrap();
        let e = client_config(&TlsSettings {
            cert_file: Some(cut.clone()),
            key_file: Some(empty),
            ..TlsSettings::default()
        })
        .unwrap_err();
        assert!(e.starts_with("client certificate "), "{e}");
        assert!(!e.contains("[45, 45"), "{e}");
    }

    #[test]
    fn the_system_or_builtin_roots_are_used_without_a_ca_file() {
        assert!(client_config(&TlsSettings::default()).is_ok());
    }
}
