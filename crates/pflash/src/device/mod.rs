//! The command state machine of the Intel (CFI 01) command set, as QEMU 10.0 and QEMU 7.2
//! implement it (the differences are marked `Compat::` where they branch).

//!
//! `mod.rs` has the device, its construction and the read path; `write.rs` the write path.

use std::ops::Range;

use crate::cfi::{self, Cfi};
use crate::commands::{
    BLOCK_ERASE, BLOCK_ERASE_ALT, BUFFERED_PROGRAM, CFI_QUERY, CLEAR_STATUS, ERASED, LOCK_SETUP,
    PROGRAM, PROGRAM_ALT, READ_ARRAY_ZERO, READ_ID, READ_STATUS, STATUS_READY,
};
use crate::geometry::{Geometry, GeometryError};
use crate::state::{PflashState, WriteBuffer};
use crate::storage::{NoStorage, Storage, StorageError};

/// Hooks through which the device reports what a VMM may want to act on or count.
/// Every method defaults to doing nothing.
pub trait PflashEvents {
    /// The device entered (`true`) or left (`false`) read-array mode. While in read-array
    /// mode reads may be served straight from [`Pflash::memory`] (for example by mapping it
    /// read-only into the guest); otherwise every read must go through [`Pflash::read`].
    /// Called only on real transitions.
    fn array_mode_changed(&mut self, array_mode: bool) {
        let _ = array_mode;
    }

    /// A write that the command set does not accept (QEMU logs "unimplemented flash cmd
    /// sequence"); the device went back to read-array mode. `command` is the low byte written.
    fn invalid_command(&mut self, offset: u64, command: u8) {
        let _ = (offset, command);
    }

    /// A program (single or buffered) failed at `offset`: read-only flash, buffered data
    /// outside its write block, or a storage error. The status register has bit 0x10 set.
    fn program_error(&mut self, offset: u64) {
        let _ = offset;
    }

    /// `len` bytes at `offset` were erased (set to 0xFF).
    fn erased(&mut self, offset: u64, len: u64) {
        let _ = (offset, len);
    }

    /// The storage backend failed; the status register has the program (0x10) or erase
    /// (0x20) error bit set and the in-memory content is ahead of the backing store.
    fn storage_error(&mut self, error: &StorageError) {
        let _ = error;
    }
}

/// Ignores every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEvents;

impl PflashEvents for NoEvents {}

/// A CFI 01 (Intel command set) parallel NOR flash, behaving like the `cfi.pflash01` of the
/// QEMU release [`Geometry::compat`] names (QEMU 10.0 by default, or QEMU 7.2).
///
/// The content lives in memory of the caller's choosing, `M`: a `Vec<u8>` (the default), a
/// `Box<[u8]>`, a `&mut [u8]` borrowed from a larger buffer, or a VMM's own page-aligned
/// mapping (anything that is `AsRef<[u8]> + AsMut<[u8]>`, such as `memmap2::MmapMut`). The
/// device reads and writes it in place and never copies it, so a VMM can register the same
/// pages as a read-only memory slot while the device is in read-array mode (see
/// [`PflashEvents::array_mode_changed`]) and pay nothing at mode changes.
///
/// The device answers MMIO accesses at offsets relative to its base.
/// Accesses are 1, 2, 4 or 8 bytes; an 8-byte access is handled as two 4-byte accesses,
/// lower address first, as QEMU's memory core splits it. Multi-byte values are in guest
/// byte order: little-endian unless [`Geometry::big_endian`]. Accesses that reach past the
/// end of the device, or of another length, are ignored (reads return zeros).
///
/// Every completed program and erase is reported to the [`Storage`], and the storage gets a
/// flush point whenever the device returns to read-array mode and right after each erase.
///
/// ```
/// use pflash::{Geometry, Pflash};
///
/// let geometry = Geometry::q35(0x84000).unwrap();
/// let mut flash: Pflash = Pflash::new(geometry, vec![0xff; 0x84000], Default::default(), Default::default()).unwrap();
///
/// // Program one byte the way OVMF does: 0x10, the data, then back to read array.
/// flash.write(0x20000, &[0x10]);
/// flash.write(0x20000, &[0xa5]);
/// let mut status = [0u8; 1];
/// flash.read(0x20000, &mut status);
/// assert_eq!(status, [0x80]); // still in program mode: reads give the status register
/// flash.write(0x20000, &[0xff]);
/// assert!(flash.is_array_mode());
/// assert_eq!(flash.memory()[0x20000], 0xa5);
///
/// // CFI query: "QRY" at 0x10.
/// flash.write(0, &[0x98]);
/// let mut qry = [0u8; 1];
/// flash.read(0x10, &mut qry);
/// assert_eq!(qry, [b'Q']);
/// ```
pub struct Pflash<M = Vec<u8>, S = NoStorage, E = NoEvents>
where
    M: AsRef<[u8]> + AsMut<[u8]>,
    S: Storage,
    E: PflashEvents,
{
    geometry: Geometry,
    cfi: Cfi,
    /// The flash content, owned by the caller's type (a `Vec`, or the VMM's mapping).
    content: M,
    storage: S,
    events: E,
    wcycle: u8,
    cmd: u8,
    status: u8,
    counter: u64,
    array_mode: bool,
    /// Offset of the open buffered-write block.
    blk_offset: Option<u64>,
    /// Staging buffer for buffered writes, `cfi.writeblock_size` bytes, allocated once.
    blk_bytes: Vec<u8>,
    /// Device offsets written into the staging buffer.
    blk_written: Range<u64>,
}

