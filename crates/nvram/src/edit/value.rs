//! Encoding a variable's data from text, as `nvram set --KIND VALUE` and the `KIND:VALUE` of a
//! fleet edit ([`crate::apply::parse_set`]) spell it.

use std::path::Path;
use varstore::json::bounded;

/// How the text of a value becomes the bytes of a variable.
///
/// ```
/// use nvram::edit::DataKind;
/// assert_eq!(DataKind::U16.encode("5")?, [5, 0]);
/// assert_eq!(DataKind::Ascii.encode("en")?, b"en\0");
/// assert_eq!(DataKind::Hex.encode("01:02 03")?, [1, 2, 3]);
/// assert_eq!("data-hex".parse::<DataKind>()?, DataKind::Hex);
/// assert!(DataKind::U8.encode("256").is_err());
/// # Ok::<(), nvram::edit::ValueError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataKind {
    /// Hex digits, with spaces and colons allowed between bytes (`hex` or `data-hex`).
    Hex,
    /// The bytes of a regular file of at most [`super::MAX_DATA_FILE_LEN`] bytes (`file` or
    /// `data-file`).
    File,
    /// A UEFI string (CHAR16: UCS-2 little-endian) with its terminating NUL.
    String,
    /// An ASCII string with a terminating NUL (like PlatformLang "en").
    Ascii,
    /// One byte (decimal or `0x` hex).
    U8,
    /// A 16-bit little-endian number (e.g. Timeout, BootNext).
    U16,
    /// A 32-bit little-endian number.
    U32,
}

impl DataKind {
    /// Every kind, in the order they are listed to users.
    pub const ALL: [Self; 7] = [
        Self::Hex,
        Self::File,
        Self::String,
        Self::Ascii,
        Self::U8,
        Self::U16,
        Self::U32,
    ];

    /// The short name (`hex`, `file`, `string`, `ascii`, `u8`, `u16`, `u32`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hex => "hex",
            Self::File => "file",
            Self::String => "string",
            Self::Ascii => "ascii",
            Self::U8 => "u8",
            Self::U16 => "u16",
            Self::U32 => "u32",
        }
    }

    /// The bytes `value` stands for. A [`DataKind::File`] value is a path (which must be
    /// UTF-8 here; [`read_data_file`] takes any path).
    pub fn encode(self, value: &str) -> Result<Vec<u8>, ValueError> {
        let number = |max: u64| -> Result<u64, ValueError> {
            crate::edit::parse_number(value)
                .filter(|n| *n <= max)
                .ok_or_else(|| ValueError::NotANumber {
                    kind: self,
                    value: bounded(value).into_owned(),
                    max,
                })
        };
        match self {
            Self::Hex => {
                let compact: String = value
                    .chars()
                    .filter(|c| !c.is_whitespace() && *c != ':')
                    .collect();
                hex::decode(&compact).map_err(|source| ValueError::NotHex { source })
            }
            Self::File => read_data_file(Path::new(value)),
            Self::String => {
                let mut out: Vec<u8> = value.encode_utf16().flat_map(u16::to_le_bytes).collect();
                out.extend_from_slice(&[0, 0]);
                Ok(out)
            }
            Self::Ascii => {
                if !value.is_ascii() {
                    return Err(ValueError::NotAscii {
                        value: bounded(value).into_owned(),
                    });
                }
                let mut out = value.as_bytes().to_vec();
                out.push(0);
                Ok(out)
            }
            Self::U8 => Ok(vec![number(0xFF)? as u8]),
            Self::U16 => Ok((number(0xFFFF)? as u16).to_le_bytes().to_vec()),
            Self::U32 => Ok((number(0xFFFF_FFFF)? as u32).to_le_bytes().to_vec()),
        }
    }
}

impl std::fmt::Display for DataKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DataKind {
    type Err = ValueError;

