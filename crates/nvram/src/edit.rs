//! Editing a store file in place: locked against a running VM, all-or-nothing, and JSON
//! import in the dialects of QEMU's uefi-vars, virt-fw-vars and python-uefivars.
//!
//! The editing itself is [`varstore::edit::Editor`]; this module adds the file handling:
//! [`edit_file`] locks the file (the exclusive `flock` an nvram pflash device holds while it
//! runs, plus the POSIX lock that conflicts with QEMU's), reads it through the locked
//! descriptor, applies the edit to a copy and, only if the edit succeeded and changed
//! something, replaces the file atomically (temporary file, fsync, rename) while still holding
//! the lock. On any error the file is left as it was, except when only the fsync of the
//! directory after the rename fails ([`crate::files::FileError::NotDurable`]): the file then
//! holds the new content, which a host crash may undo.
//!
//! ```
//! use nvram::edit::edit_file;
//! use varstore::edit::Strategy;
//! use varstore::{guid, Attributes};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("vars.fd");
//! std::fs::write(&path, varstore::Layout::by_name("ovmf-4m").unwrap().create())?;
//! let edited = edit_file(&path, |editor| {
//!     editor.set("Timeout", guid::EFI_GLOBAL_VARIABLE, Attributes(7), &[5, 0], None, Strategy::Append)
//! })?;
//! assert!(edited.written);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod changes;
mod delete;
mod value;

pub use changes::{changes, ChangedVariable, Snapshot};
pub use delete::{delete_by_name, find_variable, DeleteError};
pub use value::{read_data_file, virt_firmware_defaults, DataKind, ValueError};

use crate::files::{FileError, LockedFile};
use std::path::{Path, PathBuf};
use varstore::edit::{Change, EditError, Editor, Strategy};
use varstore::json::{bounded, ListError, VariableList};
use varstore::{Attributes, EfiTime, Guid};

/// Why editing a file failed. `E` is the error of the caller's edit (an [`EditError`] for a
/// plain [`Editor`] edit, [`ImportError`], `BootError`, [`crate::secureboot::SecureBootError`],
/// … anything that an [`EditError`] converts into). The file is unchanged in every case but
/// `File(FileError::NotDurable)` ([`crate::files::FileError::is_not_durable`]): new content in
/// place, directory fsync failed.
#[derive(Debug, thiserror::Error)]
pub enum EditFileError<E = EditError> {
    /// Another process holds a lock on the file.
    #[error("{path}: locked by another process (a running VM?); {holder}; nothing was changed")]
    Locked {
        /// The file.
        path: PathBuf,
        /// Who holds it, as far as can be told.
        holder: String,
    },
    /// Opening, reading or replacing the file failed.
    #[error(transparent)]
    File(FileError),
    /// The store cannot be edited, or the edit was refused: the caller's error (the
    /// `source`, also part of the message).
    #[error("{path}: {error}; nothing was changed")]
    Edit {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        error: E,
    },
}

