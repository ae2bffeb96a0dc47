//! Secure Boot: enrolling keys into a store, adding to its databases and telling its state.
//!
//! [`enroll`] writes PK, KEK, db and dbx (time-based authenticated, attributes 0x27, with
//! timestamps as virt-firmware gives them), `SecureBootEnable` = 1 and `CustomMode` = 0, and
//! nothing else: `SetupMode` and `SecureBoot` are computed by the firmware at boot
//! (docs/varstore-format.md §12.3).
//! [`add`] merges certificates or hashes into KEK, db or dbx without dropping or duplicating
//! entries. [`status`] reports the mode and the databases, including which of Microsoft's
//! 2011 and 2023 certificates are enrolled. All three work on a [`varstore::edit::Editor`] or
//! a [`Varstore`](varstore::Varstore), so they serve one file ([`crate::edit::edit_file`]) or many alike.
//!
//! Both editing functions are all-or-nothing: on error the editor is left as it was.
//!
//! ```
//! use nvram::secureboot::{enroll, status, EnrollPlan, Microsoft};
//! use varstore::edit::Editor;
//! use nvram::certs::{bundled, SignatureInput};
//!
//! let image = varstore::Layout::by_name("ovmf-4m").unwrap().create();
//! let mut editor = Editor::new(&image)?;
//! // Microsoft's "Windows OEM Devices PK" as PK, and Microsoft's KEK and db certificates.
//! let pk = SignatureInput::Certificates(vec![bundled::MICROSOFT_PK_2023.to_vec()]);
//! let plan = EnrollPlan { microsoft: Some(Microsoft::All), ..EnrollPlan::with_pk(pk) };
//! enroll(&mut editor, &plan)?;
//! let state = status(&editor.store()?);
//! assert!(!state.setup_mode && state.secure_boot_at_next_boot);
//! assert!(state.microsoft.iter().all(|c| c.present));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bundles;
mod entries;
mod generated;
mod profile;
mod sign;
mod status;

pub use bundles::{DbxArch, KnownCertificate, Microsoft, MICROSOFT_CERTIFICATES};
pub use entries::{
    certificate_file_name, entry_hashes, extract_certificates, parse_sha256, EntryHash,
    ExtractError, ExtractedCertificate, HashError, SIGNATURE_DB_NAMES,
};
pub use generated::{
    enroll_generated_pk, generate_pk, GenerateError, GeneratedPk, GeneratedPkError, PkFiles,
    GENERATED_PK_DAYS, MAX_COMMON_NAME,
};
pub use profile::{
    external_management_pk, is_external_management, Distro, MicrosoftDb, Platform,
    CERT_EXTERNAL_MANAGEMENT, EXTERNAL_MANAGEMENT_OWNER,
};
pub use sign::{
    dmpstore_record, export_auth, pkcs7_detached, sign_update, sign_variable, signed_bytes,
    unsigned_update, SignError, UpdateMode, UpdateSigner, APPEND_WRITE,
};
pub use status::{status, DatabaseStatus, EntryStatus, MicrosoftStatus, Status};

use crate::certs::{now, read_signature_input, InputError, SignatureInput};
use serde::Serialize;
use std::path::Path;
use varstore::edit::{Change, EditError, Editor, Strategy};
use varstore::guid::{self, Guid};
use varstore::secureboot::{
    dummy_dbx, initial_time, later, SignatureDb, CUSTOM_MODE_GUID, OVMF_ENROLL_DEFAULT_KEYS,
    SECURE_BOOT_ENABLE_GUID,
};
use varstore::{Attributes, EfiTime};

/// Attributes of PK, KEK, db, dbx: NV+BS+RT+AT.
pub const AUTHENTICATED: Attributes = Attributes(0x27);
/// Attributes of SecureBootEnable and CustomMode: NV+BS.
pub const BOOT_SERVICE: Attributes = Attributes(0x03);

/// One of the signature databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Database {
    /// The platform key.
    #[serde(rename = "PK")]
    Pk,
    /// Key exchange keys.
    #[serde(rename = "KEK")]
    Kek,
    /// Allowed signatures.
    #[serde(rename = "db")]
    Db,
    /// Forbidden signatures.
    #[serde(rename = "dbx")]
    Dbx,
    /// shim's Machine Owner Keys (`MokList`, shim's GUID, NV+BS: shim reads it before
    /// ExitBootServices and mirrors it as `MokListRT`).
    #[serde(rename = "MokList")]
    Mok,
}

