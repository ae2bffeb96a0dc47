//! The destination's storage until its commit point, and the commit.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::ops::Range;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;

use crate::device::{Pflash, PflashEvents};
use crate::file_storage::{Durability, FileStorage};
use crate::storage::{Storage, StorageError};

/// The storage of a migration destination until its commit point: nothing is written, the
/// guest is served from the device's memory. [`Deferred::attach`] (done by [`commit`])
/// makes it forward to the real storage from then on.
///
/// Why not buffer the changes: the commit writes the whole content anyway, so every change
/// made before it is included without keeping a log.
#[derive(Debug)]
pub struct Deferred<S> {
    inner: Option<S>,
    deferred_changes: u64,
}

impl<S> Default for Deferred<S> {
    fn default() -> Self {
        Deferred {
            inner: None,
            deferred_changes: 0,
        }
    }
}

impl<S> Deferred<S> {
    /// Nothing attached yet: changes stay in memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the storage is attached (the commit happened).
    pub fn is_committed(&self) -> bool {
        self.inner.is_some()
    }

    /// Changes made before the commit (held in memory only).
    pub fn deferred_changes(&self) -> u64 {
        self.deferred_changes
    }

    /// Attaches `storage`, which must already hold the device's whole content. Use
    /// [`commit`] for a file.
    pub fn attach(&mut self, storage: S) {
        self.inner = Some(storage);
    }

    /// The attached storage.
    pub fn get(&self) -> Option<&S> {
        self.inner.as_ref()
    }

    /// The attached storage, mutably.
    pub fn get_mut(&mut self) -> Option<&mut S> {
        self.inner.as_mut()
    }

    /// The attached storage, if any.
    pub fn into_inner(self) -> Option<S> {
        self.inner
    }
}

impl<S: Storage> Storage for Deferred<S> {
    fn record_change(&mut self, content: &[u8], range: Range<usize>) -> Result<(), StorageError> {
        match &mut self.inner {
            Some(s) => s.record_change(content, range),
            None => {
                self.deferred_changes += 1;
                Ok(())
            }
        }
    }

