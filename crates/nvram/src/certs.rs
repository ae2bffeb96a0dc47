//! What nvram enrols and where it comes from: the certificate bundles (Microsoft's KEK, db
//! and PK certificates and signed dbx updates, the distributions' CA certificates), reading
//! the certificate and list files people have (PEM, DER, `EFI_SIGNATURE_LIST`s,
//! `EFI_VARIABLE_AUTHENTICATION_2` `.auth` payloads), and the wall clock that dates a
//! database nvram adds hashes to.
//!
//! The format of all of this (signature lists, the `.auth` header, certificate subjects and
//! dates) is `varstore::secureboot`'s; choosing what to trust and reading it from files is
//! policy, which lives here (docs/design.md, "Where Secure Boot policy lives").
//!
//! ```
//! use nvram::certs::{distro_certs, read_signature_input, SignatureInput};
//!
//! let input = read_signature_input(distro_certs::DEBIAN_SECURE_BOOT_CA_2016)?;
//! assert!(matches!(input, SignatureInput::Certificates(ref c) if c.len() == 1));
//! # Ok::<(), nvram::certs::InputError>(())
//! ```

use base64ct::Encoding;
use varstore::decode::DecodeError;
use varstore::secureboot::{
    certificate_not_before, check_signature_lists, efi_time_of, split_auth2, EntryError,
    SignatureDb,
};
use varstore::EfiTime;

/// The certificate bundle of virtfw-libefi: Microsoft's KEK/db/PK certificates (2011 and
/// 2023) and Red Hat's, as DER constants.
pub use virtfw_libefi::sb::certs as bundled;

/// Microsoft's signed dbx updates (`EFI_VARIABLE_AUTHENTICATION_2` followed by signature
/// lists) as virtfw-libefi bundles them: for x86_64 and aarch64, signed with the 2011 and
/// with the 2023 KEK.
pub mod microsoft_dbx {
    pub use virtfw_libefi::sb::dbx::{
        DBX_2011_AARCH64, DBX_2011_X86_64, DBX_2023_AARCH64, DBX_2023_X86_64,
    };
}

/// Distribution CA certificates (DER) that virtfw-libefi does not bundle, taken unchanged from
/// Debian packages (provenance and fingerprints: `crates/nvram/certs/README.md`).
///
/// ```
/// use nvram::certs::distro_certs;
/// use varstore::secureboot::certificate_subject;
///
/// assert_eq!(
///     certificate_subject(distro_certs::DEBIAN_SECURE_BOOT_CA_2016).as_deref(),
///     Some("Debian Secure Boot CA")
/// );
/// ```
pub mod distro_certs {
    /// "Debian Secure Boot CA" (2016–2046): issues the certificates that sign Debian's grub,
    /// shim helpers, fwupd and kernels. From Debian's `shim-unsigned`
    /// (`/usr/share/shim/debian-uefi-ca.der`).
    pub const DEBIAN_SECURE_BOOT_CA_2016: &[u8] =
        include_bytes!("../certs/debian-secure-boot-ca-2016.der");
    /// "Canonical Ltd. Master Certificate Authority" (2012–2042): signs Ubuntu's grub and
    /// kernels. From Debian's `refind` (`/etc/refind.d/keys/canonical-uefi-ca.cer`).
    pub const CANONICAL_MASTER_CA_2012: &[u8] =
        include_bytes!("../certs/canonical-master-ca-2012.der");
}

/// The current UTC time as an `EFI_TIME` (seconds resolution): what virt-firmware dates a
/// database with when hashes are added to it. The calendar is `der`'s (x509-cert's), already
/// linked for certificate dates; a clock outside its years 1970–9999 gives 2010-01-01
/// ([`initial_time`](varstore::secureboot::initial_time)), which every later time overrides.
pub fn now() -> EfiTime {
    match x509_cert::der::DateTime::from_system_time(std::time::SystemTime::now()) {
        Ok(t) => efi_time_of(&t),
        Err(_) => varstore::secureboot::initial_time(),
    }
}

/// What a signature input file held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureInput {
    /// One or more X.509 certificates (DER), from PEM or DER.
    Certificates(Vec<Vec<u8>>),
    /// Signature lists; `time` is the timestamp of an `.auth` file's authentication header.
    Lists {
        /// The database.
        db: SignatureDb,
        /// The `EFI_VARIABLE_AUTHENTICATION_2` timestamp, for `.auth` input.
        time: Option<EfiTime>,
    },
}

/// Why an input could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Not PEM, a DER certificate, signature lists or an `.auth` file.
    #[error("not a certificate (PEM or DER), EFI signature list or .auth file")]
    Unrecognised,
    /// A PEM block without an END line, whose base64 is broken or whose certificate does not
    /// parse.
    #[error("PEM certificate {index}: {problem}")]
    BadPem {
        /// 1-based number of the block.
        index: usize,
        /// What is wrong.
        problem: String,
    },
    /// An `.auth` file whose signature lists after the header do not add up; the error's
    /// offset counts from the start of the file.
    #[error(".auth file: the data after the header is not signature lists: {0}")]
    BadAuth(DecodeError),
    /// Signature lists (an `.esl` file, or the lists of an `.auth` file) without a single
    /// entry: nothing to enrol.
    #[error("{}", if *.auth {
        ".auth file without a single signature after its header (such a file deletes a variable; there is nothing in it to enrol)"
    } else {
        "signature lists without a single signature: nothing to enrol"
    })]
    NoSignatures {
        /// The lists came from an `.auth` file.
        auth: bool,
    },
    /// An entry of a signature list that is not what its type says.
    #[error(transparent)]
    BadEntry(#[from] EntryError),
}

