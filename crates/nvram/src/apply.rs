//! Fleet-wide edits: the same [`Plan`] applied to many store files in parallel, each file on
//! its own (its own lock, its own all-or-nothing edit, its own atomic replacement through
//! [`edit_file`](crate::edit::edit_file)), so one bad, locked or vanished file never stops or
//! corrupts the others.
//!
//! Every file gets a [`FileResult`]: [`Status::Changed`], [`Status::Unchanged`] (the plan was
//! already in effect, nothing was written), [`Status::Skipped`] (locked by a running VM or
//! another tool), [`Status::NotDurable`] (changed, but the fsync of the directory after the
//! rename failed, so a host crash may bring the old content back) or [`Status::Failed`] with
//! the reason (not changed).
//!
//! Plans are idempotent by design: setting what is already there and deleting what is not
//! there both leave a file unchanged, so re-running a plan over a fleet (after a partial run,
//! or to pick up the VMs that were running) only touches the files that still need it.
//!
//! ```
//! use nvram::apply::{apply_all, Plan, Status, Step};
//! use varstore::{guid, Attributes};
//!
//! let dir = tempfile::tempdir()?;
//! let files: Vec<_> = (0..3).map(|i| dir.path().join(format!("vm{i}.fd"))).collect();
//! for f in &files {
//!     std::fs::write(f, varstore::Layout::by_name("ovmf-4m").unwrap().create())?;
//! }
//! let plan = Plan::new(vec![Step::Set {
//!     name: "Timeout".into(),
//!     guid: guid::EFI_GLOBAL_VARIABLE,
//!     attributes: Attributes(7),
//!     data: vec![5, 0],
//!     time: None,
//! }]);
//! let results = apply_all(&files, &plan, 2, &|_| {});
//! assert!(results.iter().all(|r| r.status == Status::Changed));
//! let again = apply_all(&files, &plan, 2, &|_| {});
//! assert!(again.iter().all(|r| r.status == Status::Unchanged));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod discover;
mod spec;

pub use discover::{
    dedup_files, parse_file_list, stores_in_dir, FILE_LIST_WHAT, MAX_FILE_LIST_LEN,
};
pub use spec::{parse_delete, parse_set, SpecError};

use crate::edit::{delete_by_name, edit_file_with, import, DeleteError, EditFileError};
use serde::Serialize;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use varstore::edit::{EditError, Editor, Strategy};
use varstore::json::VariableList;
use varstore::{Attributes, EfiTime, Guid};

/// One edit of a [`Plan`]. A new kind of edit (Secure Boot enrolment, boot entries) is one
/// more variant here and one more arm in `Step::run`.
#[derive(Debug, Clone)]
pub enum Step {
    /// Create or replace a variable, as `nvram set` does.
    Set {
        /// Variable name.
        name: String,
        /// Vendor GUID.
        guid: Guid,
        /// Attributes.
        attributes: Attributes,
        /// Data (not empty).
        data: Vec<u8>,
        /// Timestamp of a time-based authenticated variable.
        time: Option<EfiTime>,
    },
    /// Delete a variable if it exists, as `nvram delete` does.
    Delete {
        /// Variable name.
        name: String,
        /// Vendor GUID; `None` deletes the one live variable of that name (a file with
        /// several such variables fails, since which one is meant cannot be told).
        guid: Option<Guid>,
    },
    /// Import a variable list, as `nvram import` does.
    Import {
        /// The list.
        list: VariableList,
        /// Also delete the live variables the list does not name.
        replace_all: bool,
        /// Where the list came from, for the per-file detail.
        label: String,
    },
    /// Enrol Secure Boot keys (PK, KEK, db, dbx, SecureBootEnable, CustomMode), as
    /// [`crate::secureboot::enroll`] does. The plan's own `strategy` applies to this step.
    /// Its timestamps are derived from the certificates, not the clock, so enrolling again
    /// leaves a file unchanged.
    Enroll(Box<crate::secureboot::EnrollPlan>),
    /// Add certificates or hashes to KEK, db or dbx, keeping every entry there, as
    /// [`crate::secureboot::add`] does (e.g. Microsoft's 2023 certificates across a fleet).
    /// A file that has them all already is left unchanged.
    AddSignatures(Box<crate::secureboot::Addition>),
    /// Turn a shim or fallback switch on or off, as [`crate::shim::set_setting`] does
    /// (`nvram shim set`).
    Shim {
        /// The switch.
        setting: crate::shim::Setting,
        /// On (the variable holds 1) or off (deleted).
        on: bool,
    },
    /// Set shim's SBAT revocation level, as [`crate::shim::set_sbat_level`] does
    /// (`nvram shim sbat-level`).
    SbatLevel(Vec<u8>),
    /// Give the store a newer template's Secure Boot databases, keeping the VM's own
    /// variables, as [`crate::upgrade::upgrade_with`] does (`nvram upgrade`). The template is
    /// read once, when the plan is made; a store that has it all already is left unchanged.
    Upgrade {
        /// The template's databases.
        template: Box<crate::upgrade::TemplateDatabases>,
        /// Whether the template's PK replaces a different one (or fills a missing one).
        replace_pk: bool,
    },
}

