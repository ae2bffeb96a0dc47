//! The image header (the fixed fields of versions 2 and 3) and its extensions.
//!
//! Fields are read one by one with bounds-checked big-endian reads instead of a struct overlay:
//! the header's length depends on the version and on `header_length`, and every field needs
//! its own range check anyway, so an overlay would save nothing.

use crate::{invalid, unsupported, Qcow2Error, MAGIC, MAX_VIRTUAL_SIZE};

/// Length of a version 2 header; version 3 headers are at least [`V3_HEADER_MIN`] bytes.
pub(crate) const V2_HEADER_LEN: usize = 72;
/// The fixed part of a version 3 header, up to and including `header_length`.
pub(crate) const V3_HEADER_MIN: usize = 104;

/// Incompatible feature bits.
pub(crate) const INCOMPAT_DIRTY: u64 = 1 << 0;
pub(crate) const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub(crate) const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub(crate) const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub(crate) const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

/// Header extension types.
pub(crate) const EXT_END: u32 = 0;
pub(crate) const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
pub(crate) const EXT_FEATURE_NAMES: u32 = 0x6803_f857;
pub(crate) const EXT_BITMAPS: u32 = 0x2385_2875;
pub(crate) const EXT_CRYPTO: u32 = 0x0537_be77;
pub(crate) const EXT_DATA_FILE: u32 = 0x4441_5441;

/// QEMU's limit on an L1 table (32 MiB); larger tables are refused before anything is read.
pub(crate) const MAX_L1_BYTES: u64 = 32 << 20;

/// Big-endian reads that return `None` past the end of `bytes`.
pub(crate) fn be_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

pub(crate) fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

pub(crate) fn be_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_be_bytes(a))
}

/// One header extension, kept as the byte range of its data in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Extension {
    pub kind: u32,
    pub data: core::ops::Range<usize>,
}

/// The validated header.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible: u64,
    pub refcount_order: u32,
    /// 72 for version 2; `header_length` for version 3.
    pub header_length: usize,
    /// 0 (deflate) unless the compression-type bit is set.
    pub compression_type: u8,
    pub extensions: Vec<Extension>,
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Entries in one L2 table (standard, 8-byte entries).
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / 8
    }

    /// Bytes of guest address space one L1 entry covers.
    pub fn l1_span(&self) -> u64 {
        self.cluster_size() * self.l2_entries()
    }

    /// L1 entries needed to map `size` guest bytes.
    pub fn l1_entries_for(&self, size: u64) -> u64 {
        size.div_ceil(self.l1_span())
    }
}

/// Reads a field that the length check at the top of [`parse`] guarantees is present.
fn field_u32(file: &[u8], at: usize) -> u32 {
    be_u32(file, at).unwrap_or(0)
}

fn field_u64(file: &[u8], at: usize) -> u64 {
    be_u64(file, at).unwrap_or(0)
}

/// Checks that `[offset, offset + len)` is cluster aligned and inside the file.
pub(crate) fn check_table(
    file_len: u64,
    cluster_size: u64,
    at: u64,
    field: &'static str,
    offset: u64,
    len: u64,
) -> Result<(), Qcow2Error> {
    if offset % cluster_size != 0 {
        return Err(invalid(
            at,
            field,
            format!("{offset:#x} is not aligned to the {cluster_size}-byte cluster size"),
        ));
    }
    match offset.checked_add(len) {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(invalid(
            at,
            field,
            format!(
                "the table at {offset:#x} ({len} bytes) ends beyond the end of the \
                 {file_len}-byte file"
            ),
        )),
    }
}

