//! The file backend: persists the flash content in a regular file or a block device.
//!
//! # Ordering and crash consistency
//!
//! [`FileStorage`] only ever writes bytes that a recorded operation changed, and it writes
//! them in operation order. Between two flush points it buffers the changes, copying the
//! changed bytes when they are recorded (a few bytes per program, one sector per erase), and
//! writes them at the flush point:
//!
//! - a change that starts exactly where the previous buffered change ends extends it, so a
//!   firmware programming a variable byte by byte produces one buffered change, and one
//!   `pwrite`, per command sequence;
//! - any other change is buffered on its own, even when it overwrites bytes of an earlier
//!   change: since each change keeps the bytes it wrote, writing them in order reproduces
//!   every intermediate state, and nothing is ever written ahead of its turn (writing the
//!   *current* content of an earlier range would write a later operation's bytes early).
//!
//! The buffered changes are written one `pwrite` each, in order (a single `pwritev` cannot
//! coalesce them further: its buffers go to consecutive file offsets, and contiguous changes
//! are already one buffer). Within one buffered change the operations are in ascending
//! address order and the kernel copies a write into the page cache in ascending order, so a
//! write cut short by `SIGKILL` between two pages (or by a full disk) still leaves the file
//! equal to the content after **some prefix of the completed operations**. Operations are
//! never reordered; only one that spans a page boundary itself (an erase of a sector larger
//! than a page, as on arm `virt`) can be cut at a page boundary, as real flash allows for an
//! interrupted erase.
//!
//! # Durability
//!
//! See [`Durability`] for what survives a process crash and what survives a host crash.
//!
//! # Locking
//!
//! While a [`FileStorage`] is open it holds an exclusive `flock` on the file (shared for a
//! read-only flash), taken without waiting: a second open, by another process or by the same
//! one, fails at once with an error naming the file. The lock goes away with the
//! [`FileStorage`] (or with the process).

use crate::storage::{Storage, StorageError};
use rustix::fs::FlockOperation;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

/// Buffered changes and bytes beyond which a [`FileStorage`] flushes without waiting for a
/// flush point, so that a guest that never ends a sequence cannot grow the buffer without
/// bound.
const MAX_PENDING_CHANGES: usize = 4096;
const MAX_PENDING_BYTES: usize = 4 << 20;

/// A buffered change: `data` (a range of [`FileStorage::data`]) goes to `offset`.
#[derive(Debug, Clone)]
struct Change {
    offset: usize,
    data: Range<usize>,
}

/// When a [`FileStorage`] asks the kernel to put written data on stable storage
/// (`fdatasync`).
///
/// Whatever the policy, after a crash of the *process* (`SIGKILL`, abort, VMM bug) the file
/// equals the content after some prefix of the operations up to the last flush point, because
/// written data lives in the kernel's page cache. The policies differ in what survives a crash
/// of the *host* (power loss, kernel panic):
///
/// Behind a [`BackgroundStorage`](crate::BackgroundStorage) the same policies apply when the
/// writer thread reaches a flush point, shortly after the device signalled it (the flush
/// points of one batch are coalesced into one), and a process crash loses what was still in
/// its backlog: the file is then at an earlier prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Durability {
    /// Never `fdatasync` (except an explicit [`FileStorage::sync`]). Changes are written at
    /// flush points. After a host crash the file may hold any mix of the pages written since
    /// the kernel last wrote them back on its own (usually within 30 s), including a mix
    /// that is no prefix of the operations. Fastest; for tests and throw-away VMs.
    None,
    /// Changes are written at flush points, followed by one `fdatasync` if anything was
    /// written. After a host crash every sequence whose flush point completed is on disk; the
    /// pages written by the flush in progress may be on disk or not, each on its own. This is
    /// what a firmware's fault-tolerant write protocol expects from real flash (a
    /// sequence is not atomic, everything before it is stable). The default.
    #[default]
    FlushPoints,
    /// Every change is written through as soon as it is recorded and followed by an
    /// `fdatasync`, like a write-through disk cache. After a host crash the file equals the
    /// content after all completed operations, except that the last one may be cut at a page
    /// boundary. One write and one `fdatasync` per programmed byte: slow.
    EveryOperation,
}

