//! SASL authentication on a connection (KIP-43, KIP-152): SaslHandshake v1 names the mechanism,
//! SaslAuthenticate carries its messages — PLAIN (RFC 4616) in one round, SCRAM-SHA-256/512 in two
//! with the broker's signature checked. The broker's session lifetime (KIP-368) is kept: before it
//! runs out the connection authenticates again, in line with its other requests, so nothing in flight
//! is dropped.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use tokio::time::Instant;

use super::scram::{ScramClient, ScramHash};
use super::{ConnError, Connection, Writer};
use crate::escape::Esc;
use crate::secret::Secret;

/// SaslHandshake v1: the exchange goes on in SaslAuthenticate requests.
const HANDSHAKE_VERSIONS: VersionRange = VersionRange { min: 1, max: 1 };
/// SaslAuthenticate: v2 (flexible, Kafka 2.4+) carries the session lifetime.
const AUTHENTICATE_VERSIONS: VersionRange = VersionRange { min: 2, max: 2 };

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// PLAIN: the password in the clear (use with TLS).
    Plain,
    /// SCRAM-SHA-256.
    ScramSha256,
    /// SCRAM-SHA-512.
    ScramSha512,
}

impl Mechanism {
    /// Kafka's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// Parses Kafka's name (case-insensitive).
    pub fn parse(s: &str) -> Option<Mechanism> {
        match s.to_ascii_uppercase().as_str() {
            "PLAIN" => Some(Mechanism::Plain),
            "SCRAM-SHA-256" => Some(Mechanism::ScramSha256),
            "SCRAM-SHA-512" => Some(Mechanism::ScramSha512),
            _ => None,
        }
    }
}

/// Who to authenticate as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslSettings {
    /// The mechanism.
    pub mechanism: Mechanism,
    /// The user name.
    pub username: String,
    /// The password (never printed).
    pub password: Secret,
}

impl Connection {
    /// Authenticates (or re-authenticates) with the writer held, so no other request goes out in the
    /// middle; requests already in flight get their answers first, as the broker answers in order.
    /// Returns when to authenticate again and when the session ends, if the broker limits it.
    pub(super) async fn authenticate_locked(
        &self,
        w: &mut Writer,
        s: &SaslSettings,
        until: Instant,
    ) -> Result<Option<(Instant, Instant)>, ConnError> {
        let auth_err = |detail: String| ConnError::Auth {
            addr: self.addr().to_string(),
            detail,
        };
        let hv = self.version::<SaslHandshakeRequest>(HANDSHAKE_VERSIONS)?;
        let mut hs = SaslHandshakeRequest::default();
        hs.mechanism = StrBytes::from_static_str(s.mechanism.name());
        let p = self.write_locked(w, &hs, hv, true, until).await?;
        let resp = self.decode::<SaslHandshakeRequest>(self.wait(p, until).await?, hv)?;
        if resp.error_code != 0 {
            let enabled: Vec<String> = resp
                .mechanisms
                .iter()
                .map(|m| Esc::str(m).to_string())
                .collect();
            // A listener without SASL (PLAINTEXT or SSL) answers the handshake with no mechanism.
            if enabled.is_empty() {
                return Err(auth_err(
                    "this listener offers no SASL mechanism (a plaintext or TLS listener without SASL? check --security-protocol)".into(),
                ));
            }
            return Err(auth_err(format!(
                "mechanism {} is not enabled on the broker (it offers: {}); choose one with --sasl-mechanism",
                s.mechanism.name(),
                enabled.join(", ")
            )));
        }
        let lifetime = match s.mechanism {
            Mechanism::Plain => {
                let msg = format!("\0{}\0{}", s.username, s.password.expose());
                self.sasl_round(w, msg.into_bytes(), s, until).await?.1
            }
            Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
                let hash = if s.mechanism == Mechanism::ScramSha256 {
                    ScramHash::Sha256
                } else {
                    ScramHash::Sha512
                };
                let mut c = ScramClient::new(hash, &s.username, s.password.expose());
                let (server_first, _) = self.sasl_round(w, c.client_first(), s, until).await?;
                let fin = c
                    .client_final(&server_first)
                    .map_err(|e| auth_err(e.to_string()))?;
                let (server_final, lifetime) = self.sasl_round(w, fin, s, until).await?;
                c.verify_server_final(&server_final)
                    .map_err(|e| auth_err(e.to_string()))?;
                lifetime
            }
        };
        // Authenticate again at 85-95% of the session the broker grants (as the Java client does).
        let now = Instant::now();
        Ok(lifetime.map(|l| (now + l.mul_f64(0.85 + fastrand::f64() * 0.1), now + l)))
    }

    /// One SaslAuthenticate round: sends `bytes`, returns the broker's bytes and session lifetime.
    async fn sasl_round(
        &self,
        w: &mut Writer,
        bytes: Vec<u8>,
        s: &SaslSettings,
        until: Instant,
    ) -> Result<(Bytes, Option<Duration>), ConnError> {
        let v = self.version::<SaslAuthenticateRequest>(AUTHENTICATE_VERSIONS)?;
        let mut req = SaslAuthenticateRequest::default();
        req.auth_bytes = Bytes::from(bytes);
        let p = self.write_locked(w, &req, v, true, until).await?;
        let resp = self.decode::<SaslAuthenticateRequest>(self.wait(p, until).await?, v)?;
        if resp.error_code != 0 {
            let why = resp
                .error_message
                .as_deref()
                .map_or(String::new(), |m| format!(": {}", Esc::str(m)));
            return Err(ConnError::Auth {
                addr: self.addr().to_string(),
                detail: format!(
                    "{} as user '{}' refused (error {}){why}; check the user name and password",
                    s.mechanism.name(),
                    Esc::str(&s.username),
                    resp.error_code
                ),
            });
        }
        let lifetime = (resp.session_lifetime_ms > 0)
            .then(|| Duration::from_millis(resp.session_lifetime_ms as u64));
        Ok((resp.auth_bytes, lifetime))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanisms_parse_in_any_case() {
        assert_eq!(
            Mechanism::parse("scram-sha-512"),
            Some(Mechanism::ScramSha512)
        );
        assert_eq!(Mechanism::parse("PLAIN"), Some(Mechanism::Plain));
        assert_eq!(Mechanism::parse("GSSAPI"), None);
    }
}
