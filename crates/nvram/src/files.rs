//! Safe file operations shared by every command that writes.
//!
//! - New files are created exclusively and owner-only, and never through a symlink.
//! - Content is first written to a new file in the same directory and fsync'ed; only then
//!   is it renamed into place and the directory fsync'ed, so a reader (or a crash) sees the old
//!   file or the new one, never a half-written one ([`safefile`]: the new file is unnamed
//!   while written where the filesystem has `O_TMPFILE`, else randomly named; [`clean`]
//!   removes what killed writers left). A failure of that last fsync alone is
//!   [`FileError::NotDurable`]: the new content is in place.
//! - A file is locked before it is read for an edit and until it is replaced
//!   ([`LockedFile`]); [`set_lock_wait`] makes that wait for a held lock.

use safefile::SafeFileError;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Largest image we read: the biggest layout `varstore` knows is AAVMF's, padded to the
/// 64 MiB flash bank (`varstore::layout`); a block device holding a store is no bigger.
pub const MAX_IMAGE_LEN: u64 = 64 << 20;

/// How an image is named in [`safefile::InputError::TooLarge`].
const IMAGE_WHAT: &str = "a variable store";

/// A file operation that failed, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The path exists and replacing it was not asked for.
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
    /// Another process holds a lock on the file: a running VM (QEMU's byte-range locks, or
    /// an nvram pflash device's `flock`) or another tool editing it.
    #[error("{path}: in use ({holder}); stop the VM that uses it first (nothing was changed)")]
    Locked {
        /// The path.
        path: PathBuf,
        /// Who holds the lock, as far as can be told.
        holder: String,
    },
    /// A replacement would not have the replaced file's owner.
    #[error(transparent)]
    Owner(SafeFileError),
    /// The new content is in place, but the fsync of the directory after the rename failed,
    /// so a host crash may bring the old content back ([`SafeFileError::NotDurable`]). The
    /// only error after which the file is not as it was; `nvram` exits with status 3.
    #[error(transparent)]
    NotDurable(SafeFileError),
    /// An input that is not a regular file or block device (a FIFO, a character device…),
    /// or is too large, or could not be read.
    #[error(transparent)]
    Input(#[from] safefile::InputError),
    /// The file's format (qcow2, JSON) could not be unwrapped into a flash image.
    #[error("{path}: {source}")]
    Container {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::container::ContainerError,
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
/// Never blocks: a FIFO, a character device (`/dev/zero`), a directory or a socket is refused
/// at once ([`safefile::InputError::NotAccepted`]), and at most [`MAX_IMAGE_LEN`] bytes are
/// read.
pub fn read_image(path: &Path) -> Result<Vec<u8>, FileError> {
    Ok(safefile::read_input(
        path,
        safefile::Accept::RegularFileOrBlockDevice,
        MAX_IMAGE_LEN,
        IMAGE_WHAT,
    )?)
}

/// Reads a store file in whatever format it is kept (raw, qcow2, JSON; see
/// [`crate::container`]) and unwraps it into its flash image, with the same refusals as
/// [`read_image`].
///
/// ```
/// use nvram::container::{wrap, Format};
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("vm1_VARS.qcow2");
/// std::fs::write(&path, wrap(&varstore::Layout::by_name("ovmf-4m").unwrap().create(), Format::Qcow2)?)?;
/// let file = nvram::files::read_store(&path)?;
/// assert_eq!(file.format(), Format::Qcow2);
/// let store = varstore::Varstore::parse(file.image())?;
/// for variable in store.live_variables() {
///     println!("{} {}", variable.name(), variable.guid);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_store(path: &Path) -> Result<crate::container::StoreFile, FileError> {
    let file = read_image(path)?;
    unwrap_store(path, file)
}

/// Unwraps the content of the store file at `path` as [`crate::container::default_format`]
/// says.
pub fn unwrap_store(path: &Path, file: Vec<u8>) -> Result<crate::container::StoreFile, FileError> {
    crate::container::StoreFile::from_bytes(file, crate::container::default_format()).map_err(
        |source| FileError::Container {
            path: path.to_path_buf(),
            source,
        },
    )
}

/// Writes `content` to a new file at `path`: exclusively (fails if anything, even a dangling
/// symlink, is there), owner-only, atomically (nothing appears at `path` until it is complete).
pub fn create_new(path: &Path, content: &[u8]) -> Result<(), FileError> {
    safefile::create_new(path, content)?;
    Ok(())
}

/// Replaces the regular file at `path` (or creates it) with `content`, atomically. Refuses a
/// symlink. An existing file keeps its permission bits and owner (a replacement whose owner
/// cannot be kept is refused); a new one is owner-only.
pub fn replace(path: &Path, content: &[u8]) -> Result<(), FileError> {
    safefile::replace(path, content)?;
    Ok(())
}

/// Writes `content` to `path` as a new file, or replaces an existing one when `force` is set.
/// An existing file is replaced under its lock ([`LockedFile`]), so a store a running VM
/// holds is refused (or waited for, [`lock_wait`]) rather than pulled from under it.
pub fn write_output(path: &Path, content: &[u8], force: bool) -> Result<(), FileError> {
    if !force {
        create_new(path, content)?;
        clean_after_write(path);
        return Ok(());
    }
    match LockedFile::open(path) {
        Ok(locked) => {
            locked.replace(content)?;
            clean_after_write(path);
            Ok(())
        }
        // Absent: created. Not writable by us (a read-only file we may still replace, as
        // the directory is what counts): replaced unlocked, as before.
        Err(FileError::Io { source, .. })
            if matches!(
                source.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
            ) =>
        {
            replace(path, content)
        }
        Err(e) => Err(e),
    }
}

impl From<SafeFileError> for FileError {
    fn from(e: SafeFileError) -> Self {
        match e {
            SafeFileError::Exists { path } => FileError::Exists { path },
            SafeFileError::Symlink { path } => FileError::Symlink { path },
            SafeFileError::NotRegular { path } => FileError::NotRegular { path },
            SafeFileError::Io {
                path,
                action,
                source,
            } => FileError::Io {
                path,
                action,
                source,
            },
            owner @ SafeFileError::Owner { .. } => FileError::Owner(owner),
            late @ SafeFileError::NotDurable { .. } => FileError::NotDurable(late),
        }
    }
}

impl FileError {
    /// Whether the file holds the new content although the write failed
    /// ([`FileError::NotDurable`]).
    pub fn is_not_durable(&self) -> bool {
        matches!(self, Self::NotDurable(_))
    }
}

/// Whether `error` is (or, found in a source chain, comes from) a write whose new content is
/// in place but may not be durable: `error.chain().any(is_not_durable)` picks the exit status.
pub fn is_not_durable(error: &(dyn std::error::Error + 'static)) -> bool {
    error.is::<safefile::DirectorySyncError>()
}

/// How long [`LockedFile::open`] waits for a lock that another process holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LockWait {
    /// Fail at once with [`FileError::Locked`] (the default).
    #[default]
    Fail,
    /// Wait up to this long, then fail with [`FileError::Locked`].
    Up(std::time::Duration),
    /// Wait until the lock is free.
    Forever,
}

static LOCK_WAIT: std::sync::Mutex<LockWait> = std::sync::Mutex::new(LockWait::Fail);

/// Sets how long [`LockedFile::open`] (and so every edit, reset and replacement by this
/// crate) waits for a lock, for the whole process: the `--wait` of the `nvram` command.
pub fn set_lock_wait(wait: LockWait) {
    *LOCK_WAIT.lock().unwrap_or_else(|e| e.into_inner()) = wait;
}

/// The wait set by [`set_lock_wait`].
pub fn lock_wait() -> LockWait {
    *LOCK_WAIT.lock().unwrap_or_else(|e| e.into_inner())
}

/// After a successful write of `path` by a command that writes one file: removes what killed
/// writers left next to it ([`clean`]) if its lock is free at once; otherwise, or on any
/// error, leaves them (best effort: the write has succeeded). Not done per file by `apply`,
/// where a directory of thousands of stores would be listed once per store.
pub fn clean_after_write(path: &Path) {
    if let Ok(_locked) = LockedFile::open_waiting(path, LockWait::Fail) {
        let _ = safefile::remove_leftovers(path);
    }
}

/// Removes the temporary files that killed writers left next to `path`
/// ([`safefile::remove_leftovers`]) while holding the lock of `path` (as every edit does), so
/// that no write of it can be under way: a file a running VM or tool holds is refused with
/// [`FileError::Locked`] (after [`lock_wait`]). An absent `path` (a killed `create`) needs
/// no lock; temporary files a writer still holds are left ([`safefile::Removal::in_use`]).
pub fn clean(path: &Path) -> Result<safefile::Removal, FileError> {
    let _locked = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        _ => Some(LockedFile::open(path)?),
    };
    Ok(safefile::remove_leftovers(path)?)
}

