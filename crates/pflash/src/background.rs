//! Persistence off the vCPU thread: a writer thread applies the device's changes to a
//! [`FileStorage`], so that the MMIO handler only copies bytes.
//!
//! # What the handler does
//!
//! [`BackgroundStorage::record_change`] copies the changed bytes into a *backlog* in memory
//! (contiguous changes, such as a variable programmed byte by byte, extend one entry) and
//! returns; [`BackgroundStorage::flush_point`] appends a marker. Both take a mutex that only
//! the writer thread also takes, for the time it needs to swap the backlog with its empty
//! one, so the lock is uncontended in practice and costs no system call. The handler makes a
//! system call in two cases only:
//!
//! - **waking a parked writer** (with [`Wake::ByHandler`], the default): after
//!   [`BackgroundOptions::park_after`] without work the writer stops polling and sleeps on a
//!   condition variable; the next flush point (or a backlog past half full) that finds it
//!   parked wakes it, one `futex` call. While the guest keeps writing the writer polls every
//!   [`BackgroundOptions::poll_interval`] and nobody needs to wake it. With
//!   [`Wake::ByCaller`] the handler never wakes the writer: the VMM calls
//!   [`BackgroundStorage::kick`] outside the handler (in its run loop, after handling an
//!   exit and before entering the guest again), which makes the `futex` call instead when
//!   the writer is parked with work; with [`park_after`](BackgroundOptions::park_after)
//!   `None` nobody ever needs to.
//! - **back-pressure** (in both modes): the backlog is bounded ([`BackgroundOptions::backlog_bytes`]). A
//!   change that does not fit blocks the handler, and so the vCPU, until the writer has
//!   taken the backlog (it swaps it out before writing, so the wait is for the previous
//!   batch's I/O, not for this one's). A guest cannot make the VMM grow without bound, and a
//!   slow disk slows the guest instead of losing data. A single change larger than the bound
//!   (an erase of a sector bigger than the backlog) is taken when the backlog is empty.
//!
//! # Ordering and crashes
//!
//! The writer applies the backlog in order to the wrapped [`FileStorage`], whose writes keep
//! the *prefix property* (see the [file backend](crate::file_storage)): after a crash of the
//! process the file equals the content after some prefix of the completed operations. What
//! the background adds is lag: operations still in the backlog when the process dies are
//! lost, as if they had not happened yet, so the prefix can be shorter than with the
//! synchronous [`FileStorage`] (typically by the operations of the last poll interval).
//! Flush points that arrive in one batch are coalesced into one flush at its end (and, as
//! the [`Durability`](crate::Durability) asks, one `fdatasync`), and contiguous changes merge
//! into one write even across command sequences.
//!
//! # Errors
//!
//! A write or sync that fails in the writer thread is kept and handed to the device by the
//! next [`record_change`](Storage::record_change) or [`flush_point`](Storage::flush_point)
//! call after the writer observed it, that is at the guest's next program, erase or return
//! to read-array mode: the device then sets the program (or, for an erase, erase) error bit
//! of its status register and calls
//! [`PflashEvents::storage_error`](crate::PflashEvents::storage_error). The operation that
//! failed to reach the file was reported complete to the guest earlier, as with any
//! write-back cache; the failed changes stay queued in the file backend and are retried at
//! the next flush. [`BackgroundStorage::flush`] waits for the writer and returns a pending
//! error itself (then the device does not see that one).

