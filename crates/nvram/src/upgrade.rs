//! Template upgrades: giving an existing VM's store the Secure Boot databases of a newer
//! template while keeping everything that belongs to the VM.
//!
//! A VM's store starts as a copy of the template of the day the VM was created. When the
//! distribution's template later gains Secure Boot entries (a new dbx, new CAs), [`upgrade`]
//! carries them over:
//!
//! - **KEK, db, dbx**: every entry (signature type and data) of the template's variable that
//!   the VM's lacks is appended, with the owner GUID it has in the template; the VM's entries
//!   stay, in their order. For dbx this is the union of both. Nothing of the VM's is ever
//!   removed. This is [`crate::secureboot::add`] with the template's variable as input, so the
//!   timestamp follows its rules for an `.auth` file: the template variable's timestamp, the
//!   newest certificate's notBefore, never earlier than the VM's.
//! - **PK**: the platform key decides who may change KEK, so it is the VM owner's. When it is
//!   the template's, nothing happens. When it differs, or the VM has none (setup mode, where
//!   enrolling one turns Secure Boot on at the next boot and may stop an unsigned loader), it
//!   is kept and reported, unless [`UpgradeOptions::replace_pk`] asks for the template's PK.
//!   A template without a PK never removes the VM's.
//! - **dbt, dbr**: no distribution template carries them and edk2 only consults dbt for
//!   timestamped signatures; they are not merged. A template whose dbt or dbr differs from
//!   the VM's is reported ([`Change::Kept`]).
//! - **Everything else** (Boot####, BootOrder, BootNext, shim's MokList and state,
//!   SecureBootEnable, CustomMode, the firmware's own variables, …) belongs to the VM and is
//!   left byte for byte as it is.
//!
//! A second upgrade with the same template changes nothing. On error the editor is left as
//! it was.
//!
//! ```
//! use nvram::secureboot::{add, Addition, Database};
//! use nvram::upgrade::{upgrade, UpgradeOptions};
//! use varstore::edit::{Editor, Strategy};
//! use nvram::certs::SignatureInput;
//!
//! let blank = varstore::Layout::by_name("ovmf-4m").unwrap().create();
//! // The new template: a blank store with Microsoft's 2023 db certificates.
//! let mut template = Editor::new(&blank)?;
//! let addition = Addition {
//!     microsoft: Some(nvram::secureboot::Microsoft::Y2023),
//!     ..Addition::to(Database::Db)
//! };
//! add(&mut template, &addition, Strategy::Append)?;
//! // A VM created from the blank template, upgraded.
//! let mut vm = Editor::new(&blank)?;
//! let report = upgrade(&mut vm, &template.store()?, &UpgradeOptions::default())?;
//! assert!(report.changed);
//! assert_eq!(report.variables[0].name, "db");
//! assert_eq!(report.variables[0].added.len(), 3);
//! // Again: nothing to do.
//! assert!(!upgrade(&mut vm, &template.store()?, &UpgradeOptions::default())?.changed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::certs::SignatureInput;
use crate::secureboot::{add, Addition, Database, EntryStatus, SecureBootError, AUTHENTICATED};
use serde::Serialize;
use std::fmt;
use varstore::decode::describe_signature;
use varstore::edit::{EditError, Editor, Strategy};
use varstore::guid::{self, Guid};
use varstore::secureboot::{certificate_subject, later, SignatureDb};
use varstore::{EfiTime, Varstore};

/// The databases merged from the template, in this order.
pub const MERGED: [Database; 3] = [Database::Kek, Database::Db, Database::Dbx];

/// Signature databases of the image security database GUID that are compared but never
/// merged.
pub const NOT_MERGED: [&str; 2] = ["dbt", "dbr"];

/// How [`upgrade`] treats what it may not decide alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpgradeOptions {
    /// Take the template's PK where the VM's differs or the VM has none (which turns Secure
    /// Boot on). Without it such a PK is kept and reported.
    pub replace_pk: bool,
    /// How the variables are written.
    pub strategy: Strategy,
}

impl Default for UpgradeOptions {
    fn default() -> Self {
        Self {
            replace_pk: false,
            strategy: Strategy::Append,
        }
    }
}

/// What happened to one variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Created from the template.
    Added,
    /// Written with new content.
    Replaced,
    /// Already as the template has it (or the template has nothing for it).
    Unchanged,
    /// Differs from the template's and was deliberately left as the VM has it.
    Kept,
}