impl SignatureInput {
    /// Checks what [`read_signature_input`] checks, for an input built otherwise: every
    /// certificate parses, lists hold at least one signature and their entries are what
    /// their types say ([`check_signature_lists`]).
    pub fn check(&self) -> Result<(), InputError> {
        match self {
            Self::Certificates(certs) => {
                if certs.is_empty() {
                    return Err(InputError::Unrecognised);
                }
                for (i, der) in certs.iter().enumerate() {
                    if certificate_not_before(der).is_none() {
                        return Err(InputError::BadPem {
                            index: i + 1,
                            problem: "the certificate does not parse".into(),
                        });
                    }
                }
                Ok(())
            }
            Self::Lists { db, time } => {
                if db.is_empty() {
                    return Err(InputError::NoSignatures {
                        auth: time.is_some(),
                    });
                }
                Ok(check_signature_lists(db)?)
            }
        }
    }
}

/// Reads a certificate (PEM, possibly several blocks, or DER), signature lists (`.esl`) or an
/// authenticated variable payload (`.auth`: `EFI_VARIABLE_AUTHENTICATION_2` then lists).
///
/// Refuses what cannot be enrolled: certificates that do not parse (also as entries of a
/// list: [`InputError::BadEntry`] names the list and entry), SHA-256 entries of another size,
/// and lists or `.auth` files without a single signature ([`InputError::NoSignatures`]).
///
/// ```
/// use nvram::certs::{read_signature_input, SignatureInput};
/// use varstore::secureboot::dummy_dbx;
/// let esl = dummy_dbx().to_bytes();
/// assert!(matches!(read_signature_input(&esl), Ok(SignatureInput::Lists { time: None, .. })));
/// assert!(read_signature_input(b"hello").is_err());
/// ```
pub fn read_signature_input(bytes: &[u8]) -> Result<SignatureInput, InputError> {
    if let Some(text) = pem_text(bytes) {
        let certs = pem_certificates(text)?;
        if !certs.is_empty() {
            return Ok(SignatureInput::Certificates(certs));
        }
    }
    if let Some((time, payload)) = split_auth2(bytes) {
        let header_len = bytes.len() - payload.len();
        let db = SignatureDb::parse(payload).map_err(|e| {
            InputError::BadAuth(DecodeError {
                offset: header_len + e.offset,
                ..e
            })
        })?;
        let input = SignatureInput::Lists {
            db,
            time: Some(time),
        };
        input.check()?;
        return Ok(input);
    }
    if bytes.first() == Some(&0x30) && certificate_not_before(bytes).is_some() {
        return Ok(SignatureInput::Certificates(vec![bytes.to_vec()]));
    }
    if !bytes.is_empty() {
        if let Ok(db) = SignatureDb::parse(bytes) {
            let input = SignatureInput::Lists { db, time: None };
            input.check()?;
            return Ok(input);
        }
    }
    Err(InputError::Unrecognised)
}

fn pem_text(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    text.contains("-----BEGIN ").then_some(text)
}

