//! Variable records as they lie in the store (spec §5, §7).

use crate::Guid;
use std::fmt;

/// The state byte of a record (spec §7). Transitions only clear bits, so every value below is
/// reachable on NOR flash without an erase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    /// 0xFF: the header is being written (or was, when power failed).
    Erased,
    /// 0x7F: header valid, name and data not yet (firmware before 2024 writes in four steps).
    HeaderValidOnly,
    /// 0x3F: complete and live.
    Added,
    /// 0x3E: an old copy while its replacement is written; live if it has no 0x3F twin.
    InDeletedTransition,
    /// 0x3D: deleted directly.
    Deleted,
    /// 0x3C: replaced by a newer copy.
    Replaced,
    /// Any other byte: not a state the firmware writes.
    Unknown(u8),
}

impl RecordState {
    /// Classifies a state byte.
    pub fn from_byte(byte: u8) -> Self {
        match byte {
            0xFF => Self::Erased,
            0x7F => Self::HeaderValidOnly,
            0x3F => Self::Added,
            0x3E => Self::InDeletedTransition,
            0x3D => Self::Deleted,
            0x3C => Self::Replaced,
            other => Self::Unknown(other),
        }
    }

    /// A short word for listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Erased => "erased",
            Self::HeaderValidOnly => "header-only",
            Self::Added => "added",
            Self::InDeletedTransition => "in-transition",
            Self::Deleted => "deleted",
            Self::Replaced => "replaced",
            Self::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for RecordState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// UEFI variable attribute bits (spec §5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attributes(pub u32);

impl Attributes {
    /// EFI_VARIABLE_NON_VOLATILE.
    pub const NON_VOLATILE: u32 = 0x01;
    /// EFI_VARIABLE_BOOTSERVICE_ACCESS.
    pub const BOOTSERVICE_ACCESS: u32 = 0x02;
    /// EFI_VARIABLE_RUNTIME_ACCESS.
    pub const RUNTIME_ACCESS: u32 = 0x04;
    /// EFI_VARIABLE_HARDWARE_ERROR_RECORD.
    pub const HARDWARE_ERROR_RECORD: u32 = 0x08;
    /// EFI_VARIABLE_AUTHENTICATED_WRITE_ACCESS (deprecated).
    pub const AUTHENTICATED_WRITE_ACCESS: u32 = 0x10;
    /// EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS.
    pub const TIME_BASED_AUTHENTICATED_WRITE_ACCESS: u32 = 0x20;
    /// EFI_VARIABLE_APPEND_WRITE (an operation flag; never stored).
    pub const APPEND_WRITE: u32 = 0x40;

    const FLAGS: [(u32, &'static str); 7] = [
        (Self::NON_VOLATILE, "nv"),
        (Self::BOOTSERVICE_ACCESS, "bs"),
        (Self::RUNTIME_ACCESS, "rt"),
        (Self::HARDWARE_ERROR_RECORD, "hr"),
        (Self::AUTHENTICATED_WRITE_ACCESS, "aw"),
        (Self::TIME_BASED_AUTHENTICATED_WRITE_ACCESS, "at"),
        (Self::APPEND_WRITE, "append"),
    ];

    /// Whether the variable is time-based authenticated (has a stored timestamp).
    pub fn is_time_based_authenticated(self) -> bool {
        self.0 & Self::TIME_BASED_AUTHENTICATED_WRITE_ACCESS != 0
    }

    /// The flag words, e.g. `["nv", "bs", "rt"]`, with any unknown bits as hex.
    ///
    /// ```
    /// assert_eq!(varstore::Attributes(0x27).flags(), vec!["nv", "bs", "rt", "at"]);
    /// ```
    pub fn flags(self) -> Vec<String> {
        let mut out: Vec<String> = Self::FLAGS
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, name)| (*name).to_string())
            .collect();
        let known = Self::FLAGS.iter().fold(0, |acc, (bit, _)| acc | bit);
        if self.0 & !known != 0 {
            out.push(format!("0x{:x}", self.0 & !known));
        }
        out
    }
}

impl fmt::Display for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.flags().join(","))
    }
}

/// `EFI_TIME` (spec §5.5), kept as raw bytes so it round-trips exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EfiTime(pub [u8; 16]);

impl EfiTime {
    /// Year field; 0 means "no timestamp".
    pub fn year(&self) -> u16 {
        u16::from_le_bytes([self.0[0], self.0[1]])
    }

    /// Whether the timestamp is set (non-zero year), which is when virt-firmware exports it.
    pub fn is_set(&self) -> bool {
        self.year() != 0
    }
}

impl fmt::Display for EfiTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.0;
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year(),
            t[2],
            t[3],
            t[4],
            t[5],
            t[6]
        )
    }
}

/// One record of the store, borrowing its name and data from the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableRecord<'a> {
    /// File offset of the record header.
    pub offset: u64,
    /// Raw state byte.
    pub state_byte: u8,
    /// Attribute bits.
    pub attributes: Attributes,
    /// Vendor GUID.
    pub guid: Guid,
    /// The name as stored: UCS-2LE, normally with its terminating NUL.
    pub name_raw: &'a [u8],
    /// The data as stored (no padding).
    pub data: &'a [u8],
    /// File offset of the data.
    pub data_offset: u64,
    /// MonotonicCount (authenticated format only; 0 in practice).
    pub monotonic_count: u64,
    /// TimeStamp (authenticated format only).
    pub timestamp: Option<EfiTime>,
    /// PubKeyIndex (authenticated format only; 0 in practice).
    pub pub_key_index: u32,
    /// Bytes the record occupies including its header and padding.
    pub total_len: u64,
    /// The header's sizes were ignored (State 0xFF or an all-ones field): the firmware walks
    /// over the header alone (spec §6.2).
    pub header_only: bool,
}

impl VariableRecord<'_> {
    /// The state, classified.
    pub fn state(&self) -> RecordState {
        RecordState::from_byte(self.state_byte)
    }

    /// The name as text.
    pub fn name(&self) -> String {
        ucs2_to_string(self.name_raw)
    }

    /// The timestamp if it is set (only time-based authenticated variables carry one).
    pub fn time(&self) -> Option<EfiTime> {
        self.timestamp.filter(EfiTime::is_set)
    }
}

/// Decodes UCS-2LE code units up to the first NUL (or the end), replacing unpaired surrogates.
pub(crate) fn ucs2_to_string(bytes: &[u8]) -> String {
    let units = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0);
    char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}
