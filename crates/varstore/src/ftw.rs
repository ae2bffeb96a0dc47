//! The fault-tolerant-write working block and its write queue (spec §9).

use crate::format::{FtwWriteHeader, FtwWriteRecord};
use crate::Guid;
use zerocopy::FromBytes;

/// `EFI_FAULT_TOLERANT_WRITE_HEADER` length (spec §9.2).
const WRITE_HEADER_LEN: usize = size_of::<FtwWriteHeader>();
/// `EFI_FAULT_TOLERANT_WRITE_RECORD` length without private data.
const WRITE_RECORD_LEN: usize = size_of::<FtwWriteRecord>();

/// The FTW working block as found in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FtwWorkingBlock {
    /// File offset of the working block header.
    pub offset: u64,
    /// Signature, CRC and state byte are all as the firmware expects.
    pub valid: bool,
    /// `WriteQueueSize`.
    pub write_queue_size: u64,
    /// File offset of the spare area (right after the working block).
    pub spare_offset: u64,
    /// Length of the spare area up to the end of the volume.
    pub spare_len: u64,
    /// Write headers in the queue, oldest first.
    pub writes: Vec<PendingWrite>,
}

/// One `EFI_FAULT_TOLERANT_WRITE_HEADER` and its records. Flags are negative logic: a flag is
/// set when its bit is 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingWrite {
    /// File offset of the header.
    pub offset: u64,
    /// CallerId: the FILE_GUID of the FTW driver that wrote it.
    pub caller: Guid,
    /// The Complete flag is set.
    pub complete: bool,
    /// The records: (flags byte, Lba, Offset, Length).
    pub records: Vec<WriteRecord>,
}

/// One `EFI_FAULT_TOLERANT_WRITE_RECORD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteRecord {
    /// File offset of the record.
    pub offset: u64,
    /// SpareComplete is set.
    pub spare_complete: bool,
    /// DestinationComplete is set.
    pub destination_complete: bool,
    /// Target block.
    pub lba: u64,
    /// Offset within the target block.
    pub target_offset: u64,
    /// Bytes written.
    pub length: u64,
}

impl PendingWrite {
    /// Whether a record reached the spare but not its destination: at the next boot the FTW
    /// driver copies the spare over the target (spec §9.4).
    pub fn spare_complete_without_destination(&self) -> bool {
        self.records
            .iter()
            .any(|r| r.spare_complete && !r.destination_complete)
    }
}

/// Reads the chained write headers between `start` and `end` (spec §9.2). `report` receives
/// structural damage as (offset, field, message).
pub(crate) fn parse_write_queue(
    image: &[u8],
    start: usize,
    end: usize,
    mut report: impl FnMut(usize, &'static str, String),
) -> Vec<PendingWrite> {
    let mut writes = Vec::new();
    let mut at = start;
    // Each header advances `at` by at least WRITE_HEADER_LEN, so the loop ends by `end`.
    while at + WRITE_HEADER_LEN <= end {
        let Some((header, _)) = image
            .get(at..end)
            .and_then(|b| FtwWriteHeader::ref_from_prefix(b).ok())
        else {
            break;
        };
        let flags = header.flags;
        if flags & 0x01 != 0 {
            // HeaderAllocated not set: the rest of the queue is free.
            break;
        }
        let caller = Guid::from_bytes(header.caller_id);
        let count = header.number_of_writes.get();
        let private = header.private_data_size.get();
        let record_len = (WRITE_RECORD_LEN as u64).saturating_add(private);
        let records_len = count.saturating_mul(record_len);
        let records_end = (at as u64 + WRITE_HEADER_LEN as u64).saturating_add(records_len);
        if records_end > end as u64 || count == 0 {
            report(
                at + 24,
                "FTW write header NumberOfWrites",
                format!(
                    "{count} records of {record_len} bytes do not fit in the write queue ending at 0x{end:X}"
                ),
            );
            break;
        }
        let mut records = Vec::new();
        let mut r = at + WRITE_HEADER_LEN;
        for _ in 0..count {
            // Inside the queue: records_end <= end was checked above.
            let Some((record, _)) = FtwWriteRecord::ref_from_prefix(&image[r..end]).ok() else {
                break;
            };
            if record.flags == 0xFF && flags & 0x02 != 0 {
                break;
            }
            records.push(WriteRecord {
                offset: r as u64,
                spare_complete: record.flags & 0x02 == 0,
                destination_complete: record.flags & 0x04 == 0,
                lba: record.lba.get(),
                target_offset: record.offset.get(),
                length: record.length.get(),
            });
            r += record_len as usize;
        }
        writes.push(PendingWrite {
            offset: at as u64,
            caller,
            complete: flags & 0x04 == 0,
            records,
        });
        at = records_end as usize;
    }
    writes
}
