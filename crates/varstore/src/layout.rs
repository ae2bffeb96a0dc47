//! Built-in layouts of the variable flash images of every edk2 platform for QEMU: OVMF (x86_64),
//! ArmVirtQemu (aarch64), RiscVVirtQemu (riscv64) and LoongArchVirtQemu (loongarch64), and blank
//! stores made from them (spec §10). A blank store is byte-identical to the distribution
//! template where one exists.
//!
//! The three `VirtNorFlashDxe` platforms (aarch64, riscv64, loongarch64) share one volume: FV
//! header and a 0x40000-byte variable region at 0, FTW working block at 0x40000, spare at
//! 0x80000, FvLength 0xC0000 in three 256 KiB blocks, then zeros to the end of the file. They
//! differ only in the size of the flash bank QEMU maps (64, 32 and 16 MiB), which QEMU requires
//! the file to have exactly; so the file size is what tells them apart.

use crate::format::{
    ftw_header_crc, fv_header_word_sum, BlockMapEntry, FtwWorkingBlockHeader, FvHeader,
    StoreHeader, FTW_STATE_VALID, FV_HEADER_FIXED_LEN, FV_REVISION, FV_SIGNATURE, STORE_FORMATTED,
    STORE_HEADER_LEN, STORE_HEALTHY,
};
use crate::guid;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::IntoBytes;

/// Where each region of a variable flash image lies, and the firmware limits that go with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The name users select it by (`nvram create --layout NAME`).
    pub name: &'static str,
    /// What it is for, in a few words.
    pub description: &'static str,
    /// Size of the whole file: the flash bank QEMU maps, which it requires the file to fill
    /// exactly. The aarch64, riscv64 and loongarch64 builds pad their volume with zeros to it.
    pub file_size: u64,
    /// `FvLength` of the firmware volume.
    pub fv_length: u64,
    /// Erase block size (block map entry length).
    pub block_size: u32,
    /// Number of blocks in the block map of a template.
    pub block_count: u32,
    /// FV `Attributes` of the distribution template.
    pub fv_attributes: u32,
    /// FV header + variable store (`PcdFlashNvStorageVariableSize`).
    pub variable_region: u32,
    /// The x86 "event log" block between the variables and the FTW working block.
    pub event_log: u32,
    /// FTW working block size (`PcdFlashNvStorageFtwWorkingSize`).
    pub ftw_working: u32,
    /// FTW spare area size (`PcdFlashNvStorageFtwSpareSize`).
    pub ftw_spare: u32,
    /// Fill byte from `fv_length` to `file_size`.
    pub padding: u8,
    /// `PcdMaxVariableSize`: header + name + data of a variable without AT.
    pub max_variable_size: u32,
    /// `PcdMaxAuthVariableSize`: the same for time-based authenticated variables (a
    /// platform that leaves it 0 gets `PcdMaxVariableSize`).
    pub max_auth_variable_size: u32,
    /// QEMU target architecture of the firmware (`x86_64`, `aarch64`, `riscv64`,
    /// `loongarch64`): what `qemu-system-ARCH` runs it and which per-architecture data (such
    /// as Microsoft's dbx updates) applies.
    pub arch: &'static str,
    /// Whether the firmware formats a blank (all 0x00 or all 0xFF) flash of `file_size` bytes
    /// at first boot. `VirtNorFlashDxe` (ArmVirt, RiscVVirt, LoongArchVirt) writes a fresh
    /// volume when the header does not validate; OVMF's QEMU flash driver does not.
    pub formats_blank_flash: bool,
}

const FV_HEADER_LEN: u16 = 0x48;

/// OVMF x86-64 built with a 4 MiB flash (`OVMF_VARS_4M.fd`): 528 KiB.
pub const OVMF_4M: Layout = Layout {
    name: "ovmf-4m",
    description: "OVMF x86-64, 4 MiB flash build (OVMF_VARS_4M.fd, 528 KiB)",
    file_size: 0x84000,
    fv_length: 0x84000,
    block_size: 0x1000,
    block_count: 0x84,
    fv_attributes: 0x0004_FEFF,
    variable_region: 0x40000,
    event_log: 0x1000,
    ftw_working: 0x1000,
    ftw_spare: 0x42000,
    padding: 0xFF,
    max_variable_size: 0x8400,
    max_auth_variable_size: 0x8400,
    arch: "x86_64",
    formats_blank_flash: false,
};