impl<M: AsRef<[u8]> + AsMut<[u8]>, S: Storage, E: PflashEvents> std::fmt::Debug
    for Pflash<M, S, E>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pflash")
            .field("geometry", &self.geometry)
            .field("wcycle", &self.wcycle)
            .field("cmd", &format_args!("{:#04x}", self.cmd))
            .field("status", &format_args!("{:#04x}", self.status))
            .field("counter", &self.counter)
            .field("array_mode", &self.array_mode)
            .field("blk_offset", &self.blk_offset)
            .finish_non_exhaustive()
    }
}

impl<M: AsRef<[u8]> + AsMut<[u8]>, S: Storage, E: PflashEvents> Pflash<M, S, E> {
    /// A device in its reset state (read-array mode, status 0x80) over `memory`, which holds
    /// the flash content and stays where it is (the device borrows nothing else).
    ///
    /// # Errors
    ///
    /// The geometry is invalid ([`Geometry::validate`]) or `memory` is not
    /// [`Geometry::size`] bytes long.
    pub fn new(
        geometry: Geometry,
        memory: M,
        storage: S,
        events: E,
    ) -> Result<Self, GeometryError> {
        Self::from_state(geometry, memory, &PflashState::default(), storage, events)
    }

    /// A device resuming from `state` (see [`Pflash::state`]).
    ///
    /// Nothing is reported to the storage or the events: the VMM knows it is restoring.
    /// (QEMU writes the whole image back to its file when a migrated guest first runs; a VMM
    /// that wants that calls its storage itself.)
    ///
    /// # Errors
    ///
    /// As for [`Pflash::new`], and [`GeometryError::State`] for an open buffered write whose
    /// buffer does not fit this geometry.
    pub fn from_state(
        geometry: Geometry,
        memory: M,
        state: &PflashState,
        storage: S,
        events: E,
    ) -> Result<Self, GeometryError> {
        geometry.validate()?;
        let len = memory.as_ref().len() as u64;
        if len != geometry.size() {
            return Err(GeometryError::ContentLength {
                expected: geometry.size(),
                got: len,
            });
        }
        let cfi = Cfi::new(&geometry);
        let wbs = cfi.writeblock_size;
        let mut blk_bytes = vec![ERASED; wbs as usize];
        let mut blk_offset = None;
        let mut blk_written = 0..0;
        if let Some(buf) = &state.write_buffer {
            if buf.bytes.len() as u64 != wbs {
                return Err(GeometryError::State(
                    "write buffer length is not the write-block size",
                ));
            }
            if buf.offset % wbs != 0 || buf.offset >= geometry.size() {
                return Err(GeometryError::State(
                    "write buffer offset is unaligned or outside the device",
                ));
            }
            let w = &buf.written;
            if w.start > w.end
                || (w.start < w.end && (w.start < buf.offset || w.end > buf.offset + wbs))
            {
                return Err(GeometryError::State(
                    "written range is outside the write buffer",
                ));
            }
            blk_bytes.copy_from_slice(&buf.bytes);
            blk_offset = Some(buf.offset);
            blk_written = w.clone();
        }
        Ok(Pflash {
            geometry,
            cfi,
            content: memory,
            storage,
            events,
            wcycle: state.wcycle,
            cmd: state.cmd,
            status: state.status,
            counter: state.counter,
            array_mode: state.array_mode,
            blk_offset,
            blk_bytes,
            blk_written,
        })
    }

