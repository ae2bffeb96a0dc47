//! Safe file operations shared by every command that writes.
//!
//! - New files are created exclusively and owner-only, and never through a symlink.
//! - Content is first written to a temporary file in the same directory and fsync'ed; only then
//!   is it renamed into place and the directory fsync'ed, so a reader (or a crash) sees the old
//!   file or the new one, never a half-written one.

use rustix::fs::{renameat_with, RenameFlags, CWD};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Largest image we read: a 64 MiB AAVMF store is the biggest real one.
pub const MAX_IMAGE_LEN: u64 = 256 << 20;

/// A file operation that failed, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The path exists and `--force` was not given.
    #[error("{path}: already exists (use --force to replace it)")]
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
    /// Not a regular file.
    #[error("{path}: not a regular file")]
    NotRegular {
        /// The path.
        path: PathBuf,
    },
    /// Too big to be a varstore.
    #[error(
        "{path}: {len} bytes is larger than any variable store ({MAX_IMAGE_LEN} bytes at most)"
    )]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// Its length.
        len: u64,
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

fn io_error<'p>(path: &'p Path, action: &'static str) -> impl FnOnce(io::Error) -> FileError + 'p {
    move |source| FileError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// Reads a whole image, refusing anything that is not a regular file of plausible size.
pub fn read_image(path: &Path) -> Result<Vec<u8>, FileError> {
    let mut file = File::open(path).map_err(io_error(path, "cannot open"))?;
    let meta = file.metadata().map_err(io_error(path, "cannot stat"))?;
    if !meta.is_file() && !meta.file_type().is_block_device_like() {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    if meta.len() > MAX_IMAGE_LEN {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            len: meta.len(),
        });
    }
    let mut image = Vec::with_capacity(meta.len() as usize);
    Read::by_ref(&mut file)
        .take(MAX_IMAGE_LEN + 1)
        .read_to_end(&mut image)
        .map_err(io_error(path, "cannot read"))?;
    Ok(image)
}

trait BlockDeviceLike {
    fn is_block_device_like(&self) -> bool;
}

impl BlockDeviceLike for fs::FileType {
    fn is_block_device_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_block_device()
    }
}

/// Writes `content` to a new file at `path`: exclusively (fails if anything, even a dangling
/// symlink, is there), owner-only, atomically (nothing appears at `path` until it is complete).
pub fn create_new(path: &Path, content: &[u8]) -> Result<(), FileError> {
    if fs::symlink_metadata(path).is_ok() {
        return Err(FileError::Exists {
            path: path.to_path_buf(),
        });
    }
    let temp = write_temp(path, content, 0o600)?;
    // RENAME_NOREPLACE keeps creation exclusive even if someone raced us to the name.
    renameat_with(CWD, &temp, CWD, path, RenameFlags::NOREPLACE).map_err(|e| {
        let _ = fs::remove_file(&temp);
        if e == rustix::io::Errno::EXIST {
            FileError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            FileError::Io {
                path: path.to_path_buf(),
                action: "cannot rename the temporary file into place",
                source: e.into(),
            }
        }
    })?;
    sync_parent(path)
}

/// Replaces the regular file at `path` (or creates it) with `content`, atomically. Refuses a
/// symlink. An existing file keeps its permission bits; a new one is owner-only.
pub fn replace(path: &Path, content: &[u8]) -> Result<(), FileError> {
    let mode = match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(FileError::Symlink {
                path: path.to_path_buf(),
            })
        }
        Ok(meta) if !meta.is_file() => {
            return Err(FileError::NotRegular {
                path: path.to_path_buf(),
            })
        }
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0o600,
        Err(e) => return Err(io_error(path, "cannot stat")(e)),
    };
    let temp = write_temp(path, content, mode)?;
    fs::rename(&temp, path).map_err(|e| {
        let _ = fs::remove_file(&temp);
        io_error(path, "cannot rename the temporary file into place")(e)
    })?;
    sync_parent(path)
}

/// Writes `content` to `path` as a new file, or replaces an existing one when `force` is set.
pub fn write_output(path: &Path, content: &[u8], force: bool) -> Result<(), FileError> {
    if force {
        replace(path, content)
    } else {
        create_new(path, content)
    }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn write_temp(path: &Path, content: &[u8], mode: u32) -> Result<PathBuf, FileError> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = path.file_name().ok_or_else(|| FileError::NotRegular {
        path: path.to_path_buf(),
    })?;
    let temp = parent_of(path).join(format!(
        ".{}.nvram-{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&temp)
        .map_err(io_error(path, "cannot create a temporary file next to it"))?;
    let result = file
        .write_all(content)
        .and_then(|()| file.set_permissions(fs::Permissions::from_mode(mode)))
        .and_then(|()| file.sync_all());
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        return Err(io_error(path, "cannot write the temporary file")(e));
    }
    Ok(temp)
}

fn sync_parent(path: &Path) -> Result<(), FileError> {
    let dir = parent_of(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir, "cannot fsync the directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_new_is_exclusive_owner_only_and_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vars.fd");
        create_new(&path, b"one").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(
            create_new(&path, b"two"),
            Err(FileError::Exists { .. })
        ));
        assert_eq!(fs::read(&path).unwrap(), b"one");

        let target = dir.path().join("target");
        let link = dir.path().join("link.fd");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            create_new(&link, b"x"),
            Err(FileError::Exists { .. })
        ));
        assert!(matches!(
            replace(&link, b"x"),
            Err(FileError::Symlink { .. })
        ));
        assert!(
            !target.exists(),
            "nothing may be written through the symlink"
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left behind");
    }

    #[test]
    fn replace_keeps_the_mode_of_the_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vars.fd");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        replace(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }
}
