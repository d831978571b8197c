//! The validity dates of an X.509 certificate, read from its DER: enough to say "expired" before a
//! broker answers with a bare `CertificateUnknown` alert (t22 F7). Bounds-checked throughout: a
//! certificate file is input, and anything unexpected is `None` (nothing said), never a panic.

/// A certificate time: its calendar fields (UTC), and seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertTime {
    /// Year, month (1-12), day, hour, minute, second.
    pub fields: (i64, u32, u32, u32, u32, u32),
    /// Seconds since 1970-01-01 00:00:00 UTC.
    pub unix: i64,
}

impl std::fmt::Display for CertTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, mo, d, h, mi, s) = self.fields;
        write!(f, "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
    }
}

/// One DER element: its tag, its contents, and what follows it.
fn element(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |l, b| (l << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The certificate's notBefore and notAfter.
pub fn validity(der: &[u8]) -> Option<(CertTime, CertTime)> {
    const SEQUENCE: u8 = 0x30;
    let (tag, cert, _) = element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    // [0] version, if present; then serial number, signature algorithm, issuer.
    if rest.first() == Some(&0xa0) {
        rest = element(rest)?.2;
    }
    for _ in 0..3 {
        rest = element(rest)?.2;
    }
    let (tag, validity, _) = element(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (t1, from, after) = element(validity)?;
    let (t2, until, _) = element(after)?;
    Some((time(t1, from)?, time(t2, until)?))
}

/// What is wrong with a certificate's dates at `now` (seconds since the epoch), if anything:
/// "expired on 2021-01-01 00:00:00 UTC", "not valid before 2030-01-01 00:00:00 UTC".
pub fn date_problem(der: &[u8], now: i64) -> Option<String> {
    let (from, until) = validity(der)?;
    if now > until.unix {
        Some(format!("expired on {until}"))
    } else if now < from.unix {
        Some(format!("is not valid before {from}"))
    } else {
        None
    }
}

/// A UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, tag 0x18).
fn time(tag: u8, text: &[u8]) -> Option<CertTime> {
    let digits = |s: &[u8]| -> Option<u32> {
        s.iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let (year, rest) = match (tag, text.len()) {
        (0x17, 13) => {
            let yy = i64::from(digits(&text[..2])?);
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        (0x18, 15) => (i64::from(digits(&text[..4])?), &text[4..]),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let field = |i: usize| digits(&rest[i..i + 2]);
    let (mo, d, h, mi, s) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(year, mo, d);
    Some(CertTime {
        fields: (year, mo, d, h, mi, s),
        unix: days * 86_400 + i64::from(h * 3600 + mi * 60 + s),
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_count_from_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2021, 1, 1), 18_628);
    }

    #[test]
    fn both_time_forms_parse_and_garbage_does_not() {
        let t = time(0x17, b"210101000000Z").unwrap();
        assert_eq!(t.unix, 1_609_459_200);
        assert_eq!(t.to_string(), "2021-01-01 00:00:00 UTC");
        assert_eq!(time(0x18, b"20491231235959Z").unwrap().fields.0, 2049);
        assert_eq!(time(0x17, b"990101000000Z").unwrap().fields.0, 1999);
        for bad in [
            &b"21010100000Z"[..],
            b"2101010000001",
            b"211301000000Z",
            b"",
        ] {
            assert_eq!(time(0x17, bad), None);
        }
    }

    /// A certificate made by OpenSSL (fixtures/tls/one-day.pem): its dates read as `openssl x509
    /// -noout -dates` shows them, and judged against a clock before, during and after.
    #[test]
    fn a_real_certificates_dates_are_read_and_judged() {
        let pem = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/tls/one-day.pem"
        ))
        .unwrap();
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
            .next()
            .unwrap()
            .unwrap();
        let (from, until) = validity(&der).unwrap();
        assert_eq!(from.to_string(), "2026-11-30 13:01:59 UTC");
        assert_eq!(until.to_string(), "2026-12-01 13:01:59 UTC");
        assert_eq!(until.unix - from.unix, 86_400);
        assert_eq!(date_problem(&der, from.unix + 10), None);
        assert_eq!(
            date_problem(&der, until.unix + 1).as_deref(),
            Some("expired on 2026-12-01 13:01:59 UTC")
        );
        assert_eq!(
            date_problem(&der, from.unix - 1).as_deref(),
            Some("is not valid before 2026-11-30 13:01:59 UTC")
        );
        // Every truncation of it: no panic.
        for n in 0..der.len() {
            let _ = validity(&der[..n]);
        }
    }

    #[test]
    fn truncated_or_hostile_der_is_none_not_a_panic() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 2, 3, 4, 5],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x02, 0x30, 0x00],
            &[0x31, 0x00],
        ] {
            assert_eq!(validity(bad), None);
        }
    }
}