/// A lock on a file as `/proc/locks` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LockHolder {
    /// `FLOCK` (an nvram pflash device or tool), `OFDLCK` (QEMU's block layer) or `POSIX`.
    pub kind: String,
    /// `READ` or `WRITE`.
    pub mode: String,
    /// The holder's process id; `None` for OFD locks, which belong to an open file, not a
    /// process (the kernel shows -1).
    pub pid: Option<u32>,
    /// First and last byte locked (`None` for the end: to the end of the file).
    pub range: (u64, Option<u64>),
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = match self.kind.as_str() {
            "FLOCK" => "flock (an nvram pflash device or tool)",
            "OFDLCK" => "OFD byte-range lock (QEMU)",
            _ => "POSIX byte-range lock",
        };
        write!(f, "{} {who}", self.mode.to_lowercase())?;
        if let Some(pid) = self.pid {
            write!(f, " held by pid {pid}")?;
        }
        if self.kind != "FLOCK" {
            match self.range.1 {
                Some(end) => write!(f, " on bytes {}-{end}", self.range.0)?,
                None => write!(f, " from byte {}", self.range.0)?,
            }
        }
        Ok(())
    }
}

/// Another process that has a file open (found in `/proc/PID/fd`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Opener {
    /// Its process id.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`), as the kernel reports it.
    pub command: String,
}

