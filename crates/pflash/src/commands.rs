//! The command and status codes of the Intel/Sharp command set ("CFI 01"), by name.
//!
//! Where they are defined: the Intel/Sharp basic command set that the CFI primary command set
//! code 0x0001 designates (JEDEC JEP137, the CFI vendor and command set ID assignments;
//! JESD68 itself defines only the query command), as Intel's application note AP-646
//! "Common Flash Interface (CFI) and Command Sets" and the datasheets of Intel's 28F-series
//! flashes (for example the 3 Volt Advanced+ Boot Block and StrataFlash families) tabulate
//! it. Which codes QEMU's `cfi.pflash01` accepts, and what it does with each, is this
//! crate's behavioural reference (`hw/block/pflash_cfi01.c`): a few entries below exist only
//! because QEMU accepts them. Guest programs that drive the device (probes, test guests) can
//! use these constants too.
//!
//! A command is the low byte of a write in the first cycle of a sequence; multi-chip banks
//! repeat it in every chip's lane (`0x0090_0090` for two 16-bit chips).

/// Read array: back to reading the memory contents (ends any sequence).
pub const READ_ARRAY: u8 = 0xFF;
/// Read array as QEMU also accepts it in the first cycle (and its internal encoding of the
/// read-array state, see [`PflashState::cmd`](crate::PflashState::cmd)).
pub const READ_ARRAY_ZERO: u8 = 0x00;
/// Read array, the AMD-style reset code, which QEMU's Intel device accepts too.
pub const READ_ARRAY_AMD_RESET: u8 = 0xF0;
/// Word/byte program setup (alternate code); the next cycle carries the data.
pub const PROGRAM_ALT: u8 = 0x10;
/// Word/byte program setup; the next cycle carries the data.
pub const PROGRAM: u8 = 0x40;
/// Block erase setup; confirmed by [`CONFIRM`]. QEMU erases at this cycle already.
pub const BLOCK_ERASE: u8 = 0x20;
/// Block erase, the code some Intel parts use for the erase state; only reachable from a
/// snapshot here (QEMU accepts it as a state, never as a first cycle).
pub const BLOCK_ERASE_ALT: u8 = 0x28;
/// Clear status register (the error bits).
pub const CLEAR_STATUS: u8 = 0x50;
/// Block lock / unlock / lock-down setup; confirmed by [`LOCK_BLOCK`], [`CONFIRM`] (unlock)
/// or another code. The device accepts them and locks nothing, as QEMU.
pub const LOCK_SETUP: u8 = 0x60;
/// Lock block, the confirm after [`LOCK_SETUP`].
pub const LOCK_BLOCK: u8 = 0x01;
/// Read status register.
pub const READ_STATUS: u8 = 0x70;
/// Read identifier codes (manufacturer, device, block lock status).
pub const READ_ID: u8 = 0x90;
/// CFI query (JESD68): reads return the query table, whose byte offsets are named in the
/// crate's `cfi` module.
pub const CFI_QUERY: u8 = 0x98;
/// Confirm: of a block erase, of a buffered program, or unlock after [`LOCK_SETUP`].
pub const CONFIRM: u8 = 0xD0;
/// Buffered program ("write to buffer"): then the word count minus one, the data cycles and
/// [`CONFIRM`].
pub const BUFFERED_PROGRAM: u8 = 0xE8;

/// Status register bit 7: the write state machine is ready.
pub const STATUS_READY: u8 = 0x80;
/// Status register bit 5: erase (or clear lock bits) error.
pub const STATUS_ERASE_ERROR: u8 = 0x20;
/// Status register bit 4: program (or set lock bit) error.
pub const STATUS_PROGRAM_ERROR: u8 = 0x10;

/// The content of erased flash.
pub const ERASED: u8 = 0xFF;
