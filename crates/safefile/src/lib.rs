//! Creating and replacing files so that a reader, or a crash, sees the old file or the new
//! one and never a half-written one. Shared by the management tool (`nvram`) and the flash
//! device's migration commit (`pflash`), which both replace varstore files.
//!
//! - The content goes to a new file in the same directory, is fsync'ed, then takes the name
//!   (`linkat` or `rename`), and the directory is fsync'ed. The new file is unnamed
//!   (`O_TMPFILE`) while it is written where the filesystem allows, so a killed writer leaves
//!   nothing behind; elsewhere it is `.NAME.nvram-<16 random hex digits>.tmp`, created
//!   exclusively, owner-only, never through a symlink, and removed on every error.
//!   [`leftovers`] and [`remove_leftovers`] find and remove what a killed writer left.
//! - Only a failure of that last directory fsync leaves the new content in place:
//!   [`SafeFileError::NotDurable`], whose source is a [`DirectorySyncError`]. Every other
//!   error leaves the path as it was.
//! - [`create_new`] never replaces anything, not even a dangling symlink, and stays exclusive
//!   against a racing creator (`RENAME_NOREPLACE`). The new file is owner-only.
//! - [`replace`] refuses a symlink or a non-regular file, and keeps the replaced file's
//!   permission bits *and owner*: a varstore owned by the VMM's user (libvirt-qemu, say) that
//!   root edits must stay readable by that user, so a replacement whose owner cannot be kept
//!   is refused rather than written.
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("vm_VARS.fd");
//! safefile::create_new(&path, b"first")?;
//! assert!(safefile::create_new(&path, b"again").is_err());
//! safefile::replace(&path, b"second")?;
//! assert_eq!(std::fs::read(&path)?, b"second");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod input;
pub use input::{read_bounded, read_input, Accept, FileKind, Input, InputError};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags, RenameFlags, CWD};
use rustix::io::Errno;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a file could not be written; the path is the one asked for. Nothing was changed at
/// that path, except for [`SafeFileError::NotDurable`]: then the new file is in place but may
/// not survive a host crash.
#[derive(Debug, thiserror::Error)]
pub enum SafeFileError {
    /// [`create_new`]: something is already there.
    #[error("{path}: already exists")]
    Exists {
        /// The path.
        path: PathBuf,
    },
    /// The final path component is a symlink.
    #[error("{path}: is a symbolic link; refusing to write through it")]
    Symlink {
        /// The path.
        path: PathBuf,
    },
    /// Not a regular file (a directory, a device, a socket…).
    #[error("{path}: not a regular file")]
    NotRegular {
        /// The path.
        path: PathBuf,
    },
    /// The replacement could not be given the replaced file's owner (only root can give a
    /// file away), and writing it would lock the owner out.
    #[error(
        "{path}: cannot keep its owner {uid}:{gid} for the replacement ({source}); run as \
         that user or as root"
    )]
    Owner {
        /// The path.
        path: PathBuf,
        /// The replaced file's owner.
        uid: u32,
        /// The replaced file's group.
        gid: u32,
        /// The error of `fchown`.
        #[source]
        source: io::Error,
    },
    /// An I/O error.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The new file took the name, but the fsync of the directory that makes that survive a
    /// host crash failed: `path` holds the new content now, and after a crash may hold the
    /// old one again. The only error after which `path` is not as it was.
    #[error("{path}: the new content is in place but may not be durable: {source}")]
    NotDurable {
        /// The path.
        path: PathBuf,
        /// The failed fsync.
        #[source]
        source: DirectorySyncError,
    },
}

impl SafeFileError {
    /// Whether the path holds the new content although the call failed: true only for
    /// [`SafeFileError::NotDurable`].
    pub fn is_in_place(&self) -> bool {
        matches!(self, Self::NotDurable { .. })
    }
}

/// The source of [`SafeFileError::NotDurable`]: the directory's fsync after the new file took
/// the name. A type of its own so that a caller can find it in an error's source chain
/// however the error was wrapped (e.g. to choose an exit status).
#[derive(Debug, thiserror::Error)]
#[error("fsync of the directory failed: {error}")]
pub struct DirectorySyncError {
    /// The directory.
    pub dir: PathBuf,
    /// The error of `fsync`.
    pub error: io::Error,
}