impl std::fmt::Display for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {})", self.command, self.pid)
    }
}

/// The other processes that have the file at `path` open, from `/proc/*/fd`. Needed where
/// locks tell nothing: QEMU's uefi-vars device keeps its JSON store open without any lock.
/// Best effort: processes whose descriptors this process may not read are not seen, and
/// without procfs the answer is empty.
pub fn openers(path: &Path) -> Vec<Opener> {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = fs::metadata(path) else {
        return Vec::new();
    };
    let own = std::process::id();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let open = fds.flatten().any(|fd| {
            fs::metadata(fd.path())
                .is_ok_and(|m| m.dev() == target.dev() && m.ino() == target.ino())
        });
        if open {
            let command = fs::read_to_string(entry.path().join("comm"))
                .map(|c| c.trim_end().to_string())
                .unwrap_or_default();
            found.push(Opener { pid, command });
        }
    }
    found
}

/// The locks that `/proc/locks` lists for the file at `path` (following symlinks). Best
/// effort, for reports: without procfs the answer is empty. Deciding whether a file is in use
/// is done by trying to lock it ([`LockedFile::open`]), which needs no procfs.
pub fn lock_holders(path: &Path) -> Vec<LockHolder> {
    use std::os::unix::fs::MetadataExt;
    let (Ok(meta), Ok(table)) = (fs::metadata(path), fs::read_to_string("/proc/locks")) else {
        return Vec::new();
    };
    let (major, minor) = (rustix::fs::major(meta.dev()), rustix::fs::minor(meta.dev()));
    table
        .lines()
        .filter_map(parse_proc_lock)
        .filter(|(dev, _)| *dev == (major, minor, meta.ino()))
        .map(|(_, holder)| holder)
        .collect()
}

/// Parses one `/proc/locks` line, `1: OFDLCK ADVISORY  READ -1 fe:00:770558 100 101`;
/// `None` for a waiter (`1: -> FLOCK …`) or anything unexpected.
fn parse_proc_lock(line: &str) -> Option<((u32, u32, u64), LockHolder)> {
    let mut fields = line.split_whitespace().skip(1);
    let kind = fields.next().filter(|k| *k != "->")?.to_string();
    let _advisory = fields.next()?;
    let mode = fields.next()?.to_string();
    let pid = fields.next()?.parse::<i64>().ok()?;
    let mut dev = fields.next()?.split(':');
    let major = u32::from_str_radix(dev.next()?, 16).ok()?;
    let minor = u32::from_str_radix(dev.next()?, 16).ok()?;
    let inode = dev.next()?.parse::<u64>().ok()?;
    let start = fields.next()?.parse::<u64>().ok()?;
    let end = fields.next()?;
    let end = if end == "EOF" {
        None
    } else {
        Some(end.parse::<u64>().ok()?)
    };
    Some((
        (major, minor, inode),
        LockHolder {
            kind,
            mode,
            pid: u32::try_from(pid).ok().filter(|p| *p > 0),
            range: (start, end),
        },
    ))
}

