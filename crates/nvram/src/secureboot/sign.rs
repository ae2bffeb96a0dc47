//! Signed updates of PK, KEK, db and dbx: `.auth` payloads a running guest hands to the
//! firmware's `SetVariable`, which checks the signature against the current PK (for PK and
//! KEK) or KEK (for db and dbx) before it changes anything (docs/signed-updates.md).
//!
//! A payload is an `EFI_VARIABLE_AUTHENTICATION_2` header (timestamp and a
//! `WIN_CERTIFICATE_UEFI_GUID` of type PKCS#7) followed by the new value. The PKCS#7 part
//! is a DER `SignedData` (no `ContentInfo` around it, as the UEFI specification asks and
//! edk2 expects) with detached content: RSA PKCS#1 v1.5 over SHA-256 of the variable's name
//! (UTF-16LE, no terminator), vendor GUID, attributes, the timestamp and the value
//! ([`signed_bytes`]), carrying the signer's certificate.
//!
//! ```no_run
//! use nvram::secureboot::{sign_update, Database, UpdateMode, UpdateSigner};
//! use varstore::secureboot::{SignatureDb, OVMF_ENROLL_DEFAULT_KEYS};
//! use std::path::Path;
//!
//! // The KEK's private key and certificate sign db updates.
//! let signer = UpdateSigner::read(Path::new("kek.key"), Path::new("kek.pem"))?;
//! let mut db = SignatureDb::default();
//! db.add_x509(OVMF_ENROLL_DEFAULT_KEYS, &std::fs::read("new-db-cert.der")?);
//! let now = nvram::certs::now();
//! let auth = sign_update(Database::Db, &db, UpdateMode::Append, now, &signer)?;
//! std::fs::write("db-append.auth", auth)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::{Database, AUTHENTICATED};
use crate::certs::{read_signature_input, SignatureInput};
use cms::builder::{SignedDataBuilder, SignerInfoBuilder};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use varstore::guid::Guid;
use varstore::secureboot::{SignatureDb, CERT_TYPE_PKCS7};
use varstore::{Attributes, EfiTime};
use x509_cert::der::{Decode, Encode};
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

/// `EFI_VARIABLE_APPEND_WRITE`: the value is added to the variable's (for signature
/// databases: entries already present are dropped by the firmware) instead of replacing it.
pub const APPEND_WRITE: u32 = 0x40;

/// Largest key or certificate file read: far above any RSA key or certificate in PEM.
const MAX_KEY_FILE_LEN: u64 = 1 << 20;

/// Replace the database or add to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    /// The new value replaces the variable (attributes 0x27); empty data deletes it. The
    /// timestamp must be later than the variable's.
    Replace,
    /// The new entries are added (attributes 0x67, with [`APPEND_WRITE`]); any timestamp is
    /// accepted, the variable keeps the later one.
    Append,
}

impl UpdateMode {
    /// The attributes the update is signed with and must be written with.
    pub fn attributes(self) -> Attributes {
        match self {
            Self::Replace => AUTHENTICATED,
            Self::Append => Attributes(AUTHENTICATED.0 | APPEND_WRITE),
        }
    }
}

/// Why a signed update could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A key or certificate file could not be read.
    #[error("{path}: {problem}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        problem: String,
    },
    /// The private key is not an unencrypted RSA key in PKCS#8 or PKCS#1, PEM or DER.
    #[error("private key: {0}")]
    Key(String),
    /// The certificate is not exactly one X.509 certificate in PEM or DER.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The key does not belong to the certificate: the firmware would refuse every update.
    #[error("the private key does not belong to the certificate {subject:?}")]
    KeyMismatch {
        /// The certificate's subject.
        subject: String,
    },
    /// The timestamp is not a plain GMT date and time (EFI_TIME with nanoseconds, time zone,
    /// daylight and padding zero), which the firmware refuses.
    #[error("timestamp bytes {0:02x?}: nanoseconds, time zone, daylight and padding must be zero")]
    Time([u8; 16]),
    /// Encoding or signing failed.
    #[error("signing: {0}")]
    Crypto(String),
}

fn crypto(e: impl std::fmt::Display) -> SignError {
    SignError::Crypto(e.to_string())
}

