//! The few things Sluicegate reads from DER itself: the subject of a
//! client certificate as an RFC 4514 string (`CN=alice,O=Example`, the form
//! ingress-nginx passes upstream in `ssl-client-subject-dn`), a
//! certificate's validity period (for the admin port's certificate view),
//! and the key inside a SubjectPublicKeyInfo (for JWT verification with
//! ring).
//!
//! Certificates come already verified by the TLS layer and public keys
//! from configuration, and a small DER walker does the job: a full X.509
//! parser would add a large dependency tree for two fields. Anything
//! unexpected gives `None`, never a panic.

use std::fmt::Write as _;

/// A DER element: tag and contents.
struct Tlv<'a> {
    tag: u8,
    body: &'a [u8],
    /// The whole element, tag and length included.
    raw: &'a [u8],
}

/// Splits the first element off `input`.
fn next(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    Some((
        Tlv {
            tag,
            body: &rest[..len],
            raw: &input[..header + len],
        },
        &rest[len..],
    ))
}

/// The elements inside a constructed element.
fn children(mut body: &[u8]) -> impl Iterator<Item = Tlv<'_>> {
    std::iter::from_fn(move || {
        let (tlv, rest) = next(body)?;
        body = rest;
        Some(tlv)
    })
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;

/// The `n`th field of a DER certificate's TBSCertificate, counting from
/// the serial number: serial, signature algorithm, issuer, validity,
/// subject.
fn tbs_field(cert: &[u8], n: usize) -> Option<Tlv<'_>> {
    let (cert, _) = next(cert)?;
    let tbs = children(cert.body).next().filter(|t| t.tag == SEQUENCE)?;
    let mut fields = children(tbs.body).peekable();
    // An optional explicit version comes first.
    if fields.peek().is_some_and(|f| f.tag == 0xa0) {
        fields.next();
    }
    fields.nth(n)
}

