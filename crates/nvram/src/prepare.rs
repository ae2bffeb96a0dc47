//! Instantiating a VM's varstore from its firmware's template: the management layer's half of
//! QEMU's pflash migration design (docs/design.md).
//!
//! | VM varstore | normal start | incoming migration |
//! |---|---|---|
//! | absent | copy the template (size *and* contents: an empty store is not zeroes) | create a zero-filled file of the template's size |
//! | present | leave it alone; verify size and layout against the template | leave it alone; verify the size |
//!
//! Why only the size for an incoming migration: the device keeps the flash content in guest
//! memory, which migrates like RAM, and QEMU writes the whole image to the destination's file
//! when the VM first runs there. The size must be right before QEMU starts, though: QEMU
//! itself only notices a wrong size when the migration stream arrives (`Size mismatch:
//! system.flash1: …`), after the source has done the work. The incoming file is zero-filled
//! rather than a template copy on purpose: if the migration never happens, `prepare` for a
//! normal start then refuses the file as unformatted, instead of booting the VM from a blank
//! store as if nothing were wrong.
//!
//! [`reset`] re-instantiates a varstore from the template atomically, keeping a backup.
//! Every write goes through [`crate::files`]: exclusive owner-only creation, no symlinks,
//! temp file + fsync + rename + fsync of the directory, and no change to a file that a
//! running VM has locked.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let template = dir.path().join("OVMF_VARS_4M.fd");
//! std::fs::write(&template, varstore::Layout::by_name("ovmf-4m").unwrap().create()).unwrap();
//! let vars = dir.path().join("vm1_VARS.fd");
//!
//! let first = nvram::prepare::prepare(&vars, &template, false).unwrap();
//! assert_eq!(first.outcome, nvram::prepare::Outcome::Created);
//! let again = nvram::prepare::prepare(&vars, &template, false).unwrap();
//! assert_eq!(again.outcome, nvram::prepare::Outcome::Verified);
//! ```

use crate::container::{self, ContainerError, Format};
use crate::files::{self, FileError, LockHolder, LockedFile};
use serde::Serialize;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use varstore::{ErrorKind, ParseError, StoreFormat, Varstore};

/// What [`prepare`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The varstore was absent and is now a copy of the template.
    Created,
    /// The varstore was absent; a zero-filled file of the template's size now stands in for
    /// the incoming migration to fill.
    CreatedForIncoming,
    /// The varstore exists and was left alone; its size and layout match the template.
    Verified,
    /// The varstore exists and was left alone for an incoming migration; its size matches.
    VerifiedSize,
}

/// The report of a successful [`prepare`].
#[derive(Debug, Clone, Serialize)]
pub struct Prepared {
    /// The VM's varstore.
    pub nvram: PathBuf,
    /// The template it was checked against or copied from.
    pub template: PathBuf,
    /// What was done.
    pub outcome: Outcome,
    /// The varstore's size in bytes (equal to the template's).
    pub size: u64,
    /// How the varstore is kept (raw, qcow2, json).
    pub format: Format,
    /// The template's layout: a built-in layout name (`ovmf-4m`), a description of an
    /// unknown one, or `unformatted` for a blank template such as Debian's `AAVMF_VARS.fd`.
    pub layout: String,
    /// Locks on an existing varstore (from `/proc/locks`). A non-empty list before a normal
    /// start means a VM already runs on the file (QEMU will refuse to start another); before
    /// an incoming migration on shared storage it is the source VM, which is expected.
    pub locks: Vec<LockHolder>,
}

impl fmt::Display for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (nvram, template) = (self.nvram.display(), self.template.display());
        let size = self.size;
        match self.outcome {
            Outcome::Created => write!(
                f,
                "created {nvram} from {template} ({size} bytes, layout {})",
                self.layout
            ),
            Outcome::CreatedForIncoming => write!(
                f,
                "created {nvram} for an incoming migration: {size} zero bytes, the size of \
                 {template}; QEMU writes the migrated contents when the VM first runs"
            ),
            Outcome::Verified => write!(
                f,
                "{nvram} exists and was left as it is: size ({size} bytes) and layout ({}) \
                 match {template}",
                self.layout
            ),
            Outcome::VerifiedSize => write!(
                f,
                "{nvram} exists and was left as it is for the incoming migration: its size \
                 ({size} bytes) matches {template}"
            ),
        }
    }
}

