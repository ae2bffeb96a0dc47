//! On-disk structures of the edk2 NV variable store, as `zerocopy` layouts over the image bytes.
//! Field names follow the edk2 headers; spec sections refer to `docs/varstore-format.md`.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `EFI_FIRMWARE_VOLUME_HEADER` without its block map (spec §2): 0x38 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FvHeader {
    /// ZeroVector: zeroes (reserved for a boot vector).
    pub zero_vector: [u8; 16],
    /// FileSystemGuid: what the volume holds (the NV data one for a varstore).
    pub file_system_guid: [u8; 16],
    /// FvLength: the volume's length in bytes, headers included.
    pub fv_length: U64,
    /// Signature: `_FVH`.
    pub signature: [u8; 4],
    /// Attributes: `EFI_FVB_ATTRIBUTES_2` bits.
    pub attributes: U32,
    /// HeaderLength: this header and its block map, in bytes.
    pub header_length: U16,
    /// Checksum: makes the header's 16-bit word sum zero.
    pub checksum: U16,
    /// ExtHeaderOffset: 0 when there is no extended header.
    pub ext_header_offset: U16,
    /// Reserved: zero.
    pub reserved: u8,
    /// Revision: 2.
    pub revision: u8,
}

/// `EFI_FV_BLOCK_MAP_ENTRY` (spec §3).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BlockMapEntry {
    /// NumBlocks: blocks of this length (0 with `length` 0 ends the map).
    pub num_blocks: U32,
    /// Length: one block's size in bytes.
    pub length: U32,
}

/// `VARIABLE_STORE_HEADER` (spec §4): 28 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct StoreHeader {
    /// Signature: the GUID of the authenticated or the plain variable format.
    pub signature: [u8; 16],
    /// Size: the store's size in bytes, this header included.
    pub size: U32,
    /// Format: `VARIABLE_STORE_FORMATTED`.
    pub format: u8,
    /// State: `VARIABLE_STORE_HEALTHY`.
    pub state: u8,
    /// Reserved.
    pub reserved: U16,
    /// Reserved1.
    pub reserved1: U32,
}

/// `AUTHENTICATED_VARIABLE_HEADER` (spec §5.1): 60 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct AuthVariableHeader {
    /// StartId: `VARIABLE_DATA` (0x55AA).
    pub start_id: U16,
    /// State: the record's life-cycle bits (added, deleted, …).
    pub state: u8,
    /// Reserved.
    pub reserved: u8,
    /// Attributes: `EFI_VARIABLE_*` bits.
    pub attributes: U32,
    /// MonotonicCount: for count-based authenticated variables.
    pub monotonic_count: U64,
    /// TimeStamp: an `EFI_TIME`, for time-based authenticated variables.
    pub timestamp: [u8; 16],
    /// PubKeyIndex: for count-based authenticated variables.
    pub pub_key_index: U32,
    /// NameSize: bytes of the UCS-2 name, its NUL included.
    pub name_size: U32,
    /// DataSize: bytes of data.
    pub data_size: U32,
    /// VendorGuid: the variable's namespace.
    pub vendor_guid: [u8; 16],
}

/// `VARIABLE_HEADER` of the plain format (spec §5.2): 32 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct PlainVariableHeader {
    /// StartId: `VARIABLE_DATA` (0x55AA).
    pub start_id: U16,
    /// State: the record's life-cycle bits (added, deleted, …).
    pub state: u8,
    /// Reserved.
    pub reserved: u8,
    /// Attributes: `EFI_VARIABLE_*` bits.
    pub attributes: U32,
    /// NameSize: bytes of the UCS-2 name, its NUL included.
    pub name_size: U32,
    /// DataSize: bytes of data.
    pub data_size: U32,
    /// VendorGuid: the variable's namespace.
    pub vendor_guid: [u8; 16],
}

