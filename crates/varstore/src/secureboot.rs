//! Signature databases (spec §12): `EFI_SIGNATURE_LIST`s for certificates and hashes,
//! merging into an existing database without duplicates, checking that entries are what their
//! type says, the `EFI_VARIABLE_AUTHENTICATION_2` header of `.auth` payloads, and the
//! timestamps authenticated variables carry.
//!
//! This module knows the format only: which certificates to enrol (Microsoft's, the
//! distributions'), reading PEM or DER files and the wall clock belong to the management
//! crate (`nvram::certs`). Certificates are parsed with the `x509-cert` crate, which returns
//! errors rather than panicking; reading untrusted bytes is bounded here and in
//! [`crate::decode`].
//!
//! ```
//! use varstore::secureboot::{SignatureDb, OVMF_ENROLL_DEFAULT_KEYS};
//!
//! let mut dbx = SignatureDb::default();
//! assert!(dbx.add_sha256(OVMF_ENROLL_DEFAULT_KEYS, varstore::secureboot::SHA256_EMPTY));
//! assert!(!dbx.add_sha256(OVMF_ENROLL_DEFAULT_KEYS, varstore::secureboot::SHA256_EMPTY));
//! let bytes = dbx.to_bytes();
//! assert_eq!(bytes.len(), 28 + 48);
//! assert_eq!(SignatureDb::parse(&bytes).unwrap(), dbx);
//! ```

use crate::decode::{signature_lists, DecodeError};
use crate::guid;
use crate::EfiTime;
use uguid::{guid, Guid};
use x509_cert::der::asn1::{
    AnyRef, Ia5StringRef, ObjectIdentifier, PrintableStringRef, TeletexStringRef, Utf8StringRef,
};
use x509_cert::der::{Decode, Encode, Reader, SliceReader, Tag, Tagged};
use x509_cert::Certificate;

/// Owner GUID that OVMF's EnrollDefaultKeys and virt-firmware use for their own entries
/// (PK, KEK, distribution db certificates, the dummy dbx entry).
pub const OVMF_ENROLL_DEFAULT_KEYS: Guid = guid!("a0baa8a3-041d-48a8-bc87-c36d121b5e3d");
/// Vendor GUID of `SecureBootEnable`.
pub const SECURE_BOOT_ENABLE_GUID: Guid = guid!("f0a30bc7-af08-4556-99c4-001009c93a44");
/// Vendor GUID of `CustomMode`.
pub const CUSTOM_MODE_GUID: Guid = guid!("c076ec0c-7028-4399-a072-71ee5c448b9f");
/// `EFI_CERT_TYPE_PKCS7_GUID`: the certificate type of an `EFI_VARIABLE_AUTHENTICATION_2`.
pub const CERT_TYPE_PKCS7: Guid = guid!("4aafd29d-68df-49ee-8aa9-347d375665a7");
/// SHA-256 of the empty string: the "dummy" dbx entry virt-firmware and the Debian images use.
pub const SHA256_EMPTY: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// One signature list, owning its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedList {
    /// SignatureType.
    pub signature_type: Guid,
    /// Each entry as (owner, signature data); all of the same length.
    pub entries: Vec<(Guid, Vec<u8>)>,
}

impl OwnedList {
    fn to_bytes(&self, out: &mut Vec<u8>) {
        let data_len = self.entries.first().map_or(0, |e| e.1.len());
        let entry_size = 16 + data_len;
        let list_size = 28 + entry_size * self.entries.len();
        out.extend_from_slice(&self.signature_type.to_bytes());
        out.extend_from_slice(&(list_size as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(entry_size as u32).to_le_bytes());
        for (owner, data) in &self.entries {
            out.extend_from_slice(&owner.to_bytes());
            out.extend_from_slice(data);
        }
    }
}

/// A signature database (the value of PK, KEK, db, dbx, …): a sequence of lists.
///
/// Certificates get one list each (what edk2, virt-firmware and the distribution images do);
/// hashes of one type share a list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignatureDb {
    /// The lists in order.
    pub lists: Vec<OwnedList>,
}