/// Why a varstore could not be prepared or reset.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The template could not be read.
    #[error("cannot use the template")]
    Template(#[source] FileError),
    /// The template is neither a variable store nor blank.
    #[error("{path}: the template is not a variable store: {reason}")]
    TemplateNotVarstore {
        /// The template.
        path: PathBuf,
        /// The parse error.
        #[source]
        reason: ParseError,
    },
    /// A file operation on the varstore failed (names the path and reason).
    #[error(transparent)]
    File(#[from] FileError),
    /// The existing varstore has the wrong size.
    #[error(
        "{path}: size mismatch: the file has {size} bytes ({size:#x}) but the template {} has \
         {template_size} bytes ({template_size:#x}); {consequence}",
        template.display()
    )]
    SizeMismatch {
        /// The varstore.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The template.
        template: PathBuf,
        /// The template's size.
        template_size: u64,
        /// What would go wrong with this file.
        consequence: &'static str,
    },
    /// The existing varstore has the template's size but another layout.
    #[error(
        "{path}: layout mismatch: the file holds {found} but the template {} is {expected}; \
         the firmware would not use it as its store",
        template.display()
    )]
    LayoutMismatch {
        /// The varstore.
        path: PathBuf,
        /// What the file holds.
        found: String,
        /// What the template holds.
        expected: String,
        /// The template.
        template: PathBuf,
    },
    /// The existing varstore holds no variable store although the template does.
    #[error(
        "{path}: not a variable store ({reason}) although the template {} is one; OVMF does \
         not boot from such a store (a zero-filled file is what preparing for an incoming \
         migration leaves when the migration did not happen)",
        template.display()
    )]
    NotVarstore {
        /// The varstore.
        path: PathBuf,
        /// Why it is not one.
        #[source]
        reason: NotVarstoreReason,
        /// The template.
        template: PathBuf,
    },
    /// The template is not in the format it was expected in, or cannot be unwrapped.
    #[error("{path}: {source}")]
    TemplateFormat {
        /// The template.
        path: PathBuf,
        /// Why.
        #[source]
        source: ContainerError,
    },
    /// A store could not be written in the format asked for.
    #[error("{path}: cannot write the store as {format}: {source}")]
    Wrap {
        /// The varstore.
        path: PathBuf,
        /// The format asked for.
        format: Format,
        /// Why.
        #[source]
        source: ContainerError,
    },
    /// The existing varstore is kept in another format than the one the VM opens it as.
    #[error(
        "{path}: format mismatch: the file is a {found} store but {expected} is expected          (the format of the template {}, or the one asked for); QEMU would open it as          {expected} and fail",
        template.display()
    )]
    FormatMismatch {
        /// The varstore.
        path: PathBuf,
        /// Its format.
        found: Format,
        /// The expected format.
        expected: Format,
        /// The template.
        template: PathBuf,
    },
    /// An incoming migration has nothing to prepare for a JSON store: QEMU's uefi-vars
    /// device carries the variables in its migration state, not in a flash image.
    #[error("{path}: a JSON store needs no preparation for an incoming migration (QEMU's uefi-vars device migrates its variables itself)")]
    IncomingJson {
        /// The varstore.
        path: PathBuf,
    },
    /// No free name for the backup.
    #[error("{path}: cannot pick a backup name: {}.bak and .bak.1 to .bak.{MAX_BACKUPS} all exist; remove old backups", path.display())]
    NoBackupName {
        /// The varstore.
        path: PathBuf,
    },
}

impl PrepareError {
    /// Whether the error is a verification failure of an existing varstore (size, layout,
    /// contents), as opposed to a failure to read or write something.
    pub fn is_mismatch(&self) -> bool {
        matches!(
            self,
            Self::SizeMismatch { .. }
                | Self::LayoutMismatch { .. }
                | Self::NotVarstore { .. }
                | Self::FormatMismatch { .. }
        )
    }
}

/// Why an existing varstore is not one ([`PrepareError::NotVarstore`]).
#[derive(Debug, thiserror::Error)]
pub enum NotVarstoreReason {
    /// All 0x00 or all 0xFF: no firmware volume at all.
    #[error("it is blank")]
    Blank,
    /// Something else that is no firmware volume or no variable store.
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// The shape of a varstore that must agree between a VM's file and its template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// Blank (all 0x00 or all 0xFF): the firmware formats it (ArmVirt does; OVMF does not).
    Unformatted,
    /// A formatted store: what the firmware checks before using it.
    Store {
        fv_length: u64,
        store_size: u32,
        format: StoreFormat,
        layout: Option<&'static str>,
    },
}

