//! The vars flash: the one module that touches the `pflash` crate's API, so that the VMM
//! follows that API in one place.
//!
//! The device is a [`pflash::Pflash`] over [`SlotMemory`] (the pages KVM maps), with a
//! [`VarsStorage`] (every program and erase goes to the varstore file in order, from a
//! writer thread by default) and [`ModeEvents`], which records the device's array-mode
//! notifications for the VMM to apply to its memory slot between two exits.

use std::path::Path;

use std::ops::Range;

use pflash::migration::CommitStats;
use pflash::{
    BackgroundOptions, BackgroundStorage, Compat, Deferred, DirtyTracking, Durability, FileStorage,
    Geometry, Pflash, PflashEvents, Storage, StorageError, StorageStats, Wake,
};
use vm_memory::mmap::MmapRegionError;
use vm_memory::MmapRegion;

/// The trace format the boot workload is generated from.
pub use pflash_trace::{parse_trace, TraceOp};

/// What the VMM learns from the device's [`PflashEvents`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ModeEvents {
    /// The array mode the device switched to since the VMM last looked, if it did.
    #[serde(skip)]
    pending_mode: Option<bool>,
    /// Writes the command set refused.
    pub invalid_commands: u64,
    /// Programs that failed (status bit 0x10).
    pub program_errors: u64,
    /// Blocks erased.
    pub erases: u64,
    /// Storage failures (the guest sees them in the status register).
    pub storage_errors: u64,
}

impl PflashEvents for ModeEvents {
    fn array_mode_changed(&mut self, array_mode: bool) {
        self.pending_mode = Some(array_mode);
    }

    fn invalid_command(&mut self, _offset: u64, _command: u8) {
        self.invalid_commands += 1;
    }

    fn program_error(&mut self, _offset: u64) {
        self.program_errors += 1;
    }

    fn erased(&mut self, _offset: u64, _len: u64) {
        self.erases += 1;
    }

    fn storage_error(&mut self, _error: &StorageError) {
        self.storage_errors += 1;
    }
}

/// Why the vars flash cannot be set up or saved.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    /// The varstore file cannot be opened, read or written.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Its size makes no q35 flash.
    #[error("{path}: {source}")]
    Geometry {
        /// The varstore file.
        path: String,
        /// Why.
        #[source]
        source: pflash::GeometryError,
    },
    /// The memory for the slot cannot be mapped.
    #[error("mapping {len} bytes for the vars flash slot: {source}")]
    Mmap {
        /// Size asked for.
        len: usize,
        /// Why.
        #[source]
        source: MmapRegionError,
    },
}

/// The flash content: an anonymous, page-aligned mapping that the device reads and writes
/// in place and that the VMM registers as a read-only KVM memory slot in array mode.
#[derive(Debug)]
pub struct SlotMemory(MmapRegion);

impl SlotMemory {
    /// `len` bytes of zeroed, page-aligned memory.
    ///
    /// # Errors
    ///
    /// The mapping fails.
    pub fn new(len: usize) -> Result<Self, FlashError> {
        MmapRegion::new(len)
            .map(SlotMemory)
            .map_err(|source| FlashError::Mmap { len, source })
    }

    /// Host address and length, for `KVM_SET_USER_MEMORY_REGION`.
    pub fn host_range(&self) -> (u64, u64) {
        (self.0.as_ptr() as u64, self.0.size() as u64)
    }
}

impl AsRef<[u8]> for SlotMemory {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the region is a private anonymous mapping of `size()` bytes that lives (and
        // stays mapped) as long as `self`, which the slice borrows. Nothing writes it behind
        // Rust's back: the guest sees it only through a read-only slot, and only inside
        // KVM_RUN, which the single-threaded VMM never enters while it handles an exit.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr(), self.0.size()) }
    }
}

impl AsMut<[u8]> for SlotMemory {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `as_ref`; `&mut self` makes this the only Rust reference, and KVM
        // reads the pages (for the guest) only while the vCPU runs, never while the device
        // is handling an access on the same thread.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_ptr(), self.0.size()) }
    }
}

/// Who writes the varstore file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Writer {
    /// A writer thread ([`BackgroundStorage`]) that the run loop wakes
    /// ([`Wake::ByCaller`], [`VarsFlash::kick`]): the MMIO handler makes no system call
    /// except under back-pressure.
    #[default]
    Background,
    /// The vCPU thread itself ([`FileStorage`]), at each flush point.
    Inline,
}

/// The varstore file behind the device, written by the vCPU thread or a writer thread.
#[derive(Debug)]
pub enum VarsStorage {
    /// [`Writer::Background`].
    Background(BackgroundStorage),
    /// [`Writer::Inline`].
    Inline(FileStorage),
}