/// An RSA private key and the certificate that goes with it, which sign updates.
pub struct UpdateSigner {
    key: rsa::RsaPrivateKey,
    certificate: Certificate,
    certificate_der: Vec<u8>,
}

impl std::fmt::Debug for UpdateSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateSigner")
            .field("subject", &self.subject())
            .finish_non_exhaustive()
    }
}

impl UpdateSigner {
    /// A signer from the bytes of a private key (PKCS#8 or PKCS#1 RSA, PEM or DER,
    /// unencrypted) and of its certificate (PEM or DER); refuses a key that is not the
    /// certificate's.
    pub fn new(key: &[u8], certificate: &[u8]) -> Result<Self, SignError> {
        let key = parse_key(key)?;
        let certificate_der = match read_signature_input(certificate) {
            Ok(SignatureInput::Certificates(mut certs)) if certs.len() == 1 => certs.remove(0),
            Ok(SignatureInput::Certificates(certs)) => {
                return Err(SignError::Certificate(format!(
                    "{} certificates in the file, expected one",
                    certs.len()
                )))
            }
            Ok(SignatureInput::Lists { .. }) => {
                return Err(SignError::Certificate(
                    "signature lists, expected an X.509 certificate".into(),
                ))
            }
            Err(e) => return Err(SignError::Certificate(e.to_string())),
        };
        let certificate = Certificate::from_der(&certificate_der)
            .map_err(|e| SignError::Certificate(e.to_string()))?;
        let signer = Self {
            key,
            certificate,
            certificate_der,
        };
        let ours = x509_cert::spki::SubjectPublicKeyInfoOwned::from_key(signer.key.to_public_key())
            .map_err(crypto)?;
        if ours.subject_public_key
            != signer
                .certificate
                .tbs_certificate
                .subject_public_key_info
                .subject_public_key
        {
            return Err(SignError::KeyMismatch {
                subject: signer.subject(),
            });
        }
        Ok(signer)
    }

    /// [`new`](Self::new) with the contents of two files.
    pub fn read(key: &Path, certificate: &Path) -> Result<Self, SignError> {
        let read = |path: &Path, what: &'static str| {
            safefile::read_input(path, safefile::Accept::RegularFile, MAX_KEY_FILE_LEN, what)
                .map_err(|e| SignError::Read {
                    path: path.to_path_buf(),
                    problem: super::without_path(&e),
                })
        };
        let key_bytes = x509_cert::der::zeroize::Zeroizing::new(read(key, "a private key")?);
        let cert_bytes = read(certificate, "a certificate")?;
        Self::new(&key_bytes, &cert_bytes).map_err(|e| match e {
            SignError::Key(problem) => SignError::Read {
                path: key.to_path_buf(),
                problem: format!("private key: {problem}"),
            },
            SignError::Certificate(problem) => SignError::Read {
                path: certificate.to_path_buf(),
                problem: format!("certificate: {problem}"),
            },
            other => other,
        })
    }

    /// The certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// The certificate's subject.
    pub fn subject(&self) -> String {
        self.certificate.tbs_certificate.subject.to_string()
    }
}

fn parse_key(bytes: &[u8]) -> Result<rsa::RsaPrivateKey, SignError> {
    let key_error = |e: &dyn std::fmt::Display| SignError::Key(e.to_string());
    match std::str::from_utf8(bytes)
        .ok()
        .filter(|t| t.contains("-----BEGIN "))
    {
        Some(text) => {
            if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
                || text.contains("Proc-Type: 4,ENCRYPTED")
            {
                return Err(SignError::Key(
                    "the key is encrypted; decrypt it first (openssl pkey)".into(),
                ));
            }
            if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
                rsa::RsaPrivateKey::from_pkcs1_pem(text).map_err(|e| key_error(&e))
            } else if text.contains("-----BEGIN PRIVATE KEY-----") {
                rsa::RsaPrivateKey::from_pkcs8_pem(text).map_err(|e| key_error(&e))
            } else {
                Err(SignError::Key(
                    "no PEM block PRIVATE KEY or RSA PRIVATE KEY".into(),
                ))
            }
        }
        None => rsa::RsaPrivateKey::from_pkcs8_der(bytes)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_der(bytes))
            .map_err(|_| {
                SignError::Key("neither PEM nor an RSA key in PKCS#8 or PKCS#1 DER".into())
            }),
    }
}