impl SignatureDb {
    /// Parses a database; a [`DecodeError`] names the list field whose size does not add up
    /// (see [`decode::signature_lists`](crate::decode::signature_lists)). Lists with a
    /// SignatureHeader are kept without it (no standard type has one).
    ///
    /// ```
    /// use varstore::secureboot::{dummy_dbx, SignatureDb};
    /// let mut bytes = dummy_dbx().to_bytes();
    /// bytes[16] += 1; // SignatureListSize one byte past the end
    /// let err = SignatureDb::parse(&bytes).unwrap_err();
    /// assert_eq!((err.offset, err.field), (16, "SignatureListSize"));
    /// ```
    pub fn parse(data: &[u8]) -> Result<Self, DecodeError> {
        let lists = signature_lists(data)?
            .into_iter()
            .filter(|l| !l.entries.is_empty())
            .map(|l| OwnedList {
                signature_type: l.signature_type,
                entries: l.entries.iter().map(|(g, d)| (*g, d.to_vec())).collect(),
            })
            .collect();
        Ok(Self { lists })
    }

    /// The bytes of the variable.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for list in self.lists.iter().filter(|l| !l.entries.is_empty()) {
            list.to_bytes(&mut out);
        }
        out
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.lists.iter().all(|l| l.entries.is_empty())
    }

    /// Whether an entry of this type with this data is present (any owner).
    pub fn contains(&self, signature_type: Guid, data: &[u8]) -> bool {
        self.lists
            .iter()
            .filter(|l| l.signature_type == signature_type)
            .any(|l| l.entries.iter().any(|(_, d)| d == data))
    }

    /// Whether the DER certificate is present.
    pub fn contains_x509(&self, der: &[u8]) -> bool {
        self.contains(guid::CERT_X509, der)
    }

    /// All X.509 certificates (DER) in order.
    pub fn certificates(&self) -> impl Iterator<Item = &[u8]> {
        self.lists
            .iter()
            .filter(|l| l.signature_type == guid::CERT_X509)
            .flat_map(|l| l.entries.iter().map(|(_, d)| d.as_slice()))
    }

    /// Appends a certificate in a list of its own; `false` (and nothing changes) if it is
    /// already present.
    pub fn add_x509(&mut self, owner: Guid, der: &[u8]) -> bool {
        if der.is_empty() || self.contains_x509(der) {
            return false;
        }
        self.lists.push(OwnedList {
            signature_type: guid::CERT_X509,
            entries: vec![(owner, der.to_vec())],
        });
        true
    }

    /// Adds a signature of a fixed-size type (a hash) to the first list of that type and
    /// size, or a new list; `false` if the same signature is present.
    pub fn add_signature(&mut self, signature_type: Guid, owner: Guid, data: &[u8]) -> bool {
        if data.is_empty() || self.contains(signature_type, data) {
            return false;
        }
        if signature_type == guid::CERT_X509 {
            return self.add_x509(owner, data);
        }
        match self.lists.iter_mut().find(|l| {
            l.signature_type == signature_type
                && l.entries.first().is_some_and(|e| e.1.len() == data.len())
        }) {
            Some(list) => list.entries.push((owner, data.to_vec())),
            None => self.lists.push(OwnedList {
                signature_type,
                entries: vec![(owner, data.to_vec())],
            }),
        }
        true
    }

    /// Adds a SHA-256 hash (see [`add_signature`](Self::add_signature)).
    pub fn add_sha256(&mut self, owner: Guid, hash: [u8; 32]) -> bool {
        self.add_signature(guid::CERT_SHA256, owner, &hash)
    }

    /// Adds every entry of `other` that is not present yet, keeping the order; returns how
    /// many were added.
    pub fn merge(&mut self, other: &SignatureDb) -> usize {
        let mut added = 0;
        for list in &other.lists {
            for (owner, data) in &list.entries {
                if self.add_signature(list.signature_type, *owner, data) {
                    added += 1;
                }
            }
        }
        added
    }

    /// Whether it holds signatures other than certificates (hashes).
    pub fn has_hashes(&self) -> bool {
        self.lists
            .iter()
            .any(|l| l.signature_type != guid::CERT_X509 && !l.entries.is_empty())
    }

    /// The latest notBefore of its certificates: the timestamp virt-firmware gives a database
    /// it adds certificates to. `None` without (parsable) certificates.
    pub fn newest_certificate_time(&self) -> Option<EfiTime> {
        self.certificates()
            .filter_map(certificate_not_before)
            .max_by_key(time_key)
    }
}