fn io_error<'p>(
    path: &'p Path,
    action: &'static str,
) -> impl FnOnce(io::Error) -> SafeFileError + 'p {
    move |source| SafeFileError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// Writes `content` to a new file at `path`: exclusively (fails if anything, even a dangling
/// symlink, is there), owner-only, atomically. Returns the new file, open for reading and
/// writing.
///
/// # Errors
///
/// [`SafeFileError::Exists`] if the name is taken, [`SafeFileError::NotDurable`] if only the
/// final directory fsync failed, else the I/O error, naming `path`.
pub fn create_new(path: &Path, content: &[u8]) -> Result<File, SafeFileError> {
    let target = Target::of(path)?;
    if fs::symlink_metadata(path).is_ok() {
        return Err(SafeFileError::Exists {
            path: path.to_path_buf(),
        });
    }
    let temp = write_temp(&target, content, 0o600, None, |_| Ok(()))?;
    let exists = |e: Errno, action| {
        if e == Errno::EXIST {
            SafeFileError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            io_error(path, action)(e.into())
        }
    };
    match &temp.name {
        // linkat never replaces anything, not even a dangling symlink.
        None => link_unnamed(&temp.file, &target.dir, target.name)
            .map_err(|e| exists(e, "cannot link the new file into place"))?,
        Some(name) => {
            rustix::fs::renameat_with(
                &target.dir,
                name,
                &target.dir,
                target.name,
                RenameFlags::NOREPLACE,
            )
            .map_err(|e| {
                let _ = rustix::fs::unlinkat(&target.dir, name, AtFlags::empty());
                exists(e, "cannot rename the temporary file into place")
            })?;
        }
    }
    target.sync()?;
    Ok(temp.file)
}

/// Replaces the regular file at `path` (or creates it, owner-only) with `content`,
/// atomically, keeping the permission bits and owner of the file it replaces. Returns the
/// new file, open for reading and writing.
///
/// # Errors
///
/// A symlink or non-regular file at `path`, an owner that cannot be kept, or the I/O error;
/// `path` is then untouched. [`SafeFileError::NotDurable`] if only the final directory fsync
/// failed: `path` then holds the new content.
pub fn replace(path: &Path, content: &[u8]) -> Result<File, SafeFileError> {
    replace_with(path, content, |_| Ok(()))
}

/// [`replace`], running `before_rename` on the complete, fsync'ed new file before it takes
/// the name: e.g. to lock it, so that it is never visible unlocked. (The new file is already
/// `flock`ed exclusively through the returned descriptor, see [`leftovers`]; `before_rename`
/// may change that lock.)
///
/// # Errors
///
/// As [`replace`]; an error of `before_rename` is reported as `action` "cannot prepare the
/// new file" and leaves `path` untouched.
pub fn replace_with(
    path: &Path,
    content: &[u8],
    before_rename: impl FnOnce(&File) -> io::Result<()>,
) -> Result<File, SafeFileError> {
    let target = Target::of(path)?;
    let (mode, owner) = match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(SafeFileError::Symlink {
                path: path.to_path_buf(),
            })
        }
        Ok(meta) if !meta.is_file() => {
            return Err(SafeFileError::NotRegular {
                path: path.to_path_buf(),
            })
        }
        Ok(meta) => (meta.mode() & 0o7777, Some((meta.uid(), meta.gid()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (0o600, None),
        Err(e) => return Err(io_error(path, "cannot stat")(e)),
    };
    let temp = write_temp(&target, content, mode, owner, before_rename)?;
    // rename(2) needs a name: an unnamed file gets one only now, after the long part (write
    // and fsync), so a process killed at any other moment leaves nothing behind.
    let name = match temp.name {
        Some(name) => name,
        None => link_temp(&temp.file, &target)?,
    };
    rustix::fs::renameat(&target.dir, &name, &target.dir, target.name).map_err(|e| {
        let _ = rustix::fs::unlinkat(&target.dir, &name, AtFlags::empty());
        io_error(path, "cannot rename the temporary file into place")(e.into())
    })?;
    target.sync()?;
    Ok(temp.file)
}

/// fsyncs the directory holding `path`, which makes a rename in it durable.
///
/// # Errors
///
/// The I/O error, naming the directory.
pub fn sync_parent(path: &Path) -> Result<(), SafeFileError> {
    let dir = parent_of(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir, "cannot fsync the directory"))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The file to write: its directory, opened once, so that the temporary file, the rename and
/// the fsync all happen in the same directory even if a path component is swapped meanwhile.
struct Target<'a> {
    path: &'a Path,
    dir_path: &'a Path,
    name: &'a OsStr,
    dir: OwnedFd,
}

