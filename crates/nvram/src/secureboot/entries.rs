//! Reading the entries of a store's signature databases out: their SHA-256 hashes (what dbx
//! tooling compares) and their certificates as PEM files (virt-fw-vars' `--hashes` and
//! `--extract-certs`), and parsing a hash given as text.

use crate::files::{create_new, FileError};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use varstore::guid::{self, Guid};
use varstore::secureboot::{certificate_subject, SignatureDb};
use varstore::Varstore;

/// The variables virt-firmware reads as signature databases, whatever their GUID: the
/// firmware's four, shim's MOK lists and their runtime mirrors, and the TLS CA list.
pub const SIGNATURE_DB_NAMES: [&str; 9] = [
    "PK",
    "KEK",
    "db",
    "dbx",
    "MokList",
    "MokListX",
    "TlsCaCertificate",
    "MokListRT",
    "MokListXRT",
];

/// A SHA-256 hash given as text that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a SHA-256 hash: {problem}")]
pub struct HashError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// Parses a SHA-256 hash written as 64 hex digits (either case; a `sha256:` prefix and
/// colons between bytes are accepted, as tools print them).
///
/// ```
/// use nvram::secureboot::parse_sha256;
/// let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// assert_eq!(parse_sha256(empty)?[0], 0xe3);
/// assert!(parse_sha256("e3b0").is_err());
/// # Ok::<(), nvram::secureboot::HashError>(())
/// ```
pub fn parse_sha256(text: &str) -> Result<[u8; 32], HashError> {
    let bad = |problem| HashError {
        text: text.to_string(),
        problem,
    };
    let digits: String = text
        .trim()
        .trim_start_matches("sha256:")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    if !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad("only hex digits are allowed"));
    }
    if digits.len() != 64 {
        return Err(bad("a SHA-256 hash has 64 hex digits"));
    }
    let mut hash = [0u8; 32];
    hex::decode_to_slice(&digits, &mut hash).map_err(|_| bad("broken hex"))?;
    Ok(hash)
}

/// One entry of a signature database and its SHA-256.
#[derive(Debug, Clone, Serialize)]
pub struct EntryHash {
    /// The variable (PK, KEK, db, dbx, MokList, …).
    pub variable: String,
    /// The variable's vendor GUID.
    pub guid: String,
    /// `sha256` for an `EFI_CERT_SHA256` entry (the hash is the entry itself), `x509` for a
    /// certificate (the hash is that of its DER, its fingerprint), else the type's GUID or name.
    pub kind: String,
    /// The SHA-256, lower-case hex.
    pub sha256: String,
    /// The entry's owner GUID.
    pub owner: String,
    /// The certificate's subject CN, for certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// Every live variable that is one of [`SIGNATURE_DB_NAMES`] and parses as a signature
/// database, with its database; malformed ones are skipped (`nvram check` reports them).
fn databases(store: &Varstore<'_>) -> Vec<(String, Guid, SignatureDb)> {
    store
        .live_variables()
        .iter()
        .filter(|v| SIGNATURE_DB_NAMES.contains(&v.name().as_str()))
        .filter_map(|v| Some((v.name(), v.guid, SignatureDb::parse(v.data).ok()?)))
        .collect()
}

/// The SHA-256 of every entry of the store's signature databases, in store order: a
/// `EFI_CERT_SHA256` entry as it is (what virt-fw-vars' `--hashes` prints), a certificate as
/// the hash of its DER, an entry of another hash type by its data's SHA-256 is not
/// meaningful and is left out.
pub fn entry_hashes(store: &Varstore<'_>) -> Vec<EntryHash> {
    let mut out = Vec::new();
    for (variable, vendor, db) in databases(store) {
        for list in &db.lists {
            let kind = if list.signature_type == guid::CERT_SHA256 {
                "sha256"
            } else if list.signature_type == guid::CERT_X509 {
                "x509"
            } else {
                continue;
            };
            for (owner, data) in &list.entries {
                let (sha256, subject) = if kind == "sha256" {
                    (hex::encode(data), None)
                } else {
                    (hex::encode(Sha256::digest(data)), certificate_subject(data))
                };
                out.push(EntryHash {
                    variable: variable.clone(),
                    guid: vendor.to_string(),
                    kind: kind.to_string(),
                    sha256,
                    owner: guid::to_text(*owner),
                    subject,
                });
            }
        }
    }
    out
}

/// One certificate written by [`extract_certificates`].
#[derive(Debug, Clone, Serialize)]
pub struct ExtractedCertificate {
    /// The variable it came from.
    pub variable: String,
    /// Its owner GUID.
    pub owner: String,
    /// Its subject CN, if it has one.
    pub subject: Option<String>,
    /// The file.
    pub path: PathBuf,
    /// A file of that name existed already and was left alone (virt-fw-vars skips it too).
    pub skipped: bool,
}

/// Why certificates could not be extracted.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// A PEM file could not be written.
    #[error(transparent)]
    Write(#[from] FileError),
}

/// The file name virt-fw-vars gives a certificate of `variable` owned by `owner`:
/// `VARIABLE-OWNER-CN.pem`, the subject CN reduced to its letters and digits, or the
/// certificate's SHA-256 without a CN.
///
/// ```
/// use nvram::secureboot::certificate_file_name;
/// let der = nvram::certs::bundled::MICROSOFT_KEK_2023;
/// let owner = varstore::guid::MICROSOFT_OWNER;
/// assert_eq!(
///     certificate_file_name("KEK", owner, der),
///     "KEK-77fa9abd-0359-4d32-bd60-28f4e78f784b-MicrosoftCorporationKEK2KCA2023.pem"
/// );
/// ```
pub fn certificate_file_name(variable: &str, owner: Guid, der: &[u8]) -> String {
    let name = match certificate_subject(der) {
        Some(cn) => cn.chars().filter(|c| c.is_alphanumeric()).collect(),
        None => hex::encode(Sha256::digest(der)),
    };
    format!("{variable}-{}-{name}.pem", guid::to_text(owner))
}

/// Writes every certificate of the store's signature databases as a PEM file into `dir`
/// (named by [`certificate_file_name`]), each created as a new file (never over an existing
/// file or through a symlink: such a name is reported as skipped).
pub fn extract_certificates(
    store: &Varstore<'_>,
    dir: &Path,
) -> Result<Vec<ExtractedCertificate>, ExtractError> {
    let mut out = Vec::new();
    for (variable, _, db) in databases(store) {
        for list in db
            .lists
            .iter()
            .filter(|l| l.signature_type == guid::CERT_X509)
        {
            for (owner, der) in &list.entries {
                let path = dir.join(certificate_file_name(&variable, *owner, der));
                let pem =
                    pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, der)
                        // Encoding fails only for lengths no variable can hold.
                        .unwrap_or_default();
                let skipped = match create_new(&path, pem.as_bytes()) {
                    Ok(()) => false,
                    Err(FileError::Exists { .. }) => true,
                    Err(e) => return Err(e.into()),
                };
                out.push(ExtractedCertificate {
                    variable: variable.clone(),
                    owner: guid::to_text(*owner),
                    subject: certificate_subject(der),
                    path,
                    skipped,
                });
            }
        }
    }
    Ok(out)
}