/// A database holding only the dummy dbx entry (SHA-256 of nothing, owned by
/// [`OVMF_ENROLL_DEFAULT_KEYS`]), as virt-firmware enrols when no dbx is given.
pub fn dummy_dbx() -> SignatureDb {
    let mut db = SignatureDb::default();
    db.add_sha256(OVMF_ENROLL_DEFAULT_KEYS, SHA256_EMPTY);
    db
}

/// An `EFI_TIME` for an authenticated variable (GMT, no nanoseconds, spec §5.5).
pub fn efi_time(year: u16, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> EfiTime {
    let mut t = [0u8; 16];
    t[0..2].copy_from_slice(&year.to_le_bytes());
    t[2] = month;
    t[3] = day;
    t[4] = hour;
    t[5] = minute;
    t[6] = second;
    EfiTime(t)
}

/// 2010-01-01 00:00:00, the timestamp virt-firmware uses for cleared lists and the dummy dbx.
pub fn initial_time() -> EfiTime {
    efi_time(2010, 1, 1, 0, 0, 0)
}

/// A sort key for timestamps: (year, month, day, hour, minute, second, nanosecond).
pub fn time_key(t: &EfiTime) -> (u16, u8, u8, u8, u8, u8, u32) {
    let b = &t.0;
    (
        t.year(),
        b[2],
        b[3],
        b[4],
        b[5],
        b[6],
        u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
    )
}

/// The later of two timestamps (virt-firmware only moves timestamps forward).
pub fn later(a: EfiTime, b: EfiTime) -> EfiTime {
    if time_key(&b) > time_key(&a) {
        b
    } else {
        a
    }
}

/// The notBefore of a DER certificate, `None` if it does not parse.
pub fn certificate_not_before(der: &[u8]) -> Option<EfiTime> {
    let cert = Certificate::from_der(der).ok()?;
    Some(efi_time_of(
        &cert.tbs_certificate.validity.not_before.to_date_time(),
    ))
}

/// A DER (x509-cert) calendar time as an `EFI_TIME`, seconds resolution: how certificate dates
/// and the clock (read through the same calendar) become authenticated-variable timestamps.
pub fn efi_time_of(t: &x509_cert::der::DateTime) -> EfiTime {
    efi_time(
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minutes(),
        t.seconds(),
    )
}

/// The subject's common name without `CN=` (or the whole subject) of a DER certificate.
pub fn certificate_subject(der: &[u8]) -> Option<String> {
    let desc = certificate_desc(der)?;
    Some(desc.strip_prefix("CN=").map(str::to_string).unwrap_or(desc))
}

/// `id-at-commonName` (2.5.4.3).
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");

/// A DER certificate's subject as virt-firmware describes it: its common name attribute
/// (`CN=…`), else the whole subject; `None` if the certificate's outer structure (the
/// certificate, its to-be-signed part, the fields up to the subject) does not parse.
///
/// The text is what `x509-cert` displays (RFC 4514 escapes), but only the subject is decoded,
/// and the usual case, a relative name holding only a string-valued common name, is read and
/// formatted here: decoding whole certificates (keys, extensions, dates) and `x509-cert`'s
/// look-up of each attribute's name in const-oid's whole name database made describing the
/// certificates of `OVMF_VARS_4M.ms.fd` a fifth of a whole `nvram list`
/// (`nvram/benches/list_floor.rs`). Whether a certificate is valid X.509 is the business of
/// enrolment and `check`, not of its description. The test `descriptions_match_x509_cert`
/// holds the two equal.
pub fn certificate_desc(der: &[u8]) -> Option<String> {
    let subject = subject_of(der)?;
    let mut rdns = SliceReader::new(subject.value()).ok()?;
    while !rdns.is_finished() {
        let rdn = AnyRef::decode(&mut rdns).ok()?;
        let mut attributes = SliceReader::new(rdn.value()).ok()?;
        let mut count = 0;
        let mut common_name = None;
        while !attributes.is_finished() {
            let attribute = AnyRef::decode(&mut attributes).ok()?;
            let mut fields = SliceReader::new(attribute.value()).ok()?;
            let oid = ObjectIdentifier::decode(&mut fields).ok()?;
            let value = AnyRef::decode(&mut fields).ok()?;
            count += 1;
            if oid == COMMON_NAME {
                common_name = Some(value);
            }
        }
        let Some(value) = common_name else { continue };
        if let (1, Some(text)) = (count, directory_string(value)) {
            return Some(format!("CN={}", rfc4514_escaped(text)));
        }
        // Several attributes in the name, or a value of another type: as x509-cert shows it.
        let rdn = x509_cert::name::RelativeDistinguishedName::from_der(&rdn.to_der().ok()?).ok()?;
        return Some(rdn.to_string());
    }
    let name = x509_cert::name::Name::from_der(&subject.to_der().ok()?).ok()?;
    Some(name.to_string())
}

/// The subject field of a DER certificate (RFC 5280 §4.1: the sixth field of the
/// to-be-signed sequence, after the optional version), its framing checked up to there.
fn subject_of(der: &[u8]) -> Option<AnyRef<'_>> {
    let certificate = AnyRef::from_der(der).ok()?;
    if certificate.tag() != Tag::Sequence {
        return None;
    }
    let mut outer = SliceReader::new(certificate.value()).ok()?;
    let tbs = AnyRef::decode(&mut outer).ok()?;
    let _signature_algorithm = AnyRef::decode(&mut outer).ok()?;
    let _signature = AnyRef::decode(&mut outer).ok()?;
    outer.finish(()).ok()?;
    if tbs.tag() != Tag::Sequence {
        return None;
    }
    let mut fields = SliceReader::new(tbs.value()).ok()?;
    let mut serial = AnyRef::decode(&mut fields).ok()?;
    if serial.tag().is_context_specific() {
        serial = AnyRef::decode(&mut fields).ok()?;
    }
    if serial.tag() != Tag::Integer {
        return None;
    }
    let _signature = AnyRef::decode(&mut fields).ok()?;
    let _issuer = AnyRef::decode(&mut fields).ok()?;
    let _validity = AnyRef::decode(&mut fields).ok()?;
    let subject = AnyRef::decode(&mut fields).ok()?;
    (subject.tag() == Tag::Sequence).then_some(subject)
}