impl<'a> Target<'a> {
    fn of(path: &'a Path) -> Result<Self, SafeFileError> {
        // `file_name` also answers for `dir/.` and `dir/`, which name the directory.
        let name = path
            .file_name()
            .filter(|n| path.as_os_str().as_bytes().ends_with(n.as_bytes()))
            .ok_or_else(|| SafeFileError::NotRegular {
                path: path.to_path_buf(),
            })?;
        let dir_path = parent_of(path);
        let dir = rustix::fs::open(
            dir_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_error(path, "cannot open its directory")(e.into()))?;
        Ok(Self {
            path,
            dir_path,
            name,
            dir,
        })
    }

    /// The fsync after the new file took the name: its failure is [`SafeFileError::NotDurable`].
    fn sync(&self) -> Result<(), SafeFileError> {
        rustix::fs::fsync(&self.dir).map_err(|e| SafeFileError::NotDurable {
            path: self.path.to_path_buf(),
            source: DirectorySyncError {
                dir: self.dir_path.to_path_buf(),
                error: e.into(),
            },
        })
    }
}

/// A complete, fsync'ed new file: unnamed (`O_TMPFILE`) where the filesystem allows, else
/// under a random temporary name.
struct Temp {
    file: File,
    name: Option<OsString>,
}

/// How often a random temporary name is drawn again when taken.
const NAME_TRIES: usize = 16;

/// What marks a temporary file of this crate: `.NAME.nvram-0123456789abcdef.tmp` (16
/// random hex digits) for a file `NAME`.
pub const TEMP_MARK: &str = "nvram";

/// A new random temporary name for the file `name`.
fn temp_name(name: &OsStr) -> io::Result<OsString> {
    let mut random = [0u8; 8];
    let filled = rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty())
        .map_err(io::Error::from)
        .and_then(|n| {
            if n == random.len() {
                Ok(())
            } else {
                File::open("/dev/urandom")?.read_exact(&mut random)
            }
        });
    if filled.is_err() {
        File::open("/dev/urandom")?.read_exact(&mut random)?;
    }
    let mut bytes = Vec::with_capacity(name.len() + 28);
    bytes.push(b'.');
    bytes.extend_from_slice(name.as_bytes());
    bytes.extend_from_slice(
        format!(".{TEMP_MARK}-{:016x}.tmp", u64::from_ne_bytes(random)).as_bytes(),
    );
    Ok(OsString::from_vec(bytes))
}

/// Whether `candidate` is the name of a temporary file for the file `name`: this crate's
/// `.NAME.nvram-<16 hex digits>.tmp`, or `.NAME.<pid>-<n>.tmp` of its earlier versions.
///
/// ```
/// use std::ffi::OsStr;
/// let name = OsStr::new("vm_VARS.fd");
/// assert!(safefile::is_temp_name(name, OsStr::new(".vm_VARS.fd.nvram-0123456789abcdef.tmp")));
/// assert!(safefile::is_temp_name(name, OsStr::new(".vm_VARS.fd.4242-0.tmp")));
/// assert!(!safefile::is_temp_name(name, OsStr::new(".vm_VARS.fd.bak.nvram-0123456789abcdef.tmp")));
/// assert!(!safefile::is_temp_name(name, OsStr::new("vm_VARS.fd")));
/// ```
pub fn is_temp_name(name: &OsStr, candidate: &OsStr) -> bool {
    let Some(rest) = candidate
        .as_bytes()
        .strip_prefix(b".")
        .and_then(|r| r.strip_prefix(name.as_bytes()))
        .and_then(|r| r.strip_prefix(b"."))
        .and_then(|r| r.strip_suffix(b".tmp"))
    else {
        return false;
    };
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    if let Some(hex) = rest
        .strip_prefix(TEMP_MARK.as_bytes())
        .and_then(|r| r.strip_prefix(b"-"))
    {
        return hex.len() == 16 && hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    }
    match rest.iter().position(|b| *b == b'-') {
        Some(dash) => digits(&rest[..dash]) && digits(&rest[dash + 1..]),
        None => false,
    }
}

