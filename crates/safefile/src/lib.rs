//! Creating and replacing files so that a reader, or a crash, sees the old file or the new
//! one and never a half-written one. Shared by the management tool (`nvram`) and the flash
//! device's migration commit (`pflash`), which both replace varstore files.
//!
//! - The content goes to a temporary file in the same directory (created exclusively,
//!   owner-only, never through a symlink), is fsync'ed, then renamed over the name, and the
//!   directory is fsync'ed.
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

mod input;
pub use input::{read_bounded, read_input, Accept, FileKind, Input, InputError};

use rustix::fs::{renameat_with, RenameFlags, CWD};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Why a file could not be written; the path is the one asked for. Nothing was changed at
/// that path unless the error says the directory could not be fsync'ed (then the new file is
/// in place but may not survive a host crash).
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
/// [`SafeFileError::Exists`] if the name is taken, else the I/O error, naming `path`.
pub fn create_new(path: &Path, content: &[u8]) -> Result<File, SafeFileError> {
    if fs::symlink_metadata(path).is_ok() {
        return Err(SafeFileError::Exists {
            path: path.to_path_buf(),
        });
    }
    let (temp, file) = write_temp(path, content, 0o600, None, |_| Ok(()))?;
    renameat_with(CWD, &temp, CWD, path, RenameFlags::NOREPLACE).map_err(|e| {
        let _ = fs::remove_file(&temp);
        if e == rustix::io::Errno::EXIST {
            SafeFileError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            io_error(path, "cannot rename the temporary file into place")(e.into())
        }
    })?;
    sync_parent(path)?;
    Ok(file)
}

/// Replaces the regular file at `path` (or creates it, owner-only) with `content`,
/// atomically, keeping the permission bits and owner of the file it replaces. Returns the
/// new file, open for reading and writing.
///
/// # Errors
///
/// A symlink or non-regular file at `path`, an owner that cannot be kept, or the I/O error;
/// `path` is then untouched.
pub fn replace(path: &Path, content: &[u8]) -> Result<File, SafeFileError> {
    replace_with(path, content, |_| Ok(()))
}

/// [`replace`], running `before_rename` on the complete, fsync'ed new file before it takes
/// the name: e.g. to lock it, so that it is never visible unlocked.
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
    let (temp, file) = write_temp(path, content, mode, owner, before_rename)?;
    fs::rename(&temp, path).map_err(|e| {
        let _ = fs::remove_file(&temp);
        io_error(path, "cannot rename the temporary file into place")(e)
    })?;
    sync_parent(path)?;
    Ok(file)
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

/// A complete, fsync'ed temporary file next to `path` with `mode` and `owner`; removed
/// again on any error.
fn write_temp(
    path: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
    before_rename: impl FnOnce(&File) -> io::Result<()>,
) -> Result<(PathBuf, File), SafeFileError> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = path.file_name().ok_or_else(|| SafeFileError::NotRegular {
        path: path.to_path_buf(),
    })?;
    let temp = parent_of(path).join(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&temp)
        .map_err(io_error(path, "cannot create a temporary file next to it"))?;
    let result = (|| {
        if let Some((uid, gid)) = owner {
            let created = file
                .metadata()
                .map_err(io_error(path, "cannot stat the temporary file"))?;
            if (created.uid(), created.gid()) != (uid, gid) {
                std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(|source| {
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
        before_rename(&file).map_err(io_error(path, "cannot prepare the new file"))
    })();
    match result {
        Ok(()) => Ok((temp, file)),
        Err(e) => {
            let _ = fs::remove_file(&temp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn create_new_is_exclusive_owner_only_and_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.fd");
        create_new(&path, b"abc").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"abc");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert!(matches!(
            create_new(&path, b"x"),
            Err(SafeFileError::Exists { .. })
        ));
        let link = dir.path().join("link.fd");
        symlink(dir.path().join("nowhere"), &link).unwrap();
        assert!(matches!(
            create_new(&link, b"x"),
            Err(SafeFileError::Exists { .. })
        ));
        assert!(!dir.path().join("nowhere").exists());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temporary left"
        );
    }

    #[test]
    fn replace_keeps_mode_refuses_symlinks_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vars.fd");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let inode = fs::metadata(&path).unwrap().ino();
        replace(&path, b"new").unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(meta.mode() & 0o777, 0o640);
        assert_ne!(
            meta.ino(),
            inode,
            "renamed into place, not written in place"
        );

        let link = dir.path().join("link.fd");
        symlink(&path, &link).unwrap();
        assert!(matches!(
            replace(&link, b"x"),
            Err(SafeFileError::Symlink { .. })
        ));
        assert!(matches!(
            replace(dir.path(), b"x"),
            Err(SafeFileError::NotRegular { .. })
        ));
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let fresh = dir.path().join("fresh.fd");
        replace(&fresh, b"y").unwrap();
        assert_eq!(fs::metadata(&fresh).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_failing_preparation_leaves_the_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vars.fd");
        fs::write(&path, b"old").unwrap();
        let e = replace_with(&path, b"new", |_| Err(io::Error::other("no lock"))).unwrap_err();
        assert!(e.to_string().contains("cannot prepare the new file"), "{e}");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// Root gives the replacement the old file's owner; this needs root (CI runs as root).
    #[test]
    fn replace_keeps_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vars.fd");
        fs::write(&path, b"old").unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().uid(),
            0,
            "this test needs root to own files as another user (CI runs as root)"
        );
        std::os::unix::fs::chown(&path, Some(64055), Some(108)).unwrap();
        replace(&path, b"new").unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (64055, 108));
    }
}