use crate::file_storage::{check_change, FileStorage, StorageStats};
use crate::storage::{Storage, StorageError};
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a [`BackgroundStorage`] queues and when its writer sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackgroundOptions {
    /// Bound of the backlog in bytes (changed bytes plus 16 bytes per run of contiguous
    /// changes); a change that does not fit blocks the MMIO handler until the writer has
    /// taken the backlog. 1 MiB by default: 256 q35 sector erases, or 60,000 scattered byte
    /// programs (contiguous ones cost one byte each). The storage
    /// reserves four times this much address space (a double buffer of data and entries),
    /// resident only as far as the backlog ever fills.
    pub backlog_bytes: usize,
    /// How often the writer looks for work while it is not parked. 1 ms by default: the
    /// file lags the guest by about that much during a burst.
    pub poll_interval: Duration,
    /// Idle time after which the writer parks (no polling; the next flush point wakes it with
    /// one system call on the vCPU thread). `None` never parks: the handler never makes a
    /// system call except under back-pressure, at the cost of a wake-up per poll interval
    /// forever. 1 s by default.
    pub park_after: Option<Duration>,
    /// Who wakes a parked writer: the MMIO handler, or the VMM through
    /// [`BackgroundStorage::kick`]. [`Wake::ByHandler`] by default.
    pub wake: Wake,
}

/// Who wakes a writer that parked ([`BackgroundOptions::wake`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wake {
    /// The MMIO handler, at the flush point (or the change filling the backlog past half)
    /// that finds the writer parked: one `futex` call on the vCPU thread, inside the handler.
    #[default]
    ByHandler,
    /// The VMM, by calling [`BackgroundStorage::kick`] outside the handler. The handler
    /// makes a system call only under back-pressure, where it must wake the writer to get
    /// room. Work recorded while the writer is parked waits for the next `kick`,
    /// [`flush`](BackgroundStorage::flush) or drop.
    ByCaller,
}

impl Default for BackgroundOptions {
    fn default() -> Self {
        BackgroundOptions {
            backlog_bytes: 1 << 20,
            poll_interval: Duration::from_millis(1),
            park_after: Some(Duration::from_secs(1)),
            wake: Wake::ByHandler,
        }
    }
}

/// Counters of a [`BackgroundStorage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackgroundStats {
    /// The file backend's counters, as of the writer's last batch. `operations` and
    /// `flush_points` count what the device reported (several may travel in one entry).
    pub file: StorageStats,
    /// Batches the writer took.
    pub batches: u64,
    /// Times the handler woke a parked writer (one system call each).
    pub wakeups: u64,
    /// Times [`BackgroundStorage::kick`] woke a parked writer (one system call each).
    pub kicks: u64,
    /// Times the handler blocked on a full backlog.
    pub backpressure_waits: u64,
    /// The largest backlog seen, in bytes.
    pub peak_backlog_bytes: usize,
}

/// One backlog entry: the next `len` bytes of the backlog's data go to `offset`.
///
/// Flush points are only counted, not queued: the writer flushes at the end of a batch
/// that had one, wherever it was in the batch (writing a completed operation earlier than
/// its sequence's end keeps the prefix property). So contiguous programs merge into one
/// entry even across command sequences, as OVMF's byte-by-byte variable writes do.
#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: usize,
    len: usize,
}

/// What an entry costs against the bound: its own size, so that the bound is the memory.
const ENTRY_COST: usize = std::mem::size_of::<Entry>();

/// What the handler and the writer share, under the mutex.
#[derive(Debug)]
struct Backlog {
    entries: Vec<Entry>,
    data: Vec<u8>,
    /// Operations and flush points recorded into this backlog.
    operations: u64,
    flush_points: u64,
    /// The writer sleeps on `work` and must be notified.
    parked: bool,
    /// A handler waits on `space`.
    waiting_for_space: bool,
    shutdown: bool,
    /// Explicit flushes asked for, and the last one the writer completed.
    flush_requested: u64,
    flush_done: u64,
    /// A failure the writer saw that nobody has taken yet.
    error: Option<StorageError>,
    stats: BackgroundStats,
}

impl Backlog {
    fn bytes(&self) -> usize {
        self.data.len() + self.entries.len() * ENTRY_COST
    }

    fn is_idle(&self) -> bool {
        self.entries.is_empty()
            && self.flush_points == 0
            && self.flush_requested == self.flush_done
            && !self.shutdown
    }
}