/// OVMF x86-64 built with a 1 or 2 MiB flash (`OVMF_VARS.fd`): 128 KiB.
pub const OVMF_2M: Layout = Layout {
    name: "ovmf-2m",
    description: "OVMF x86-64, 1/2 MiB flash build (OVMF_VARS.fd, 128 KiB)",
    file_size: 0x20000,
    fv_length: 0x20000,
    block_size: 0x1000,
    block_count: 0x20,
    fv_attributes: 0x0004_FEFF,
    variable_region: 0xE000,
    event_log: 0x1000,
    ftw_working: 0x1000,
    ftw_spare: 0x10000,
    padding: 0xFF,
    max_variable_size: 0x2000,
    max_auth_variable_size: 0x2800,
    arch: "x86_64",
    formats_blank_flash: false,
};

/// ArmVirtQemu (`AAVMF_VARS.fd`): a 768 KiB volume padded with zeros to the 64 MiB flash bank.
///
/// Debian 13's (edk2 2025.02) blank `AAVMF_VARS.fd` is exactly this. Debian 12's (edk2 2022.11)
/// is 64 MiB of zeros, which the firmware formats at first boot into the same layout with a
/// volume header of its own: Attributes 0xE36 and a block map of the whole bank (256 blocks),
/// as in Debian 12's `AAVMF_VARS.ms.fd`. The firmware checks neither field, so both are
/// this layout.
pub const AAVMF: Layout = Layout {
    name: "aavmf",
    description: "AAVMF / ArmVirtQemu arm64 (64 MiB flash bank, 768 KiB volume)",
    file_size: 0x400_0000,
    fv_length: 0xC0000,
    block_size: 0x40000,
    block_count: 3,
    fv_attributes: 0x0004_FEFF,
    variable_region: 0x40000,
    event_log: 0,
    ftw_working: 0x40000,
    ftw_spare: 0x40000,
    padding: 0x00,
    max_variable_size: 0x2000,
    max_auth_variable_size: 0x2800,
    arch: "aarch64",
    formats_blank_flash: true,
};

/// RiscVVirtQemu (`RISCV_VIRT_VARS.fd`, Debian's `qemu-efi-riscv64`): the ArmVirt volume
/// padded with zeros to the 32 MiB flash bank of QEMU's riscv64 `virt` machine.
pub const RISCV64: Layout = Layout {
    name: "riscv64",
    description: "RiscVVirtQemu riscv64 (RISCV_VIRT_VARS.fd: 32 MiB flash bank, 768 KiB volume)",
    file_size: 0x200_0000,
    arch: "riscv64",
    ..AAVMF
};

/// LoongArchVirtQemu (`QEMU_VARS.fd`, Debian's `qemu-efi-loongarch64`): the ArmVirt volume
/// padded with zeros to the 16 MiB flash bank of QEMU's loongarch64 `virt` machine. Its
/// platform leaves `PcdMaxAuthVariableSize` unset, so authenticated variables get
/// `PcdMaxVariableSize` too.
pub const LOONGARCH64: Layout = Layout {
    name: "loongarch64",
    description: "LoongArchVirtQemu loongarch64 (QEMU_VARS.fd: 16 MiB flash bank, 768 KiB volume)",
    file_size: 0x100_0000,
    max_auth_variable_size: 0x2000,
    arch: "loongarch64",
    ..AAVMF
};

/// Every built-in layout, default first. Layouts that share a volume come largest file first,
/// so that [`Layout::matching`] names the aarch64 one when the file size does not decide.
pub const LAYOUTS: &[Layout] = &[OVMF_4M, OVMF_2M, AAVMF, RISCV64, LOONGARCH64];

