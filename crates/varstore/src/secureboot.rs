//! Building signature databases (spec §12): `EFI_SIGNATURE_LIST`s for certificates and hashes,
//! merging into an existing database without duplicates, reading the certificate and `.auth`
//! inputs people have (PEM, DER, signature lists, `EFI_VARIABLE_AUTHENTICATION_2` files), and
//! the timestamps virt-firmware gives the variables.
//!
//! Reading untrusted bytes is bounded here and in [`crate::decode`]; certificates are parsed
//! with the `x509-cert` crate (through virtfw-libefi), which returns errors rather than
//! panicking.
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

use crate::decode::signature_lists;
use crate::guid;
use crate::EfiTime;
use uguid::{guid, Guid};

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
/// Debian packages (provenance and fingerprints: `crates/varstore/certs/README.md`).
///
/// ```
/// use varstore::secureboot::{certificate_subject, distro_certs};
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
    /// Parses a database; `None` if the list sizes do not add up (see
    /// [`decode::signature_lists`](crate::decode::signature_lists)). Lists with a
    /// SignatureHeader are kept without it (no standard type has one).
    pub fn parse(data: &[u8]) -> Option<Self> {
        let lists = signature_lists(data)?
            .into_iter()
            .filter(|l| !l.entries.is_empty())
            .map(|l| OwnedList {
                signature_type: l.signature_type,
                entries: l.entries.iter().map(|(g, d)| (*g, d.to_vec())).collect(),
            })
            .collect();
        Some(Self { lists })
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

/// The current UTC time as an `EFI_TIME` (seconds resolution).
pub fn now() -> EfiTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as u16;
    efi_time(
        year,
        month,
        day,
        (rem / 3600) as u8,
        (rem / 60 % 60) as u8,
        (rem % 60) as u8,
    )
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
    let info = virtfw_libefi::sb::certs::info::CertInfo::new_from_der(der)?;
    let t = &info.not_before;
    Some(efi_time(t.year, t.month, t.day, t.hour, t.minute, t.second))
}

/// The subject's common name without `CN=` (or the whole subject) of a DER certificate.
pub fn certificate_subject(der: &[u8]) -> Option<String> {
    let desc = certificate_desc(der)?;
    Some(desc.strip_prefix("CN=").map(str::to_string).unwrap_or(desc))
}

/// The certificates nvram enrols itself, with their [`certificate_desc`]: told apart by
/// their bytes, they need no parsing. Formatting a subject costs x509-cert a scan of
/// const-oid's whole name database per attribute (a quarter of a whole `nvram list` of
/// `OVMF_VARS_4M.ms.fd`; `nvram/benches/list_floor.rs`). The test
/// `known_certificate_descriptions` checks each text against the parser's.
const KNOWN_CERTIFICATES: &[(&[u8], &str)] = {
    use virtfw_libefi::sb::certs as ms;
    &[
        (ms::MICROSOFT_PK_2023, "CN=Windows OEM Devices PK"),
        (
            ms::MICROSOFT_KEK_2011,
            "CN=Microsoft Corporation KEK CA 2011",
        ),
        (
            ms::MICROSOFT_KEK_2023,
            "CN=Microsoft Corporation KEK 2K CA 2023",
        ),
        (
            ms::MICROSOFT_DB_UEFI_2011,
            "CN=Microsoft Corporation UEFI CA 2011",
        ),
        (ms::MICROSOFT_DB_UEFI_2023, "CN=Microsoft UEFI CA 2023"),
        (
            ms::MICROSOFT_DB_UEFI_ROM_2023,
            "CN=Microsoft Option ROM UEFI CA 2023",
        ),
        (
            ms::MICROSOFT_DB_WINDOWS_2011,
            "CN=Microsoft Windows Production PCA 2011",
        ),
        (ms::MICROSOFT_DB_WINDOWS_2023, "CN=Windows UEFI CA 2023"),
        (
            distro_certs::DEBIAN_SECURE_BOOT_CA_2016,
            "CN=Debian Secure Boot CA",
        ),
        (
            distro_certs::CANONICAL_MASTER_CA_2012,
            "CN=Canonical Ltd. Master Certificate Authority",
        ),
    ]
};

/// Other certificates already described by this process (a PK is often also in KEK), at
/// most [`MEMO_LEN`] of them.
static MEMO: std::sync::Mutex<Vec<(Vec<u8>, Option<String>)>> = std::sync::Mutex::new(Vec::new());
const MEMO_LEN: usize = 16;