#[derive(Debug)]
struct Shared {
    backlog: Mutex<Backlog>,
    /// The writer waits here when parked.
    work: Condvar,
    /// Handlers wait here for room in the backlog.
    space: Condvar,
    /// [`BackgroundStorage::flush`] waits here for its flush to be done.
    done: Condvar,
    /// `backlog.error` is set: lets the handler skip nothing but one relaxed load.
    failed: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Backlog> {
        // A writer that panicked left consistent data (it never panics while holding it).
        self.backlog.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A [`Storage`] that hands every change to a writer thread owning a [`FileStorage`]: the
/// MMIO handler copies the changed bytes into a bounded backlog and makes no system call in
/// the normal case (see the [module documentation](self) for when it does, for the
/// back-pressure, and for when a failure reaches the guest).
///
/// [`flush`](Self::flush) waits until everything recorded so far is written (and synced as
/// the file backend's [`Durability`](crate::Durability) asks); dropping the storage does the
/// same and stops the thread; [`finish`](Self::finish) also returns the file backend. A VMM
/// that ends with `std::process::exit` (which runs no destructor) flushes first, or the
/// file stays at the prefix the writer had reached.
///
/// ```
/// use pflash::{BackgroundStorage, Durability, FileStorage, Geometry, NoEvents, Pflash};
///
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("vars.fd");
/// # std::fs::write(&path, vec![0xff; 0x84000])?;
/// let geometry = Geometry::q35(0x84000)?;
/// let file = FileStorage::open(&path, 0x84000, false, Durability::FlushPoints)?;
/// let content = file.read_content()?;
/// let storage = BackgroundStorage::spawn(file, Default::default())?;
/// let mut flash = Pflash::new(geometry, content, storage, NoEvents)?;
/// flash.write(0x100, &[0x10]);
/// flash.write(0x100, &[0x5a]); // copied into the backlog; no system call
/// flash.write(0x100, &[0xff]); // flush point: the writer thread writes and syncs
/// flash.storage_mut().flush()?; // waits for it
/// assert_eq!(std::fs::read(&path)?[0x100], 0x5a);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct BackgroundStorage {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<FileStorage>>,
    options: BackgroundOptions,
    path: PathBuf,
    len: usize,
    read_only: bool,
}

impl BackgroundStorage {
    /// Starts a writer thread (named `pflash-writer`) for `file`.
    ///
    /// # Errors
    ///
    /// The thread cannot be started.
    pub fn spawn(file: FileStorage, options: BackgroundOptions) -> Result<Self, StorageError> {
        let path = file.path().to_path_buf();
        let len = file.len();
        let read_only = file.is_read_only();
        let options = BackgroundOptions {
            poll_interval: options.poll_interval.max(Duration::from_micros(10)),
            ..options
        };
        // Both halves of the double buffer are allocated at their bound now, so that the
        // handler never allocates (an allocation can be an mmap or brk system call). Pages
        // that the backlog never reaches are never touched, so never resident.
        let capacity = options.backlog_bytes;
        let shared = Arc::new(Shared {
            backlog: Mutex::new(Backlog {
                entries: Vec::with_capacity(capacity / ENTRY_COST),
                data: Vec::with_capacity(capacity),
                operations: 0,
                flush_points: 0,
                parked: false,
                waiting_for_space: false,
                shutdown: false,
                flush_requested: 0,
                flush_done: 0,
                error: None,
                stats: BackgroundStats {
                    file: file.stats(),
                    ..BackgroundStats::default()
                },
            }),
            work: Condvar::new(),
            space: Condvar::new(),
            done: Condvar::new(),
            failed: AtomicBool::new(false),
        });
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("pflash-writer".into())
                .spawn(move || write_loop(&shared, file, options, capacity))
                .map_err(|source| StorageError {
                    context: format!("{}: cannot start the writer thread", path.display()),
                    source,
                })?
        };
        Ok(BackgroundStorage {
            shared,
            writer: Some(writer),
            options,
            path,
            len,
            read_only,
        })
    }