impl Layout {
    /// Finds a built-in layout by name (`ovmf-1m` is accepted for `ovmf-2m`: same varstore).
    ///
    /// ```
    /// assert_eq!(varstore::Layout::by_name("ovmf-4m").unwrap().file_size, 540672);
    /// assert!(varstore::Layout::by_name("nope").is_none());
    /// ```
    pub fn by_name(name: &str) -> Option<&'static Layout> {
        let name = if name == "ovmf-1m" { "ovmf-2m" } else { name };
        LAYOUTS.iter().find(|l| l.name == name)
    }

    /// The built-in layout whose firmware volume has this length and whose variable store has
    /// this size, if any. The aarch64, riscv64 and loongarch64 layouts share their volume:
    /// this returns `aavmf` for it; [`Layout::matching_file`] tells them apart.
    pub fn matching(fv_length: u64, store_size: u32) -> Option<&'static Layout> {
        LAYOUTS
            .iter()
            .find(|l| l.fv_length == fv_length && l.store_size() == store_size)
    }

    /// The built-in layout of a `file_len`-byte image whose volume has this length and whose
    /// store has this size: among the layouts with that volume, the one whose file has this
    /// size, else the first ([`Layout::matching`]), since a volume copied without its padding
    /// is still that firmware's store.
    ///
    /// ```
    /// use varstore::Layout;
    /// let vol = (0xC0000, 0x3FFB8);
    /// assert_eq!(Layout::matching_file(32 << 20, vol.0, vol.1).unwrap().name, "riscv64");
    /// assert_eq!(Layout::matching_file(16 << 20, vol.0, vol.1).unwrap().name, "loongarch64");
    /// assert_eq!(Layout::matching_file(64 << 20, vol.0, vol.1).unwrap().name, "aavmf");
    /// assert_eq!(Layout::matching_file(0xC0000, vol.0, vol.1).unwrap().name, "aavmf");
    /// ```
    pub fn matching_file(
        file_len: u64,
        fv_length: u64,
        store_size: u32,
    ) -> Option<&'static Layout> {
        let same_volume = || {
            LAYOUTS
                .iter()
                .filter(move |l| l.fv_length == fv_length && l.store_size() == store_size)
        };
        same_volume()
            .find(|l| l.file_size == file_len)
            .or_else(|| same_volume().next())
    }

    /// The built-in layout whose file has exactly `file_len` bytes, if any: what a blank
    /// (unformatted) flash image of that size is meant for.
    pub fn by_file_size(file_len: u64) -> Option<&'static Layout> {
        LAYOUTS.iter().find(|l| l.file_size == file_len)
    }

    /// `Size` of the variable store header: the variable region less the FV header.
    pub fn store_size(&self) -> u32 {
        self.variable_region - u32::from(FV_HEADER_LEN)
    }

    /// File offset of the FTW working block.
    pub fn ftw_working_offset(&self) -> u64 {
        u64::from(self.variable_region) + u64::from(self.event_log)
    }

    /// A blank, formatted store: what the firmware build ships as its template.
    ///
    /// ```
    /// let image = varstore::Layout::by_name("ovmf-2m").unwrap().create();
    /// let store = varstore::Varstore::parse(&image).unwrap();
    /// assert!(store.live_variables().is_empty());
    /// assert!(store.findings().is_empty());
    /// ```
    pub fn create(&self) -> Vec<u8> {
        let file_size = usize::try_from(self.file_size).expect("built-in layouts fit in memory");
        let fv_length = usize::try_from(self.fv_length).expect("built-in layouts fit in memory");
        let mut image = vec![0xFFu8; file_size];
        image[fv_length..].fill(self.padding);

        let mut header = FvHeader {
            zero_vector: [0; 16],
            file_system_guid: guid::SYSTEM_NV_DATA_FV.to_bytes(),
            fv_length: U64::new(self.fv_length),
            signature: FV_SIGNATURE,
            attributes: U32::new(self.fv_attributes),
            header_length: U16::new(FV_HEADER_LEN),
            checksum: U16::new(0),
            ext_header_offset: U16::new(0),
            reserved: 0,
            revision: FV_REVISION,
        };
        let block_map = [
            BlockMapEntry {
                num_blocks: U32::new(self.block_count),
                length: U32::new(self.block_size),
            },
            BlockMapEntry {
                num_blocks: U32::new(0),
                length: U32::new(0),
            },
        ];
        image[..FV_HEADER_FIXED_LEN].copy_from_slice(header.as_bytes());
        image[FV_HEADER_FIXED_LEN..usize::from(FV_HEADER_LEN)]
            .copy_from_slice(block_map.as_bytes());
        let sum = fv_header_word_sum(&image[..usize::from(FV_HEADER_LEN)]);
        header.checksum = U16::new(0u16.wrapping_sub(sum));
        image[..FV_HEADER_FIXED_LEN].copy_from_slice(header.as_bytes());

        let store = StoreHeader {
            signature: guid::AUTHENTICATED_VARIABLE_STORE.to_bytes(),
            size: U32::new(self.store_size()),
            format: STORE_FORMATTED,
            state: STORE_HEALTHY,
            reserved: U16::new(0),
            reserved1: U32::new(0),
        };
        let store_at = usize::from(FV_HEADER_LEN);
        image[store_at..store_at + STORE_HEADER_LEN].copy_from_slice(store.as_bytes());

        let ftw = pristine_ftw_header(self.ftw_working);
        let ftw_at = usize::try_from(self.ftw_working_offset()).expect("within the image");
        image[ftw_at..ftw_at + ftw.as_bytes().len()].copy_from_slice(ftw.as_bytes());
        image
    }
}