/// When a DER certificate starts and stops being valid, in seconds since
/// the Unix epoch.
pub fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    let v = tbs_field(cert, 3).filter(|t| t.tag == SEQUENCE)?;
    let mut times = children(v.body);
    Some((time(&times.next()?)?, time(&times.next()?)?))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`), as RFC 5280 profiles them, in Unix seconds.
fn time(t: &Tlv<'_>) -> Option<i64> {
    let text = std::str::from_utf8(t.body).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |s: &str| s.parse::<i64>().ok();
    let (year, rest) = match (t.tag, digits.len()) {
        (0x17, 12) => {
            let yy = num(&digits[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &digits[2..])
        }
        (0x18, 14) => (num(&digits[..4])?, &digits[4..]),
        _ => return None,
    };
    let (month, day) = (num(&rest[0..2])?, num(&rest[2..4])?);
    let (h, m, s) = (num(&rest[4..6])?, num(&rest[6..8])?, num(&rest[8..10])?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The subject distinguished name of a DER certificate.
pub fn subject_dn(cert: &[u8]) -> Option<String> {
    let subject = tbs_field(cert, 4).filter(|t| t.tag == SEQUENCE)?;
    let rdns: Vec<Tlv<'_>> = children(subject.body).collect();
    let mut out = String::new();
    // RFC 4514 writes the most specific RDN first: the reverse of the
    // encoded order.
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if rdn.tag != SET {
            return None;
        }
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in children(rdn.body).enumerate() {
            if j > 0 {
                out.push('+');
            }
            let mut parts = children(atv.body);
            let (oid, value) = (parts.next()?, parts.next()?);
            if atv.tag != SEQUENCE || oid.tag != OID {
                return None;
            }
            match (short_name(oid.body), text(&value)) {
                (Some(name), Some(v)) => {
                    out.push_str(name);
                    out.push('=');
                    escape(&v, &mut out);
                }
                _ => {
                    dotted(oid.body, &mut out)?;
                    out.push_str("=#");
                    value.raw.iter().for_each(|b| {
                        let _ = write!(out, "{b:02x}");
                    });
                }
            }
        }
    }
    Some(out)
}

/// When a DER certificate stops being valid (its `notAfter`), in Unix
/// seconds.
pub fn not_after(cert: &[u8]) -> Option<i64> {
    validity(cert).map(|(_, not_after)| not_after)
}

/// Key algorithms of a SubjectPublicKeyInfo that Sluicegate verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    Rsa,
    EcP256,
    Ed25519,
}

/// The algorithm and raw key bytes of a DER SubjectPublicKeyInfo: the
/// PKCS#1 RSAPublicKey for RSA, the uncompressed point for P-256, the 32
/// bytes for Ed25519 (the forms ring takes).
pub fn spki_key(spki: &[u8]) -> Option<(KeyAlgorithm, &[u8])> {
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    const EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
    let (outer, _) = next(spki)?;
    let mut parts = children(outer.body);
    let (alg, key) = (parts.next()?, parts.next()?);
    if outer.tag != SEQUENCE || alg.tag != SEQUENCE || key.tag != 0x03 {
        return None;
    }
    let mut ids = children(alg.body);
    let oid = ids.next().filter(|o| o.tag == OID)?;
    let params = ids.next();
    // A BIT STRING starts with its count of unused bits, 0 for keys.
    let (&unused, bits) = key.body.split_first()?;
    if unused != 0 {
        return None;
    }
    let algorithm = match oid.body {
        RSA => KeyAlgorithm::Rsa,
        EC if params.is_some_and(|p| p.tag == OID && p.body == P256) => KeyAlgorithm::EcP256,
        ED25519 => KeyAlgorithm::Ed25519,
        _ => return None,
    };
    Some((algorithm, bits))
}

/// Names RFC 4514 defines for attribute types.
fn short_name(oid: &[u8]) -> Option<&'static str> {
    const PILOT: [u8; 9] = [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01];
    match oid {
        [0x55, 0x04, n] => Some(match n {
            3 => "CN",
            6 => "C",
            7 => "L",
            8 => "ST",
            9 => "STREET",
            10 => "O",
            11 => "OU",
            _ => return None,
        }),
        _ if oid.len() == 10 && oid[..9] == PILOT => match oid[9] {
            0x19 => Some("DC"),
            0x01 => Some("UID"),
            _ => None,
        },
        _ => None,
    }
}

/// The text of a directory string, for the string types certificates use.
fn text(value: &Tlv<'_>) -> Option<String> {
    match value.tag {
        // UTF8String, PrintableString, IA5String, TeletexString (read as
        // Latin-1), UniversalString is rare and left to the hex form.
        0x0c | 0x13 | 0x16 => std::str::from_utf8(value.body).ok().map(str::to_owned),
        0x14 => Some(value.body.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UTF-16 big endian.
        0x1e if value.body.len().is_multiple_of(2) => {
            let units = value
                .body
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        _ => None,
    }
}

/// Escapes a value as RFC 4514 requires; bytes outside printable ASCII
/// are written as `\XX` so the result is always a valid header value.
fn escape(value: &str, out: &mut String) {
    let last = value.len().saturating_sub(1);
    for (i, c) in value.char_indices() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
            out.push(c);
        } else if c.is_ascii_graphic() || c == ' ' {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "\\{b:02X}");
            }
        }
    }
}

/// Writes an OID in dotted-decimal form.
fn dotted(oid: &[u8], out: &mut String) -> Option<()> {
    let mut arcs = Vec::new();
    let mut acc: u64 = 0;
    for &b in oid {
        acc = acc.checked_mul(128)? | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            arcs.push(acc);
            acc = 0;
        }
    }
    let first = *arcs.first()?;
    let (a, b) = match first {
        0..=39 => (0, first),
        40..=79 => (1, first - 40),
        _ => (2, first - 80),
    };
    let _ = write!(out, "{a}.{b}");
    for arc in &arcs[1..] {
        let _ = write!(out, ".{arc}");
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(dn: rcgen::DistinguishedName) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["client.test".to_owned()]).unwrap();
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn subject_is_written_most_specific_first() {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "DE");
        dn.push(rcgen::DnType::OrganizationName, "Example, Inc.");
        dn.push(rcgen::DnType::CommonName, "alice");
        assert_eq!(
            subject_dn(&cert_with(dn)).as_deref(),
            Some("CN=alice,O=Example\\, Inc.,C=DE")
        );
    }

    #[test]
    fn unusual_values_are_escaped_into_header_safe_text() {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, " Zoë #1 ");
        dn.push(
            rcgen::DnType::CustomDnType(vec![1, 2, 3, 4]),
            rcgen::DnValue::Utf8String("x".into()),
        );
        let dn = subject_dn(&cert_with(dn)).unwrap();
        assert!(dn.starts_with("1.2.3.4=#0c0178,"), "{dn}");
        assert!(dn.ends_with("CN=\\ Zo\\C3\\AB #1\\ "), "{dn}");
        assert!(http::HeaderValue::from_str(&dn).is_ok());
    }

    #[test]
    fn validity_is_read_in_unix_seconds() {
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2024, 2, 29);
        // After 2049 certificates use GeneralizedTime.
        params.not_after = rcgen::date_time_ymd(2051, 1, 2);
        let key = rcgen::KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        assert_eq!(validity(&der), Some((1_709_164_800, 2_556_230_400)));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        for cut in 0..der.len() {
            let _ = validity(&der[..cut]);
        }
    }

    #[test]
    fn garbage_gives_none() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x03, 0x02, 0x01],
        ] {
            assert_eq!(subject_dn(bad), None);
        }
        let good = cert_with(rcgen::DistinguishedName::new());
        for cut in 0..good.len() {
            let _ = subject_dn(&good[..cut]);
        }
    }

    #[test]
    fn expiry_is_read_from_both_time_forms() {
        for (year, want) in [(2030, 1_924_991_999i64), (2051, 2_587_679_999)] {
            let mut params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
            // UTCTime up to 2049, GeneralizedTime after (RFC 5280).
            params.not_after = rcgen::date_time_ymd(year, 12, 31);
            let key = rcgen::KeyPair::generate().unwrap();
            let der = params.self_signed(&key).unwrap().der().to_vec();
            // The certificate ends at 00:00:00 of the day given.
            assert_eq!(not_after(&der), Some(want - 86_399), "{year}");
        }
        assert_eq!(not_after(b"\x30\x03\x02\x01\x00"), None);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }
}