impl Change {
    /// A word for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Replaced => "replaced",
            Self::Unchanged => "unchanged",
            Self::Kept => "kept",
        }
    }

    /// Whether the variable was written.
    pub fn is_write(self) -> bool {
        matches!(self, Self::Added | Self::Replaced)
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One Secure Boot variable in an [`UpgradeReport`].
#[derive(Debug, Clone, Serialize)]
pub struct VariableUpgrade {
    /// Variable name.
    pub name: String,
    /// Vendor GUID.
    pub guid: String,
    /// What happened.
    pub change: Change,
    /// Why, in a sentence.
    pub why: String,
    /// The entries added from the template, in the order they were appended.
    pub added: Vec<EntryStatus>,
    /// Entries in the variable afterwards (0 if it does not exist).
    pub entries: usize,
    /// The timestamp written, for a variable that was written.
    pub time: Option<String>,
}

/// What [`upgrade`] did (or, on a copy, would do).
#[derive(Debug, Clone, Serialize)]
pub struct UpgradeReport {
    /// Every Secure Boot variable that the template or the VM has, in the order PK, KEK, db,
    /// dbx, dbt, dbr.
    pub variables: Vec<VariableUpgrade>,
    /// Whether any variable was written.
    pub changed: bool,
    /// The PK differs from the template's (or the VM has none) and was kept.
    pub pk_kept: bool,
    /// Live variables of the VM outside PK, KEK, db and dbx (boot entries, MOK state, …),
    /// all left as they were.
    pub kept_variables: usize,
}

/// Why an upgrade was refused; the editor is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// A variable of the template is not a valid signature database.
    #[error("the template's {0} is not a valid signature database")]
    TemplateMalformed(&'static str),
    /// A variable of the template whose signature lists do not add up.
    #[error("the template's {database} is not a valid signature database ({error})")]
    TemplateUnreadable {
        /// PK, KEK, db or dbx.
        database: &'static str,
        /// Which field of its lists does not add up.
        error: varstore::decode::DecodeError,
    },
    /// The template is for another architecture's firmware.
    #[error(
        "the template is for {template_arch} firmware ({template_layout} layout) and the store \
         for {store_arch} ({store_layout} layout): its Secure Boot databases (dbx above all) \
         are not meant for this VM"
    )]
    ArchitectureMismatch {
        /// The template's layout.
        template_layout: &'static str,
        /// Its architecture.
        template_arch: &'static str,
        /// The store's layout.
        store_layout: &'static str,
        /// Its architecture.
        store_arch: &'static str,
    },
    /// A database of the store cannot be merged (not a valid signature database), or a
    /// template entry cannot be enrolled.
    #[error(transparent)]
    SecureBoot(SecureBootError),
    /// The editor refused a write (e.g. the store is full).
    #[error(transparent)]
    Edit(#[from] EditError),
}

impl From<SecureBootError> for UpgradeError {
    fn from(e: SecureBootError) -> Self {
        match e {
            SecureBootError::Edit(e) => Self::Edit(e),
            other => Self::SecureBoot(other),
        }
    }
}

/// One variable of the template.
#[derive(Debug, Clone)]
struct TemplateVariable {
    data: Vec<u8>,
    time: Option<EfiTime>,
    db: SignatureDb,
}

