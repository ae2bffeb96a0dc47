//! The CFI query table and the identification/query read paths.
//!
//! Facts (from QEMU 7.2 `hw/block/pflash_cfi01.c`, `pflash_cfi01_fill_cfi_table`,
//! `pflash_cfi_query`, `pflash_devid_query` and the 0x90/0x98 cases of `pflash_read`): the
//! table is 0x52 bytes and describes *one chip*, so with several chips in a bank the sector
//! length is divided by the chip count; the device size byte is the count of trailing zeros of
//! the low 32 bits of the chip size (not a logarithm); the buffered-write size is 2^8 for a
//! byte-wide bank and 2^11 otherwise, per chip.

use crate::geometry::Geometry;

/// Length of QEMU's CFI table.
pub(crate) const CFI_LEN: usize = 0x52;

// Byte offsets of the query table, as a chip in x8 mode answers them. The layout is JEDEC
// JESD68 (Common Flash Interface): the query identification string (0x10..0x1A), the system
// interface information (0x1B..0x26) and the device geometry definition (0x27..); the
// primary vendor-specific extended query table that follows is Intel's, as Intel AP-646
// ("Common Flash Interface (CFI) and Command Sets") and the 28F-series datasheets lay it out.
// The values are QEMU's (`hw/block/pflash_cfi01.c`), which this device must answer alike.

/// "QRY": the query-unique ASCII string (JESD68, query identification string).
const QUERY_STRING: usize = 0x10;
/// Primary vendor command set and control interface ID, 16 bits (JESD68; code 0x0001 is the
/// Intel/Sharp extended command set, JEP137).
const PRIMARY_COMMAND_SET: usize = 0x13;
/// Address of the primary algorithm extended query table, 16 bits (JESD68).
const PRIMARY_EXTENDED_TABLE_ADDRESS: usize = 0x15;
/// Vcc logic supply minimum program/erase voltage, BCD volts and tenths (JESD68 system
/// interface information).
const VCC_MIN: usize = 0x1B;
/// Vcc logic supply maximum program/erase voltage, BCD volts and tenths (JESD68).
const VCC_MAX: usize = 0x1C;
/// Typical single byte/word program time, 2^n µs (JESD68).
const TYPICAL_PROGRAM_TIMEOUT: usize = 0x1F;
/// Typical buffered (multi-byte) program time, 2^n µs (JESD68).
const TYPICAL_BUFFER_PROGRAM_TIMEOUT: usize = 0x20;
/// Typical block erase time, 2^n ms (JESD68).
const TYPICAL_BLOCK_ERASE_TIMEOUT: usize = 0x21;
/// Maximum single byte/word program time, 2^n times typical (JESD68).
const MAX_PROGRAM_TIMEOUT: usize = 0x23;
/// Maximum buffered program time, 2^n times typical (JESD68).
const MAX_BUFFER_PROGRAM_TIMEOUT: usize = 0x24;
/// Maximum block erase time, 2^n times typical (JESD68).
const MAX_BLOCK_ERASE_TIMEOUT: usize = 0x25;
/// Device size, 2^n bytes (JESD68 device geometry definition).
const DEVICE_SIZE: usize = 0x27;
/// Flash device interface code, 16 bits (JESD68; 0x0002 is x8/x16 asynchronous).
const INTERFACE_CODE: usize = 0x28;
/// Maximum bytes in a buffered program, 2^n, 16 bits (JESD68).
const MAX_BUFFER_WRITE_SIZE: usize = 0x2A;
/// Number of erase block regions (JESD68).
const ERASE_REGIONS: usize = 0x2C;
/// Erase block region 1: number of blocks minus one, 16 bits (JESD68).
const REGION1_BLOCKS_MINUS_ONE: usize = 0x2D;
/// Erase block region 1: block size in units of 256 bytes, 16 bits (JESD68).
const REGION1_BLOCK_SIZE_256: usize = 0x2F;
/// Where the primary extended table starts (what [`PRIMARY_EXTENDED_TABLE_ADDRESS`] says):
/// "PRI", then the major and minor version in ASCII (Intel AP-646).
const PRIMARY_EXTENDED_TABLE: usize = 0x31;
/// The extended table's version, "10" (major '1', minor '0'; Intel AP-646).
const PRIMARY_EXTENDED_VERSION: usize = PRIMARY_EXTENDED_TABLE + 3;
/// Number of protection register fields in the JEDEC ID space (Intel's extended table at
/// P + 0x0E).
const PROTECTION_FIELDS: usize = PRIMARY_EXTENDED_TABLE + 0x0E;