/// Why a step refused to run on one file (the file is then left as it was).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The editor refused a write, or cannot read the store.
    #[error(transparent)]
    Edit(#[from] EditError),
    /// A [`Step::Delete`] without a GUID found several variables of that name.
    #[error("{0}; name one as NAME@GUID")]
    Ambiguous(DeleteError),
    /// A [`Step::Import`] list entry was refused.
    #[error(transparent)]
    Import(crate::edit::ImportError),
    /// A [`Step::Enroll`] or [`Step::AddSignatures`] was refused.
    #[error(transparent)]
    SecureBoot(crate::secureboot::SecureBootError),
    /// A [`Step::Upgrade`] was refused.
    #[error(transparent)]
    Upgrade(crate::upgrade::UpgradeError),
}

impl From<crate::secureboot::SecureBootError> for StepError {
    fn from(e: crate::secureboot::SecureBootError) -> Self {
        match e {
            crate::secureboot::SecureBootError::Edit(e) => Self::Edit(e),
            other => Self::SecureBoot(other),
        }
    }
}

impl From<crate::upgrade::UpgradeError> for StepError {
    fn from(e: crate::upgrade::UpgradeError) -> Self {
        match e {
            crate::upgrade::UpgradeError::Edit(e) => Self::Edit(e),
            other => Self::Upgrade(other),
        }
    }
}

impl Step {
    /// Runs the step on one store; `Ok` says what it did. Whether the file changes is told
    /// by its bytes afterwards, not by the steps.
    fn run(&self, editor: &mut Editor, strategy: Strategy) -> Result<String, StepError> {
        match self {
            Self::Set {
                name,
                guid,
                attributes,
                data,
                time,
            } => {
                let outcome = editor
                    .set(name, *guid, *attributes, data, *time, strategy)
                    .map_err(StepError::Edit)?;
                Ok(format!("{name}: {}", outcome.change))
            }
            Self::Delete { name, guid } => {
                match delete_by_name(editor, name, *guid, strategy) {
                    Ok((_, outcome)) => Ok(format!("{name}: {}", outcome.change)),
                    // Deleting what is not there is done already: this keeps plans idempotent.
                    Err(DeleteError::NotFound { .. }) => Ok(format!("{name}: not present")),
                    Err(DeleteError::Edit(e)) => Err(StepError::Edit(e)),
                    Err(e @ DeleteError::Ambiguous { .. }) => Err(StepError::Ambiguous(e)),
                }
            }
            Self::Enroll(enrolment) => {
                let changes = crate::secureboot::enroll(editor, enrolment)?;
                let what: Vec<String> = changes
                    .iter()
                    .map(|c| format!("{}: {}", c.name, c.change))
                    .collect();
                Ok(what.join("; "))
            }
            Self::AddSignatures(addition) => {
                let change = crate::secureboot::add(editor, addition, strategy)?;
                Ok(match change.added {
                    0 => format!("{}: unchanged", change.name),
                    n => format!("{}: {} (+{n})", change.name, change.change),
                })
            }
            Self::Shim { setting, on } => {
                let c = crate::shim::set_setting(editor, *setting, *on, strategy)?;
                Ok(format!("{}: {}", c.name, c.change))
            }
            Self::SbatLevel(level) => {
                let c = crate::shim::set_sbat_level(editor, level, strategy)?;
                Ok(format!("{}: {}", c.name, c.change))
            }
            Self::Upgrade {
                template,
                replace_pk,
            } => {
                let options = crate::upgrade::UpgradeOptions {
                    replace_pk: *replace_pk,
                    strategy,
                };
                let report = crate::upgrade::upgrade_with(editor, template, &options)?;
                let what: Vec<String> = report
                    .variables
                    .iter()
                    .map(|v| match (v.change, v.added.len()) {
                        (c, n) if c.is_write() && n > 0 => format!("{}: {c} (+{n})", v.name),
                        (crate::upgrade::Change::Kept, _) if v.name == "PK" => {
                            format!("{}: kept (differs from the template's)", v.name)
                        }
                        (c, _) => format!("{}: {c}", v.name),
                    })
                    .collect();
                Ok(if what.is_empty() {
                    "upgrade: the template has no Secure Boot databases".to_string()
                } else {
                    format!("upgrade: {}", what.join(", "))
                })
            }
            Self::Import {
                list,
                replace_all,
                label,
            } => {
                let report =
                    import(editor, list, strategy, *replace_all).map_err(StepError::Import)?;
                Ok(format!(
                    "import {label}: {} added, {} replaced, {} unchanged, {} deleted",
                    report.added, report.replaced, report.unchanged, report.deleted
                ))
            }
        }
    }
}

