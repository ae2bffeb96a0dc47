//! The device's configuration: the properties QEMU's `cfi.pflash01` takes, the QEMU release
//! to behave like, and presets.

use crate::compat::Compat;

/// Sector size QEMU's x86 `pc`/`q35` machines give both flash devices.
const Q35_SECTOR_LEN: u64 = 4096;
/// Sector size of the flash banks of QEMU's arm, riscv and loongarch `virt` machines
/// (`VIRT_FLASH_SECTOR_SIZE` in each `virt.c`/`virt.h`).
const VIRT_SECTOR_LEN: u64 = 256 * 1024;

/// The configuration of one flash device, named after QEMU's `cfi.pflash01` properties.
///
/// The device covers `sector_len * num_blocks` bytes of guest physical address space.
/// Besides QEMU's properties it names the QEMU release to behave like ([`Compat`], the newest
/// unless set with [`with_compat`](Self::with_compat)).
///
/// ```
/// use pflash::{Compat, Geometry};
///
/// let g = Geometry::q35(540_672).unwrap();
/// assert_eq!((g.num_blocks, g.sector_len, g.size()), (132, 4096, 540_672));
/// assert_eq!(g.compat, Compat::Qemu10_0);
/// assert_eq!(g.with_compat(Compat::Qemu7_2).compat, Compat::Qemu7_2);
/// assert_eq!(Geometry::arm_virt().size(), 64 << 20);
/// assert_eq!(Geometry::riscv_virt().size(), 32 << 20);
/// assert_eq!(Geometry::loongarch_virt().size(), 16 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Geometry {
    /// Erase block size in bytes (`sector-length`): a power of two.
    pub sector_len: u64,
    /// Number of erase blocks (`num-blocks`).
    pub num_blocks: u32,
    /// Bus width of the whole bank in bytes (`width`): 1, 2, 4 or 8.
    pub bank_width: u8,
    /// Width of one chip in bytes (`device-width`); 0 selects QEMU's legacy behaviour (a
    /// single chip as wide as the bank, with the historical ID/CFI/status quirks).
    pub device_width: u8,
    /// Widest mode the chips support (`max-device-width`); 0 means `device_width`.
    pub max_device_width: u8,
    /// Big-endian bus (`big-endian`): multi-byte values are exchanged most significant byte
    /// first.
    pub big_endian: bool,
    /// Manufacturer and device identification codes (`id0` to `id3`).
    pub id: [u16; 4],
    /// The backing image cannot be written: programs and erases fail with status error bits.
    pub read_only: bool,
    /// The QEMU release whose behaviour the device reproduces (not a QEMU property: QEMU is
    /// one release). Migration streams carry it, and a destination refuses a different one
    /// unless told otherwise.
    pub compat: Compat,
}

/// Why a [`Geometry`] (or content or state given with it) cannot make a device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    /// `sector_len` is zero or not a power of two.
    #[error("sector length {0:#x} is not a non-zero power of two")]
    SectorLength(u64),
    /// `num_blocks` is zero.
    #[error("the number of blocks is zero")]
    ZeroBlocks,
    /// The device would not fit the address space of this host.
    #[error("device size {sector_len:#x} * {num_blocks} does not fit in memory")]
    TooLarge {
        /// Sector length.
        sector_len: u64,
        /// Number of blocks.
        num_blocks: u32,
    },
    /// `bank_width` is not 1, 2, 4 or 8.
    #[error("bank width {0} is not 1, 2, 4 or 8")]
    BankWidth(u8),
    /// `device_width` or `max_device_width` is not 0, 1, 2, 4 or 8, the device width exceeds
    /// the bank width, or the maximum device width is below the device width.
    #[error("device width {device_width} / max device width {max_device_width} does not fit bank width {bank_width}")]
    DeviceWidth {
        /// Bank width.
        bank_width: u8,
        /// Device width.
        device_width: u8,
        /// Maximum device width.
        max_device_width: u8,
    },
    /// An image size that QEMU's x86 machines refuse: zero or not a multiple of 4 KiB.
    #[error("flash image size {0:#x} is not a non-zero multiple of 4 KiB")]
    ImageSize(u64),
    /// The content given to the device does not have the geometry's size.
    #[error("content is {got:#x} bytes, the geometry needs {expected:#x}")]
    ContentLength {
        /// `Geometry::size()`.
        expected: u64,
        /// The length given.
        got: u64,
    },
    /// A [`PflashState`](crate::PflashState) that this geometry cannot resume.
    #[error("inconsistent device state: {0}")]
    State(&'static str),
}