/// The working block header the FTW driver writes when it initialises a working block of
/// `working_size` bytes (spec §9.1).
pub(crate) fn pristine_ftw_header(working_size: u32) -> FtwWorkingBlockHeader {
    let mut header = FtwWorkingBlockHeader {
        signature: guid::FTW_WORKING_BLOCK.to_bytes(),
        crc: U32::new(0),
        state: FTW_STATE_VALID,
        reserved: [0xFF; 3],
        write_queue_size: U64::new(u64::from(working_size) - 32),
    };
    header.crc = U32::new(ftw_header_crc(&header));
    header
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromBytes;

    fn u16_at(image: &[u8], at: usize) -> Option<u16> {
        U16::read_from_prefix(image.get(at..)?)
            .ok()
            .map(|(v, _)| v.get())
    }

    fn u32_at(image: &[u8], at: usize) -> Option<u32> {
        U32::read_from_prefix(image.get(at..)?)
            .ok()
            .map(|(v, _)| v.get())
    }

    #[test]
    fn template_checksums_and_crcs_match_the_shipped_values() {
        // Values from the edk2 fdf templates (spec §2, §9.1, §17).
        for (layout, checksum, crc) in [
            (OVMF_2M, 0xF919, 0x642C_AF2C),
            (OVMF_4M, 0xB8AF, 0x642C_AF2C),
            (AAVMF, 0x0928, 0x86C6_E75B),
            (RISCV64, 0x0928, 0x86C6_E75B),
            (LOONGARCH64, 0x0928, 0x86C6_E75B),
        ] {
            let image = layout.create();
            assert_eq!(u16_at(&image, 0x32), Some(checksum), "{}", layout.name);
            let ftw = usize::try_from(layout.ftw_working_offset()).unwrap();
            assert_eq!(u32_at(&image, ftw + 0x10), Some(crc), "{}", layout.name);
            assert_eq!(image.len() as u64, layout.file_size);
        }
    }

    #[test]
    fn every_blank_store_parses_healthy_as_its_own_layout() {
        let mut names: Vec<&str> = LAYOUTS.iter().map(|l| l.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), LAYOUTS.len(), "layout names must be unique");
        for layout in LAYOUTS {
            let image = layout.create();
            let store = crate::Varstore::parse(&image).unwrap();
            assert_eq!(store.layout().map(|l| l.name), Some(layout.name));
            assert!(store.findings().is_empty(), "{}", layout.name);
            assert_eq!(Layout::by_file_size(layout.file_size), Some(layout));
            assert_eq!(Layout::by_name(layout.name), Some(layout));
        }
    }
}