impl Shape {
    fn of(image: &[u8]) -> Result<Self, ParseError> {
        match Varstore::parse(image) {
            Ok(store) => Ok(Shape::Store {
                fv_length: store.fv().length,
                store_size: store.store().size,
                format: store.store().format,
                layout: store.layout().map(|l| l.name),
            }),
            Err(e) if e.kind() == ErrorKind::Unformatted => Ok(Shape::Unformatted),
            Err(e) => Err(e),
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Unformatted => f.write_str("unformatted"),
            Shape::Store {
                fv_length,
                store_size,
                format,
                layout,
            } => {
                if let Some(name) = layout {
                    write!(f, "{name} ")?;
                }
                write!(
                    f,
                    "(FvLength {fv_length:#x}, store size {store_size:#x}, {format:?} store)"
                )
            }
        }
    }
}

/// A template read into memory: a raw image or a qcow2 image (recognised by content).
#[derive(Debug, Clone)]
pub struct Template {
    path: PathBuf,
    /// The file as it is, copied as it is for a VM store of the same format.
    file: Vec<u8>,
    format: Format,
    image: Vec<u8>,
    shape: Shape,
}

impl Template {
    /// Reads and checks a template: it must be a variable store or blank, raw or qcow2.
    pub fn load(path: &Path) -> Result<Self, PrepareError> {
        Self::load_as(path, None)
    }