/// Parses and validates the header and its extensions.
pub(crate) fn parse(file: &[u8]) -> Result<Header, Qcow2Error> {
    let file_len = file.len() as u64;
    if !file.starts_with(&MAGIC) {
        return Err(invalid(
            0,
            "magic",
            "not QFI\\xfb: this is not a qcow2 image",
        ));
    }
    if file.len() < V2_HEADER_LEN {
        return Err(invalid(
            0,
            "header",
            format!("the file is {file_len} bytes, shorter than the 72-byte header"),
        ));
    }
    let version = field_u32(file, 4);
    if version != 2 && version != 3 {
        return Err(unsupported(format!(
            "qcow2 version {version} (only 2 and 3 exist)"
        )));
    }
    let cluster_bits = field_u32(file, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(invalid(
            20,
            "cluster_bits",
            format!("{cluster_bits} is outside 9..=21 (512 bytes to 2 MiB clusters)"),
        ));
    }
    let cluster_size = 1u64 << cluster_bits;

    let (incompatible, refcount_order, header_length) = if version == 3 {
        if file.len() < V3_HEADER_MIN {
            return Err(invalid(
                0,
                "header",
                format!("the file is {file_len} bytes, shorter than the 104-byte version 3 header"),
            ));
        }
        let header_length = field_u32(file, 100);
        if (header_length as usize) < V3_HEADER_MIN
            || header_length % 8 != 0
            || u64::from(header_length) > cluster_size
            || header_length as usize > file.len()
        {
            return Err(invalid(
                100,
                "header_length",
                format!(
                    "{header_length} must be a multiple of 8 from 104 to the cluster size \
                     and inside the file"
                ),
            ));
        }
        (
            field_u64(file, 72),
            field_u32(file, 96),
            header_length as usize,
        )
    } else {
        (0, 4, V2_HEADER_LEN)
    };

    // Refusals come first, in the order a user would fix them.
    if incompatible & INCOMPAT_CORRUPT != 0 {
        return Err(unsupported(
            "an image marked corrupt (incompatible feature bit 1; `qemu-img check -r all` repairs it)",
        ));
    }
    let extensions = parse_extensions(file, header_length, cluster_size)?;
    if incompatible & INCOMPAT_DATA_FILE != 0 || extensions.iter().any(|e| e.kind == EXT_DATA_FILE)
    {
        let name = extensions
            .iter()
            .find(|e| e.kind == EXT_DATA_FILE)
            .map(|e| String::from_utf8_lossy(&file[e.data.clone()]).into_owned())
            .unwrap_or_default();
        return Err(unsupported(format!("an external data file ({name})")));
    }
    let backing_file_offset = field_u64(file, 8);
    if backing_file_offset != 0 {
        let size = u64::from(field_u32(file, 16)).min(1023);
        let name = backing_file_offset
            .checked_add(size)
            .filter(|&end| end <= file_len)
            .map(|end| {
                String::from_utf8_lossy(&file[backing_file_offset as usize..end as usize])
                    .into_owned()
            })
            .unwrap_or_default();
        return Err(unsupported(format!("a backing file ({name})")));
    }
    match field_u32(file, 32) {
        0 => {}
        1 => return Err(unsupported("encryption (AES)")),
        2 => return Err(unsupported("encryption (LUKS)")),
        other => {
            return Err(invalid(
                32,
                "crypt_method",
                format!("unknown method {other}"),
            ));
        }
    }
    if incompatible & INCOMPAT_EXTL2 != 0 {
        return Err(unsupported(
            "extended L2 entries (subclusters, incompatible feature bit 4)",
        ));
    }
    let unknown = incompatible & !INCOMPAT_KNOWN;
    if unknown != 0 {
        return Err(unsupported(format!(
            "unknown incompatible features (bits {unknown:#x}{})",
            feature_names(file, &extensions, unknown)
        )));
    }
    let compression_type = if header_length > V3_HEADER_MIN {
        file[V3_HEADER_MIN]
    } else {
        0
    };
    if incompatible & INCOMPAT_COMPRESSION != 0 && compression_type == 0 {
        return Err(invalid(
            104,
            "compression_type",
            "the compression-type bit is set but the type is 0 (zlib)",
        ));
    }
    if incompatible & INCOMPAT_COMPRESSION == 0 && compression_type != 0 {
        return Err(invalid(
            104,
            "compression_type",
            format!("{compression_type} without the compression-type bit"),
        ));
    }
    if compression_type > 1 {
        return Err(unsupported(format!("compression type {compression_type}")));
    }
    if refcount_order > 6 {
        return Err(invalid(
            96,
            "refcount_order",
            format!("{refcount_order} is more than 6"),
        ));
    }

    let size = field_u64(file, 24);
    if size > MAX_VIRTUAL_SIZE {
        return Err(unsupported(format!(
            "a virtual size of {size} bytes (a variable store is at most {MAX_VIRTUAL_SIZE})"
        )));
    }
    let header = Header {
        version,
        cluster_bits,
        size,
        l1_size: field_u32(file, 36),
        l1_table_offset: field_u64(file, 40),
        nb_snapshots: field_u32(file, 60),
        snapshots_offset: field_u64(file, 64),
        incompatible,
        refcount_order,
        header_length,
        compression_type,
        extensions,
    };
    let needed = header.l1_entries_for(size);
    let l1_bytes = u64::from(header.l1_size) * 8;
    if u64::from(header.l1_size) < needed || l1_bytes > MAX_L1_BYTES {
        return Err(invalid(
            36,
            "l1_size",
            format!(
                "{} entries, but the {size}-byte disk needs {needed} and at most {} are allowed",
                header.l1_size,
                MAX_L1_BYTES / 8
            ),
        ));
    }
    if header.l1_size > 0 {
        check_table(
            file_len,
            cluster_size,
            40,
            "l1_table_offset",
            header.l1_table_offset,
            l1_bytes,
        )?;
    }
    // The refcount table is rebuilt, never read; its location is still checked so that an
    // image QEMU would refuse is not silently accepted.
    let refcount_table_offset = field_u64(file, 48);
    let refcount_table_clusters = u64::from(field_u32(file, 56));
    if refcount_table_clusters == 0 {
        return Err(invalid(
            56,
            "refcount_table_clusters",
            "0: the image has no refcount table",
        ));
    }
    check_table(
        file_len,
        cluster_size,
        48,
        "refcount_table_offset",
        refcount_table_offset,
        refcount_table_clusters * cluster_size,
    )?;
    Ok(header)
}