/// The text of an attribute value of the string types `x509-cert` displays as text.
fn directory_string(value: AnyRef<'_>) -> Option<&str> {
    match value.tag() {
        Tag::PrintableString => PrintableStringRef::try_from(value).ok().map(|s| s.as_str()),
        Tag::Utf8String => Utf8StringRef::try_from(value).ok().map(|s| s.as_str()),
        Tag::Ia5String => Ia5StringRef::try_from(value).ok().map(|s| s.as_str()),
        Tag::TeletexString => TeletexStringRef::try_from(value).ok().map(|s| s.as_str()),
        _ => None,
    }
}

/// An attribute value escaped as RFC 4514 (and `x509-cert`'s `Display`) writes it.
fn rfc4514_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let last = text.chars().count().saturating_sub(1);
    for (i, c) in text.chars().enumerate() {
        match c {
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\x00'..='\x1f' | '\x7f' => out.push_str(&format!("\\{:02x}", c as u8)),
            _ => out.push(c),
        }
    }
    out
}

/// An entry of a signature list that is not what its type says ([`check_signature_lists`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signature list {list}, entry {entry}: {problem}")]
pub struct EntryError {
    /// The list's position among the lists that hold entries, from 0 (as `efi-readvar`
    /// counts).
    pub list: usize,
    /// The entry's position in its list, from 0.
    pub entry: usize,
    /// What is wrong.
    pub problem: String,
}