impl Geometry {
    /// The varstore (or code) flash of QEMU's x86 `pc`/`q35` machines for an image of
    /// `image_len` bytes: 4 KiB sectors, bank width 1, legacy device width, ids 0,
    /// little-endian, writable.
    ///
    /// # Errors
    ///
    /// [`GeometryError::ImageSize`] unless `image_len` is a non-zero multiple of 4 KiB (QEMU
    /// refuses such images too).
    pub fn q35(image_len: u64) -> Result<Geometry, GeometryError> {
        if image_len == 0 || image_len % Q35_SECTOR_LEN != 0 {
            return Err(GeometryError::ImageSize(image_len));
        }
        let num_blocks = u32::try_from(image_len / Q35_SECTOR_LEN)
            .map_err(|_| GeometryError::ImageSize(image_len))?;
        let g = Geometry {
            sector_len: Q35_SECTOR_LEN,
            num_blocks,
            bank_width: 1,
            device_width: 0,
            max_device_width: 0,
            big_endian: false,
            id: [0; 4],
            read_only: false,
            compat: Compat::default(),
        };
        g.validate()?;
        Ok(g)
    }

    /// One flash bank of QEMU's arm `virt` machine (`hw/arm/virt.c`): 64 MiB, 256 KiB
    /// sectors, bank width 4 made of two 16-bit chips, ids 0x89, 0x18, 0, 0, little-endian,
    /// writable. The vars bank is at 0x0400_0000.
    pub fn arm_virt() -> Geometry {
        Self::virt_bank(64 << 20)
    }

    /// One flash bank of QEMU's riscv `virt` machine (`hw/riscv/virt.c`): the 64 MiB flash
    /// window at 0x2000_0000 split into two banks of 32 MiB (the vars bank at 0x2200_0000),
    /// otherwise as [`arm_virt`](Self::arm_virt): 256 KiB sectors, two 16-bit chips in a
    /// 32-bit bank, ids 0x89, 0x18.
    ///
    /// ```
    /// let g = pflash::Geometry::riscv_virt();
    /// assert_eq!((g.num_blocks, g.sector_len, g.bank_width, g.device_width), (128, 256 << 10, 4, 2));
    /// ```
    pub fn riscv_virt() -> Geometry {
        Self::virt_bank(32 << 20)
    }

    /// The vars flash of QEMU's loongarch `virt` machine (`hw/loongarch/virt.c`,
    /// `VIRT_FLASH1_*` in `include/hw/loongarch/virt.h` since QEMU 9.1): 16 MiB at
    /// 0x1d00_0000, 256 KiB sectors, two 16-bit chips in a 32-bit bank, ids 0x89, 0x18.
    ///
    /// ```
    /// let g = pflash::Geometry::loongarch_virt();
    /// assert_eq!((g.num_blocks, g.sector_len, g.bank_width, g.device_width), (64, 256 << 10, 4, 2));
    /// ```
    pub fn loongarch_virt() -> Geometry {
        Self::virt_bank(16 << 20)
    }

    /// The flash bank every `virt` machine builds (`virt_flash_create1`), `len` bytes.
    fn virt_bank(len: u64) -> Geometry {
        Geometry {
            sector_len: VIRT_SECTOR_LEN,
            num_blocks: (len / VIRT_SECTOR_LEN) as u32,
            bank_width: 4,
            device_width: 2,
            max_device_width: 0,
            big_endian: false,
            id: [0x89, 0x18, 0x00, 0x00],
            read_only: false,
            compat: Compat::default(),
        }
    }

    /// The same geometry behaving like QEMU release `compat`.
    ///
    /// ```
    /// use pflash::{Compat, Geometry};
    ///
    /// let g = Geometry::arm_virt().with_compat(Compat::Qemu7_2);
    /// assert_eq!(g.compat, Compat::Qemu7_2);
    /// assert_eq!(g.size(), Geometry::arm_virt().size());
    /// ```
    #[must_use]
    pub fn with_compat(mut self, compat: Compat) -> Geometry {
        self.compat = compat;
        self
    }

    /// Size of the device (and of its content) in bytes, `sector_len * num_blocks`
    /// (saturating; [`validate`](Self::validate) rejects sizes that overflow).
    pub fn size(&self) -> u64 {
        self.sector_len.saturating_mul(u64::from(self.num_blocks))
    }

