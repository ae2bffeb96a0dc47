//! The internal snapshot table.

use crate::header::{be_u16, be_u32, be_u64, check_table, Header, MAX_L1_BYTES};
use crate::{invalid, Qcow2Error};

/// QEMU's limits: 65536 snapshots, a 64 MiB table, 1 KiB of extra data per entry.
pub(crate) const MAX_SNAPSHOTS: u32 = 65536;
const MAX_TABLE_BYTES: usize = 64 << 20;
const MAX_EXTRA_DATA: usize = 1024;
/// The fixed part of an entry, before the extra data, id and name.
const ENTRY_FIXED: usize = 40;

/// What the snapshot table says about one internal snapshot.
///
/// ```
/// # fn main() -> Result<(), qcow2::Qcow2Error> {
/// let file = qcow2::create(&[0u8; 4096], qcow2::CreateOptions::default());
/// let image = qcow2::Image::parse(&file)?;
/// for s in image.snapshots() {
///     println!("{} {} ({} bytes)", s.id, s.name, s.virtual_size);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The unique id string (`qemu-img snapshot -l`'s "ID" column, usually a number).
    pub id: String,
    /// The name (the "TAG" column).
    pub name: String,
    /// The guest-visible size of the disk when the snapshot was taken.
    pub virtual_size: u64,
    /// Bytes of saved VM state (0 for a disk-only snapshot such as `qemu-img snapshot -c`).
    pub vm_state_size: u64,
    /// When the snapshot was taken: seconds since the Epoch.
    pub date_sec: u32,
    /// When the snapshot was taken: the nanoseconds part.
    pub date_nsec: u32,
    /// How long the guest had run, in nanoseconds.
    pub vm_clock_nsec: u64,
}

/// One parsed entry: the public information plus where its bytes and L1 table are.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub info: SnapshotInfo,
    /// The entry without its padding, kept verbatim on rewrite except the L1 offset.
    pub bytes: core::ops::Range<usize>,
    pub l1_offset: u64,
    pub l1_size: u32,
}

/// Parses `nb_snapshots` entries at `snapshots_offset`.
pub(crate) fn parse(file: &[u8], header: &Header) -> Result<Vec<Entry>, Qcow2Error> {
    let count = header.nb_snapshots;
    if count == 0 {
        return Ok(Vec::new());
    }
    if count > MAX_SNAPSHOTS {
        return Err(invalid(
            60,
            "nb_snapshots",
            format!("{count} is more than the {MAX_SNAPSHOTS} snapshots QEMU allows"),
        ));
    }
    let file_len = file.len() as u64;
    let cluster_size = header.cluster_size();
    // Only alignment here: the table's length is known once its entries are read.
    check_table(
        file_len,
        cluster_size,
        64,
        "snapshots_offset",
        header.snapshots_offset,
        0,
    )?;
    let mut at = header.snapshots_offset as usize;
    let table_start = at;
    let mut entries: Vec<Entry> = Vec::new();
    let mut l1_total: u64 = 0;
    for n in 0..count {
        let short = || {
            invalid(
                at as u64,
                "snapshot table entry",
                format!("entry {n} runs past the end of the file"),
            )
        };
        let fixed = file
            .get(at..at.checked_add(ENTRY_FIXED).ok_or_else(short)?)
            .ok_or_else(short)?;
        let l1_offset = be_u64(fixed, 0).unwrap_or(0);
        let l1_size = be_u32(fixed, 8).unwrap_or(0);
        let id_len = usize::from(be_u16(fixed, 12).unwrap_or(0));
        let name_len = usize::from(be_u16(fixed, 14).unwrap_or(0));
        let extra_len = be_u32(fixed, 36).unwrap_or(0) as usize;
        if extra_len > MAX_EXTRA_DATA {
            return Err(invalid(
                at as u64 + 36,
                "snapshot extra_data_size",
                format!("{extra_len} bytes in entry {n}, more than {MAX_EXTRA_DATA}"),
            ));
        }
        let extra = at + ENTRY_FIXED;
        let id_at = extra + extra_len;
        let name_at = id_at + id_len;
        // QEMU writes the table last and leaves the final entry's padding out of the file.
        let end = (name_at + name_len).div_ceil(8) * 8;
        if name_at + name_len > file.len() {
            return Err(short());
        }
        if end - table_start > MAX_TABLE_BYTES {
            return Err(invalid(
                at as u64,
                "snapshot table",
                format!("more than {MAX_TABLE_BYTES} bytes"),
            ));
        }
        let l1_bytes = u64::from(l1_size) * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(invalid(
                at as u64 + 8,
                "snapshot l1_size",
                format!("{l1_size} entries in entry {n}, more than QEMU allows"),
            ));
        }
        check_table(
            file_len,
            cluster_size,
            at as u64,
            "snapshot l1_table_offset",
            l1_offset,
            l1_bytes,
        )?;
        // Distinct L1 tables occupy distinct clusters of the file; more L1 bytes than the
        // file holds means tables alias each other, which would multiply the work of a
        // rewrite without bound.
        l1_total += l1_bytes;
        if l1_total > file_len {
            return Err(invalid(
                at as u64,
                "snapshot l1_table_offset",
                "the snapshots' L1 tables overlap (their sizes add up to more than the file)",
            ));
        }
        let vm_state_size = if extra_len >= 8 {
            be_u64(file, extra).unwrap_or(0)
        } else {
            u64::from(be_u32(fixed, 32).unwrap_or(0))
        };
        let virtual_size = if extra_len >= 16 {
            be_u64(file, extra + 8).unwrap_or(0)
        } else {
            header.size
        };
        let text = |r: core::ops::Range<usize>| String::from_utf8_lossy(&file[r]).into_owned();
        entries.push(Entry {
            info: SnapshotInfo {
                id: text(id_at..name_at),
                name: text(name_at..name_at + name_len),
                virtual_size,
                vm_state_size,
                date_sec: be_u32(fixed, 16).unwrap_or(0),
                date_nsec: be_u32(fixed, 20).unwrap_or(0),
                vm_clock_nsec: be_u64(fixed, 24).unwrap_or(0),
            },
            bytes: at..name_at + name_len,
            l1_offset,
            l1_size,
        });
        at = end;
    }
    Ok(entries)
}