impl Storage for VarsStorage {
    fn record_change(&mut self, content: &[u8], range: Range<usize>) -> Result<(), StorageError> {
        match self {
            VarsStorage::Background(s) => s.record_change(content, range),
            VarsStorage::Inline(s) => s.record_change(content, range),
        }
    }

    fn flush_point(&mut self, content: &[u8]) -> Result<(), StorageError> {
        match self {
            VarsStorage::Background(s) => s.flush_point(content),
            VarsStorage::Inline(s) => s.flush_point(content),
        }
    }
}

/// What the storage did, whichever writes the file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct WriterStats {
    /// Program and erase operations recorded.
    pub operations: u64,
    /// Flush points the device signalled.
    pub flush_points: u64,
    /// `pwrite` calls (on whichever thread writes).
    pub write_syscalls: u64,
    /// `fdatasync` calls.
    pub fsyncs: u64,
    /// Bytes written to the file.
    pub bytes_written: u64,
    /// Times the MMIO handler woke a parked writer thread (a system call each; background
    /// writer only, and then only under back-pressure).
    pub wakeups: u64,
    /// Times the run loop woke a parked writer thread with work ([`VarsFlash::kick`]; a
    /// system call each).
    pub kicks: u64,
    /// Times the vCPU thread waited for a full backlog (background writer only).
    pub backpressure_waits: u64,
}

impl WriterStats {
    fn from_file(file: StorageStats) -> Self {
        WriterStats {
            operations: file.operations,
            flush_points: file.flush_points,
            write_syscalls: file.write_syscalls,
            fsyncs: file.fsyncs,
            bytes_written: file.bytes_written,
            ..Default::default()
        }
    }
}

/// The device as the VMM holds it. [`DirtyTracking`] records the chunks a program or erase
/// changed (what a migration's pre-copy resends; a bit set per change otherwise). The
/// [`Deferred`] storage has the file attached from the start in a VMM that opened the
/// varstore, and only at the commit point in a migration destination
/// ([`VarsFlash::from_incoming`], [`VarsFlash::commit`]).
pub type VarsDevice = Pflash<SlotMemory, DirtyTracking<Deferred<VarsStorage>>, ModeEvents>;

/// The vars flash: the device over [`SlotMemory`] and its file.
#[derive(Debug)]
pub struct VarsFlash {
    device: VarsDevice,
}

fn spawn_storage(file: FileStorage, writer: Writer) -> Result<VarsStorage, StorageError> {
    Ok(match writer {
        Writer::Background => {
            let options = BackgroundOptions {
                wake: Wake::ByCaller,
                ..BackgroundOptions::default()
            };
            VarsStorage::Background(BackgroundStorage::spawn(file, options)?)
        }
        Writer::Inline => VarsStorage::Inline(file),
    })
}

impl VarsFlash {
    /// Opens (and locks) the varstore file and makes a device of its size behaving like
    /// `compat`'s QEMU, persisting with `durability`.
    ///
    /// # Errors
    ///
    /// The file cannot be opened, locked or read, or its size is no q35 flash size.
    pub fn open(
        path: &Path,
        compat: Compat,
        durability: Durability,
        writer: Writer,
    ) -> Result<Self, FlashError> {
        let len = std::fs::metadata(path)
            .map_err(|source| StorageError {
                context: format!("{}: cannot stat the varstore", path.display()),
                source,
            })?
            .len();
        let geometry = Geometry::q35(len)
            .map_err(|source| FlashError::Geometry {
                path: path.display().to_string(),
                source,
            })?
            .with_compat(compat);
        let file = FileStorage::open(path, len as usize, false, durability)?;
        let mut memory = SlotMemory::new(len as usize)?;
        memory.as_mut().copy_from_slice(&file.read_content()?);
        let mut deferred = Deferred::new();
        deferred.attach(spawn_storage(file, writer)?);
        let storage = DirtyTracking::new(deferred, &geometry);
        let device =
            Pflash::new(geometry, memory, storage, ModeEvents::default()).map_err(|source| {
                FlashError::Geometry {
                    path: path.display().to_string(),
                    source,
                }
            })?;
        Ok(VarsFlash { device })
    }

    /// A migration destination's vars flash: the content and registers `incoming` carried,
    /// in a fresh slot mapping, with no file attached. Nothing touches any varstore file
    /// until [`commit`](Self::commit).
    ///
    /// # Errors
    ///
    /// The mapping fails, or the received device does not fit it (it always does: the
    /// geometry was checked against the local one).
    pub fn from_incoming(incoming: pflash_migration::Incoming) -> Result<Self, FlashError> {
        let geometry = incoming.geometry().clone();
        let memory = SlotMemory::new(geometry.size() as usize)?;
        let storage = DirtyTracking::new(Deferred::new(), &geometry);
        let device = incoming
            .into_device_in(memory, storage, ModeEvents::default())
            .map_err(|source| FlashError::Geometry {
                path: "the received flash".into(),
                source,
            })?;
        Ok(VarsFlash { device })
    }