/// Counters kept by a [`FileStorage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StorageStats {
    /// Program and erase operations recorded.
    pub operations: u64,
    /// Flush points the device signalled.
    pub flush_points: u64,
    /// Flushes that wrote buffered changes (at a flush point, or forced by an overlap or a
    /// full buffer).
    pub flushes: u64,
    /// `pwrite` system calls issued.
    pub write_syscalls: u64,
    /// `fdatasync` system calls issued.
    pub fsyncs: u64,
    /// Bytes written to the file.
    pub bytes_written: u64,
}

/// A [`Storage`] that persists the flash content in a file or block device of exactly the
/// flash's size, in operation order, with write coalescing between flush points (see the
/// [module documentation](self)).
///
/// The content given to the device should be the file's content (read it with
/// [`read_content`](Self::read_content) after opening), or the file must be brought up to
/// date with [`write_all`](Self::write_all) (the post-load synchronisation write after a
/// migration): the storage writes changes, not the whole content.
///
/// Changes recorded after the last flush point (a guest that stopped in the middle of a
/// command sequence) stay buffered until the next flush point, an explicit
/// [`flush`](Self::flush), or the drop of the storage.
#[derive(Debug)]
pub struct FileStorage {
    file: File,
    path: PathBuf,
    len: usize,
    read_only: bool,
    durability: Durability,
    /// Changes not yet written, in operation order.
    pending: Vec<Change>,
    /// Their data, copied when they were recorded.
    data: Vec<u8>,
    /// Something was written since the last `fdatasync`.
    unsynced: bool,
    stats: StorageStats,
}

