//! The SCRAM client (RFC 5802, with SHA-256 per RFC 7677 and SHA-512 as Kafka defines it, KIP-84): no
//! channel binding (`n,,`), a random nonce, the salted password by PBKDF2, the client proof, and the
//! server's signature checked — a broker that does not know the password cannot pass.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::{digest, hmac, pbkdf2};

/// Which hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl ScramHash {
    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramHash::Sha256 => hmac::HMAC_SHA256,
            ScramHash::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramHash::Sha256 => &digest::SHA256,
            ScramHash::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramHash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramHash::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn len(self) -> usize {
        self.digest().output_len()
    }
}

/// Why a SCRAM exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The server's message is not what RFC 5802 allows.
    #[error("malformed SCRAM message from the broker: {0}")]
    Malformed(&'static str),
    /// The server said no (`e=...`).
    #[error("the broker refused: {0}")]
    Refused(String),
    /// The server's nonce does not extend ours (a replay or a broken broker).
    #[error("the broker's nonce does not start with ours")]
    Nonce,
    /// The server's signature is wrong: it does not know the password (or is not the broker).
    #[error("the broker's signature does not match (it does not know this user's password)")]
    Signature,
    /// Too few iterations to be safe, or too many to be sane.
    #[error("the broker asks for {0} iterations (shipper takes 4096 to 16384, what Kafka lets credentials have: with fewer, the proof sent would make the password cheap to guess; with more, the hashing would stall every connection)")]
    Iterations(u32),
}

/// One SCRAM exchange, client side. (Its `Debug` leaves the password out.)
pub struct ScramClient {
    hash: ScramHash,
    password: String,
    nonce: String,
    client_first_bare: String,
    server_signature: Option<Vec<u8>>,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("hash", &self.hash)
            .field("client_first_bare", &self.client_first_bare)
            .finish_non_exhaustive()
    }
}

/// The fewest iterations taken: Kafka's minimum (its clients refuse fewer). Someone on the path of a
/// SASL_PLAINTEXT exchange asking for 1 would get a proof that takes 4096 times less to guess from.
const MIN_ITERATIONS: u32 = 4096;

/// The most iterations taken: Kafka's maximum for stored credentials. The hashing runs on the event
/// loop; a broker asking for a million would stall every connection for about a second each time.
const MAX_ITERATIONS: u32 = 16_384;