/// The certificates of every `CERTIFICATE` block of a PEM text, in order; blocks of other
/// labels (a key next to its certificate) are skipped.
///
/// `pem-rfc7468` decodes one block at a time, so the blocks are found here. It accepts the
/// strict form only (base64 wrapped at exactly 64 columns); RFC 7468 asks parsers to take any
/// line width too (§3, "lax"), which files written with 76 columns need, so a block the strict
/// decoder refuses for its base64 is decoded again with `base64ct` after dropping whitespace.
fn pem_certificates(text: &str) -> Result<Vec<Vec<u8>>, InputError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let index = certs.len() + 1;
        let bad = |problem: String| InputError::BadPem { index, problem };
        let body_start = start + BEGIN.len();
        let stop = rest[body_start..]
            .find(END)
            .ok_or_else(|| bad("no END line".into()))?;
        let block_end = body_start + stop + END.len();
        let der = match pem_rfc7468::decode_vec(&rest.as_bytes()[start..block_end]) {
            Ok((_, der)) => der,
            Err(pem_rfc7468::Error::Base64(_)) => {
                let base64: String = rest[body_start..body_start + stop]
                    .chars()
                    .filter(|c| !c.is_ascii_whitespace())
                    .collect();
                base64ct::Base64::decode_vec(&base64)
                    .map_err(|e| bad(format!("broken base64 ({e})")))?
            }
            Err(e) => return Err(bad(e.to_string())),
        };
        if certificate_not_before(&der).is_none() {
            return Err(bad("the certificate does not parse".into()));
        }
        certs.push(der);
        rest = &rest[block_end..];
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use varstore::secureboot::{certificate_subject, dummy_dbx, efi_time, CERT_TYPE_PKCS7};

    /// A PEM block of `der` with its base64 wrapped at `width` columns.
    fn pem(der: &[u8], width: usize) -> String {
        let base64 = base64ct::Base64::encode_string(der);
        let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in base64.as_bytes().chunks(width) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        out + "-----END CERTIFICATE-----\n"
    }

    #[test]
    fn pem_blocks_of_any_width_and_other_labels() {
        let debian = distro_certs::DEBIAN_SECURE_BOOT_CA_2016;
        let canonical = distro_certs::CANONICAL_MASTER_CA_2012;
        let text = format!(
            "subject=Debian\r\n{}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{}",
            pem(debian, 64).replace('\n', "\r\n"),
            pem(canonical, 76)
        );
        assert_eq!(
            read_signature_input(text.as_bytes()).unwrap(),
            SignatureInput::Certificates(vec![debian.to_vec(), canonical.to_vec()])
        );
    }

    #[test]
    fn malformed_pem_names_the_block_and_the_problem() {
        let good = pem(distro_certs::DEBIAN_SECURE_BOOT_CA_2016, 64);
        let no_end = good.replace("-----END CERTIFICATE-----\n", "");
        let broken = good.replacen('M', "*", 1);
        let mut truncated = pem(&distro_certs::DEBIAN_SECURE_BOOT_CA_2016[..600], 64);
        truncated.insert_str(0, &good);
        for (text, index, problem) in [
            (no_end.as_str(), 1, "no END line"),
            (broken.as_str(), 1, "broken base64"),
            (truncated.as_str(), 2, "the certificate does not parse"),
        ] {
            match read_signature_input(text.as_bytes()) {
                Err(InputError::BadPem {
                    index: i,
                    problem: p,
                }) => {
                    assert_eq!(i, index, "{p}");
                    assert!(p.starts_with(problem), "{p:?} should say {problem:?}");
                }
                other => panic!("{problem}: {other:?}"),
            }
        }
    }

    #[test]
    fn distro_certificates_parse() {
        assert_eq!(
            certificate_subject(distro_certs::CANONICAL_MASTER_CA_2012).as_deref(),
            Some("Canonical Ltd. Master Certificate Authority")
        );
        assert_eq!(
            certificate_subject(distro_certs::DEBIAN_SECURE_BOOT_CA_2016).as_deref(),
            Some("Debian Secure Boot CA")
        );
    }

    #[test]
    fn der_and_lists_are_read() {
        let der = bundled::MICROSOFT_KEK_2023;
        let mut db = SignatureDb::default();
        assert!(db.add_x509(varstore::guid::MICROSOFT_OWNER, der));
        assert_eq!(
            read_signature_input(&db.to_bytes()).unwrap(),
            SignatureInput::Lists { db, time: None }
        );
        assert_eq!(
            read_signature_input(der).unwrap(),
            SignatureInput::Certificates(vec![der.to_vec()])
        );
        assert_eq!(
            read_signature_input(b"hello"),
            Err(InputError::Unrecognised)
        );
    }

    #[test]
    fn auth_header_is_skipped() {
        let mut auth = efi_time(2024, 5, 6, 7, 8, 9).0.to_vec();
        let cert_data = [1u8, 2, 3];
        auth.extend_from_slice(&(24u32 + cert_data.len() as u32).to_le_bytes());
        auth.extend_from_slice(&0x0200u16.to_le_bytes());
        auth.extend_from_slice(&0x0EF1u16.to_le_bytes());
        auth.extend_from_slice(&CERT_TYPE_PKCS7.to_bytes());
        auth.extend_from_slice(&cert_data);
        auth.extend_from_slice(&dummy_dbx().to_bytes());
        match read_signature_input(&auth).unwrap() {
            SignatureInput::Lists { db, time } => {
                assert_eq!(db, dummy_dbx());
                assert_eq!(time, Some(efi_time(2024, 5, 6, 7, 8, 9)));
            }
            other => panic!("{other:?}"),
        }
        // Truncated and garbage inputs are errors, not panics.
        for n in 0..auth.len() {
            let _ = read_signature_input(&auth[..n]);
        }
        // A list cut short is named by its field's offset in the file (43 + 16).
        match read_signature_input(&auth[..auth.len() - 1]) {
            Err(InputError::BadAuth(e)) => {
                assert_eq!((e.offset, e.field), (59, "SignatureListSize"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn now_is_todays_date() {
        let t = now();
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // The year from the Unix time by the mean Gregorian year; only the year is compared,
        // away from New Year, so the two computations cannot disagree at a boundary.
        let year = 1970 + secs / 31_556_952;
        let day_of_year = (secs % 31_556_952) / 86_400;
        if (2..=362).contains(&day_of_year) {
            assert_eq!(u64::from(t.year()), year);
        }
        assert!((1..=12).contains(&t.0[2]) && (1..=31).contains(&t.0[3]));
    }
}