/// The edits applied to every file, in order, all or nothing per file.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The steps.
    pub steps: Vec<Step>,
    /// How each step is written.
    pub strategy: Strategy,
    /// Only find out what would change: every file is locked, read and edited in memory,
    /// none is written ([`Status::WouldChange`] instead of [`Status::Changed`]).
    pub dry_run: bool,
}

impl Plan {
    /// A plan written the firmware's way ([`Strategy::Append`]).
    pub fn new(steps: Vec<Step>) -> Self {
        Self {
            steps,
            strategy: Strategy::Append,
            dry_run: false,
        }
    }
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The file was edited and replaced.
    Changed,
    /// The file was edited and replaced, but the fsync of its directory after the rename
    /// failed: it holds the new content, which a host crash may undo.
    #[serde(rename = "changed-not-durable")]
    NotDurable,
    /// Dry run: the plan would change the file (it was not written).
    #[serde(rename = "would-change")]
    WouldChange,
    /// The plan was already in effect; the file was not written.
    Unchanged,
    /// Locked by another process (a running VM?); not touched.
    Skipped,
    /// Not edited, for the reason in the detail; not touched.
    Failed,
}

impl Status {
    /// A word for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Changed => "changed",
            Self::NotDurable => "changed-not-durable",
            Self::WouldChange => "would-change",
            Self::Unchanged => "unchanged",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result for one file (serialized as `{"file", "result", "detail"}`).
#[derive(Debug, Clone, Serialize)]
pub struct FileResult {
    /// The file as given.
    pub file: PathBuf,
    /// What happened.
    #[serde(rename = "result")]
    pub status: Status,
    /// What each step did, or why the file was skipped or failed.
    pub detail: String,
    /// Why the file was skipped, failed or is not durable, as the edit reported it (its
    /// source chain included); `detail` is its text. `None` for a file the edit went through,
    /// and for a verdict reached without editing (a running libvirt domain).
    #[serde(skip)]
    pub error: Option<Arc<EditFileError<StepError>>>,
}

/// Counts per [`Status`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Files changed (durably).
    pub changed: usize,
    /// Files changed whose directory could not be fsync'ed after the rename.
    pub not_durable: usize,
    /// Files a dry run would change.
    pub would_change: usize,
    /// Files already as planned.
    pub unchanged: usize,
    /// Files skipped because they were locked.
    pub skipped: usize,
    /// Files that failed.
    pub failed: usize,
}

impl Summary {
    /// Counts `results`.
    pub fn of(results: &[FileResult]) -> Self {
        let mut s = Self::default();
        for r in results {
            s.add(r.status);
        }
        s
    }

    /// Counts one more result.
    pub fn add(&mut self, status: Status) {
        match status {
            Status::Changed => self.changed += 1,
            Status::NotDurable => self.not_durable += 1,
            Status::WouldChange => self.would_change += 1,
            Status::Unchanged => self.unchanged += 1,
            Status::Skipped => self.skipped += 1,
            Status::Failed => self.failed += 1,
        }
    }

    /// All files counted.
    pub fn total(&self) -> usize {
        self.changed
            + self.not_durable
            + self.would_change
            + self.unchanged
            + self.skipped
            + self.failed
    }
}