    /// The short names, and `data-hex`/`data-file` as `nvram set` spells those flags.
    fn from_str(text: &str) -> Result<Self, ValueError> {
        match text {
            "data-hex" => Ok(Self::Hex),
            "data-file" => Ok(Self::File),
            _ => Self::ALL
                .into_iter()
                .find(|k| k.as_str() == text)
                .ok_or_else(|| ValueError::UnknownKind {
                    kind: bounded(text).into_owned(),
                }),
        }
    }
}

/// Why a value could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    /// Not one of the [`DataKind`]s.
    #[error("unknown data kind {kind:?}: use one of hex, file, string, ascii, u8, u16, u32")]
    UnknownKind {
        /// The kind given.
        kind: String,
    },
    /// [`DataKind::Hex`] text that is not hex.
    #[error("not hex: {source}")]
    NotHex {
        /// What hex found.
        source: hex::FromHexError,
    },
    /// [`DataKind::Ascii`] text that is not ASCII.
    #[error("{value:?}: not ASCII (a UEFI CHAR16 string is the string kind)")]
    NotAscii {
        /// The text given.
        value: String,
    },
    /// A number kind whose text is no number in its range.
    #[error("{kind} {value:?}: not a number from 0 to {max}")]
    NotANumber {
        /// The kind.
        kind: DataKind,
        /// The text given.
        value: String,
        /// The largest number of the kind.
        max: u64,
    },
    /// A data file that cannot be read, is not a regular file, or is too large (the error
    /// names the file).
    #[error(transparent)]
    File(#[from] safefile::InputError),
}

/// The content of a data file: a regular file of at most [`super::MAX_DATA_FILE_LEN`] bytes
/// (a FIFO or `/dev/zero` is refused at once).
pub fn read_data_file(path: &Path) -> Result<Vec<u8>, ValueError> {
    safefile::read_input(
        path,
        safefile::Accept::RegularFile,
        super::MAX_DATA_FILE_LEN,
        "variable data",
    )
    .map_err(ValueError::File)
}

/// The vendor GUID and attributes virt-firmware gives a variable it creates by name (its
/// `efivar_defaults`, as `--set-true`/`--set-false` use them): the firmware's and shim's
/// well-known variables get theirs, `Boot…` variables NV+BS+RT under the EFI global GUID,
/// anything else NV+BS under the EFI global GUID.
///
/// ```
/// use nvram::edit::virt_firmware_defaults;
/// use varstore::{guid, Attributes};
/// assert_eq!(virt_firmware_defaults("FB_NO_REBOOT"), (guid::SHIM_LOCK, Attributes(0x7)));
/// assert_eq!(virt_firmware_defaults("MyFlag"), (guid::EFI_GLOBAL_VARIABLE, Attributes(0x3)));
/// ```
pub fn virt_firmware_defaults(name: &str) -> (varstore::Guid, varstore::Attributes) {
    use varstore::secureboot::{CUSTOM_MODE_GUID, SECURE_BOOT_ENABLE_GUID};
    use varstore::{guid, Attributes};
    let nv_bs = Attributes(0x3);
    match name {
        "SecureBoot" => (guid::EFI_GLOBAL_VARIABLE, Attributes(0x6)),
        "SecureBootEnable" => (SECURE_BOOT_ENABLE_GUID, nv_bs),
        "CustomMode" => (CUSTOM_MODE_GUID, nv_bs),
        "PK" | "KEK" => (guid::EFI_GLOBAL_VARIABLE, Attributes(0x27)),
        "db" | "dbx" => (guid::IMAGE_SECURITY_DATABASE, Attributes(0x27)),
        "MokList" | "MokListX" | "MokListTrusted" | "SbatLevel" | "SHIM_DEBUG" | "SHIM_VERBOSE"
        | "FALLBACK_VERBOSE" => (guid::SHIM_LOCK, nv_bs),
        "FB_NO_REBOOT" => (guid::SHIM_LOCK, Attributes(0x7)),
        n if n.starts_with("Boot") => (guid::EFI_GLOBAL_VARIABLE, Attributes(0x7)),
        _ => (guid::EFI_GLOBAL_VARIABLE, nv_bs),
    }
}
