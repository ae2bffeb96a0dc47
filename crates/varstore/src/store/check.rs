//! Validating what the walk found: each record, the free space after the last one, and the
//! live view (spec §6.3, §7, §8).

use super::*;

pub(super) fn check_record(
    record: &VariableRecord<'_>,
    image: &[u8],
    unpadded_end: usize,
    next: usize,
    findings: &mut Findings,
) {
    use FirmwareVerdict::*;
    use Severity::*;
    let at = record.offset as usize;
    match record.state() {
        RecordState::Erased => findings.add(
            Warning,
            at + 2,
            "variable State",
            ReclaimAtBoot,
            "0xFF: a record whose write was interrupted; the firmware walks over its header only"
                .into(),
        ),
        RecordState::HeaderValidOnly => findings.add(
            Notice,
            at + 2,
            "variable State",
            Accept,
            "0x7F: an incomplete write (header only); not visible, dropped at the next reclaim"
                .into(),
        ),
        RecordState::Unknown(b) => findings.add(
            Warning,
            at + 2,
            "variable State",
            Accept,
            format!("0x{b:02X} is not a state the firmware writes; the record is not visible"),
        ),
        _ => {}
    }
    if record.header_only {
        if record.state() != RecordState::Erased {
            findings.add(
                Warning,
                at,
                "variable header",
                ReclaimAtBoot,
                "an all-ones Attributes, NameSize or DataSize: the firmware treats the record as a bare header".into(),
            );
        }
        return;
    }
    let checks_name = matches!(
        record.state(),
        RecordState::Added
            | RecordState::InDeletedTransition
            | RecordState::Deleted
            | RecordState::Replaced
    );
    if checks_name {
        let n = record.name_raw;
        let terminated = n.len() >= 2 && n[n.len() - 2..] == [0, 0];
        if n.len() % 2 != 0 || n.len() < 4 || !terminated {
            findings.add(
                Warning,
                at + record_name_size_offset(record),
                "variable NameSize",
                Accept,
                format!(
                    "name of {} bytes is not a NUL-terminated UCS-2 string of at least one character (the ArmVirt validator re-formats such a store)",
                    n.len()
                ),
            );
        }
        if record.attributes.0 & Attributes::NON_VOLATILE == 0 {
            findings.add(
                Notice,
                at + 4,
                "variable Attributes",
                Accept,
                format!("0x{:X} lacks NON_VOLATILE", record.attributes.0),
            );
        }
    }
    let padding = &image[unpadded_end..next];
    if padding.iter().any(|&b| b != 0xFF) {
        findings.add(
            Notice,
            unpadded_end,
            "variable padding",
            Accept,
            "padding bytes are not 0xFF (the firmware ignores them; Debian's AAVMF_VARS.ms.fd has such padding)".into(),
        );
    }
}

pub(super) fn record_name_size_offset(record: &VariableRecord<'_>) -> usize {
    if record.timestamp.is_some() {
        0x24
    } else {
        0x08
    }
}

pub(super) fn check_free_space(image: &[u8], free: usize, end: usize, findings: &mut Findings) {
    if let Some(pos) = first_byte_not(&image[free..end], 0xFF) {
        let at = free + pos;
        findings.add(
            Severity::Warning,
            at,
            "free space",
            FirmwareVerdict::ReclaimAtBoot,
            format!(
                "byte 0x{:02X} after the last record (which ends at 0x{free:X}); the firmware reclaims the store at next boot",
                image[at]
            ),
        );
    }
}

pub(super) fn check_live_view(
    records: &[VariableRecord<'_>],
    live: &[usize],
    findings: &mut Findings,
) {
    // `live` is sorted (`live_indices`); a B-tree for the few tens of names is cheaper than
    // SipHashing them.
    let mut seen_added: std::collections::BTreeSet<(&[u8], Guid)> = Default::default();
    for (i, r) in records.iter().enumerate() {
        if r.header_only {
            continue;
        }
        match r.state() {
            RecordState::Added if !seen_added.insert((r.name_raw, r.guid)) => findings.add(
                Severity::Warning,
                r.offset as usize,
                "variable State",
                FirmwareVerdict::Accept,
                format!(
                    "a second live (0x3F) copy of {}; the firmware reads only the first",
                    r.name()
                ),
            ),
            RecordState::InDeletedTransition if live.binary_search(&i).is_ok() => findings.add(
                Severity::Notice,
                r.offset as usize,
                "variable State",
                FirmwareVerdict::Accept,
                format!(
                    "{} is in transition (0x3E) without a newer copy: an update was interrupted; the firmware uses this copy",
                    r.name()
                ),
            ),
            _ => {}
        }
    }
}