/// An existing regular file opened for update and locked against every kind of user this
/// project knows of, so that it can be backed up and replaced without a running VM losing
/// (or overwriting) anything.
///
/// Two locks are taken, both non-blocking, because the two kinds of holders use different
/// mechanisms that do not see each other:
///
/// - an exclusive `flock`: what an nvram pflash device (`pflash::FileStorage`) and other nvram
///   commands hold while they own the file;
/// - an exclusive POSIX `fcntl` write lock over the whole file: QEMU's block layer holds
///   shared OFD locks on single bytes (100 + permission, 200 + permission) of every image it
///   has open and active, and OFD and POSIX locks conflict with each other, so this fails
///   while QEMU runs (including a VM paused with `-S`). It also makes a QEMU that starts while
///   we hold it fail its own lock check instead of racing us.
///
/// A QEMU waiting for an incoming migration (`-incoming`) has not activated its images and
/// holds no locks yet; nothing can detect it through the file.
///
/// POSIX locks are dropped when *any* descriptor of the file in this process is closed, so
/// everything is read through this one descriptor.
#[derive(Debug)]
pub struct LockedFile {
    file: File,
    path: PathBuf,
}

impl LockedFile {
    /// Opens `path` read-write without following a symlink and locks it; fails with
    /// [`FileError::Locked`] (naming the holder if `/proc/locks` tells) if anyone holds a lock
    /// (after waiting as [`set_lock_wait`] says; by default not at all).
    pub fn open(path: &Path) -> Result<Self, FileError> {
        Self::open_waiting(path, lock_wait())
    }