#[cfg(test)]
thread_local! {
    /// Tests of the named-temporary path on filesystems that have `O_TMPFILE`.
    static NO_TMPFILE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether an `O_TMPFILE` file can be given a name: through `/proc/self/fd`, which needs no
/// privilege (`AT_EMPTY_PATH` does).
fn tmpfile_usable() -> bool {
    #[cfg(test)]
    if NO_TMPFILE.with(std::cell::Cell::get) {
        return false;
    }
    static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USABLE.get_or_init(|| Path::new("/proc/self/fd").is_dir())
}

fn proc_fd(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Gives the unnamed `file` the name `name` in `dir`; `EEXIST` if it is taken.
fn link_unnamed(file: &File, dir: &OwnedFd, name: &OsStr) -> Result<(), Errno> {
    rustix::fs::linkat(CWD, proc_fd(file), dir, name, AtFlags::SYMLINK_FOLLOW)
}

/// Gives the unnamed `file` a random temporary name next to the target, for the rename.
fn link_temp(file: &File, target: &Target) -> Result<OsString, SafeFileError> {
    let failed = io_error(target.path, "cannot link the temporary file");
    for _ in 0..NAME_TRIES {
        let name = temp_name(target.name).map_err(io_error(target.path, "no random name"))?;
        match link_unnamed(file, &target.dir, &name) {
            Ok(()) => return Ok(name),
            Err(e) if e == Errno::EXIST => continue,
            Err(e) => return Err(failed(e.into())),
        }
    }
    Err(failed(io::ErrorKind::AlreadyExists.into()))
}

/// A new, empty, owner-only file in the target's directory.
fn create_temp(target: &Target) -> Result<Temp, SafeFileError> {
    let failed =
        |e: Errno| io_error(target.path, "cannot create a temporary file next to it")(e.into());
    if tmpfile_usable() {
        match rustix::fs::openat(
            &target.dir,
            ".",
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => {
                return Ok(Temp {
                    file: File::from(fd),
                    name: None,
                })
            }
            // No O_TMPFILE in this filesystem (or kernel): a named file then.
            Err(e) if e == Errno::OPNOTSUPP || e == Errno::ISDIR || e == Errno::INVAL => {}
            Err(e) => return Err(failed(e)),
        }
    }
    for _ in 0..NAME_TRIES {
        let name = temp_name(target.name).map_err(io_error(target.path, "no random name"))?;
        match rustix::fs::openat(
            &target.dir,
            &name,
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => {
                return Ok(Temp {
                    file: File::from(fd),
                    name: Some(name),
                })
            }
            Err(e) if e == Errno::EXIST => continue,
            Err(e) => return Err(failed(e)),
        }
    }
    Err(failed(Errno::EXIST))
}

/// A complete, fsync'ed new file for the target with `mode` and `owner`; a named one is
/// removed again on any error.
fn write_temp(
    target: &Target,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
    before_rename: impl FnOnce(&File) -> io::Result<()>,
) -> Result<Temp, SafeFileError> {
    let path = target.path;
    let mut temp = create_temp(target)?;
    let file = &mut temp.file;
    let result = (|| {
        // Marks it as being written for `remove_leftovers` (best effort: some network
        // filesystems have no flock).
        let _ = rustix::fs::flock(&*file, FlockOperation::NonBlockingLockExclusive);
        if let Some((uid, gid)) = owner {
            let created = file
                .metadata()
                .map_err(io_error(path, "cannot stat the temporary file"))?;
            if (created.uid(), created.gid()) != (uid, gid) {
                std::os::unix::fs::fchown(&*file, Some(uid), Some(gid)).map_err(|source| {
                    SafeFileError::Owner {
                        path: path.to_path_buf(),
                        uid,
                        gid,
                        source,
                    }
                })?;
            }
        }
        // After fchown, which clears set-id bits.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_error(
                path,
                "cannot set the temporary file's permissions",
            ))?;
        file.write_all(content)
            .and_then(|()| file.sync_all())
            .map_err(io_error(path, "cannot write the temporary file"))?;
        before_rename(file).map_err(io_error(path, "cannot prepare the new file"))
    })();
    match result {
        Ok(()) => Ok(temp),
        Err(e) => {
            if let Some(name) = &temp.name {
                let _ = rustix::fs::unlinkat(&target.dir, name, AtFlags::empty());
            }
            Err(e)
        }
    }
}

