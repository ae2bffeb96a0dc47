//! The write path: the command state machine of QEMU's `pflash_write`, programs, erases
//! and buffered writes.

use crate::commands::{
    BLOCK_ERASE, BLOCK_ERASE_ALT, BUFFERED_PROGRAM, CFI_QUERY, CLEAR_STATUS, CONFIRM, ERASED,
    LOCK_BLOCK, LOCK_SETUP, PROGRAM, PROGRAM_ALT, READ_ARRAY, READ_ARRAY_AMD_RESET,
    READ_ARRAY_ZERO, READ_ID, READ_STATUS, STATUS_ERASE_ERROR, STATUS_PROGRAM_ERROR, STATUS_READY,
};
use crate::compat::Compat;
use crate::storage::Storage;

use super::{Pflash, PflashEvents};

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
    pub(super) fn set_array_mode(&mut self, array_mode: bool) {
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
