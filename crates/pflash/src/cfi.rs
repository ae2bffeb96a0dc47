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
        t[0x10..0x13].copy_from_slice(b"QRY");
        t[0x13] = 0x01; // Intel/Sharp command set
        t[0x15] = 0x31; // primary extended table at 0x31
        t[0x1B] = 0x45;
        t[0x1C] = 0x55;
        t[0x1F] = 0x07;
        t[0x20] = 0x07;
        t[0x21] = 0x0a;
        t[0x23] = 0x04;
        t[0x24] = 0x04;
        t[0x25] = 0x04;
        // QEMU passes the 64-bit chip size to ctz32(): only its low 32 bits count.
        t[0x27] = ctz32(device_len as u32) as u8;
        t[0x28] = 0x02;
        t[0x2A] = if g.bank_width == 1 { 0x08 } else { 0x0b };
        t[0x2C] = 0x01; // one uniform erase region
        let blocks_m1 = blocks_per_device.wrapping_sub(1);
        t[0x2D] = blocks_m1 as u8;
        t[0x2E] = (blocks_m1 >> 8) as u8;
        t[0x2F] = (sector_len_per_device >> 8) as u8;
        t[0x30] = (sector_len_per_device >> 16) as u8;
        t[0x31..0x34].copy_from_slice(b"PRI");
        t[0x34..0x36].copy_from_slice(b"10");
        t[0x3f] = 0x01; // number of protection fields

        let mut writeblock_size = 1u64 << t[0x2A];
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
    let boff = offset & 0xff;
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
    let resp = match boff & 0xff {
        0 => u32::from(g.id[0]),
        1 => u32::from(g.id[1]),
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
            0 => u32::from(g.id[0]) << 8 | u32::from(g.id[1]),
            1 => u32::from(g.id[2]) << 8 | u32::from(g.id[3]),
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