impl Database {
    /// The firmware's four, in enrolment order (not shim's [`Database::Mok`]).
    pub const ALL: [Database; 4] = [Database::Pk, Database::Kek, Database::Db, Database::Dbx];

    /// The five a signature database is kept in: the firmware's four and shim's MokList.
    pub const WITH_MOK: [Database; 5] = [
        Database::Pk,
        Database::Kek,
        Database::Db,
        Database::Dbx,
        Database::Mok,
    ];

    /// The attributes virt-firmware and the firmware give it: NV+BS+RT+AT for the firmware's
    /// databases, NV+BS for MokList.
    pub fn attributes(self) -> Attributes {
        match self {
            Self::Mok => BOOT_SERVICE,
            _ => AUTHENTICATED,
        }
    }

    /// The variable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pk => "PK",
            Self::Kek => "KEK",
            Self::Db => "db",
            Self::Dbx => "dbx",
            Self::Mok => "MokList",
        }
    }

    /// The vendor GUID.
    pub fn guid(self) -> Guid {
        match self {
            Self::Pk | Self::Kek => guid::EFI_GLOBAL_VARIABLE,
            Self::Db | Self::Dbx => guid::IMAGE_SECURITY_DATABASE,
            Self::Mok => guid::SHIM_LOCK,
        }
    }
}

/// What [`enroll`] writes. Certificates given as [`SignatureInput::Certificates`] are owned by
/// [`owner`](Self::owner); signature lists keep their owners.
#[derive(Debug, Clone)]
pub struct EnrollPlan {
    /// The platform key: exactly one certificate.
    pub pk: SignatureInput,
    /// KEK entries, before Microsoft's.
    pub kek: Vec<SignatureInput>,
    /// db entries, before Microsoft's and the distribution's.
    pub db: Vec<SignatureInput>,
    /// dbx; `None` enrols the dummy entry (SHA-256 of nothing) as virt-firmware does.
    pub dbx: Option<SignatureInput>,
    /// Microsoft's KEK and db certificates.
    pub microsoft: Option<Microsoft>,
    /// Microsoft's db certificates of one of virt-firmware's profiles instead of those of
    /// [`microsoft`](Self::microsoft) (which then chooses the KEK only).
    pub microsoft_db: Option<MicrosoftDb>,
    /// Distribution db certificates.
    pub distro: Vec<Distro>,
    /// Owner GUID of certificates given as such (default: virt-firmware's a0baa8a3-…).
    pub owner: Guid,
    /// One timestamp for all four variables instead of virt-firmware's rules.
    pub time: Option<EfiTime>,
    /// How the variables are written.
    pub strategy: Strategy,
}

impl EnrollPlan {
    /// A plan with this PK and nothing else (dummy dbx, default owner, append).
    pub fn with_pk(pk: SignatureInput) -> Self {
        Self {
            pk,
            kek: Vec::new(),
            db: Vec::new(),
            dbx: None,
            microsoft: None,
            microsoft_db: None,
            distro: Vec::new(),
            owner: OVMF_ENROLL_DEFAULT_KEYS,
            time: None,
            strategy: Strategy::Append,
        }
    }
}