/// Checks every entry of some signature lists that the firmware (or the OS reading them)
/// would parse: an `EFI_CERT_X509_GUID` entry must be a DER X.509 certificate that parses,
/// an `EFI_CERT_SHA256_GUID` entry must be 32 bytes. Other types are not checked.
///
/// ```
/// use varstore::secureboot::{check_signature_lists, dummy_dbx, EntryError, SignatureDb};
/// assert!(check_signature_lists(&dummy_dbx()).is_ok());
/// let mut db = SignatureDb::default();
/// db.add_x509(varstore::secureboot::OVMF_ENROLL_DEFAULT_KEYS, &[0x30, 0x03, 1, 2, 3]);
/// assert!(matches!(
///     check_signature_lists(&db),
///     Err(EntryError { list: 0, entry: 0, .. })
/// ));
/// ```
pub fn check_signature_lists(db: &SignatureDb) -> Result<(), EntryError> {
    for (list, l) in db.lists.iter().enumerate() {
        for (entry, (_, data)) in l.entries.iter().enumerate() {
            let problem = if l.signature_type == guid::CERT_X509 {
                certificate_not_before(data).is_none().then(|| {
                    format!(
                        "the X.509 entry ({} bytes) is not a certificate that parses (DER)",
                        data.len()
                    )
                })
            } else if l.signature_type == guid::CERT_SHA256 && data.len() != 32 {
                Some(format!(
                    "a SHA-256 entry of {} bytes (a SHA-256 hash has 32)",
                    data.len()
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(EntryError {
                    list,
                    entry,
                    problem,
                });
            }
        }
    }
    Ok(())
}

/// Splits an `EFI_VARIABLE_AUTHENTICATION_2` payload (spec §12.2) into its timestamp and
/// the data after the `WIN_CERTIFICATE_UEFI_GUID`; `None` if the header is not one.
pub fn split_auth2(bytes: &[u8]) -> Option<(EfiTime, &[u8])> {
    let time: [u8; 16] = bytes.get(0..16)?.try_into().ok()?;
    let length = u32::from_le_bytes(bytes.get(16..20)?.try_into().ok()?) as usize;
    let revision = u16::from_le_bytes(bytes.get(20..22)?.try_into().ok()?);
    let cert_type = u16::from_le_bytes(bytes.get(22..24)?.try_into().ok()?);
    let guid_bytes: [u8; 16] = bytes.get(24..40)?.try_into().ok()?;
    if revision != 0x0200 || cert_type != 0x0EF1 || Guid::from_bytes(guid_bytes) != CERT_TYPE_PKCS7
    {
        return None;
    }
    if length < 24 {
        return None;
    }
    let end = 16usize.checked_add(length)?;
    let mut time = EfiTime(time);
    // Authenticated writes carry GMT with zero nanoseconds/zone (spec §5.5); keep only the date.
    time.0[7..].fill(0);
    Some((time, bytes.get(end..)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_cert::attr::AttributeTypeAndValue;
    use x509_cert::der::Any;

    /// Certificates of several issuers (virtfw-libefi's bundle, a dev-dependency only).
    const CERTIFICATES: &[&[u8]] = {
        use virtfw_libefi::sb::certs as c;
        &[
            c::MICROSOFT_PK_2023,
            c::MICROSOFT_KEK_2011,
            c::MICROSOFT_KEK_2023,
            c::MICROSOFT_DB_UEFI_2011,
            c::MICROSOFT_DB_UEFI_2023,
            c::MICROSOFT_DB_UEFI_ROM_2023,
            c::MICROSOFT_DB_WINDOWS_2011,
            c::MICROSOFT_DB_WINDOWS_2023,
            c::REDHAT_DB_UEFI_2024,
        ]
    };

    #[test]
    fn descriptions_match_x509_cert() {
        for der in CERTIFICATES {
            let info = virtfw_libefi::sb::certs::info::CertInfo::new_from_der(der).unwrap();
            assert_eq!(certificate_desc(der).as_deref(), Some(info.desc()));
            let not_before = certificate_not_before(der).unwrap();
            let t = &info.not_before;
            assert_eq!(
                not_before,
                efi_time(t.year, t.month, t.day, t.hour, t.minute, t.second)
            );
        }
        // A changed signature byte still parses; garbage is no certificate.
        let mut other = CERTIFICATES[1].to_vec();
        *other.last_mut().unwrap() ^= 1;
        assert_eq!(
            certificate_subject(&other).as_deref(),
            Some("Microsoft Corporation KEK CA 2011")
        );
        assert_eq!(certificate_desc(&[0x30, 3, 1, 2, 3]), None);
        assert_eq!(certificate_not_before(&[0x30, 3, 1, 2, 3]), None);
    }

    #[test]
    fn subjects_without_a_lone_common_name_are_described_as_x509_cert_displays_them() {
        use std::str::FromStr;
        use x509_cert::der::Encode;
        for (subject, expected) in [
            ("O=Example,C=DE", "O=Example,C=DE"),
            ("CN=a+O=b,C=DE", "CN=a+O=b"),
            (r"C=DE,CN=x\,y", r"CN=x\,y"),
        ] {
            let mut cert = Certificate::from_der(CERTIFICATES[0]).unwrap();
            cert.tbs_certificate.subject = x509_cert::name::Name::from_str(subject).unwrap();
            let der = cert.to_der().unwrap();
            assert_eq!(
                certificate_desc(&der).as_deref(),
                Some(expected),
                "{subject}"
            );
        }
    }

    #[test]
    fn escaping_matches_x509_cert() {
        for text in [
            "#lead",
            " both ",
            "a,b+c;d<e>f\"g\\h",
            "ctl\x01\x7f",
            "Ünïcode",
            "",
        ] {
            let value = Any::from(Utf8StringRef::new(text).unwrap());
            let attribute = AttributeTypeAndValue {
                oid: COMMON_NAME,
                value,
            };
            assert_eq!(
                format!("CN={}", rfc4514_escaped(text)),
                attribute.to_string(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn certificates_get_a_list_each() {
        let der = CERTIFICATES[2];
        let mut db = SignatureDb::default();
        assert!(db.add_x509(guid::MICROSOFT_OWNER, der));
        assert!(!db.add_x509(guid::MICROSOFT_OWNER, der));
        assert!(db.add_x509(guid::MICROSOFT_OWNER, CERTIFICATES[3]));
        let bytes = db.to_bytes();
        assert_eq!(
            bytes.len(),
            2 * (28 + 16) + der.len() + CERTIFICATES[3].len()
        );
        assert_eq!(SignatureDb::parse(&bytes).unwrap(), db);
        assert!(check_signature_lists(&db).is_ok());
        assert_eq!(
            db.newest_certificate_time(),
            [der, CERTIFICATES[3]]
                .into_iter()
                .filter_map(certificate_not_before)
                .max_by_key(time_key)
        );
    }

    #[test]
    fn auth_header_is_split_off() {
        let mut auth = efi_time(2024, 5, 6, 7, 8, 9).0.to_vec();
        auth[8] = 1; // nanoseconds, which the header's time does not keep
        let cert_data = [1u8, 2, 3];
        auth.extend_from_slice(&(24u32 + cert_data.len() as u32).to_le_bytes());
        auth.extend_from_slice(&0x0200u16.to_le_bytes());
        auth.extend_from_slice(&0x0EF1u16.to_le_bytes());
        auth.extend_from_slice(&CERT_TYPE_PKCS7.to_bytes());
        auth.extend_from_slice(&cert_data);
        let lists = dummy_dbx().to_bytes();
        auth.extend_from_slice(&lists);
        let (time, payload) = split_auth2(&auth).unwrap();
        assert_eq!(time, efi_time(2024, 5, 6, 7, 8, 9));
        assert_eq!(payload, lists.as_slice());
        // Truncated inputs are refused or split, never a panic.
        for n in 0..auth.len() {
            let _ = split_auth2(&auth[..n]);
        }
        assert!(split_auth2(&auth[..39]).is_none());
    }
}
