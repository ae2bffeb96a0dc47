//! Why an image could not be read as a variable store at all.

use thiserror::Error;

/// What kind of failure a [`ParseError`] is, which decides how a tool reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The bytes are not an NV variable firmware volume (wrong file, wrong format).
    NotAVarstore,
    /// The image is all 0x00 or all 0xFF: never formatted. The ArmVirt, RiscVVirt and
    /// LoongArchVirt firmware formats such a flash at first boot (Debian 12 ships
    /// `AAVMF_VARS.fd` like this; see [`Layout::formats_blank_flash`](crate::Layout)); OVMF
    /// x86 cannot boot it.
    Unformatted,
    /// It is a variable store, but damaged so badly that its variables cannot be located.
    Damaged,
}

/// An image that could not be parsed; every variant names the file offset and the field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Shorter than a firmware volume header and a variable store header.
    #[error("image is only {len} bytes: too short for a firmware volume header and a variable store header")]
    TooShort {
        /// Image length.
        len: usize,
    },
    /// Every byte is the same erased or zero value.
    #[error("unformatted: all {len} bytes are 0x{fill:02X} (no firmware volume yet)")]
    Unformatted {
        /// Image length.
        len: usize,
        /// The byte the whole image consists of.
        fill: u8,
    },
    /// No `_FVH` signature.
    #[error("offset 0x28 (FV header Signature): expected \"_FVH\", found {found:02x?}: not a firmware volume")]
    NotFirmwareVolume {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// A firmware volume, but not one that holds NV variables.
    #[error("offset 0x10 (FV header FileSystemGuid): {found} is not gEfiSystemNvDataFvGuid: a firmware volume, but not a variable store")]
    NotNvDataVolume {
        /// The FileSystemGuid found.
        found: crate::Guid,
    },
    /// A field whose value makes the rest of the image impossible to locate.
    #[error("offset 0x{offset:X} ({field}): {problem}")]
    Damaged {
        /// File offset of the field.
        offset: u64,
        /// The field, as the edk2 headers name it.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl ParseError {
    /// How to report this error (see [`ErrorKind`]).
    ///
    /// ```
    /// use varstore::{ErrorKind, Varstore};
    /// let err = Varstore::parse(&[0u8; 4096]).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Unformatted);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::TooShort { .. }
            | Self::NotFirmwareVolume { .. }
            | Self::NotNvDataVolume { .. } => ErrorKind::NotAVarstore,
            Self::Unformatted { .. } => ErrorKind::Unformatted,
            Self::Damaged { .. } => ErrorKind::Damaged,
        }
    }

    /// File offset the error is about.
    pub fn offset(&self) -> u64 {
        match self {
            Self::TooShort { .. } | Self::Unformatted { .. } => 0,
            Self::NotFirmwareVolume { .. } => 0x28,
            Self::NotNvDataVolume { .. } => 0x10,
            Self::Damaged { offset, .. } => *offset,
        }
    }
}