/// Read-identifier (0x90) indices: the manufacturer code, then the device code (Intel's
/// identifier table; QEMU answers `id0` and `id1` there, and in legacy mode the four ids in
/// two 16-bit halves).
const ID_MANUFACTURER: u64 = 0;
const ID_DEVICE: u64 = 1;
/// Query and identifier indices use the low address byte only (QEMU masks the offset).
const QUERY_INDEX_MASK: u64 = 0xff;

/// The Intel/Sharp extended command set (JEP137), the "01" of CFI 01.
const COMMAND_SET_INTEL_SHARP: u8 = 0x01;
/// Vcc 4.5 V and 5.5 V, in JESD68's BCD volts and tenths, as QEMU answers.
const VCC_4_5_V: u8 = 0x45;
const VCC_5_5_V: u8 = 0x55;
/// 2^7 = 128 µs typical (byte and buffered) program times, QEMU's figures.
const TYPICAL_PROGRAM_LOG2_US: u8 = 0x07;
/// 2^10 = 1024 ms typical block erase, QEMU's figure.
const TYPICAL_ERASE_LOG2_MS: u8 = 0x0a;
/// Maxima 2^4 = 16 times the typical times, QEMU's figures.
const MAX_TIMEOUT_LOG2_FACTOR: u8 = 0x04;
/// JESD68 interface code 0x0002: x8/x16 asynchronous.
const INTERFACE_X8_X16: u8 = 0x02;
/// Buffered program size per chip: 2^8 bytes for a byte-wide bank, 2^11 otherwise (QEMU).
const BUFFER_LOG2_BYTE_BANK: u8 = 0x08;
const BUFFER_LOG2_WIDE_BANK: u8 = 0x0b;

/// The precomputed, per-geometry read-only data of the device.
#[derive(Debug, Clone)]
pub(crate) struct Cfi {
    pub(crate) table: [u8; CFI_LEN],
    /// Size of the buffered-write (0xE8) block of the whole bank, in bytes.
    pub(crate) writeblock_size: u64,
}

/// Count of trailing zeros of a 32-bit value, 32 for zero, like QEMU's `ctz32`.
fn ctz32(v: u32) -> u32 {
    v.trailing_zeros()
}

/// Replaces `len` bits of `value` at bit `pos` by the low bits of `field`, like QEMU's
/// `deposit32`, except that bits falling beyond bit 31 are dropped instead of aborting.
pub(crate) fn deposit32(value: u32, pos: u32, len: u32, field: u32) -> u32 {
    if pos >= 32 || len == 0 {
        return value;
    }
    let len = len.min(32 - pos);
    let mask = if len == 32 {
        u32::MAX
    } else {
        ((1u32 << len) - 1) << pos
    };
    (value & !mask) | ((field << pos) & mask)
}

impl Cfi {
    pub(crate) fn new(g: &Geometry) -> Cfi {
        let num_devices = g.num_devices();
        let blocks_per_device = u64::from(g.num_blocks);
        let sector_len_per_device = g.sector_len / num_devices;
        let device_len = sector_len_per_device.wrapping_mul(blocks_per_device);

        let mut t = [0u8; CFI_LEN];
        t[QUERY_STRING..QUERY_STRING + 3].copy_from_slice(b"QRY");
        t[PRIMARY_COMMAND_SET] = COMMAND_SET_INTEL_SHARP;
        t[PRIMARY_EXTENDED_TABLE_ADDRESS] = PRIMARY_EXTENDED_TABLE as u8;
        t[VCC_MIN] = VCC_4_5_V;
        t[VCC_MAX] = VCC_5_5_V;
        t[TYPICAL_PROGRAM_TIMEOUT] = TYPICAL_PROGRAM_LOG2_US;
        t[TYPICAL_BUFFER_PROGRAM_TIMEOUT] = TYPICAL_PROGRAM_LOG2_US;
        t[TYPICAL_BLOCK_ERASE_TIMEOUT] = TYPICAL_ERASE_LOG2_MS;
        t[MAX_PROGRAM_TIMEOUT] = MAX_TIMEOUT_LOG2_FACTOR;
        t[MAX_BUFFER_PROGRAM_TIMEOUT] = MAX_TIMEOUT_LOG2_FACTOR;
        t[MAX_BLOCK_ERASE_TIMEOUT] = MAX_TIMEOUT_LOG2_FACTOR;
        // QEMU passes the 64-bit chip size to ctz32(): only its low 32 bits count.
        t[DEVICE_SIZE] = ctz32(device_len as u32) as u8;
        t[INTERFACE_CODE] = INTERFACE_X8_X16;
        t[MAX_BUFFER_WRITE_SIZE] = if g.bank_width == 1 {
            BUFFER_LOG2_BYTE_BANK
        } else {
            BUFFER_LOG2_WIDE_BANK
        };
        t[ERASE_REGIONS] = 1; // one uniform region
        let blocks_m1 = blocks_per_device.wrapping_sub(1);
        t[REGION1_BLOCKS_MINUS_ONE] = blocks_m1 as u8;
        t[REGION1_BLOCKS_MINUS_ONE + 1] = (blocks_m1 >> 8) as u8;
        t[REGION1_BLOCK_SIZE_256] = (sector_len_per_device >> 8) as u8;
        t[REGION1_BLOCK_SIZE_256 + 1] = (sector_len_per_device >> 16) as u8;
        t[PRIMARY_EXTENDED_TABLE..PRIMARY_EXTENDED_TABLE + 3].copy_from_slice(b"PRI");
        t[PRIMARY_EXTENDED_VERSION..PRIMARY_EXTENDED_VERSION + 2].copy_from_slice(b"10");
        t[PROTECTION_FIELDS] = 1;

        let mut writeblock_size = 1u64 << t[MAX_BUFFER_WRITE_SIZE];
        if num_devices > 1 {
            writeblock_size *= num_devices;
        }
        Cfi {
            table: t,
            writeblock_size,
        }
    }

