//! The vars flash: the one module that touches the `pflash` crate's API, so that the VMM
//! follows that API in one place.
//!
//! The device is a [`pflash::Pflash`] with a [`FileStorage`] (every program and erase goes
//! to the varstore file in order) and [`ModeEvents`], which records the device's array-mode
//! notifications for the VMM to apply to its memory slot between two exits.

use std::path::Path;

use pflash::{Compat, Durability, FileStorage, Geometry, Pflash, PflashEvents, StorageError};
use vm_memory::mmap::MmapRegionError;
use vm_memory::MmapRegion;

/// The trace format the boot workload is generated from.
pub use pflash::trace::{parse_trace, TraceOp};

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

/// The vars flash: the device, its file, and the page-aligned memory the VMM registers as a
/// read-only KVM memory slot while the device is in read-array mode.
#[derive(Debug)]
pub struct VarsFlash {
    device: Pflash<FileStorage, ModeEvents>,
    /// What the guest reads in array mode without an exit. Until the device works on
    /// caller-owned memory this is a copy of [`Pflash::memory`], refreshed each time the
    /// device enters array mode (the only time the guest can see it).
    slot: MmapRegion,
}

impl VarsFlash {
    /// Opens (and locks) the varstore file and makes a device of its size behaving like
    /// `compat`'s QEMU, persisting with `durability`.
    ///
    /// # Errors
    ///
    /// The file cannot be opened, locked or read, or its size is no q35 flash size.
    pub fn open(path: &Path, compat: Compat, durability: Durability) -> Result<Self, FlashError> {
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
        let storage = FileStorage::open(path, len as usize, false, durability)?;
        let content = storage.read_content()?;
        let device =
            Pflash::new(geometry, content, storage, ModeEvents::default()).map_err(|source| {
                FlashError::Geometry {
                    path: path.display().to_string(),
                    source,
                }
            })?;
        let slot = MmapRegion::new(len as usize).map_err(|source| FlashError::Mmap {
            len: len as usize,
            source,
        })?;
        let mut flash = VarsFlash { device, slot };
        flash.refresh_slot();
        Ok(flash)
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

    /// The array mode the device switched to since the last call, if it did. On a switch
    /// into array mode the slot memory is brought up to date first.
    pub fn take_mode_change(&mut self) -> Option<bool> {
        let mode = self.device.events_mut().pending_mode.take()?;
        if mode {
            self.refresh_slot();
        }
        Some(mode)
    }

    /// Host address and length of the slot memory, for `KVM_SET_USER_MEMORY_REGION`.
    pub fn slot_host_memory(&self) -> (u64, u64) {
        (self.slot.as_ptr() as u64, self.slot.size() as u64)
    }

    fn refresh_slot(&mut self) {
        // SAFETY: `slot` is an anonymous private mapping of `size()` bytes owned by `self`
        // and unmapped only when `self` drops, so the pointer is valid for the slice's
        // lifetime. Nothing else accesses it meanwhile: the guest reads it only inside
        // KVM_RUN, which the VMM (one vCPU, one thread) never enters while handling an exit,
        // and `&mut self` excludes other Rust references.
        let slot = unsafe { std::slice::from_raw_parts_mut(self.slot.as_ptr(), self.slot.size()) };
        slot.copy_from_slice(self.device.memory());
    }

    /// What the device reported.
    pub fn events(&self) -> ModeEvents {
        *self.device.events()
    }

    /// The file backend's counters.
    pub fn storage_stats(&self) -> pflash::StorageStats {
        self.device.storage().stats()
    }

    /// Writes out changes still buffered (a guest stopped in the middle of a sequence).
    ///
    /// # Errors
    ///
    /// The file cannot be written.
    pub fn flush(&mut self) -> Result<(), FlashError> {
        Ok(self.device.storage_mut().flush()?)
    }
}