    /// Checks that a device can be built with this geometry.
    ///
    /// QEMU itself only rejects a zero sector length or block count; this also rejects
    /// combinations on which QEMU computes nonsense or aborts (a sector length that is not a
    /// power of two, widths that are not powers of two, a device wider than its bank).
    ///
    /// # Errors
    ///
    /// The first problem found.
    pub fn validate(&self) -> Result<(), GeometryError> {
        if self.sector_len == 0 || !self.sector_len.is_power_of_two() {
            return Err(GeometryError::SectorLength(self.sector_len));
        }
        if self.num_blocks == 0 {
            return Err(GeometryError::ZeroBlocks);
        }
        let too_large = GeometryError::TooLarge {
            sector_len: self.sector_len,
            num_blocks: self.num_blocks,
        };
        let size = self
            .sector_len
            .checked_mul(u64::from(self.num_blocks))
            .ok_or(too_large.clone())?;
        if usize::try_from(size).is_err() || size > u64::MAX / 2 {
            return Err(too_large);
        }
        if !matches!(self.bank_width, 1 | 2 | 4 | 8) {
            return Err(GeometryError::BankWidth(self.bank_width));
        }
        let dw = self.device_width;
        let mdw = self.max_device_width;
        let bad_width = |w: u8| !matches!(w, 0 | 1 | 2 | 4 | 8);
        if bad_width(dw)
            || bad_width(mdw)
            || dw > self.bank_width
            || (dw == 0 && mdw != 0)
            || (mdw != 0 && mdw < dw)
        {
            return Err(GeometryError::DeviceWidth {
                bank_width: self.bank_width,
                device_width: dw,
                max_device_width: mdw,
            });
        }
        Ok(())
    }

    /// `max_device_width` as QEMU uses it: defaulted to `device_width` when 0.
    pub(crate) fn effective_max_device_width(&self) -> u8 {
        if self.max_device_width == 0 {
            self.device_width
        } else {
            self.max_device_width
        }
    }

    /// Number of chips making up the bank (1 in legacy mode).
    pub(crate) fn num_devices(&self) -> u64 {
        self.bank_width
            .checked_div(self.device_width)
            .map_or(1, u64::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q35_sizes() {
        let g = Geometry::q35(0x84000).unwrap();
        assert_eq!(g.num_blocks, 132);
        assert_eq!(g.size(), 0x84000);
        assert_eq!(g.device_width, 0);
        assert_eq!(g.bank_width, 1);
        assert_eq!(Geometry::q35(0), Err(GeometryError::ImageSize(0)));
        assert_eq!(Geometry::q35(4097), Err(GeometryError::ImageSize(4097)));
        assert!(Geometry::q35(0x37c000).is_ok());
    }

    #[test]
    fn arm_virt_is_valid() {
        let g = Geometry::arm_virt();
        g.validate().unwrap();
        assert_eq!(g.size(), 64 << 20);
        assert_eq!(g.effective_max_device_width(), 2);
        assert_eq!(g.num_devices(), 2);
    }

    #[test]
    fn riscv_and_loongarch_virt_are_valid() {
        for (g, len) in [
            (Geometry::riscv_virt(), 32 << 20),
            (Geometry::loongarch_virt(), 16 << 20),
        ] {
            g.validate().unwrap();
            assert_eq!(g.size(), len);
            assert_eq!(g.num_devices(), 2);
            assert_eq!(g.compat, Compat::Qemu10_0);
        }
    }

    #[test]
    fn validate_rejects() {
        let base = Geometry::arm_virt();
        let mut g = base.clone();
        g.sector_len = 3000;
        assert!(matches!(g.validate(), Err(GeometryError::SectorLength(_))));
        let mut g = base.clone();
        g.num_blocks = 0;
        assert_eq!(g.validate(), Err(GeometryError::ZeroBlocks));
        let mut g = base.clone();
        g.bank_width = 3;
        assert_eq!(g.validate(), Err(GeometryError::BankWidth(3)));
        let mut g = base.clone();
        g.device_width = 8;
        assert!(matches!(
            g.validate(),
            Err(GeometryError::DeviceWidth { .. })
        ));
        let mut g = base.clone();
        g.max_device_width = 1;
        assert!(matches!(
            g.validate(),
            Err(GeometryError::DeviceWidth { .. })
        ));
        let mut g = base;
        g.sector_len = 1 << 62;
        g.num_blocks = 8;
        assert!(matches!(g.validate(), Err(GeometryError::TooLarge { .. })));
    }
}