impl FileStorage {
    /// Opens the backing file of a flash of `len` bytes and locks it: exclusively, or shared
    /// when `read_only` (then it is opened read-only and never written).
    ///
    /// Fails, naming the file, if it cannot be opened, is neither a regular file nor a block
    /// device, is locked by another open (a running VM, or an offline tool editing it), or
    /// is not exactly `len` bytes long.
    pub fn open(
        path: impl AsRef<Path>,
        len: usize,
        read_only: bool,
        durability: Durability,
    ) -> Result<Self, StorageError> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| StorageError {
                context: format!("{}: cannot open the flash backing file", path.display()),
                source,
            })?;
        Self::from_file(file, path, len, read_only, durability)
    }

    /// Like [`open`](Self::open) for a file the caller opened (a VMM given a file descriptor
    /// by its management layer): `file` must be open for reading, and for writing unless
    /// `read_only`; `path` names it in errors.
    pub fn from_file(
        mut file: File,
        path: impl AsRef<Path>,
        len: usize,
        read_only: bool,
        durability: Durability,
    ) -> Result<Self, StorageError> {
        let path = path.as_ref();
        let error = |what: &str| {
            let context = format!("{}: {what}", path.display());
            move |source| StorageError { context, source }
        };
        let meta = file.metadata().map_err(error("cannot stat"))?;
        if !meta.is_file() && !meta.file_type().is_block_device() {
            return Err(error("cannot back a flash")(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file or block device",
            )));
        }
        let operation = if read_only {
            FlockOperation::NonBlockingLockShared
        } else {
            FlockOperation::NonBlockingLockExclusive
        };
        match rustix::fs::flock(&file, operation) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(error("locked by another process (a running VM?)")(e.into()))
            }
            Err(e) => return Err(error("cannot lock")(e.into())),
        }
        // Seeking to the end gives the size of a block device too (its st_size is 0).
        let actual = file
            .seek(SeekFrom::End(0))
            .map_err(error("cannot find the size"))?;
        if actual != len as u64 {
            return Err(error("wrong size for this flash")(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the file is {actual} bytes, the flash is {len} bytes"),
            )));
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
            len,
            read_only,
            durability,
            pending: Vec::new(),
            data: Vec::new(),
            unsynced: false,
            stats: StorageStats::default(),
        })
    }

    /// The backing file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The flash (and file) size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the flash is empty (never: a flash has at least one sector).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the file was opened read-only (shared lock, never written).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The durability policy.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The counters so far.
    pub fn stats(&self) -> StorageStats {
        self.stats
    }

    /// Bytes recorded but not yet written (they will be at the next flush point).
    pub fn pending_bytes(&self) -> usize {
        self.data.len()
    }

    /// Reads the whole file: the content to give the device.
    pub fn read_content(&self) -> Result<Vec<u8>, StorageError> {
        let mut content = vec![0; self.len];
        self.file
            .read_exact_at(&mut content, 0)
            .map_err(self.error("cannot read"))?;
        Ok(content)
    }

    /// Writes the whole `content` to the file (dropping anything buffered, which `content`
    /// includes) and, unless the durability is [`Durability::None`], `fdatasync`s it. This is
    /// the post-load synchronisation write of a migration destination. It is not atomic: use
    /// it only when the file's old content does not matter or a torn result is acceptable.
    pub fn write_all(&mut self, content: &[u8]) -> Result<(), StorageError> {
        self.check_writable(content, 0..self.len)?;
        self.pending.clear();
        self.data.clear();
        self.write_at(content, 0)?;
        if self.durability != Durability::None {
            self.sync()?;
        }
        Ok(())
    }

    /// `fdatasync`s the file now if anything was written since the last one.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        if self.unsynced {
            self.stats.fsyncs += 1;
            self.file
                .sync_data()
                .map_err(self.error("cannot fdatasync"))?;
            self.unsynced = false;
        }
        Ok(())
    }

    fn error(&self, what: &str) -> impl FnOnce(io::Error) -> StorageError {
        let context = format!("{}: {what}", self.path.display());
        move |source| StorageError { context, source }
    }

    fn check_writable(&self, content: &[u8], range: Range<usize>) -> Result<(), StorageError> {
        check_change(&self.path, self.read_only, self.len, content, &range)
    }

    /// Writes `data` at `offset`, looping on short writes.
    fn write_at(&mut self, data: &[u8], offset: usize) -> Result<(), StorageError> {
        let mut done = 0;
        while done < data.len() {
            self.stats.write_syscalls += 1;
            match self.file.write_at(&data[done..], (offset + done) as u64) {
                Ok(0) => {
                    return Err(self.write_error(offset + done, data.len() - done)(
                        io::ErrorKind::WriteZero.into(),
                    ))
                }
                Ok(n) => {
                    self.unsynced = true;
                    self.stats.bytes_written += n as u64;
                    done += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.write_error(offset + done, data.len() - done)(e)),
            }
        }
        Ok(())
    }

    fn write_error(&self, offset: usize, len: usize) -> impl FnOnce(io::Error) -> StorageError {
        self.error(&format!("cannot write {len} bytes at offset {offset:#x}"))
    }

    /// Writes every buffered change now, in operation order, without a sync. On an error the
    /// changes not yet written stay buffered, to be retried by the next flush.
    pub fn flush(&mut self) -> Result<(), StorageError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.stats.flushes += 1;
        let pending = std::mem::take(&mut self.pending);
        let data = std::mem::take(&mut self.data);
        for (i, change) in pending.iter().enumerate() {
            if let Err(e) = self.write_at(&data[change.data.clone()], change.offset) {
                self.pending = pending[i..].to_vec();
                self.data = data;
                return Err(e);
            }
        }
        // Keep both allocations for the next sequence.
        self.pending = pending;
        self.pending.clear();
        self.data = data;
        self.data.clear();
        Ok(())
    }

    /// Records `bytes`, the new content at `offset`, as one change (what
    /// [`BackgroundStorage`](crate::BackgroundStorage)'s writer hands over: it has the changed
    /// bytes, not the whole content). Counts no operation: the caller counts them.
    pub(crate) fn record_bytes(&mut self, offset: usize, bytes: &[u8]) -> Result<(), StorageError> {
        let range = offset..offset + bytes.len();
        if self.read_only || range.end > self.len {
            // The same refusal as record_change's, with a content of the right length.
            return self.check_writable(&[], range);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        self.buffer_bytes(offset, bytes)?;
        if self.durability == Durability::EveryOperation {
            self.flush()?;
            self.sync()?;
        }
        Ok(())
    }

    /// Adds operations and flush points counted elsewhere to the counters.
    pub(crate) fn count(&mut self, operations: u64, flush_points: u64) {
        self.stats.operations += operations;
        self.stats.flush_points += flush_points;
    }

    /// Buffers a change: extends the last buffered change if it starts exactly where that one
    /// ends, else adds a new one. The buffer is flushed first when it is full (the change is
    /// buffered even if that flush fails).
    fn buffer(&mut self, content: &[u8], range: Range<usize>) -> Result<(), StorageError> {
        self.buffer_bytes(range.start, &content[range])
    }

    fn buffer_bytes(&mut self, offset: usize, bytes: &[u8]) -> Result<(), StorageError> {
        let flushed =
            if self.pending.len() >= MAX_PENDING_CHANGES || self.data.len() >= MAX_PENDING_BYTES {
                self.flush()
            } else {
                Ok(())
            };
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        match self.pending.last_mut() {
            Some(last) if last.offset + last.data.len() == offset => {
                last.data.end = self.data.len();
            }
            _ => self.pending.push(Change {
                offset,
                data: start..self.data.len(),
            }),
        }
        flushed
    }
}