    /// The options in force.
    pub fn options(&self) -> BackgroundOptions {
        self.options
    }

    /// The backing file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The counters so far.
    pub fn stats(&self) -> BackgroundStats {
        self.shared.lock().stats
    }

    /// Whether the writer saw a failure that has not been handed over yet (the device gets
    /// it at its next program, erase or flush point; [`flush`](Self::flush) returns it).
    pub fn has_failed(&self) -> bool {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// Wakes the writer if it is parked and has work: what the handler does itself with
    /// [`Wake::ByHandler`]. A VMM using [`Wake::ByCaller`] calls this after handling each
    /// exit, before entering the guest again; it costs an uncontended lock, and one `futex`
    /// call only when it wakes the writer.
    ///
    /// ```
    /// use pflash::{BackgroundOptions, BackgroundStorage, Durability, FileStorage, Geometry};
    /// use pflash::{NoEvents, Pflash, Wake};
    ///
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("vars.fd");
    /// # std::fs::write(&path, vec![0xff; 0x84000])?;
    /// let file = FileStorage::open(&path, 0x84000, false, Durability::FlushPoints)?;
    /// let content = file.read_content()?;
    /// let options = BackgroundOptions { wake: Wake::ByCaller, ..Default::default() };
    /// let storage = BackgroundStorage::spawn(file, options)?;
    /// let mut flash = Pflash::new(Geometry::q35(0x84000)?, content, storage, NoEvents)?;
    /// // The run loop: handle an exit…
    /// flash.write(0x100, &[0x10]);
    /// flash.write(0x100, &[0x5a]);
    /// flash.write(0x100, &[0xff]);
    /// // …then, before entering the guest again:
    /// flash.storage().kick();
    /// # flash.storage_mut().flush()?;
    /// # assert_eq!(std::fs::read(&path)?[0x100], 0x5a);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn kick(&self) {
        let mut b = self.shared.lock();
        if b.parked && !b.is_idle() {
            b.stats.kicks += 1;
            wake(&self.shared, &mut b);
        }
    }

    /// Whether the writer is parked: asleep until a wake-up, not polling for work. A VMM can
    /// look before deciding when to [`kick`](Self::kick); tests wait for it instead of sleeping
    /// for a fixed time.
    pub fn is_parked(&self) -> bool {
        self.shared.lock().parked
    }

    /// Bytes recorded and not yet taken by the writer.
    pub fn backlog_bytes(&self) -> usize {
        self.shared.lock().bytes()
    }

    /// Waits until every change recorded so far is written to the file (changes after the
    /// last flush point included) and synced as the durability asks.
    ///
    /// # Errors
    ///
    /// A failure of the writer not yet handed to the device (it is then not handed to it).
    pub fn flush(&mut self) -> Result<(), StorageError> {
        let shared = &*self.shared;
        let mut b = shared.lock();
        b.flush_requested += 1;
        let ticket = b.flush_requested;
        wake(shared, &mut b);
        while b.flush_done < ticket && self.writer.as_ref().is_some_and(|w| !w.is_finished()) {
            b = wait_a_while(&shared.done, b);
        }
        if b.flush_done < ticket {
            return Err(self.error(
                "the writer thread stopped",
                io::Error::other("the pflash writer thread panicked"),
            ));
        }
        take_error(shared, &mut b)
    }

    /// Flushes, stops the writer and returns the file backend.
    ///
    /// # Errors
    ///
    /// As for [`flush`](Self::flush); the file backend is lost only if the thread panicked.
    pub fn finish(mut self) -> Result<FileStorage, StorageError> {
        let flushed = self.flush();
        let file = self.stop()?;
        flushed.map(|()| file)
    }

