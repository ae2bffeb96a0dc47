//! On-disk structures of the edk2 NV variable store, as `zerocopy` layouts over the image bytes.
//! Field names follow the edk2 headers; spec sections refer to `docs/varstore-format.md`.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `EFI_FIRMWARE_VOLUME_HEADER` without its block map (spec §2): 0x38 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FvHeader {
    pub zero_vector: [u8; 16],
    pub file_system_guid: [u8; 16],
    pub fv_length: U64,
    pub signature: [u8; 4],
    pub attributes: U32,
    pub header_length: U16,
    pub checksum: U16,
    pub ext_header_offset: U16,
    pub reserved: u8,
    pub revision: u8,
}

/// `EFI_FV_BLOCK_MAP_ENTRY` (spec §3).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BlockMapEntry {
    pub num_blocks: U32,
    pub length: U32,
}

/// `VARIABLE_STORE_HEADER` (spec §4): 28 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct StoreHeader {
    pub signature: [u8; 16],
    pub size: U32,
    pub format: u8,
    pub state: u8,
    pub reserved: U16,
    pub reserved1: U32,
}

/// `AUTHENTICATED_VARIABLE_HEADER` (spec §5.1): 60 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct AuthVariableHeader {
    pub start_id: U16,
    pub state: u8,
    pub reserved: u8,
    pub attributes: U32,
    pub monotonic_count: U64,
    pub timestamp: [u8; 16],
    pub pub_key_index: U32,
    pub name_size: U32,
    pub data_size: U32,
    pub vendor_guid: [u8; 16],
}

/// `VARIABLE_HEADER` of the plain format (spec §5.2): 32 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct PlainVariableHeader {
    pub start_id: U16,
    pub state: u8,
    pub reserved: u8,
    pub attributes: U32,
    pub name_size: U32,
    pub data_size: U32,
    pub vendor_guid: [u8; 16],
}

/// `EFI_FAULT_TOLERANT_WORKING_BLOCK_HEADER` (spec §9.1): 32 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FtwWorkingBlockHeader {
    pub signature: [u8; 16],
    pub crc: U32,
    pub state: u8,
    pub reserved: [u8; 3],
    pub write_queue_size: U64,
}

pub const FV_SIGNATURE: [u8; 4] = *b"_FVH";
pub const FV_REVISION: u8 = 2;
pub const FV_HEADER_FIXED_LEN: usize = 0x38;
pub const STORE_HEADER_LEN: usize = 28;
pub const AUTH_HEADER_LEN: usize = 60;
pub const PLAIN_HEADER_LEN: usize = 32;
pub const FTW_HEADER_LEN: usize = 32;
/// `VARIABLE_DATA`: the StartId of every record (spec §5).
pub const VARIABLE_START_ID: u16 = 0x55AA;
/// `VARIABLE_STORE_FORMATTED` (spec §4).
pub const STORE_FORMATTED: u8 = 0x5A;
/// `VARIABLE_STORE_HEALTHY` (spec §4).
pub const STORE_HEALTHY: u8 = 0xFE;
/// Working block state byte with WorkingBlockValid set and WorkingBlockInvalid clear (spec §9.1).
pub const FTW_STATE_VALID: u8 = 0xFE;
/// `HEADER_ALIGNMENT` (spec §6.1).
pub const HEADER_ALIGNMENT: usize = 4;

pub(crate) fn align_header(n: usize) -> Option<usize> {
    n.checked_add(HEADER_ALIGNMENT - 1)
        .map(|v| v & !(HEADER_ALIGNMENT - 1))
}

/// The 16-bit word sum the FV header checksum makes zero (spec §2).
pub fn fv_header_word_sum(header: &[u8]) -> u16 {
    header
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], *c.get(1).unwrap_or(&0)]))
        .fold(0u16, |a, w| a.wrapping_add(w))
}

/// CRC-32 of a working block header as the FTW driver computes it: over the 32 header bytes
/// with the Crc field, the state byte and Reserved3 all 0xFF (spec §9.1).
pub fn ftw_header_crc(header: &FtwWorkingBlockHeader) -> u32 {
    let mut copy = *header;
    copy.crc = U32::new(0xFFFF_FFFF);
    copy.state = 0xFF;
    copy.reserved = [0xFF; 3];
    crc32fast::hash(copy.as_bytes())
}

/// `EFI_SIGNATURE_LIST` header (spec §12.1): 28 bytes, then `header_size` bytes of
/// SignatureHeader, then entries of `entry_size` bytes (owner GUID + data).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SignatureListHeader {
    pub signature_type: [u8; 16],
    pub list_size: U32,
    pub header_size: U32,
    pub entry_size: U32,
}

/// `EFI_LOAD_OPTION` fixed part (spec §13): 6 bytes, then the NUL-terminated UCS-2
/// description, `file_path_list_length` bytes of device paths and the optional data.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct LoadOptionHeader {
    pub attributes: U32,
    pub file_path_list_length: U16,
}

/// `EFI_DEVICE_PATH_PROTOCOL`, the header of every device path node (spec §13): the node's
/// `length` includes these 4 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DevicePathHeader {
    pub kind: u8,
    pub sub_type: u8,
    pub length: U16,
}

/// `EFI_FAULT_TOLERANT_WRITE_HEADER` (spec §9.2): 40 bytes, followed by `number_of_writes`
/// records of 40 + `private_data_size` bytes. The flags are negative logic bits
/// (HeaderAllocated 0x01, WritesAllocated 0x02, Complete 0x04).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FtwWriteHeader {
    pub flags: u8,
    pub reserved: [u8; 3],
    pub caller_id: [u8; 16],
    pub reserved2: [u8; 4],
    pub number_of_writes: U64,
    pub private_data_size: U64,
}

/// `EFI_FAULT_TOLERANT_WRITE_RECORD` without its private data (spec §9.2): 40 bytes. Flags
/// are negative logic bits (BootBlockUpdate 0x01, SpareComplete 0x02, DestinationComplete
/// 0x04).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FtwWriteRecord {
    pub flags: u8,
    pub reserved: [u8; 7],
    pub lba: U64,
    pub offset: U64,
    pub length: U64,
    pub relative_offset: U64,
}