/// A temporary file found next to a file ([`leftovers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Its path (the target's directory joined with its name).
    pub path: PathBuf,
    /// Its size in bytes.
    pub len: u64,
    /// A writer still holds it (it is being written now, not left over).
    pub in_use: bool,
}

/// What [`remove_leftovers`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removal {
    /// Removed.
    pub removed: Vec<Leftover>,
    /// Left alone because a writer holds them.
    pub in_use: Vec<Leftover>,
}

/// The temporary files of `path` in its directory ([`is_temp_name`]): regular files only,
/// never through a symlink. A process killed while writing leaves one behind when the
/// filesystem has no `O_TMPFILE` (or in the instant between naming and renaming it); a
/// writer holds an exclusive `flock` on its temporary file, so one being written now is told
/// apart ([`Leftover::in_use`]).
///
/// # Errors
///
/// The directory cannot be opened or listed.
pub fn leftovers(path: &Path) -> Result<Vec<Leftover>, SafeFileError> {
    let target = Target::of(path)?;
    let mut found = Vec::new();
    for_each_temp(&target, |name, file, len| {
        let in_use = rustix::fs::flock(file, FlockOperation::NonBlockingLockShared).is_err();
        found.push(Leftover {
            path: target.dir_path.join(name),
            len,
            in_use,
        });
        Ok(())
    })?;
    Ok(found)
}

/// Removes the temporary files of `path` ([`leftovers`]) that no writer holds. Only regular
/// files with a temporary name of `path` are touched, never through a symlink; a file is
/// locked, checked to still have that name, and unlinked. A caller that can should also hold
/// the lock of `path` itself (as every writer of it does), so that no write of it can be
/// under way.
///
/// # Errors
///
/// The directory cannot be listed or a file cannot be removed (naming it); files removed
/// before stay removed.
pub fn remove_leftovers(path: &Path) -> Result<Removal, SafeFileError> {
    let target = Target::of(path)?;
    let mut removal = Removal::default();
    for_each_temp(&target, |name, file, len| {
        let leftover = Leftover {
            path: target.dir_path.join(name),
            len,
            in_use: false,
        };
        if rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive).is_err() {
            removal.in_use.push(Leftover {
                in_use: true,
                ..leftover
            });
            return Ok(());
        }
        let ours = rustix::fs::fstat(file);
        let now = rustix::fs::statat(&target.dir, name, AtFlags::SYMLINK_NOFOLLOW);
        let same =
            matches!((ours, now), (Ok(a), Ok(b)) if a.st_dev == b.st_dev && a.st_ino == b.st_ino);
        if same {
            rustix::fs::unlinkat(&target.dir, name, AtFlags::empty()).map_err(|e| {
                io_error(&leftover.path, "cannot remove the temporary file")(e.into())
            })?;
            removal.removed.push(leftover);
        }
        Ok(())
    })?;
    Ok(removal)
}

/// Calls `each` with the name, open file and size of every regular file with a temporary
/// name of the target, in name order. Symlinks, directories and other special files are
/// skipped: nothing this crate writes.
fn for_each_temp(
    target: &Target,
    mut each: impl FnMut(&OsStr, &File, u64) -> Result<(), SafeFileError>,
) -> Result<(), SafeFileError> {
    let listing = io_error(target.path, "cannot list its directory");
    let mut names = Vec::new();
    for entry in fs::read_dir(target.dir_path).map_err(listing)? {
        let entry = entry.map_err(io_error(target.path, "cannot list its directory"))?;
        if is_temp_name(target.name, &entry.file_name()) {
            names.push(entry.file_name());
        }
    }
    names.sort();
    for name in names {
        let Ok(fd) = rustix::fs::openat(
            &target.dir,
            &name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        ) else {
            // A symlink (ELOOP), or gone meanwhile.
            continue;
        };
        let file = File::from(fd);
        match file.metadata() {
            Ok(meta) if meta.is_file() => each(&name, &file, meta.len())?,
            _ => continue,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