    /// The table byte at `index`, 0 beyond the table.
    fn byte(&self, index: u64) -> u32 {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.table.get(i))
            .map_or(0, |&b| u32::from(b))
    }
}

/// Shift that turns a bus offset into a chip-level query index (non-legacy mode).
fn query_shift(g: &Geometry) -> u32 {
    let bw = u32::from(g.bank_width).trailing_zeros();
    let mdw = u32::from(g.effective_max_device_width()).trailing_zeros();
    let dw = u32::from(g.device_width).trailing_zeros();
    (bw + mdw).saturating_sub(dw)
}

/// Repeats the low `device_width` bytes of `resp` across the bank (one answer per chip).
fn replicate(g: &Geometry, mut resp: u32) -> u32 {
    let dw = u32::from(g.device_width);
    let bw = u32::from(g.bank_width);
    if dw < bw {
        let mut i = dw;
        while i < bw {
            resp = deposit32(resp, 8 * i, 8 * dw, resp);
            i += dw;
        }
    }
    resp
}

/// Legacy-mode (device width 0) query index: low address byte, scaled by bank width 2 or 4
/// (QEMU does not scale for width 8).
fn legacy_index(g: &Geometry, offset: u64) -> u64 {
    let boff = offset & QUERY_INDEX_MASK;
    match g.bank_width {
        2 => boff >> 1,
        4 => boff >> 2,
        _ => boff,
    }
}

/// One chip-bank answer to a CFI query at `offset` (non-legacy mode).
fn cfi_query(g: &Geometry, cfi: &Cfi, offset: u64) -> u32 {
    let boff = offset >> query_shift(g);
    if boff >= CFI_LEN as u64 {
        return 0;
    }
    let mut resp = cfi.byte(boff);
    let mdw = g.effective_max_device_width();
    if g.device_width != mdw {
        // Only a wide chip used in x8 mode is supported; its answer is repeated in each byte.
        if g.device_width != 1 || g.bank_width > 4 {
            return 0;
        }
        for i in 1..u32::from(mdw) {
            resp = deposit32(resp, 8 * i, 8, cfi.byte(boff));
        }
    }
    replicate(g, resp)
}

/// One chip-bank answer to an identifier read at `offset` (non-legacy mode).
fn devid_query(g: &Geometry, offset: u64) -> u32 {
    let boff = offset >> query_shift(g);
    let resp = match boff & QUERY_INDEX_MASK {
        ID_MANUFACTURER => u32::from(g.id[0]),
        ID_DEVICE => u32::from(g.id[1]),
        _ => return 0,
    };
    replicate(g, resp)
}

/// Combines per-bank answers for an access wider than the bank, like QEMU: starting from all
/// ones, the answer for `offset + i * bank_width` is deposited at byte `i` for each bank-width
/// step `i` (QEMU scales the offset by the bank width twice; kept for equality).
fn combine(g: &Geometry, offset: u64, width: u32, query: impl Fn(u64) -> u32) -> u32 {
    let bw = u32::from(g.bank_width);
    let mut ret = u32::MAX;
    let mut i = 0;
    while i < width {
        let at = offset.wrapping_add(u64::from(i) * u64::from(bw));
        ret = deposit32(ret, i * 8, bw * 8, query(at));
        i += bw;
    }
    ret
}

