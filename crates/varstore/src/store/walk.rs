//! Walking the records as the firmware does (spec §6) and telling which are live (spec §7).

use super::*;

/// Walks the records as the firmware does (spec §6.2), with the bounds checks it lacks
/// (spec §6.3). Returns the records, `lastVariableOffset`, and whether the walk ended normally.
pub(super) fn walk_records<'a>(
    image: &'a [u8],
    store_start: usize,
    end: usize,
    format: StoreFormat,
    findings: &mut Findings,
) -> (Vec<VariableRecord<'a>>, usize, bool) {
    use FirmwareVerdict::*;
    use Severity::*;
    let header_len = format.header_len();
    let mut records = Vec::new();
    let mut p = align_header(store_start + STORE_HEADER_LEN).unwrap_or(end);
    // Each iteration advances `p` by at least one header, so the loop is bounded by `end`.
    while p < end && image[p..end].first_chunk() == Some(&VARIABLE_START_ID.to_le_bytes()) {
        if p + header_len > end {
            findings.add(
                Error,
                p,
                "variable StartId",
                Refuse,
                format!("a record starts here, but its {header_len}-byte header runs past the end of the store at 0x{end:X}"),
            );
            return (records, p, false);
        }
        let h = decode_header(&image[p..p + header_len], format);
        let header_only = h.state == 0xFF
            || h.name_size == u32::MAX
            || h.data_size == u32::MAX
            || h.attributes == u32::MAX;
        let body = if header_only {
            0
        } else {
            u64::from(h.name_size) + u64::from(h.data_size)
        };
        let unpadded = p as u64 + header_len as u64 + body;
        if unpadded > end as u64 {
            findings.add(
                Error,
                p + if format == StoreFormat::Authenticated {
                    0x24
                } else {
                    0x08
                },
                "variable NameSize/DataSize",
                Refuse,
                format!(
                    "NameSize 0x{:X} + DataSize 0x{:X} run past the end of the store at 0x{end:X}",
                    h.name_size, h.data_size
                ),
            );
            return (records, p, false);
        }
        let unpadded = unpadded as usize;
        let next = align_header(unpadded).unwrap_or(end).min(end);
        let name_at = p + header_len;
        let name_len = if header_only { 0 } else { h.name_size as usize };
        let name_raw = &image[name_at..name_at + name_len];
        let data_at = name_at + name_len;
        let data = if header_only {
            &image[data_at..data_at]
        } else {
            &image[data_at..data_at + h.data_size as usize]
        };
        let record = VariableRecord {
            offset: p as u64,
            state_byte: h.state,
            attributes: Attributes(h.attributes),
            guid: h.guid,
            name_raw,
            data,
            data_offset: data_at as u64,
            monotonic_count: h.monotonic_count,
            timestamp: h.timestamp,
            pub_key_index: h.pub_key_index,
            total_len: (next - p) as u64,
            header_only,
        };
        check_record(&record, image, unpadded, next, findings);
        records.push(record);
        p = next;
    }
    (records, p, true)
}

pub(super) struct DecodedHeader {
    state: u8,
    attributes: u32,
    name_size: u32,
    data_size: u32,
    guid: Guid,
    monotonic_count: u64,
    timestamp: Option<EfiTime>,
    pub_key_index: u32,
}

pub(super) fn decode_header(bytes: &[u8], format: StoreFormat) -> DecodedHeader {
    match format {
        StoreFormat::Authenticated => {
            let h =
                AuthVariableHeader::ref_from_bytes(bytes).expect("slice has the header's length");
            DecodedHeader {
                state: h.state,
                attributes: h.attributes.get(),
                name_size: h.name_size.get(),
                data_size: h.data_size.get(),
                guid: Guid::from_bytes(h.vendor_guid),
                monotonic_count: h.monotonic_count.get(),
                timestamp: Some(EfiTime(h.timestamp)),
                pub_key_index: h.pub_key_index.get(),
            }
        }
        StoreFormat::Plain => {
            let h =
                PlainVariableHeader::ref_from_bytes(bytes).expect("slice has the header's length");
            DecodedHeader {
                state: h.state,
                attributes: h.attributes.get(),
                name_size: h.name_size.get(),
                data_size: h.data_size.get(),
                guid: Guid::from_bytes(h.vendor_guid),
                monotonic_count: 0,
                timestamp: None,
                pub_key_index: 0,
            }
        }
    }
}

/// Indices of the live records (spec §7).
pub(super) fn live_indices(records: &[VariableRecord<'_>]) -> Vec<usize> {
    // A B-tree rather than a hash map: a store holds tens of records, for which comparing
    // names is cheaper than SipHashing them (measured with callgrind on `nvram list`).
    let mut chosen: std::collections::BTreeMap<(&[u8], Guid), usize> = Default::default();
    for (i, r) in records.iter().enumerate() {
        if r.header_only {
            continue;
        }
        let key = (r.name_raw, r.guid);
        match r.state() {
            RecordState::Added => {
                let current = chosen.get(&key).map(|&j| records[j].state());
                if current != Some(RecordState::Added) {
                    chosen.insert(key, i);
                }
            }
            RecordState::InDeletedTransition => {
                let current = chosen.get(&key).map(|&j| records[j].state());
                if current != Some(RecordState::Added) {
                    chosen.insert(key, i);
                }
            }
            _ => {}
        }
    }
    let mut out: Vec<usize> = chosen.into_values().collect();
    out.sort_unstable();
    out
}

/// Index of the first byte of `data` that is not `fill`. Flash images are mostly erased
/// space, so this runs over hundreds of KiB per parse: comparing whole chunks with a block of
/// `fill` is a slice equality, which becomes `memcmp` and the C library's vector loop (a
/// byte-wise fold was 1.2 instructions a byte; measured with callgrind on `nvram list`).
pub(crate) fn first_byte_not(data: &[u8], fill: u8) -> Option<usize> {
    const CHUNK: usize = 512;
    let block = [fill; CHUNK];
    let mut chunks = data.chunks_exact(CHUNK);
    for (i, chunk) in chunks.by_ref().enumerate() {
        if chunk != block {
            let pos = chunk.iter().position(|&b| b != fill)?;
            return Some(i * CHUNK + pos);
        }
    }
    let rest = chunks.remainder();
    rest.iter()
        .position(|&b| b != fill)
        .map(|pos| data.len() - rest.len() + pos)
}

#[cfg(test)]
mod tests {
    use super::first_byte_not;

    #[test]
    fn first_byte_not_finds_the_first_difference_anywhere() {
        for len in [0, 1, 511, 512, 513, 1100] {
            assert_eq!(first_byte_not(&vec![0xFF; len], 0xFF), None);
            for at in 0..len {
                let mut data = vec![0xFF; len];
                data[at] = 0x7F;
                data[len - 1] = 0;
                assert_eq!(first_byte_not(&data, 0xFF), Some(at), "len {len} at {at}");
            }
        }
    }
}