/// `saslname` escaping: `=` and `,` may not appear raw.
fn escape_name(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

fn attr(msg: &str, key: char) -> Option<&str> {
    msg.split(',')
        .find_map(|p| p.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

impl ScramClient {
    /// A client for `user` with a fresh random nonce.
    pub fn new(hash: ScramHash, user: &str, password: &str) -> ScramClient {
        let mut raw = [0u8; 24];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw);
        ScramClient::with_nonce(hash, user, password, &B64.encode(raw))
    }

    /// A client with a given nonce (for the RFC's test vectors).
    pub fn with_nonce(hash: ScramHash, user: &str, password: &str, nonce: &str) -> ScramClient {
        ScramClient {
            hash,
            password: password.to_string(),
            nonce: nonce.to_string(),
            client_first_bare: format!("n={},r={nonce}", escape_name(user)),
            server_signature: None,
        }
    }

    /// The client-first message.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// The client-final message, given the server-first message.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let sf =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        if let Some(e) = attr(sf, 'e') {
            // The broker's words, escaped: they reach the terminal and the journal.
            return Err(ScramError::Refused(crate::escape::Esc::str(e).to_string()));
        }
        // RFC 5802 5.1: a mandatory extension (`m=`) this client does not know must fail.
        if attr(sf, 'm').is_some() {
            return Err(ScramError::Malformed(
                "a mandatory extension (m=) this client does not support",
            ));
        }
        let nonce = attr(sf, 'r').ok_or(ScramError::Malformed("no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Nonce);
        }
        let salt = attr(sf, 's')
            .and_then(|s| B64.decode(s).ok())
            .ok_or(ScramError::Malformed("no salt"))?;
        let iterations: u32 = attr(sf, 'i')
            .and_then(|i| i.parse().ok())
            .ok_or(ScramError::Malformed("no iteration count"))?;
        // A huge count would have us spin for minutes.
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        let mut salted = vec![0u8; self.hash.len()];
        let iters =
            std::num::NonZeroU32::new(iterations).ok_or(ScramError::Iterations(iterations))?;
        pbkdf2::derive(
            self.hash.pbkdf2(),
            iters,
            &salt,
            self.password.as_bytes(),
            &mut salted,
        );
        let key = hmac::Key::new(self.hash.hmac(), &salted);
        let client_key = hmac::sign(&key, b"Client Key");
        let stored_key = digest::digest(self.hash.digest(), client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{sf},{without_proof}", self.client_first_bare);
        let client_signature = hmac::sign(
            &hmac::Key::new(self.hash.hmac(), stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(client_signature.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac::sign(&key, b"Server Key");
        let server_signature = hmac::sign(
            &hmac::Key::new(self.hash.hmac(), server_key.as_ref()),
            auth_message.as_bytes(),
        );
        self.server_signature = Some(server_signature.as_ref().to_vec());
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: the broker proves it knows the password.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let sf =
            std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        if let Some(e) = attr(sf, 'e') {
            // The broker's words, escaped: they reach the terminal and the journal.
            return Err(ScramError::Refused(crate::escape::Esc::str(e).to_string()));
        }
        let v = attr(sf, 'v')
            .and_then(|v| B64.decode(v).ok())
            .ok_or(ScramError::Malformed("no verifier"))?;
        match &self.server_signature {
            Some(expected) if same_bytes(expected, &v) => Ok(()),
            _ => Err(ScramError::Signature),
        }
    }
}

/// Compares in time that does not depend on where the bytes differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677, section 3: the SCRAM-SHA-256 example exchange.
    #[test]
    fn rfc_7677_sha256_exchange() {
        let mut c =
            ScramClient::with_nonce(ScramHash::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(c.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let fin = c.client_final(server_first).unwrap();
        assert_eq!(
            String::from_utf8(fin).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert_eq!(c.verify_server_final(b"v=AAAA"), Err(ScramError::Signature));
    }

    #[test]
    fn a_server_nonce_that_does_not_extend_ours_is_refused() {
        let mut c = ScramClient::with_nonce(ScramHash::Sha512, "u", "p", "abc");
        assert_eq!(
            c.client_final(b"r=xyz,s=AAAA,i=4096"),
            Err(ScramError::Nonce)
        );
        assert_eq!(
            c.client_final(b"r=abc,s=AAAA,i=4096"),
            Err(ScramError::Nonce)
        );
        assert!(matches!(
            c.client_final(b"e=invalid-proof"),
            Err(ScramError::Refused(_))
        ));
        // RFC 5802: a mandatory extension the client does not know fails the exchange.
        assert!(matches!(
            c.client_final(b"m=future-ext,r=abcd,s=AAAA,i=4096"),
            Err(ScramError::Malformed(m)) if m.contains("m=")
        ));
        assert!(matches!(
            c.client_final(b"r=abcd,s=AAAA,i=999999999"),
            Err(ScramError::Iterations(_))
        ));
        // Fewer than Kafka's minimum: a proof that cheap is not sent.
        assert!(matches!(
            c.client_final(b"r=abcd,s=AAAA,i=1"),
            Err(ScramError::Iterations(1))
        ));
        assert!(matches!(
            c.client_final(b"r=abcd,s=AAAA,i=4095"),
            Err(ScramError::Iterations(4095))
        ));
        // More than Kafka lets a credential have: hashing a million would stall the event loop.
        assert!(matches!(
            c.client_final(b"r=abcd,s=AAAA,i=16385"),
            Err(ScramError::Iterations(16385))
        ));
        match c.client_final(b"e=bad\x1b[31mred\nforged") {
            Err(ScramError::Refused(e)) => assert!(!e.contains('\x1b') && !e.contains('\n'), "{e}"),
            other => panic!("{other:?}"),
        }
        let debug = format!(
            "{:?}",
            ScramClient::with_nonce(ScramHash::Sha256, "u", "hunter2", "n")
        );
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(matches!(
            c.client_final(b"garbage"),
            Err(ScramError::Malformed(_))
        ));
    }

    #[test]
    fn names_are_escaped() {
        let c = ScramClient::with_nonce(ScramHash::Sha256, "a=b,c", "p", "n");
        assert_eq!(c.client_first(), b"n,,n=a=3Db=2Cc,r=n");
    }
}
