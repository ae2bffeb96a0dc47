//! The guest program: a code-flash image that enters 32-bit protected mode, probes the vars
//! flash, performs a table of flash accesses, checks every read and the final content, and
//! reports on COM1 and through QEMU's `isa-debug-exit` port.
//!
//! The image is the table of operations followed by 64 KiB of code ([`asm`]); the code knows
//! the table's address, the vars flash's base and size and the expected checksums as
//! immediates, so one image fits one varstore size (the CFI probe checks it).
//!
//! Each table entry is 8 bytes, little-endian: a word with the vars offset in bits 0–23, the
//! access size (1, 2 or 4) in bits 24–27 and the kind ([`Op`]) in bits 28–31, then the value
//! written or expected.

pub mod asm;
pub mod workload;

use crate::layout::{FlashMap, LayoutError, FLASH_SECTOR, FOUR_GIB};

/// Bytes of code at the top of the image ([`asm::CODE_REGION`]).
pub use asm::CODE_REGION;

/// Exit value the guest reports when the CFI probe fails.
pub const EXIT_PROBE_FAILED: u32 = 1;
/// Exit value for `m` mismatches is `EXIT_MISMATCH_BASE + min(m, 125)`: every value fits the
/// 7 bits a QEMU exit status keeps of it.
pub const EXIT_MISMATCH_BASE: u32 = 2;

/// One flash access of the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Write `value` (`size` bytes) at `offset`.
    Write {
        /// Offset in the vars flash.
        offset: u32,
        /// 1, 2 or 4.
        size: u8,
        /// The value.
        value: u32,
    },
    /// Read `size` bytes at `offset` and, when `expect` is set, compare.
    Read {
        /// Offset in the vars flash.
        offset: u32,
        /// 1, 2 or 4.
        size: u8,
        /// The value the reference device returns, or `None` for "don't check".
        expect: Option<u32>,
    },
}

/// Table entry kinds (bits 28–31 of the first word).
const KIND_END: u32 = 0;
const KIND_WRITE: u32 = 1;
const KIND_READ_CHECK: u32 = 2;
const KIND_READ: u32 = 3;

/// A workload ready to be put into an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// Shown by the guest on COM1.
    pub name: String,
    /// Size of the vars flash the operations are for.
    pub vars_len: u64,
    /// The accesses, in order.
    pub ops: Vec<Op>,
    /// [`checksum`] of the vars content the workload starts from.
    pub initial_checksum: u32,
    /// [`checksum`] of the vars content the workload must leave.
    pub final_checksum: u32,
}

/// Why an image cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// An operation the table cannot encode.
    #[error("operation {index}: {what}")]
    Op {
        /// Index in [`Program::ops`].
        index: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// The image and varstore do not fit QEMU's flash limits.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The assembler refused the program (a bug in [`asm`]).
    #[error("assembling the guest: {0}")]
    Asm(String),
}

/// The checksum the guest computes over the vars flash, 32-bit little-endian words in
/// order: `h = (rotl(h, 5) ^ word) * 0x0100_0193`, from 0. Integer-only, so the guest needs
/// no x87.
///
/// ```
/// assert_eq!(pflash_vmm::guest::checksum(&[]), 0);
/// assert_ne!(pflash_vmm::guest::checksum(&[1, 0, 0, 0]), pflash_vmm::guest::checksum(&[0, 1, 0, 0]));
/// ```
pub fn checksum(content: &[u8]) -> u32 {
    content.chunks_exact(4).fold(0u32, |h, word| {
        let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        (h.rotate_left(5) ^ word).wrapping_mul(0x0100_0193)
    })
}

fn encode_table(ops: &[Op]) -> Result<Vec<u8>, GuestError> {
    let mut table = Vec::with_capacity((ops.len() + 1) * 8);
    for (index, op) in ops.iter().enumerate() {
        let (kind, offset, size, value) = match *op {
            Op::Write {
                offset,
                size,
                value,
            } => (KIND_WRITE, offset, size, value),
            Op::Read {
                offset,
                size,
                expect: Some(value),
            } => (KIND_READ_CHECK, offset, size, value),
            Op::Read {
                offset,
                size,
                expect: None,
            } => (KIND_READ, offset, size, 0),
        };
        if !matches!(size, 1 | 2 | 4) {
            return Err(GuestError::Op {
                index,
                what: "access size is not 1, 2 or 4",
            });
        }
        if offset >= 1 << 24 || offset % u32::from(size) != 0 {
            return Err(GuestError::Op {
                index,
                what: "offset is unaligned or beyond 16 MiB",
            });
        }
        table.extend_from_slice(&(kind << 28 | u32::from(size) << 24 | offset).to_le_bytes());
        table.extend_from_slice(&value.to_le_bytes());
    }
    table.extend_from_slice(&(KIND_END << 28).to_le_bytes());
    table.extend_from_slice(&0u32.to_le_bytes());
    Ok(table)
}

/// The code-flash image for `program`: its size is a multiple of 4 KiB, as QEMU requires.
///
/// # Errors
///
/// Operations the table cannot encode, or an image and varstore too large for QEMU's map.
pub fn build_image(program: &Program) -> Result<Vec<u8>, GuestError> {
    let mut table = encode_table(&program.ops)?;
    let table_len = table.len().div_ceil(FLASH_SECTOR as usize) * FLASH_SECTOR as usize;
    table.resize(table_len, 0xff);
    let image_len = table_len as u64 + CODE_REGION;
    let map = FlashMap::q35(image_len, program.vars_len)?;
    let code = asm::assemble(&asm::Params {
        name: &program.name,
        table: (FOUR_GIB - image_len) as u32,
        ops: program.ops.len() as u32,
        vars_base: map.vars_base as u32,
        vars_len: program.vars_len as u32,
        initial_checksum: program.initial_checksum,
        final_checksum: program.final_checksum,
    })?;
    table.extend_from_slice(&code);
    debug_assert_eq!(table.len() as u64, image_len);
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_encoding() {
        let ops = [
            Op::Write {
                offset: 0x12345,
                size: 1,
                value: 0x10,
            },
            Op::Read {
                offset: 0x100,
                size: 4,
                expect: Some(0xdead_beef),
            },
        ];
        let table = encode_table(&ops).unwrap();
        assert_eq!(&table[..8], &[0x45, 0x23, 0x01, 0x11, 0x10, 0, 0, 0]);
        assert_eq!(
            &table[8..16],
            &[0x00, 0x01, 0x00, 0x24, 0xef, 0xbe, 0xad, 0xde]
        );
        assert_eq!(&table[16..], &[0; 8]);
        let bad = Op::Read {
            offset: 2,
            size: 4,
            expect: None,
        };
        assert!(encode_table(&[bad]).is_err());
    }
}