/// Value of a read in read-identifier (0x90) mode.
pub(crate) fn read_id(g: &Geometry, offset: u64, width: u32) -> u32 {
    if g.device_width == 0 {
        match legacy_index(g, offset) {
            ID_MANUFACTURER => u32::from(g.id[0]) << 8 | u32::from(g.id[1]),
            ID_DEVICE => u32::from(g.id[2]) << 8 | u32::from(g.id[3]),
            _ => 0,
        }
    } else {
        combine(g, offset, width, |at| devid_query(g, at))
    }
}

/// Value of a read in CFI query (0x98) mode.
pub(crate) fn read_cfi(g: &Geometry, cfi: &Cfi, offset: u64, width: u32) -> u32 {
    if g.device_width == 0 {
        cfi.byte(legacy_index(g, offset))
    } else {
        combine(g, offset, width, |at| cfi_query(g, cfi, at))
    }
}

/// Value of a status register read: the status of each chip of the bank.
pub(crate) fn read_status(g: &Geometry, status: u8, width: u32) -> u32 {
    let status = u32::from(status);
    let mut ret = status;
    let dw = u32::from(g.device_width) * 8;
    let width = width * 8;
    if dw != 0 && width > dw {
        let mut shift = dw;
        while shift + dw <= width {
            ret |= status << shift;
            shift += dw;
        }
    } else if dw == 0 && width > 16 {
        // Legacy mode: two 16-bit chips are assumed for wide accesses.
        ret |= status << 16;
    }
    ret
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q35_table() {
        let g = Geometry::q35(0x84000).unwrap();
        let c = Cfi::new(&g);
        let expect: [u8; 0x40] = [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
            0x51, 0x52, 0x59, 0x01, 0x00, 0x31, 0x00, 0x00, //
            0x00, 0x00, 0x00, 0x45, 0x55, 0x00, 0x00, 0x07, //
            0x07, 0x0a, 0x00, 0x04, 0x04, 0x04, 0x00, 0x0e, //
            0x02, 0x00, 0x08, 0x00, 0x01, 0x83, 0x00, 0x10, //
            0x00, 0x50, 0x52, 0x49, 0x31, 0x30, 0x00, 0x00, //
            0, 0, 0, 0, 0, 0, 0, 0x01,
        ];
        assert_eq!(&c.table[..0x40], &expect[..]);
        assert!(c.table[0x40..].iter().all(|&b| b == 0));
        assert_eq!(c.writeblock_size, 256);
        // Code flash of the Debian 4M build.
        let c = Cfi::new(&Geometry::q35(0x37c000).unwrap());
        assert_eq!((c.table[0x2D], c.table[0x2E]), (0x7b, 0x03));
        assert_eq!(c.table[0x27], 0x37c000u32.trailing_zeros() as u8);
    }

    #[test]
    fn arm_virt_table() {
        let g = Geometry::arm_virt();
        let c = Cfi::new(&g);
        // One 16-bit chip: 256 blocks of 128 KiB = 32 MiB.
        assert_eq!(c.table[0x27], 25);
        assert_eq!(c.table[0x2A], 0x0b);
        assert_eq!((c.table[0x2D], c.table[0x2E]), (0xff, 0x00));
        assert_eq!((c.table[0x2F], c.table[0x30]), (0x00, 0x02));
        assert_eq!(c.writeblock_size, 4096);
    }

    #[test]
    fn deposit() {
        assert_eq!(deposit32(0xffff_ffff, 0, 32, 0x51), 0x51);
        assert_eq!(deposit32(0x0000_0089, 16, 16, 0x0089), 0x0089_0089);
        assert_eq!(deposit32(0x12, 8, 8, 0x12), 0x1212);
        assert_eq!(deposit32(0x12, 32, 8, 0x12), 0x12);
        assert_eq!(deposit32(0x12, 24, 16, 0xabcd), 0xcd00_0012);
    }

    #[test]
    fn wide_chip_in_x8_mode() {
        // Four 16-bit chips used in 8-bit mode: width 4, device-width 1, max-device-width 2.
        let mut g = Geometry::arm_virt();
        g.device_width = 1;
        g.max_device_width = 2;
        let c = Cfi::new(&g);
        // Index 0x10 is at bus offset 0x10 << (2 + 1 - 0) = 0x80.
        assert_eq!(read_cfi(&g, &c, 0x80, 4), 0x5151_5151);
        assert_eq!(read_cfi(&g, &c, 0x80, 1), 0x5151_5151);
    }
}