/// `EFI_FAULT_TOLERANT_WORKING_BLOCK_HEADER` (spec §9.1): 32 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FtwWorkingBlockHeader {
    /// Signature: the working block's GUID.
    pub signature: [u8; 16],
    /// Crc: see [`ftw_header_crc`].
    pub crc: U32,
    /// WorkingBlockValid / WorkingBlockInvalid bits (negative logic).
    pub state: u8,
    /// Reserved bits.
    pub reserved: [u8; 3],
    /// WriteQueueSize: bytes of write records after this header.
    pub write_queue_size: U64,
}

/// `EFI_FVH_SIGNATURE`: [`FvHeader::signature`].
pub const FV_SIGNATURE: [u8; 4] = *b"_FVH";
/// `EFI_FVH_REVISION`: [`FvHeader::revision`].
pub const FV_REVISION: u8 = 2;
/// Bytes of [`FvHeader`] (the block map follows).
pub const FV_HEADER_FIXED_LEN: usize = 0x38;
/// Bytes of [`StoreHeader`].
pub const STORE_HEADER_LEN: usize = 28;
/// Bytes of [`AuthVariableHeader`].
pub const AUTH_HEADER_LEN: usize = 60;
/// Bytes of [`PlainVariableHeader`].
pub const PLAIN_HEADER_LEN: usize = 32;
/// Bytes of [`FtwWorkingBlockHeader`].
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
    /// SignatureType: the GUID of the entries' kind (X.509, SHA-256, …).
    pub signature_type: [u8; 16],
    /// SignatureListSize: the whole list in bytes.
    pub list_size: U32,
    /// SignatureHeaderSize: bytes between this header and the entries.
    pub header_size: U32,
    /// SignatureSize: bytes of each entry, its owner GUID included.
    pub entry_size: U32,
}

/// `EFI_LOAD_OPTION` fixed part (spec §13): 6 bytes, then the NUL-terminated UCS-2
/// description, `file_path_list_length` bytes of device paths and the optional data.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct LoadOptionHeader {
    /// Attributes: `LOAD_OPTION_*` bits (active, hidden, …).
    pub attributes: U32,
    /// FilePathListLength: bytes of device paths after the description.
    pub file_path_list_length: U16,
}

/// `EFI_DEVICE_PATH_PROTOCOL`, the header of every device path node (spec §13): the node's
/// `length` includes these 4 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DevicePathHeader {
    /// Type: hardware, ACPI, messaging, media, BIOS or end.
    pub kind: u8,
    /// SubType: the node's kind within its type.
    pub sub_type: u8,
    /// Length: the node's bytes, this header included.
    pub length: U16,
}

/// `EFI_FAULT_TOLERANT_WRITE_HEADER` (spec §9.2): 40 bytes, followed by `number_of_writes`
/// records of 40 + `private_data_size` bytes. The flags are negative logic bits
/// (HeaderAllocated 0x01, WritesAllocated 0x02, Complete 0x04).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FtwWriteHeader {
    /// HeaderAllocated, WritesAllocated and Complete bits (negative logic).
    pub flags: u8,
    /// Reserved.
    pub reserved: [u8; 3],
    /// CallerId: the GUID of the driver that asked for the write.
    pub caller_id: [u8; 16],
    /// Reserved.
    pub reserved2: [u8; 4],
    /// NumberOfWrites: records that follow.
    pub number_of_writes: U64,
    /// PrivateDataSize: bytes of private data after each record.
    pub private_data_size: U64,
}

/// `EFI_FAULT_TOLERANT_WRITE_RECORD` without its private data (spec §9.2): 40 bytes. Flags
/// are negative logic bits (BootBlockUpdate 0x01, SpareComplete 0x02, DestinationComplete
/// 0x04).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FtwWriteRecord {
    /// BootBlockUpdate, SpareComplete and DestinationComplete bits (negative logic).
    pub flags: u8,
    /// Reserved.
    pub reserved: [u8; 7],
    /// Lba: the destination block.
    pub lba: U64,
    /// Offset: where in the block the write starts.
    pub offset: U64,
    /// Length: bytes written.
    pub length: U64,
    /// RelativeOffset: where the destination lies, relative to its firmware volume.
    pub relative_offset: U64,
}