    fn stop(&mut self) -> Result<FileStorage, StorageError> {
        {
            let mut b = self.shared.lock();
            b.shutdown = true;
            wake(&self.shared, &mut b);
        }
        let writer = self.writer.take().ok_or_else(|| {
            self.error(
                "the writer thread stopped",
                io::Error::other("already stopped"),
            )
        })?;
        writer.join().map_err(|_| {
            self.error(
                "the writer thread stopped",
                io::Error::other("the pflash writer thread panicked"),
            )
        })
    }

    fn error(&self, what: &str, source: io::Error) -> StorageError {
        StorageError {
            context: format!("{}: {what}", self.path.display()),
            source,
        }
    }

    /// What the file backend would refuse, refused at once (the writer only sees bytes).
    fn check(&self, content: &[u8], range: &Range<usize>) -> Result<(), StorageError> {
        check_change(&self.path, self.read_only, self.len, content, range)
    }

    /// Hands a failure of the writer to the device, if there is one.
    fn pending_error(&self) -> Result<(), StorageError> {
        if !self.shared.failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        take_error(&self.shared, &mut self.shared.lock())
    }
}

/// Waits on `condvar`, but never long: the loops around it re-check that the writer thread
/// is still alive, so a writer that died (a panic) cannot hang the vCPU.
fn wait_a_while<'a>(condvar: &Condvar, b: MutexGuard<'a, Backlog>) -> MutexGuard<'a, Backlog> {
    match condvar.wait_timeout(b, Duration::from_millis(100)) {
        Ok((b, _)) => b,
        Err(e) => e.into_inner().0,
    }
}

/// Notifies the writer if it is parked.
fn wake(shared: &Shared, b: &mut Backlog) {
    if b.parked {
        b.parked = false;
        shared.work.notify_one();
    }
}

/// The handler's wake-up: counted, and only if the options let the handler wake the writer
/// (`needed`: back-pressure, where it must).
fn handler_wake(shared: &Shared, b: &mut Backlog, options: &BackgroundOptions, needed: bool) {
    if b.parked && (needed || options.wake == Wake::ByHandler) {
        b.stats.wakeups += 1;
        wake(shared, b);
    }
}

fn take_error(shared: &Shared, b: &mut Backlog) -> Result<(), StorageError> {
    shared.failed.store(false, Ordering::Relaxed);
    b.error.take().map_or(Ok(()), Err)
}

impl Storage for BackgroundStorage {
    fn record_change(&mut self, content: &[u8], range: Range<usize>) -> Result<(), StorageError> {
        self.check(content, &range)?;
        let shared = &*self.shared;
        let mut b = shared.lock();
        let len = range.len();
        // Back-pressure: wait for the writer to take the backlog.
        let mut waited = false;
        while !b.entries.is_empty() && b.bytes() + len + ENTRY_COST > self.options.backlog_bytes {
            if self.writer.as_ref().is_none_or(|w| w.is_finished()) {
                return Err(self.error(
                    "the writer thread stopped",
                    io::Error::other("the pflash writer thread panicked"),
                ));
            }
            if !std::mem::replace(&mut waited, true) {
                b.stats.backpressure_waits += 1;
            }
            b.waiting_for_space = true;
            handler_wake(shared, &mut b, &self.options, true);
            b = wait_a_while(&shared.space, b);
        }
        b.operations += 1;
        if len != 0 {
            match b.entries.last_mut() {
                Some(last) if last.offset + last.len == range.start => last.len += len,
                _ => b.entries.push(Entry {
                    offset: range.start,
                    len,
                }),
            }
            b.data.extend_from_slice(&content[range]);
            let bytes = b.bytes();
            b.stats.peak_backlog_bytes = b.stats.peak_backlog_bytes.max(bytes);
            if bytes > self.options.backlog_bytes / 2 {
                handler_wake(shared, &mut b, &self.options, false);
            }
        }
        drop(b);
        self.pending_error()
    }