/// What the signature covers: the variable's name (UTF-16LE without terminator), vendor
/// GUID, attributes (little-endian), timestamp and new value, concatenated.
///
/// ```
/// use nvram::secureboot::{signed_bytes, Database, UpdateMode};
/// let time = varstore::secureboot::efi_time(2026, 1, 2, 3, 4, 5);
/// let bytes = signed_bytes("db", Database::Db.guid(), UpdateMode::Append.attributes(), time, b"x");
/// assert_eq!(&bytes[..4], b"d\0b\0");
/// assert_eq!(&bytes[20..24], &0x67u32.to_le_bytes());
/// assert_eq!(bytes.len(), 4 + 16 + 4 + 16 + 1);
/// ```
pub fn signed_bytes(
    name: &str,
    guid: Guid,
    attributes: Attributes,
    time: EfiTime,
    data: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() * 2 + 36 + data.len());
    for unit in name.encode_utf16() {
        out.extend_from_slice(&unit.to_le_bytes());
    }
    out.extend_from_slice(&guid.to_bytes());
    out.extend_from_slice(&attributes.0.to_le_bytes());
    out.extend_from_slice(&time.0);
    out.extend_from_slice(data);
    out
}

/// The DER PKCS#7 `SignedData` over `message` (detached), with `signer`'s certificate.
pub fn pkcs7_detached(message: &[u8], signer: &UpdateSigner) -> Result<Vec<u8>, SignError> {
    let digest = Sha256::digest(message);
    let content = EncapsulatedContentInfo {
        econtent_type: x509_cert::der::oid::db::rfc5911::ID_DATA,
        econtent: None,
    };
    let sha256 = AlgorithmIdentifierOwned {
        oid: x509_cert::der::oid::db::rfc5912::ID_SHA_256,
        parameters: None,
    };
    let tbs = &signer.certificate.tbs_certificate;
    // Issuer and serial number (version 1 SignerInfo): what PKCS#7 v1.5 verifiers know.
    let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
        issuer: tbs.issuer.clone(),
        serial_number: tbs.serial_number.clone(),
    });
    let key = rsa::pkcs1v15::SigningKey::<Sha256>::new(signer.key.clone());
    let signer_info =
        SignerInfoBuilder::new(&key, sid, sha256.clone(), &content, Some(digest.as_slice()))
            .map_err(crypto)?;
    let mut builder = SignedDataBuilder::new(&content);
    builder
        .add_digest_algorithm(sha256)
        .map_err(crypto)?
        .add_certificate(CertificateChoices::Certificate(signer.certificate.clone()))
        .map_err(crypto)?
        .add_signer_info::<_, rsa::pkcs1v15::Signature>(signer_info)
        .map_err(crypto)?;
    let content_info = builder.build().map_err(crypto)?;
    // The SignedData itself, without the ContentInfo around it.
    content_info.content.to_der().map_err(crypto)
}

/// An `EFI_VARIABLE_AUTHENTICATION_2` payload for variable `name` in `guid`: `time`, the
/// PKCS#7 signature of [`signed_bytes`] by `signer`, then `data`. `attributes` are those
/// `SetVariable` will be called with (including [`APPEND_WRITE`] for an append).
pub fn sign_variable(
    name: &str,
    guid: Guid,
    attributes: Attributes,
    time: EfiTime,
    data: &[u8],
    signer: &UpdateSigner,
) -> Result<Vec<u8>, SignError> {
    if time.0[7..].iter().any(|&b| b != 0) {
        return Err(SignError::Time(time.0));
    }
    let signature = pkcs7_detached(&signed_bytes(name, guid, attributes, time, data), signer)?;
    Ok(auth_payload(time, &signature, data))
}

/// A signed update of `database`: its new value (replace) or the entries to add (append).
pub fn sign_update(
    database: Database,
    value: &SignatureDb,
    mode: UpdateMode,
    time: EfiTime,
    signer: &UpdateSigner,
) -> Result<Vec<u8>, SignError> {
    sign_variable(
        database.name(),
        database.guid(),
        mode.attributes(),
        time,
        &value.to_bytes(),
        signer,
    )
}

