//! The command state machine of the Intel (CFI 01) command set, as QEMU 10.0 and QEMU 7.2
//! implement it (the differences are marked `Compat::` where they branch).

use std::ops::Range;

use crate::cfi::{self, Cfi};
use crate::compat::Compat;
use crate::geometry::{Geometry, GeometryError};
use crate::state::{PflashState, WriteBuffer};
use crate::storage::{NoStorage, Storage, StorageError};

use crate::commands::{
    BLOCK_ERASE, BLOCK_ERASE_ALT, BUFFERED_PROGRAM, CFI_QUERY, CLEAR_STATUS, CONFIRM, ERASED,
    LOCK_BLOCK, LOCK_SETUP, PROGRAM, PROGRAM_ALT, READ_ARRAY, READ_ARRAY_AMD_RESET,
    READ_ARRAY_ZERO, READ_ID, READ_STATUS, STATUS_ERASE_ERROR, STATUS_PROGRAM_ERROR, STATUS_READY,
};

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

/// What a write does to the mode once its command is handled.
enum Next {
    /// Stay in the state the command left.
    Stay,
    /// Go back to read-array mode.
    ReadArray,
    /// Unsupported sequence: report it and go back to read-array mode.
    Invalid,
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

    /// An MMIO write of `data.len()` (1, 2, 4 or 8) bytes at `offset`, naturally aligned
    /// (see [`read`](Self::read)).
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if !self.in_range(offset, data.len()) {
            return;
        }
        match data.len() {
            1 | 2 | 4 => self.write_access(offset, data),
            8 => {
                self.write_access(offset, &data[..4]);
                self.write_access(offset + 4, &data[4..]);
            }
            _ => {}
        }
    }

    /// The bus value of `data` (1, 2 or 4 bytes).
    fn value_of(&self, data: &[u8]) -> u32 {
        if self.geometry.big_endian {
            data.iter().fold(0, |v, &b| v << 8 | u32::from(b))
        } else {
            data.iter().rev().fold(0, |v, &b| v << 8 | u32::from(b))
        }
    }

    /// One device write access of 1, 2 or 4 bytes (QEMU's `pflash_write`).
    fn write_access(&mut self, offset: u64, data: &[u8]) {
        let value = self.value_of(data);
        let cmd = value as u8;
        // QEMU leaves ROMD mode on every write in cycle 0, and comes right back for the
        // commands that return to read array: only the others are a transition.
        if self.wcycle == 0
            && matches!(
                cmd,
                PROGRAM_ALT
                    | BLOCK_ERASE
                    | PROGRAM
                    | LOCK_SETUP
                    | READ_STATUS
                    | READ_ID
                    | CFI_QUERY
                    | BUFFERED_PROGRAM
            )
        {
            self.set_array_mode(false);
        }
        let next = match self.wcycle {
            0 => match cmd {
                READ_ARRAY_ZERO | READ_ARRAY_AMD_RESET | READ_ARRAY => Next::ReadArray,
                PROGRAM_ALT | PROGRAM | LOCK_SETUP | CFI_QUERY => self.setup(cmd),
                BLOCK_ERASE => {
                    self.erase(offset);
                    self.setup(cmd)
                }
                CLEAR_STATUS => {
                    self.status = 0;
                    Next::ReadArray
                }
                READ_STATUS | READ_ID => {
                    self.cmd = cmd;
                    Next::Stay
                }
                BUFFERED_PROGRAM => {
                    self.status |= STATUS_READY;
                    self.setup(cmd)
                }
                _ => Next::Invalid,
            },
            1 => match self.cmd {
                PROGRAM_ALT | PROGRAM => {
                    self.program(offset, data);
                    self.status |= STATUS_READY;
                    self.wcycle = 0;
                    Next::Stay
                }
                BLOCK_ERASE | BLOCK_ERASE_ALT => match cmd {
                    // The sector was already erased by the 0x20 cycle.
                    CONFIRM => {
                        self.wcycle = 0;
                        self.status |= STATUS_READY;
                        Next::Stay
                    }
                    READ_ARRAY => Next::ReadArray,
                    _ => Next::Invalid,
                },
                BUFFERED_PROGRAM => {
                    // Word count minus one, masked to one chip (or the bank in legacy mode).
                    let bytes = match self.geometry.device_width {
                        0 => self.geometry.bank_width,
                        w => w,
                    };
                    self.counter = if bytes >= 4 {
                        u64::from(value)
                    } else {
                        u64::from(value & ((1u32 << (8 * u32::from(bytes))) - 1))
                    };
                    self.wcycle = 2;
                    // Difference 1 (block address), QEMU 7.2 side: Debian 12's 7.2 has the
                    // update buffer of 284a7ee2e290 ("hw/pflash: implement update buffer for
                    // block writes", QEMU 9.0, backported to the 7.2.x stable series) without
                    // its later fix, so it stages the block here, at the count cycle's
                    // address. QEMU 10.0 stages it at the first data cycle (below).
                    if self.geometry.compat == Compat::Qemu7_2 {
                        self.blk_write_start(offset);
                    }
                    Next::Stay
                }
                LOCK_SETUP => match cmd {
                    // Lock, unlock and lock-down confirms are accepted and do nothing.
                    CONFIRM | LOCK_BLOCK => {
                        self.wcycle = 0;
                        self.status |= STATUS_READY;
                        Next::Stay
                    }
                    // QEMU goes back to read array for anything else, without logging an
                    // unimplemented sequence.
                    _ => Next::ReadArray,
                },
                CFI_QUERY => match cmd {
                    READ_ARRAY => Next::ReadArray,
                    // Anything else leaves the device in query mode.
                    _ => Next::Stay,
                },
                _ => Next::Invalid,
            },
            2 => match self.cmd {
                BUFFERED_PROGRAM => {
                    // Differences 1 and 2, QEMU 10.0 side: 2563be6317fa ("hw/pflash: fix
                    // block write start", QEMU 9.1, stable 9.0.1; Debian 12's 7.2 does not
                    // have it) moved the staging to the first data cycle, so the block is the
                    // one the data goes to, whatever address the count cycle used (its
                    // motivation: u-boot's buffered writes only worked in the first block).
                    // It only stages while the counter is not 0, so a buffered write of a
                    // single word (count 0) never opens a block: its data cycle is a program
                    // error (status 0x90) and its confirm is refused. Checked against both
                    // QEMUs by `tests/compat.rs`.
                    if self.geometry.compat == Compat::Qemu10_0
                        && self.blk_offset.is_none()
                        && self.counter != 0
                    {
                        self.blk_write_start(offset);
                    }
                    if !self.geometry.read_only && self.blk_offset.is_some() {
                        self.blk_data_write(offset, data);
                    } else {
                        self.program_failed(offset);
                    }
                    self.status |= STATUS_READY;
                    if self.counter != 0 {
                        self.counter -= 1;
                    } else {
                        self.wcycle = 3;
                        // Difference 3 (only in snapshots: nothing reads the counter again
                        // before the next count cycle sets it): QEMU 7.2 goes on to decrement
                        // it, wrapping to u64::MAX; "hw/block/pflash_cfi01: Don't decrement
                        // pfl->counter below 0" (QEMU 9.1, a Coverity fix) leaves it at 0.
                        if self.geometry.compat == Compat::Qemu7_2 {
                            self.counter = u64::MAX;
                        }
                    }
                    Next::Stay
                }
                _ => Next::Invalid,
            },
            3 => match self.cmd {
                BUFFERED_PROGRAM => {
                    if cmd == CONFIRM && self.status & STATUS_PROGRAM_ERROR == 0 {
                        self.blk_write_flush();
                        self.wcycle = 0;
                        self.status |= STATUS_READY;
                        Next::Stay
                    } else {
                        // Abort: the staged data is discarded.
                        self.blk_offset = None;
                        Next::ReadArray
                    }
                }
                _ => {
                    self.blk_offset = None;
                    Next::Invalid
                }
            },
            _ => Next::ReadArray,
        };
        match next {
            Next::Stay => {}
            Next::Invalid => {
                self.events.invalid_command(offset, cmd);
                self.mode_read_array();
            }
            Next::ReadArray => self.mode_read_array(),
        }
    }

    /// First cycle of a two-cycle command.
    fn setup(&mut self, cmd: u8) -> Next {
        self.wcycle = 1;
        self.cmd = cmd;
        Next::Stay
    }

    fn mode_read_array(&mut self) {
        self.wcycle = 0;
        self.cmd = READ_ARRAY_ZERO;
        self.set_array_mode(true);
    }

    /// Records a real change of the array-mode flag: events, and a flush point when the
    /// device returns to read-array mode.
    fn set_array_mode(&mut self, array_mode: bool) {
        if self.array_mode == array_mode {
            return;
        }
        self.array_mode = array_mode;
        self.events.array_mode_changed(array_mode);
        if array_mode {
            if let Err(e) = self.storage.flush_point(self.content.as_ref()) {
                // Erases flush at once, so what was pending here are programs.
                self.status |= STATUS_PROGRAM_ERROR;
                self.events.storage_error(&e);
            }
        }
    }

    fn program_failed(&mut self, offset: u64) {
        self.status |= STATUS_PROGRAM_ERROR;
        self.events.program_error(offset);
    }

    /// Single program (0x10/0x40 data cycle): the value is stored as written.
    fn program(&mut self, offset: u64, data: &[u8]) {
        if self.geometry.read_only {
            self.program_failed(offset);
            return;
        }
        let start = offset as usize;
        let range = start..start + data.len();
        self.content.as_mut()[range.clone()].copy_from_slice(data);
        if let Err(e) = self.storage.record_change(self.content.as_ref(), range) {
            self.program_failed(offset);
            self.events.storage_error(&e);
        }
    }

    /// Block erase, done at the 0x20 cycle itself like QEMU.
    fn erase(&mut self, offset: u64) {
        let len = self.geometry.sector_len;
        let start = offset & !(len - 1);
        if self.geometry.read_only {
            self.status |= STATUS_ERASE_ERROR;
        } else {
            let range = start as usize..(start + len) as usize;
            self.content.as_mut()[range.clone()].fill(ERASED);
            self.events.erased(start, len);
            let result = self
                .storage
                .record_change(self.content.as_ref(), range)
                .and_then(|()| self.storage.flush_point(self.content.as_ref()));
            if let Err(e) = result {
                self.status |= STATUS_ERASE_ERROR;
                self.events.storage_error(&e);
            }
        }
        self.status |= STATUS_READY;
    }

    /// The part of the write block at `blk` that lies inside the device.
    fn blk_span(&self, blk: u64) -> (usize, usize) {
        let start = blk as usize;
        let len = (self.content.as_ref().len() - start).min(self.blk_bytes.len());
        (start, len)
    }

    /// Opens a buffered write: stages the write block containing `offset` (QEMU 7.2.9+ opens
    /// it at the count cycle, with the count cycle's address; QEMU 10.0 at the first data
    /// cycle, with its address).
    fn blk_write_start(&mut self, offset: u64) {
        let blk = offset & !(self.cfi.writeblock_size - 1);
        let (start, len) = self.blk_span(blk);
        self.blk_bytes.fill(ERASED);
        self.blk_bytes[..len].copy_from_slice(&self.content.as_ref()[start..start + len]);
        self.blk_offset = Some(blk);
        self.blk_written = 0..0;
    }

    /// A buffered-write data cycle: into the staging buffer, or a program error when the
    /// data is not inside the staged block.
    fn blk_data_write(&mut self, offset: u64, data: &[u8]) {
        let Some(blk) = self.blk_offset else { return };
        let end = offset + data.len() as u64;
        if offset < blk || end > blk + self.cfi.writeblock_size {
            self.program_failed(offset);
            return;
        }
        let at = (offset - blk) as usize;
        self.blk_bytes[at..at + data.len()].copy_from_slice(data);
        self.blk_written = if self.blk_written.is_empty() {
            offset..end
        } else {
            self.blk_written.start.min(offset)..self.blk_written.end.max(end)
        };
    }

    /// Confirmed buffered write: the staged block reaches the array and the storage.
    fn blk_write_flush(&mut self) {
        let Some(blk) = self.blk_offset.take() else {
            return;
        };
        let (start, len) = self.blk_span(blk);
        self.content.as_mut()[start..start + len].copy_from_slice(&self.blk_bytes[..len]);
        let written = std::mem::replace(&mut self.blk_written, 0..0);
        if written.is_empty() {
            return;
        }
        let range = written.start as usize..written.end as usize;
        if let Err(e) = self.storage.record_change(self.content.as_ref(), range) {
            self.program_failed(written.start);
            self.events.storage_error(&e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Call {
        Change(Range<usize>),
        Flush,
    }

    #[derive(Debug, Default)]
    struct Rec {
        calls: Vec<Call>,
        fail: bool,
    }

    impl Storage for Rec {
        fn record_change(&mut self, _: &[u8], range: Range<usize>) -> Result<(), StorageError> {
            self.calls.push(Call::Change(range));
            self.result()
        }
        fn flush_point(&mut self, _: &[u8]) -> Result<(), StorageError> {
            self.calls.push(Call::Flush);
            self.result()
        }
    }

    impl Rec {
        fn result(&self) -> Result<(), StorageError> {
            if self.fail {
                Err(StorageError {
                    context: "test".into(),
                    source: std::io::Error::other("disk full"),
                })
            } else {
                Ok(())
            }
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Ev {
        Array(bool),
        Invalid(u64, u8),
        ProgramError(u64),
        Erased(u64, u64),
        StorageError,
    }

    #[derive(Debug, Default)]
    struct Evs(Vec<Ev>);

    impl PflashEvents for Evs {
        fn array_mode_changed(&mut self, array_mode: bool) {
            self.0.push(Ev::Array(array_mode));
        }
        fn invalid_command(&mut self, offset: u64, command: u8) {
            self.0.push(Ev::Invalid(offset, command));
        }
        fn program_error(&mut self, offset: u64) {
            self.0.push(Ev::ProgramError(offset));
        }
        fn erased(&mut self, offset: u64, len: u64) {
            self.0.push(Ev::Erased(offset, len));
        }
        fn storage_error(&mut self, _: &StorageError) {
            self.0.push(Ev::StorageError);
        }
    }

    type Dev = Pflash<Vec<u8>, Rec, Evs>;

    const VARS: usize = 0x84000;

    /// Content where every byte differs from its neighbours and from 0xff.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// The q35 vars flash, behaving like QEMU 10.0.
    fn q35() -> Dev {
        q35_compat(Compat::Qemu10_0)
    }

    fn q35_compat(compat: Compat) -> Dev {
        let mut content = pattern(VARS);
        content[0x28..0x2c].copy_from_slice(b"_FVH");
        content[0x20..0x28].copy_from_slice(&0x84000u64.to_le_bytes());
        Pflash::new(
            Geometry::q35(VARS as u64).unwrap().with_compat(compat),
            content,
            Rec::default(),
            Evs::default(),
        )
        .unwrap()
    }

    fn virt() -> Dev {
        let g = Geometry::arm_virt();
        let content = vec![0xff; g.size() as usize];
        Pflash::new(g, content, Rec::default(), Evs::default()).unwrap()
    }

    fn rd(d: &mut Dev, offset: u64, size: usize) -> u64 {
        let mut b = [0u8; 8];
        d.read(offset, &mut b[..size]);
        u64::from_le_bytes(b)
    }

    fn wr(d: &mut Dev, offset: u64, size: usize, value: u64) {
        d.write(offset, &value.to_le_bytes()[..size]);
    }

    fn wb(d: &mut Dev, offset: u64, value: u8) {
        d.write(offset, &[value]);
    }

    #[test]
    fn array_mode_reads_memory() {
        let mut d = q35();
        assert!(d.is_array_mode());
        assert_eq!(rd(&mut d, 0x28, 4), 0x4856_465f);
        assert_eq!(rd(&mut d, 0x20, 8), 0x84000);
        assert_eq!(rd(&mut d, 0x21, 2), 0x0840);
    }

    #[test]
    fn legacy_id_reads() {
        let mut d = q35();
        wb(&mut d, 0x1234, 0x90);
        assert!(!d.is_array_mode());
        for (off, size) in [(0, 1), (1, 1), (2, 1), (3, 1), (0, 2), (0, 4), (0x1000, 1)] {
            assert_eq!(rd(&mut d, off, size), 0, "{off:#x}/{size}");
        }
        wb(&mut d, 0, 0xff);
        assert!(d.is_array_mode());
        assert_eq!(rd(&mut d, 0x28, 4), 0x4856_465f);

        // With ids: +0 gives id0<<8|id1, +1 gives id2<<8|id3, address masked with 0xff.
        let mut g = Geometry::q35(4096).unwrap();
        g.id = [0x89, 0x18, 0x12, 0x34];
        let mut d: Dev = Pflash::new(g, vec![0; 4096], Rec::default(), Evs::default()).unwrap();
        wb(&mut d, 0, 0x90);
        assert_eq!(rd(&mut d, 0, 1), 0x18);
        assert_eq!(rd(&mut d, 0, 2), 0x8918);
        assert_eq!(rd(&mut d, 0, 4), 0x8918);
        assert_eq!(rd(&mut d, 1, 2), 0x1234);
        assert_eq!(rd(&mut d, 2, 2), 0);
        assert_eq!(rd(&mut d, 0x100, 2), 0x8918);
        assert_eq!(rd(&mut d, 0x201, 2), 0x1234);
    }

    #[test]
    fn arm_virt_id_reads() {
        let mut d = virt();
        wr(&mut d, 0, 4, 0x0090_0090);
        assert_eq!(rd(&mut d, 0, 4), 0x0089_0089);
        assert_eq!(rd(&mut d, 4, 4), 0x0018_0018);
        assert_eq!(rd(&mut d, 8, 4), 0); // lock status is not emulated
        assert_eq!(rd(&mut d, 0, 2), 0x0089);
        assert_eq!(rd(&mut d, 0, 1), 0x89);
        // Upper address bits select blocks: masked away.
        assert_eq!(rd(&mut d, 0x40000, 4), 0x0089_0089);
        // 8 bytes: +0 then +4.
        assert_eq!(rd(&mut d, 0, 8), 0x0018_0018_0089_0089);
    }

    #[test]
    fn legacy_cfi_query() {
        let mut d = q35();
        wb(&mut d, 0x5555, 0x98);
        let mut table = [0u8; 0x52];
        for (i, b) in table.iter_mut().enumerate() {
            *b = rd(&mut d, i as u64, 1) as u8;
        }
        let head: [u8; 0x36] = [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x51, 0x52, 0x59, 0x01, 0x00, 0x31,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x45, 0x55, 0x00, 0x00, 0x07, 0x07, 0x0a, 0x00, 0x04,
            0x04, 0x04, 0x00, 0x0e, 0x02, 0x00, 0x08, 0x00, 0x01, 0x83, 0x00, 0x10, 0x00, 0x50,
            0x52, 0x49, 0x31, 0x30,
        ];
        assert_eq!(&table[..0x36], &head[..]);
        assert_eq!(table[0x3f], 1);
        assert!(table[0x36..0x3f].iter().all(|&b| b == 0));
        assert!(table[0x40..].iter().all(|&b| b == 0));
        assert_eq!(rd(&mut d, 0x52, 1), 0);
        assert_eq!(rd(&mut d, 0xff, 1), 0);
        assert_eq!(rd(&mut d, 0x110, 1), 0x51); // masked with 0xff
        assert_eq!(rd(&mut d, 0x10, 2), 0x51); // one byte, zero-extended
        assert_eq!(rd(&mut d, 0x10, 4), 0x51);
        // Other writes, 0x70 included, keep the device in query mode.
        wb(&mut d, 0, 0x70);
        assert_eq!(rd(&mut d, 0x10, 1), 0x51);
        wb(&mut d, 0, 0x10);
        assert_eq!(rd(&mut d, 0x11, 1), 0x52);
        wb(&mut d, 0, 0xff);
        assert!(d.is_array_mode());
        assert!(d.events().0.iter().all(|e| !matches!(e, Ev::Invalid(..))));
    }

    #[test]
    fn legacy_cfi_scaled_by_bank_width() {
        let mut g = Geometry::q35(4096).unwrap();
        g.bank_width = 4;
        let mut d: Dev = Pflash::new(g, vec![0; 4096], Rec::default(), Evs::default()).unwrap();
        wr(&mut d, 0, 4, 0x98);
        assert_eq!(rd(&mut d, 0x40, 4), 0x51);
        assert_eq!(rd(&mut d, 0x44, 4), 0x52);
        // Table 0x2A is 0x0b for a wide bank.
        assert_eq!(rd(&mut d, 0x2a * 4, 4), 0x0b);
    }

    #[test]
    fn arm_virt_cfi_query() {
        let mut d = virt();
        wr(&mut d, 0x55 * 4, 4, 0x0098_0098);
        assert_eq!(rd(&mut d, 0x10 * 4, 4), 0x0051_0051);
        assert_eq!(rd(&mut d, 0x11 * 4, 4), 0x0052_0052);
        assert_eq!(rd(&mut d, 0x10 * 4, 2), 0x0051);
        assert_eq!(rd(&mut d, 0x27 * 4, 4), 0x0019_0019);
        assert_eq!(rd(&mut d, 0x2a * 4, 4), 0x000b_000b);
        assert_eq!(rd(&mut d, 0x2d * 4, 4), 0x00ff_00ff);
        assert_eq!(rd(&mut d, 0x30 * 4, 4), 0x0002_0002);
        assert_eq!(rd(&mut d, 0x52 * 4, 4), 0);
        // No 0xff masking without legacy mode.
        assert_eq!(rd(&mut d, 0x400 + 0x10 * 4, 4), 0);
        assert_eq!(rd(&mut d, 0x10 * 4, 8), 0x0052_0052_0051_0051);
        wr(&mut d, 0, 4, 0x00ff_00ff);
        assert!(d.is_array_mode());
    }

    #[test]
    fn status_reads_replicate() {
        let mut d = q35();
        wb(&mut d, 0x10, 0x70);
        assert_eq!(rd(&mut d, 0x10, 1), 0x80);
        assert_eq!(rd(&mut d, 0x77, 2), 0x80);
        assert_eq!(rd(&mut d, 0x4000, 4), 0x0080_0080);
        assert_eq!(rd(&mut d, 0, 8), 0x0080_0080_0080_0080);

        let mut d = virt();
        wr(&mut d, 0, 4, 0x0070_0070);
        assert_eq!(rd(&mut d, 0, 1), 0x80);
        assert_eq!(rd(&mut d, 0, 2), 0x0080);
        assert_eq!(rd(&mut d, 0, 4), 0x0080_0080);

        // Non-legacy 1-byte chips in a 4-byte bank: one status per byte.
        let mut g = Geometry::arm_virt();
        g.device_width = 1;
        g.num_blocks = 1;
        let mut d: Dev =
            Pflash::new(g, vec![0; 256 * 1024], Rec::default(), Evs::default()).unwrap();
        wb(&mut d, 0, 0x70);
        assert_eq!(rd(&mut d, 0, 2), 0x8080);
        assert_eq!(rd(&mut d, 0, 4), 0x8080_8080);
    }

    #[test]
    fn clear_status_returns_to_array_with_zero_status() {
        let mut d = q35();
        // OVMF's probe.
        wb(&mut d, 0x10, 0x50);
        assert!(d.is_array_mode());
        assert_eq!(rd(&mut d, 0x10, 1), u64::from(d.memory()[0x10]));
        wb(&mut d, 0x10, 0x70);
        assert_eq!(rd(&mut d, 0x10, 1), 0);
        wb(&mut d, 0x10, 0xff);
        assert_eq!(d.state().status, 0);
        assert_eq!(d.events().0, [Ev::Array(false), Ev::Array(true)]);
    }

    #[test]
    fn program_stores_value_as_is() {
        let mut d = q35();
        wb(&mut d, 0x20000, 0x10);
        assert_eq!(d.state().wcycle, 1);
        wb(&mut d, 0x20000, 0xa5);
        assert_eq!(d.memory()[0x20000], 0xa5);
        assert_eq!(rd(&mut d, 0x20000, 1), 0x80);
        assert_eq!((d.state().cmd, d.state().wcycle), (0x10, 0));
        assert_eq!(d.storage().calls, [Call::Change(0x20000..0x20001)]);
        wb(&mut d, 0x20000, 0xff);
        assert_eq!(rd(&mut d, 0x20000, 1), 0xa5);
        assert_eq!(
            d.storage().calls,
            [Call::Change(0x20000..0x20001), Call::Flush]
        );

        // 0x40 writes over, not ANDed.
        wb(&mut d, 0x20000, 0x40);
        wb(&mut d, 0x20000, 0x5a);
        wb(&mut d, 0x20000, 0xff);
        assert_eq!(d.memory()[0x20000], 0x5a);

        // A 4-byte data cycle programs 4 bytes, little-endian.
        wb(&mut d, 0x30000, 0x10);
        wr(&mut d, 0x30000, 4, 0x1122_3344);
        assert_eq!(&d.memory()[0x30000..0x30004], &[0x44, 0x33, 0x22, 0x11]);
        assert_eq!(
            d.storage().calls.last(),
            Some(&Call::Change(0x30000..0x30004))
        );
        wb(&mut d, 0, 0xff);
        assert_eq!(
            d.events().0,
            [
                Ev::Array(false),
                Ev::Array(true),
                Ev::Array(false),
                Ev::Array(true),
                Ev::Array(false),
                Ev::Array(true)
            ]
        );
    }

    #[test]
    fn erase_happens_at_the_0x20_cycle() {
        let mut d = q35();
        wb(&mut d, 0x20010, 0x20);
        assert!(d.memory()[0x20000..0x21000].iter().all(|&b| b == 0xff));
        assert_eq!(d.memory()[0x1ffff], pattern(VARS)[0x1ffff]);
        assert_eq!(d.memory()[0x21000], pattern(VARS)[0x21000]);
        assert_eq!(
            d.storage().calls,
            [Call::Change(0x20000..0x21000), Call::Flush]
        );
        assert_eq!(rd(&mut d, 0, 1), 0x80);
        let before = d.memory().to_vec();
        wb(&mut d, 0x20010, 0xd0);
        assert_eq!(d.memory(), &before[..]);
        assert_eq!(rd(&mut d, 0, 1), 0x80);
        assert_eq!(
            (d.state().cmd, d.state().wcycle, d.is_array_mode()),
            (0x20, 0, false)
        );
        wb(&mut d, 0x20010, 0xff);
        assert!(d.is_array_mode());
        assert_eq!(
            d.events().0,
            [
                Ev::Array(false),
                Ev::Erased(0x20000, 0x1000),
                Ev::Array(true)
            ]
        );

        // 0x20 then 0xFF: stays erased, back to array.
        wb(&mut d, 0x41000, 0x20);
        wb(&mut d, 0x41000, 0xff);
        assert!(d.is_array_mode());
        assert!(d.memory()[0x41000..0x42000].iter().all(|&b| b == 0xff));

        // 0x20 then anything else: error, back to array.
        wb(&mut d, 0x50000, 0x20);
        wb(&mut d, 0x50000, 0x42);
        assert!(d.is_array_mode());
        assert!(d.events().0.contains(&Ev::Invalid(0x50000, 0x42)));
        assert!(d.memory()[0x50000..0x51000].iter().all(|&b| b == 0xff));
    }

    #[test]
    fn buffered_write_is_staged_until_confirm() {
        let mut d = q35();
        let orig = d.memory().to_vec();
        wb(&mut d, 0x100, 0xe8);
        assert_eq!(rd(&mut d, 0x100, 1), 0x80);
        wb(&mut d, 0x100, 3); // 4 data cycles
        for i in 0..4u64 {
            assert_eq!(d.state().wcycle, 2);
            wb(&mut d, 0x104 + i, 0xa0 + i as u8);
        }
        assert_eq!(d.state().wcycle, 3);
        assert_eq!(d.memory(), &orig[..]);
        assert!(d.storage().calls.is_empty());
        assert_eq!(rd(&mut d, 0, 1), 0x80);
        wb(&mut d, 0x100, 0xd0);
        assert_eq!(&d.memory()[0x104..0x108], &[0xa0, 0xa1, 0xa2, 0xa3]);
        assert_eq!(&d.memory()[..0x104], &orig[..0x104]);
        assert_eq!(&d.memory()[0x108..], &orig[0x108..]);
        assert_eq!(d.storage().calls, [Call::Change(0x104..0x108)]);
        assert_eq!(
            (d.state().cmd, d.state().wcycle, d.state().write_buffer),
            (0xe8, 0, None)
        );
        assert_eq!(rd(&mut d, 0, 1), 0x80);
        wb(&mut d, 0, 0xff);
        assert_eq!(d.storage().calls.last(), Some(&Call::Flush));

        // Count 1 and two 4-byte cycles: 8 bytes.
        wb(&mut d, 0x200, 0xe8);
        wb(&mut d, 0x200, 1);
        wr(&mut d, 0x200, 4, 0x4433_2211);
        wr(&mut d, 0x204, 4, 0x8877_6655);
        wb(&mut d, 0x200, 0xd0);
        assert_eq!(
            &d.memory()[0x200..0x208],
            &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
        );
        assert_eq!(d.storage().calls.last(), Some(&Call::Change(0x200..0x208)));
        wb(&mut d, 0, 0xff);
    }

    #[test]
    fn buffered_write_abort_discards() {
        let mut d = q35();
        let orig = d.memory().to_vec();
        wb(&mut d, 0x300, 0xe8);
        wb(&mut d, 0x300, 1);
        wb(&mut d, 0x300, 0x11);
        wb(&mut d, 0x301, 0x22);
        wb(&mut d, 0x300, 0xff); // instead of 0xD0
        assert!(d.is_array_mode());
        assert_eq!(d.memory(), &orig[..]);
        assert_eq!(d.state().write_buffer, None);
        assert_eq!(d.storage().calls, [Call::Flush]);
        assert!(d.events().0.iter().all(|e| !matches!(e, Ev::Invalid(..))));
    }

    #[test]
    fn buffered_write_crossing_the_block_fails() {
        // The second half is QEMU 7.2's: 10.0 refuses every one-word buffered write (see
        // `one_word_buffered_write_fails_in_qemu_10`).
        let mut d = q35_compat(Compat::Qemu7_2);
        let orig = d.memory().to_vec();
        wb(&mut d, 0x1fc, 0xe8);
        wb(&mut d, 0x1fc, 1);
        wr(&mut d, 0x1fc, 4, 0x1111_1111);
        wr(&mut d, 0x200, 4, 0x2222_2222); // beyond the 256-byte block at 0x100
        assert_eq!(rd(&mut d, 0, 1), 0x90);
        assert!(d.events().0.contains(&Ev::ProgramError(0x200)));
        wb(&mut d, 0x1fc, 0xd0); // refused: abort
        assert!(d.is_array_mode());
        assert_eq!(d.memory(), &orig[..]);

        // The error bit is sticky: the next buffered write is refused too, until 0x50.
        wb(&mut d, 0x100, 0xe8);
        wb(&mut d, 0x100, 0);
        wb(&mut d, 0x100, 0x77);
        wb(&mut d, 0x100, 0xd0);
        assert!(d.is_array_mode());
        assert_eq!(d.memory()[0x100], orig[0x100]);
        wb(&mut d, 0, 0x50);
        wb(&mut d, 0x100, 0xe8);
        wb(&mut d, 0x100, 0);
        wb(&mut d, 0x100, 0x77);
        wb(&mut d, 0x100, 0xd0);
        assert_eq!(d.memory()[0x100], 0x77);
        assert_eq!(rd(&mut d, 0, 1), 0x80);
    }

    #[test]
    fn buffered_write_block_is_chosen_by_the_count_cycle_in_qemu_7_2() {
        // QEMU 7.2.9+ stages the block addressed by the count cycle: data for the next block
        // is a program error, data for the count's block is fine.
        let mut d = q35_compat(Compat::Qemu7_2);
        wb(&mut d, 0x000, 0xe8);
        wb(&mut d, 0x000, 1);
        wb(&mut d, 0x100, 0x42);
        assert_eq!(rd(&mut d, 0, 1), 0x90);
        assert_eq!(d.state().write_buffer.unwrap().offset, 0);
        wb(&mut d, 0x101, 0x43);
        wb(&mut d, 0x100, 0xd0);
        assert!(d.is_array_mode());
        assert_eq!(d.memory()[0x100], pattern(VARS)[0x100]);
    }

    #[test]
    fn buffered_write_block_is_chosen_by_the_first_data_cycle_in_qemu_10() {
        // QEMU 10.0 stages the block of the first data cycle, wherever the count went.
        let mut d = q35();
        wb(&mut d, 0x000, 0xe8);
        wb(&mut d, 0x000, 1);
        assert_eq!(d.state().write_buffer, None);
        wb(&mut d, 0x100, 0x42);
        assert_eq!(d.state().write_buffer.unwrap().offset, 0x100);
        wb(&mut d, 0x101, 0x43);
        assert_eq!(rd(&mut d, 0, 1), 0x80);
        wb(&mut d, 0x100, 0xd0);
        assert_eq!(rd(&mut d, 0, 1), 0x80);
        wb(&mut d, 0x100, 0xff);
        assert_eq!(&d.memory()[0x100..0x102], &[0x42, 0x43]);
        assert_eq!(d.storage().calls, [Call::Change(0x100..0x102), Call::Flush]);
    }

    #[test]
    fn counter_after_the_last_data_cycle() {
        for (compat, counter) in [(Compat::Qemu7_2, u64::MAX), (Compat::Qemu10_0, 0)] {
            let mut d = q35_compat(compat);
            wb(&mut d, 0x100, 0xe8);
            wb(&mut d, 0x100, 1);
            wb(&mut d, 0x100, 0x11);
            assert_eq!((d.state().wcycle, d.state().counter), (2, 0));
            wb(&mut d, 0x101, 0x22);
            assert_eq!(
                (d.state().wcycle, d.state().counter),
                (3, counter),
                "{compat}"
            );
            wb(&mut d, 0x100, 0xd0);
            wb(&mut d, 0x100, 0xff);
            assert_eq!(&d.memory()[0x100..0x102], &[0x11, 0x22]);
        }
    }

    #[test]
    fn one_word_buffered_write_fails_in_qemu_10() {
        for (compat, status, byte) in [(Compat::Qemu7_2, 0x80, 0x42), (Compat::Qemu10_0, 0x90, 0)] {
            let mut d = q35_compat(compat);
            let orig = d.memory()[0x100];
            wb(&mut d, 0x100, 0xe8);
            wb(&mut d, 0x100, 0);
            wb(&mut d, 0x100, 0x42);
            assert_eq!(rd(&mut d, 0x100, 1), status, "{compat}");
            wb(&mut d, 0x100, 0xd0);
            if compat == Compat::Qemu10_0 {
                // The confirm is refused: back to read array, nothing written.
                assert!(d.is_array_mode());
                assert_eq!(d.memory()[0x100], orig);
                assert!(d.events().0.contains(&Ev::ProgramError(0x100)));
            } else {
                wb(&mut d, 0x100, 0xff);
                assert_eq!(d.memory()[0x100], byte);
            }
        }
    }

    #[test]
    fn buffered_write_arm_virt() {
        let mut d = virt();
        let base = 0x0104_0000;
        wr(&mut d, base, 4, 0x00e8_00e8);
        assert_eq!(rd(&mut d, base, 4), 0x0080_0080);
        // Count is masked to one 16-bit chip: 0x1f words of 4 bytes = 128 bytes.
        wr(&mut d, base, 4, 0x001f_001f);
        assert_eq!(d.state().counter, 0x1f);
        for i in 0..32u64 {
            wr(&mut d, base + 4 * i, 4, 0x1000_0000 + i);
        }
        assert_eq!(d.state().wcycle, 3);
        assert!(d.memory()[base as usize..base as usize + 128]
            .iter()
            .all(|&b| b == 0xff));
        wr(&mut d, base, 4, 0x00d0_00d0);
        assert_eq!(rd(&mut d, base, 4), 0x0080_0080);
        wr(&mut d, base, 4, 0x00ff_00ff);
        for i in 0..32u64 {
            assert_eq!(rd(&mut d, base + 4 * i, 4), 0x1000_0000 + i);
        }
        assert_eq!(
            d.storage().calls,
            [
                Call::Change(base as usize..base as usize + 128),
                Call::Flush
            ]
        );
        // The write block of two chips is 2 * 2 KiB.
        assert_eq!(d.cfi.writeblock_size, 4096);
    }

    #[test]
    fn arm_virt_erase_and_program_with_dual_chip_commands() {
        let mut d = virt();
        let blk = 0x0100_0000u64;
        wr(&mut d, blk, 4, 0x0060_0060);
        wr(&mut d, blk, 4, 0x00d0_00d0);
        assert_eq!(rd(&mut d, blk, 4), 0x0080_0080);
        wr(&mut d, blk + 8, 4, 0x0040_0040);
        wr(&mut d, blk + 8, 4, 0x1234_5678);
        assert_eq!(rd(&mut d, blk, 4), 0x0080_0080);
        wr(&mut d, blk, 4, 0x0020_0020);
        assert!(d.memory()[blk as usize..blk as usize + 0x40000]
            .iter()
            .all(|&b| b == 0xff));
        wr(&mut d, blk, 4, 0x00d0_00d0);
        assert_eq!(rd(&mut d, blk, 4), 0x0080_0080);
        wr(&mut d, blk, 4, 0x00ff_00ff);
        assert!(d.is_array_mode());
        assert_eq!(
            d.storage().calls,
            [
                Call::Change(blk as usize + 8..blk as usize + 12),
                Call::Change(blk as usize..blk as usize + 0x40000),
                Call::Flush,
                Call::Flush
            ]
        );
    }

    #[test]
    fn lock_commands_are_accepted() {
        let mut d = q35();
        let orig = d.memory().to_vec();
        wb(&mut d, 0x1000, 0x60);
        assert_eq!(rd(&mut d, 0x1000, 1), 0x80);
        wb(&mut d, 0x1000, 0xd0);
        assert_eq!((d.state().cmd, d.state().wcycle), (0x60, 0));
        assert_eq!(rd(&mut d, 0x1000, 1), 0x80);
        wb(&mut d, 0x1000, 0x60);
        wb(&mut d, 0x1000, 0x01);
        assert_eq!(rd(&mut d, 0x1000, 4), 0x0080_0080);
        wb(&mut d, 0x1000, 0x60);
        wb(&mut d, 0x1000, 0x2f); // unknown lock command: read array, not logged
        assert!(d.is_array_mode());
        assert!(d.events().0.iter().all(|e| !matches!(e, Ev::Invalid(..))));
        assert_eq!(d.memory(), &orig[..]);
    }

    #[test]
    fn unknown_and_read_array_commands() {
        let mut d = q35();
        wb(&mut d, 0x10, 0x70);
        wb(&mut d, 0x10, 0x42);
        assert!(d.is_array_mode());
        let n = d.events().0.len();
        assert_eq!(
            d.events().0[n - 2..],
            [Ev::Invalid(0x10, 0x42), Ev::Array(true)]
        );
        for cmd in [0x00, 0xf0, 0xff] {
            wb(&mut d, 0x10, 0x90);
            assert!(!d.is_array_mode());
            wb(&mut d, 0x10, cmd);
            assert!(d.is_array_mode(), "{cmd:#x}");
        }
        assert_eq!(
            d.events()
                .0
                .iter()
                .filter(|e| matches!(e, Ev::Invalid(..)))
                .count(),
            1
        );
        // A multi-byte command write uses its low byte.
        wr(&mut d, 0x10, 4, 0x1234_5670);
        assert_eq!(d.state().cmd, 0x70);
        // In array mode, writing 0xff is no transition.
        wb(&mut d, 0x10, 0xff);
        let n = d.events().0.len();
        wb(&mut d, 0x10, 0xff);
        assert_eq!(d.events().0.len(), n);
    }

    #[test]
    fn read_only_sets_error_bits() {
        let mut g = Geometry::q35(VARS as u64).unwrap();
        g.read_only = true;
        let mut d: Dev = Pflash::new(g, pattern(VARS), Rec::default(), Evs::default()).unwrap();
        let orig = d.memory().to_vec();
        wb(&mut d, 0x20000, 0x10);
        wb(&mut d, 0x20000, 0xa5);
        assert_eq!(rd(&mut d, 0, 1), 0x90);
        wb(&mut d, 0x20000, 0x20);
        assert_eq!(rd(&mut d, 0, 1), 0xb0);
        wb(&mut d, 0x20000, 0xd0);
        wb(&mut d, 0, 0xff);
        wb(&mut d, 0, 0x70);
        assert_eq!(rd(&mut d, 0, 1), 0xb0); // sticky
        wb(&mut d, 0, 0x50);
        wb(&mut d, 0, 0x70);
        assert_eq!(rd(&mut d, 0, 1), 0x00);
        // Buffered write.
        wb(&mut d, 0x100, 0xe8);
        wb(&mut d, 0x100, 0);
        wb(&mut d, 0x100, 0x11);
        assert_eq!(rd(&mut d, 0, 1), 0x90);
        wb(&mut d, 0x100, 0xd0);
        assert!(d.is_array_mode());
        assert_eq!(d.memory(), &orig[..]);
        assert!(d.storage().calls.iter().all(|c| *c == Call::Flush));
        assert!(d.events().0.iter().all(|e| !matches!(e, Ev::Erased(..))));
    }

    #[test]
    fn storage_errors_set_status_bits() {
        let mut d = q35();
        d.storage_mut().fail = true;
        wb(&mut d, 0x100, 0x10);
        wb(&mut d, 0x100, 0x12);
        assert_eq!(d.memory()[0x100], 0x12);
        assert_eq!(rd(&mut d, 0, 1), 0x90);
        d.storage_mut().fail = false;
        wb(&mut d, 0, 0x50);
        d.storage_mut().fail = true;
        wb(&mut d, 0x2000, 0x20);
        assert_eq!(rd(&mut d, 0, 1), 0xa0);
        wb(&mut d, 0x2000, 0xd0);
        d.storage_mut().fail = false;
        wb(&mut d, 0, 0x50);
        d.storage_mut().fail = true;
        // The flush point on returning to array mode fails too: program error bit.
        wb(&mut d, 0, 0x70);
        wb(&mut d, 0, 0xff);
        assert_eq!(d.state().status, 0x10);
        assert!(
            d.events()
                .0
                .iter()
                .filter(|e| **e == Ev::StorageError)
                .count()
                >= 3
        );
    }

    #[test]
    fn reset_returns_to_array_and_drops_the_buffer() {
        let mut d = q35();
        wb(&mut d, 0, 0x90);
        d.reset();
        assert!(d.is_array_mode());
        assert_eq!(d.state(), PflashState::default());
        wb(&mut d, 0x100, 0xe8);
        wb(&mut d, 0x100, 1);
        wb(&mut d, 0x100, 0x11); // QEMU 10.0 opens the buffer at the first data cycle
        assert!(d.state().write_buffer.is_some());
        d.reset();
        assert_eq!(d.state(), PflashState::default());
        // Reset in array mode is no transition.
        let n = d.events().0.len();
        d.reset();
        assert_eq!(d.events().0.len(), n);
    }

    #[test]
    fn eight_byte_accesses_are_two_halves() {
        let mut d = q35();
        let orig = d.memory().to_vec();
        wb(&mut d, 0x100, 0x10);
        wr(&mut d, 0x100, 8, 0x0000_00ff_1122_3344);
        assert_eq!(&d.memory()[0x100..0x104], &[0x44, 0x33, 0x22, 0x11]);
        assert_eq!(&d.memory()[0x104..0x108], &orig[0x104..0x108]);
        assert!(d.is_array_mode()); // the high half was the 0xff command
        assert_eq!(
            rd(&mut d, 0x100, 8),
            u64::from_le_bytes(d.memory()[0x100..0x108].try_into().unwrap())
        );
    }

    #[test]
    fn state_round_trip_mid_buffered_write() {
        let run = |split: bool| {
            let mut d = q35();
            wb(&mut d, 0x100, 0xe8);
            wb(&mut d, 0x100, 2);
            wb(&mut d, 0x110, 0x01);
            if split {
                let st = d.state();
                assert_eq!(st.write_buffer.as_ref().unwrap().offset, 0x100);
                assert_eq!(st.write_buffer.as_ref().unwrap().written, 0x110..0x111);
                let (content, storage, events) = d.into_parts();
                d = Pflash::from_state(
                    Geometry::q35(VARS as u64).unwrap(),
                    content,
                    &st,
                    storage,
                    events,
                )
                .unwrap();
                assert_eq!(d.state(), st);
            }
            wb(&mut d, 0x111, 0x02);
            wb(&mut d, 0x112, 0x03);
            wb(&mut d, 0x100, 0xd0);
            wb(&mut d, 0x100, 0xff);
            let (content, storage, _) = d.into_parts();
            (content, storage.calls)
        };
        assert_eq!(run(true), run(false));
    }

    #[test]
    fn from_state_rejects_bad_buffers() {
        let g = Geometry::q35(4096).unwrap();
        let mut st = PflashState {
            wcycle: 2,
            cmd: 0xe8,
            write_buffer: Some(WriteBuffer {
                offset: 0x100,
                bytes: vec![0; 255],
                written: 0..0,
            }),
            ..PflashState::default()
        };
        let new = |st: &PflashState| {
            Pflash::<Vec<u8>, NoStorage, NoEvents>::from_state(
                g.clone(),
                vec![0; 4096],
                st,
                NoStorage,
                NoEvents,
            )
        };
        assert!(matches!(new(&st), Err(GeometryError::State(_))));
        st.write_buffer.as_mut().unwrap().bytes = vec![0; 256];
        assert!(new(&st).is_ok());
        st.write_buffer.as_mut().unwrap().offset = 0x180;
        assert!(matches!(new(&st), Err(GeometryError::State(_))));
        st.write_buffer.as_mut().unwrap().offset = 0x100;
        st.write_buffer.as_mut().unwrap().written = 0x100..0x201;
        assert!(matches!(new(&st), Err(GeometryError::State(_))));
        assert!(matches!(
            Pflash::<Vec<u8>, NoStorage, NoEvents>::new(
                g.clone(),
                vec![0; 10],
                NoStorage,
                NoEvents
            ),
            Err(GeometryError::ContentLength {
                expected: 4096,
                got: 10
            })
        ));
    }

    #[test]
    fn caller_memory_is_used_in_place() {
        // A VMM's mapping stands in as a slice of a larger buffer: the device must change
        // those very bytes, and only inside its window.
        let mut mapping = vec![0x5au8; 3 * 4096];
        {
            let window = &mut mapping[4096..2 * 4096];
            let mut d: Pflash<&mut [u8]> =
                Pflash::new(Geometry::q35(4096).unwrap(), window, NoStorage, NoEvents).unwrap();
            d.write(0x20, &[0x20]);
            d.write(0x20, &[0xd0]);
            d.write(0x10, &[0x10]);
            d.write(0x10, &[0xa5]);
            d.write(0, &[0xff]);
            assert_eq!(d.memory()[0x10], 0xa5);
        }
        assert_eq!(mapping[4096 + 0x10], 0xa5);
        assert_eq!(mapping[4096 + 0x11], 0xff);
        assert!(mapping[..4096].iter().all(|&b| b == 0x5a));
        assert!(mapping[2 * 4096..].iter().all(|&b| b == 0x5a));
    }

    #[test]
    fn big_endian_bus() {
        let mut g = Geometry::q35(4096).unwrap();
        g.big_endian = true;
        g.bank_width = 2;
        g.id = [0x89, 0x18, 0, 0];
        let mut d: Dev = Pflash::new(g, vec![0; 4096], Rec::default(), Evs::default()).unwrap();
        d.write(0, &[0x00, 0x70]);
        let mut b = [0u8; 4];
        d.read(0, &mut b);
        assert_eq!(b, [0x00, 0x80, 0x00, 0x80]);
        d.write(0, &[0x00, 0x90]);
        let mut b = [0u8; 2];
        d.read(0, &mut b);
        assert_eq!(b, [0x89, 0x18]);
        d.write(0, &[0x00, 0x10]);
        d.write(0x10, &[0xaa, 0xbb]);
        d.write(0, &[0x00, 0xff]);
        assert_eq!(&d.memory()[0x10..0x12], &[0xaa, 0xbb]);
        d.write(0, &[0x00, 0x70]);
        d.write(0, &[0x00, 0x00, 0x00, 0xff]);
        assert!(d.is_array_mode());
    }

    #[test]
    fn out_of_range_and_odd_sizes_are_ignored() {
        let mut d = q35();
        let orig = d.memory().to_vec();
        let mut b = [0xeeu8; 4];
        d.read(VARS as u64 - 2, &mut b);
        assert_eq!(b, [0; 4]);
        d.read(u64::MAX, &mut b);
        d.write(VARS as u64 - 1, &[0x10, 0x10]);
        d.write(u64::MAX - 1, &[0x10, 0x10]);
        let mut b3 = [0xeeu8; 3];
        d.write(0, &[0x70, 0, 0]);
        d.read(0, &mut b3);
        assert!(d.is_array_mode());
        assert_eq!(d.memory(), &orig[..]);
        wb(&mut d, 0, 0x70);
        d.read(0, &mut b3);
        assert_eq!(b3, [0; 3]);
    }
}
