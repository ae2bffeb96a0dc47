//! Guest-to-host cluster mapping: L1 and L2 entries, and reading guest clusters.

use std::collections::HashSet;

use crate::header::{be_u64, Header};
use crate::{invalid, unsupported, Qcow2Error};

/// Bit 63 of L1 and L2 entries: the refcount is exactly one.
pub(crate) const COPIED: u64 = 1 << 63;
/// Bit 62 of an L2 entry: a compressed cluster.
const COMPRESSED: u64 = 1 << 62;
/// Bits 9-55: a cluster-aligned host offset.
pub(crate) const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Reserved bits of an L1 entry (1-8 hold nothing either, 56-62 are reserved).
const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;
/// Reserved bits of a standard L2 entry (bit 0 is the zero flag).
const L2_RESERVED: u64 = 0x3f00_0000_0000_01fe;

/// What one guest cluster reads as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cluster {
    /// Unallocated or zero-flagged: reads as zeros (no backing file is ever accepted).
    Zero,
    /// A standard cluster at this host offset; its tail may lie past the end of the file,
    /// which reads as zeros, as QEMU reads it.
    Data(u64),
    /// Deflate (or zstd) data starting at `offset`, `len` bytes at most.
    Compressed { offset: u64, len: u64 },
}

/// Decodes an L1 entry at file offset `at`: the L2 table's offset, or 0.
pub(crate) fn l1_entry(file: &[u8], header: &Header, at: u64) -> Result<u64, Qcow2Error> {
    let entry = be_u64(file, at as usize).unwrap_or(0);
    if entry & L1_RESERVED != 0 {
        return Err(invalid(
            at,
            "L1 entry",
            format!("{entry:#018x} has reserved bits set"),
        ));
    }
    let offset = entry & OFFSET_MASK;
    if offset == 0 {
        return Ok(0);
    }
    let cs = header.cluster_size();
    if offset % cs != 0 {
        return Err(invalid(
            at,
            "L1 entry",
            format!("L2 table offset {offset:#x} is not cluster aligned"),
        ));
    }
    if offset
        .checked_add(cs)
        .is_none_or(|end| end > file.len() as u64)
    {
        return Err(invalid(
            at,
            "L1 entry",
            format!("L2 table at {offset:#x} lies beyond the end of the file"),
        ));
    }
    Ok(offset)
}

/// Decodes the L2 entry at file offset `at`.
pub(crate) fn l2_entry(file: &[u8], header: &Header, at: u64) -> Result<Cluster, Qcow2Error> {
    let entry = be_u64(file, at as usize).unwrap_or(0);
    let file_len = file.len() as u64;
    if entry & COMPRESSED != 0 {
        // The offset takes the low 62 - (cluster_bits - 8) bits, the count of additional
        // 512-byte sectors the rest up to bit 61.
        let x = 62 - (header.cluster_bits - 8);
        let offset = entry & ((1u64 << x) - 1);
        let sectors = ((entry & !COPIED & !COMPRESSED) >> x) + 1;
        let len = sectors * 512 - (offset & 511);
        if offset >= file_len {
            return Err(invalid(
                at,
                "L2 entry",
                format!("compressed data at {offset:#x} lies beyond the end of the file"),
            ));
        }
        if entry & COPIED != 0 {
            return Err(invalid(
                at,
                "L2 entry",
                "a compressed cluster has the COPIED bit set",
            ));
        }
        return Ok(Cluster::Compressed {
            offset,
            len: len.min(file_len - offset),
        });
    }
    if entry & L2_RESERVED != 0 {
        return Err(invalid(
            at,
            "L2 entry",
            format!("{entry:#018x} has reserved bits set"),
        ));
    }
    if entry & 1 != 0 {
        if header.version == 2 {
            return Err(invalid(
                at,
                "L2 entry",
                "the zero flag is set in a version 2 image",
            ));
        }
        return Ok(Cluster::Zero);
    }
    let offset = entry & OFFSET_MASK;
    if offset == 0 {
        return Ok(Cluster::Zero);
    }
    if offset % header.cluster_size() != 0 {
        return Err(invalid(
            at,
            "L2 entry",
            format!("data cluster offset {offset:#x} is not cluster aligned"),
        ));
    }
    if offset >= file_len {
        return Err(invalid(
            at,
            "L2 entry",
            format!("data cluster at {offset:#x} lies beyond the end of the file"),
        ));
    }
    Ok(Cluster::Data(offset))
}

