//! Snapshot state of the device (what QEMU migrates in its `pflash_cfi01` vmstate and
//! `pflash_cfi01_blk_write` subsection, plus the ROMD flag).

use std::ops::Range;

/// Everything needed to resume a [`Pflash`](crate::Pflash) mid-sequence, besides its
/// geometry and content. Obtained with [`Pflash::state`](crate::Pflash::state) and restored
/// with [`Pflash::from_state`](crate::Pflash::from_state).
///
/// ```
/// use pflash::{Geometry, Pflash, PflashState};
///
/// let g = Geometry::q35(8192).unwrap();
/// let mut dev: Pflash = Pflash::new(g.clone(), vec![0xff; 8192], Default::default(), Default::default()).unwrap();
/// dev.write(0, &[0x70]); // read status
/// let state = dev.state();
/// assert_eq!((state.cmd, state.status, state.array_mode), (0x70, 0x80, false));
/// let content = dev.into_parts().0;
/// let mut resumed: Pflash = Pflash::from_state(g, content, &state, Default::default(), Default::default()).unwrap();
/// let mut b = [0u8; 1];
/// resumed.read(0, &mut b);
/// assert_eq!(b, [0x80]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct PflashState {
    /// Write cycle of the current command: 0 idle, 1 after a command byte, 2 and 3 inside a
    /// buffered write (data, confirm).
    pub wcycle: u8,
    /// The current command (0x00 is read array, QEMU's internal encoding).
    pub cmd: u8,
    /// The status register (0x80 "ready" after reset; 0x10 program error, 0x20 erase error).
    pub status: u8,
    /// Buffered write: data cycles left minus one. After the last data cycle QEMU 7.2 leaves
    /// it wrapped past zero (`u64::MAX`), QEMU 10.0 at 0 (see [`Compat`](crate::Compat)).
    pub counter: u64,
    /// Reads are served straight from memory (QEMU's ROMD mode).
    pub array_mode: bool,
    /// The open 0xE8 buffered write, if any.
    pub write_buffer: Option<WriteBuffer>,
}

/// A buffered write (0xE8) in progress: data staged until the 0xD0 confirm.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct WriteBuffer {
    /// Device offset of the staged block (aligned to the write-block size).
    pub offset: u64,
    /// The staged block: the content at the 0xE8 count cycle, overwritten by the data cycles.
    /// Its length is the device's write-block size (256 bytes on q35, 4 KiB on arm `virt`).
    pub bytes: Vec<u8>,
    /// Device offsets written so far (empty if none): what the confirm reports as changed.
    pub written: Range<u64>,
}

impl Default for PflashState {
    /// The state after realize or reset: read-array mode, status 0x80.
    fn default() -> Self {
        PflashState {
            wcycle: 0,
            cmd: crate::commands::READ_ARRAY_ZERO,
            status: crate::commands::STATUS_READY,
            counter: 0,
            array_mode: true,
            write_buffer: None,
        }
    }
}
