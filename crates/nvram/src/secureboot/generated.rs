//! A platform key generated for a store ([`generate_pk`]), and enrolling it
//! ([`enroll_generated_pk`]): the private key and certificate are written as new files first,
//! and removed again if the enrolment does not happen, so no key is left behind that was
//! never enrolled.

use super::{enroll, Database, EnrollPlan, SecureBootError, VariableChange};
use crate::certs::SignatureInput;
use crate::edit::{edit_file, EditFileError, Edited};
use crate::files::FileError;
use std::path::{Path, PathBuf};

/// Where a generated platform key's private key (PKCS#8 PEM) and certificate (PEM) go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkFiles {
    /// The private key.
    pub key: PathBuf,
    /// The certificate: the key's path with the extension `.crt`.
    pub cert: PathBuf,
}

impl PkFiles {
    /// The key at `key`, or at `STORE.pk.key` next to the store without one; the certificate
    /// next to the key with the extension `.crt`.
    ///
    /// ```
    /// use nvram::secureboot::PkFiles;
    /// use std::path::Path;
    /// let files = PkFiles::for_store(Path::new("vm.fd"), None)?;
    /// assert_eq!(files.key, Path::new("vm.fd.pk.key"));
    /// assert_eq!(files.cert, Path::new("vm.fd.pk.crt"));
    /// assert!(PkFiles::for_store(Path::new("vm.fd"), Some(Path::new("pk.crt"))).is_err());
    /// # Ok::<(), nvram::secureboot::GeneratedPkError>(())
    /// ```
    pub fn for_store(store: &Path, key: Option<&Path>) -> Result<Self, GeneratedPkError> {
        let key = match key {
            Some(k) => k.to_path_buf(),
            None => {
                let mut k = store.as_os_str().to_owned();
                k.push(".pk.key");
                PathBuf::from(k)
            }
        };
        let cert = key.with_extension("crt");
        if cert == key || key.file_name().is_none() {
            return Err(GeneratedPkError::KeyNamedAsCertificate { path: key });
        }
        Ok(Self { key, cert })
    }
}

/// Why [`enroll_generated_pk`] did not enrol a generated platform key. Nothing is left
/// behind in any case but an [`EditFileError`] whose new content is in place (not durable):
/// the key files are then kept, since the store holds their certificate.
#[derive(Debug, thiserror::Error)]
pub enum GeneratedPkError {
    /// The key's path would be the certificate's.
    #[error(
        "{path}: the key file needs a name not ending in .crt (the certificate goes next to it \
         as .crt)"
    )]
    KeyNamedAsCertificate {
        /// The key's path.
        path: PathBuf,
    },
    /// Something (even a dangling symlink) is at the key's or certificate's path already.
    #[error("{path}: already exists; not overwriting a key or certificate")]
    Exists {
        /// The path.
        path: PathBuf,
    },
    /// The key could not be generated.
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// A key file could not be written.
    #[error(transparent)]
    Write(FileError),
    /// The enrolment failed.
    #[error(transparent)]
    Enroll(#[from] EditFileError<SecureBootError>),
}

/// Generates a platform key with subject `CN=<cn>` ([`generate_pk`]), writes its private key
/// and certificate as new owner-only files ([`crate::files::create_new`]: never through a
/// symlink, never over anything) and enrols `plan` with it as PK into the store at `path`
/// ([`edit_file`], so locked and all or nothing). When the enrolment fails and the store
/// does not hold the certificate, both files are removed again.
///
/// ```no_run
/// use nvram::secureboot::{enroll_generated_pk, EnrollPlan, PkFiles};
/// use nvram::certs::SignatureInput;
/// let store = std::path::Path::new("vm.fd");
/// let files = PkFiles::for_store(store, None)?;
/// let plan = EnrollPlan::with_pk(SignatureInput::Certificates(Vec::new()));
/// let edited = enroll_generated_pk(store, "My VM's platform key", &files, plan)?;
/// println!("{} variables changed", edited.value.len());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn enroll_generated_pk(
    path: &Path,
    cn: &str,
    files: &PkFiles,
    mut plan: EnrollPlan,
) -> Result<Edited<Vec<VariableChange>>, GeneratedPkError> {
    for taken in [&files.key, &files.cert] {
        if std::fs::symlink_metadata(taken).is_ok() {
            return Err(GeneratedPkError::Exists {
                path: taken.clone(),
            });
        }
    }
    let generated = generate_pk(cn)?;
    create(&files.key, generated.key_pem.as_bytes())?;
    if let Err(e) = create(&files.cert, generated.cert_pem.as_bytes()) {
        let _ = std::fs::remove_file(&files.key);
        return Err(e);
    }
    plan.pk = SignatureInput::Certificates(vec![generated.cert_der.clone()]);
    let result = edit_file(path, |editor| enroll(editor, &plan));
    // A key that was never enrolled is not left behind. (If the store was replaced and only
    // the directory sync failed, the PK is in it: the key is kept then.)
    if result.is_err() && !store_has_pk(path, &generated.cert_der) {
        let _ = std::fs::remove_file(&files.key);
        let _ = std::fs::remove_file(&files.cert);
    }
    Ok(result?)
}

/// Writes a new key file, saying which path was taken if one appeared meanwhile.
fn create(path: &Path, content: &[u8]) -> Result<(), GeneratedPkError> {
    crate::files::create_new(path, content).map_err(|e| match e {
        FileError::Exists { path } => GeneratedPkError::Exists { path },
        other => GeneratedPkError::Write(other),
    })
}