    /// [`Template::load`], requiring the template to be in `format` when given (a firmware
    /// descriptor's `nvram-template.format`, `--template-format`).
    pub fn load_as(path: &Path, format: Option<Format>) -> Result<Self, PrepareError> {
        let file = files::read_image(path).map_err(PrepareError::Template)?;
        let opened = container::StoreFile::from_bytes(file.clone(), format).map_err(|source| {
            PrepareError::TemplateFormat {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let format = opened.format();
        if !format.is_flash() {
            // A JSON or AWS "template" has no size or layout a flash could be checked against.
            return Err(PrepareError::TemplateFormat {
                path: path.to_path_buf(),
                source: ContainerError::NotThatFormat {
                    found: format,
                    expected: Format::Raw,
                },
            });
        }
        let image = opened.into_image();
        let shape = Shape::of(&image).map_err(|reason| PrepareError::TemplateNotVarstore {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(Template {
            path: path.to_path_buf(),
            file,
            format,
            image,
            shape,
        })
    }

    /// The template's own format (raw or qcow2).
    pub fn format(&self) -> Format {
        self.format
    }

    /// The content of a new VM store in `format`: the template file itself when the formats
    /// agree (a qcow2 template keeps its cluster size and header), else its image wrapped.
    pub fn instance(&self, format: Format) -> Result<Vec<u8>, ContainerError> {
        if format == self.format {
            Ok(self.file.clone())
        } else {
            container::wrap(&self.image, format)
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its flash image (unwrapped from qcow2).
    pub fn image(&self) -> &[u8] {
        &self.image
    }

    /// The size of its flash image in bytes (for qcow2 the virtual size).
    pub fn size(&self) -> u64 {
        self.image.len() as u64
    }

    /// Its layout in words, as [`Prepared::layout`].
    pub fn layout(&self) -> String {
        match &self.shape {
            Shape::Store {
                layout: Some(name), ..
            } => (*name).to_string(),
            other => other.to_string(),
        }
    }

    /// Checks that `image` (the varstore at `path`) could serve where this template is
    /// expected: same size, and the same store layout unless the template is blank.
    pub fn verify(&self, path: &Path, image: &[u8]) -> Result<(), PrepareError> {
        self.verify_size(
            path,
            image.len() as u64,
            "the firmware would not find its store where it expects it",
        )?;
        let Shape::Store { .. } = &self.shape else {
            // A blank template (Debian's AAVMF_VARS.fd): the firmware formats whatever is
            // there, so any content of the right size will do.
            return Ok(());
        };
        let found = Shape::of(image).map_err(|e| PrepareError::NotVarstore {
            path: path.to_path_buf(),
            reason: e.into(),
            template: self.path.clone(),
        })?;
        if found == Shape::Unformatted {
            return Err(PrepareError::NotVarstore {
                path: path.to_path_buf(),
                reason: NotVarstoreReason::Blank,
                template: self.path.clone(),
            });
        }
        if found != self.shape {
            return Err(PrepareError::LayoutMismatch {
                path: path.to_path_buf(),
                found: found.to_string(),
                expected: self.shape.to_string(),
                template: self.path.clone(),
            });
        }
        Ok(())
    }

    fn verify_size(
        &self,
        path: &Path,
        size: u64,
        consequence: &'static str,
    ) -> Result<(), PrepareError> {
        if size == self.size() {
            return Ok(());
        }
        Err(PrepareError::SizeMismatch {
            path: path.to_path_buf(),
            size,
            template: self.path.clone(),
            template_size: self.size(),
            consequence,
        })
    }
}

/// Prepares the varstore at `nvram` from the template at `template` before QEMU starts:
/// see the module documentation for the four cases. Never changes an existing file.
pub fn prepare(nvram: &Path, template: &Path, incoming: bool) -> Result<Prepared, PrepareError> {
    prepare_with(nvram, &Template::load(template)?, incoming)
}

/// [`prepare`] with a template already loaded; the store is kept in the template's format.
pub fn prepare_with(
    nvram: &Path,
    template: &Template,
    incoming: bool,
) -> Result<Prepared, PrepareError> {
    prepare_as(nvram, template, incoming, None)
}

/// [`prepare_with`] for a store kept in `format` (`None`: the template's). A new store is
/// the template converted to it; an existing one must be in it.
///
/// ```
/// use nvram::container::Format;
/// let dir = tempfile::tempdir().unwrap();
/// let template = dir.path().join("OVMF_VARS_4M.fd");
/// std::fs::write(&template, varstore::Layout::by_name("ovmf-4m").unwrap().create()).unwrap();
/// let template = nvram::prepare::Template::load(&template).unwrap();
/// let vars = dir.path().join("vm1_VARS.qcow2");
/// let made = nvram::prepare::prepare_as(&vars, &template, false, Some(Format::Qcow2)).unwrap();
/// assert_eq!(made.format, Format::Qcow2);
/// assert!(qcow2::is_qcow2(&std::fs::read(&vars).unwrap()));
/// ```
pub fn prepare_as(
    nvram: &Path,
    template: &Template,
    incoming: bool,
    format: Option<Format>,
) -> Result<Prepared, PrepareError> {
    let format = format.unwrap_or(template.format);
    let report = |outcome, locks| Prepared {
        nvram: nvram.to_path_buf(),
        template: template.path.clone(),
        outcome,
        size: template.size(),
        format,
        layout: template.layout(),
        locks,
    };
    if incoming && format == Format::Json {
        return Err(PrepareError::IncomingJson {
            path: nvram.to_path_buf(),
        });
    }
    let wrap = |image: &[u8]| {
        container::wrap(image, format).map_err(|source| PrepareError::Wrap {
            path: nvram.to_path_buf(),
            format,
            source,
        })
    };
    let existing = match fs::symlink_metadata(nvram) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return if incoming {
                // The contents do not matter (the migration overwrites them); see the
                // module documentation for why zeroes rather than a template copy.
                files::create_new(nvram, &wrap(&vec![0u8; template.image.len()])?)?;
                Ok(report(Outcome::CreatedForIncoming, Vec::new()))
            } else {
                let content = template
                    .instance(format)
                    .map_err(|source| PrepareError::Wrap {
                        path: nvram.to_path_buf(),
                        format,
                        source,
                    })?;
                files::create_new(nvram, &content)?;
                Ok(report(Outcome::Created, Vec::new()))
            };
        }
        Err(e) => {
            return Err(FileError::Io {
                path: nvram.to_path_buf(),
                action: "cannot stat",
                source: e,
            }
            .into())
        }
    };
    if existing.file_type().is_symlink() {
        // Refused even though nothing is written: QEMU would follow it into another file.
        return Err(FileError::Symlink {
            path: nvram.to_path_buf(),
        }
        .into());
    }
    let locks = files::lock_holders(nvram);
    if incoming && format == Format::Raw {
        let size = file_size(nvram)?;
        template.verify_size(
            nvram,
            size,
            "QEMU would start but fail the migration with `Size mismatch`",
        )?;
        return Ok(report(Outcome::VerifiedSize, locks));
    }
    let file = files::read_image(nvram)?;
    let found = Format::detect(&file);
    if found != format && !(format == Format::Json && file.iter().all(u8::is_ascii_whitespace)) {
        return Err(PrepareError::FormatMismatch {
            path: nvram.to_path_buf(),
            found,
            expected: format,
            template: template.path.clone(),
        });
    }
    let store = container::StoreFile::from_bytes(file, Some(format)).map_err(|source| {
        FileError::Container {
            path: nvram.to_path_buf(),
            source,
        }
    })?;
    if incoming {
        template.verify_size(
            nvram,
            store.image().len() as u64,
            "QEMU would start but fail the migration with `Size mismatch`",
        )?;
        return Ok(report(Outcome::VerifiedSize, locks));
    }
    if format.is_flash() {
        // A JSON or AWS store has no flash size or layout; reading it was the check.
        template.verify(nvram, store.image())?;
    }
    Ok(report(Outcome::Verified, locks))
}

/// Size of a regular file or block device (whose `st_size` is 0).
/// Never blocks: anything else (a FIFO…) is refused at once.
fn file_size(path: &Path) -> Result<u64, FileError> {
    Ok(safefile::Input::open(path, safefile::Accept::RegularFileOrBlockDevice)?.size()?)
}

/// Most backups kept next to one varstore (`PATH.bak`, `PATH.bak.1` … `PATH.bak.N`).
pub const MAX_BACKUPS: u32 = 99;

/// The report of a successful [`reset`].
#[derive(Debug, Clone, Serialize)]
pub struct Reset {
    /// The VM's varstore.
    pub nvram: PathBuf,
    /// The template it now equals.
    pub template: PathBuf,
    /// The copy of the previous contents, unless there was no file or no backup was asked.
    pub backup: Option<PathBuf>,
    /// The new size in bytes (of the flash image).
    pub size: u64,
    /// How the store is now kept.
    pub format: Format,
    /// The template's layout.
    pub layout: String,
}

impl fmt::Display for Reset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "reset {} from {} ({} bytes, layout {})",
            self.nvram.display(),
            self.template.display(),
            self.size,
            self.layout
        )?;
        if let Some(backup) = &self.backup {
            write!(f, "; the previous contents are in {}", backup.display())?;
        }
        Ok(())
    }
}

/// Re-instantiates the varstore at `nvram` from `template`, atomically: a reader or a crash
/// sees the old file or the new one. With `backup`, the old contents are first saved to a new
/// owner-only file `NVRAM.bak` (or `.bak.1`, `.bak.2`, … if taken). Refuses a symlink, a
/// non-regular file and a file locked by a running VM (QEMU or an nvram pflash device); the
/// locks are held until the new file is in place. An absent varstore is simply created.
pub fn reset(nvram: &Path, template: &Template, backup: bool) -> Result<Reset, PrepareError> {
    reset_as(nvram, template, backup, None)
}

/// [`reset`] writing the store in `format`; `None` keeps the format the existing file is in
/// (by its content), or the template's when there is no file.
pub fn reset_as(
    nvram: &Path,
    template: &Template,
    backup: bool,
    format: Option<Format>,
) -> Result<Reset, PrepareError> {
    let mut report = Reset {
        nvram: nvram.to_path_buf(),
        template: template.path.clone(),
        backup: None,
        size: template.size(),
        format: format.unwrap_or(template.format),
        layout: template.layout(),
    };
    let content_in = |format: Format| {
        template
            .instance(format)
            .map_err(|source| PrepareError::Wrap {
                path: nvram.to_path_buf(),
                format,
                source,
            })
    };
    if fs::symlink_metadata(nvram).is_err_and(|e| e.kind() == io::ErrorKind::NotFound) {
        files::create_new(nvram, &content_in(report.format)?)?;
        return Ok(report);
    }
    let mut locked = LockedFile::open(nvram)?;
    let old = locked.read_all()?;
    report.format = format.unwrap_or_else(|| match Format::detect(&old) {
        // An empty or damaged file says nothing: the template's format.
        Format::Raw if old.len() as u64 != template.size() => template.format,
        found => found,
    });
    let content = content_in(report.format)?;
    if backup {
        report.backup = Some(write_backup(nvram, &old)?);
    }
    locked.replace(&content)?;
    Ok(report)
}

/// Saves `content` to the first free name of `PATH.bak`, `PATH.bak.1`, … exclusively, so an
/// older backup is never overwritten.
fn write_backup(nvram: &Path, content: &[u8]) -> Result<PathBuf, PrepareError> {
    let base = nvram.as_os_str().to_owned();
    for n in 0..=MAX_BACKUPS {
        let mut name = base.clone();
        name.push(if n == 0 {
            ".bak".to_string()
        } else {
            format!(".bak.{n}")
        });
        let path = PathBuf::from(name);
        match files::create_new(&path, content) {
            Ok(()) => return Ok(path),
            Err(FileError::Exists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(PrepareError::NoBackupName {
        path: nvram.to_path_buf(),
    })
}