/// Applies `plan` to one file: locks it, runs every step on a copy and replaces the file
/// atomically only if the steps all succeeded and changed something.
pub fn apply_file(path: &Path, plan: &Plan) -> FileResult {
    // What the steps did, also for a file that is changed but not durable (an error).
    let mut did = String::new();
    let result = edit_file_with(path, !plan.dry_run, |editor| -> Result<_, StepError> {
        let done = plan
            .steps
            .iter()
            .map(|step| step.run(editor, plan.strategy))
            .collect::<Result<Vec<_>, _>>()?;
        did = done.join("; ");
        Ok(did.clone())
    });
    let (status, detail) = match &result {
        // `written` is what counts: a step may report a change that leaves the bytes as they
        // were (e.g. replacing a variable with itself after a compaction).
        Ok(edited) if edited.written && plan.dry_run => (Status::WouldChange, edited.value.clone()),
        Ok(edited) if edited.written => (Status::Changed, edited.value.clone()),
        Ok(edited) => (Status::Unchanged, edited.value.clone()),
        // The holder text says "locked: …" when /proc/locks names the holder.
        Err(EditFileError::Locked { holder, .. }) if holder.starts_with("locked") => {
            (Status::Skipped, holder.clone())
        }
        Err(EditFileError::Locked { holder, .. }) => (Status::Skipped, format!("locked: {holder}")),
        Err(EditFileError::File(e)) if e.is_not_durable() => {
            (Status::NotDurable, format!("{did}; {e}"))
        }
        // The result names the file and says it failed, so the step's own reason is enough.
        Err(EditFileError::Edit { error, .. }) => (Status::Failed, error.to_string()),
        Err(EditFileError::File(e)) => (Status::Failed, e.to_string()),
    };
    FileResult {
        file: path.to_path_buf(),
        status,
        detail,
        error: result.err().map(Arc::new),
    }
}

/// Applies `plan` to every file with `jobs` threads (at least one) and returns the results
/// in the order of `files`. `on_done` is called from the worker threads as each file
/// finishes (for a progress display).
pub fn apply_all(
    files: &[PathBuf],
    plan: &Plan,
    jobs: usize,
    on_done: &(dyn Fn(&FileResult) + Sync),
) -> Vec<FileResult> {
    let next = AtomicUsize::new(0);
    let jobs = jobs.clamp(1, files.len().max(1));
    // std's scoped threads with a shared work index (a work queue of one counter): each
    // worker returns the (index, result) pairs it did, which are put back in input order at
    // the end, so no per-file lock or slot is needed.
    let done: Vec<Vec<(usize, FileResult)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        // Files are handed out one at a time, so a slow file holds up only
                        // its thread.
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = files.get(i) else { break mine };
                        // A panic (a bug, say in the parser on a strange file) fails that
                        // file only; the file is untouched since replacing it is the last
                        // thing that happens.
                        let result =
                            std::panic::catch_unwind(AssertUnwindSafe(|| apply_file(path, plan)))
                                .unwrap_or_else(|_| FileResult {
                                    file: path.clone(),
                                    status: Status::Failed,
                                    detail: "internal error (a bug in nvram; please report it)"
                                        .into(),
                                    error: None,
                                });
                        on_done(&result);
                        mine.push((i, result));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            // A worker only panics if `on_done` does: pass that on.
            .map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut results: Vec<(usize, FileResult)> = done.into_iter().flatten().collect();
    results.sort_unstable_by_key(|(i, _)| *i);
    debug_assert_eq!(results.len(), files.len(), "every file is processed");
    results.into_iter().map(|(_, r)| r).collect()
}

/// Runs `plan` on a blank OVMF store to catch, before any file is touched, the mistakes that
/// would fail it on every store (a bad name, attributes, empty data, a malformed import
/// entry). Problems that depend on the store (size limits, a full store) are left to the
/// per-file results.
pub fn preflight(plan: &Plan) -> Result<(), StepError> {
    let blank = varstore::Layout::by_name("ovmf-4m")
        .expect("built-in layout")
        .create();
    let mut editor = Editor::new(&blank)?;
    let universal = |e: &EditError| {
        matches!(
            e,
            EditError::InvalidName { .. }
                | EditError::InvalidAttributes { .. }
                | EditError::EmptyData { .. }
                | EditError::TimestampWithoutAt { .. }
        )
    };
    for step in &plan.steps {
        match step.run(&mut editor, plan.strategy) {
            Err(StepError::Edit(e)) if universal(&e) => return Err(StepError::Edit(e)),
            Err(StepError::Import(e @ crate::edit::ImportError::Field { .. })) => {
                return Err(StepError::Import(e))
            }
            Err(StepError::Import(e @ crate::edit::ImportError::Refused { .. })) if matches!(&e, crate::edit::ImportError::Refused { error, .. } if universal(error)) => {
                return Err(StepError::Import(e))
            }
            _ => {}
        }
    }
    Ok(())
}