/// The Secure Boot variables of a template, read once and applied to any number of stores
/// ([`upgrade_with`]; `nvram apply --upgrade-template`).
#[derive(Debug, Clone)]
pub struct TemplateDatabases {
    pk: Option<TemplateVariable>,
    merged: Vec<(Database, TemplateVariable)>,
    not_merged: Vec<(&'static str, Vec<u8>)>,
    layout: Option<(&'static str, &'static str)>,
}

/// Why a template's Secure Boot databases could not be read ([`TemplateDatabases::load`]).
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template file could not be read or unwrapped.
    #[error(transparent)]
    Load(#[from] crate::prepare::PrepareError),
    /// The template is a blank flash (Debian's `AAVMF_VARS.fd`).
    #[error("{}: the template is blank: it holds no Secure Boot databases to upgrade to", path.display())]
    Blank {
        /// The template.
        path: std::path::PathBuf,
    },
    /// The template is not a variable store.
    #[error("{}: cannot read the variable store", path.display())]
    Parse {
        /// The template.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: varstore::ParseError,
    },
    /// A database of the template is malformed.
    #[error("{}: cannot use the template", path.display())]
    Databases {
        /// The template.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: UpgradeError,
    },
}

impl TemplateDatabases {
    /// Reads the template file at `path` (raw or qcow2, as [`crate::prepare::Template::load`])
    /// and its databases ([`TemplateDatabases::of`]), once for any number of stores.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("VARS.fd");
    /// std::fs::write(&path, varstore::Layout::by_name("ovmf-4m").unwrap().create())?;
    /// let template = nvram::upgrade::TemplateDatabases::load(&path)?;
    /// assert!(template.is_empty(), "a fresh store has no Secure Boot databases");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load(path: &std::path::Path) -> Result<Self, TemplateError> {
        let template = crate::prepare::Template::load(path)?;
        let store = match Varstore::parse(template.image()) {
            Ok(store) => store,
            Err(e) if e.kind() == varstore::ErrorKind::Unformatted => {
                return Err(TemplateError::Blank {
                    path: path.to_path_buf(),
                })
            }
            Err(source) => {
                return Err(TemplateError::Parse {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Self::of(&store).map_err(|source| TemplateError::Databases {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads PK, KEK, db, dbx (and dbt, dbr for the report) of `template`; a variable that is
    /// not a valid signature database is refused.
    pub fn of(template: &Varstore<'_>) -> Result<Self, UpgradeError> {
        let live = template.live_variables();
        let find =
            |name: &str, guid: Guid| live.iter().find(|v| v.guid == guid && v.name() == name);
        let read = |database: Database| -> Result<Option<TemplateVariable>, UpgradeError> {
            let Some(record) = find(database.name(), database.guid()) else {
                return Ok(None);
            };
            let db = SignatureDb::parse(record.data).map_err(|error| {
                UpgradeError::TemplateUnreadable {
                    database: database.name(),
                    error,
                }
            })?;
            Ok(Some(TemplateVariable {
                data: record.data.to_vec(),
                time: record.time(),
                db,
            }))
        };
        let pk = read(Database::Pk)?;
        if let Some(pk) = &pk {
            if pk.db.certificates().count() != 1 || pk.db.lists.len() != 1 {
                return Err(UpgradeError::TemplateMalformed("PK"));
            }
        }
        let mut merged = Vec::new();
        for database in MERGED {
            if let Some(variable) = read(database)? {
                merged.push((database, variable));
            }
        }
        let not_merged = NOT_MERGED
            .iter()
            .filter_map(|name| {
                find(name, guid::IMAGE_SECURITY_DATABASE).map(|r| (*name, r.data.to_vec()))
            })
            .collect();
        Ok(Self {
            pk,
            merged,
            not_merged,
            layout: template.layout().map(|l| (l.name, l.arch)),
        })
    }

    /// Whether the template has no Secure Boot database at all (an upgrade from it changes
    /// nothing).
    pub fn is_empty(&self) -> bool {
        self.pk.is_none() && self.merged.is_empty()
    }

    /// The names of the databases the template has, in order (for messages).
    pub fn names(&self) -> Vec<&'static str> {
        self.pk
            .iter()
            .map(|_| "PK")
            .chain(self.merged.iter().map(|(d, _)| d.name()))
            .collect()
    }
}

/// Gives the store in `editor` the Secure Boot databases of `template` (see the module
/// documentation for what is merged, kept and reported). On error `editor` is unchanged.
pub fn upgrade(
    editor: &mut Editor,
    template: &Varstore<'_>,
    options: &UpgradeOptions,
) -> Result<UpgradeReport, UpgradeError> {
    upgrade_with(editor, &TemplateDatabases::of(template)?, options)
}

/// [`upgrade`] with a template read once by [`TemplateDatabases::of`].
pub fn upgrade_with(
    editor: &mut Editor,
    template: &TemplateDatabases,
    options: &UpgradeOptions,
) -> Result<UpgradeReport, UpgradeError> {
    let store_layout = editor.store()?.layout().map(|l| (l.name, l.arch));
    if let (Some((t_name, t_arch)), Some((s_name, s_arch))) = (template.layout, store_layout) {
        if t_arch != s_arch {
            return Err(UpgradeError::ArchitectureMismatch {
                template_layout: t_name,
                template_arch: t_arch,
                store_layout: s_name,
                store_arch: s_arch,
            });
        }
    }
    let mut work = editor.clone();
    let mut variables = Vec::new();
    let mut pk_kept = false;
    if let Some(report) = upgrade_pk(&mut work, template, options, &mut pk_kept)? {
        variables.push(report);
    }
    for database in MERGED {
        let theirs = template
            .merged
            .iter()
            .find(|(d, _)| *d == database)
            .map(|(_, v)| v);
        if let Some(report) = merge(&mut work, database, theirs, options.strategy)? {
            variables.push(report);
        }
    }
    for name in NOT_MERGED {
        let theirs = template
            .not_merged
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| d.as_slice());
        let store = work.store()?;
        let ours = store
            .live_variables()
            .iter()
            .find(|v| v.guid == guid::IMAGE_SECURITY_DATABASE && v.name() == name)
            .map(|v| v.data.to_vec());
        let why = match (theirs, ours.as_deref()) {
            (Some(t), Some(o)) if t != o => format!(
                "{name} differs from the template's: kept (only KEK, db and dbx are merged)"
            ),
            (Some(_), None) => format!(
                "the template has a {name} and the VM none: not carried over (only KEK, db \
                 and dbx are merged)"
            ),
            _ => continue,
        };
        variables.push(VariableUpgrade {
            name: name.to_string(),
            guid: guid::to_text(guid::IMAGE_SECURITY_DATABASE),
            change: Change::Kept,
            why,
            added: Vec::new(),
            entries: ours
                .as_deref()
                .and_then(|data| SignatureDb::parse(data).ok())
                .map_or(0, |db| count(&db)),
            time: None,
        });
    }
    let changed = variables.iter().any(|v| v.change.is_write());
    let kept_variables = work
        .store()?
        .live_variables()
        .iter()
        .filter(|v| {
            !Database::ALL
                .iter()
                .any(|d| v.guid == d.guid() && v.name() == d.name())
        })
        .count();
    *editor = work;
    Ok(UpgradeReport {
        variables,
        changed,
        pk_kept,
        kept_variables,
    })
}

/// The PK: unchanged when it is the template's, else kept (or replaced with `replace_pk`).
fn upgrade_pk(
    work: &mut Editor,
    template: &TemplateDatabases,
    options: &UpgradeOptions,
    pk_kept: &mut bool,
) -> Result<Option<VariableUpgrade>, UpgradeError> {
    let database = Database::Pk;
    let store = work.store()?;
    let ours = store
        .live_variables()
        .iter()
        .find(|v| v.guid == database.guid() && v.name() == database.name())
        .map(|v| (v.data.to_vec(), v.time()));
    drop(store);
    let entries_of = |data: &[u8]| SignatureDb::parse(data).map_or(0, |db| count(&db));
    let report = |change, why: String, entries, time: Option<EfiTime>| VariableUpgrade {
        name: database.name().to_string(),
        guid: guid::to_text(database.guid()),
        change,
        why,
        added: Vec::new(),
        entries,
        time: time.map(|t| t.to_string()),
    };
    let Some(theirs) = &template.pk else {
        return Ok(ours.map(|(data, _)| {
            report(
                Change::Unchanged,
                "the template has no PK: the VM's is kept".to_string(),
                entries_of(&data),
                None,
            )
        }));
    };
    let their_subject = pk_subject(&theirs.data);
    match &ours {
        Some((data, _)) if *data == theirs.data => {
            return Ok(Some(report(
                Change::Unchanged,
                "the same as the template's".to_string(),
                entries_of(data),
                None,
            )))
        }
        Some((data, _)) if !options.replace_pk => {
            *pk_kept = true;
            return Ok(Some(report(
                Change::Kept,
                format!(
                    "PK differs from the template's: kept (the VM's is {}, the template's {}; \
                     use replace_pk to take the template's)",
                    pk_subject(data),
                    their_subject
                ),
                entries_of(data),
                None,
            )));
        }
        None if !options.replace_pk => {
            *pk_kept = true;
            return Ok(Some(report(
                Change::Kept,
                format!(
                    "the VM has no PK (setup mode) and the template has one ({their_subject}): \
                     not enrolled, the VM stays in setup mode (use replace_pk to enrol it, \
                     which turns Secure Boot on)"
                ),
                0,
                None,
            )));
        }
        _ => {}
    }
    // replace_pk: the template's PK, its timestamp never earlier than the VM's.
    let old_time = ours.as_ref().and_then(|(_, t)| *t);
    let time = match (theirs.time, old_time) {
        (Some(t), Some(o)) => later(t, o),
        (Some(t), None) => t,
        (None, Some(o)) => o,
        (None, None) => varstore::secureboot::initial_time(),
    };
    let outcome = work.set(
        database.name(),
        database.guid(),
        AUTHENTICATED,
        &theirs.data,
        Some(time),
        options.strategy,
    )?;
    let why = match &ours {
        Some((data, _)) => format!(
            "the template's PK ({their_subject}) replaces the VM's ({}) (replace_pk)",
            pk_subject(data)
        ),
        None => format!(
            "the VM had no PK (setup mode): the template's ({their_subject}) enrolled \
             (replace_pk); Secure Boot is on at the next boot"
        ),
    };
    let change = match outcome.change {
        varstore::edit::Change::Added => Change::Added,
        varstore::edit::Change::Unchanged => Change::Unchanged,
        _ => Change::Replaced,
    };
    Ok(Some(report(change, why, count(&theirs.db), Some(time))))
}

/// KEK, db or dbx: the template's entries the VM lacks appended, through
/// [`crate::secureboot::add`].
fn merge(
    work: &mut Editor,
    database: Database,
    theirs: Option<&TemplateVariable>,
    strategy: Strategy,
) -> Result<Option<VariableUpgrade>, UpgradeError> {
    let name = database.name();
    let store = work.store()?;
    let ours = store
        .live_variables()
        .iter()
        .find(|v| v.guid == database.guid() && v.name() == name)
        .map(|v| v.data.to_vec());
    drop(store);
    let ours_db = match &ours {
        Some(data) => {
            Some(
                SignatureDb::parse(data).map_err(|error| SecureBootError::Malformed {
                    database: database.name(),
                    error,
                })?,
            )
        }
        None => None,
    };
    let report = |change, why: String, added, entries, time| VariableUpgrade {
        name: name.to_string(),
        guid: guid::to_text(database.guid()),
        change,
        why,
        added,
        entries,
        time,
    };
    let Some(theirs) = theirs else {
        return Ok(ours_db.map(|db| {
            report(
                Change::Unchanged,
                format!("the template has no {name}: the VM's is kept"),
                Vec::new(),
                count(&db),
                None,
            )
        }));
    };
    // What `add` will append, found the same way (SignatureDb::merge) for the report.
    let mut preview = ours_db.clone().unwrap_or_default();
    let mut added = Vec::new();
    for list in &theirs.db.lists {
        for (owner, data) in &list.entries {
            if preview.add_signature(list.signature_type, *owner, data) {
                added.push(describe(list.signature_type, *owner, data));
            }
        }
    }
    if added.is_empty() {
        let total = count(&theirs.db);
        return Ok(Some(report(
            Change::Unchanged,
            format!(
                "has the template's {total} {} already",
                plural(total, "entry", "entries")
            ),
            Vec::new(),
            count(&preview),
            None,
        )));
    }
    let addition = Addition {
        inputs: vec![SignatureInput::Lists {
            db: theirs.db.clone(),
            time: theirs.time,
        }],
        ..Addition::to(database)
    };
    let change = add(work, &addition, strategy)?;
    debug_assert_eq!(change.added, added.len());
    let n = added.len();
    let entries = plural(n, "entry", "entries");
    let why = match (database, &ours_db) {
        (_, None) => format!("the VM had no {name}: the template's {n} {entries} added"),
        (Database::Dbx, Some(_)) => {
            format!("{n} dbx {entries} added from the template (dbx is now the union of both)")
        }
        _ => format!("{n} {name} {entries} added from the template"),
    };
    let change_kind = if ours_db.is_some() {
        Change::Replaced
    } else {
        Change::Added
    };
    Ok(Some(report(
        change_kind,
        why,
        added,
        change.entries,
        change.time,
    )))
}

/// The number of entries of a database.
fn count(db: &SignatureDb) -> usize {
    db.lists.iter().map(|l| l.entries.len()).sum()
}

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// The subject of a PK's certificate, for messages.
fn pk_subject(data: &[u8]) -> String {
    SignatureDb::parse(data)
        .ok()
        .and_then(|db| db.certificates().next().and_then(certificate_subject))
        .map_or_else(
            || "an unreadable certificate".to_string(),
            |s| format!("CN={s}"),
        )
}

/// One entry, as [`crate::secureboot::status`] shows it.
fn describe(signature_type: Guid, owner: Guid, data: &[u8]) -> EntryStatus {
    EntryStatus {
        signature_type: guid::name_of(signature_type)
            .map_or_else(|| signature_type.to_string(), str::to_string),
        owner: guid::to_text(owner),
        description: if signature_type == guid::CERT_X509 {
            certificate_subject(data).unwrap_or_else(|| "(unparsable certificate)".into())
        } else {
            describe_signature(signature_type, data)
        },
    }
}