impl<E> EditFileError<E> {
    /// The edit's own reason, if the edit itself was refused (not the file handling).
    pub fn edit_error(&self) -> Option<&E> {
        match self {
            Self::Edit { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The result of [`edit_file`].
#[derive(Debug)]
pub struct Edited<T> {
    /// What the edit returned.
    pub value: T,
    /// Whether the file was replaced (false when the edit changed no byte).
    pub written: bool,
    /// Bytes free after the last record once the edit is done.
    pub free_space: usize,
    /// Less than the firmware's largest variable size is free, so the firmware compacts the
    /// store at its next boot (`ReclaimForOS`, docs/varstore-format.md §8.5) even though the
    /// store is healthy.
    pub reclaim_at_boot: bool,
}

/// The error of an edit that imports a list and also reads the store (for a report of what
/// changed): either the editor's or the import's.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Refused by the editor.
    #[error(transparent)]
    Edit(#[from] EditError),
    /// The import file was wrong.
    #[error(transparent)]
    Import(#[from] ImportError),
}

/// Locks `path`, applies `edit` to its store and replaces the file if anything changed.
///
/// The lock is held from before the read until the new file is in place, so a VM cannot start
/// on the old content in between, and an nvram pflash device or QEMU that has the file open
/// makes this fail with [`EditFileError::Locked`]. Once it has succeeded, the temporary files
/// that killed writers left next to the file are removed
/// ([`crate::files::clean_after_write`]).
pub fn edit_file<T, E: From<EditError>>(
    path: &Path,
    edit: impl FnOnce(&mut Editor) -> Result<T, E>,
) -> Result<Edited<T>, EditFileError<E>> {
    let edited = edit_file_with(path, true, edit)?;
    // What killed writers left next to it goes once this edit has succeeded.
    crate::files::clean_after_write(path);
    Ok(edited)
}

/// [`edit_file`] when `write`; otherwise the same without writing anything:
/// [`Edited::written`] then says whether the edit *would* change the file. The file is locked
/// while it is read either way, so a locked file is reported as an edit would find it.
pub fn edit_file_with<T, E: From<EditError>>(
    path: &Path,
    write: bool,
    edit: impl FnOnce(&mut Editor) -> Result<T, E>,
) -> Result<Edited<T>, EditFileError<E>> {
    let mut locked = LockedFile::open(path).map_err(|e| match e {
        FileError::Locked { path, holder } => EditFileError::Locked { path, holder },
        other => EditFileError::File(other),
    })?;
    let file = locked.read_all().map_err(EditFileError::File)?;
    let store = crate::files::unwrap_store(path, file).map_err(EditFileError::File)?;
    refuse_open_json(path, &store)?;
    let failed = |error: E| EditFileError::Edit {
        path: path.to_path_buf(),
        error,
    };
    let mut editor = Editor::new(store.image()).map_err(|e| failed(e.into()))?;
    if let Some(limits) = store.limits() {
        editor.set_limits(limits);
    }
    let value = edit(&mut editor).map_err(failed)?;
    let free_space = editor.free_space().map_err(|e| failed(e.into()))?;
    let reclaim_at_boot = store.is_flash() && free_space < editor.limits().largest() as usize;
    let edited = editor.finish();
    let written = edited != store.image();
    if written {
        // Wrapped even for a dry run: a JSON store over QEMU's limit is refused either way.
        let content = store.rewrap(&edited).map_err(|source| {
            EditFileError::File(FileError::Container {
                path: path.to_path_buf(),
                source,
            })
        })?;
        if write {
            locked.replace(&content).map_err(EditFileError::File)?;
        }
    }
    Ok(Edited {
        value,
        written,
        free_space,
        reclaim_at_boot,
    })
}

/// QEMU's uefi-vars device keeps its JSON store open but takes no lock on it, and rewrites
/// it from memory whenever the guest changes a variable: an edit made while it runs would be
/// lost. So a JSON store that another process has open is treated as locked.
fn refuse_open_json<E>(
    path: &Path,
    store: &crate::container::StoreFile,
) -> Result<(), EditFileError<E>> {
    if store.format() != crate::container::Format::Json {
        return Ok(());
    }
    let openers = crate::files::openers(path);
    if openers.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = openers.iter().map(ToString::to_string).collect();
    Err(EditFileError::Locked {
        path: path.to_path_buf(),
        holder: format!(
            "open by {} (QEMU's uefi-vars device takes no lock on a JSON store and would \
             overwrite the edit when it next saves)",
            list.join(", ")
        ),
    })
}

/// Largest import file (`--json`, `--import`) read. The biggest variable region of any layout
/// is 256 KiB (0x40000, `varstore::layout`), so a list a store can hold has at most 256 KiB of
/// names and data: 512 KiB as hex. Each variable also costs at least a 64-byte record header
/// in the store against under 300 bytes of JSON keys, GUID, attributes and time, and a name
/// may be written with `\uXXXX` escapes (3× its UTF-16 bytes); even pretty-printed, a list
/// that fits in any store stays under 4 MiB. 16 MiB leaves room for indentation and QEMU's
/// digests, and stops a 200 MB data field or `/dev/zero` before it is parsed.
pub const MAX_IMPORT_JSON_LEN: u64 = 16 << 20;

/// How an import file is named in a too-large error.
pub const IMPORT_JSON_WHAT: &str = "a JSON variable list";

/// Largest `--data-file` (and `apply --set NAME=file:PATH`) read: no layout allows a
/// variable larger than 0x8400 bytes (`max_variable_size`) nor a variable region over
/// 256 KiB; 1 MiB is far above both, so a data file that is merely too big for the store gets
/// the editor's precise message, and a huge one is refused before it is read.
pub const MAX_DATA_FILE_LEN: u64 = 1 << 20;

/// A problem with an import file, naming the variable.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Not a variable list, a version this reader does not know, or a variable listed twice.
    #[error(transparent)]
    List(#[from] ListError),
    /// A field of one variable is malformed.
    #[error("variable {index} ({}): {problem}", bounded(name))]
    Field {
        /// Position in the list, from 0.
        index: usize,
        /// Its name.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// The editor refused one variable.
    #[error("variable {index}: {error}")]
    Refused {
        /// Position in the list, from 0.
        index: usize,
        /// Why (part of the message, so not also a `source`).
        error: EditError,
    },
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Variables created.
    pub added: usize,
    /// Variables whose content changed.
    pub replaced: usize,
    /// Variables that were already exactly so.
    pub unchanged: usize,
    /// Variables deleted because the list lacks them (with `replace_all`).
    pub deleted: usize,
    /// Whether the store was compacted on the way.
    pub compacted: bool,
    /// What could not be carried over, one sentence each (e.g. QEMU digests).
    pub notes: Vec<String>,
}

/// Sets every variable of `list` in order (and with `replace_all` deletes the live variables
/// it does not name). Everything is decoded before the first change, so a malformed entry
/// changes nothing; run it inside [`edit_file`] for all-or-nothing on the file too. A list
/// naming a variable twice is refused ([`ListError::Duplicate`]). The work is linear in the
/// number of variables (see [`varstore::edit`]).
///
/// ```
/// use nvram::edit::import;
/// use varstore::edit::{Editor, Strategy};
/// use varstore::json::VariableList;
///
/// let image = varstore::Layout::by_name("ovmf-4m").unwrap().create();
/// let mut editor = Editor::new(&image)?;
/// let list = VariableList::from_json(br#"{"variables": [{"name": "X",
///     "guid": "8be4df61-93ca-11d2-aa0d-00e098032b8c", "attr": 7, "data": "01"}]}"#)?;
/// let report = import(&mut editor, &list, Strategy::Append, false)?;
/// assert_eq!(report.added, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn import(
    editor: &mut Editor,
    list: &VariableList,
    strategy: Strategy,
    replace_all: bool,
) -> Result<ImportReport, ImportError> {
    list.check_duplicates()?;
    let mut report = ImportReport::default();
    let mut decoded = Vec::with_capacity(list.variables.len());
    for (index, v) in list.variables.iter().enumerate() {
        let field = |problem: String| ImportError::Field {
            index,
            name: v.name.clone(),
            problem,
        };
        let guid = Guid::try_parse(&v.guid)
            .map_err(|_| field(format!("guid {:?} is not a GUID", bounded(&v.guid))))?;
        let data = hex::decode(&v.data).map_err(|e| field(format!("data is not hex: {e}")))?;
        let at = Attributes(v.attr).is_time_based_authenticated();
        let time = match &v.time {
            None => None,
            Some(text) => {
                let bytes: [u8; 16] = hex::decode(text)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| {
                        field(format!("time {:?} is not 32 hex digits", bounded(text)))
                    })?;
                if at {
                    Some(EfiTime(bytes))
                } else {
                    if bytes != [0; 16] {
                        report.notes.push(format!(
                            "{}: time dropped: only time-based authenticated (at) variables store one",
                            bounded(&v.name)
                        ));
                    }
                    None
                }
            }
        };
        if v.digest.is_some() {
            report.notes.push(format!(
                "{}: QEMU's certificate digest was dropped: edk2 keeps its own in the certdb variable, computed from different input (the signer's CN and the top-level certificate's tbsCertificate, where QEMU hashes that certificate's SHA-256 fingerprint), so it cannot be converted; without a certdb entry the firmware refuses later signed updates of this variable",
                bounded(&v.name)
            ));
        }
        decoded.push((index, v.name.as_str(), guid, Attributes(v.attr), data, time));
    }
    // With the compact strategy the edits are made the firmware's way (append) and the store
    // is compacted once at the end: the same bytes as compacting after every variable (the
    // live variables keep their order, the changed ones follow in list order), in time
    // linear in the number of variables rather than one rewrite of the store each. A store
    // with a live in-transition copy is the exception (the first compaction would put it
    // before the changed variables, a final one after them): it gets one compaction per
    // change.
    let batched = strategy == Strategy::Compact && {
        let store = editor
            .store()
            .map_err(|error| ImportError::Refused { index: 0, error })?;
        !store
            .live_variables()
            .iter()
            .any(|r| r.state() == varstore::RecordState::InDeletedTransition)
    };
    let each = if batched { Strategy::Append } else { strategy };
    if replace_all {
        let wanted: std::collections::HashSet<(&str, Guid)> =
            decoded.iter().map(|d| (d.1, d.2)).collect();
        let store = editor
            .store()
            .map_err(|error| ImportError::Refused { index: 0, error })?;
        let extra: Vec<(String, Guid)> = store
            .live_variables()
            .iter()
            .map(|r| (r.name(), r.guid))
            .filter(|(n, g)| !wanted.contains(&(n.as_str(), *g)))
            .collect();
        drop(store);
        for (name, guid) in extra {
            let outcome = editor
                .delete(&name, guid, each)
                .map_err(|error| ImportError::Refused { index: 0, error })?;
            report.deleted += 1;
            report.compacted |= outcome.compacted;
        }
    }
    for (index, name, guid, attrs, data, time) in decoded {
        let outcome = editor
            .set(name, guid, attrs, &data, time, each)
            .map_err(|error| ImportError::Refused { index, error })?;
        report.compacted |= outcome.compacted;
        match outcome.change {
            Change::Added => report.added += 1,
            Change::Replaced => report.replaced += 1,
            Change::Unchanged => report.unchanged += 1,
            Change::Deleted => report.deleted += 1,
        }
    }
    if batched && report.added + report.replaced + report.deleted > 0 {
        editor
            .compact()
            .map_err(|error| ImportError::Refused { index: 0, error })?;
        report.compacted = true;
    }
    Ok(report)
}

/// Parses an attribute list: comma-separated words (`nv,bs,rt`, also `at`, `hr`, `aw`,
/// `append`, and the long UEFI names without the `EFI_VARIABLE_` prefix) or one number
/// (`7`, `0x27`).
///
/// ```
/// assert_eq!(nvram::edit::parse_attributes("nv,bs,rt").unwrap().0, 7);
/// assert_eq!(nvram::edit::parse_attributes("0x27").unwrap().0, 0x27);
/// assert!(nvram::edit::parse_attributes("nv,xx").is_err());
/// ```
pub fn parse_attributes(text: &str) -> Result<Attributes, AttributeError> {
    let text = text.trim();
    if let Some(number) = parse_number(text) {
        return u32::try_from(number)
            .map(Attributes)
            .map_err(|_| AttributeError::TooLarge {
                text: text.to_string(),
            });
    }
    let mut bits = 0;
    for word in text.split(',').map(str::trim) {
        bits |= match word.to_ascii_lowercase().as_str() {
            "nv" | "non_volatile" | "non-volatile" => Attributes::NON_VOLATILE,
            "bs" | "bootservice_access" | "boot-service" => Attributes::BOOTSERVICE_ACCESS,
            "rt" | "runtime_access" | "runtime" => Attributes::RUNTIME_ACCESS,
            "hr" | "hardware_error_record" => Attributes::HARDWARE_ERROR_RECORD,
            "aw" | "authenticated_write_access" => Attributes::AUTHENTICATED_WRITE_ACCESS,
            "at" | "time_based_authenticated_write_access" => {
                Attributes::TIME_BASED_AUTHENTICATED_WRITE_ACCESS
            }
            "append" | "append_write" => Attributes::APPEND_WRITE,
            _ => {
                return Err(AttributeError::Unknown {
                    word: bounded(word).into_owned(),
                })
            }
        };
    }
    Ok(Attributes(bits))
}

/// Why [`parse_attributes`] refused a text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    /// A number over 32 bits.
    #[error("{text}: too large for attributes")]
    TooLarge {
        /// The number as given.
        text: String,
    },
    /// A word that names no attribute.
    #[error("unknown attribute {word:?}: use nv, bs, rt, at (or a number such as 0x7)")]
    Unknown {
        /// The word.
        word: String,
    },
}

/// A decimal or `0x` hexadecimal number.
///
/// ```
/// assert_eq!(nvram::edit::parse_number("0x10"), Some(16));
/// assert_eq!(nvram::edit::parse_number("10"), Some(10));
/// assert_eq!(nvram::edit::parse_number("x"), None);
/// ```
pub fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}