/// Why enrolment or an addition failed; the editor is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum SecureBootError {
    /// The PK input is not exactly one certificate (or the external-management entry).
    #[error("the PK must be exactly one X.509 certificate, got {0}")]
    BadPk(String),
    /// A variable in the store is not a valid signature database, so it cannot be merged.
    #[error(
        "{database} in the store is not a valid signature database ({error}); not touching it"
    )]
    Malformed {
        /// PK, KEK, db or dbx.
        database: &'static str,
        /// Which field of its lists does not add up.
        error: varstore::decode::DecodeError,
    },
    /// Adding to the PK (replace it with `enroll`).
    #[error("the PK holds one certificate; enrol a new one instead of adding")]
    AddToPk,
    /// Microsoft's dbx updates requested for a store whose architecture is unknown.
    #[error(
        "cannot tell whether the store is for x86_64 or aarch64 (it matches no built-in \
         layout), so not which of Microsoft's dbx updates applies; give the update file instead"
    )]
    UnknownArchitecture,
    /// Microsoft's dbx updates requested for a store of an architecture they do not exist for.
    #[error(
        "Microsoft publishes dbx updates only for x86_64 and aarch64, and this store has the \
         {layout} layout ({arch} firmware); give a dbx update file for {arch} instead"
    )]
    NoMicrosoftDbx {
        /// The store's built-in layout.
        layout: &'static str,
        /// Its firmware's architecture.
        arch: &'static str,
    },
    /// A bundled file did not parse (a build problem, not an input one).
    #[error("the bundled Microsoft {0} update does not parse")]
    BadBundle(&'static str),
    /// Distribution certificates requested for a database other than db.
    #[error("distribution CA certificates go into db, not {0}")]
    DistroNotDb(&'static str),
    /// Microsoft's certificates or dbx updates requested for shim's MokList.
    #[error("Microsoft's certificates belong in KEK, db or dbx, not in shim's MokList")]
    MicrosoftNotForMok,
    /// An input that cannot be enrolled: a certificate that does not parse, an X.509 entry
    /// of a list that is no certificate, lists without a single signature
    /// ([`SignatureInput::check`]). [`read_input`] refuses such files already, naming them.
    #[error("{database} input {index}: {error}")]
    BadInput {
        /// PK, KEK, db or dbx.
        database: &'static str,
        /// The input's position among that database's inputs, from 0.
        index: usize,
        /// What is wrong.
        error: InputError,
    },
    /// The editor refused a write.
    #[error(transparent)]
    Edit(#[from] EditError),
}

/// What happened to one variable.
#[derive(Debug, Clone, Serialize)]
pub struct VariableChange {
    /// Variable name.
    pub name: String,
    /// Added, replaced or unchanged.
    pub change: &'static str,
    /// Entries in the variable afterwards (0 for the non-database variables).
    pub entries: usize,
    /// Entries this operation added (for [`add`]).
    pub added: usize,
    /// The timestamp written, for authenticated variables.
    pub time: Option<String>,
}

impl VariableChange {
    /// The variable's vendor GUID: the image security database GUID for db and dbx, OVMF's
    /// for `SecureBootEnable` and `CustomMode`, shim's for MokList, the EFI global variable
    /// GUID for PK and KEK.
    pub fn guid(&self) -> Guid {
        match self.name.as_str() {
            "SecureBootEnable" => varstore::secureboot::SECURE_BOOT_ENABLE_GUID,
            "CustomMode" => varstore::secureboot::CUSTOM_MODE_GUID,
            name => Database::WITH_MOK
                .into_iter()
                .find(|d| d.name() == name)
                .map_or(guid::EFI_GLOBAL_VARIABLE, Database::guid),
        }
    }
}

/// Largest certificate, signature list or `.auth` file read: whatever it holds must fit in a
/// variable, and no store's variable region is larger than 256 KiB (`varstore::layout`);
/// 4 MiB leaves room for PEM armour and for lists that are filtered before being written.
pub const MAX_SIGNATURE_INPUT_LEN: u64 = 4 << 20;

/// Reads a certificate, signature list or `.auth` file: a regular file of at most
/// [`MAX_SIGNATURE_INPUT_LEN`] bytes (a FIFO or device is refused at once).
pub fn read_input(path: &Path) -> Result<SignatureInput, ReadInputError> {
    let bytes = safefile::read_input(
        path,
        safefile::Accept::RegularFile,
        MAX_SIGNATURE_INPUT_LEN,
        "a certificate, signature list or .auth file",
    )
    .map_err(|e| ReadInputError {
        path: path.display().to_string(),
        problem: without_path(&e),
    })?;
    read_signature_input(&bytes).map_err(|e: InputError| ReadInputError {
        path: path.display().to_string(),
        problem: e.to_string(),
    })
}

/// The message of `error` without the leading `PATH: ` that [`ReadInputError`] adds itself.
fn without_path(error: &safefile::InputError) -> String {
    let message = error.to_string();
    let prefix = format!("{}: ", error.path().display());
    match message.strip_prefix(&prefix) {
        Some(rest) => rest.to_string(),
        None => message,
    }
}

/// A certificate or list file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct ReadInputError {
    /// The file.
    pub path: String,
    /// Why.
    pub problem: String,
}

/// Refuses inputs that cannot be enrolled ([`SignatureInput::check`]).
fn check_inputs<'a>(
    database: Database,
    inputs: impl IntoIterator<Item = &'a SignatureInput>,
) -> Result<(), SecureBootError> {
    for (index, input) in inputs.into_iter().enumerate() {
        input.check().map_err(|error| SecureBootError::BadInput {
            database: database.name(),
            index,
            error,
        })?;
    }
    Ok(())
}