    /// The commit point of a migration destination: replaces `path` with the device's
    /// content (atomically, see [`pflash::migration::commit_file`]) and attaches it as the
    /// storage, written by `writer` from now on.
    ///
    /// # Errors
    ///
    /// The file cannot be written, is still locked by the source, or this flash already
    /// has a file.
    pub fn commit(
        &mut self,
        path: &Path,
        durability: Durability,
        writer: Writer,
    ) -> Result<CommitStats, FlashError> {
        if self.device.storage().inner().is_committed() {
            return Err(FlashError::Storage(StorageError {
                context: format!("{}: cannot commit", path.display()),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the vars flash already has a file",
                ),
            }));
        }
        let (file, stats) = pflash::migration::commit_file(path, self.device.memory(), durability)?;
        let storage = spawn_storage(file, writer)?;
        self.device.storage_mut().inner_mut().attach(storage);
        Ok(stats)
    }

    /// Flushes the varstore file and closes it (unlocking it), once a migration's
    /// destination took the guest over: the destination commits to the file only after
    /// that. The device keeps its content; later changes stay in memory.
    ///
    /// # Errors
    ///
    /// The file cannot be written.
    pub fn release_file(&mut self) -> Result<(), FlashError> {
        self.flush()?;
        drop(std::mem::take(self.device.storage_mut().inner_mut()));
        Ok(())
    }

    /// The device, for a migration's [`pflash_migration::Outgoing`].
    pub fn device_mut(&mut self) -> &mut VarsDevice {
        &mut self.device
    }

    /// The device.
    pub fn device(&self) -> &VarsDevice {
        &self.device
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.device.geometry().size()
    }

    /// Always `false`: a flash has at least one block.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether the device serves reads from memory (the slot may be mapped).
    pub fn is_array_mode(&self) -> bool {
        self.device.is_array_mode()
    }

    /// An MMIO read at `offset`.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.device.read(offset, data);
    }

    /// An MMIO write at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        self.device.write(offset, data);
    }

    /// The array mode the device switched to since the last call, if it did: the VMM maps
    /// the slot on `Some(true)` and removes it on `Some(false)`. The slot memory is the
    /// device's memory, so nothing is copied.
    pub fn take_mode_change(&mut self) -> Option<bool> {
        self.device.events_mut().pending_mode.take()
    }

    /// Host address and length of the device's memory, for `KVM_SET_USER_MEMORY_REGION`.
    /// The mapping never moves: the address holds as long as `self`.
    pub fn slot_host_memory(&self) -> (u64, u64) {
        let memory = self.device.memory();
        (memory.as_ptr() as u64, memory.len() as u64)
    }

    /// What the device reported.
    pub fn events(&self) -> ModeEvents {
        *self.device.events()
    }

    /// What the storage did so far (for the background writer: as of its last batch; exact
    /// after [`flush`](Self::flush)).
    pub fn storage_stats(&self) -> WriterStats {
        match self.device.storage().inner().get() {
            None => WriterStats::default(),
            Some(VarsStorage::Background(s)) => {
                let stats = s.stats();
                WriterStats {
                    wakeups: stats.wakeups,
                    kicks: stats.kicks,
                    backpressure_waits: stats.backpressure_waits,
                    ..WriterStats::from_file(stats.file)
                }
            }
            Some(VarsStorage::Inline(s)) => WriterStats::from_file(s.stats()),
        }
    }

    /// Wakes the background writer if it parked while the guest recorded changes: the run
    /// loop calls this after handling an exit, before `KVM_RUN`, so that the MMIO handler
    /// never has to ([`Wake::ByCaller`]). Nothing for the inline writer.
    pub fn kick(&self) {
        if let Some(VarsStorage::Background(s)) = self.device.storage().inner().get() {
            s.kick();
        }
    }

    /// Waits until every change is in the file (changes after the last flush point, from a
    /// guest stopped in the middle of a sequence, included).
    ///
    /// # Errors
    ///
    /// The file cannot be written.
    pub fn flush(&mut self) -> Result<(), FlashError> {
        match self.device.storage_mut().inner_mut().get_mut() {
            None => {}
            Some(VarsStorage::Background(s)) => s.flush()?,
            Some(VarsStorage::Inline(s)) => s.flush()?,
        }
        Ok(())
    }
}