impl Drop for FileStorage {
    /// Writes what is still buffered (changes after the last flush point) and syncs it as the
    /// durability asks. Errors cannot be reported here: call [`flush`](Self::flush) and
    /// [`sync`](Self::sync) first to see them.
    fn drop(&mut self) {
        if !self.read_only && self.flush().is_ok() && self.durability != Durability::None {
            let _ = self.sync();
        }
    }
}

impl Storage for FileStorage {
    fn record_change(&mut self, content: &[u8], range: Range<usize>) -> Result<(), StorageError> {
        self.check_writable(content, range.clone())?;
        self.stats.operations += 1;
        if range.is_empty() {
            return Ok(());
        }
        self.buffer(content, range)?;
        if self.durability == Durability::EveryOperation {
            self.flush()?;
            self.sync()?;
        }
        Ok(())
    }

    fn flush_point(&mut self, _content: &[u8]) -> Result<(), StorageError> {
        self.stats.flush_points += 1;
        self.write_flush_point()
    }
}

impl FileStorage {
    /// What a flush point does, without counting one.
    pub(crate) fn write_flush_point(&mut self) -> Result<(), StorageError> {
        if self.read_only {
            return Ok(());
        }
        self.flush()?;
        if self.durability == Durability::FlushPoints {
            self.sync()?;
        }
        Ok(())
    }
}

/// Refuses a change to a read-only flash, or one whose content or range does not fit the
/// `len`-byte file: shared by the direct file backend and the background writer, which must
/// refuse exactly what the file backend would before the writer thread ever sees the bytes.
pub(crate) fn check_change(
    path: &Path,
    read_only: bool,
    len: usize,
    content: &[u8],
    range: &Range<usize>,
) -> Result<(), StorageError> {
    let error = |what: &str, source| StorageError {
        context: format!("{}: {what}", path.display()),
        source,
    };
    if read_only {
        return Err(error(
            "cannot write",
            io::Error::new(io::ErrorKind::PermissionDenied, "the flash is read-only"),
        ));
    }
    if content.len() != len || range.start > range.end || range.end > len {
        return Err(error(
            "cannot record a change",
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "range {:#x}..{:#x} of {} content bytes does not fit the {len}-byte file",
                    range.start,
                    range.end,
                    content.len(),
                ),
            ),
        ));
    }
    Ok(())
}