    fn flush_point(&mut self, content: &[u8]) -> Result<(), StorageError> {
        match &mut self.inner {
            Some(s) => s.flush_point(content),
            None => Ok(()),
        }
    }
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitStats {
    /// Bytes written.
    pub bytes: u64,
    /// `true` for a regular file replaced by rename; `false` for a block device written in
    /// place.
    pub atomic: bool,
    /// Time taken, fsyncs included.
    pub elapsed: Duration,
}

/// The commit point of a migration destination backed by a file: writes the device's whole
/// content to `path` (see [`commit_file`]) and attaches the file storage, so that later
/// changes are persisted as usual. Call it once the destination owns the file, after the
/// source has stopped.
///
/// # Errors
///
/// As for [`commit_file`]; the device keeps running from memory and the commit can be
/// retried. Committing twice is an error.
pub fn commit<M: AsRef<[u8]> + AsMut<[u8]>, E: PflashEvents>(
    dev: &mut Pflash<M, Deferred<FileStorage>, E>,
    path: &Path,
    durability: Durability,
) -> Result<CommitStats, StorageError> {
    commit_with(dev, path, durability, Ok)
}

/// [`commit`] for a destination whose storage wraps the file backend, such as
/// [`BackgroundStorage`](crate::BackgroundStorage): `wrap` turns the committed
/// [`FileStorage`] into the storage to attach.
///
/// ```no_run
/// # fn f(dev: &mut pflash::Pflash<Vec<u8>, pflash::migration::Deferred<pflash::BackgroundStorage>>) -> Result<(), pflash::StorageError> {
/// use pflash::{BackgroundStorage, Durability};
/// pflash::migration::commit_with(dev, "vars.fd".as_ref(), Durability::FlushPoints, |file| {
///     BackgroundStorage::spawn(file, Default::default())
/// })?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// As for [`commit`], or what `wrap` returns (the file is committed then).
pub fn commit_with<M: AsRef<[u8]> + AsMut<[u8]>, S: Storage, E: PflashEvents>(
    dev: &mut Pflash<M, Deferred<S>, E>,
    path: &Path,
    durability: Durability,
    wrap: impl FnOnce(FileStorage) -> Result<S, StorageError>,
) -> Result<CommitStats, StorageError> {
    if dev.storage().is_committed() {
        return Err(StorageError {
            context: format!("{}: cannot commit", path.display()),
            source: io::Error::new(
                ErrorKind::AlreadyExists,
                "the migration is already committed",
            ),
        });
    }
    let (storage, stats) = commit_file(path, dev.memory(), durability)?;
    dev.storage_mut().attach(wrap(storage)?);
    Ok(stats)
}

/// Writes `content` to the flash backing file `path` and returns the open, locked
/// [`FileStorage`] for it.
///
/// - A regular file (or a missing one) is replaced atomically with [`safefile::replace_with`]:
///   the content goes to a new file in the same directory, locked, with the old file's
///   permissions and owner, which is fsync'ed, renamed over `path`, and the directory
///   fsync'ed. A crash leaves either the old file or the new one, never a mix. A symlink is
///   refused, and so is a replacement whose owner cannot be kept (the VMM runs as another
///   user than the file's and not as root).
/// - A block device is written in place, then fsync'ed (it cannot be renamed).
///
/// Refuses while another process holds the file's lock (the migration source has not
/// stopped yet). `durability` is the policy of the returned storage; the commit itself is
/// always synced.
///
/// # Errors
///
/// Naming the file. A regular-file commit that fails before the rename leaves `path`
/// untouched; one that fails after it (fsync of the directory) has replaced it.
pub fn commit_file(
    path: &Path,
    content: &[u8],
    durability: Durability,
) -> Result<(FileStorage, CommitStats), StorageError> {
    let started = Instant::now();
    let error = |what: &str| {
        let context = format!("{}: {what}", path.display());
        move |source| StorageError { context, source }
    };
    let old = match std::fs::metadata(path) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(error("cannot stat")(e)),
    };
    if let Some(meta) = &old {
        if meta.file_type().is_block_device() {
            let mut storage = FileStorage::open(path, content.len(), false, durability)?;
            storage.write_all(content)?;
            // write_all skips the sync under Durability::None; a commit is always durable.
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(error("cannot open"))?;
            file.sync_data().map_err(error("cannot fsync"))?;
            let stats = CommitStats {
                bytes: content.len() as u64,
                atomic: false,
                elapsed: started.elapsed(),
            };
            return Ok((storage, stats));
        }
        // Opening a FIFO for the lock probe would block until a writer comes; a character
        // device or a directory is no flash either.
        if !meta.file_type().is_file() {
            return Err(error("not a regular file or a block device")(
                io::Error::new(
                    ErrorKind::InvalidInput,
                    "refusing to commit the flash content to it",
                ),
            ));
        }
        // Probe the lock: replacing a file that a running source still writes would lose
        // its last writes.
        let probe = File::open(path).map_err(error("cannot open"))?;
        match rustix::fs::flock(&probe, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(error(
                    "locked by another process (has the migration source stopped?)",
                )(e.into()))
            }
            Err(e) => return Err(error("cannot lock")(e.into())),
        }
    }
    // The new file is locked before it takes the name, so it is never visible unlocked.
    let file = safefile::replace_with(path, content, |file| {
        rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive).map_err(io::Error::from)
    })
    .map_err(|e| match e {
        safefile::SafeFileError::Io {
            path,
            action,
            source,
        } => StorageError {
            context: format!("{}: {action}", path.display()),
            source,
        },
        safefile::SafeFileError::Owner {
            path,
            uid,
            gid,
            source,
        } => StorageError {
            context: format!(
                "{}: cannot keep its owner {uid}:{gid} for the committed file",
                path.display()
            ),
            source,
        },
        // The destination's file holds the migrated content already; only the directory
        // entry may not survive a host crash. Said as such, not as a failed commit.
        safefile::SafeFileError::NotDurable { path, source } => StorageError {
            context: format!(
                "{}: the committed content is in place but may not be durable: fsync of {} failed",
                path.display(),
                source.dir.display()
            ),
            source: source.error,
        },
        other => StorageError {
            context: format!("{}: cannot commit", path.display()),
            source: io::Error::new(ErrorKind::InvalidInput, other.to_string()),
        },
    })?;
    // The new file is already locked through this same open file, so taking the lock
    // again cannot fail on a third party.
    let storage = FileStorage::from_file(file, path, content.len(), false, durability)?;
    let stats = CommitStats {
        bytes: content.len() as u64,
        atomic: true,
        elapsed: started.elapsed(),
    };
    Ok((storage, stats))
}