/// Fills `out` (at most one cluster) with the guest cluster's bytes.
pub(crate) fn read_cluster(
    file: &[u8],
    header: &Header,
    cluster: Cluster,
    out: &mut [u8],
) -> Result<(), Qcow2Error> {
    match cluster {
        Cluster::Zero => out.fill(0),
        Cluster::Data(offset) => {
            let start = offset as usize;
            let avail = file.len().saturating_sub(start).min(out.len());
            out[..avail].copy_from_slice(&file[start..start + avail]);
            out[avail..].fill(0);
        }
        Cluster::Compressed { offset, len } => {
            let data = &file[offset as usize..(offset + len) as usize];
            let mut cluster = vec![0u8; header.cluster_size() as usize];
            inflate(header, offset, data, &mut cluster)?;
            let n = out.len();
            out.copy_from_slice(&cluster[..n]);
        }
    }
    Ok(())
}

/// Decompresses one cluster; like QEMU, the data must produce a whole cluster.
fn inflate(header: &Header, offset: u64, data: &[u8], out: &mut [u8]) -> Result<(), Qcow2Error> {
    use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
    if header.compression_type != 0 {
        return Err(unsupported("zstd-compressed clusters"));
    }
    let mut state = DecompressorOxide::new();
    // Raw deflate (no zlib header), all input at once, the output buffer is the whole cluster.
    let (_, _, written) = decompress(
        &mut state,
        data,
        out,
        0,
        inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
    );
    if written != out.len() {
        return Err(invalid(
            offset,
            "compressed cluster",
            format!("the deflate data yields {written} bytes, not a whole cluster"),
        ));
    }
    Ok(())
}

/// Calls `f(guest_cluster_index, cluster)` for every allocated-or-zero entry of the L1 table
/// at `l1_offset` with `l1_size` entries, stopping at guest cluster `limit`.
pub(crate) fn for_each_cluster(
    file: &[u8],
    header: &Header,
    l1_offset: u64,
    l1_size: u32,
    limit: u64,
    mut f: impl FnMut(u64, Cluster) -> Result<(), Qcow2Error>,
) -> Result<(), Qcow2Error> {
    let per_l2 = header.l2_entries();
    for i in 0..u64::from(l1_size) {
        if i * per_l2 >= limit {
            break;
        }
        let l2 = l1_entry(file, header, l1_offset + i * 8)?;
        if l2 == 0 {
            continue;
        }
        for j in 0..per_l2 {
            let guest = i * per_l2 + j;
            if guest >= limit {
                break;
            }
            f(guest, l2_entry(file, header, l2 + j * 8)?)?;
        }
    }
    Ok(())
}

/// Validates every entry of an L1 table and of each L2 table it reaches that was not seen
/// before (`seen` holds the L2 offsets already checked, so shared tables cost once).
pub(crate) fn validate(
    file: &[u8],
    header: &Header,
    l1_offset: u64,
    l1_size: u32,
    seen: &mut HashSet<u64>,
) -> Result<(), Qcow2Error> {
    for i in 0..u64::from(l1_size) {
        let l2 = l1_entry(file, header, l1_offset + i * 8)?;
        if l2 == 0 || !seen.insert(l2) {
            continue;
        }
        for j in 0..header.l2_entries() {
            l2_entry(file, header, l2 + j * 8)?;
        }
    }
    Ok(())
}

/// The guest content `size` bytes long that the L1 table maps.
pub(crate) fn read_content(
    file: &[u8],
    header: &Header,
    l1_offset: u64,
    l1_size: u32,
    size: u64,
) -> Result<Vec<u8>, Qcow2Error> {
    let cs = header.cluster_size();
    let mut out = vec![0u8; size as usize];
    for_each_cluster(
        file,
        header,
        l1_offset,
        l1_size,
        size.div_ceil(cs),
        |guest, cluster| {
            let start = (guest * cs) as usize;
            let end = (start + cs as usize).min(out.len());
            read_cluster(file, header, cluster, &mut out[start..end])
        },
    )?;
    Ok(out)
}