/// The signatures of some inputs added to `db`; returns (entries added, newest `.auth` time,
/// whether non-certificate signatures from plain lists were added).
fn add_inputs<'a>(
    db: &mut SignatureDb,
    inputs: impl IntoIterator<Item = &'a SignatureInput>,
    owner: Guid,
) -> (usize, Option<EfiTime>, bool) {
    let mut added = 0;
    let mut auth_time: Option<EfiTime> = None;
    let mut hashes = false;
    for input in inputs {
        match input {
            SignatureInput::Certificates(certs) => {
                for der in certs {
                    added += usize::from(db.add_x509(owner, der));
                }
            }
            SignatureInput::Lists { db: lists, time } => {
                let n = db.merge(lists);
                added += n;
                match time {
                    Some(t) => auth_time = Some(auth_time.map_or(*t, |a| later(a, *t))),
                    None => hashes |= n > 0 && lists.has_hashes(),
                }
            }
        }
    }
    (added, auth_time, hashes)
}

/// The timestamp virt-firmware would give a database: at least 2010-01-01, the newest
/// certificate's notBefore, an `.auth` file's time, now if hashes were added; never earlier
/// than `old`.
fn database_time(
    db: &SignatureDb,
    old: Option<EfiTime>,
    auth: Option<EfiTime>,
    hashes: bool,
) -> EfiTime {
    let mut t = initial_time();
    if let Some(c) = db.newest_certificate_time() {
        t = later(t, c);
    }
    if let Some(a) = auth {
        t = later(t, a);
    }
    if hashes {
        t = later(t, now());
    }
    match old {
        Some(o) => later(t, o),
        None => t,
    }
}

/// A live variable's data and timestamp.
type LiveValue = (Vec<u8>, Option<EfiTime>);

fn live_value(editor: &Editor, database: Database) -> Result<Option<LiveValue>, EditError> {
    let store = editor.store()?;
    Ok(store
        .live_variables()
        .iter()
        .find(|v| v.guid == database.guid() && v.name() == database.name())
        .map(|v| (v.data.to_vec(), v.time())))
}

fn write_db(
    editor: &mut Editor,
    database: Database,
    db: &SignatureDb,
    time: EfiTime,
    added: usize,
    strategy: Strategy,
) -> Result<VariableChange, EditError> {
    // MokList is not time-based authenticated: it has no timestamp.
    let time = (database != Database::Mok).then_some(time);
    let outcome = editor.set(
        database.name(),
        database.guid(),
        database.attributes(),
        &db.to_bytes(),
        time,
        strategy,
    )?;
    Ok(VariableChange {
        name: database.name().to_string(),
        change: outcome.change.as_str(),
        entries: db.lists.iter().map(|l| l.entries.len()).sum(),
        added,
        time: time.map(|t| t.to_string()),
    })
}