    /// The snapshot state (everything besides geometry and content).
    pub fn state(&self) -> PflashState {
        PflashState {
            wcycle: self.wcycle,
            cmd: self.cmd,
            status: self.status,
            counter: self.counter,
            array_mode: self.array_mode,
            write_buffer: self.blk_offset.map(|offset| WriteBuffer {
                offset,
                bytes: self.blk_bytes.clone(),
                written: self.blk_written.clone(),
            }),
        }
    }

    /// The device's configuration.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The flash content (what the guest sees in read-array mode).
    pub fn memory(&self) -> &[u8] {
        self.content.as_ref()
    }

    /// Whether reads are served straight from [`Pflash::memory`] (QEMU's ROMD mode).
    pub fn is_array_mode(&self) -> bool {
        self.array_mode
    }

    /// The storage backend.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The storage backend, mutably.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    /// The event hooks.
    pub fn events(&self) -> &E {
        &self.events
    }

    /// The event hooks, mutably.
    pub fn events_mut(&mut self) -> &mut E {
        &mut self.events
    }

    /// Takes the device apart: memory, storage, events.
    pub fn into_parts(self) -> (M, S, E) {
        (self.content, self.storage, self.events)
    }

    /// System reset: read-array mode, status 0x80, an open buffered write is dropped.
    pub fn reset(&mut self) {
        self.cmd = READ_ARRAY_ZERO;
        self.wcycle = 0;
        self.status = STATUS_READY;
        self.blk_offset = None;
        self.set_array_mode(true);
    }

    /// `true` if `len` bytes at `offset` lie inside the device.
    fn in_range(&self, offset: u64, len: usize) -> bool {
        offset
            .checked_add(len as u64)
            .is_some_and(|end| end <= self.content.as_ref().len() as u64)
    }

    /// An MMIO read of `data.len()` (1, 2, 4 or 8) bytes at `offset`.
    ///
    /// Accesses are expected naturally aligned, as a guest's MMIO reaches a device: an
    /// unaligned access is the bus's to split (QEMU's memory core cuts it into aligned pieces
    /// of at most 4 bytes before `cfi.pflash01` sees them, and the differential test splits
    /// the same way).
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if !self.in_range(offset, data.len()) {
            data.fill(0);
            return;
        }
        if self.array_mode {
            let start = offset as usize;
            data.copy_from_slice(&self.content.as_ref()[start..start + data.len()]);
            return;
        }
        match data.len() {
            1 | 2 | 4 => self.read_access(offset, data),
            8 => {
                let (low, high) = data.split_at_mut(4);
                self.read_access(offset, low);
                self.read_access(offset + 4, high);
            }
            _ => data.fill(0),
        }
    }

    /// One device read access of 1, 2 or 4 bytes (QEMU's `pflash_read`).
    fn read_access(&mut self, offset: u64, data: &mut [u8]) {
        let width = data.len() as u32;
        let value = match self.cmd {
            READ_ARRAY_ZERO => return self.data_read(offset, data),
            PROGRAM_ALT | BLOCK_ERASE | BLOCK_ERASE_ALT | PROGRAM | CLEAR_STATUS | LOCK_SETUP
            | READ_STATUS | BUFFERED_PROGRAM => {
                cfi::read_status(&self.geometry, self.status, width)
            }
            READ_ID => cfi::read_id(&self.geometry, offset, width),
            CFI_QUERY => cfi::read_cfi(&self.geometry, &self.cfi, offset, width),
            _ => {
                // Unknown command state (only reachable from a foreign snapshot): QEMU resets
                // the sequence and reads the array, without touching the ROMD flag.
                self.wcycle = 0;
                self.cmd = READ_ARRAY_ZERO;
                return self.data_read(offset, data);
            }
        };
        if self.geometry.big_endian {
            data.copy_from_slice(&value.to_be_bytes()[4 - data.len()..]);
        } else {
            data.copy_from_slice(&value.to_le_bytes()[..data.len()]);
        }
    }

    /// Array data: the bus byte order is the memory order in both endiannesses.
    fn data_read(&self, offset: u64, data: &mut [u8]) {
        let start = offset as usize;
        data.copy_from_slice(&self.content.as_ref()[start..start + data.len()]);
    }
}

mod write;

#[cfg(test)]
mod tests;