/// Walks the header extensions, which must all lie inside the first cluster.
fn parse_extensions(
    file: &[u8],
    start: usize,
    cluster_size: u64,
) -> Result<Vec<Extension>, Qcow2Error> {
    // QEMU reads the first cluster as a whole, zero-filled past the end of the file, so a
    // file that ends inside the extension area reads as if the end marker followed.
    let end = (cluster_size as usize).min(file.len());
    let mut at = start;
    let mut out: Vec<Extension> = Vec::new();
    while at + 8 <= end {
        let kind = be_u32(file, at).unwrap_or(0);
        let len = be_u32(file, at + 4).unwrap_or(0) as usize;
        if kind == EXT_END {
            break;
        }
        let data_start = at + 8;
        let padded = len.div_ceil(8) * 8;
        if data_start + padded > cluster_size as usize || data_start + len > file.len() {
            return Err(invalid(
                at as u64 + 4,
                "header extension length",
                format!("the {len}-byte extension {kind:#010x} does not fit in the first cluster"),
            ));
        }
        if out.iter().any(|e| e.kind == kind) {
            return Err(invalid(
                at as u64,
                "header extension type",
                format!("extension {kind:#010x} appears twice"),
            ));
        }
        out.push(Extension {
            kind,
            data: data_start..data_start + len,
        });
        at = data_start + padded;
    }
    Ok(out)
}

/// The names the feature-name table gives to the incompatible bits in `bits`, if any.
fn feature_names(file: &[u8], extensions: &[Extension], bits: u64) -> String {
    let Some(table) = extensions.iter().find(|e| e.kind == EXT_FEATURE_NAMES) else {
        return String::new();
    };
    let names: Vec<String> = file[table.data.clone()]
        .chunks_exact(48)
        .filter(|e| e[0] == 0 && e[1] < 64 && bits & (1 << e[1]) != 0)
        .map(|e| {
            let name = &e[2..];
            let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            String::from_utf8_lossy(&name[..len]).into_owned()
        })
        .collect();
    if names.is_empty() {
        String::new()
    } else {
        format!(": {}", names.join(", "))
    }
}