/// Enrols PK, KEK, db and dbx (replacing what is there), `SecureBootEnable` = 1 and
/// `CustomMode` = 0. Timestamps only move forward. On error `editor` is unchanged.
///
/// A store file is enrolled inside [`crate::edit::edit_file`]:
///
/// ```
/// use nvram::secureboot::{enroll, generate_pk, EnrollPlan};
/// use nvram::certs::SignatureInput;
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("vm1_VARS.fd");
/// std::fs::write(&path, varstore::Layout::by_name("ovmf-4m").unwrap().create())?;
/// let pk = SignatureInput::Certificates(vec![generate_pk("VM 1")?.cert_der]);
/// let edited = nvram::edit::edit_file(&path, |store| enroll(store, &EnrollPlan::with_pk(pk)))?;
/// assert!(edited.written && edited.value.iter().any(|c| c.name == "PK"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn enroll(
    editor: &mut Editor,
    plan: &EnrollPlan,
) -> Result<Vec<VariableChange>, SecureBootError> {
    for (database, inputs) in [
        (Database::Pk, std::slice::from_ref(&plan.pk)),
        (Database::Kek, &plan.kek[..]),
        (Database::Db, &plan.db[..]),
        (Database::Dbx, plan.dbx.as_slice()),
    ] {
        check_inputs(database, inputs)?;
    }
    let mut work = editor.clone();
    let mut changes = Vec::new();
    for database in Database::ALL {
        let mut db = SignatureDb::default();
        let (auth, hashes) = match database {
            Database::Pk => {
                let (_, auth, _) = add_inputs(&mut db, [&plan.pk], plan.owner);
                let count: usize = db.lists.iter().map(|l| l.entries.len()).sum();
                if count != 1 || (db.certificates().count() != 1 && !is_external_management(&db)) {
                    return Err(SecureBootError::BadPk(format!("{count} signatures")));
                }
                (auth, false)
            }
            Database::Kek | Database::Db => {
                let inputs = if database == Database::Kek {
                    &plan.kek
                } else {
                    &plan.db
                };
                let (_, auth, hashes) = add_inputs(&mut db, inputs, plan.owner);
                match (database, plan.microsoft_db) {
                    (Database::Db, Some(profile)) => {
                        for cert in profile.certificates() {
                            db.add_x509(profile.owner(), cert.der);
                        }
                    }
                    _ => {
                        if let Some(ms) = plan.microsoft {
                            for cert in ms.certificates(database) {
                                db.add_x509(guid::MICROSOFT_OWNER, cert.der);
                            }
                        }
                    }
                }
                if database == Database::Db {
                    for distro in &plan.distro {
                        for der in distro.certificates() {
                            db.add_x509(OVMF_ENROLL_DEFAULT_KEYS, der);
                        }
                    }
                }
                (auth, hashes)
            }
            // Not among Database::ALL: enrolment leaves shim's MokList alone.
            Database::Mok => continue,
            Database::Dbx => match &plan.dbx {
                Some(input) => {
                    let (_, auth, hashes) = add_inputs(&mut db, [input], plan.owner);
                    (auth, hashes)
                }
                None => {
                    db = dummy_dbx();
                    (None, false)
                }
            },
        };
        if db.is_empty() {
            // An empty KEK or db: delete what is there rather than store an empty variable.
            if live_value(&work, database)?.is_some() {
                work.delete(database.name(), database.guid(), plan.strategy)?;
                changes.push(VariableChange {
                    name: database.name().to_string(),
                    change: Change::Deleted.as_str(),
                    entries: 0,
                    added: 0,
                    time: None,
                });
            }
            continue;
        }
        let old_time = live_value(&work, database)?.and_then(|(_, t)| t);
        let time = match plan.time {
            Some(t) => t,
            None => database_time(&db, old_time, auth, hashes),
        };
        let added = db.lists.iter().map(|l| l.entries.len()).sum();
        changes.push(write_db(
            &mut work,
            database,
            &db,
            time,
            added,
            plan.strategy,
        )?);
    }
    for (name, guid, value) in [
        ("SecureBootEnable", SECURE_BOOT_ENABLE_GUID, 1u8),
        ("CustomMode", CUSTOM_MODE_GUID, 0u8),
    ] {
        let outcome = work.set(name, guid, BOOT_SERVICE, &[value], None, plan.strategy)?;
        changes.push(VariableChange {
            name: name.to_string(),
            change: outcome.change.as_str(),
            entries: 0,
            added: 0,
            time: None,
        });
    }
    *editor = work;
    Ok(changes)
}

/// What [`add`] merges into one database.
#[derive(Debug, Clone)]
pub struct Addition {
    /// KEK, db or dbx.
    pub database: Database,
    /// Certificates, signature lists or `.auth` contents, owned by [`owner`](Self::owner)
    /// where they are certificates.
    pub inputs: Vec<SignatureInput>,
    /// Microsoft's certificates (KEK, db) or Microsoft's dbx updates (dbx, for the store's
    /// architecture) of these years.
    pub microsoft: Option<Microsoft>,
    /// Microsoft's db certificates of one of virt-firmware's profiles (db only).
    pub microsoft_db: Option<MicrosoftDb>,
    /// Distribution CA certificates (db only).
    pub distro: Vec<Distro>,
    /// Bare SHA-256 hashes (`EFI_CERT_SHA256` entries), owned by [`owner`](Self::owner):
    /// an image's Authenticode hash to allow (db, MokList) or revoke (dbx).
    pub hashes: Vec<[u8; 32]>,
    /// Owner of the certificates in `inputs` and of `hashes` (default: OVMF's a0baa8a3-…).
    pub owner: Guid,
    /// Replace the variable with the inputs instead of merging into it (virt-fw-vars'
    /// `--set-dbx`). An `.auth` input then dates the variable with its own timestamp.
    pub replace: bool,
}