/// A DER certificate's subject as virt-firmware describes it: its common name attribute
/// (`CN=…`), else the whole subject; `None` if the certificate does not parse.
pub fn certificate_desc(der: &[u8]) -> Option<String> {
    if let Some((_, desc)) = KNOWN_CERTIFICATES.iter().find(|(known, _)| *known == der) {
        return Some((*desc).to_string());
    }
    let memo = |memo: &mut Vec<(Vec<u8>, Option<String>)>| {
        memo.iter()
            .find(|(known, _)| known.as_slice() == der)
            .map(|(_, desc)| desc.clone())
    };
    if let Some(desc) = MEMO.lock().ok().and_then(|mut m| memo(&mut m)) {
        return desc;
    }
    let desc = virtfw_libefi::sb::certs::info::CertInfo::new_from_der(der)
        .map(|info| info.desc().to_string());
    if let Ok(mut m) = MEMO.lock() {
        if m.len() < MEMO_LEN {
            m.push((der.to_vec(), desc.clone()));
        }
    }
    desc
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
    /// A PEM block whose base64 is broken or whose certificate does not parse.
    #[error("PEM certificate {index}: {problem}")]
    BadPem {
        /// 1-based number of the block.
        index: usize,
        /// What is wrong.
        problem: &'static str,
    },
    /// An `.auth` file whose header or signature lists are broken.
    #[error(".auth file: {0}")]
    BadAuth(&'static str),
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
    #[error("signature list {list}, entry {entry}: {problem}")]
    BadEntry {
        /// The list's position among the input's lists that hold entries, from 0 (as
        /// `efi-readvar` counts).
        list: usize,
        /// The entry's position in its list, from 0.
        entry: usize,
        /// What is wrong.
        problem: String,
    },
}

/// Checks every entry of some signature lists that the firmware (or the OS reading them)
/// would parse: an `EFI_CERT_X509_GUID` entry must be a DER X.509 certificate that parses,
/// an `EFI_CERT_SHA256_GUID` entry must be 32 bytes. Other types are not checked.
///
/// ```
/// use varstore::secureboot::{check_signature_lists, dummy_dbx, InputError, SignatureDb};
/// assert!(check_signature_lists(&dummy_dbx()).is_ok());
/// let mut db = SignatureDb::default();
/// db.add_x509(varstore::secureboot::OVMF_ENROLL_DEFAULT_KEYS, &[0x30, 0x03, 1, 2, 3]);
/// assert!(matches!(
///     check_signature_lists(&db),
///     Err(InputError::BadEntry { list: 0, entry: 0, .. })
/// ));
/// ```
pub fn check_signature_lists(db: &SignatureDb) -> Result<(), InputError> {
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
                return Err(InputError::BadEntry {
                    list,
                    entry,
                    problem,
                });
            }
        }
    }
    Ok(())
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
                            problem: "the certificate does not parse",
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
                check_signature_lists(db)
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
/// use varstore::secureboot::{read_signature_input, SignatureInput, dummy_dbx};
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
        let db = SignatureDb::parse(payload).ok_or(InputError::BadAuth(
            "the data after the header is not signature lists",
        ))?;
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
        if let Some(db) = SignatureDb::parse(bytes) {
            let input = SignatureInput::Lists { db, time: None };
            input.check()?;
            return Ok(input);
        }
    }
    Err(InputError::Unrecognised)
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

fn pem_text(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    text.contains("-----BEGIN ").then_some(text)
}

fn pem_certificates(text: &str) -> Result<Vec<Vec<u8>>, InputError> {
    let mut certs = Vec::new();
    let mut rest = text;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    while let Some(start) = rest.find(BEGIN) {
        let body_start = start + BEGIN.len();
        let index = certs.len() + 1;
        let stop = rest[body_start..].find(END).ok_or(InputError::BadPem {
            index,
            problem: "no END line",
        })?;
        let der =
            base64_decode(&rest[body_start..body_start + stop]).ok_or(InputError::BadPem {
                index,
                problem: "broken base64",
            })?;
        if certificate_not_before(&der).is_none() {
            return Err(InputError::BadPem {
                index,
                problem: "the certificate does not parse",
            });
        }
        certs.push(der);
        rest = &rest[body_start + stop + END.len()..];
    }
    Ok(certs)
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    let mut padding = false;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padding = true;
                continue;
            }
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            _ => return None,
        };
        if padding {
            return None;
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVs\nbG8h").unwrap(), b"hello!");
        assert!(base64_decode("a*b").is_none());
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
    fn bundled_certificates_parse() {
        let der = virtfw_libefi::sb::certs::MICROSOFT_KEK_2023;
        assert_eq!(
            certificate_subject(der).as_deref(),
            Some("Microsoft Corporation KEK 2K CA 2023")
        );
        let mut db = SignatureDb::default();
        assert!(db.add_x509(guid::MICROSOFT_OWNER, der));
        assert!(!db.add_x509(guid::MICROSOFT_OWNER, der));
        let bytes = db.to_bytes();
        assert_eq!(bytes.len(), 28 + 16 + der.len());
        let again = read_signature_input(&bytes).unwrap();
        assert_eq!(again, SignatureInput::Lists { db, time: None });
        assert!(matches!(
            read_signature_input(der),
            Ok(SignatureInput::Certificates(c)) if c.len() == 1
        ));
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
    }

    #[test]
    fn known_certificate_descriptions() {
        for (der, desc) in KNOWN_CERTIFICATES {
            let info = virtfw_libefi::sb::certs::info::CertInfo::new_from_der(der).unwrap();
            assert_eq!(info.desc(), *desc);
            assert_eq!(certificate_desc(der).as_deref(), Some(*desc));
        }
        // An unknown certificate (the known one with a changed signature byte) is parsed,
        // also the second time (from the memo); garbage is not a certificate.
        let mut other = distro_certs::DEBIAN_SECURE_BOOT_CA_2016.to_vec();
        *other.last_mut().unwrap() ^= 1;
        for _ in 0..2 {
            assert_eq!(
                certificate_desc(&other).as_deref(),
                Some("CN=Debian Secure Boot CA")
            );
            assert_eq!(certificate_desc(&[0x30, 3, 1, 2, 3]), None);
        }
        assert_eq!(
            certificate_subject(distro_certs::DEBIAN_SECURE_BOOT_CA_2016).as_deref(),
            Some("Debian Secure Boot CA")
        );
    }

    #[test]
    fn now_is_plausible() {
        let t = now();
        assert!(t.year() >= 2024 && (1..=12).contains(&t.0[2]) && (1..=31).contains(&t.0[3]));
    }
}
