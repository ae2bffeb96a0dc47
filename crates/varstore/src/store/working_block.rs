//! Locating and checking the fault-tolerant-write working block after the store (spec §9).

use super::*;

pub(super) fn locate_ftw(
    image: &[u8],
    fv: &FvInfo,
    store_end: usize,
    layout: Option<&'static Layout>,
    findings: &mut Findings,
) -> Option<FtwWorkingBlock> {
    use FirmwareVerdict::*;
    use Severity::*;
    let fv_end = (fv.length.min(image.len() as u64)) as usize;
    let block = fv
        .block_map
        .first()
        .map_or(0x1000, |&(_, l)| l as usize)
        .max(1);
    let candidates: Vec<usize> = match layout {
        Some(l) => vec![l.ftw_working_offset() as usize],
        None => {
            let region_end = store_end.div_ceil(block).saturating_mul(block);
            vec![region_end, region_end.saturating_add(block)]
        }
    };
    let at = candidates.iter().copied().find(|&c| {
        image
            .get(c..)
            .and_then(|b| b.first_chunk::<16>())
            .map(|g| Guid::from_bytes(*g))
            .is_some_and(|g| g == guid::FTW_WORKING_BLOCK || g == guid::SYSTEM_NV_DATA_FV)
    });
    let Some(at) = at else {
        findings.add(
            Warning,
            candidates[0],
            "FTW working block Signature",
            ReinitialiseFtw,
            "no fault-tolerant-write working block here; the firmware creates one at next boot"
                .into(),
        );
        return None;
    };
    if at + FTW_HEADER_LEN > fv_end {
        return None;
    }
    let header = FtwWorkingBlockHeader::ref_from_bytes(&image[at..at + FTW_HEADER_LEN])
        .expect("slice has the header's length");
    let signature = Guid::from_bytes(header.signature);
    let mut valid = true;
    if signature != guid::FTW_WORKING_BLOCK {
        valid = false;
        findings.add(
            Warning,
            at,
            "FTW working block Signature",
            ReinitialiseFtw,
            "the old signature (gEfiSystemNvDataFvGuid); current firmware re-initialises the working block".into(),
        );
    }
    let crc = ftw_header_crc(header);
    if header.crc.get() != crc {
        valid = false;
        findings.add(
            Warning,
            at + 0x10,
            "FTW working block Crc",
            ReinitialiseFtw,
            format!("0x{:08X}, expected 0x{crc:08X}", header.crc.get()),
        );
    }
    if header.state != FTW_STATE_VALID {
        valid = false;
        findings.add(
            Warning,
            at + 0x14,
            "FTW working block state",
            ReinitialiseFtw,
            format!("0x{:02X}: not marked valid (expected 0xFE)", header.state),
        );
    }
    if header.reserved != [0xFF; 3] {
        valid = false;
        findings.add(
            Warning,
            at + 0x15,
            "FTW working block Reserved3",
            ReinitialiseFtw,
            format!(
                "{:02X?}: not erased (the firmware compares the whole header with FF FF FF there)",
                header.reserved
            ),
        );
    }
    let queue_size = header.write_queue_size.get();
    if let Some(expected) = layout.map(|l| u64::from(l.ftw_working) - FTW_HEADER_LEN as u64) {
        if queue_size != expected {
            valid = false;
            findings.add(
                Warning,
                at + 0x18,
                "FTW working block WriteQueueSize",
                ReinitialiseFtw,
                format!("0x{queue_size:X}, but the {} layout's working block needs 0x{expected:X}; the firmware re-initialises it", layout.map_or("", |l| l.name)),
            );
        }
    }
    let queue_start = at + FTW_HEADER_LEN;
    let queue_end = (queue_start as u64).saturating_add(queue_size);
    if queue_end > fv_end as u64 {
        findings.add(
            Warning,
            at + 0x18,
            "FTW working block WriteQueueSize",
            ReinitialiseFtw,
            format!("0x{queue_size:X} runs past the end of the volume at 0x{fv_end:X}"),
        );
        return Some(FtwWorkingBlock {
            offset: at as u64,
            valid: false,
            write_queue_size: queue_size,
            spare_offset: fv_end as u64,
            spare_len: 0,
            writes: Vec::new(),
        });
    }
    let queue_end = queue_end as usize;
    let spare_offset = queue_end;
    let writes = if valid {
        parse_write_queue(image, queue_start, queue_end, findings_sink(findings))
    } else {
        Vec::new()
    };
    let pending: Vec<&PendingWrite> = writes.iter().filter(|w| !w.complete).collect();
    for w in &pending {
        if w.spare_complete_without_destination() {
            findings.add(
                Warning,
                w.offset as usize,
                "FTW write header",
                RestartFtwWrite,
                "a fault-tolerant write reached the spare area but not its destination; the firmware copies the spare over the target at next boot".into(),
            );
        } else {
            findings.add(
                Notice,
                w.offset as usize,
                "FTW write header",
                Accept,
                "an unfinished fault-tolerant write that never reached the spare; the firmware abandons it".into(),
            );
        }
    }
    if pending.is_empty() {
        if let Some(pos) = first_byte_not(&image[spare_offset..fv_end], 0xFF) {
            findings.add(
                Notice,
                spare_offset + pos,
                "FTW spare area",
                Accept,
                "not erased although no write is pending".into(),
            );
        }
    }
    // The x86 "event log" block between the variable region and the working block.
    let log_start = layout
        .map_or(at, |l| l.variable_region as usize)
        .max(store_end)
        .min(at);
    if let Some(pos) = first_byte_not(&image[log_start..at], 0xFF) {
        findings.add(
            Notice,
            log_start + pos,
            "event log block",
            Accept,
            "not erased (the firmware does not use it)".into(),
        );
    }
    Some(FtwWorkingBlock {
        offset: at as u64,
        valid,
        write_queue_size: queue_size,
        spare_offset: spare_offset as u64,
        spare_len: (fv_end - spare_offset) as u64,
        writes,
    })
}

pub(super) fn findings_sink(
    findings: &mut Findings,
) -> impl FnMut(usize, &'static str, String) + '_ {
    move |offset, field, message| {
        findings.add(
            Severity::Warning,
            offset,
            field,
            FirmwareVerdict::ReinitialiseFtw,
            message,
        )
    }
}