impl Addition {
    /// Nothing yet, for `database`.
    pub fn to(database: Database) -> Self {
        Self {
            database,
            inputs: Vec::new(),
            microsoft: None,
            microsoft_db: None,
            distro: Vec::new(),
            hashes: Vec::new(),
            owner: OVMF_ENROLL_DEFAULT_KEYS,
            replace: false,
        }
    }

    /// Whether there is anything to add.
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
            && self.microsoft.is_none()
            && self.microsoft_db.is_none()
            && self.distro.is_empty()
            && self.hashes.is_empty()
    }
}

/// Adds certificates, lists (`.esl`/`.auth`), Microsoft's certificates or dbx updates and
/// distributions' CA certificates (db only) to KEK, db or dbx, keeping every entry there and
/// skipping duplicates. Nothing is written if nothing is new. On error `editor` is unchanged.
///
/// Microsoft's dbx updates are chosen by the store's layout (x86_64 for OVMF, aarch64 for
/// AAVMF); a store of no built-in layout, or of a riscv64 or loongarch64 one (Microsoft
/// publishes no dbx for them), is refused for them.
pub fn add(
    editor: &mut Editor,
    addition: &Addition,
    strategy: Strategy,
) -> Result<VariableChange, SecureBootError> {
    let database = addition.database;
    let microsoft = addition.microsoft;
    match database {
        Database::Pk => return Err(SecureBootError::AddToPk),
        Database::Kek | Database::Dbx | Database::Mok
            if !addition.distro.is_empty() || addition.microsoft_db.is_some() =>
        {
            return Err(SecureBootError::DistroNotDb(database.name()))
        }
        Database::Mok if microsoft.is_some() => return Err(SecureBootError::MicrosoftNotForMok),
        _ => {}
    }
    check_inputs(database, &addition.inputs)?;
    // Microsoft's dbx updates, next to the caller's inputs (which are not copied per store).
    let mut updates = Vec::new();
    if let (Database::Dbx, Some(ms)) = (database, microsoft) {
        let layout = editor
            .store()?
            .layout()
            .ok_or(SecureBootError::UnknownArchitecture)?;
        let arch = DbxArch::of_layout(layout).ok_or(SecureBootError::NoMicrosoftDbx {
            layout: layout.name,
            arch: layout.arch,
        })?;
        for update in ms.dbx_updates(arch) {
            updates
                .push(read_signature_input(update).map_err(|_| SecureBootError::BadBundle("dbx"))?);
        }
    }
    let old = live_value(editor, database)?;
    let mut db = match &old {
        Some(_) if addition.replace => SignatureDb::default(),
        Some((data, _)) => {
            SignatureDb::parse(data).map_err(|error| SecureBootError::Malformed {
                database: database.name(),
                error,
            })?
        }
        None => SignatureDb::default(),
    };
    let (mut added, auth, hashes) = add_inputs(
        &mut db,
        addition.inputs.iter().chain(&updates),
        addition.owner,
    );
    if let Some(ms) = microsoft {
        for cert in ms.certificates(database) {
            added += usize::from(db.add_x509(guid::MICROSOFT_OWNER, cert.der));
        }
    }
    if let Some(profile) = addition.microsoft_db {
        for cert in profile.certificates() {
            added += usize::from(db.add_x509(profile.owner(), cert.der));
        }
    }
    for d in &addition.distro {
        for der in d.certificates() {
            added += usize::from(db.add_x509(OVMF_ENROLL_DEFAULT_KEYS, der));
        }
    }
    let mut hashes = hashes;
    for hash in &addition.hashes {
        let new = db.add_sha256(addition.owner, *hash);
        added += usize::from(new);
        hashes |= new;
    }
    let entries = db.lists.iter().map(|l| l.entries.len()).sum();
    let replaced = addition.replace && old.as_ref().is_some_and(|(data, _)| *data != db.to_bytes());
    if added == 0 && !replaced {
        return Ok(VariableChange {
            name: database.name().to_string(),
            change: Change::Unchanged.as_str(),
            entries,
            added: 0,
            time: old.and_then(|o| o.1).map(|t| t.to_string()),
        });
    }
    let time = match (addition.replace, auth) {
        // virt-fw-vars' --set-dbx dates the new variable with the update's own timestamp.
        (true, Some(auth)) => auth,
        (true, None) => database_time(&db, None, None, hashes),
        (false, _) => database_time(&db, old.and_then(|o| o.1), auth, hashes),
    };
    let mut work = editor.clone();
    let change = write_db(&mut work, database, &db, time, added, strategy)?;
    *editor = work;
    Ok(change)
}
