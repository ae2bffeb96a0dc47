//! The guest physical memory map: QEMU q35's for the two flash devices, RAM at 0.
//!
//! QEMU's x86 machines map the `if=pflash` drives from the top of the 32-bit address space
//! down: unit 0 (the code) ends at 4 GiB, so the reset vector at `0xFFFF_FFF0` is its last
//! 16 bytes, and unit 1 (the variable store) sits directly below unit 0. Both sizes must be
//! non-zero multiples of 4 KiB (QEMU's flash sector), and QEMU refuses a combined size above
//! 8 MiB (its default `max-fw-size`).

/// The end of the 32-bit address space, where the code flash ends.
pub const FOUR_GIB: u64 = 1 << 32;

/// QEMU's x86 flash sector, the granule of both flash images.
pub const FLASH_SECTOR: u64 = 4096;

/// QEMU's default limit (`max-fw-size`) on the combined size of the flash devices.
pub const MAX_FLASH_TOTAL: u64 = 8 << 20;

/// Guest RAM at address 0, as `-m 16` gives the QEMU guest.
pub const RAM_SIZE: u64 = 16 << 20;

/// The guest's stack top, inside RAM.
pub const STACK_TOP: u32 = 0x9_0000;

/// Three pages Intel's KVM needs for real mode without unrestricted guest support
/// (`KVM_SET_TSS_ADDR`); QEMU puts them at the same address, below the flash range.
pub const TSS_ADDRESS: usize = 0xfeff_d000;

/// Where the two flashes are in guest physical memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlashMap {
    /// Base of the code flash (unit 0).
    pub code_base: u64,
    /// Size of the code flash.
    pub code_len: u64,
    /// Base of the varstore flash (unit 1).
    pub vars_base: u64,
    /// Size of the varstore flash.
    pub vars_len: u64,
}

/// A flash size QEMU would refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A flash image is empty or not a multiple of 4 KiB.
    #[error("{what} flash is {len:#x} bytes: not a non-zero multiple of 4 KiB")]
    Size {
        /// `code` or `vars`.
        what: &'static str,
        /// Its size.
        len: u64,
    },
    /// Both together exceed QEMU's limit.
    #[error("code ({code_len:#x} bytes) and vars ({vars_len:#x} bytes) flash exceed the {MAX_FLASH_TOTAL:#x}-byte limit")]
    TooLarge {
        /// Code flash size.
        code_len: u64,
        /// Vars flash size.
        vars_len: u64,
    },
}

impl FlashMap {
    /// The q35 map for a code flash of `code_len` and a vars flash of `vars_len` bytes.
    ///
    /// ```
    /// let map = pflash_vmm::layout::FlashMap::q35(0x4_0000, 0x8_4000).unwrap();
    /// assert_eq!(map.code_base, 0xfffc_0000);
    /// assert_eq!(map.vars_base, 0xfffc_0000 - 0x8_4000);
    /// ```
    ///
    /// # Errors
    ///
    /// Sizes QEMU refuses ([`LayoutError`]).
    pub fn q35(code_len: u64, vars_len: u64) -> Result<FlashMap, LayoutError> {
        for (what, len) in [("code", code_len), ("vars", vars_len)] {
            if len == 0 || len % FLASH_SECTOR != 0 {
                return Err(LayoutError::Size { what, len });
            }
        }
        if code_len + vars_len > MAX_FLASH_TOTAL {
            return Err(LayoutError::TooLarge { code_len, vars_len });
        }
        let code_base = FOUR_GIB - code_len;
        Ok(FlashMap {
            code_base,
            code_len,
            vars_base: code_base - vars_len,
            vars_len,
        })
    }

    /// The varstore offset of guest physical address `gpa`, if it is inside that flash.
    pub fn vars_offset(&self, gpa: u64, len: usize) -> Option<u64> {
        let offset = gpa.checked_sub(self.vars_base)?;
        (offset + len as u64 <= self.vars_len).then_some(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_qemu_refuses() {
        assert!(FlashMap::q35(0, 4096).is_err());
        assert!(FlashMap::q35(4096, 4097).is_err());
        assert!(FlashMap::q35(4 << 20, 4 << 20).is_ok());
        assert!(FlashMap::q35(4 << 20, (4 << 20) + 4096).is_err());
    }

    #[test]
    fn vars_offsets() {
        let map = FlashMap::q35(0x1_0000, 0x2000).unwrap();
        assert_eq!(map.vars_offset(map.vars_base, 4), Some(0));
        assert_eq!(map.vars_offset(map.vars_base + 0x1ffc, 4), Some(0x1ffc));
        assert_eq!(map.vars_offset(map.vars_base + 0x1ffe, 4), None);
        assert_eq!(map.vars_offset(map.vars_base - 1, 1), None);
    }
}