    /// [`LockedFile::open`], waiting for a held lock as `wait` says. The `flock` could be
    /// waited for in the kernel, but QEMU's OFD locks cannot (a blocking POSIX lock would
    /// not stop at a deadline), so both are polled, from 1 ms apart up to 50 ms apart. A file
    /// that another process replaced (renamed over the name) while we waited for it is
    /// opened again: the lock of the old one is worth nothing.
    pub fn open_waiting(path: &Path, wait: LockWait) -> Result<Self, FileError> {
        use std::time::{Duration, Instant};
        let deadline = match wait {
            LockWait::Fail => Some(Instant::now()),
            LockWait::Up(d) => Instant::now().checked_add(d),
            LockWait::Forever => None,
        };
        let mut pause = Duration::from_millis(1);
        loop {
            match Self::try_open(path) {
                Ok(locked) => {
                    use std::os::unix::fs::MetadataExt;
                    let ours = locked
                        .file
                        .metadata()
                        .map_err(io_error(path, "cannot stat"))?;
                    let now = fs::symlink_metadata(path).map_err(io_error(path, "cannot stat"))?;
                    if (now.dev(), now.ino()) == (ours.dev(), ours.ino()) {
                        return Ok(locked);
                    }
                }
                Err(FileError::Locked { .. }) if deadline.is_none_or(|d| Instant::now() < d) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One attempt of [`LockedFile::open`].
    fn try_open(path: &Path) -> Result<Self, FileError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            // O_NONBLOCK: a FIFO opens at once (and is refused below) instead of waiting for
            // a writer; it is cleared once the file is known to be a regular one.
            .custom_flags(
                (rustix::fs::OFlags::NOFOLLOW
                    | rustix::fs::OFlags::NONBLOCK
                    | rustix::fs::OFlags::NOCTTY)
                    .bits() as i32,
            )
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                    FileError::Symlink {
                        path: path.to_path_buf(),
                    }
                } else {
                    io_error(path, "cannot open for update")(e)
                }
            })?;
        let meta = file.metadata().map_err(io_error(path, "cannot stat"))?;
        if !meta.is_file() {
            return Err(FileError::Input(safefile::InputError::NotAccepted {
                path: path.to_path_buf(),
                kind: safefile::FileKind::of(meta.file_type()),
                accept: safefile::Accept::RegularFile,
            }));
        }
        let flags = rustix::fs::fcntl_getfl(&file)
            .map_err(|e| io_error(path, "cannot get the file status flags")(e.into()))?;
        rustix::fs::fcntl_setfl(&file, flags - rustix::fs::OFlags::NONBLOCK)
            .map_err(|e| io_error(path, "cannot clear O_NONBLOCK")(e.into()))?;
        let locked = |mechanism: &str| {
            // Our own flock is taken before the byte-range lock fails: not another holder.
            let own = Some(std::process::id());
            let holders: Vec<LockHolder> = lock_holders(path)
                .into_iter()
                .filter(|h| h.pid != own)
                .collect();
            let holder = if holders.is_empty() {
                format!("another process holds a conflicting {mechanism}")
            } else {
                let list: Vec<String> = holders.iter().map(ToString::to_string).collect();
                format!("locked: {}", list.join(", "))
            };
            FileError::Locked {
                path: path.to_path_buf(),
                holder,
            }
        };
        use rustix::fs::FlockOperation::NonBlockingLockExclusive;
        match rustix::fs::flock(&file, NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => return Err(locked("flock")),
            Err(e) => return Err(io_error(path, "cannot flock")(e.into())),
        }
        match rustix::fs::fcntl_lock(&file, NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::ACCESS => {
                return Err(locked("byte-range lock"))
            }
            Err(e) => return Err(io_error(path, "cannot take a byte-range lock")(e.into())),
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The path it was opened as.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the whole file (through the locked descriptor).
    pub fn read_all(&mut self) -> Result<Vec<u8>, FileError> {
        use std::io::{Seek, SeekFrom};
        let path = &self.path;
        let len = self
            .file
            .metadata()
            .map_err(io_error(path, "cannot stat"))?
            .len();
        if len > MAX_IMAGE_LEN {
            return Err(FileError::TooLarge {
                path: path.clone(),
                len,
            });
        }
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(io_error(path, "cannot seek"))?;
        let mut image = Vec::with_capacity(len as usize);
        Read::by_ref(&mut self.file)
            .take(MAX_IMAGE_LEN + 1)
            .read_to_end(&mut image)
            .map_err(io_error(path, "cannot read"))?;
        Ok(image)
    }

    /// Replaces the file atomically with `content` (see [`replace`]), keeping its mode, after
    /// checking that the path still names the file we locked (it could have been renamed or
    /// swapped since we opened it).
    pub fn replace(self, content: &[u8]) -> Result<(), FileError> {
        use std::os::unix::fs::MetadataExt;
        let ours = self
            .file
            .metadata()
            .map_err(io_error(&self.path, "cannot stat"))?;
        match fs::symlink_metadata(&self.path) {
            Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => {}
            Ok(_) => {
                return Err(FileError::Io {
                    path: self.path.clone(),
                    action: "changed while it was being replaced",
                    source: io::Error::other("another file now has this name"),
                })
            }
            Err(e) => return Err(io_error(&self.path, "cannot stat")(e)),
        }
        // The locks stay held (self.file is alive) until the new file is in place.
        replace(&self.path, content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
    fn parses_proc_locks_lines() {
        let (dev, holder) =
            parse_proc_lock("2: OFDLCK ADVISORY  READ -1 fe:00:10051755 100 101").unwrap();
        assert_eq!(dev, (0xfe, 0, 10051755));
        assert_eq!(holder.pid, None);
        assert_eq!(holder.range, (100, Some(101)));
        assert_eq!(
            holder.to_string(),
            "read OFD byte-range lock (QEMU) on bytes 100-101"
        );
        let (_, holder) = parse_proc_lock("1: FLOCK  ADVISORY  WRITE 4242 08:01:12 0 EOF").unwrap();
        assert_eq!(holder.pid, Some(4242));
        assert_eq!(holder.range, (0, None));
        assert!(parse_proc_lock("1: -> FLOCK  ADVISORY  WRITE 4243 08:01:12 0 EOF").is_none());
    }

    #[test]
    fn a_locked_file_is_refused_and_a_symlink_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vars.fd");
        fs::write(&path, b"old").unwrap();
        let holder = File::open(&path).unwrap();
        rustix::fs::flock(&holder, rustix::fs::FlockOperation::LockShared).unwrap();
        let err = LockedFile::open(&path).unwrap_err();
        assert!(matches!(err, FileError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("flock"), "{err}");
        drop(holder);
        let mut locked = LockedFile::open(&path).unwrap();
        assert_eq!(locked.read_all().unwrap(), b"old");
        locked.replace(b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");

        let link = dir.path().join("link.fd");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(
            LockedFile::open(&link),
            Err(FileError::Symlink { .. })
        ));
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