    fn flush_point(&mut self, _content: &[u8]) -> Result<(), StorageError> {
        if self.read_only {
            return Ok(());
        }
        let shared = &*self.shared;
        let mut b = shared.lock();
        b.flush_points += 1;
        handler_wake(shared, &mut b, &self.options, false);
        drop(b);
        self.pending_error()
    }
}

impl Drop for BackgroundStorage {
    /// Waits for the backlog to reach the file and stops the writer. Errors cannot be
    /// reported here: call [`flush`](Self::flush) or [`finish`](Self::finish) to see them.
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = self.stop();
        }
    }
}

/// The writer thread: takes the backlog in batches and applies it to `file` in order.
fn write_loop(
    shared: &Shared,
    mut file: FileStorage,
    options: BackgroundOptions,
    capacity: usize,
) -> FileStorage {
    let mut entries = Vec::with_capacity(capacity / ENTRY_COST);
    let mut data = Vec::with_capacity(capacity);
    let mut last_work = Instant::now();
    loop {
        let (flush_ticket, flush_wanted, shutdown, operations, flush_points) = {
            let mut b = shared.lock();
            while b.is_idle() {
                let idle = last_work.elapsed();
                if options.park_after.is_some_and(|limit| idle >= limit) {
                    b.parked = true;
                    b = shared.work.wait(b).unwrap_or_else(|e| e.into_inner());
                    b.parked = false;
                    last_work = Instant::now();
                } else {
                    drop(b);
                    std::thread::sleep(options.poll_interval);
                    b = shared.lock();
                }
            }
            std::mem::swap(&mut entries, &mut b.entries);
            std::mem::swap(&mut data, &mut b.data);
            if b.waiting_for_space {
                b.waiting_for_space = false;
                shared.space.notify_all();
            }
            b.stats.batches += 1;
            let counts = (
                std::mem::take(&mut b.operations),
                std::mem::take(&mut b.flush_points),
            );
            (
                b.flush_requested,
                b.flush_requested != b.flush_done,
                b.shutdown,
                counts.0,
                counts.1,
            )
        };
        if !entries.is_empty() {
            last_work = Instant::now();
        }
        file.count(operations, 0);
        let result = apply(&mut file, &entries, &data, flush_points).and_then(|()| {
            if shutdown || flush_wanted {
                explicit_flush(&mut file)
            } else {
                Ok(())
            }
        });
        entries.clear();
        data.clear();
        let mut b = shared.lock();
        if let Err(e) = result {
            if b.error.is_none() {
                b.error = Some(e);
                shared.failed.store(true, Ordering::Relaxed);
            }
        }
        b.stats.file = file.stats();
        if b.flush_done != flush_ticket {
            b.flush_done = flush_ticket;
            shared.done.notify_all();
        }
        if shutdown && b.entries.is_empty() {
            return file;
        }
    }
}

/// Applies one batch in order; the flush points in it become one flush point at its end.
fn apply(
    file: &mut FileStorage,
    entries: &[Entry],
    data: &[u8],
    flush_points: u64,
) -> Result<(), StorageError> {
    let mut at = 0;
    let mut result = Ok(());
    for &Entry { offset, len } in entries {
        let bytes = &data[at..at + len];
        at += len;
        if result.is_ok() {
            result = file.record_bytes(offset, bytes);
        } else {
            // Keep the order: queue behind the failure, to be retried with it.
            let _ = file.record_bytes(offset, bytes);
        }
    }
    file.count(0, flush_points);
    if flush_points != 0 && result.is_ok() {
        result = file.write_flush_point();
    }
    result
}

/// An explicit flush: everything buffered, changes after the last flush point included.
fn explicit_flush(file: &mut FileStorage) -> Result<(), StorageError> {
    file.flush()?;
    if file.durability() != crate::Durability::None {
        file.sync()?;
    }
    Ok(())
}