/// An `.auth` payload without a signature (an empty PKCS#7 part), as virt-fw-vars'
/// `--output-auth` writes: a firmware in setup or custom mode takes it, one in user mode
/// refuses it.
pub fn unsigned_update(time: EfiTime, data: &[u8]) -> Vec<u8> {
    auth_payload(time, &[], data)
}

fn auth_payload(time: EfiTime, signature: &[u8], data: &[u8]) -> Vec<u8> {
    // WIN_CERTIFICATE_UEFI_GUID: dwLength (header 8 + CertType 16 + signature),
    // wRevision 2.0, wCertificateType WIN_CERT_TYPE_EFI_GUID.
    let length = 24 + signature.len();
    let mut out = Vec::with_capacity(16 + length + data.len());
    out.extend_from_slice(&time.0);
    out.extend_from_slice(&(length as u32).to_le_bytes());
    out.extend_from_slice(&0x0200u16.to_le_bytes());
    out.extend_from_slice(&0x0EF1u16.to_le_bytes());
    out.extend_from_slice(&CERT_TYPE_PKCS7.to_bytes());
    out.extend_from_slice(signature);
    out.extend_from_slice(data);
    out
}

/// `.auth` files of the store's PK, KEK, db and dbx (those present, in that order), each
/// replacing the variable with its current value: what virt-fw-vars' `--output-auth` writes.
/// Without `signer` they are unsigned and dated with the variable's timestamp, byte for byte
/// as virt-fw-vars writes them; with `signer` each is signed by it and dated `time` (which a
/// firmware in user mode needs to be later than the variable's).
pub fn export_auth(
    store: &varstore::Varstore,
    signer: Option<&UpdateSigner>,
    time: EfiTime,
) -> Result<Vec<(Database, Vec<u8>)>, SignError> {
    let variables = store.live_variables();
    let mut out = Vec::new();
    for database in Database::ALL {
        let Some(variable) = variables
            .iter()
            .find(|v| v.guid == database.guid() && v.name() == database.name())
        else {
            continue;
        };
        let auth = match signer {
            Some(signer) => sign_variable(
                database.name(),
                database.guid(),
                UpdateMode::Replace.attributes(),
                time,
                variable.data,
                signer,
            )?,
            None => unsigned_update(
                variable.time().map_or(EfiTime([0; 16]), plain_time),
                variable.data,
            ),
        };
        out.push((database, auth));
    }
    Ok(out)
}

/// The date, time and nanoseconds of `time` (at microsecond precision, as Python's datetime
/// keeps them in virt-firmware), with time zone, daylight and padding zero.
fn plain_time(time: EfiTime) -> EfiTime {
    let mut plain = [0u8; 16];
    plain[..7].copy_from_slice(&time.0[..7]);
    let nanoseconds = u32::from_le_bytes([time.0[8], time.0[9], time.0[10], time.0[11]]);
    plain[8..12].copy_from_slice(&(nanoseconds / 1000 * 1000).to_le_bytes());
    EfiTime(plain)
}

/// `payload` (an `.auth` payload) as a file the UEFI shell's `dmpstore -all -l FILE` loads: it
/// calls `SetVariable` with exactly these attributes, so unlike the shell's `setvar` it can
/// append ([`APPEND_WRITE`]), and it prints the firmware's status when refused. The layout is
/// what `dmpstore -s` saves: name size and data size (u32 each), the name in UTF-16LE with
/// its terminator, the GUID, the attributes, the data, and a CRC-32 of all that.
///
/// ```
/// use nvram::secureboot::{dmpstore_record, Database, UpdateMode};
/// let record = dmpstore_record("db", Database::Db.guid(), UpdateMode::Append.attributes(), b"x");
/// assert_eq!(&record[..8], &[6, 0, 0, 0, 1, 0, 0, 0]);
/// assert_eq!(record.len(), 8 + 6 + 16 + 4 + 1 + 4);
/// ```
pub fn dmpstore_record(name: &str, guid: Guid, attributes: Attributes, payload: &[u8]) -> Vec<u8> {
    let name: Vec<u8> = name
        .encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect();
    let mut out = Vec::with_capacity(8 + name.len() + 20 + payload.len() + 4);
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&name);
    out.extend_from_slice(&guid.to_bytes());
    out.extend_from_slice(&attributes.0.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}