/// Whether the store at `file` holds the certificate `der` in its PK.
fn store_has_pk(file: &Path, der: &[u8]) -> bool {
    let Ok(image) = crate::files::read_store(file).map(|s| s.into_image()) else {
        return false;
    };
    let Ok(store) = varstore::Varstore::parse(&image) else {
        return false;
    };
    store.live_variables().iter().any(|v| {
        v.guid == Database::Pk.guid()
            && v.name() == Database::Pk.name()
            && varstore::secureboot::SignatureDb::parse(v.data)
                .is_ok_and(|db| db.contains_x509(der))
    })
}

/// Longest common name X.509 allows (`ub-common-name`).
pub const MAX_COMMON_NAME: usize = 64;

/// How many days a generated platform key certificate is valid: ten years.
pub const GENERATED_PK_DAYS: u64 = 3650;

/// A freshly generated platform key: RSA-2048 and a self-signed SHA-256 certificate.
pub struct GeneratedPk {
    /// The private key, PKCS#8 PEM (wiped from memory when dropped).
    pub key_pem: x509_cert::der::zeroize::Zeroizing<String>,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate, DER (what goes into the PK).
    pub cert_der: Vec<u8>,
}

impl std::fmt::Debug for GeneratedPk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedPk")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// Why a platform key could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The common name is empty, too long or holds control characters.
    #[error("the common name must be 1 to {MAX_COMMON_NAME} characters without control characters, got {0:?}")]
    CommonName(String),
    /// Key generation, encoding or signing failed.
    #[error("generating the platform key: {0}")]
    Crypto(String),
}

fn crypto(e: impl std::fmt::Display) -> GenerateError {
    GenerateError::Crypto(e.to_string())
}

/// Generates an RSA-2048 key and a self-signed SHA-256 X.509 certificate for it with subject
/// `CN=<cn>`, valid from now for [`GENERATED_PK_DAYS`] days, with a random serial number,
/// basicConstraints CA:TRUE, keyUsage keyCertSign and digitalSignature, and a subject key
/// identifier: what `openssl req -x509 -newkey rsa:2048` gives, fit to be the PK.
pub fn generate_pk(cn: &str) -> Result<GeneratedPk, GenerateError> {
    use rand::RngCore;
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    use std::time::Duration;
    use x509_cert::builder::{Builder, CertificateBuilder, Profile};
    use x509_cert::der::asn1::{SetOfVec, Utf8StringRef};
    use x509_cert::der::referenced::OwnedToRef;
    use x509_cert::der::{Any, Encode, EncodePem};
    use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier};
    use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::spki::SubjectPublicKeyInfoOwned;
    use x509_cert::time::Validity;

    let chars = cn.chars().count();
    if chars == 0 || chars > MAX_COMMON_NAME || cn.chars().any(char::is_control) {
        return Err(GenerateError::CommonName(cn.to_string()));
    }
    let mut rng = rand::rngs::OsRng;
    let key = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(crypto)?;
    let signer = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(key.clone());

    // The name is built rather than parsed so that any characters in `cn` are taken as they
    // are (no RFC 4514 escaping to get wrong).
    let value = Any::encode_from(&Utf8StringRef::new(cn).map_err(crypto)?).map_err(crypto)?;
    let attribute = x509_cert::attr::AttributeTypeAndValue {
        oid: x509_cert::der::oid::db::rfc4519::CN,
        value,
    };
    let rdn = RelativeDistinguishedName::from(SetOfVec::try_from(vec![attribute]).map_err(crypto)?);
    let subject: Name = RdnSequence(vec![rdn]);

    // 16 random bytes, positive and without a leading zero byte.
    let mut serial = [0u8; 16];
    rng.fill_bytes(&mut serial);
    serial[0] = (serial[0] & 0x7f) | 0x40;
    let serial = SerialNumber::new(&serial).map_err(crypto)?;
    let validity =
        Validity::from_now(Duration::from_secs(GENERATED_PK_DAYS * 86_400)).map_err(crypto)?;
    let spki = SubjectPublicKeyInfoOwned::from_key(key.to_public_key()).map_err(crypto)?;
    let ski = SubjectKeyIdentifier::try_from(spki.owned_to_ref()).map_err(crypto)?;

    let mut builder = CertificateBuilder::new(
        Profile::Manual { issuer: None },
        serial,
        validity,
        subject,
        spki,
        &signer,
    )
    .map_err(crypto)?;
    builder
        .add_extension(&BasicConstraints {
            ca: true,
            path_len_constraint: None,
        })
        .map_err(crypto)?;
    builder
        .add_extension(&KeyUsage(
            KeyUsages::KeyCertSign | KeyUsages::DigitalSignature,
        ))
        .map_err(crypto)?;
    builder.add_extension(&ski).map_err(crypto)?;
    let cert = builder
        .build::<rsa::pkcs1v15::Signature>()
        .map_err(crypto)?;
    Ok(GeneratedPk {
        key_pem: key.to_pkcs8_pem(LineEnding::LF).map_err(crypto)?,
        cert_pem: cert.to_pem(LineEnding::LF).map_err(crypto)?,
        cert_der: cert.to_der().map_err(crypto)?,
    })
}
